//! Whom `tprof attach` traces: the processes a traced process forks, the processes of a
//! cgroup (in it at attach, or joining later), the processes that map a binary (started
//! before or after attach), processes in another pid namespace; and clear errors for what
//! it cannot trace.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tprof_tests::*;

/// Starts tprof with `args` and waits for its readiness line.
fn tprof_ready(args: &[&str]) -> Proc {
    let t = spawn_tprof(args);
    await_stderr(&t, "tprof: attached", "tprof did not attach");
    t
}

fn summaries<'a>(out: &'a [Value], name: &str) -> Vec<&'a Value> {
    out.iter().filter(|v| v["type"] == "summary" && v["name"] == name).collect()
}

/// Lets each target run its requests to the end, then stops tprof (SIGINT) and returns
/// what it printed.
fn run_then_stop(targets: &mut [&mut Proc], tprof: Proc) -> Vec<Value> {
    for p in targets.iter_mut() {
        p.send_line("go");
        p.expect_line("done", &mut Vec::new());
        assert!(p.wait().success());
    }
    tprof.signal(libc::SIGINT);
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    out
}

/// A directory for one test, removed (with what is in it) on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("tprof-targets-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }

    /// A copy of `bin` in this directory (its own file: a --binary no other test maps).
    fn copy(&self, bin: &Path, name: &str) -> PathBuf {
        let to = self.0.join(name);
        std::fs::copy(bin, &to).expect("copy the target");
        to
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cgroup v2 directory for one test, removed on drop (after its processes are gone).
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Cgroup {
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mount = info
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                let f: Vec<&str> = pre.split_whitespace().collect();
                (post.starts_with("cgroup2 ") && f.get(3) == Some(&"/")).then(|| PathBuf::from(f[4]))
            })
            .expect("a cgroup v2 hierarchy is mounted");
        let dir = mount.join(format!("tprof-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Cgroup(dir)
    }

    fn join(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.0.display()));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Its processes are killed by their own guards first; give the kernel a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn fault_target() -> PathBuf {
    std::env::var_os("TPROF_FAULT_TARGET_BIN").map(PathBuf::from).expect("TPROF_FAULT_TARGET_BIN (set by `cargo xtask test`)")
}

#[test]
fn a_forking_server_has_every_worker_traced_under_its_own_pid() {
    // Three workers forked after attach, each running one task: all three reported, each
    // under its own pid, none under the server's.
    require_root();
    let dir = Scratch::new("forks");
    let mut server = start_program(&dir.copy(&fault_target(), "fault-target"), &["fork", "fork", "fork", "task:after"]);
    let pid = server.pid();
    let tprof = attach(&[pid], &[]);
    server.send_line("go");
    let mut lines = Vec::new();
    server.expect_line("done", &mut lines);
    assert!(server.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    let workers: Vec<u64> = lines.iter().filter(|l| l.starts_with("child pid")).map(|l| fact(std::slice::from_ref(l), "child pid", "pid").parse().expect("pid")).collect();
    assert_eq!(workers.len(), 3, "{lines:?}");
    let children = summaries(&out, "child");
    assert_eq!(children.len(), 3, "every worker's task: {out:#?}");
    let mut pids: Vec<u64> = children.iter().filter_map(|s| s["pid"].as_u64()).collect();
    pids.sort_unstable();
    let mut want = workers.clone();
    want.sort_unstable();
    assert_eq!(pids, want, "each task under its worker's pid");
    assert!(children.iter().all(|s| s["incomplete"].is_null()), "whole tasks: {children:#?}");
    assert_eq!(summaries(&out, "after")[0]["pid"].as_u64(), Some(u64::from(pid)));
    let sess = session(&out);
    assert_eq!(sess["processes_attached"], 1, "{sess}");
    assert_eq!(sess["processes_followed"], 3, "{sess}");
    assert_eq!(sess["processes_gone"], 4, "{sess}");
}

#[test]
fn a_cgroup_is_traced_with_the_processes_that_join_it() {
    require_root();
    let cg = Cgroup::new("join");
    let dir = Scratch::new("cgroup");
    let bin = dir.copy(&target_bin(), "tprof-target");
    // One process in the cgroup at attach, one that joins after.
    let mut before = start_program(&bin, &["sleep:5"]);
    cg.join(before.pid());
    let cg_arg = cg.0.display().to_string();
    let tprof = tprof_ready(&["attach", "--format", "json", "--cgroup", &cg_arg, "--duration", "20s"]);
    let mut later = start_program(&bin, &["sleep:7"]);
    cg.join(later.pid());
    let said = await_stderr(&tprof, &format!("tprof: tracing pid {}", later.pid()), "the process that joined the cgroup");
    assert!(said.contains("joined the session's scope"), "{said}");
    // An unrelated process running the same binary, outside the cgroup: not traced.
    let mut outside = start_program(&bin, &["sleep:9"]);
    let out = run_then_stop(&mut [&mut before, &mut later, &mut outside], tprof);
    let sleeps: Vec<(String, u64)> = out
        .iter()
        .filter(|v| v["type"] == "summary")
        .map(|v| (v["name"].as_str().unwrap_or("").to_string(), v["pid"].as_u64().unwrap_or(0)))
        .collect();
    assert!(sleeps.contains(&("sleep".into(), u64::from(before.pid()))), "the process in the cgroup at attach: {sleeps:?}");
    assert!(sleeps.contains(&("sleep".into(), u64::from(later.pid()))), "the process that joined: {sleeps:?}");
    assert!(!sleeps.iter().any(|(_, p)| *p == u64::from(outside.pid())), "nothing of the process outside: {sleeps:?}");
    assert_eq!(session(&out)["processes_attached"], 2, "{}", session(&out));
}

#[test]
fn a_binary_is_traced_in_processes_started_after_attach() {
    require_root();
    let dir = Scratch::new("binary");
    let bin = dir.copy(&target_bin(), "tprof-target");
    let bin_arg = bin.display().to_string();
    let tprof = tprof_ready(&["attach", "--format", "json", "--binary", &bin_arg, "--duration", "20s"]);
    let mut later = start_program(&bin, &["sleep:5"]);
    await_stderr(&tprof, &format!("tprof: tracing pid {}", later.pid()), "the process started after attach");
    // The same program from another file: not the binary traced.
    let mut other = start_target(&["sleep:6"]);
    let out = run_then_stop(&mut [&mut later, &mut other], tprof);
    let s = summaries(&out, "sleep");
    assert_eq!(s.len(), 1, "only the process mapping the binary: {s:#?}");
    assert_eq!(s[0]["pid"].as_u64(), Some(u64::from(later.pid())));
    assert!(s[0]["incomplete"].is_null(), "{}", s[0]);
}

#[test]
fn a_process_in_its_own_pid_namespace_is_named_by_both_pids() {
    // unshare --pid --mount --fork --mount-proc: the target is pid 1 of its namespace.
    require_root();
    let dir = Scratch::new("ns");
    let bin = dir.copy(&target_bin(), "tprof-target");
    let bin_arg = bin.display().to_string();
    let unshare = which("unshare");
    let mut target = start_program(&unshare, &["--pid", "--mount", "--fork", "--mount-proc", &bin_arg, "sleep:5"]);
    // Its host pid: unshare's child.
    let host_pid = children_of(target.pid()).into_iter().next().expect("unshare's child");
    let tprof = attach(&[host_pid], &[]);
    target.send_line("go");
    target.expect_line("done", &mut Vec::new());
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    let s = summary(&out, "sleep");
    assert_eq!(s["pid"].as_u64(), Some(u64::from(host_pid)), "the host's pid: {s}");
    assert_eq!(s["ns_pid"].as_u64(), Some(1), "and the namespace's: {s}");
}

#[test]
fn probe_sites_in_a_file_that_exists_only_inside_the_mount_namespace_are_found() {
    // The target runs from a tmpfs mounted only in its own mount namespace: the host has no
    // such path, and tprof finds its probes through what is mapped (/proc/PID/map_files).
    require_root();
    let dir = Scratch::new("mntns");
    let bin = dir.copy(&target_bin(), "tprof-target");
    let inner = format!("/mnt/tprof-only-here-{}", std::process::id());
    let script = format!("mkdir -p {inner} && mount -t tmpfs tprof-test {inner} && cp {} {inner}/t && exec {inner}/t sleep:5", bin.display());
    let unshare = which("unshare");
    let mut target = start_program(&unshare, &["--mount", "--pid", "--fork", "--mount-proc", "sh", "-c", &script]);
    let host_pid = children_of(target.pid()).into_iter().next().expect("unshare's child");
    assert!(!Path::new(&inner).join("t").exists(), "the host sees no such file");
    let tprof = attach(&[host_pid], &[]);
    target.send_line("go");
    target.expect_line("done", &mut Vec::new());
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    let s = summary(&out, "sleep");
    assert_eq!((s["pid"].as_u64(), s["ns_pid"].as_u64()), (Some(u64::from(host_pid)), Some(1)), "{s}");
    assert!(s["incomplete"].is_null(), "{s}");
    let _ = std::fs::remove_dir(&inner);
}

#[test]
fn a_thread_id_is_named_as_a_thread_of_its_process() {
    require_root();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        // SAFETY: gettid has no arguments and cannot fail.
        let _ = tx.send(unsafe { libc::syscall(libc::SYS_gettid) } as u32);
        let _ = stop_rx.recv_timeout(Duration::from_secs(30));
    });
    let tid = rx.recv().expect("the thread's id");
    let o = std::process::Command::new(tprof_bin()).args(["attach", "--duration", "1s", "--pid", &tid.to_string()]).output().expect("run tprof");
    let _ = stop_tx.send(());
    let _ = t.join();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is a thread of process") && err.contains(&format!("--pid {}", std::process::id())), "{err}");
}

/// The children of `pid` (from /proc/PID/task/*/children).
fn children_of(pid: u32) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let v: Vec<u32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if !v.is_empty() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Vec::new()
}

/// A program on PATH.
fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.exists()))
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

#[test]
fn what_cannot_be_traced_is_said_clearly() {
    require_root();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(tprof_bin()).args(args).output().expect("run tprof");
        assert!(!o.status.success(), "{args:?} must fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // A cgroup v1 directory (this hybrid host has them) or a plain directory.
    let v1 = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory"].into_iter().find(|p| Path::new(p).join("cgroup.procs").exists());
    if let Some(v1) = v1 {
        let err = run(&["attach", "--cgroup", v1, "--duration", "1s"]);
        assert!(err.contains("is not a cgroup v2 directory"), "{err}");
    }
    let err = run(&["attach", "--cgroup", "/tmp", "--duration", "1s"]);
    assert!(err.contains("not a cgroup v2 directory") || err.contains("no such cgroup"), "{err}");
    let err = run(&["attach", "--binary", "/bin/true", "--duration", "1s"]);
    assert!(err.contains("has no tprof probes"), "{err}");
    let err = run(&["attach", "--binary", "/nonexistent/tprof-x", "--duration", "1s"]);
    assert!(err.contains("--binary /nonexistent/tprof-x"), "{err}");
}

/// Starts a target as `who` whose pid is `pid` (free now: its old process was reaped), by
/// setting the kernel's last-allocated pid just below it; other processes starting at the
/// same moment may take it first, so this retries.
fn start_target_at_pid(pid: u32, requests: &[&str], who: RunAs) -> Option<Proc> {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("write ns_last_pid (root, initial pid namespace)");
        let p = start_target_as(requests, who);
        if p.pid() == pid {
            return Some(p);
        }
    }
    None
}

#[test]
fn a_pid_reused_after_its_process_exited_is_not_traced() {
    require_root();
    // tprof traces A (one request, then it exits) and B (keeps the session open). As soon
    // as A is reaped, a new process C takes A's pid, before tprof's next poll, and runs a
    // request of its own: C was never a target, so nothing of it may be reported under A's
    // name (tprof holds A by a pidfd, and A's probe links belong to A's memory, not to the
    // number).
    let mut b = start_target_as(&[], RunAs::NOBODY);
    let mut a = start_target_as(&["sleep:5"], RunAs::NOBODY);
    let a_pid = a.pid();
    let tprof = tprof_ready(&["attach", "--pid", &a_pid.to_string(), "--pid", &b.pid().to_string(), "--format", "json"]);
    a.send_line("go");
    a.expect_line("done", &mut Vec::new());
    assert!(a.wait().success());
    let Some(mut c) = start_target_at_pid(a_pid, &["spin:5"], RunAs::NOBODY) else {
        panic!("could not start a process at pid {a_pid} again (50 tries)");
    };
    let out = run_then_stop(&mut [&mut c, &mut b], tprof);
    assert_eq!(summaries(&out, "sleep").len(), 1, "A's request is reported");
    assert!(summaries(&out, "spin").is_empty(), "C's request, at A's reused pid, is not: {:?}", summaries(&out, "spin"));
    let sess = session(&out);
    assert!(sess["processes_gone"].as_u64().unwrap_or(0) >= 1, "A's exit is counted: {sess}");
    // Both targets run the same binary: the second adds no probe site (its file's links are
    // made already) and must not be said to have none.
    let warnings = sess["warnings"].as_array().cloned().unwrap_or_default();
    assert!(!warnings.iter().any(|w| w.as_str().is_some_and(|w| w.contains("has no tprof probes"))), "{sess}");
}
