//! The `profile` object of the session report (`OUTPUT.md`): per task type its on-CPU and
//! off-CPU profiles, per process its samples outside any task, and the sampler's losses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One stack of a profile: frames innermost first, the kernel's first (`kernel_frames` of
/// them), each `func (file:line)` or an address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopStack {
    pub frames: Vec<String>,
    pub kernel_frames: usize,
    pub samples: u64,
}

/// A blocking stack and the blocked time spent in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OffCpuStack {
    pub frames: Vec<String>,
    pub kernel_frames: usize,
    pub blocked_ns: u64,
}

/// One task type's profiles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TypeProfileReport {
    /// On-CPU samples of its requests, and the stacks most were taken in.
    pub cpu_samples: u64,
    pub top_stacks: Vec<TopStack>,
    /// Blocked time of its requests, and the part of it that has a blocking stack (the
    /// longest blocks, at least `--stack-threshold` each, up to 3 per request): what the
    /// off-CPU profile covers.
    pub blocked_ns: u64,
    pub off_cpu_stack_ns: u64,
    pub off_cpu_top_stacks: Vec<OffCpuStack>,
}

/// A traced process's on-CPU samples outside any task ("not attributed" CPU).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessProfile {
    pub samples: u64,
    pub top_stacks: Vec<TopStack>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfileReport {
    /// Samples per second per CPU (0: sampling off).
    pub sample_hz: u64,
    /// What the kernel counted (live sessions; kept by recordings): samples of traced
    /// threads, samples lost because the count map was full, samples whose user or kernel
    /// stack could not be stored.
    pub kernel_samples: u64,
    pub samples_lost: u64,
    pub sample_stacks_lost: u64,
    /// Samples attributed: to requests, outside any task, and of tasks tprof never saw (they
    /// began before it attached and sent no record).
    pub samples: u64,
    pub samples_in_tasks: u64,
    pub samples_outside_tasks: u64,
    pub samples_unknown_task: u64,
    /// By task type name.
    pub task_types: BTreeMap<String, TypeProfileReport>,
    /// By pid: samples outside any task.
    pub processes: BTreeMap<u32, ProcessProfile>,
}
