//! Several sinks at once: the terminal stream (text or NDJSON) and any exporters.
//!
//! `--summary-only` silences per-event lines on the terminal only: exporters (Perfetto
//! needs every slice) still get every event. An exporter's failure is logged once and that
//! exporter is dropped; the terminal stream's failure ends the session (e.g. a closed pipe).

use std::io;

use super::Sink;
use crate::model::event::Record;
use crate::model::ledger::TaskState;
use crate::model::report::SessionReport;

pub struct Tee {
    primary: Box<dyn Sink>,
    primary_events: bool,
    exporters: Vec<(String, Box<dyn Sink>)>,
    /// Exporters that failed, with the error, for the final report.
    pub failed: Vec<String>,
}

impl Tee {
    pub fn new(primary: Box<dyn Sink>, primary_events: bool) -> Self {
        Tee { primary, primary_events, exporters: Vec::new(), failed: Vec::new() }
    }

    pub fn add(&mut self, name: &str, sink: Box<dyn Sink>) {
        self.exporters.push((name.to_string(), sink));
    }

    /// True when some sink wants per-event records.
    pub fn wants_events(&self) -> bool {
        self.primary_events || !self.exporters.is_empty()
    }

    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> io::Result<()>) {
        let mut failed = Vec::new();
        self.exporters.retain_mut(|(name, s)| match f(s.as_mut()) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("{name} export stopped: {e}");
                failed.push(format!("{name} export stopped: {e}"));
                false
            }
        });
        self.failed.extend(failed);
    }
}

impl Sink for Tee {
    fn event(&mut self, rec: &Record, task: &TaskState) -> io::Result<()> {
        self.each(|s| s.event(rec, task));
        if self.primary_events {
            self.primary.event(rec, task)?;
        }
        Ok(())
    }

    fn summary(&mut self, task: &TaskState) -> io::Result<()> {
        self.each(|s| s.summary(task));
        self.primary.summary(task)
    }

    /// Ends every sink. An exporter that failed (now or earlier) makes this an error after
    /// the terminal stream is complete, so tprof exits non-zero with a truncated export.
    fn finish(&mut self, report: &SessionReport) -> io::Result<()> {
        self.each(|s| s.finish(report));
        let mut report = report.clone();
        report.warnings.extend(self.failed.iter().cloned());
        self.primary.finish(&report)?;
        if self.failed.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(self.failed.join("; ")))
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.each(|s| s.flush());
        self.primary.flush()
    }
}
