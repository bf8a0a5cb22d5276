//! The release build an operator installs (`cargo xtask dist`, `cargo xtask install`):
//! static, self-describing, and working from a copy with no file of the checkout around.
//!
//! `cargo xtask test` builds it first and passes its directory in `TPROF_DIST_DIR` (else
//! `target/dist`), and the xtask binary in `TPROF_XTASK_BIN` (else `target/debug/xtask`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use object::elf;
use object::read::elf::{Dyn, ElfFile64, ProgramHeader};
use object::Endianness;
use serde_json::Value;
use tprof_tests::{require_root, target_bin, PATIENCE};

fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dist_dir() -> PathBuf {
    std::env::var_os("TPROF_DIST_DIR").map(PathBuf::from).unwrap_or_else(|| checkout().join("target").join("dist"))
}

fn dist_bin() -> PathBuf {
    let p = dist_dir().join("bin").join("tprof");
    assert!(p.exists(), "{} not found: run `cargo xtask dist` first (`cargo xtask test` does)", p.display());
    p
}

/// An empty directory outside the checkout, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!("tprof-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        assert!(!p.starts_with(checkout().canonicalize().unwrap()), "temp dir {} inside the checkout", p.display());
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command run from `dir`, with a minimal environment (nothing of cargo's or the
/// checkout's: no `CARGO_*`, no `TPROF_*`).
fn cmd_in(dir: &Path, program: &str) -> Command {
    let mut c = Command::new(program);
    c.current_dir(dir).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    c
}

fn run_ok(c: &mut Command) -> String {
    let out: Output = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{c:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

/// The probe ABI version `usdt-probes/ABI.md` declares ("This is **ABI v1**").
fn documented_probe_abi() -> String {
    let abi = std::fs::read_to_string(checkout().join("usdt-probes").join("ABI.md")).unwrap();
    let rest = abi.split("This is **ABI ").nth(1).expect("ABI.md names its version");
    rest.split("**").next().unwrap().to_string()
}

#[test]
fn the_binary_is_static() {
    let data = std::fs::read(dist_bin()).unwrap();
    let file = ElfFile64::<Endianness>::parse(&*data).expect("an ELF64 file");
    let endian = file.endian();
    let mut needed = Vec::new();
    for ph in file.elf_program_headers() {
        assert_ne!(ph.p_type(endian), elf::PT_INTERP, "the release tprof has a program interpreter (dynamic loader)");
        if let Some(dynamic) = ph.dynamic(endian, &*data).unwrap() {
            needed.extend(dynamic.iter().filter(|d| d.d_tag(endian) == u64::from(elf::DT_NEEDED)).map(|d| d.d_val(endian)));
        }
    }
    assert!(needed.is_empty(), "the release tprof needs shared libraries ({} DT_NEEDED entries)", needed.len());
}

#[test]
fn version_names_the_commit_and_the_probe_abi() {
    let v = run_ok(Command::new(dist_bin()).arg("--version"));
    assert!(v.starts_with(&format!("tprof {} (commit ", env!("CARGO_PKG_VERSION"))), "{v}");
    assert!(v.contains(&format!("probe ABI {}", documented_probe_abi())), "the ABI version of usdt-probes/ABI.md: {v}");
    assert!(v.contains("eBPF programs embedded"), "{v}");
    assert!(v.contains("release build"), "{v}");
    // The commit of this checkout, when git can tell (else the build says "unknown").
    let head = Command::new("git").current_dir(checkout()).args(["rev-parse", "HEAD"]).output().ok().filter(|o| o.status.success());
    let expected = head.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_else(|| "unknown".into());
    assert!(v.contains(&format!("(commit {expected},")), "built from {expected} (else rebuild with `cargo xtask dist`): {v}");
    let short = run_ok(Command::new(dist_bin()).arg("-V"));
    assert!(short.contains("(commit ") && short.contains("probe ABI"), "{short}");
}

#[test]
fn a_copy_outside_the_checkout_runs_doctor_list_and_attach() {
    require_root();
    let dir = TempDir::new("dist");
    std::fs::copy(dist_bin(), dir.0.join("tprof")).unwrap();
    std::fs::copy(target_bin(), dir.0.join("tprof-target")).unwrap();

    let version = run_ok(cmd_in(&dir.0, "./tprof").arg("--version"));
    assert!(version.contains("eBPF programs embedded"), "{version}");

    let doctor = run_ok(cmd_in(&dir.0, "./tprof").arg("doctor"));
    assert!(doctor.contains("all essential checks passed"), "{doctor}");

    let list = run_ok(cmd_in(&dir.0, "./tprof").args(["list", "--binary", "./tprof-target"]));
    for probe in ["tprof:task_begin", "tprof:task_end", "tprof:region_begin"] {
        assert!(list.contains(probe), "{probe} in `tprof list`: {list}");
    }

    // The target waits for a line on stdin, so tprof attaches before its requests run.
    let mut target = cmd_in(&dir.0, "./tprof-target")
        .args(["sleep:20", "regions"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut target_out = BufReader::new(target.stdout.take().unwrap());
    let mut line = String::new();
    target_out.read_line(&mut line).unwrap();
    assert!(line.starts_with("ready "), "{line}");

    let mut tprof = cmd_in(&dir.0, "./tprof")
        .args(["attach", "--pid", &target.id().to_string(), "--duration", "2s", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = tprof.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(l) if l.starts_with("tprof: attached") => break,
            Ok(l) => seen.push(l),
            Err(_) => panic!("tprof did not attach; stderr: {seen:#?}"),
        }
    }
    writeln!(target.stdin.as_mut().unwrap(), "go").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut target_out, &mut rest).unwrap();
    assert!(rest.lines().any(|l| l == "done"), "target output: {rest}");
    assert!(target.wait().unwrap().success());

    let out = tprof.wait_with_output().unwrap();
    assert!(out.status.success(), "tprof attach failed ({}); stderr: {seen:#?}", out.status);
    let objects: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for name in ["sleep", "regions"] {
        let s = objects.iter().find(|v| v["type"] == "summary" && v["name"] == name);
        let s = s.unwrap_or_else(|| panic!("no summary of {name:?}: {objects:#?}"));
        assert!(s["wall_ns"].as_u64().is_some_and(|ns| ns > 0), "{s}");
    }
    let sleep = objects.iter().find(|v| v["type"] == "summary" && v["name"] == "sleep").unwrap();
    assert!(sleep["blocked_ns"].as_u64().is_some_and(|ns| ns > 0), "a sleep blocks: {sleep}");
    let session = objects.iter().rev().find(|v| v["type"] == "session").expect("a session object");
    assert_eq!(session["tasks_ended"], 2, "{session}");
}

#[test]
fn install_puts_binary_man_pages_and_completions_under_the_prefix() {
    let xtask = std::env::var_os("TPROF_XTASK_BIN").map(PathBuf::from).unwrap_or_else(|| checkout().join("target/debug/xtask"));
    assert!(xtask.exists(), "{} not found: build it first (`cargo xtask test` does)", xtask.display());
    dist_bin();
    let prefix = TempDir::new("install");
    let mut c = Command::new(&xtask);
    // xtask reads the tree from `$CARGO_TARGET_DIR/dist`.
    c.args(["install", "--no-build", "--prefix"]).arg(&prefix.0).env("CARGO_TARGET_DIR", dist_dir().parent().unwrap());
    run_ok(&mut c);

    let bin = prefix.0.join("bin/tprof");
    let v = run_ok(cmd_in(&prefix.0, bin.to_str().unwrap()).arg("--version"));
    assert!(v.starts_with("tprof "), "{v}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777, 0o755);

    for rel in ["share/bash-completion/completions/tprof", "share/zsh/site-functions/_tprof", "share/fish/vendor_completions.d/tprof.fish"] {
        let text = std::fs::read_to_string(prefix.0.join(rel)).unwrap();
        assert!(text.contains("attach") && text.contains("pid") && text.contains("duration"), "{rel} completes subcommands and options");
    }
    let man1 = prefix.0.join("share/man/man1");
    for page in ["tprof.1", "tprof-attach.1", "tprof-record.1", "tprof-report.1", "tprof-list.1", "tprof-doctor.1"] {
        let text = std::fs::read_to_string(man1.join(page)).unwrap();
        assert!(text.lines().any(|l| l.starts_with(".TH ")), "{page} has a .TH header");
    }
    // Rendered, when man is installed (it is on the machines this project targets).
    if Path::new("/usr/bin/man").exists() {
        let page = run_ok(Command::new("man").arg("-l").arg(man1.join("tprof-attach.1")).env("MANPAGER", "cat").env("MANWIDTH", "100"));
        assert!(page.contains("--pid") && page.contains("--duration"), "{page}");
    } else {
        eprintln!("man is not installed: the pages were checked for their .TH header only");
    }
}
