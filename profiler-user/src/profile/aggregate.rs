//! Attributes on-CPU samples to requests, task types and processes, and blocked time to
//! blocking stacks.
//!
//! The kernel counts samples per (task, stacks) and userspace drains the counts a poll
//! behind (see `attach::sampler`). A request's summary therefore waits: the pipeline hands
//! it to [`Profiler::defer`] and gets it back from [`Profiler::ready`] once every sample
//! taken before the request ended has been drained (two drains later, see
//! [`Profiler::drained`]); then it carries its samples ([`Profiler::attach`]).

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::report::{OffCpuStack, ProcessProfile, ProfileReport, TopStack, TypeProfileReport};
use crate::model::event::{Name, TaskKey};
use crate::model::ledger::TaskState;
use crate::model::stack::Stack;

/// Stacks a request summary lists.
pub const TOP_STACKS: usize = 5;
/// Stacks listed per task type and per process in the session report.
pub const REPORT_STACKS: usize = 10;
/// Requests whose samples are kept one by one (with their ids, for pprof labels and the
/// differential flame graphs); the samples of later ones count in their task type only.
pub const MAX_REQUESTS: usize = 200_000;
/// Tasks with samples and no summary yet; samples of more are counted as of an unknown task.
pub const MAX_OPEN: usize = 65_536;
/// Distinct stacks kept; samples in more are counted under an empty stack.
pub const MAX_STACKS: usize = 1 << 20;

/// Samples of one task (or of no task, in a process) with one stack, as drained: what a
/// recording keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleEntry {
    /// The task's ids; all zero: outside any task.
    pub trace_id: u128,
    pub span_id: u64,
    pub pid: u32,
    pub count: u64,
    pub stack: Stack,
}

impl SampleEntry {
    pub fn task(&self) -> Option<TaskKey> {
        (self.span_id != 0 || self.trace_id != 0).then_some(TaskKey { trace_id: self.trace_id, span_id: self.span_id })
    }
}

/// Distinct stacks, by index.
#[derive(Default)]
pub struct StackTable {
    pub stacks: Vec<Stack>,
    index: HashMap<Stack, u32>,
}

impl StackTable {
    pub fn intern(&mut self, s: Stack) -> u32 {
        if let Some(i) = self.index.get(&s) {
            return *i;
        }
        if self.stacks.len() >= MAX_STACKS {
            return self.intern_empty();
        }
        let i = self.stacks.len() as u32;
        self.stacks.push(s.clone());
        self.index.insert(s, i);
        i
    }

    fn intern_empty(&mut self) -> u32 {
        let empty = Stack::default();
        if let Some(i) = self.index.get(&empty) {
            return *i;
        }
        let i = self.stacks.len() as u32;
        self.stacks.push(empty.clone());
        self.index.insert(empty, i);
        i
    }

    pub fn get(&self, i: u32) -> &Stack {
        &self.stacks[i as usize]
    }
}

/// A task type's profiles: stack index -> samples (on-CPU) and -> blocked ns (off-CPU).
#[derive(Clone, Debug, Default)]
pub struct TypeProfile {
    pub cpu: HashMap<u32, u64>,
    pub off: HashMap<u32, u64>,
    pub blocked_ns: u64,
}

/// One request's profile, kept for labelled pprof samples and the differential graphs.
#[derive(Clone, Debug)]
pub struct RequestProfile {
    pub key: TaskKey,
    pub name: Name,
    pub wall_ns: Option<u64>,
    pub cpu: Vec<(u32, u64)>,
    pub off: Vec<(u32, u64)>,
}

#[derive(Default)]
pub struct Profiler {
    /// Samples per second per CPU (0: no sampling: summaries are not held back).
    pub sample_hz: u64,
    pub stacks: StackTable,
    open: HashMap<TaskKey, HashMap<u32, u64>>,
    pending: VecDeque<(u64, TaskState)>,
    generation: u64,
    pub types: BTreeMap<Name, TypeProfile>,
    pub processes: BTreeMap<u32, HashMap<u32, u64>>,
    pub requests: Vec<RequestProfile>,
    /// Requests past [`MAX_REQUESTS`] (their samples are in their type's profile only).
    pub requests_unkept: u64,
    pub unknown: HashMap<u32, u64>,
    pub samples: u64,
    pub samples_in_tasks: u64,
    pub samples_outside: u64,
    pub samples_unknown: u64,
}

fn add(map: &mut HashMap<u32, u64>, k: u32, v: u64) {
    *map.entry(k).or_default() += v;
}

/// The `n` largest entries, largest first (ties by stack index, for stable output).
pub fn top(map: &HashMap<u32, u64>, n: usize) -> Vec<(u32, u64)> {
    let mut v: Vec<(u32, u64)> = map.iter().map(|(k, c)| (*k, *c)).collect();
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// A stack as profiles group it: by function (and file), not by instruction. Symbolized
/// frames lose their address and line (samples of one loop land on many addresses and
/// lines; they are one stack of a profile); unsymbolized ones keep their address.
pub fn by_function(mut s: Stack) -> Stack {
    for f in s.kernel.iter_mut().chain(s.user.iter_mut()) {
        if f.func.is_some() {
            f.addr = 0;
            f.line = None;
        }
    }
    s
}

/// A stack's frames as the report lists them (innermost first, kernel frames first).
pub fn frame_names(s: &Stack) -> (Vec<String>, usize) {
    (s.kernel.iter().chain(&s.user).map(|f| f.display()).collect(), s.kernel.len())
}

impl Profiler {
    pub fn new(sample_hz: u64) -> Self {
        Profiler { sample_hz, ..Default::default() }
    }

    /// Whether summaries wait for the samples of their request.
    pub fn holds_summaries(&self) -> bool {
        self.sample_hz > 0
    }

    /// Drained samples: to the task they were taken for (until its summary), or to their
    /// process when outside any task.
    pub fn add_samples(&mut self, entries: Vec<SampleEntry>) {
        for e in entries {
            let task = e.task();
            let (pid, count) = (e.pid, e.count);
            let idx = self.stacks.intern(by_function(e.stack));
            self.samples += count;
            match task {
                None => {
                    self.samples_outside += count;
                    add(self.processes.entry(pid).or_default(), idx, count);
                }
                Some(key) => {
                    if !self.open.contains_key(&key) && self.open.len() >= MAX_OPEN {
                        self.samples_unknown += count;
                        add(&mut self.unknown, idx, count);
                        continue;
                    }
                    add(self.open.entry(key).or_default(), idx, count);
                }
            }
        }
    }

    /// A ring-buffer drain ended: summaries deferred before it may be released by the
    /// sample drain after the next one.
    pub fn drained(&mut self) {
        self.generation += 1;
    }

    /// Holds a finished task's summary until its samples are in.
    pub fn defer(&mut self, t: TaskState) {
        self.pending.push_back((self.generation, t));
    }

    /// The summaries whose samples are all in: those deferred before the drain that
    /// preceded the last one. Every sample of such a task was taken before its end, hence
    /// before that drain, hence before the sampler's flip that followed it, and the map
    /// retired then has been read since.
    pub fn ready(&mut self) -> Vec<TaskState> {
        let mut out = Vec::new();
        while self.pending.front().is_some_and(|(g, _)| g + 2 <= self.generation) {
            if let Some((_, t)) = self.pending.pop_front() {
                out.push(t);
            }
        }
        out
    }

    /// Every summary still held (end of session: the last samples are in).
    pub fn release_all(&mut self) -> Vec<TaskState> {
        self.pending.drain(..).map(|(_, t)| t).collect()
    }

    /// Gives a finished task its samples and top stacks, and adds it (its samples, its
    /// blocks with stacks) to its type's profiles.
    pub fn attach(&mut self, t: &mut TaskState) {
        let cpu = self.open.remove(&t.key).unwrap_or_default();
        let n: u64 = cpu.values().sum();
        self.samples_in_tasks += n;
        t.cpu_samples = n;
        t.top_stacks = top(&cpu, TOP_STACKS).into_iter().map(|(i, c)| (self.stacks.get(i).clone(), c)).collect();
        self.account(t, cpu);
    }

    /// Whether samples wait for task `key`'s summary.
    pub fn has_samples(&self, key: &TaskKey) -> bool {
        self.open.contains_key(key)
    }

    /// Adds a finished task (its samples `cpu`, its blocks with stacks) to its type's
    /// profiles.
    pub fn account(&mut self, t: &TaskState, cpu: HashMap<u32, u64>) {
        let mut off = HashMap::new();
        for b in &t.blocks {
            if let Some(s) = &b.stack {
                let i = self.stacks.intern(by_function(s.clone()));
                add(&mut off, i, b.blocked_ns);
            }
        }
        let ty = self.types.entry(Name::clone(&t.name)).or_default();
        ty.blocked_ns += t.blocked_ns;
        for (i, c) in &cpu {
            add(&mut ty.cpu, *i, *c);
        }
        for (i, ns) in &off {
            add(&mut ty.off, *i, *ns);
        }
        if cpu.is_empty() && off.is_empty() {
            return;
        }
        if self.requests.len() >= MAX_REQUESTS {
            self.requests_unkept += 1;
            return;
        }
        self.requests.push(RequestProfile {
            key: t.key,
            name: Name::clone(&t.name),
            wall_ns: t.wall_ns(),
            cpu: cpu.into_iter().collect(),
            off: off.into_iter().collect(),
        });
    }

    /// End of session: samples of tasks that never got a summary count as of an unknown
    /// task; the report's `profile` is filled in. Kernel counters already in `r` stay.
    pub fn finish(&mut self, r: &mut ProfileReport) {
        for (_, m) in std::mem::take(&mut self.open) {
            for (i, c) in m {
                self.samples_unknown += c;
                add(&mut self.unknown, i, c);
            }
        }
        r.sample_hz = self.sample_hz;
        r.samples = self.samples;
        r.samples_in_tasks = self.samples_in_tasks;
        r.samples_outside_tasks = self.samples_outside;
        r.samples_unknown_task = self.samples_unknown;
        let tops = |m: &HashMap<u32, u64>, st: &StackTable| -> Vec<TopStack> {
            top(m, REPORT_STACKS)
                .into_iter()
                .map(|(i, c)| {
                    let (frames, kernel_frames) = frame_names(st.get(i));
                    TopStack { frames, kernel_frames, samples: c }
                })
                .collect()
        };
        r.task_types = self
            .types
            .iter()
            .map(|(name, ty)| {
                let off_cpu_top_stacks = top(&ty.off, REPORT_STACKS)
                    .into_iter()
                    .map(|(i, ns)| {
                        let (frames, kernel_frames) = frame_names(self.stacks.get(i));
                        OffCpuStack { frames, kernel_frames, blocked_ns: ns }
                    })
                    .collect();
                let rep = TypeProfileReport {
                    cpu_samples: ty.cpu.values().sum(),
                    top_stacks: tops(&ty.cpu, &self.stacks),
                    blocked_ns: ty.blocked_ns,
                    off_cpu_stack_ns: ty.off.values().sum(),
                    off_cpu_top_stacks,
                };
                (name.to_string(), rep)
            })
            .collect();
        r.processes = self
            .processes
            .iter()
            .map(|(pid, m)| (*pid, ProcessProfile { samples: m.values().sum(), top_stacks: tops(m, &self.stacks) }))
            .collect();
    }
}

#[cfg(test)]
mod tests;
