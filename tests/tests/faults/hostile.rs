//! Hostile targets: paths renamed under tprof, hostile probe arguments.

use super::*;

// ---- hostile paths: the target renames what it maps -----------------------------------------

/// gcc with tprof.h: sources (`*.c`) from tests/c and plain flags, into `out`.
fn gcc(args: &[&str], out: &Path) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let st = Command::new("gcc")
        .args(["-O2", "-g", "-Wall", "-Werror", "-I"])
        .arg(root.join("usdt-probes/include"))
        .args(args.iter().map(|a| if a.ends_with(".c") { root.join("tests/c").join(a).into_os_string() } else { (*a).into() }))
        .arg("-o")
        .arg(out)
        .status()
        .expect("gcc runs (cargo xtask setup installs it)");
    assert!(st.success(), "gcc {args:?} failed");
}

/// The `tprof` probe sites `tprof list` prints for `args`.
fn listed_tprof_sites(args: &[&str]) -> Vec<String> {
    let out = Command::new(tprof_bin()).arg("list").args(args).output().expect("tprof list runs");
    assert!(out.status.success(), "tprof list {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("usdt:") && l.contains(":tprof:")).map(str::to_string).collect()
}

/// Watches files for any open or read (inotify), to prove tprof never touched them.
struct OpenWatch {
    fd: std::os::fd::OwnedFd,
}

impl OpenWatch {
    fn new(paths: &[&Path]) -> OpenWatch {
        use std::os::fd::FromRawFd;
        // SAFETY: inotify_init1 with flags only; the kernel returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
        // SAFETY: the kernel just returned this fd; nothing else owns it.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        for p in paths {
            let c = std::ffi::CString::new(p.to_str().expect("utf-8 path")).expect("no NUL");
            // SAFETY: an inotify fd we own and a NUL-terminated path alive for the call.
            let wd = unsafe { libc::inotify_add_watch(std::os::fd::AsRawFd::as_raw_fd(&fd), c.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS) };
            assert!(wd >= 0, "inotify_add_watch {}: {}", p.display(), std::io::Error::last_os_error());
        }
        OpenWatch { fd }
    }

    /// How many bytes of events are queued (0: nothing was opened or read).
    fn events(&self) -> usize {
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a buffer we own, of the length passed.
        let n = unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(&self.fd), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EAGAIN), "read inotify");
            return 0;
        }
        n as usize
    }
}

/// Runs `script` with `sh -c` in the mount namespace of `pid`.
fn in_mount_ns_of(pid: u32, script: &str) {
    let st = Command::new("nsenter").args(["-t", &pid.to_string(), "-m", "sh", "-c", script]).status().expect("nsenter (util-linux) runs");
    assert!(st.success(), "in the mount namespace of {pid}: {script}");
}

#[test]
fn mapped_paths_swapped_for_symlinks_are_not_followed() {
    // The target, in its own mount namespace, mounts over the directories of the files it
    // mapped: its executable's path becomes a symlink to a FIFO, its library's a symlink to
    // a root-only file (an ELF with probes of its own). /proc/PID/maps still names the old
    // paths. tprof must find and attach the probes of the files really mapped, through
    // /proc/PID/map_files, and never open the decoys: as root, following the paths would
    // read any host file, or block on the FIFO.
    require_root();
    let dir = TempDir::new("swap");
    for d in ["bin", "lib", "decoy", "secret"] {
        std::fs::create_dir(dir.join(d)).expect("mkdir");
    }
    let (main, lib) = (dir.join("bin/dlopen_main"), dir.join("lib/libreq.so"));
    gcc(&["dlopen_main.c", "-ldl"], &main);
    gcc(&["-shared", "-fPIC", "dlopen_lib.c"], &lib);
    let secret = dir.join("secret/secret");
    std::fs::copy(&lib, &secret).expect("copy the decoy ELF");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
    std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    let fifo = dir.join("decoy/fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(st.success());
    let (main_s, lib_s) = (main.to_str().expect("utf-8"), lib.to_str().expect("utf-8"));
    let want = listed_tprof_sites(&["--binary", main_s]).len() + listed_tprof_sites(&["--binary", lib_s]).len();
    assert!(want >= 4, "both files have tprof probes");

    let mut target = start_program(Path::new("unshare"), &["--mount", "--propagation", "private", "--", main_s, lib_s]);
    let pid = target.pid();
    target.send_line("go");
    target_says(&target, "loaded");
    in_mount_ns_of(
        pid,
        &format!(
            "mount -t tmpfs tprof-swap {bin} && ln -s {fifo} {main} && mount -t tmpfs tprof-swap {libdir} && ln -s {secret} {lib}",
            bin = dir.join("bin").display(),
            libdir = dir.join("lib").display(),
            fifo = fifo.display(),
            secret = secret.display(),
            main = main_s,
            lib = lib_s,
        ),
    );
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    assert!(maps.contains(main_s) && maps.contains(lib_s), "the maps still name the swapped paths:\n{maps}");
    for p in [&main, &lib] {
        let seen = std::fs::symlink_metadata(format!("/proc/{pid}/root{}", p.display())).expect("the swapped path");
        assert!(seen.file_type().is_symlink(), "{} is a symlink in the target's namespace", p.display());
    }
    let watch = OpenWatch::new(&[&secret, &fifo]);

    let listed = listed_tprof_sites(&["--pid", &pid.to_string()]);
    assert_eq!(listed.len(), want, "tprof list --pid lists the mapped files' probes: {listed:#?}");
    let tprof = attach(&[pid], &[]);
    target.send_line("go");
    target_says(&target, "done");
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    let sess = session(&out);
    assert_eq!(sess["sites"].as_u64(), Some(want as u64), "the probes of the files really mapped are attached: {sess}");
    let s = summary(&out, "lib-request");
    assert_eq!(s["span_id"], "0000000000003333", "the library's request is traced: {s}");
    assert_eq!(watch.events(), 0, "tprof opened neither the root-only file nor the FIFO");
    // The watch works: opening the secret now is seen.
    drop(std::fs::File::open(&secret).expect("open the secret"));
    assert!(watch.events() > 0, "inotify reports an open of the watched file");
}

// ---- hostile probe arguments ---------------------------------------------------------------

fn build_hostile(dir: &TempDir) -> PathBuf {
    build_c(dir, "hostile")
}

const CASES: usize = 12;
const ESC_NAME: &str = "\x1b[31mred\x1b[0m";

/// Runs the hostile target through both phases (see hostile.c): the case matrix, a pause
/// while tprof drains, then the last task fired just before the process exits.
fn drive_hostile(target: &mut Proc) {
    target.send_line("go");
    target_says(target, "done");
    std::thread::sleep(Duration::from_millis(300));
    target.send_line("exit");
    assert!(target.wait().success());
}

#[test]
fn hostile_arguments_text_output_is_escaped() {
    require_root();
    let dir = TempDir::new("hostile-text");
    let exe = build_hostile(&dir);
    let mut target = start_program(&exe, &[]);
    let out_path = dir.join("stdout");
    let out_file = std::fs::File::create(&out_path).expect("create stdout file");
    let mut child = Command::new(tprof_bin())
        .args(["attach", "--pid", &target.pid().to_string()])
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tprof");
    let stderr = lines_of(child.stderr.take().expect("stderr"));
    let (_tx, stdout) = mpsc::channel();
    let mut tprof = Proc { child: Guard(child), stdin: None, stdout, stderr: Some(stderr), dir: None };
    let mut err = Vec::new();
    let ready = wait_attached(&tprof, &mut err);
    drive_hostile(&mut target);
    let status = wait_within(&mut tprof, Duration::from_secs(30)).expect("tprof stops when the target exits");
    let err_text = format!("{ready}\n{}{}", err.join("\n"), stderr_text(&tprof));
    assert!(status.success(), "tprof survives hostile arguments: {status}; stderr: {err_text}");
    let bytes = std::fs::read(&out_path).expect("read tprof's output");
    let text = String::from_utf8(bytes.clone()).unwrap_or_else(|e| panic!("tprof's output is not UTF-8: {e}"));
    assert!(!bytes.contains(&0x1b), "no ESC byte anywhere in stdout");
    let raw: Vec<char> = text.chars().filter(|c| c.is_control() && *c != '\n').collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in tprof's stdout:\n{}", text.escape_debug());
    for shown in [
        "\\u{1b}[31mred\\u{1b}[0m",
        "line1\\nline2\\r\\u{7}",
        "bad\u{FFFD}\u{FFFD}utf8\u{FFFD}",
        "c1\\u{9b}2Jx",
        "\\u{1b}]0;owned\\u{7}\\u{1b}[2J",
        &"A".repeat(64),
    ] {
        assert!(text.contains(shown), "{shown:?} shown escaped in:\n{text}");
    }
    assert!(!text.contains(&"A".repeat(129)), "strings are bounded (names 64, log values 128 bytes)");
    // The target's name (comm) is the process's own choice too: tprof prints it on stderr.
    let raw: Vec<char> = err_text.chars().filter(|c| c.is_control() && *c != '\n').collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in tprof's stderr (the target's comm): {}", err_text.escape_debug());
}

#[test]
fn hostile_arguments_json_output_is_decoded_and_flagged() {
    require_root();
    let dir = TempDir::new("hostile-json");
    let exe = build_hostile(&dir);
    let mut target = start_program(&exe, &[]);
    let tprof = attach(&[target.pid()], &[]);
    drive_hostile(&mut target);
    let (out, status) = collect(tprof); // panics on a line that is not JSON
    assert!(status.success(), "{status}");
    let sess = session(&out);
    assert_eq!(sess["tasks_ended"], CASES + 1, "{sess}");
    let begin = |span: u64| -> &Value {
        let span = format!("{span:016x}");
        out.iter().find(|v| v["type"] == "task_begin" && v["span_id"] == span.as_str()).unwrap_or_else(|| panic!("span {span} began"))
    };
    let name_of = |case: usize| {
        let b = begin(case as u64 + 1);
        (b["name"].as_str().expect("name").to_string(), b["name_flags"].as_u64().expect("flags"))
    };
    const TRUNCATED: u64 = 1;
    const UNREADABLE: u64 = 2;
    const LATE: u64 = 4;
    for case in [0, 1, 2, 3] {
        // NULL, invalid, kernel address, PROT_NONE page.
        assert_eq!(name_of(case), (String::new(), UNREADABLE), "case {case}: a bad pointer is an unreadable, empty name");
    }
    for case in [4, 5] {
        assert_eq!(name_of(case), ("A".repeat(64), TRUNCATED), "case {case}: a huge length is clamped to 64 bytes");
    }
    assert_eq!(name_of(6), (ESC_NAME.to_string(), 0), "JSON keeps the bytes (escaped by the JSON encoder)");
    assert_eq!(name_of(7), ("line1\nline2\r\x07".to_string(), 0));
    assert_eq!(name_of(8), ("bad\u{FFFD}\u{FFFD}utf8\u{FFFD}".to_string(), 0), "invalid UTF-8 decoded lossily");
    assert_eq!(name_of(9), ("c1\u{9b}2Jx".to_string(), 0));
    assert_eq!(name_of(10), ("\x1b]0;owned\x07\x1b[2J".to_string(), 0));
    // 3 readable bytes then a PROT_NONE page: the kernel's copy fails as a whole; whatever
    // is recovered later is a prefix of the readable bytes, never more than was there.
    let (n, f) = name_of(11);
    assert!(n.is_empty() && f == UNREADABLE || "BBB".starts_with(&n) && f & LATE != 0, "case 11: {n:?} flags {f}");
    // Decoded after the process exited: still unreadable (not "read late" from a gone process).
    let last = begin(100);
    assert_eq!((last["name"].as_str(), last["name_flags"].as_u64()), (Some(""), Some(UNREADABLE)), "{last}");

    // Regions and logs carry the same arguments, with their own bounds. Log `flags`: the
    // key's flags in bits 0-7, the value's in bits 8-15.
    for case in 0..CASES {
        let span = format!("{:016x}", case + 1);
        let s = out.iter().find(|v| v["type"] == "summary" && v["span_id"] == span.as_str()).unwrap_or_else(|| panic!("case {case} summary"));
        let logs = s["logs"].as_array().expect("logs");
        assert_eq!(logs.len(), 2, "case {case}: {s}");
        for l in logs {
            assert!(l["key"].as_str().is_some_and(|k| k.len() <= 32), "log keys bounded at 32 bytes: {l}");
            assert!(l["value"].as_str().is_some_and(|v| v.len() <= 128), "log values bounded at 128 bytes: {l}");
        }
        let regions = s["regions"].as_array().expect("regions");
        assert_eq!(regions.len(), 1, "case {case}: {s}");
        assert!(regions[0]["name"].as_str().is_some_and(|n| n.len() <= 64), "{s}");
    }
    let logs: Vec<&Value> = out.iter().filter(|v| v["type"] == "log" && v["span_id"] == "0000000000000005").collect();
    assert_eq!(logs.len(), 2);
    assert_eq!((logs[0]["key"].as_str(), logs[0]["flags"].as_u64()), (Some("A".repeat(32).as_str()), Some(TRUNCATED)), "{:?}", logs);
    assert_eq!((logs[1]["value"].as_str(), logs[1]["flags"].as_u64()), (Some("A".repeat(128).as_str()), Some(TRUNCATED << 8)), "{:?}", logs);
    let logs: Vec<&Value> = out.iter().filter(|v| v["type"] == "log" && v["span_id"] == "0000000000000002").collect();
    assert_eq!(logs.iter().map(|l| l["flags"].as_u64()).collect::<Vec<_>>(), [Some(UNREADABLE), Some(UNREADABLE << 8)], "{logs:?}");
}

// ---- hostile files named to `tprof list --binary` ------------------------------------------

/// Runs `tprof list --binary path` with a deadline (a FIFO must not hang it): its status
/// and stderr.
fn list_binary(path: &Path) -> (ExitStatus, String) {
    let mut child = Command::new(tprof_bin())
        .args(["list", "--binary"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tprof list");
    let stderr = lines_of(child.stderr.take().expect("stderr"));
    let mut p = Proc { child: Guard(child), stdin: None, stdout: mpsc::channel().1, stderr: Some(stderr), dir: None };
    let status = wait_within(&mut p, Duration::from_secs(20)).unwrap_or_else(|| panic!("tprof list --binary {} hangs", path.display()));
    (status, stderr_text(&p))
}

#[test]
fn list_refuses_devices_and_fifos_and_escapes_the_path_it_names() {
    let dir = TempDir::new("list-binary");
    let fifo = dir.join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(st.success());
    // No writer: a blocking open would hang; /dev/zero would be read forever.
    for (path, what) in [(fifo.as_path(), "FIFO"), (Path::new("/dev/zero"), "character device")] {
        let (status, err) = list_binary(path);
        assert!(!status.success(), "{}: {status}", path.display());
        assert!(err.contains(what) && err.contains("not a regular file"), "{}: {err}", path.display());
    }
    // A file named with a title-setting OSC, a clear-screen and a right-to-left override.
    let evil = dir.join("x\x1b]0;owned\x07\x1b[2J\u{202E}txt.so");
    std::fs::write(&evil, b"not an ELF").expect("write");
    let (status, err) = list_binary(&evil);
    assert!(!status.success(), "{status}");
    assert!(err.contains("x\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{202e}txt.so") && err.contains("not an ELF"), "the path is shown escaped: {err}");
    let raw: Vec<char> = err.chars().filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202E}').collect();
    assert!(raw.is_empty(), "raw {raw:?} in tprof's stderr: {}", err.escape_debug());
}

/// A copy of tprof-target whose SDT notes name two tprof probes with terminal escapes and
/// bidi controls instead of `region_end` and `region_begin` (same lengths, so the notes stay
/// well-formed): names tprof does not know, which it reports.
fn build_evil_names(dir: &TempDir) -> PathBuf {
    let mut bytes = std::fs::read(target_bin()).expect("read tprof-target");
    for (from, to) in [(&b"region_end"[..], &b"\x1b]0;x\x07\x1b[2J"[..]), (b"region_begin", "\u{202e}\x1b[2Jxyzab".as_bytes())] {
        assert_eq!(from.len(), to.len());
        let pat = [&b"tprof\0"[..], from, b"\0"].concat();
        let at = bytes.windows(pat.len()).position(|w| w == pat).unwrap_or_else(|| panic!("no note for {:?}", String::from_utf8_lossy(from)));
        bytes[at + 6..at + 6 + to.len()].copy_from_slice(to);
    }
    let exe = dir.join("evil-names");
    std::fs::write(&exe, bytes).expect("write the patched target");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    exe
}

#[test]
fn hostile_probe_names_are_escaped_on_stdout_and_stderr() {
    require_root();
    let dir = TempDir::new("hostile-names");
    let exe = build_evil_names(&dir);
    // `tprof list` names every site, on stdout.
    let out = Command::new(tprof_bin()).args(["list", "--binary"]).arg(&exe).output().expect("tprof list runs");
    let listed = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // attach -v prints the warnings about them on stderr (and in the session summary).
    let mut target = start_program_as(&exe, &["sleep:5"], TARGET_USER);
    let mut tprof = spawn_tprof(&["attach", "-v", "--pid", &target.pid().to_string()]);
    let mut err = Vec::new();
    let ready = wait_attached(&tprof, &mut err);
    target.send_line("go");
    target_says(&target, "done");
    assert!(target.wait().success());
    let status = wait_within(&mut tprof, Duration::from_secs(30)).expect("tprof stops when the target exits");
    assert!(status.success(), "{status}");
    let mut stdout = String::new();
    while let Ok(l) = tprof.stdout.recv_timeout(Duration::from_secs(1)) {
        stdout.push_str(&l);
        stdout.push('\n');
    }
    let stderr = format!("{ready}\n{}\n{}", err.join("\n"), stderr_text(&tprof));
    for (what, text) in [("tprof list", &listed), ("attach's stdout", &stdout), ("attach's stderr", &stderr)] {
        let raw: Vec<char> = text.chars().filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}').collect();
        assert!(raw.is_empty(), "raw {raw:?} in {what}: {}", text.escape_debug());
        for shown in ["\\u{1b}]0;x\\u{7}\\u{1b}[2J", "\\u{202e}\\u{1b}[2Jxyzab"] {
            assert!(text.contains(shown), "{what} names the probe {shown:?}, escaped: {text}");
        }
    }
}
