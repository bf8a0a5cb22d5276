//! Where correlated output goes: one trait, several formats, and the filters in front.

pub mod json;
pub mod tee;
pub mod text;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::io;

use crate::model::event::{Record, TaskKey, Waker};
use crate::model::ledger::{Output, TaskState};
use crate::model::report::SessionReport;

/// An output format.
pub trait Sink {
    /// One record of a task, in arrival order.
    fn event(&mut self, rec: &Record, task: &TaskState) -> io::Result<()>;
    /// A task's final ledger.
    fn summary(&mut self, task: &TaskState) -> io::Result<()>;
    /// End of session.
    fn finish(&mut self, report: &SessionReport) -> io::Result<()>;
    /// Makes what was written visible (called once per drained batch).
    fn flush(&mut self) -> io::Result<()>;
}

/// Which tasks the user wants to see.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub min_latency_ns: Option<u64>,
    pub trace_id: Option<u128>,
    pub task_name: Option<String>,
    /// Stream per-event lines (otherwise summaries only).
    pub events: bool,
}

/// Most events held back per task while waiting to learn its latency.
pub const MAX_HELD_EVENTS: usize = 4096;
pub use crate::model::ledger::MAX_HELD_BYTES;

/// The events held back for one task.
#[derive(Default)]
struct Held {
    /// Position in [`Filtered::order`] (tells a live entry of the queue from a stale one).
    seq: u64,
    records: Vec<Record>,
    /// Memory `records` takes, as accounted in [`Filtered::held_bytes`].
    bytes: usize,
    /// Its events were discarded to stay within the budget: hold no more.
    evicted: bool,
}

/// Memory one held record takes beyond its slot in the vector (names are shared).
fn heap_bytes(rec: &Record) -> usize {
    match rec {
        Record::Log { key, value, .. } => key.capacity() + value.capacity(),
        Record::KStack { frames, .. } => frames.capacity() * std::mem::size_of::<u64>(),
        Record::OffCpu { waker: Waker::Thread { comm, .. }, .. } => comm.capacity(),
        _ => 0,
    }
}

/// Applies a [`Filter`] in front of a sink. With `--min-latency`, a task's events are held
/// until it ends and released only if it was slow enough (bounded per task, and in memory
/// across tasks: [`MAX_HELD_BYTES`]).
pub struct Filtered<S> {
    pub inner: S,
    filter: Filter,
    held: HashMap<TaskKey, Held, foldhash::fast::RandomState>,
    /// Tasks in the order they started holding events, oldest first (entries of tasks that
    /// ended since are skipped, and pruned when they outnumber the live ones).
    order: VecDeque<(u64, TaskKey)>,
    next_seq: u64,
    held_bytes: usize,
    budget: usize,
    /// Events not shown: held and then discarded (the task was fast, or over a bound).
    pub discarded: u64,
    /// Tasks whose held events were discarded to stay within the memory budget.
    pub held_tasks_evicted: u64,
}

impl<S: Sink> Filtered<S> {
    pub fn new(inner: S, filter: Filter) -> Self {
        Self::with_budget(inner, filter, MAX_HELD_BYTES)
    }

    /// Like [`Filtered::new`], holding at most `budget` bytes of events across tasks.
    pub fn with_budget(inner: S, filter: Filter, budget: usize) -> Self {
        Filtered {
            inner,
            filter,
            held: HashMap::default(),
            order: VecDeque::new(),
            next_seq: 0,
            held_bytes: 0,
            budget,
            discarded: 0,
            held_tasks_evicted: 0,
        }
    }

    /// Memory the held events take now (as accounted against the budget).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Whether the trace-id and task-name filters select this task (min-latency aside).
    pub fn wanted(&self, task: &TaskState) -> bool {
        if self.filter.trace_id.is_some_and(|t| t != task.key.trace_id) {
            return false;
        }
        if let Some(name) = &self.filter.task_name {
            if &*task.name != name.as_str() {
                return false;
            }
        }
        true
    }

    pub fn output(&mut self, out: Output<'_>) -> io::Result<()> {
        match out {
            Output::Event(rec, task) => {
                if !self.filter.events || !self.wanted(task) {
                    return Ok(());
                }
                if self.filter.min_latency_ns.is_some() {
                    self.hold(rec, task.key);
                    return Ok(());
                }
                self.inner.event(rec, task)
            }
            Output::Summary(task) => {
                let held = if self.held.is_empty() { None } else { self.held.remove(&task.key) };
                let held = match held {
                    Some(h) => {
                        self.held_bytes -= h.bytes;
                        self.prune();
                        h.records
                    }
                    None => Vec::new(),
                };
                let slow = match self.filter.min_latency_ns {
                    Some(min) => task.wall_ns().is_some_and(|w| w >= min),
                    None => true,
                };
                if !slow || !self.wanted(task) {
                    self.discarded += held.len() as u64;
                    return Ok(());
                }
                for rec in &held {
                    self.inner.event(rec, task)?;
                }
                self.inner.summary(task)
            }
        }
    }

    /// Holds one event of `key` until its task ends, within the per-task and total bounds.
    fn hold(&mut self, rec: &Record, key: TaskKey) {
        let h = match self.held.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.order.push_back((seq, key));
                e.insert(Held { seq, ..Held::default() })
            }
        };
        if h.evicted || h.records.len() >= MAX_HELD_EVENTS {
            self.discarded += 1;
            return;
        }
        let slot = std::mem::size_of::<Record>();
        let before = h.records.capacity() * slot;
        h.records.push(rec.clone());
        let grown = h.records.capacity() * slot - before + heap_bytes(rec);
        h.bytes += grown;
        self.held_bytes += grown;
        while self.held_bytes > self.budget {
            if !self.evict_oldest() {
                break;
            }
        }
    }

    /// Discards the held events of the task holding them longest. False: nothing to evict.
    fn evict_oldest(&mut self) -> bool {
        while let Some((seq, key)) = self.order.pop_front() {
            let Some(h) = self.held.get_mut(&key) else { continue };
            if h.seq != seq || h.evicted {
                continue;
            }
            self.discarded += h.records.len() as u64;
            self.held_bytes -= h.bytes;
            *h = Held { seq, evicted: true, ..Held::default() };
            self.held_tasks_evicted += 1;
            return true;
        }
        false
    }

    /// Drops the queue entries of tasks no longer holding events once they outnumber the
    /// live ones (the queue stays within twice the open tasks).
    fn prune(&mut self) {
        if self.order.len() > 2 * self.held.len() + 64 {
            let held = &self.held;
            self.order.retain(|(seq, key)| held.get(key).is_some_and(|h| h.seq == *seq && !h.evicted));
        }
    }
}

/// Discards everything (`tprof record` has no terminal stream).
pub struct NullSink;

impl Sink for NullSink {
    fn event(&mut self, _: &Record, _: &TaskState) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, _: &TaskState) -> io::Result<()> {
        Ok(())
    }
    fn finish(&mut self, _: &SessionReport) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::Meta;

    #[derive(Default)]
    struct Count {
        events: usize,
        summaries: usize,
    }

    impl Sink for Count {
        fn event(&mut self, _: &Record, _: &TaskState) -> io::Result<()> {
            self.events += 1;
            Ok(())
        }
        fn summary(&mut self, _: &TaskState) -> io::Result<()> {
            self.summaries += 1;
            Ok(())
        }
        fn finish(&mut self, _: &SessionReport) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn task(span_id: u64) -> TaskState {
        TaskState { key: TaskKey { trace_id: 1, span_id }, begin_ns: Some(0), end_ns: Some(1_000), ..Default::default() }
    }

    fn log(span_id: u64) -> Record {
        let meta = Meta { cpu: 0, ts_ns: 1, pid: 1, tid: 1, task: TaskKey { trace_id: 1, span_id } };
        Record::Log { meta, key: "k".repeat(32), value: "v".repeat(128), flags: 0 }
    }

    #[test]
    fn held_events_stay_within_the_budget_across_tasks() {
        let filter = Filter { min_latency_ns: Some(1), events: true, ..Default::default() };
        let budget = 1 << 20;
        let mut f = Filtered::with_budget(Count::default(), filter, budget);
        let tasks: Vec<TaskState> = (1..=200).map(task).collect();
        // 200 open tasks of 1000 events each: far more than the budget holds.
        for _ in 0..1000 {
            for t in &tasks {
                f.output(Output::Event(&log(t.key.span_id), t)).expect("held");
                assert!(f.held_bytes() <= budget, "{} bytes held", f.held_bytes());
            }
        }
        assert!(f.held_tasks_evicted > 0 && f.held_tasks_evicted < 200, "{}", f.held_tasks_evicted);
        for t in &tasks {
            f.output(Output::Summary(t)).expect("released");
        }
        assert_eq!(f.held_bytes(), 0);
        assert_eq!(f.inner.summaries, 200, "slow tasks are reported, evicted or not");
        assert_eq!(f.inner.events as u64 + f.discarded, 200 * 1000, "every event shown or counted");
        assert!(f.inner.events > 0, "the tasks that stayed within the budget keep their events");
        assert!(f.order.len() <= 2 * f.held.len() + 64, "the queue is pruned");
    }
}
