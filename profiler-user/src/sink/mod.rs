//! Where correlated output goes: one trait, several formats, and the filters in front.

pub mod json;
pub mod tee;
pub mod text;

use std::collections::HashMap;
use std::io;

use crate::correlate::{CorrelatorStats, Output, TaskState};
use crate::decode::{Record, TaskKey};

/// Session-wide figures for the final report.
#[derive(Clone, Debug, Default)]
pub struct SessionReport {
    pub pids: Vec<u32>,
    pub sites: usize,
    pub duration_ns: u64,
    pub records: u64,
    /// Records the decoder rejected (short or unknown kind).
    pub undecodable: u64,
    /// Records lost in the kernel (ring buffer full), by kind name.
    pub kernel_drops: Vec<(&'static str, u64)>,
    /// Switch-ins of task-carrying threads the scheduler programs did not see (their
    /// off-CPU time shows as "unscheduled").
    pub missed_switch_ins: u64,
    /// Blocking stacks that could not be stored or read back.
    pub stacks_lost: u64,
    /// Per task type latency percentiles and average breakdown (all tasks seen).
    pub stats: crate::stats::Stats,
    pub correlator: CorrelatorStats,
    /// Events held back by --min-latency and discarded (task was fast, or buffer full).
    pub filtered_events: u64,
    pub warnings: Vec<String>,
    /// Why the session stopped.
    pub stop_reason: String,
}

impl SessionReport {
    pub fn total_kernel_drops(&self) -> u64 {
        self.kernel_drops.iter().map(|(_, n)| n).sum()
    }
}

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
    held: HashMap<TaskKey, Vec<Record>>,
    pub discarded: u64,
}

impl<S: Sink> Filtered<S> {
    pub fn new(inner: S, filter: Filter) -> Self {
        Filtered { inner, filter, held: HashMap::new(), discarded: 0 }
    }

    fn wanted(&self, task: &TaskState) -> bool {
        if self.filter.trace_id.is_some_and(|t| t != task.key.trace_id) {
            return false;
        }
        if let Some(name) = &self.filter.task_name {
            if &task.name != name {
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
                let held = self.held.remove(&task.key).unwrap_or_default();
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

/// Makes text from the traced process safe for a terminal: control characters (and so
/// terminal escape sequences) are shown as `\x1b`-style escapes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Milliseconds with three decimals, for humans.
pub fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

pub fn syscall_name(nr: u32) -> String {
    crate::syscall_names::name(nr).map(str::to_string).unwrap_or_else(|| format!("syscall_{nr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralizes_terminal_sequences() {
        assert_eq!(escape("ok"), "ok");
        assert_eq!(escape("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("line\nbreak\r"), "line\\nbreak\\r");
        assert_eq!(escape("ünï"), "ünï");
    }
}
