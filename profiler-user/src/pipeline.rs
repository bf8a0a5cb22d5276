//! decode -> correlate -> (stacks) -> sinks, for a live session and for `tprof report`
//! alike: both feed it raw ring-buffer records; only where late strings and stacks come from
//! differs.

use std::collections::{BTreeMap, HashMap};
use std::io;

use crate::correlate::Correlator;
use crate::decode::{decode_with, LateReader};
use crate::mapping::rekey::Rekey;
use crate::model::event::Record;
use crate::model::ledger::{Output, TaskState};
use crate::model::report::SessionReport;
use crate::model::stack::Stack;
use crate::model::stats::Stats;
use crate::record::Recorder;
use crate::sink::{Filter, Filtered, Sink};
use crate::stacks::Symbolizer;

/// Where blocking stacks come from.
pub enum Stacks {
    /// Symbolized live from the kernel's stack map.
    Live(Box<Symbolizer>),
    /// Read back from a recording: (span-id, block start) -> stack.
    Recorded(HashMap<(u64, u64), Stack>),
    Off,
}

impl Stacks {
    fn resolve(&mut self, t: &mut TaskState) {
        match self {
            Stacks::Live(s) => s.resolve(t),
            Stacks::Recorded(table) => {
                for b in &mut t.blocks {
                    if let Some(s) = table.get(&(t.key.span_id, b.start_ns)) {
                        b.stack = Some(s.clone());
                    }
                }
            }
            Stacks::Off => {}
        }
    }

    /// Whether resolving would fill in a stack for one of the task's blocks.
    fn wants(&self, t: &TaskState) -> bool {
        match self {
            Stacks::Live(s) => t.blocks.iter().any(|b| s.wants(b)),
            Stacks::Recorded(table) => t.blocks.iter().any(|b| b.stack.is_none() && table.contains_key(&(t.key.span_id, b.start_ns))),
            Stacks::Off => false,
        }
    }

    /// Stacks that could not be read back from the kernel.
    pub fn missing(&self) -> u64 {
        match self {
            Stacks::Live(s) => s.missing,
            _ => 0,
        }
    }
}

pub struct Pipeline<S: Sink> {
    pub corr: Correlator,
    pub sink: Filtered<S>,
    pub report: SessionReport,
    pub stacks: Stacks,
    /// With `tprof record`: every raw record, late string and stack also goes to the file.
    pub recorder: Option<Recorder>,
    /// The lives of traced processes since the session last took them (a live session
    /// adopts followed children, rescans exec'ed ones, forgets exited ones).
    pub procs: Vec<ProcEvent>,
    /// Foreign tasks renamed and re-keyed (`mapping::rekey`) before the correlator.
    pub rekey: Rekey,
}

/// A PROC record: `event` (`profiler_common::proc_event`) of process `pid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEvent {
    pub event: u32,
    pub pid: u32,
    pub parent: u32,
}

/// Symbolizes a finished task's long blocks (off the event path), records them, feeds the
/// statistics, then hands the task to the sinks.
fn deliver<S: Sink>(
    sink: &mut Filtered<S>,
    stacks: &mut Stacks,
    stats: &mut Stats,
    tasks_cpu: &mut BTreeMap<u32, u64>,
    recorder: &mut Option<Recorder>,
    o: Output<'_>,
) -> io::Result<()> {
    match o {
        Output::Summary(t) => {
            // Every task, whatever the filters: the share of its process's CPU.
            *tasks_cpu.entry(t.pid).or_insert(0) += t.on_cpu_ns;
            // Statistics follow the task and trace filters, but not --min-latency: the
            // percentiles of a task type must include its fast requests.
            if sink.wanted(t) {
                stats.add(t);
            }
            // Clone the ledger only when a stack is to be filled in (long blocks).
            if !stacks.wants(t) {
                return sink.output(Output::Summary(t));
            }
            let mut t = t.clone();
            stacks.resolve(&mut t);
            if let Some(r) = recorder {
                for b in &t.blocks {
                    if let Some(s) = &b.stack {
                        r.stack(t.key.span_id, b.start_ns, s)?;
                    }
                }
            }
            sink.output(Output::Summary(&t))
        }
        other => sink.output(other),
    }
}

impl<S: Sink> Pipeline<S> {
    pub fn new(sink: S, filter: Filter, stacks: Stacks, recorder: Option<Recorder>) -> Self {
        Pipeline { corr: Correlator::new(), sink: Filtered::new(sink, filter), report: SessionReport::default(), stacks, recorder, procs: Vec::new(), rekey: Rekey::default() }
    }

    /// One raw ring-buffer record. Err only for output (sink or recording) errors.
    pub fn push(&mut self, bytes: &[u8], late: LateReader<'_>) -> io::Result<()> {
        let mut late_reads = Vec::new();
        let decoded = decode_with(bytes, &mut |pid, addr, len| {
            let got = late(pid, addr, len);
            if let Some(b) = &got {
                late_reads.push((pid, addr, b.clone()));
            }
            got
        });
        if let Some(r) = &mut self.recorder {
            for (pid, addr, b) in &late_reads {
                r.late(*pid, *addr, b)?;
            }
            r.raw(bytes)?;
        }
        let rec = match decoded {
            Ok(rec) => rec,
            Err(e) => {
                self.report.undecodable += 1;
                log::debug!("undecodable record: {e}");
                return Ok(());
            }
        };
        if let Record::Proc { event, pid, parent, .. } = rec {
            self.procs.push(ProcEvent { event, pid, parent });
            return Ok(());
        }
        let (sink, stacks, stats, recorder, corr) = (&mut self.sink, &mut self.stacks, &mut self.report.stats, &mut self.recorder, &mut self.corr);
        let tasks_cpu = &mut self.report.tasks_cpu;
        let mut result = Ok(());
        self.rekey.push(rec, &mut |rec| {
            corr.push(&rec, &mut |o| {
                if result.is_ok() {
                    result = deliver(sink, stacks, stats, tasks_cpu, recorder, o);
                }
            });
        });
        result
    }

    /// Summaries of the tasks still open, then the final report to the sinks (and the file).
    pub fn finish(&mut self) -> io::Result<()> {
        let (sink, stacks, stats, recorder, corr) = (&mut self.sink, &mut self.stacks, &mut self.report.stats, &mut self.recorder, &mut self.corr);
        let tasks_cpu = &mut self.report.tasks_cpu;
        let mut result = Ok(());
        self.rekey.flush(&mut |rec| {
            corr.push(&rec, &mut |o| {
                if result.is_ok() {
                    result = deliver(sink, stacks, stats, tasks_cpu, recorder, o);
                }
            });
        });
        result?;
        let (sink, stacks, stats, recorder) = (&mut self.sink, &mut self.stacks, &mut self.report.stats, &mut self.recorder);
        let tasks_cpu = &mut self.report.tasks_cpu;
        let mut result = Ok(());
        self.corr.finish(&mut |o| {
            if result.is_ok() {
                result = deliver(sink, stacks, stats, tasks_cpu, recorder, o);
            }
        });
        result?;
        self.report.records = self.corr.stats.records;
        self.report.correlator = self.corr.stats.clone();
        self.report.filtered_events = self.sink.discarded;
        self.report.held_tasks_evicted = self.sink.held_tasks_evicted;
        self.report.build_process_cpu();
        if let Some(r) = &mut self.recorder {
            r.trailer(&self.report)?;
        }
        // After the trailer: a replay counts these again and makes its own.
        let counted = self.report.counted_warnings();
        self.report.warnings.extend(counted);
        self.sink.inner.finish(&self.report)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.sink.inner.flush()
    }
}
