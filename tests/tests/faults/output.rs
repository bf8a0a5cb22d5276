//! Output errors: unwritable paths, full disks, closed pipes.

use super::*;

// ---- output errors -------------------------------------------------------------------------

#[test]
fn closed_output_pipe_stops_quietly() {
    // `tprof attach ... | head -n 1`: head exits after one line; tprof stops at its next
    // write, quietly, and detaches.
    require_root();
    let dir = TempDir::new("pipe");
    let mut target = start_private_target(&dir, &["regions", "wait", "regions", "regions", "wait", "enabled"]);
    let pid = target.pid();
    let sites = probe_sites(pid);
    let mut child = Command::new(tprof_bin())
        .args(["attach", "--pid", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tprof");
    let pipe = child.stdout.take().expect("stdout");
    let stderr = lines_of(child.stderr.take().expect("stderr"));
    let (_tx, stdout) = mpsc::channel();
    let mut tprof = Proc { child, stdin: None, stdout, stderr: Some(stderr), dir: None };
    let head = Command::new("head").args(["-n", "1"]).stdin(pipe).stdout(Stdio::piped()).spawn().expect("spawn head");
    let (_tx2, head_out) = mpsc::channel();
    let mut head = Proc { child: head, stdin: None, stdout: head_out, stderr: None, dir: None };
    let mut err = Vec::new();
    wait_attached(&tprof, &mut err);
    target.send_line("go");
    assert!(wait_within(&mut head, Duration::from_secs(30)).is_some_and(|s| s.success()), "head read its line and exited");
    let mut first = String::new();
    head.child.stdout.take().expect("head stdout").read_to_string(&mut first).expect("read head");
    assert_eq!(first.lines().count(), 1, "{first:?}");
    // More output now meets the closed pipe.
    let t0 = Instant::now();
    target.send_line("next");
    let status = wait_within(&mut tprof, Duration::from_secs(10));
    let waited = t0.elapsed();
    let status = status.unwrap_or_else(|| panic!("tprof still running 10 s after its output closed"));
    let err_text = format!("{}{}", err.join("\n"), stderr_text(&tprof));
    assert!(status.success(), "a closed pipe is a normal stop: {status}; stderr: {err_text}");
    assert!(!err_text.to_lowercase().contains("error") && !err_text.contains("panick"), "no error output: {err_text}");
    eprintln!("tprof stopped {waited:?} after its output closed");
    assert_sites_restored(pid, &sites);
    target.send_line("next");
    assert_eq!(target_says(&target, "enabled"), "enabled false");
    target_says(&target, "done");
    assert!(target.wait().success(), "the target is unharmed");
}

/// Runs tprof with `args` (its pid argument appended) and expects a failure naming `needle`
/// before it attached anything.
fn fails_before_attaching(pid: u32, args: &[&str], needle: &str) {
    let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    argv.extend(["--pid".to_string(), pid.to_string()]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut t = spawn_tprof(&argv);
    let status = wait_within(&mut t, Duration::from_secs(30)).unwrap_or_else(|| panic!("tprof {argv:?} hangs"));
    let err = stderr_text(&t);
    assert!(!status.success(), "tprof {argv:?} must fail: {err}");
    assert!(err.contains(needle), "tprof {argv:?}: the error names {needle:?}: {err}");
    assert!(!err.contains("attached"), "tprof {argv:?} fails before attaching: {err}");
}

#[test]
fn unwritable_output_paths_fail_before_attaching() {
    require_root();
    let dir = TempDir::new("unwritable");
    let mut ro = TempDir::new("readonly");
    ro.mount_tmpfs("64k", "ro");
    let mut target = start_private_target(&dir, &["enabled"]);
    let pid = target.pid();
    let missing = "/proc/nonexistent/x";
    let in_ro = ro.join("trace");
    let in_ro = in_ro.to_str().expect("utf-8");
    let a_dir = dir.path.to_str().expect("utf-8");
    for flag in ["--perfetto", "--otlp-file", "--zipkin-file"] {
        fails_before_attaching(pid, &["attach", flag, missing], missing);
        fails_before_attaching(pid, &["attach", flag, in_ro], in_ro);
        fails_before_attaching(pid, &["attach", flag, a_dir], a_dir);
    }
    fails_before_attaching(pid, &["record", "-o", missing], missing);
    fails_before_attaching(pid, &["record", "-o", in_ro], in_ro);
    target.send_line("go");
    assert_eq!(target_says(&target, "enabled"), "enabled false", "nothing was ever armed");
    assert!(target.wait().success());
}

#[test]
fn full_disk_while_recording_fails_clearly() {
    require_root();
    let dir = TempDir::new("full");
    let mut small = TempDir::new("tmpfs");
    small.mount_tmpfs("64k", "");
    let rec = small.join("rec");
    let mut target = start_private_target(&dir, &["flood:50000", "wait", "enabled"]);
    let pid = target.pid();
    let sites = probe_sites(pid);
    let mut t = spawn_tprof(&["record", "-o", rec.to_str().expect("utf-8"), "--pid", &pid.to_string()]);
    let mut err = Vec::new();
    wait_attached(&t, &mut err);
    target.send_line("go");
    let status = wait_within(&mut t, Duration::from_secs(30)).unwrap_or_else(|| panic!("tprof hangs on a full disk"));
    let err_text = format!("{}{}", err.join("\n"), stderr_text(&t));
    assert!(!status.success(), "a full disk is an error: {status}; stderr: {err_text}");
    assert!(err_text.contains("No space left on device"), "the cause is named: {err_text}");
    assert!(err_text.contains(rec.to_str().expect("utf-8")), "the file is named: {err_text}");
    assert!(!err_text.contains("panick"), "{err_text}");
    assert_sites_restored(pid, &sites);
    target.send_line("next");
    assert_eq!(target_says(&target, "enabled"), "enabled false");
    assert!(target.wait().success(), "the target is unharmed");
}

#[test]
fn full_disk_while_exporting_is_reported() {
    // An exporter's file on a full disk: by design the terminal stream goes on without that
    // exporter, but the loss must be reported, naming the file.
    require_root();
    let dir = TempDir::new("full-export");
    let mut small = TempDir::new("tmpfs-export");
    small.mount_tmpfs("16k", "");
    let trace = small.join("trace.pftrace");
    let trace = trace.to_str().expect("utf-8");
    let mut target = start_private_target(&dir, &["flood:20000", "wait", "enabled"]);
    let pid = target.pid();
    let sites = probe_sites(pid);
    let mut tprof = attach(&[pid], &["--perfetto", trace]);
    target.send_line("go");
    target_says(&target, "flood task span");
    std::thread::sleep(Duration::from_millis(500));
    tprof.signal(libc::SIGINT);
    let status = wait_within(&mut tprof, Duration::from_secs(30)).unwrap_or_else(|| panic!("tprof hangs on a full disk"));
    let err = stderr_text(&tprof);
    let (out, _) = collect(tprof);
    let sess = session(&out);
    eprintln!("tprof with a full export disk: {status}; stderr: {err}");
    let warnings = sess["warnings"].to_string();
    assert!(warnings.contains("No space left on device"), "the loss is in the session's warnings: {sess}");
    assert!(warnings.contains(trace) || err.contains(trace), "the file is named: {sess}\nstderr: {err}");
    assert_sites_restored(pid, &sites);
    target.send_line("next");
    assert_eq!(target_says(&target, "enabled"), "enabled false");
    assert!(target.wait().success(), "the target is unharmed");
}

#[test]
fn full_stdout_fails_clearly() {
    // stdout on a full device (`tprof attach ... > /dev/full`).
    require_root();
    let dir = TempDir::new("devfull");
    let mut target = start_private_target(&dir, &["regions", "sleep:1", "wait", "enabled"]);
    let pid = target.pid();
    let sites = probe_sites(pid);
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("open /dev/full");
    let mut child = Command::new(tprof_bin())
        .args(["attach", "--pid", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tprof");
    let stderr = lines_of(child.stderr.take().expect("stderr"));
    let (_tx, stdout) = mpsc::channel();
    let mut t = Proc { child, stdin: None, stdout, stderr: Some(stderr), dir: None };
    let mut err = Vec::new();
    wait_attached(&t, &mut err);
    target.send_line("go");
    let status = wait_within(&mut t, Duration::from_secs(30)).unwrap_or_else(|| panic!("tprof hangs on a full stdout"));
    let err_text = format!("{}{}", err.join("\n"), stderr_text(&t));
    assert!(!status.success(), "{status}; stderr: {err_text}");
    assert!(err_text.contains("No space left on device") && err_text.contains("output"), "{err_text}");
    assert_sites_restored(pid, &sites);
    target.send_line("next");
    assert_eq!(target_says(&target, "enabled"), "enabled false");
    assert!(target.wait().success());
}
