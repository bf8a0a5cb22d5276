//! Groups decoded records by task (trace-id, span-id) and keeps each task's ledger: wall
//! time, on-CPU, run-queue wait, blocked time (and in which syscall, woken by whom),
//! syscalls and regions, by the rules of [`crate::model::ledger`]. Pure logic, unit-tested
//! without a kernel.

/// Hash maps keyed by task: looked up once per record, so a fast (seeded) hasher, not SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use std::sync::Arc;

use crate::model::process::ProcessInfo;
use crate::model::event::{agg_intervals, agg_syscalls, Meta, Name, Record, TaskKey, Waker};
use crate::model::critical::{Interval, StepKind};
use crate::model::ledger::{Block, ChainLink, CorrelatorStats, Output, RegionSpan, TaskState, MAX_BLOCKS, MAX_LOGS, MAX_REGIONS, MAX_TIMELINE};

pub use crate::model::ledger::MAX_OPEN_TASKS;
/// Open tasks evicted at once when the table is full (a hundredth of it, so a leaking
/// service costs one scan of the table per hundredth of new tasks, not one per task).
pub const EVICT_BATCH: usize = MAX_OPEN_TASKS / 100;

/// Intervals of an ended task kept for the critical paths of the tasks it woke (its
/// latest: a wakee's block ends at the wakeup, near the waker's end in a convoy).
pub const REMEMBERED_INTERVALS: usize = 64;

/// Hops followed from a blocked task back through its wakers' tasks.
pub const MAX_CHAIN: usize = 3;
/// Slots of the caches of task names and last blocks kept for chains (a power of two).
pub const MAX_REMEMBERED: usize = 4096;
const _: () = assert!(MAX_REMEMBERED.is_power_of_two());


/// The last blocked interval of a task, for wake-up chains.
#[derive(Clone, Debug)]
struct LastBlock {
    /// When it became runnable (the wakeup) and when it ran again.
    runnable_ns: u64,
    end_ns: u64,
    blocked_ns: u64,
    syscall_nr: Option<u32>,
    waker: Waker,
}

/// A bounded map of recent tasks: a direct-mapped cache of [`MAX_REMEMBERED`] slots, a key
/// replacing whatever older key shares its slot. No allocation, eviction or rehashing per
/// insert (it runs for every task), and small enough to stay in the CPU's L2 cache (a miss
/// per task here was a sixth of tprof's CPU under load): chains look back milliseconds,
/// and the cache holds ~0.2 s of tasks at 20,000 tasks per second.
struct Remembered<V> {
    slots: Vec<Option<(TaskKey, V)>>,
    hasher: foldhash::fast::RandomState,
}

impl<V> Default for Remembered<V> {
    fn default() -> Self {
        Remembered { slots: Vec::new(), hasher: Default::default() }
    }
}

impl<V> Remembered<V> {
    fn slot(&self, k: &TaskKey) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(k) as usize) & (MAX_REMEMBERED - 1)
    }

    fn insert(&mut self, k: TaskKey, v: V) {
        if self.slots.is_empty() {
            self.slots.resize_with(MAX_REMEMBERED, || None);
        }
        let i = self.slot(&k);
        self.slots[i] = Some((k, v));
    }

    fn get(&self, k: &TaskKey) -> Option<&V> {
        match self.slots.get(self.slot(k))? {
            Some((key, v)) if key == k => Some(v),
            _ => None,
        }
    }
}

pub struct Correlator {
    tasks: HashMap<TaskKey, TaskState>,
    names: Remembered<Name>,
    last_blocks: Remembered<LastBlock>,
    /// The latest intervals of tasks that ended recently, for the critical paths of the
    /// tasks they woke.
    timelines: Remembered<(Arc<[Interval]>, Name)>,
    /// What the session learnt of each traced process, given to its tasks.
    processes: HashMap<u32, Arc<ProcessInfo>>,
    /// Tasks evicted recently: a record of one that comes back opens a ledger flagged as
    /// evicted, not one that looks like it began before attach.
    evicted: Remembered<()>,
    /// Open tasks at most, and how many go when it is reached (tests make them small).
    max_open: usize,
    evict_batch: usize,
    pub stats: CorrelatorStats,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::with_limits(MAX_OPEN_TASKS, EVICT_BATCH)
    }
}

/// How the correlator grows a ledger.
impl TaskState {
    fn new(key: TaskKey, meta: &Meta) -> Self {
        TaskState { key, pid: meta.pid, ..Default::default() }
    }

    fn note_thread(&mut self, tid: u32) {
        if !self.threads.contains(&tid) && self.threads.len() < 64 {
            self.threads.push(tid);
        }
    }

    /// Keeps a streamed interval for the critical path (the oldest go first).
    fn add_interval(&mut self, iv: Interval) {
        if iv.end_ns <= iv.start_ns {
            return;
        }
        if self.timeline.len() >= MAX_TIMELINE {
            self.timeline.drain(..MAX_TIMELINE / 4);
        }
        self.timeline.push(iv);
    }

    fn add_block(&mut self, b: Block) {
        let at = self.blocks.iter().position(|x| x.blocked_ns < b.blocked_ns).unwrap_or(self.blocks.len());
        if at < MAX_BLOCKS {
            self.blocks.insert(at, b);
            self.blocks.truncate(MAX_BLOCKS);
        }
    }
}

impl Correlator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A correlator that keeps at most `max_open` tasks open and evicts `batch` (at least
    /// one) of them when a new task finds the table full.
    pub fn with_limits(max_open: usize, batch: usize) -> Self {
        Correlator {
            tasks: HashMap::default(),
            names: Remembered::default(),
            last_blocks: Remembered::default(),
            timelines: Remembered::default(),
            processes: HashMap::default(),
            evicted: Remembered::default(),
            max_open: max_open.max(1),
            evict_batch: batch.clamp(1, max_open.max(1)),
            stats: CorrelatorStats::default(),
        }
    }

    pub fn open_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Folds one record into its task's ledger and passes it (and, at task end, the
    /// summary) to `out`.
    pub fn push(&mut self, rec: &Record, out: &mut dyn FnMut(Output<'_>)) {
        self.stats.records += 1;
        let meta = *rec.meta();
        if let Record::Agg { sums, .. } = rec {
            self.stats.agg_records += 1;
            self.stats.summed_intervals += agg_intervals(sums);
        }
        if meta.task.span_id == 0 {
            return;
        }
        if matches!(rec, Record::KStack { .. } | Record::UStack { .. }) {
            // Stacks of a block already in the ledger: no task is created for them, and they
            // are not events of their own.
            if let Some(st) = self.tasks.get_mut(&meta.task) {
                apply(st, rec);
            }
            return;
        }
        if !self.tasks.contains_key(&meta.task) {
            if self.tasks.len() >= self.max_open {
                self.evict(out);
            }
            let mut st = TaskState::new(meta.task, &meta);
            st.evicted = self.evicted.get(&meta.task).is_some();
            st.process = self.processes.get(&meta.pid).cloned();
            if meta.task.trace_id == 0 {
                self.stats.zero_trace_id_tasks += 1;
            }
            self.tasks.insert(meta.task, st);
        }
        let seq = self.stats.records;
        let Some(st) = self.tasks.get_mut(&meta.task) else { return };
        st.last_seen = seq;
        st.note_thread(meta.tid);
        apply(st, rec);
        if let Record::TaskBegin { name, .. } = rec {
            self.names.insert(meta.task, Name::clone(name));
        }
        if let Record::OffCpu { .. } = rec {
            link_chain(st, &self.names, &mut self.last_blocks, rec);
        }
        out(Output::Event(rec, st));
        if matches!(rec, Record::TaskEnd { .. }) {
            if let Some(mut done) = self.tasks.remove(&meta.task) {
                self.stats.tasks_ended += 1;
                if done.process.is_none() {
                    done.process = self.processes.get(&done.pid).cloned();
                }
                self.trace_critical_path(&mut done);
                out(Output::Summary(&done));
            }
        }
    }

    /// Computes the critical path of a task that ended, then keeps its latest intervals
    /// for the paths of the tasks it woke.
    fn trace_critical_path(&mut self, done: &mut TaskState) {
        let (Some(begin), Some(end)) = (done.begin_ns, done.end_ns) else { return };
        if done.timeline.is_empty() {
            return;
        }
        let (tasks, timelines) = (&self.tasks, &self.timelines);
        let lookup = |k: &TaskKey| -> Option<critical::Timeline<'_>> {
            if let Some(t) = tasks.get(k) {
                return Some(critical::Timeline { intervals: &t.timeline, name: Some(&t.name) });
            }
            timelines.get(k).map(|(ivs, name)| critical::Timeline { intervals: ivs, name: Some(name) })
        };
        done.critical_path = critical::critical_path(done.key, critical::Timeline { intervals: &done.timeline, name: None }, begin, end, &lookup);
        let keep = done.timeline.len().saturating_sub(REMEMBERED_INTERVALS);
        let latest: Arc<[Interval]> = done.timeline.drain(..).skip(keep).collect();
        self.timelines.insert(done.key, (latest, Name::clone(&done.name)));
    }

    /// What is known of process `pid`, for its tasks.
    pub fn set_process(&mut self, info: Arc<ProcessInfo>) {
        self.processes.insert(info.pid, info);
    }

    /// Process `pid` exited: its tasks that are still open keep what they had.
    pub fn forget_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// The table of open tasks is full: the `evict_batch` tasks idle longest (no record for
    /// the longest time) are closed, each handed to `out` as an incomplete summary flagged
    /// `evicted`, longest idle first.
    fn evict(&mut self, out: &mut dyn FnMut(Output<'_>)) {
        let mut idle: Vec<(u64, TaskKey)> = self.tasks.iter().map(|(k, t)| (t.last_seen, *k)).collect();
        let n = self.evict_batch.min(idle.len());
        if n == 0 {
            return;
        }
        if n < idle.len() {
            idle.select_nth_unstable(n - 1);
            idle.truncate(n);
        }
        idle.sort_unstable();
        for (_, key) in idle {
            if let Some(mut t) = self.tasks.remove(&key) {
                t.evicted = true;
                self.evicted.insert(key, ());
                self.stats.tasks_evicted += 1;
                out(Output::Summary(&t));
            }
        }
    }

    /// Ends the session: every task still open gets its (incomplete) summary.
    pub fn finish(&mut self, out: &mut dyn FnMut(Output<'_>)) {
        let mut open: Vec<TaskState> = self.tasks.drain().map(|(_, v)| v).collect();
        open.sort_by_key(|t| t.begin_ns.unwrap_or(0));
        for t in &open {
            out(Output::Summary(t));
        }
    }
}

/// Names the waker's task of the block just added (the last one ending at `rec`'s time),
/// follows the wakers' own last blocks back up to MAX_CHAIN hops, charges the wait to the
/// waker's task, and remembers this block for chains that pass through this task.
fn link_chain(st: &mut TaskState, names: &Remembered<Name>, last: &mut Remembered<LastBlock>, rec: &Record) {
    let Record::OffCpu { meta, start_ns, runnable_ns, syscall_nr, waker, .. } = rec else { return };
    let end = meta.ts_ns;
    // A hostile or corrupt record may start after it ends: never panic, clamp it.
    let start = (*start_ns).min(end);
    let runnable = runnable_ns.unwrap_or(end).clamp(start, end);
    let blocked = runnable - start;
    if blocked == 0 {
        return;
    }
    last.insert(st.key, LastBlock { runnable_ns: runnable, end_ns: end, blocked_ns: blocked, syscall_nr: *syscall_nr, waker: waker.clone() });
    let Waker::Thread { task: Some(wk), .. } = waker else { return };
    let wname = names.get(wk).map(|n| n.to_string());
    if let Some(w) = st.waited_on.iter_mut().find(|w| w.0 == *wk) {
        w.2 += blocked;
    } else if st.waited_on.len() < 8 {
        st.waited_on.push((*wk, wname.clone(), blocked));
    }
    // Chain: each hop's block must have ended (its task ran again) before it woke the next
    // task, and after that next task started waiting: otherwise it is not why it waited.
    let mut chain = Vec::new();
    let (mut cur, mut window) = (*wk, (*start_ns, runnable));
    while chain.len() < MAX_CHAIN {
        let Some(lb) = last.get(&cur) else { break };
        if lb.end_ns > window.1 || lb.end_ns < window.0 || cur == st.key {
            break;
        }
        chain.push(ChainLink { task: cur, name: names.get(&cur).map(|n| n.to_string()), blocked_ns: lb.blocked_ns, syscall_nr: lb.syscall_nr, waker: lb.waker.clone() });
        let Waker::Thread { task: Some(next), .. } = &lb.waker else { break };
        window = (lb.runnable_ns.saturating_sub(lb.blocked_ns), lb.runnable_ns);
        cur = *next;
    }
    if let Some(b) = st.blocks.iter_mut().find(|b| b.start_ns == *start_ns && b.tid == meta.tid) {
        b.waker_task_name = wname;
        b.chain = chain;
    }
}

fn apply(st: &mut TaskState, rec: &Record) {
    match rec {
        Record::TaskBegin { meta, parent_span_id, name, untracked, .. } => {
            st.untracked |= *untracked;
            st.begin_ns = Some(meta.ts_ns);
            st.parent_span_id = *parent_span_id;
            st.name.clone_from(name);
            st.pid = meta.pid;
        }
        Record::TaskEnd { meta, dropped } => {
            st.end_ns = Some(meta.ts_ns);
            st.dropped += dropped;
            for i in st.open_regions.drain(..) {
                if let Some(r) = st.regions.get_mut(i) {
                    r.end_ns.get_or_insert(meta.ts_ns);
                }
            }
        }
        Record::TaskAttach { parent_span_id, untracked, .. } => {
            st.untracked |= *untracked;
            if st.parent_span_id == 0 {
                st.parent_span_id = *parent_span_id;
            }
        }
        Record::TaskDetach { .. } => {}
        Record::RegionBegin { meta, name, .. } => {
            if st.regions.len() >= MAX_REGIONS {
                st.truncated += 1;
                return;
            }
            let depth = st.open_regions.len() as u32;
            st.open_regions.push(st.regions.len());
            st.regions.push(RegionSpan { name: name.clone(), start_ns: meta.ts_ns, end_ns: None, depth });
        }
        Record::RegionEnd { meta, name, .. } => {
            // Close the innermost open region of that name (regions nest per task).
            if let Some(pos) = st.open_regions.iter().rposition(|i| st.regions.get(*i).is_some_and(|r| &r.name == name)) {
                let idx = st.open_regions.remove(pos);
                if let Some(r) = st.regions.get_mut(idx) {
                    r.end_ns = Some(meta.ts_ns);
                }
            }
        }
        Record::Log { key, value, .. } => {
            if st.logs.len() >= MAX_LOGS {
                st.truncated += 1;
            } else {
                st.logs.push((key.clone(), value.clone()));
            }
        }
        Record::OnCpu { meta, start_ns, steal_ns } => {
            st.add_interval(Interval { tid: meta.tid, start_ns: *start_ns, end_ns: meta.ts_ns, kind: StepKind::OnCpu });
            let slice = meta.ts_ns.saturating_sub(*start_ns);
            let steal = (*steal_ns).min(slice);
            st.on_cpu_ns += slice - steal;
            st.steal_ns += steal;
        }
        Record::OffCpu { meta, start_ns, runnable_ns, syscall_nr, waker, stacks, end_inferred, .. } => {
            st.inferred += u64::from(*end_inferred);
            let end = meta.ts_ns;
            let (blocked, runq) = match (waker, runnable_ns) {
                (Waker::Preempted, _) => (0, end.saturating_sub(*start_ns)),
                (_, Some(r)) => {
                    // A corrupt record may start after it ends (fuzzing found it): clamp.
                    let start = (*start_ns).min(end);
                    let r = (*r).clamp(start, end);
                    (r - start, end - r)
                }
                (_, None) => (end.saturating_sub(*start_ns), 0),
            };
            st.blocked_ns += blocked;
            st.runq_ns += runq;
            let wake = end - runq;
            if blocked > 0 {
                st.add_interval(Interval { tid: meta.tid, start_ns: wake - blocked, end_ns: wake, kind: StepKind::Blocked { syscall_nr: *syscall_nr, waker: waker.clone() } });
            }
            st.add_interval(Interval { tid: meta.tid, start_ns: wake, end_ns: end, kind: StepKind::RunQueue });
            if blocked > 0 {
                if let Some(nr) = syscall_nr {
                    *st.blocked_in_syscall.entry(*nr).or_default() += blocked;
                }
                st.add_block(Block {
                    tid: meta.tid,
                    start_ns: *start_ns,
                    blocked_ns: blocked,
                    syscall_nr: *syscall_nr,
                    waker: waker.clone(),
                    stack_ids: *stacks,
                    kernel_addrs: Vec::new(),
                    stack: None,
                    waker_task_name: None,
                    chain: Vec::new(),
                });
            }
        }
        Record::Syscall { meta, nr, start_ns, ret } => {
            let s = st.syscalls.entry(*nr).or_default();
            s.count += 1;
            s.total_ns += meta.ts_ns.saturating_sub(*start_ns);
            if *ret < 0 {
                s.errors += 1;
            }
        }
        Record::Agg { sums, .. } => {
            st.on_cpu_ns += sums.oncpu_ns;
            st.steal_ns += sums.steal_ns;
            st.runq_ns += sums.runq_ns;
            st.blocked_ns += sums.blocked_ns;
            st.summed += agg_intervals(sums);
            st.runtime_mismatches += u64::from(sums.mismatches);
            for (nr, sc) in agg_syscalls(sums) {
                if sc.count > 0 {
                    let s = st.syscalls.entry(nr).or_default();
                    s.count += u64::from(sc.count);
                    s.total_ns += sc.total_ns;
                    s.errors += u64::from(sc.errors);
                }
                if sc.blocked_ns > 0 {
                    *st.blocked_in_syscall.entry(nr).or_default() += sc.blocked_ns;
                }
            }
        }
        Record::KStack { meta, start_ns, frames } => {
            if let Some(b) = st.blocks.iter_mut().find(|b| b.tid == meta.tid && b.start_ns == *start_ns) {
                b.kernel_addrs.clone_from(frames);
            }
        }
        Record::UStack { meta, id } => {
            for b in st.blocks.iter_mut().filter(|b| b.tid == meta.tid && b.stack_ids.user_pending) {
                b.stack_ids.user = *id;
                b.stack_ids.user_pending = false;
            }
        }
        // About a process, not a task (the pipeline takes them before the correlator).
        Record::Proc { .. } => {}
    }
}

pub mod critical;
#[cfg(test)]
mod tests;
