//! Harness for the end-to-end tests: real `tprof` attached with real eBPF to real target
//! processes. Processes are killed on drop; assertions run on tprof's NDJSON output.
//!
//! These tests need root (CAP_BPF, CAP_PERFMON): without it they fail with a message
//! saying so. They never skip silently. tprof always runs as root; the targets of the main
//! workload tests run as other users ([`RunAs`]), as a service would.
//!
//! The benchmarks live here too ([`bench`]: the driver behind `cargo xtask bench`, and the
//! workloads' side of it), next to the binaries they run, sharing the child-process helpers
//! of [`child`] with the tests.

pub mod bench;
pub mod child;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::Value;

pub use child::{line_reader, Guard};

/// How long a test waits for a process to say something before failing.
pub const PATIENCE: Duration = Duration::from_secs(60);

fn bin(env: &str, name: &str) -> PathBuf {
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("debug").join(name)
    });
    assert!(p.exists(), "{} not found: build it first (`cargo xtask test` does)", p.display());
    p
}

pub fn tprof_bin() -> PathBuf {
    bin("TPROF_BIN", "tprof")
}

pub fn target_bin() -> PathBuf {
    bin("TPROF_TARGET_BIN", "tprof-target")
}

/// The example service (`demo-service`, an axum service with its own `load` generator).
pub fn example_bin() -> PathBuf {
    bin("TPROF_EXAMPLE_BIN", "demo-service")
}

pub fn require_root() {
    // SAFETY: geteuid has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "end-to-end tests attach eBPF programs and need root: run `sudo -E cargo xtask test`");
}

/// A process killed (and reaped) on drop (by its [`Guard`], which derefs to the `Child`).
pub struct Proc {
    pub child: Guard,
    pub stdin: Option<ChildStdin>,
    pub stdout: Receiver<String>,
    pub stderr: Option<Receiver<String>>,
    /// The private directory its binary was copied into, removed after the process is gone.
    pub dir: Option<PrivateDir>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line starting with `prefix`; returns it. Other lines are kept in `seen`.
    pub fn expect_line(&self, prefix: &str, seen: &mut Vec<String>) -> String {
        let who = format!("pid {}", self.pid());
        child::expect_line(&self.stdout, prefix, PATIENCE, seen, &who).unwrap_or_else(|e| panic!("{e:#}; saw {seen:?}"))
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").expect("write to target stdin");
        stdin.flush().expect("flush target stdin");
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for child")
    }

    /// Sends a signal.
    pub fn signal(&self, sig: libc::c_int) {
        // The pid is ours: the child is not reaped before the Proc is dropped.
        child::signal(self.pid(), sig).unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid()));
    }
}

/// Who a target process runs as. tprof (started by the tests as root) must trace a target
/// of any uid exactly like a root one: a uid without a passwd entry, `nobody`, a user whose
/// binary sits in a directory only that user can enter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Run a copy of the binary in a fresh 0700 directory owned by `uid` ([`PrivateDir`]).
    pub private_copy: bool,
}

impl RunAs {
    /// The test process's own identity (root): the binary runs where it is.
    pub const ROOT: RunAs = RunAs { uid: 0, gid: 0, private_copy: false };
    /// A plain uid and gid; no passwd entry is needed for a process's ids.
    pub const UID_1000: RunAs = RunAs { uid: 1000, gid: 1000, private_copy: false };
    /// `nobody` / `nogroup`.
    pub const NOBODY: RunAs = RunAs { uid: 65534, gid: 65534, private_copy: false };

    /// The same user, running a private copy of the binary (see [`PrivateDir`]).
    pub const fn private(self) -> RunAs {
        RunAs { private_copy: true, ..self }
    }

    fn is_root(self) -> bool {
        self.uid == 0 && self.gid == 0
    }

    /// A command for `path` (or a private copy of it, in the returned directory) that runs
    /// as this user. Root keeps its supplementary groups; another user gets none (std drops
    /// them when a root parent sets the uid).
    pub fn command(self, path: &Path) -> (Command, Option<PrivateDir>) {
        let (exe, dir) = if self.private_copy {
            let dir = PrivateDir::new(self);
            (dir.copy_in(path), Some(dir))
        } else {
            (path.to_path_buf(), None)
        };
        let mut cmd = Command::new(exe);
        if !self.is_root() {
            cmd.uid(self.uid).gid(self.gid);
            // The test's cwd (the tests crate) may not be readable by that user.
            cmd.current_dir("/");
        }
        (cmd, dir)
    }
}

/// A fresh directory of mode 0700 owned by a target's user, holding its private copy of a
/// binary (or files it reads or writes); removed on drop. Only that user (and root, i.e.
/// tprof) can enter it.
pub struct PrivateDir {
    pub path: PathBuf,
    owner: RunAs,
}

impl PrivateDir {
    pub fn new(owner: RunAs) -> PrivateDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tprof-as-{}-{}-{n}", owner.uid, std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        std::os::unix::fs::chown(&path, Some(owner.uid), Some(owner.gid))
            .unwrap_or_else(|e| panic!("chown {} to {}:{}: {e}", path.display(), owner.uid, owner.gid));
        PrivateDir { path, owner }
    }

    /// Copies `bin` into the directory, owned by the directory's user; returns the copy.
    pub fn copy_in(&self, bin: &Path) -> PathBuf {
        let name = bin.file_name().expect("a binary's file name");
        let to = self.path.join(name);
        std::fs::copy(bin, &to).unwrap_or_else(|e| panic!("copy {} to {}: {e}", bin.display(), to.display()));
        std::os::unix::fs::chown(&to, Some(self.owner.uid), Some(self.owner.gid)).expect("chown the copy");
        to
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Starts tprof-target with these requests; it waits for a line on stdin before running them.
pub fn start_target(requests: &[&str]) -> Proc {
    start_program(&target_bin(), requests)
}

/// [`start_target`] as `who`.
pub fn start_target_as(requests: &[&str], who: RunAs) -> Proc {
    start_program_as(&target_bin(), requests, who)
}

/// Starts a program that prints `ready <pid>` and waits for a line on stdin.
pub fn start_program(path: &Path, args: &[&str]) -> Proc {
    start_program_as(path, args, RunAs::ROOT)
}

/// [`start_program`] as `who`.
pub fn start_program_as(path: &Path, args: &[&str], who: RunAs) -> Proc {
    let (mut cmd, dir) = who.command(path);
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {} as {who:?}: {e}", path.display()));
    let stdin = child.stdin.take();
    let stdout = line_reader(child.stdout.take().expect("stdout"));
    let p = Proc { child: Guard(child), stdin, stdout, stderr: None, dir };
    p.expect_line("ready ", &mut Vec::new());
    p
}

/// Starts one instance of an example service (`serve --addr 127.0.0.1:0 ...`) and returns it
/// with the address from its `listening on <addr> pid <pid>` banner. It stops when the
/// returned `Proc` is dropped (stdin closes), or after 120 s at the latest.
pub fn start_service(exe: &Path, extra: &[&str], who: RunAs) -> (Proc, String) {
    let (mut cmd, dir) = who.command(exe);
    let mut child = cmd
        .args(["serve", "--addr", "127.0.0.1:0", "--stop-on-stdin-eof", "--seconds", "120"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {} as {who:?}: {e}", exe.display()));
    let stdin = child.stdin.take();
    let stdout = line_reader(child.stdout.take().expect("stdout"));
    let p = Proc { child: Guard(child), stdin, stdout, stderr: None, dir };
    let banner = p.expect_line("listening on ", &mut Vec::new());
    assert!(banner.ends_with(&format!(" pid {}", p.pid())), "{banner}");
    let addr = banner.split_whitespace().nth(2).expect("address in banner").to_string();
    (p, addr)
}

/// Starts `tprof` with `args`, without waiting for anything.
pub fn spawn_tprof(args: &[&str]) -> Proc {
    let mut child = Command::new(tprof_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tprof");
    let stdout = line_reader(child.stdout.take().expect("stdout"));
    let stderr = Some(line_reader(child.stderr.take().expect("stderr")));
    Proc { child: Guard(child), stdin: None, stdout, stderr, dir: None }
}

/// Waits (up to [`PATIENCE`]) for a line on tprof's stderr starting with `prefix` and
/// returns it; panics naming `what` and the lines seen before.
pub fn await_stderr(t: &Proc, prefix: &str, what: &str) -> String {
    let rx = t.stderr.as_ref().expect("stderr piped (spawn_tprof)");
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(l) if l.starts_with(prefix) => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("{what}: no {prefix:?} line on stderr; before: {seen:#?}"),
        }
    }
}

/// Starts `tprof attach --format json` on `pids` and waits until it has attached.
pub fn attach(pids: &[u32], extra: &[&str]) -> Proc {
    let mut args: Vec<String> = vec!["attach".into(), "--format".into(), "json".into()];
    for p in pids {
        args.push("--pid".into());
        args.push(p.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = spawn_tprof(&argv);
    let stderr = t.stderr.as_ref().expect("stderr");
    let mut seen = Vec::new();
    if let Err(e) = child::expect_line(stderr, "tprof: attached", PATIENCE, &mut seen, "tprof") {
        panic!("tprof did not attach: {e:#}; stderr: {seen:#?}");
    }
    t
}

/// Waits for tprof to exit and returns its NDJSON objects and exit status.
pub fn collect(mut t: Proc) -> (Vec<Value>, ExitStatus) {
    let status = t.wait();
    let mut out = Vec::new();
    while let Ok(line) = t.stdout.recv_timeout(Duration::from_secs(5)) {
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("tprof printed non-JSON {line:?}: {e}"));
        out.push(v);
    }
    (out, status)
}

/// Everything tprof printed on stderr (after it exited).
pub fn stderr_text(t: &Proc) -> String {
    let mut s = String::new();
    if let Some(rx) = &t.stderr {
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
            s.push_str(&l);
            s.push('\n');
        }
    }
    s
}

/// The summary object of the task named `name` (exactly one expected).
pub fn summary<'a>(out: &'a [Value], name: &str) -> &'a Value {
    let found: Vec<&Value> = out.iter().filter(|v| v["type"] == "summary" && v["name"] == name).collect();
    assert_eq!(found.len(), 1, "expected one summary named {name:?}, got {}: {out:#?}", found.len());
    found[0]
}

pub fn ms(v: &Value, field: &str) -> f64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} missing in {v}")) as f64 / 1e6
}

/// The session object (last line).
pub fn session(out: &[Value]) -> &Value {
    out.iter().rev().find(|v| v["type"] == "session").expect("a session object")
}

/// Pulls `<word> <value>` facts printed by the target (e.g. `sleep task span <hex>`).
pub fn fact(lines: &[String], prefix: &str, word: &str) -> String {
    let line = lines.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {lines:?}"));
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == word {
            return it.next().unwrap_or_default().to_string();
        }
    }
    panic!("no {word:?} in {line:?}")
}

/// Runs `session` (one tprof session on a fresh target) until it reports no missed
/// scheduler switch-in, at most `MAX_SESSION_TRIES` times. A switch-in can be missed while
/// another BPF tracer attaches or detaches on the same tracepoint (README, known
/// limitations): tprof then counts it (`missed_switch_ins`) and marks the task, which is
/// right, but the exact-figure tests need a clean session. Each retry is said on stderr;
/// if every try misses one, the last session is returned and the caller's assertions fail.
pub fn clean_session<T>(mut session: impl FnMut() -> (Vec<Value>, T)) -> (Vec<Value>, T) {
    let mut tries = 0;
    loop {
        tries += 1;
        let (out, extra) = session();
        let missed = out.iter().rev().find(|v| v["type"] == "session").and_then(|s| s["missed_switch_ins"].as_u64()).unwrap_or(0);
        if missed == 0 || tries >= MAX_SESSION_TRIES {
            return (out, extra);
        }
        eprintln!("note: session {tries} missed {missed} switch-in(s) (another BPF tracer active?): running it again");
    }
}

pub const MAX_SESSION_TRIES: u32 = 3;

/// Runs `tprof-target` as `who` with `requests` under `tprof attach` (plus `extra` flags) in
/// a clean session (see [`clean_session`]) and returns tprof's NDJSON and the target's
/// stdout lines.
pub fn trace_requests(requests: &[&str], extra: &[&str], who: RunAs) -> (Vec<Value>, Vec<String>) {
    require_root();
    clean_session(|| {
        let mut target = start_target_as(requests, who);
        let tprof = attach(&[target.pid()], extra);
        target.send_line("go");
        let mut lines = Vec::new();
        target.expect_line("done", &mut lines);
        assert!(target.wait().success(), "target failed");
        // tprof notices the target's exit by itself (rescan every 500 ms) and stops.
        let (out, status) = collect(tprof);
        assert!(status.success(), "tprof failed: {status}");
        (out, lines)
    })
}
