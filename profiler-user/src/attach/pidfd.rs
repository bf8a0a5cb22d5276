//! Processes held by pidfd: a pid number may be reused by a new process as soon as the old
//! one is reaped, a pidfd never. tprof opens one at its first look at a process and asks
//! it, not `/proc/PID`, whether the process still runs.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A pidfd of process `pid`; None when there is no such process. Needs no privilege.
pub fn open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok().filter(|p| *p > 0)?;
    // SAFETY: pidfd_open with a pid and no flags; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Whether the process behind a pidfd still runs (it has not exited: a zombie has). A
/// pidfd polls readable once its process has exited, which needs no privilege over it.
pub fn alive(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one pollfd we own, with a zero timeout.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    rc == 0
}

/// The pid a pidfd refers to, from `/proc/self/fdinfo` (-1 once the process was reaped);
/// None if `fd` is not a pidfd.
pub fn pid_of(fd: &OwnedFd) -> Option<i64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines().find_map(|l| l.strip_prefix("Pid:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_process_stays_gone_whatever_its_pid_becomes() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let fd = open(child.id()).unwrap();
        assert!(alive(&fd));
        assert_eq!(pid_of(&fd), Some(i64::from(child.id())));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!alive(&fd), "exited and reaped: its number may be anyone's now");
        assert_eq!(pid_of(&fd), Some(-1));
        assert!(open(0).is_none() && open(u32::MAX).is_none());
        let not_a_pidfd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        assert_eq!(pid_of(&not_a_pidfd), None);
    }
}
