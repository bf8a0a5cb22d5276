//! The ledger: what tprof knows of each task (request) as it stands, read by every sink and
//! exporter. Data and accessors only: [`crate::correlate`] fills it in, [`crate::sink`] and
//! [`crate::export`] print it.
//!
//! Ledger rules (no double counting): an off-CPU interval is split into *blocked*
//! (switch-out to wakeup) and *run queue* (wakeup, or preemption, to switch-in). Blocked
//! time inside a syscall is also reported under that syscall, as a view, not a second
//! charge. Wall time not covered by on-CPU, run-queue or blocked time is time when no
//! thread worked for the task (an async task waiting in its executor).

use std::collections::BTreeMap;

use super::event::{Name, Record, StackIds, TaskKey, Waker};
use super::stack::Stack;

/// Bounds on what one task may hold, so a hostile or buggy target cannot grow tprof.
pub const MAX_REGIONS: usize = 256;
pub const MAX_LOGS: usize = 64;
pub const MAX_BLOCKS: usize = 3;
/// Tasks tracked at once (by the correlator). A new task beyond this evicts the open tasks
/// idle longest (a service that misses `task_end` on an error path leaks them):
/// `correlate::EVICT_BATCH` at a time, each reported as an incomplete summary and counted,
/// and new tasks are traced on.
pub const MAX_OPEN_TASKS: usize = 100_000;
/// Most memory the events held back by `--min-latency` take across all open tasks (in the
/// sinks). Past it, the held events of the task holding them longest are discarded (counted
/// in `filtered_events`; the task is counted in `held_tasks_evicted`), and its later events
/// are not held: its summary is still reported if it turns out slow.
pub const MAX_HELD_BYTES: usize = 128 << 20;
/// Streamed intervals kept per open task for its critical path (the latest ones).
pub const MAX_TIMELINE: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionSpan {
    pub name: Name,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    pub depth: u32,
}

/// One hop of a wake-up chain: what the waker's own task was blocked on just before it
/// woke the task downstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainLink {
    pub task: TaskKey,
    pub name: Option<String>,
    pub blocked_ns: u64,
    pub syscall_nr: Option<u32>,
    pub waker: Waker,
}

/// One off-CPU interval that blocked the task, kept for the "why slow" line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub tid: u32,
    pub start_ns: u64,
    pub blocked_ns: u64,
    pub syscall_nr: Option<u32>,
    pub waker: Waker,
    pub stack_ids: StackIds,
    /// Kernel return addresses taken when the thread came back on the CPU (KSTACK record).
    pub kernel_addrs: Vec<u64>,
    /// Symbolized stacks, filled in by the session (off the event path) for long blocks.
    pub stack: Option<Stack>,
    /// Name of the waker's task, when tprof saw it begin.
    pub waker_task_name: Option<String>,
    /// What the waker's task was itself blocked on before it woke this one, and so on.
    pub chain: Vec<ChainLink>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyscallStat {
    pub count: u64,
    pub total_ns: u64,
    pub errors: u64,
}

/// A task's ledger, as it stands.
#[derive(Clone, Debug, Default)]
pub struct TaskState {
    pub key: TaskKey,
    pub name: Name,
    pub parent_span_id: u64,
    pub pid: u32,
    /// What is known of the task's process (namespace pid, container), when tprof had
    /// looked at it by the task's end.
    pub process: Option<std::sync::Arc<super::process::ProcessInfo>>,
    /// None: the task began before tprof attached.
    pub begin_ns: Option<u64>,
    pub end_ns: Option<u64>,
    /// Time the task's threads were on a CPU: they ran (steal is apart).
    pub on_cpu_ns: u64,
    /// Time its threads held a CPU that the hypervisor gave another guest (VM steal).
    pub steal_ns: u64,
    pub runq_ns: u64,
    pub blocked_ns: u64,
    /// Blocked time by the syscall the thread was in (view of `blocked_ns`).
    pub blocked_in_syscall: BTreeMap<u32, u64>,
    pub syscalls: BTreeMap<u32, SyscallStat>,
    pub regions: Vec<RegionSpan>,
    pub logs: Vec<(String, String)>,
    /// Longest blocks, longest first.
    pub blocks: Vec<Block>,
    /// Blocked time charged to the tasks whose threads woke this one (at most 8 tasks).
    pub waited_on: Vec<(TaskKey, Option<String>, u64)>,
    /// Records the kernel could not queue for this task.
    pub dropped: u64,
    /// Regions/logs over the caps, not kept.
    pub truncated: u64,
    /// Off-CPU intervals whose switch-in the kernel programs missed (ended at the next
    /// sign of life: upper bounds).
    pub inferred: u64,
    /// On-CPU slices the kernel's own runtime accounting of the thread contradicted (a
    /// switch-out and switch-in lost unseen): the on-CPU time is then too high.
    pub runtime_mismatches: u64,
    /// Short intervals (on-CPU slices, off-CPU intervals, syscalls) the kernel summed
    /// instead of streaming (AGG records): in the totals, not in `blocks` nor the stream.
    pub summed: u64,
    pub threads: Vec<u32>,
    /// On-CPU samples taken while one of its threads worked for it (`--sample-hz`), and
    /// the stacks most of them were taken in, most samples first (`crate::profile`).
    pub cpu_samples: u64,
    pub top_stacks: Vec<(Stack, u64)>,
    /// Closed early to make room (more than `correlate::MAX_OPEN_TASKS` were open), or a
    /// record of it came after it was: its ledger lacks the records on the other side.
    pub evicted: bool,
    /// Began on a thread already [`profiler_common::TASK_STACK_DEPTH`] tasks deep: the
    /// kernel did not track it there, so its on-CPU, run-queue and blocked time on that
    /// thread went to the task it is nested in.
    pub untracked: bool,
    /// The request's critical path (computed at its end; see `model::critical`).
    pub critical_path: Vec<super::critical::Step>,
    /// Its streamed intervals, latest [`MAX_TIMELINE`] (what critical paths are made of).
    pub(crate) timeline: Vec<super::critical::Interval>,
    pub(crate) open_regions: Vec<usize>,
    /// The correlator's record count when a record of the task last came (idle longest
    /// is evicted first).
    pub(crate) last_seen: u64,
}

impl TaskState {
    pub fn wall_ns(&self) -> Option<u64> {
        Some(self.end_ns?.saturating_sub(self.begin_ns?))
    }

    pub fn syscall_ns(&self) -> u64 {
        self.syscalls.values().map(|s| s.total_ns).sum()
    }

    /// Wall time when no thread worked for the task (never negative).
    pub fn unscheduled_ns(&self) -> Option<u64> {
        Some(self.wall_ns()?.saturating_sub(self.on_cpu_ns + self.steal_ns + self.runq_ns + self.blocked_ns))
    }

    /// Why the ledger may be missing events.
    pub fn incomplete(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.begin_ns.is_none() {
            why.push("began before attach".to_string());
        }
        if self.end_ns.is_none() {
            why.push("did not end while traced".to_string());
        }
        if self.dropped > 0 {
            why.push(format!("{} kernel records lost (ring buffer full)", self.dropped));
        }
        if self.runtime_mismatches > 0 {
            why.push(format!(
                "{} on-CPU slices longer than the kernel's runtime accounting of their thread (scheduler events lost)",
                self.runtime_mismatches
            ));
        }
        if self.evicted {
            why.push("evicted (too many open tasks: a task_end missed?)".to_string());
        }
        if self.untracked {
            why.push(format!("nested deeper than {} tasks on a thread: its kernel time there is not tracked", profiler_common::TASK_STACK_DEPTH));
        }
        // (A span-id of 0 is no task at all: the correlator never opens one.)
        if self.key.trace_id == 0 && self.key.span_id != 0 {
            why.push("all-zero trace-id (the probes' ABI forbids it)".to_string());
        }
        if self.inferred > 0 {
            why.push(format!("{} off-CPU intervals end at an inferred time (switch-in not seen)", self.inferred));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

/// What the correlator hands to sinks.
#[derive(Debug)]
pub enum Output<'a> {
    /// A record, with the ledger of the task it belongs to.
    Event(&'a Record, &'a TaskState),
    /// A task ended (or the session ended with it open): its final ledger.
    Summary(&'a TaskState),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorrelatorStats {
    pub records: u64,
    pub tasks_ended: u64,
    /// Open tasks closed early (incomplete) to make room for new ones: more than
    /// `correlate::MAX_OPEN_TASKS` were open.
    pub tasks_evicted: u64,
    /// Tasks with an all-zero trace-id, which the probes' ABI forbids (flagged incomplete).
    pub zero_trace_id_tasks: u64,
    /// AGG records, and the short intervals they summed.
    pub agg_records: u64,
    pub summed_intervals: u64,
}

impl CorrelatorStats {
    /// Kernel events the records stood for: each record one, except that an AGG record
    /// stands for the intervals it summed.
    pub fn events(&self) -> u64 {
        self.records - self.agg_records + self.summed_intervals
    }
}

