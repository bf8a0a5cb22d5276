//! `--html FILE`: one self-contained HTML page (inline CSS and JavaScript, no network) with
//! the session header, the task-type table, a latency histogram per task type, the slowest
//! requests as waterfalls (regions; on-CPU, run-queue and blocked intervals per thread;
//! blocks with their wakers and stacks) and room for what other parts of tprof add: flame
//! graphs ([`Extra`]) and a critical path per request ([`CriticalStep`]).
//!
//! Like the Perfetto exporter it collects while the session runs and writes at `finish`,
//! in bounded memory ([`collect`]: the slowest requests only; the rest is counted and the
//! page says what it left out). Every string from a target is untrusted: it is made
//! visible (`present::escape`), then embedded in a `<script type="application/json">`
//! block with `<`, `>`, `&`, U+2028 and U+2029 escaped, and the page's script puts it into
//! the document as text (`textContent`), never as markup ([`render`]).

mod collect;
mod render;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

pub use collect::{MAX_OPEN_PIECES, MAX_PIECES_PER_TASK, MAX_TYPES_WITH_REQUESTS, TOP_OVERALL, TOP_PER_TYPE};
use collect::Collector;

use crate::model::event::Record;
use crate::model::ledger::TaskState;
use crate::model::process::ProcessInfo;
use crate::model::report::SessionReport;
use crate::sink::Sink;

/// Processes named in the page's header; more are counted.
pub const MAX_PROCESSES: usize = 64;
/// Bytes of [`Extra`] SVG the page takes in all; further items are counted, not embedded.
pub const MAX_EXTRA_BYTES: usize = 64 << 20;
/// Steps of a request's critical path drawn; more are counted.
pub const MAX_CRITICAL_STEPS: usize = 256;

/// One step of a request's critical path, as the caller computed it: thread `tid` from
/// `start_ns` to `end_ns` (CLOCK_MONOTONIC, like the records), described by `label`
/// (e.g. "blocked 12.6 ms on a futex", "holder on CPU 5 ms"). Drawn over the waterfall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriticalStep {
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub label: String,
}

/// An SVG the page embeds as is (in a sandboxed frame: its scripts cannot reach the page),
/// e.g. a flame graph: under its task type's section when `task_type` names one, else in
/// the session-wide section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extra {
    pub task_type: Option<String>,
    pub title: String,
    pub svg: String,
}

/// Gives the critical path of a slow request the page keeps (called at its summary).
pub type CriticalPathFn = Box<dyn FnMut(&TaskState) -> Vec<CriticalStep>>;
/// Gives the page's extra items (called once, at the end of the session).
pub type ExtrasFn = Box<dyn FnMut(&SessionReport) -> Vec<Extra>>;

pub struct HtmlSink {
    path: PathBuf,
    out: Option<File>,
    collector: Collector,
    critical: Option<CriticalPathFn>,
    extras: Option<ExtrasFn>,
    /// Thread names may be read from this machine's /proc (a live session).
    live: bool,
    processes: BTreeMap<u32, Arc<ProcessInfo>>,
    more_processes: u64,
}

impl HtmlSink {
    /// Creates (truncates) `path` now, so a bad path fails before the session starts; the
    /// page is written into it at `finish`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let out = File::create(path).with_context(|| format!("creating HTML report {}", path.display()))?;
        Ok(HtmlSink {
            path: path.to_path_buf(),
            out: Some(out),
            collector: Collector::default(),
            critical: None,
            extras: None,
            live: true,
            processes: BTreeMap::new(),
            more_processes: 0,
        })
    }

    /// A sink for a report: thread names come from the recording only, never this /proc.
    pub fn offline(mut self) -> Self {
        self.live = false;
        self
    }

    /// Draws each kept request's critical path as `f` gives it.
    pub fn with_critical_path(mut self, f: CriticalPathFn) -> Self {
        self.critical = Some(f);
        self
    }

    /// Adds the items `f` gives at the end of the session (flame graphs...).
    pub fn with_extras(mut self, f: ExtrasFn) -> Self {
        self.extras = Some(f);
        self
    }

    fn learn(&mut self, t: &TaskState) {
        let Some(p) = &t.process else { return };
        if self.processes.contains_key(&t.pid) {
            return;
        }
        if self.processes.len() < MAX_PROCESSES {
            self.processes.insert(t.pid, Arc::clone(p));
        } else {
            self.more_processes += 1;
        }
    }

    /// The page for `report`, from what was collected.
    pub fn page(&mut self, report: &SessionReport) -> String {
        let extras = self.extras.as_mut().map(|f| f(report)).unwrap_or_default();
        let (requests, slowest) = self.collector.finish();
        let input = render::Input {
            report,
            left: &self.collector.left,
            requests: &requests,
            slowest: &slowest,
            extras: &extras,
            processes: &self.processes,
            more_processes: self.more_processes,
            live: self.live,
        };
        render::page(&input)
    }
}

impl Sink for HtmlSink {
    fn event(&mut self, rec: &Record, _task: &TaskState) -> io::Result<()> {
        self.collector.event(rec);
        Ok(())
    }

    fn summary(&mut self, task: &TaskState) -> io::Result<()> {
        self.learn(task);
        let mut none = |_: &TaskState| Vec::new();
        let f: &mut dyn FnMut(&TaskState) -> Vec<CriticalStep> = match self.critical.as_mut() {
            Some(f) => f,
            None => &mut none,
        };
        self.collector.summary(task, f);
        Ok(())
    }

    fn finish(&mut self, report: &SessionReport) -> io::Result<()> {
        let Some(mut out) = self.out.take() else { return Ok(()) };
        let page = self.page(report);
        out.write_all(page.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| io::Error::new(e.kind(), format!("writing HTML report {}: {e}", self.path.display())))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
