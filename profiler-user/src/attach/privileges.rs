//! What tprof needs from the kernel before it tries anything: the capabilities (CAP_BPF and
//! CAP_PERFMON, or CAP_SYS_ADMIN) and the target processes. Errors say what is missing and
//! what to do, not which syscall failed. And the files tprof writes under sudo go to the
//! user who ran it.

use anyhow::{bail, Context, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Files tprof writes under sudo belong to the user who ran sudo, not to root.
pub fn give_to_invoking_user(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let id = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u32>().ok());
    let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) else { return };
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return };
    // SAFETY: chown with a NUL-terminated path we own and plain integer ids.
    if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
        log::warn!("cannot give {} to uid {uid}: {}", path.display(), std::io::Error::last_os_error());
    }
}

/// Effective capability bits of this process, from /proc/self/status.
pub fn effective_caps() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    parse_cap_eff(&status).context("no CapEff line in /proc/self/status")
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// The capabilities tprof lacks, by name (empty: none).
pub fn missing_caps(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// Fails with an actionable message unless tprof may load and attach eBPF programs.
pub fn check() -> Result<()> {
    let missing = missing_caps(effective_caps()?);
    if !missing.is_empty() {
        bail!(
            "tprof needs {} (or CAP_SYS_ADMIN) to load eBPF programs and attach uprobes: run it with sudo, \
             or grant them with `sudo setcap cap_sys_admin,cap_bpf,cap_perfmon+ep $(which tprof)` \
             (perf-event uprobes need CAP_SYS_ADMIN on kernels such as 6.18)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// Fails unless `pid` names a live user process (not one of its threads, not a zombie, not
/// a kernel thread); returns its command name.
pub fn check_pid(pid: u32) -> Result<String> {
    if pid == 0 {
        bail!("pid 0 is not a process");
    }
    let comm = match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        // The name is the target's to choose: never print its control characters raw.
        Ok(c) => crate::present::escape(c.trim_end_matches('\n')),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("no process with pid {pid} (is it still running?)"),
        Err(e) => return Err(e).with_context(|| format!("reading /proc/{pid}/comm")),
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).with_context(|| format!("reading /proc/{pid}/maps"))?;
    refuse(pid, &comm, &status, &stat, maps.trim().is_empty())?;
    Ok(comm)
}

/// `PF_KTHREAD` in the flags of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Why `pid` cannot be traced, from its `/proc/PID/status` and `/proc/PID/stat` and
/// whether it maps anything.
fn refuse(pid: u32, comm: &str, status: &str, stat: &str, no_maps: bool) -> Result<()> {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let tgid = field("Tgid:").and_then(|v| v.parse::<u32>().ok());
    if let Some(tgid) = tgid.filter(|t| *t != pid && *t != 0) {
        bail!("pid {pid} is a thread of process {tgid} ({comm}), not a process: pass --pid {tgid}");
    }
    // The fields after the last ')' (comm may contain anything): state, ppid, pgrp,
    // session, tty_nr, tpgid, flags.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let mut fields = after.split_whitespace();
    let state = fields.next().unwrap_or("");
    let flags = fields.nth(5).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    if flags & PF_KTHREAD != 0 {
        bail!("pid {pid} ({comm}) is a kernel thread: it has no user code to probe");
    }
    if state == "Z" || state == "X" {
        let threads = field("Threads:").and_then(|v| v.parse::<u32>().ok()).unwrap_or(1);
        if threads > 1 {
            bail!(
                "the main thread of pid {pid} ({comm}) has exited (pthread_exit) while {} other threads run on: \
                 tprof cannot read the process's mappings through it",
                threads - 1
            );
        }
        bail!("pid {pid} ({comm}) has exited (a zombie its parent has not reaped yet): there is nothing left to trace");
    }
    if no_maps {
        bail!("pid {pid} ({comm}) maps no memory: it has no user code to probe");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_parsing() {
        assert_eq!(parse_cap_eff("Name:\tx\nCapEff:\t000001fffeffffff\n"), Some(0x1fffeffffff));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn missing_caps_names_each() {
        assert_eq!(missing_caps(0), ["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_caps(1 << CAP_BPF), ["CAP_PERFMON"]);
        assert!(missing_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_caps(1 << CAP_SYS_ADMIN).is_empty());
    }

    #[test]
    fn no_such_pid_is_clear() {
        let err = check_pid(u32::MAX / 2).expect_err("no such pid");
        assert!(err.to_string().contains("no process with pid"), "{err}");
    }

    #[test]
    fn a_thread_id_names_its_process() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments and cannot fail.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            tx.send(tid).expect("send tid");
            let _ = done_rx.recv();
        });
        let tid = rx.recv().expect("tid");
        let err = check_pid(tid).expect_err("a thread is not a process");
        let me = std::process::id();
        assert!(err.to_string().contains(&format!("thread of process {me}")) && err.to_string().contains(&format!("--pid {me}")), "{err}");
        drop(done_tx);
        t.join().expect("thread");
        assert!(check_pid(me).is_ok(), "the process itself is fine");
    }

    #[test]
    fn zombies_and_exited_main_threads_are_not_kernel_threads() {
        let stat = |state: &str, flags: u64| format!("42 (a) b) {state} 1 42 42 0 -1 {flags} 0 0");
        let status = |threads: u32| format!("Name:\tx\nTgid:\t42\nPid:\t42\nThreads:\t{threads}\n");
        let why = |status: &str, stat: &str, no_maps| refuse(42, "x", status, stat, no_maps).expect_err("refused").to_string();
        let zombie = why(&status(1), &stat("Z", 0x400100), true);
        assert!(zombie.contains("zombie") && !zombie.contains("kernel thread"), "{zombie}");
        let leader = why(&status(5), &stat("Z", 0x400100), true);
        assert!(leader.contains("pthread_exit") && leader.contains("4 other threads"), "{leader}");
        assert!(why(&status(1), &stat("S", 0x208040), true).contains("kernel thread"));
        assert!(refuse(42, "x", &status(3), &stat("S", 0x400100), false).is_ok());
    }

    #[test]
    fn a_real_zombie_is_called_one() {
        // SAFETY: the child only calls _exit (async-signal-safe) after fork.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(0) };
        }
        // Wait until it is a zombie, without reaping it.
        // SAFETY: siginfo_t is plain data, valid all zeros.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with WNOWAIT leaves it unreaped; info is ours.
        let rc = unsafe { libc::waitid(libc::P_PID, child as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        assert_eq!(rc, 0, "waitid");
        let err = check_pid(child as u32).expect_err("a zombie has nothing to trace");
        // SAFETY: reaps the child we forked.
        unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
        assert!(err.to_string().contains("zombie"), "{err}");
    }

    #[test]
    fn kernel_thread_is_refused() {
        // kthreadd is pid 2 on Linux.
        let err = check_pid(2).expect_err("kthreadd has no user code");
        assert!(err.to_string().contains("kernel thread"), "{err}");
    }
}
