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

/// Fails unless `pid` names a live user process; returns its command name.
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
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).with_context(|| format!("reading /proc/{pid}/maps"))?;
    if maps.trim().is_empty() {
        bail!("pid {pid} ({comm}) is a kernel thread: it has no user code to probe");
    }
    Ok(comm)
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
    fn kernel_thread_is_refused() {
        // kthreadd is pid 2 on Linux.
        let err = check_pid(2).expect_err("kthreadd has no user code");
        assert!(err.to_string().contains("kernel thread"), "{err}");
    }
}
