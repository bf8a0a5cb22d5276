//! A request's critical path: the chain of work and waits, across threads, tasks and
//! processes, that set when it ended. Data only: `correlate::critical` computes it from the
//! streamed intervals of the request and of the tasks whose threads woke it.

use super::event::{TaskKey, Waker};

/// One streamed interval of a task's thread, kept for critical paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub kind: StepKind,
}

/// What a thread did for a task over a step of the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepKind {
    OnCpu,
    RunQueue,
    /// Blocked (in `syscall_nr`, when in one) until `waker` woke it.
    Blocked { syscall_nr: Option<u32>, waker: Waker },
    /// No streamed interval covers it: the task's thread was not working for it
    /// (unscheduled), or its intervals were short and summed in the kernel, or not kept.
    Untraced,
}

impl StepKind {
    pub fn label(&self) -> &'static str {
        match self {
            StepKind::OnCpu => "on_cpu",
            StepKind::RunQueue => "run_queue",
            StepKind::Blocked { .. } => "blocked",
            StepKind::Untraced => "untraced",
        }
    }
}

/// One step of a critical path, in time order. `depth` 0 is the request itself; a step
/// of depth d + 1 happened during the blocked step of depth d just before it, in the task
/// whose thread ended that block (the waker's task), and explains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub depth: u32,
    pub task: TaskKey,
    /// The task's name, for steps in another task than the request.
    pub name: Option<String>,
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub kind: StepKind,
}

impl Step {
    pub fn dur_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}
