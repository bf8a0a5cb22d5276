//! The fault suite: tprof runs as root next to production services, so it must never harm
//! them, never leave probes behind, and never become a way in. Each case injects one fault
//! on a real kernel and asserts the outcome, for tprof (it survives, or fails clearly) and
//! for the target (it keeps running unharmed, its probes back to a `nop`).
//!
//! Covered elsewhere: no such pid, kernel thread, no probes, not root (errors.rs); SIGINT and
//! semaphore disarm, ring overflow accounting (attach.rs).
//!
//! Every target runs from a private copy of its binary, so that a concurrent `cargo build`
//! replacing `target/debug/tprof-target` cannot turn into a "binary deleted" fault here.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tprof_tests::*;

// ---- guards and small helpers --------------------------------------------------------------

/// A directory removed (after unmounting whatever the test mounted on it) on drop.
struct TempDir {
    path: PathBuf,
    mounted: bool,
}

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("tprof-fault-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path, mounted: false }
    }

    /// Mounts a tmpfs of `size` (e.g. `64k`) with `opts` on the directory.
    fn mount_tmpfs(&mut self, size: &str, extra: &str) {
        let opts = if extra.is_empty() { format!("size={size}") } else { format!("size={size},{extra}") };
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &opts, "tprof-fault"]).arg(&self.path).status().expect("mount runs");
        assert!(st.success(), "mount -t tmpfs -o {opts} {}", self.path.display());
        self.mounted = true;
    }

    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A private copy of `bin` in `dir` (see the module comment).
fn private_copy(bin: &Path, dir: &TempDir, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(bin, &to).unwrap_or_else(|e| panic!("copy {} to {}: {e}", bin.display(), to.display()));
    to
}

fn fault_target_bin() -> PathBuf {
    let p = std::env::var_os("TPROF_FAULT_TARGET_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("debug").join("fault-target"));
    assert!(p.exists(), "{} not found: build it first (`cargo build --workspace --all-targets`)", p.display());
    p
}

/// Starts a private copy of tprof-target with `requests`.
fn start_private_target(dir: &TempDir, requests: &[&str]) -> Proc {
    start_program(&private_copy(&target_bin(), dir, "tprof-target"), requests)
}

/// Reads lines of `r` on a thread (lossily: the tests look at what tprof printed, whatever
/// it is).
fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let l = String::from_utf8_lossy(&buf).trim_end_matches('\n').to_string();
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Waits for tprof's readiness line on its stderr; other stderr lines go to `seen`.
fn wait_attached(t: &Proc, seen: &mut Vec<String>) -> String {
    let rx = t.stderr.as_ref().expect("stderr piped");
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(l) if l.starts_with("tprof: attached to") => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("tprof did not attach; stderr: {seen:#?}"),
        }
    }
}

/// Waits up to `limit` for a child to exit; None if it is still running.
fn wait_within(p: &mut Proc, limit: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(st) = p.child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if t0.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `line`'s prefix on the target's stdout and returns the line.
fn target_says(target: &Proc, prefix: &str) -> String {
    target.expect_line(prefix, &mut Vec::new())
}

fn summaries_named<'a>(out: &'a [Value], name: &str) -> Vec<&'a Value> {
    out.iter().filter(|v| v["type"] == "summary" && v["name"] == name).collect()
}

// ---- what tprof leaves in the kernel and in the target -------------------------------------

/// The BPF objects a process holds through its file descriptors (from /proc/PID/fdinfo),
/// and its perf event fds (one per attached uprobe).
#[derive(Debug, Default)]
struct BpfFds {
    progs: HashSet<u64>,
    maps: HashSet<u64>,
    links: HashSet<u64>,
    perf_events: usize,
}

fn bpf_fds_of(pid: u32) -> BpfFds {
    let mut out = BpfFds::default();
    let dir = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("read fdinfo");
    for e in dir.flatten() {
        let fd = e.file_name();
        if let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/{}", fd.to_string_lossy())) {
            if target.to_string_lossy() == "anon_inode:[perf_event]" {
                out.perf_events += 1;
            }
        }
        let Ok(info) = std::fs::read_to_string(e.path()) else { continue };
        let field = |name: &str| -> Option<u64> {
            info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok())
        };
        if let Some(id) = field("link_id:") {
            out.links.insert(id);
        } else if let Some(id) = field("map_id:") {
            out.maps.insert(id);
        } else if let Some(id) = field("prog_id:") {
            out.progs.insert(id);
        }
    }
    out
}

/// Ids of every BPF object of `kind` (`prog`, `link`, `map`) the kernel holds now.
fn live_ids(kind: &str) -> HashSet<u64> {
    let out = Command::new("bpftool").args([kind, "list", "-j"]).output().expect("bpftool runs (cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool {kind} list: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool -j prints JSON");
    v.as_array().map(|a| a.iter().filter_map(|o| o["id"].as_u64()).collect()).unwrap_or_default()
}

/// Asserts the kernel released every BPF object of `fds` (it does so asynchronously after
/// the last reference goes: polled for up to 10 s).
fn assert_released(fds: &BpfFds) {
    let t0 = Instant::now();
    loop {
        let left: Vec<(String, u64)> = [("prog", &fds.progs), ("link", &fds.links), ("map", &fds.maps)]
            .into_iter()
            .flat_map(|(kind, ids)| {
                let live = live_ids(kind);
                ids.iter().filter(move |id| live.contains(id)).map(move |id| (kind.to_string(), *id)).collect::<Vec<_>>()
            })
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "BPF objects of the dead tprof still loaded after 10 s: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The target's tprof probe sites as (probe name, virtual address), from `tprof list --pid`
/// and /proc/PID/maps.
fn probe_sites(pid: u32) -> Vec<(String, u64)> {
    let out = Command::new(tprof_bin()).args(["list", "--pid", &pid.to_string()]).output().expect("tprof list runs");
    assert!(out.status.success(), "tprof list --pid {pid}: {}", String::from_utf8_lossy(&out.stderr));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("target maps");
    let mut sites = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace();
        let (Some(what), Some(off)) = (words.next(), words.next()) else { continue };
        let Some(what) = what.strip_prefix("usdt:") else { continue };
        let mut parts = what.rsplitn(3, ':');
        let (Some(name), Some("tprof"), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let off = u64::from_str_radix(off.trim_start_matches("+0x"), 16).expect("hex file offset");
        let path = path.strip_prefix(&format!("/proc/{pid}/root")).unwrap_or(path);
        let exe_link = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let want = if path == format!("/proc/{pid}/exe") {
            exe_link.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
        } else {
            path.to_string()
        };
        let addr = maps.lines().find_map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            if f.len() < 6 || !f[1].contains('x') || f[5..].join(" ") != want {
                return None;
            }
            let (start, end) = f[0].split_once('-')?;
            let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
            let moff = u64::from_str_radix(f[2], 16).ok()?;
            (moff <= off && off < moff + (end - start)).then(|| start + off - moff)
        });
        sites.push((name.to_string(), addr.unwrap_or_else(|| panic!("site {line} not in an executable mapping of {pid}:\n{maps}"))));
    }
    assert!(!sites.is_empty(), "no tprof probe sites in pid {pid}");
    sites
}

/// The first byte of each site in the target's memory: 0x90 (`nop`) when no uprobe is
/// installed, 0xcc (`int3`) while one is.
fn site_bytes(pid: u32, sites: &[(String, u64)]) -> Vec<u8> {
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open target memory");
    sites
        .iter()
        .map(|(name, addr)| {
            let mut b = [0u8; 1];
            mem.read_exact_at(&mut b, *addr).unwrap_or_else(|e| panic!("read site {name} at {addr:#x}: {e}"));
            b[0]
        })
        .collect()
}

/// Waits (up to 10 s) until every site is a `nop` again.
fn assert_sites_restored(pid: u32, sites: &[(String, u64)]) {
    let t0 = Instant::now();
    loop {
        let bytes = site_bytes(pid, sites);
        if bytes.iter().all(|&b| b == 0x90) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "probe sites still patched 10 s after tprof died: {sites:x?} = {bytes:x?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- tprof's privileged helper -------------------------------------------------------------

/// The pid of tprof's privileged helper: its child named `tprof-helper`.
fn helper_of(tprof: u32) -> u32 {
    let found: Vec<u32> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // comm is in parentheses; the state, then the ppid, follow the last ')'.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            ppid == Some(tprof) && stat.contains("(tprof-helper)")
        })
        .collect();
    assert_eq!(found.len(), 1, "tprof {tprof} has one privileged helper: {found:?}");
    found[0]
}

/// Waits (up to 10 s) until process `pid` is gone (reaped, or at least not the helper).
fn assert_gone(pid: u32, what: &str) {
    let t0 = Instant::now();
    loop {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if comm.trim() != "tprof-helper" || zombie {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{what} (pid {pid}) still running 10 s after tprof went");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `/proc/PID/status` field of a process or thread.
fn status_field(path: &str, name: &str) -> String {
    let status = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_else(|| panic!("no {name} in {path}"))
}

fn caps(path: &str, name: &str) -> u64 {
    u64::from_str_radix(&status_field(path, name), 16).expect("hex capability set")
}

// ---- tprof killed while attached -----------------------------------------------------------

/// SIGTERM or SIGKILL tprof mid-session: the kernel objects go, the sites are `nop`s again,
/// the semaphores are disarmed and the target runs on.
fn killed_while_attached(sig: libc::c_int) {
    require_root();
    let dir = TempDir::new(&format!("kill{sig}"));
    let mut target = start_private_target(&dir, &["sleep:5", "enabled", "wait", "enabled", "sleep:1"]);
    let pid = target.pid();
    let sites = probe_sites(pid);
    assert!(site_bytes(pid, &sites).iter().all(|&b| b == 0x90), "probes are nops before tprof attaches");
    let tprof = attach(&[pid], &[]);
    let helper = helper_of(tprof.pid());
    let fds = bpf_fds_of(tprof.pid());
    assert!(fds.progs.len() >= 2, "tp_btf programs and the USDT program are loaded: {fds:?}");
    assert_eq!(bpf_fds_of(helper).perf_events, 0, "the helper keeps no uprobe of its own");
    // This kernel has uprobe_multi links: one per file and USDT program (the fault target's
    // sites use both programs), beside one per tracepoint (12), and no perf event at all.
    assert_eq!(fds.perf_events, 0, "no uprobe perf events with uprobe_multi links: {fds:?}");
    assert_eq!(fds.links.len(), 12 + 2, "a link per tracepoint and per file and program: {fds:?} ({} sites)", sites.len());
    assert!(!fds.maps.is_empty(), "{fds:?}");
    target.send_line("go");
    assert_eq!(target_says(&target, "enabled"), "enabled true");
    assert!(site_bytes(pid, &sites).iter().all(|&b| b == 0xcc), "every site is a breakpoint while attached");

    tprof.signal(sig);
    let mut tprof = tprof;
    if sig == libc::SIGTERM {
        let (out, status) = collect(tprof);
        assert!(status.success(), "SIGTERM is a clean stop: {status}");
        let sess = session(&out);
        assert_eq!(sess["stop_reason"], "terminated (SIGTERM)", "{sess}");
        assert_eq!(summaries_named(&out, "sleep").len(), 1, "the finished request is reported: {out:#?}");
    } else {
        let status = wait_within(&mut tprof, Duration::from_secs(10)).expect("SIGKILL ends tprof");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }
    assert_released(&fds);
    assert_sites_restored(pid, &sites);
    assert_gone(helper, "the privileged helper");
    target.send_line("next");
    assert_eq!(target_says(&target, "enabled"), "enabled false", "the kernel disarmed the semaphores when tprof went");
    target_says(&target, "done");
    assert!(target.wait().success(), "the target runs on unharmed");
}

#[test]
fn sigterm_while_attached_leaves_nothing_behind() {
    killed_while_attached(libc::SIGTERM);
}

#[test]
fn sigkill_while_attached_leaves_nothing_behind() {
    killed_while_attached(libc::SIGKILL);
}

#[test]
fn after_attach_tprof_holds_no_privilege_and_its_helper_three() {
    require_root();
    let dir = TempDir::new("privs");
    let mut target = start_private_target(&dir, &["sleep:5"]);
    let tprof = spawn_tprof(&["-v", "attach", "--format", "json", "--pid", &target.pid().to_string()]);
    let mut early = Vec::new();
    wait_attached(&tprof, &mut early);
    let early = early.join("\n");
    let me = tprof.pid();
    let helper = helper_of(me);
    // tprof itself, every thread of it: no capability in any set, no longer uid 0.
    let uid = std::env::var("SUDO_UID").ok().and_then(|u| u.parse::<u32>().ok()).filter(|u| *u != 0).unwrap_or(65534);
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{me}/task")).expect("tasks").flatten().map(|e| e.path().join("status").display().to_string()).collect();
    assert!(!tasks.is_empty());
    for t in &tasks {
        for set in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:", "CapBnd:"] {
            assert_eq!(caps(t, set), 0, "{t}: {set} of tprof is empty");
        }
        assert_eq!(status_field(t, "Uid:"), format!("{uid}\t{uid}\t{uid}\t{uid}"), "{t}");
        assert_eq!(status_field(t, "NoNewPrivs:"), "1", "{t}");
    }
    // The helper: exactly CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE
    // once it holds the uprobe_multi programs (this kernel has them): CAP_SYS_ADMIN, kept
    // for the perf-event fallback, went then, from its effective and permitted sets (its
    // bounding set still names it; with no_new_privs no exec can bring it back). uid 0;
    // no_new_privs.
    let kept = (1u64 << 2) | (1 << 19) | (1 << 40);
    let hs = format!("/proc/{helper}/status");
    for set in ["CapEff:", "CapPrm:"] {
        assert_eq!(caps(&hs, set), kept, "{set} of the helper");
    }
    assert_eq!(caps(&hs, "CapBnd:"), kept | (1 << 21), "CapBnd of the helper");
    assert_eq!(caps(&hs, "CapInh:") | caps(&hs, "CapAmb:"), 0);
    assert_eq!(status_field(&hs, "NoNewPrivs:"), "1");
    assert!(status_field(&hs, "Uid:").starts_with("0\t"));
    assert_eq!(std::fs::read_dir(format!("/proc/{helper}/task")).expect("tasks").count(), 1, "the helper is single-threaded");
    target.send_line("go");
    target_says(&target, "done");
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    assert_eq!(summaries_named(&out, "sleep").len(), 1, "traced as before");
    // -v says what each side kept, one line each, before attaching.
    assert!(early.contains(&format!("tprof (pid {me}) privileges: kept none;")), "{early}");
    assert!(
        early.contains(&format!("privileged helper (pid {helper}): privileges: kept CAP_DAC_READ_SEARCH,CAP_SYS_PTRACE,CAP_SYS_ADMIN,CAP_CHECKPOINT_RESTORE;")),
        "{early}"
    );
    assert_gone(helper, "the privileged helper");
}

#[test]
fn tprof_runs_on_when_its_helper_dies() {
    // The helper killed mid-session: tprof says so, keeps tracing the probes attached, and
    // stops cleanly.
    require_root();
    let dir = TempDir::new("helper-dies");
    let mut target = start_private_target(&dir, &["sleep:5", "wait", "sleep:5", "enabled"]);
    let pid = target.pid();
    let sites = probe_sites(pid);
    let tprof = attach(&[pid], &[]);
    let helper = helper_of(tprof.pid());
    target.send_line("go");
    target_says(&target, "sleep task");
    // SAFETY: kill with a pid and a signal; the helper is tprof's child, root may signal it.
    assert_eq!(unsafe { libc::kill(helper as libc::pid_t, libc::SIGKILL) }, 0);
    // tprof notices at its next rescan (every 500 ms) and says so on stderr.
    let rx = tprof.stderr.as_ref().expect("stderr");
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(l) if l.contains("privileged helper is gone") => break,
            Ok(l) => seen.push(l),
            Err(_) => panic!("tprof never said its helper is gone: {seen:?}"),
        }
    }
    target.send_line("next");
    assert_eq!(target_says(&target, "enabled"), "enabled true", "the probes stay armed");
    target_says(&target, "done");
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    assert_eq!(summaries_named(&out, "sleep").len(), 2, "both requests traced, the one after the helper died too: {out:#?}");
    let sess = session(&out);
    assert!(sess["warnings"].to_string().contains("what was attached is still traced"), "{sess}");
    assert_eq!(sess["sites"].as_u64(), Some(sites.len() as u64), "{sess}");
}

// ---- two tprof instances on one pid ---------------------------------------------------------

#[test]
fn two_instances_on_one_pid() {
    require_root();
    let dir = TempDir::new("two");
    let mut target = start_private_target(&dir, &["sleep:5", "regions", "enabled", "wait", "sleep:5", "enabled"]);
    let pid = target.pid();
    let a = attach(&[pid], &[]);
    let b = attach(&[pid], &[]);
    let a_fds = bpf_fds_of(a.pid());
    target.send_line("go");
    let mut lines = Vec::new();
    assert_eq!(target.expect_line("enabled", &mut lines), "enabled true");
    let first_sleep = fact(&lines, "sleep task", "span");
    let regions = fact(&lines, "regions task", "span");

    // Stop one: the other keeps the probes armed and keeps tracing.
    a.signal(libc::SIGINT);
    let (out_a, st_a) = collect(a);
    assert!(st_a.success(), "{st_a}");
    assert_released(&a_fds);
    target.send_line("next");
    assert_eq!(target.expect_line("enabled", &mut lines), "enabled true", "the semaphores stay armed while one tprof remains");
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let second_sleep = lines.iter().filter(|l| l.starts_with("sleep task")).nth(1).expect("second sleep").clone();
    let second_sleep = fact(&[second_sleep], "sleep task", "span");
    let (out_b, st_b) = collect(b);
    assert!(st_b.success(), "{st_b}");
    assert_eq!(session(&out_a)["stop_reason"], "interrupted (SIGINT)");
    assert_eq!(session(&out_b)["stop_reason"], "target exited");

    let spans = |out: &[Value]| -> Vec<(String, String)> {
        out.iter()
            .filter(|v| v["type"] == "summary")
            .map(|v| (v["name"].as_str().unwrap_or("").to_string(), v["span_id"].as_str().unwrap_or("").to_string()))
            .collect()
    };
    let want_a = vec![("sleep".to_string(), first_sleep.clone()), ("regions".to_string(), regions.clone())];
    assert_eq!(spans(&out_a), want_a, "instance A saw the tasks while it was attached");
    let mut want_b = want_a.clone();
    want_b.push(("sleep".to_string(), second_sleep));
    assert_eq!(spans(&out_b), want_b, "instance B saw the same tasks, and the one after A stopped");
    for out in [&out_a, &out_b] {
        let sess = session(out);
        assert_eq!(sess["kernel_drops_total"], 0, "{sess}");
        let s = out.iter().find(|v| v["type"] == "summary" && v["span_id"] == first_sleep.as_str()).expect("first sleep");
        // One instance attaching or detaching on the scheduler tracepoints can make the
        // other miss a sched_switch (README, known limitations): then it must say so.
        if sess["missed_switch_ins"] == 0 {
            assert!(s["incomplete"].is_null(), "{s}");
        } else {
            eprintln!("note: an instance missed a switch-in while the other attached/detached: {sess}");
            assert!(out.iter().any(|v| v["type"] == "summary" && v["incomplete"].as_str().is_some_and(|w| w.contains("inferred"))), "the miss is reported on a task");
        }
        assert!(ms(s, "blocked_ns") >= 4.9, "each instance charges the sleep on its own: {s}");
    }
}

// ---- process lifecycle: threads, fork, exec, deleted binary ---------------------------------

#[test]
fn thousands_of_threads_spawned_and_joined() {
    require_root();
    const N: usize = 2000;
    let dir = TempDir::new("threads");
    let exe = private_copy(&fault_target_bin(), &dir, "fault-target");
    let (out, ()) = clean_session(|| {
        let mut target = start_program(&exe, &[&format!("threads:{N}")]);
        let tprof = attach(&[target.pid()], &[]);
        target.send_line("go");
        target_says(&target, &format!("threads {N} done"));
        target_says(&target, "done");
        assert!(target.wait().success());
        let (out, status) = collect(tprof);
        assert!(status.success(), "tprof survives {N} threads coming and going: {status}");
        (out, ())
    });
    let sess = session(&out);
    assert_eq!(sess["stop_reason"], "target exited");
    let thr = summaries_named(&out, "thr");
    assert_eq!(thr.len(), N, "one summary per thread's task: {sess}");
    let complete = thr.iter().filter(|s| s["incomplete"].is_null()).count();
    assert_eq!(complete, N, "every task has its full ledger: {sess}");
    assert!(thr.iter().all(|s| s["threads"].as_array().map(Vec::len) == Some(1)), "each task ran on its own thread");
    let tids: HashSet<u64> = thr.iter().filter_map(|s| s["threads"][0].as_u64()).collect();
    assert!(tids.len() > N / 2, "thread ids are distinct (some may be reused): {}", tids.len());
    assert_eq!(sess["kernel_drops_total"], 0, "{sess}");
    assert_eq!(sess["missed_switch_ins"], 0, "no switch-in of a traced thread went unseen: {sess}");
    let warnings = sess["warnings"].to_string();
    assert!(!warnings.contains("could not track"), "the kernel's thread map never filled: {sess}");
}

#[test]
fn target_forks_a_child() {
    require_root();
    let dir = TempDir::new("fork");
    let mut target = start_program(&private_copy(&fault_target_bin(), &dir, "fault-target"), &["fork", "task:after", "enabled"]);
    let pid = target.pid();
    let tprof = attach(&[pid], &[]);
    target.send_line("go");
    let mut lines = Vec::new();
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    let child_pid: u64 = fact(&lines, "child pid", "pid").parse().expect("child pid");
    let child_span = fact(&lines, "child pid", "span");
    assert_ne!(child_pid, u64::from(pid));
    assert!(lines.iter().any(|l| l == "enabled true"), "the parent stays armed: {lines:?}");
    // The child is another process: not traced (tprof traces the pids it was given), and
    // nothing of it leaks into the parent's report.
    assert!(!out.iter().any(|v| v["span_id"] == child_span.as_str()), "the child's task is not reported: {out:#?}");
    assert!(!out.iter().any(|v| v["pid"].as_u64() == Some(child_pid)), "no event of the child's pid");
    assert_eq!(summaries_named(&out, "parent").len(), 1);
    assert_eq!(summaries_named(&out, "after").len(), 1);
    assert_eq!(session(&out)["stop_reason"], "target exited");
    // The forked child inherits the parent's memory, armed semaphores included, and the
    // breakpoints. With uprobe_multi links (this kernel) the kernel keeps them in the child
    // while tprof is attached, and drops the child's hits before tprof's program runs (the
    // link filters by process): the child reads armed, and its probes cost a trap each
    // until tprof detaches (README, known limitations). (With one perf event per site, the
    // fallback before Linux 6.6, the kernel removed them at the child's first hit.)
    assert_eq!(session(&out)["probe_links"], "uprobe_multi");
    let before = fact(&lines, "child enabled-before", "enabled-before");
    let after = fact(&lines, "child enabled ", "enabled");
    eprintln!("forked child's usdt_probes::enabled(): {before} before its first probe, {after} after");
    assert_eq!((before.as_str(), after.as_str()), ("true", "true"), "the child inherits the armed semaphores: {lines:?}");
}

/// The target execs another program (same pid). tprof keeps watching the pid: its rescan
/// finds the new program's probes and attaches them (stderr says so), so requests of the
/// new image are traced; tasks of the old image still open are reported incomplete.
fn exec_case(open_at_exec: bool) {
    require_root();
    let dir = TempDir::new(if open_at_exec { "exec-open" } else { "exec" });
    let new_prog = private_copy(&target_bin(), &dir, "tprof-target");
    let first = if open_at_exec { "exec-open" } else { "exec" };
    let mut target = start_program(
        &private_copy(&fault_target_bin(), &dir, "fault-target"),
        &["task:before", first, "--", new_prog.to_str().expect("utf-8 path"), "sleep:20", "enabled"],
    );
    let pid = target.pid();
    let tprof = attach(&[pid], &[]);
    target.send_line("go");
    let mut lines = Vec::new();
    let again = target.expect_line("ready ", &mut lines);
    assert_eq!(again, format!("ready {pid}"), "exec keeps the pid");
    // tprof notices the new image at its next rescan (every 500 ms).
    let rx = tprof.stderr.as_ref().expect("stderr");
    let mut err = Vec::new();
    let t0 = Instant::now();
    let noticed = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains("more probe sites in pid") => break true,
            Ok(l) => err.push(l),
            Err(_) if t0.elapsed() > Duration::from_secs(5) => break false,
            Err(_) => {}
        }
    };
    assert!(noticed, "tprof attaches the exec'ed program's probes; stderr: {err:?}");
    target.send_line("go");
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    assert!(lines.iter().any(|l| l == "enabled true"), "the new image's semaphores are armed: {lines:?}");
    let sess = session(&out);
    assert_eq!(sess["stop_reason"], "target exited", "{sess}");
    assert_eq!(summaries_named(&out, "before").len(), 1, "the old image's finished task");
    let sleep = summaries_named(&out, "sleep");
    assert_eq!(sleep.len(), 1, "the new image's task is traced: {out:#?}");
    assert!(sleep[0]["incomplete"].is_null(), "{}", sleep[0]);
    let blocked = ms(sleep[0], "blocked_ns");
    assert!((19.9..30.0).contains(&blocked), "the new image's sleep is charged to its own task: {}", sleep[0]);
    if open_at_exec {
        let span = fact(&lines, "open-at-exec", "span");
        let open = out.iter().find(|v| v["type"] == "summary" && v["span_id"] == span.as_str()).expect("the open task is reported");
        assert!(!open["incomplete"].is_null(), "a task the exec cut off is incomplete: {open}");
        // The exec ended the program that owned the task: the new image's work is not its
        // own. (Before the exec it slept 1 ms; the new program then ran for 20+ ms, of which
        // the sleep task took 20 ms of blocked time.)
        let charged = ms(open, "on_cpu_ns") + ms(open, "blocked_ns") + ms(open, "runq_ns");
        assert!(charged < 10.0, "the task cut off by exec is not charged for the new program's time ({charged} ms): {open}");
    }
}

#[test]
fn target_execs_another_program() {
    exec_case(false);
}

#[test]
fn target_execs_with_a_task_open() {
    exec_case(true);
}

#[test]
fn target_execs_itself() {
    // exec of the same file: the kernel re-applies the pid's uprobes to the new image (the
    // perf events follow the task), so tracing goes on at once, without a second attach.
    require_root();
    let dir = TempDir::new("exec-self");
    let me = private_copy(&fault_target_bin(), &dir, "fault-target");
    let mut target = start_program(&me, &["task:before", "exec", "--", me.to_str().expect("utf-8 path"), "task:after", "enabled"]);
    let pid = target.pid();
    let tprof = attach(&[pid], &[]);
    target.send_line("go");
    let mut lines = Vec::new();
    assert_eq!(target.expect_line("ready ", &mut lines), format!("ready {pid}"));
    target.send_line("go");
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    assert!(lines.iter().any(|l| l == "enabled true"), "still armed after the exec: {lines:?}");
    for name in ["before", "after"] {
        let s = summary(&out, name);
        assert_eq!(s["span_id"], fact(&lines, &format!("task {name}"), "span").as_str());
        assert!(s["incomplete"].is_null(), "{s}");
    }
    let sess = session(&out);
    assert_eq!(out.iter().filter(|v| v["type"] == "task_begin").count(), 2, "no duplicate attach: {sess}");
    assert_eq!(sess["stop_reason"], "target exited");
}

#[test]
fn binary_deleted_before_attach() {
    require_root();
    let dir = TempDir::new("deleted-before");
    let victim = private_copy(&target_bin(), &dir, "victim");
    let mut target = start_program(&victim, &["sleep:5", "regions"]);
    let sites = probe_sites(target.pid()).len();
    std::fs::remove_file(&victim).expect("delete the running binary");
    let tprof = attach(&[target.pid()], &[]);
    target.send_line("go");
    let mut lines = Vec::new();
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    let sess = session(&out);
    assert_eq!(sess["sites"], sites, "the probes are found through /proc/PID/exe: {sess}");
    for name in ["sleep", "regions"] {
        let s = summary(&out, name);
        assert_eq!(s["span_id"], fact(&lines, &format!("{name} task"), "span").as_str());
        assert!(s["incomplete"].is_null(), "{s}");
    }
    assert_eq!(out.iter().filter(|v| v["type"] == "task_begin").count(), 2, "each task begins once");
}

#[test]
fn binary_deleted_while_attached() {
    // A deploy replacing the binary of a traced service: the file goes while tprof is
    // attached. Its rescans (every 500 ms) must not attach the same probes a second time.
    require_root();
    let dir = TempDir::new("deleted-during");
    let victim = private_copy(&target_bin(), &dir, "victim");
    let mut target = start_program(&victim, &["sleep:5", "regions"]);
    let sites = probe_sites(target.pid()).len() as u64;
    let tprof = attach(&[target.pid()], &[]);
    std::fs::remove_file(&victim).expect("delete the running binary");
    std::thread::sleep(Duration::from_millis(1300));
    target.send_line("go");
    let mut lines = Vec::new();
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let mut tprof = tprof;
    let status = tprof.wait();
    let err = stderr_text(&tprof);
    let (out, _) = collect(tprof);
    assert!(status.success(), "{status}");
    let sess = session(&out);
    let begins: Vec<&Value> = out.iter().filter(|v| v["type"] == "task_begin").collect();
    assert_eq!(
        (sess["sites"].as_u64(), begins.len()),
        (Some(sites), 2),
        "the deleted executable's probes are attached once, not again through /proc/PID/exe; stderr: {err}\nsession: {sess}"
    );
    assert_eq!(out.iter().filter(|v| v["type"] == "summary").count(), 2, "{out:#?}");
}

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

/// Builds `tests/c/<name>.c` (with tprof.h) into `dir`.
fn build_c(dir: &TempDir, name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = dir.join(name);
    let st = Command::new("gcc")
        .args(["-O2", "-g", "-Wall", "-Werror", "-I"])
        .arg(root.join("usdt-probes/include"))
        .arg(root.join(format!("tests/c/{name}.c")))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("gcc runs (cargo xtask setup installs it)");
    assert!(st.success(), "gcc {name}.c failed");
    out
}

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
    let mut tprof = Proc { child, stdin: None, stdout, stderr: Some(stderr) };
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
    let mut tprof = Proc { child, stdin: None, stdout, stderr: Some(stderr) };
    let head = Command::new("head").args(["-n", "1"]).stdin(pipe).stdout(Stdio::piped()).spawn().expect("spawn head");
    let (_tx2, head_out) = mpsc::channel();
    let mut head = Proc { child: head, stdin: None, stdout: head_out, stderr: None };
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
    let mut t = Proc { child, stdin: None, stdout, stderr: Some(stderr) };
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

// ---- overload ------------------------------------------------------------------------------

#[test]
fn ctrl_c_is_prompt_under_overload() {
    // 20M region pairs back to back into a 1 MiB ring: tprof is saturated (the ring
    // overflows continuously; traced, the flood lasts about a minute). Ctrl-C must still stop
    // it promptly - a liveness bound, not a performance figure - with the losses counted.
    require_root();
    let dir = TempDir::new("overload");
    let mut target = start_private_target(&dir, &["flood:20000000", "enabled"]);
    let pid = target.pid();
    let mut tprof = attach(&[pid], &["--ring-size", "1"]);
    target.send_line("go");
    target_says(&target, "flood task span");
    std::thread::sleep(Duration::from_secs(1));
    assert!(tprof.child.try_wait().expect("try_wait").is_none(), "tprof is still running under the flood");
    let t0 = Instant::now();
    tprof.signal(libc::SIGINT);
    // Consume the event stream while waiting (only the session line is kept).
    let mut last_session = None;
    let mut keep = |l: String| {
        if l.contains("\"type\":\"session\"") {
            last_session = Some(l);
        }
    };
    let status = loop {
        while let Ok(l) = tprof.stdout.try_recv() {
            keep(l);
        }
        if let Some(st) = tprof.child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = t0.elapsed();
    eprintln!("tprof stopped {took:?} after SIGINT under overload");
    let status = status.unwrap_or_else(|| panic!("tprof still running 30 s after SIGINT under overload"));
    // Liveness: the loop above fails if tprof is still running 30 s after SIGINT (a hang);
    // the time itself is reported, not asserted.
    eprintln!("Ctrl-C under overload took {took:?}");
    while let Ok(l) = tprof.stdout.recv_timeout(Duration::from_secs(5)) {
        keep(l);
    }
    assert!(status.success(), "{status}");
    let sess: Value = serde_json::from_str(&last_session.expect("a session line")).expect("session JSON");
    assert_eq!(sess["stop_reason"], "interrupted (SIGINT)", "{sess}");
    eprintln!("overload: {} records lost in the kernel, all counted", sess["kernel_drops_total"]);
    assert!(sess["kernel_drops_total"].as_u64().is_some_and(|n| n > 0), "the overflow is counted: {sess}");
    assert_eq!(target_says(&target, "enabled"), "enabled false");
    target_says(&target, "done");
    assert!(target.wait().success(), "the target is unharmed");
}

#[test]
fn many_probe_sites_attach_and_stop_promptly() {
    // A service with many probe sites (128 here; tprof takes up to 4096): attaching and
    // Ctrl-C must both stay prompt. Liveness bounds, not performance figures.
    require_root();
    let dir = TempDir::new("many");
    let exe = build_c(&dir, "many_sites");
    let mut target = start_program(&exe, &[]);
    let pid = target.pid();
    let sites = probe_sites(pid);
    assert_eq!(sites.len(), 130, "128 region sites, task_begin and task_end");
    let t0 = Instant::now();
    let mut tprof = attach(&[pid], &[]);
    let attach_took = t0.elapsed();
    target.send_line("go");
    target_says(&target, "done");
    assert!(site_bytes(pid, &sites).iter().all(|&b| b == 0xcc), "every site attached");
    let t0 = Instant::now();
    tprof.signal(libc::SIGINT);
    let status = wait_within(&mut tprof, Duration::from_secs(60));
    let stop_took = t0.elapsed();
    eprintln!("{} sites: attach {attach_took:?}, stop after SIGINT {stop_took:?}", sites.len());
    let status = status.unwrap_or_else(|| panic!("tprof still running 60 s after SIGINT with {} sites", sites.len()));
    // Liveness only (the 60 s hang guard above): how long attach and detach take per site is
    // a cost, measured and reported, not asserted. Detach is ~0.1 s per perf-event uprobe on
    // this kernel (each unregistration waits for an RCU grace period under a global mutex);
    // BPF uprobe_multi links would make it one wait per binary (not yet: aya 0.14 cannot load
    // uprobe.multi programs).
    let _ = (attach_took, stop_took);
    let (out, _) = collect(tprof);
    assert!(status.success(), "{status}");
    let s = summary(&out, "many");
    assert_eq!(s["regions"].as_array().map(Vec::len), Some(128), "every site fired into the task: {s}");
    assert_sites_restored(pid, &sites);
    target.send_line("exit");
    assert!(target.wait().success());
}

// ---- privileges and host support -----------------------------------------------------------

/// Runs tprof with `args` as user nobody holding only `caps` (e.g. `+bpf,+perfmon`; empty:
/// none).
fn tprof_as_nobody(caps: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if caps.is_empty() {
        cmd.arg("--inh-caps=-all");
    } else {
        cmd.arg(format!("--inh-caps=-all,{caps}")).arg(format!("--ambient-caps=-all,{caps}"));
    }
    let out = cmd.arg(tprof_bin()).args(args).output().expect("setpriv (util-linux) runs");
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn missing_capability_is_named() {
    require_root();
    for (caps, missing, held) in [("+bpf", "CAP_PERFMON", "CAP_BPF"), ("+perfmon", "CAP_BPF", "CAP_PERFMON")] {
        let (status, _, err) = tprof_as_nobody(caps, &["attach", "--pid", "1"]);
        assert!(!status.success(), "{err}");
        assert!(err.contains(&format!("needs {missing} (or CAP_SYS_ADMIN)")), "names the one missing capability: {err}");
        assert!(!err.contains(&format!("{held} and")) && !err.contains(&format!("and {held}")), "not the one it has: {err}");
    }
    // CAP_BPF and CAP_PERFMON are enough: the next check (the pid) is what fails here.
    let (status, _, err) = tprof_as_nobody("+bpf,+perfmon", &["attach", "--pid", "999999999"]);
    assert!(!status.success());
    assert!(err.contains("no process with pid 999999999"), "{err}");
}

/// The check lines of `tprof doctor` output, by check name: (status, rest of the line).
fn doctor_lines(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| ["OK ", "WARN", "FAIL"].iter().any(|p| l.starts_with(p)))
        .map(|l| (l[..4].trim().to_string(), l[6..].to_string()))
        .collect()
}

#[test]
fn doctor_reports_what_the_host_supports() {
    require_root();
    let essential = ["kernel", "BTF", "capabilities", "uprobe PMU", "BPF ring buffer", "tp_btf programs", "sleepable uprobe"];
    let informational = ["tracefs", "perf_event_paranoid", "kptr_restrict", "/proc/kallsyms"];
    let out = Command::new(tprof_bin()).arg("doctor").output().expect("tprof doctor runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "this host (root, BTF, 6.18) supports tprof:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    let lines = doctor_lines(&text);
    for name in essential.iter().chain(&informational) {
        let found = lines.iter().find(|(_, rest)| rest.starts_with(name)).unwrap_or_else(|| panic!("no {name} line:\n{text}"));
        if essential.contains(name) {
            assert_eq!(found.0, "OK", "{name}:\n{text}");
        }
    }
    assert!(text.contains("tracefs") && text.contains("does not need"), "tracefs is informational:\n{text}");

    // Without privileges: the missing capabilities are named, the host checks still run,
    // eBPF is not attempted, and the exit status says it will not work.
    let (status, text, err) = tprof_as_nobody("", &["doctor"]);
    assert!(!status.success(), "{text}{err}");
    let lines = doctor_lines(&text);
    let caps = lines.iter().find(|(_, r)| r.starts_with("capabilities")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(caps.0, "FAIL", "{text}");
    assert!(caps.1.contains("CAP_BPF and CAP_PERFMON") && caps.1.contains("sudo"), "{text}");
    assert!(lines.iter().any(|(st, r)| st == "OK" && r.starts_with("BTF")), "host checks run without privileges:\n{text}");
    assert!(lines.iter().any(|(st, r)| st == "FAIL" && r.starts_with("tp_btf programs") && r.contains("not checked")), "{text}");

    // CAP_BPF and CAP_PERFMON without root load the eBPF programs, but perf-event uprobes
    // need CAP_SYS_ADMIN on this kernel: doctor tries one for real and says so.
    let (status, text, err) = tprof_as_nobody("+bpf,+perfmon", &["doctor"]);
    assert!(!status.success(), "uprobes need CAP_SYS_ADMIN here:\n{text}{err}");
    let lines = doctor_lines(&text);
    let uprobe = lines.iter().find(|(_, r)| r.starts_with("uprobe PMU")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(uprobe.0, "FAIL", "{text}");
    assert!(uprobe.1.contains("CAP_SYS_ADMIN"), "names what is missing: {text}");
    assert!(lines.iter().any(|(st, r)| st == "OK" && r.starts_with("tp_btf programs")), "eBPF itself loads:\n{text}");
}
