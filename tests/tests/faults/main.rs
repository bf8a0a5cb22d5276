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
//! Targets run as a non-root user ([`TARGET_USER`], or `nobody` where said) wherever the
//! fault allows; tprof runs as root. (Not: the mount-namespace case of `hostile.rs`, whose
//! target is `unshare`, which needs root, and the gcc-built targets of `hostile.rs` and
//! `overload.rs`, run from the test's own directories.)
//!
//! One test binary (`faults`): this file holds the shared guards and helpers, and each fault
//! kind is a module of this directory (`hostile.rs`, `killed.rs`, ...).

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

/// Who the fault targets run as: uid 1000 (no passwd entry needed).
const TARGET_USER: RunAs = RunAs::UID_1000;

/// Starts a private copy of tprof-target with `requests`, as `nobody`.
fn start_private_target(dir: &TempDir, requests: &[&str]) -> Proc {
    start_program_as(&private_copy(&target_bin(), dir, "tprof-target"), requests, RunAs::NOBODY)
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

mod hostile;
mod killed;
mod lifecycle;
mod output;
mod overload;
mod privileges;
