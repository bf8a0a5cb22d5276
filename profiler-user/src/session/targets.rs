//! The processes a live session traces, as they come and go: those it was started on,
//! the children they fork (followed), the processes found in its cgroup or mapping its
//! binary (discovered), and those that exited (gone, and forgotten: a session may run for
//! days). Bookkeeping only; [`super::Live`] does the attaching.

use std::collections::HashMap;

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
    live: HashMap<u32, Origin>,
    /// Processes traced from the start or discovered later.
    pub attached: u64,
    /// Children followed since attach.
    pub followed: u64,
    /// Processes that exited.
    pub gone: u64,
}

impl Targets {
    /// Notes process `pid`; false if it was known already.
    pub fn add(&mut self, pid: u32, origin: Origin) -> bool {
        if self.live.contains_key(&pid) {
            return false;
        }
        self.live.insert(pid, origin);
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
        assert!(t.add(10, Origin::Given));
        assert!(!t.add(10, Origin::Followed), "known already");
        assert!(t.add(11, Origin::Followed));
        assert!(t.add(12, Origin::Discovered));
        assert_eq!((t.attached, t.followed, t.gone), (2, 1, 0));
        assert!(t.remove(11));
        assert!(!t.remove(11), "gone once");
        assert!(!t.remove(99), "never known");
        assert_eq!(t.pids(), [10, 12]);
        assert_eq!((t.attached, t.followed, t.gone), (2, 1, 1));
        assert!(t.remove(10) && t.remove(12) && t.is_empty());
    }
}
