//! Dropping what tprof no longer needs once its programs are loaded.
//!
//! `tprof attach`/`record` start as root because loading eBPF programs, attaching the
//! scheduler tracepoints and creating uprobe perf events need it. tprof splits in two
//! (privilege separation, see [`super::broker`]): a small helper keeps what creating
//! uprobes for the rest of the session needs, and tprof itself, which parses ring records,
//! symbolizes stacks and talks to collectors, keeps nothing. What each operation needs,
//! measured on Linux 6.18 by `tests/drop_privs.rs`:
//!
//! | operation                                                        | needs                 | who does it after the drop |
//! |------------------------------------------------------------------|-----------------------|----------------------------|
//! | `perf_event_open` on the `uprobe` PMU (new probe sites: libraries dlopen'ed later, a new image after exec) | **`CAP_SYS_ADMIN`**: `CAP_PERFMON` is *not* enough (EACCES), with or without `exclude_kernel` | the helper |
//! | reading `/proc/PID/maps`, opening `/proc/PID/map_files/*`, `perf_event_open` for a pid, `process_vm_readv` (late string reads), of a target that is root, of another uid or non-dumpable | `CAP_SYS_PTRACE`: once the caller's permitted set is smaller than the target's, the kernel refuses even uid 0 (`cap_ptrace_access_check`) | the helper |
//! | opening `/proc/PID/map_files/*` at all                           | `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN` | the helper (its `CAP_SYS_ADMIN`) |
//! | reading a mapped file whose own mode refuses the caller          | `CAP_DAC_READ_SEARCH` | the helper |
//! | `BPF_LINK_CREATE` of a loaded program on an existing perf event; map lookups and updates (drop counters, stack map, USDT specs); `BPF_OBJ_GET_INFO_BY_FD`; reading the mmap'ed ring buffer | **nothing**, even with `unprivileged_bpf_disabled` = 2 (only creating maps and programs checks `CAP_BPF`) | tprof |
//! | kernel addresses in `/proc/kallsyms`                             | `CAP_SYSLOG` (unless `kptr_restrict` is 0 *and* `perf_event_paranoid` <= 1) | nobody: tprof copies it before the drop |
//! | symbolizing user stacks                                          | nothing: the files the helper opened are passed to tprof and reopened through `/proc/self/fd/N` (a file whose own mode refuses tprof's new uid stays unsymbolized) | tprof |
//!
//! So tprof itself drops *everything* ([`Needs::nothing`]): effective, permitted,
//! inheritable, ambient and bounding sets, sets `PR_SET_NO_NEW_PRIVS`, and leaves uid 0
//! ([`DropOptions::for_tprof`]: for the user who ran sudo, else `nobody`), so that it cannot
//! write root's files as their owner either. The helper keeps exactly [`Needs::broker`]:
//! `CAP_SYS_ADMIN` (until it holds the uprobe_multi programs), `CAP_SYS_PTRACE`, `CAP_DAC_READ_SEARCH`, `CAP_CHECKPOINT_RESTORE`, nothing in its bounding set
//! beyond them, `no_new_privs`. `CAP_SYS_ADMIN` or `CAP_SYS_PTRACE` alone is enough to become
//! full root again (bind-mount over `/etc/shadow`; `ptrace` pid 1), which is why they live in
//! a process that does nothing but validated requests, and not in tprof.
//!
//! ## Threads
//!
//! Credentials are per thread in Linux. `capset` and the `prctl`s here act on the calling
//! thread only (threads created later inherit them); the uid switch goes through glibc,
//! which applies it to every thread, and a thread that changes uid away from 0 without
//! `PR_SET_KEEPCAPS` loses all its capabilities: so with [`DropOptions::user`] set, threads
//! spawned before the drop (the HTTP exporters') end up with none. Without it (tprof not
//! started as root, e.g. with file capabilities) they keep theirs: [`Dropped::other_threads`]
//! counts them. (Such a leftover privileged thread also makes glibc abort the process if
//! anything later calls `setuid()`-family functions: the call succeeds in that thread and
//! fails in the others.)

use std::fmt;

use anyhow::{bail, Context, Result};

/// Capability numbers (`include/uapi/linux/capability.h`), with their names.
pub const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub const CAP_CHOWN: u32 = 0;
pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYSLOG: u32 = 34;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;
pub const CAP_CHECKPOINT_RESTORE: u32 = 40;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const PR_SET_KEEPCAPS: libc::c_int = 8;
const PR_CAPBSET_DROP: libc::c_int = 24;
const PR_SET_NO_NEW_PRIVS: libc::c_int = 38;
const PR_CAP_AMBIENT: libc::c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: libc::c_ulong = 4;

/// The capability's name, or `cap_N` for one newer than this table.
pub fn cap_name(cap: u32) -> String {
    CAP_NAMES.get(cap as usize).map_or_else(|| format!("cap_{cap}"), |n| n.to_string())
}

/// Names of the capabilities in a 64-bit mask, lowest first.
pub fn cap_names(mask: u64) -> Vec<String> {
    (0..64).filter(|c| mask & (1u64 << c) != 0).map(cap_name).collect()
}

/// What a process still does after the drop, which decides what it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// Creates uprobe perf events: `CAP_SYS_ADMIN` (which also opens map_files).
    pub uprobes: bool,
    /// Reaches any target (maps, map_files, `perf_event_open` for its pid,
    /// `process_vm_readv`), root and other uids included: `CAP_SYS_PTRACE`.
    pub any_target: bool,
    /// Reads target files whatever their mode: `CAP_DAC_READ_SEARCH`.
    pub target_files: bool,
    /// Opens `/proc/PID/map_files` without `CAP_SYS_ADMIN`: `CAP_CHECKPOINT_RESTORE`.
    pub map_files: bool,
    /// Creates BPF maps and programs: `CAP_BPF` and `CAP_PERFMON`. (Using loaded ones
    /// needs nothing.)
    pub bpf_load: bool,
    /// Reads kernel addresses in `/proc/kallsyms`: `CAP_SYSLOG`.
    pub kallsyms: bool,
}

impl Needs {
    /// tprof's privileged helper: uprobes for any target, from its files. `map_files` too:
    /// it keeps opening them once it gives `CAP_SYS_ADMIN` up (see [`give_up`]).
    pub fn broker() -> Needs {
        Needs { uprobes: true, any_target: true, target_files: true, map_files: true, ..Needs::nothing() }
    }

    /// Nothing at all: drop every capability (tprof itself, once the helper runs).
    pub fn nothing() -> Needs {
        Needs { uprobes: false, any_target: false, target_files: false, map_files: false, bpf_load: false, kallsyms: false }
    }

    /// The capabilities these needs take, as a mask.
    pub fn mask(&self) -> u64 {
        let mut m = 0u64;
        let mut add = |on: bool, caps: &[u32]| {
            if on {
                caps.iter().for_each(|c| m |= 1u64 << c);
            }
        };
        add(self.uprobes, &[CAP_SYS_ADMIN]);
        add(self.any_target, &[CAP_SYS_PTRACE]);
        add(self.target_files, &[CAP_DAC_READ_SEARCH]);
        add(self.map_files, &[CAP_CHECKPOINT_RESTORE]);
        add(self.bpf_load, &[CAP_BPF, CAP_PERFMON]);
        add(self.kallsyms, &[CAP_SYSLOG]);
        m
    }
}

/// How to drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropOptions {
    pub needs: Needs,
    /// Leave uid/gid 0 for this `(uid, gid)` (supplementary groups are cleared), keeping
    /// only the needed capabilities. `None`: keep the uid.
    pub user: Option<(u32, u32)>,
}

/// The `nobody` user and group.
pub const NOBODY: (u32, u32) = (65534, 65534);

impl DropOptions {
    /// tprof once its helper runs: nothing kept; if it runs as uid 0, it becomes the user who
    /// ran sudo (`SUDO_UID`/`SUDO_GID`), or `nobody`.
    pub fn for_tprof() -> DropOptions {
        let user = (current_uid() == 0).then(|| invoking_user().unwrap_or(NOBODY));
        DropOptions { needs: Needs::nothing(), user }
    }
}

/// `(SUDO_UID, SUDO_GID)` when both are set, numeric, and not root.
pub fn invoking_user() -> Option<(u32, u32)> {
    let id = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u32>().ok());
    match (id("SUDO_UID"), id("SUDO_GID")) {
        (Some(u), Some(g)) if u != 0 => Some((u, g)),
        _ => None,
    }
}

/// What [`drop_after_attach`] did, for a debug log line (its `Display`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// Capabilities kept in the effective and permitted sets.
    pub kept: u64,
    /// Capabilities that were permitted before and are gone now.
    pub dropped: u64,
    /// Capabilities needed but not held to begin with (e.g. a binary given only
    /// `cap_bpf,cap_perfmon+ep`): what needs them will fail as it would have anyway.
    pub missing: u64,
    /// The bounding set was cleared of everything not kept (needs `CAP_SETPCAP`, which a
    /// binary with file capabilities usually lacks).
    pub bounding_cleared: bool,
    /// The `(uid, gid)` the process switched to, if it did.
    pub user: Option<(u32, u32)>,
    /// Other threads of the process when the drop ran: they keep their own credentials
    /// (all capabilities lost if `user` is set; otherwise unchanged).
    pub other_threads: usize,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |m: u64| {
            let n = cap_names(m);
            if n.is_empty() {
                "none".to_string()
            } else {
                n.join(",")
            }
        };
        write!(f, "privileges: kept {}; dropped {}", list(self.kept), list(self.dropped))?;
        if self.missing != 0 {
            write!(f, "; not held: {}", list(self.missing))?;
        }
        if !self.bounding_cleared {
            write!(f, "; bounding set unchanged (no CAP_SETPCAP)")?;
        }
        match self.user {
            Some((u, g)) => write!(f, "; now uid {u} gid {g}")?,
            None => write!(f, "; still uid {}", current_uid())?,
        }
        if self.other_threads > 0 {
            let what = if self.user.is_some() { "left with no capabilities" } else { "NOT covered" };
            write!(f, "; {} other thread(s) {what}", self.other_threads)?;
        }
        write!(f, "; no_new_privs set")
    }
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`; version 3 takes two: capabilities 0-31, then 32-63.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's (effective, permitted, inheritable) sets.
pub fn capget() -> Result<(u64, u64, u64)> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid, writable repr(C) structs of the layout the kernel
    // expects for _LINUX_CAPABILITY_VERSION_3 (one header, two data structs), alive for the
    // call; pid 0 means the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("capget");
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<()> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let split = |m: u64| (m as u32, (m >> 32) as u32);
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let data = [
        CapData { effective: e.0, permitted: p.0, inheritable: i.0 },
        CapData { effective: e.1, permitted: p.1, inheritable: i.1 },
    ];
    // SAFETY: as in capget: a version-3 header and two data structs, alive for the call;
    // the kernel only reads `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("capset");
    }
    Ok(())
}

fn prctl(option: libc::c_int, arg: libc::c_ulong, what: &str) -> Result<()> {
    // SAFETY: prctl with integer arguments only (no pointers); unused arguments are 0 as
    // the kernel requires for these options.
    let rc = unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| what.to_string());
    }
    Ok(())
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no arguments and cannot fail.
    unsafe { libc::getuid() }
}

/// Highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40).min(63)
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1)
}

/// Switches every thread's uids and gids to `(uid, gid)` and clears the supplementary
/// groups, keeping this thread's permitted capabilities (its effective set is emptied by
/// the kernel; the caller raises it again with capset).
fn switch_user(uid: u32, gid: u32) -> Result<()> {
    prctl(PR_SET_KEEPCAPS, 1, "prctl(PR_SET_KEEPCAPS)")?;
    // SAFETY: setgroups with a count of 0 does not read the (null) list. glibc applies it,
    // and the two calls below, to every thread of the process.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setgroups([])");
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setresgid({gid})"));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setresuid({uid})"));
    }
    prctl(PR_SET_KEEPCAPS, 0, "prctl(PR_SET_KEEPCAPS, 0)")
}

/// Drops every capability the session no longer needs ([`DropOptions::for_session`]),
/// clears the bounding and ambient sets of the rest, optionally leaves uid 0, and sets
/// `PR_SET_NO_NEW_PRIVS`. Call it once, from the thread that runs the session, after the
/// initial attach and after every output file is open. Irreversible.
/// Removes `caps` (a mask) from this thread's effective and permitted sets, for good (the
/// bounding set needs `CAP_SETPCAP`, long gone: with `no_new_privs` no exec regains them).
pub fn give_up(caps: u64) -> Result<()> {
    let (eff, prm, inh) = capget()?;
    capset(eff & !caps, prm & !caps, inh & !caps)
}

pub fn drop_after_attach(opts: &DropOptions) -> Result<Dropped> {
    let (_, permitted, _) = capget()?;
    let wanted = opts.needs.mask();
    let keep = wanted & permitted;
    let other_threads = thread_count().saturating_sub(1);

    // 1. Bounding set, while CAP_SETPCAP is still effective.
    let mut bounding_cleared = true;
    for cap in 0..=last_cap() {
        if keep & (1u64 << cap) != 0 {
            continue;
        }
        if let Err(e) = prctl(PR_CAPBSET_DROP, libc::c_ulong::from(cap), "prctl(PR_CAPBSET_DROP)") {
            let eperm = e.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) == Some(libc::EPERM);
            if eperm {
                // No CAP_SETPCAP: the bounding set stays; NO_NEW_PRIVS below still stops
                // execve from gaining anything.
                bounding_cleared = false;
                break;
            }
            return Err(e.context(format!("dropping {} from the bounding set", cap_name(cap))));
        }
    }

    // 2. Leave uid 0 (needs CAP_SETUID/CAP_SETGID, so before they are dropped).
    if let Some((uid, gid)) = opts.user {
        if current_uid() != uid {
            switch_user(uid, gid).with_context(|| format!("switching to uid {uid} gid {gid}"))?;
        }
    }

    // 3. Effective and permitted: exactly `keep`; nothing inheritable, nothing ambient.
    capset(keep, keep, 0)?;
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")?;

    // 4. No execve may gain privileges again (setuid binaries, file capabilities).
    prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")?;

    let (effective, now_permitted, _) = capget()?;
    if effective != keep || now_permitted != keep {
        bail!(
            "capabilities after the drop are effective {:#x} / permitted {:#x}, expected {keep:#x}",
            effective,
            now_permitted
        );
    }
    Ok(Dropped {
        kept: keep,
        dropped: permitted & !keep,
        missing: wanted & !permitted,
        bounding_cleared,
        user: opts.user,
        other_threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_masks() {
        assert_eq!(cap_name(CAP_SYS_PTRACE), "CAP_SYS_PTRACE");
        assert_eq!(cap_name(CAP_CHECKPOINT_RESTORE), "CAP_CHECKPOINT_RESTORE");
        assert_eq!(cap_name(41), "cap_41");
        assert_eq!(cap_names((1 << CAP_BPF) | (1 << CAP_CHOWN)), ["CAP_CHOWN", "CAP_BPF"]);
        assert_eq!(cap_names(Needs::broker().mask()), ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE"]);
        assert_eq!(Needs::nothing().mask(), 0);
        let all = Needs { uprobes: true, any_target: true, target_files: true, map_files: true, bpf_load: true, kallsyms: true };
        assert_eq!(
            cap_names(all.mask()),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN", "CAP_SYSLOG", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]
        );
        for c in [CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_SETUID, CAP_SETGID, CAP_SETPCAP] {
            assert_eq!(all.mask() & (1u64 << c), 0, "{} is never kept", cap_name(c));
        }
        assert_eq!(DropOptions::for_tprof().needs, Needs::nothing());
    }

    #[test]
    fn report_line() {
        let d = Dropped {
            kept: 1 << CAP_BPF,
            dropped: 1 << CAP_SYS_ADMIN,
            missing: 1 << CAP_SYSLOG,
            bounding_cleared: false,
            user: Some((1000, 1000)),
            other_threads: 2,
        };
        let s = d.to_string();
        for part in ["kept CAP_BPF", "dropped CAP_SYS_ADMIN", "not held: CAP_SYSLOG", "bounding set unchanged", "uid 1000", "2 other thread(s) left with no capabilities"] {
            assert!(s.contains(part), "{s:?} lacks {part:?}");
        }
    }

    #[test]
    fn capget_reads_this_thread() {
        let (eff, perm, _) = capget().unwrap();
        assert_eq!(eff & !perm, 0, "effective is a subset of permitted");
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap();
        assert_eq!(u64::from_str_radix(line.trim(), 16).ok(), Some(eff));
    }
}
