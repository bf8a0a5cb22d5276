//! Where correlated output goes: one trait, several formats, and the filters in front.

pub mod json;
pub mod tee;
pub mod text;

use std::collections::HashMap;
use std::io;

use crate::model::event::{Record, TaskKey};
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

/// Applies a [`Filter`] in front of a sink. With `--min-latency`, a task's events are held
/// until it ends and released only if it was slow enough (bounded per task).
pub struct Filtered<S> {
    pub inner: S,
    filter: Filter,
    held: HashMap<TaskKey, Vec<Record>, foldhash::fast::RandomState>,
    pub discarded: u64,
}

impl<S: Sink> Filtered<S> {
    pub fn new(inner: S, filter: Filter) -> Self {
        Filtered { inner, filter, held: HashMap::default(), discarded: 0 }
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
                    let held = self.held.entry(task.key).or_default();
                    if held.len() < MAX_HELD_EVENTS {
                        held.push(rec.clone());
                    } else {
                        self.discarded += 1;
                    }
                    return Ok(());
                }
                self.inner.event(rec, task)
            }
            Output::Summary(task) => {
                let held = if self.held.is_empty() { Vec::new() } else { self.held.remove(&task.key).unwrap_or_default() };
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
