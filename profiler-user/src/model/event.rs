//! Decoded ring-buffer records: what the decoder makes of the kernel's bytes, in the terms
//! the rest of tprof uses (a task key, a waker, stack ids). Data only; [`crate::decode`]
//! fills it in.

use profiler_common::{Agg, AggSyscall, TaskId, AGG_OTHER_NR};

/// A task or region name: shared, since a service has few distinct ones (no allocation per
/// record for a name seen before).
pub type Name = std::sync::Arc<str>;

/// A task's identity as userspace sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    pub trace_id: u128,
    pub span_id: u64,
}

impl TaskKey {
    pub fn from_raw(t: &TaskId) -> Self {
        TaskKey { trace_id: (u128::from(t.trace_hi) << 64) | u128::from(t.trace_lo), span_id: t.span_id }
    }
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
    pub fn span_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

/// Fields every record has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub cpu: u32,
    /// CLOCK_MONOTONIC ns; the end of the interval for interval records.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub task: TaskKey,
}

/// Where a thread blocked: ids in the kernel's STACKS map (None: not taken, or lost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackIds {
    pub kernel: Option<u32>,
    pub user: Option<u32>,
    /// The user stack follows in a USTACK record (taken when the syscall returned).
    pub user_pending: bool,
}

/// The syscall number userspace files the "other syscalls" sums of an AGG record under.
pub const OTHER_SYSCALLS: u32 = u32::MAX;

/// The syscalls an AGG record has sums for, by syscall number: the sums of the syscalls
/// beyond the record's slots come under [`OTHER_SYSCALLS`].
pub fn agg_syscalls(a: &Agg) -> impl Iterator<Item = (u32, &AggSyscall)> {
    a.sys.iter().filter_map(|s| match s.nr {
        AGG_OTHER_NR => Some((OTHER_SYSCALLS, s)),
        nr => u32::try_from(nr).ok().map(|nr| (nr, s)),
    })
}

/// Intervals an AGG record summed (on-CPU slices, off-CPU intervals, syscalls).
pub fn agg_intervals(a: &Agg) -> u64 {
    u64::from(a.slices) + u64::from(a.offcpu) + u64::from(a.syscalls)
}

/// Who made a blocked thread runnable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waker {
    /// No wakeup was seen (e.g. it happened before attach).
    Unknown,
    /// It was preempted while runnable: nobody had to wake it.
    Preempted,
    /// Woken from interrupt context or by a kernel thread: no user waker.
    Kernel,
    /// Woken by this user thread, which may itself be working for a task. `via_softirq`:
    /// from a softirq that ran inside that thread's syscall (e.g. a loopback send).
    Thread { pid: u32, tid: u32, comm: String, task: Option<TaskKey>, via_softirq: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// `untracked`: the thread was already `TASK_STACK_DEPTH` tasks deep, so the kernel did
    /// not track this task on it (`strflag::TASK_UNTRACKED`).
    TaskBegin { meta: Meta, parent_span_id: u64, name: Name, name_flags: u32, untracked: bool },
    TaskEnd { meta: Meta, dropped: u64 },
    TaskAttach { meta: Meta, parent_span_id: u64, untracked: bool },
    TaskDetach { meta: Meta },
    RegionBegin { meta: Meta, name: Name, name_flags: u32 },
    RegionEnd { meta: Meta, name: Name, name_flags: u32 },
    Log { meta: Meta, key: String, value: String, flags: u32 },
    /// The thread ran for the task from `start_ns` to `meta.ts_ns`.
    /// `steal_ns` of it the hypervisor ran something else: not the task's.
    OnCpu { meta: Meta, start_ns: u64, steal_ns: u64 },
    /// Off the CPU from `start_ns`; runnable from `runnable_ns` (if known); on again at `meta.ts_ns`.
    OffCpu {
        meta: Meta,
        start_ns: u64,
        runnable_ns: Option<u64>,
        state: u32,
        syscall_nr: Option<u32>,
        waker: Waker,
        /// Ids in the kernel's stack map of the kernel and user stacks at switch-out.
        stacks: StackIds,
        /// The switch-in was not seen: the interval ends at the thread's next sign of life
        /// (a probe or a switch-out), an upper bound.
        end_inferred: bool,
    },
    Syscall { meta: Meta, nr: u32, start_ns: u64, ret: i64 },
    /// Short intervals of this thread for the task since its last AGG record, summed.
    Agg { meta: Meta, sums: Agg },
    /// Kernel stack (return addresses, innermost first) of the long block of `meta.tid` that
    /// started at `start_ns`.
    KStack { meta: Meta, start_ns: u64, frames: Vec<u64> },
    /// User stack id of the long blocks of `meta.tid` whose user stack was pending.
    UStack { meta: Meta, id: Option<u32> },
    /// A traced process forked a followed child, exec'ed or exited
    /// (`profiler_common::proc_event`): for the session's bookkeeping, about no task.
    Proc { meta: Meta, event: u32, pid: u32, parent: u32 },
}

impl Record {
    pub fn meta(&self) -> &Meta {
        match self {
            Record::TaskBegin { meta, .. }
            | Record::TaskEnd { meta, .. }
            | Record::TaskAttach { meta, .. }
            | Record::TaskDetach { meta }
            | Record::RegionBegin { meta, .. }
            | Record::RegionEnd { meta, .. }
            | Record::Log { meta, .. }
            | Record::OnCpu { meta, .. }
            | Record::OffCpu { meta, .. }
            | Record::Syscall { meta, .. }
            | Record::Agg { meta, .. }
            | Record::KStack { meta, .. }
            | Record::UStack { meta, .. }
            | Record::Proc { meta, .. } => meta,
        }
    }

    /// The record's meta, to rewrite (the re-keying of foreign tasks).
    pub fn meta_mut(&mut self) -> &mut Meta {
        match self {
            Record::TaskBegin { meta, .. }
            | Record::TaskEnd { meta, .. }
            | Record::TaskAttach { meta, .. }
            | Record::TaskDetach { meta }
            | Record::RegionBegin { meta, .. }
            | Record::RegionEnd { meta, .. }
            | Record::Log { meta, .. }
            | Record::OnCpu { meta, .. }
            | Record::OffCpu { meta, .. }
            | Record::Syscall { meta, .. }
            | Record::Agg { meta, .. }
            | Record::KStack { meta, .. }
            | Record::UStack { meta, .. }
            | Record::Proc { meta, .. } => meta,
        }
    }
}
