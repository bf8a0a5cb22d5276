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
    /// How the probe sites were attached: `uprobe_multi` (one link per file and program)
    /// or `perf_event` (one uprobe perf event per site, on kernels before 6.6).
    pub probe_links: String,
    pub duration_ns: u64,
    pub records: u64,
    /// Records the decoder rejected (short or unknown kind).
    pub undecodable: u64,
    /// Records lost in the kernel (ring buffer full), by kind name.
    pub kernel_drops: Vec<(&'static str, u64)>,
    /// Switch-ins of task-carrying threads the scheduler programs did not see (those
    /// off-CPU intervals end at the thread's next sign of life, flagged `end_inferred`).
    pub missed_switch_ins: u64,
    /// Blocking stacks that could not be stored or read back.
    pub stacks_lost: u64,
    /// Records still queued in the kernel when the final drain ran out of time.
    pub undrained: u64,
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
        self.kernel_drops.iter().map(|(_, n)| n).sum::<u64>() + self.undrained
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

/// Record kind names, indexed by kind (for drop reports).
pub const KIND_NAMES: [&str; 14] = [
    "unknown", "task_begin", "task_end", "region_begin", "region_end", "log", "task_attach", "task_detach", "on_cpu",
    "off_cpu", "syscall", "agg", "kstack", "ustack",
];

pub fn kind_name(k: u32) -> &'static str {
    KIND_NAMES.get(k as usize).copied().unwrap_or("unknown")
}

pub fn kind_by_name(name: &str) -> Option<&'static str> {
    KIND_NAMES.iter().copied().find(|k| *k == name)
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

/// Files tprof writes under sudo belong to the user who ran sudo, not to root.
pub fn give_to_invoking_user(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let id = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u32>().ok());
    let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) else { return };
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return };
    // SAFETY: chown with a NUL-terminated path we own and plain integer ids.
    if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
        log::warn!("cannot give {} to uid {uid}: {}", path.display(), io::Error::last_os_error());
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
    if nr == crate::decode::OTHER_SYSCALLS {
        return "other syscalls".to_string();
    }
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
