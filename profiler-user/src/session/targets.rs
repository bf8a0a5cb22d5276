//! The processes a live session traces, as they come and go: those it was started on,
//! the children they fork (followed), the processes found in its cgroup or mapping its
//! binary (discovered), and those that exited (gone, and forgotten: a session may run for
//! days). Bookkeeping only; [`super::Live`] does the attaching.
//!
//! Each process is held by a pidfd from the session's first look at it: whether it still
//! runs is asked of the pidfd, so a process that exited is gone even when its pid number
//! already names another process.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use crate::attach::pidfd;

/// How a process came into the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A `--pid`.
    Given,
    /// Forked by a traced process.
    Followed,
    /// Found in the `--cgroup`, or mapping the `--binary`, or a descendant that existed
    /// before attach.
    Discovered,
}

/// The session's processes and its counts of them.
#[derive(Debug, Default)]
pub struct Targets {
    live: HashMap<u32, (Origin, Option<OwnedFd>)>,
    /// Processes traced from the start or discovered later.
    pub attached: u64,
    /// Children followed since attach.
    pub followed: u64,
    /// Processes that exited.
    pub gone: u64,
}

impl Targets {
    /// Notes process `pid`, held by `fd` (None: the process could not be held, it is
    /// taken as gone at the next look); false if it was known already.
    pub fn add(&mut self, pid: u32, origin: Origin, fd: Option<OwnedFd>) -> bool {
        if self.live.contains_key(&pid) {
            return false;
        }
        self.live.insert(pid, (origin, fd));
        match origin {
            Origin::Followed => self.followed += 1,
            Origin::Given | Origin::Discovered => self.attached += 1,
        }
        true
    }

    /// Notes that `pid` exited; false if it was not a live process of the session.
    pub fn remove(&mut self, pid: u32) -> bool {
        let known = self.live.remove(&pid).is_some();
        if known {
            self.gone += 1;
        }
        known
    }

    /// Whether the process noted as `pid` still runs (not: whether some process has that
    /// number now).
    pub fn alive(&self, pid: u32) -> bool {
        self.live.get(&pid).and_then(|(_, fd)| fd.as_ref()).is_some_and(pidfd::alive)
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.live.contains_key(&pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.live.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_counted_once_and_forgotten_when_gone() {
        let mut t = Targets::default();
        assert!(t.add(10, Origin::Given, None));
        assert!(!t.add(10, Origin::Followed, None), "known already");
        assert!(t.add(11, Origin::Followed, None));
        assert!(t.add(12, Origin::Discovered, None));
        assert_eq!((t.attached, t.followed, t.gone), (2, 1, 0));
        assert!(t.remove(11));
        assert!(!t.remove(11), "gone once");
        assert!(!t.remove(99), "never known");
        assert_eq!(t.pids(), [10, 12]);
        assert_eq!((t.attached, t.followed, t.gone), (2, 1, 1));
        assert!(t.remove(10) && t.remove(12) && t.is_empty());
    }

    #[test]
    fn a_process_is_alive_by_its_pidfd_not_its_number() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let me = std::process::id();
        let mut t = Targets::default();
        t.add(child.id(), Origin::Given, pidfd::open(child.id()));
        // Our own pid, noted with the pidfd of the child: as if the child's number had
        // been reused by this (running) process once the child is gone.
        t.add(me, Origin::Followed, pidfd::open(child.id()));
        assert!(t.alive(child.id()) && t.alive(me));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!t.alive(child.id()));
        assert!(!t.alive(me), "pid {me} runs, but not the process noted under it");
        assert!(!t.alive(4_000_000), "never noted");
    }
}
