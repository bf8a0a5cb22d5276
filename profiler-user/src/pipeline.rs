//! decode -> correlate -> (stacks) -> sinks, for a live session and for `tprof report`
//! alike: both feed it raw ring-buffer records; only where late strings and stacks come from
//! differs.

use std::collections::HashMap;
use std::io;

use crate::correlate::Correlator;
use crate::decode::{decode_with, LateReader};
use crate::mapping::rekey::Rekey;
use crate::model::event::Record;
use crate::model::ledger::{Output, TaskState};
use crate::model::report::SessionReport;
use crate::model::stack::Stack;
use crate::profile::{ProfileOutputs, Profiler, SampleEntry};
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
    /// On-CPU samples and off-CPU stacks: per request, task type and process.
    pub profile: Profiler,
    /// Profile files written at the end.
    pub profile_out: ProfileOutputs,
    /// At the end of the session: summaries go out at once (the last samples are in).
    finishing: bool,
}

/// A PROC record: `event` (`profiler_common::proc_event`) of process `pid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEvent {
    pub event: u32,
    pub pid: u32,
    pub parent: u32,
}

/// Symbolizes a finished task's long blocks (off the event path), records them, feeds the
/// statistics, then hands the task to the sinks, or, while on-CPU samples may still come
/// for it, to the profiler to hold ([`Pipeline::samples`] sends it on).
fn deliver<S: Sink>(
    sink: &mut Filtered<S>,
    stacks: &mut Stacks,
    report: &mut SessionReport,
    recorder: &mut Option<Recorder>,
    profile: &mut Profiler,
    finishing: bool,
    o: Output<'_>,
) -> io::Result<()> {
    match o {
        Output::Summary(t) => {
            // Every task, whatever the filters: the share of its process's CPU.
            *report.tasks_cpu.entry(t.pid).or_insert(0) += t.on_cpu_ns;
            // Statistics follow the task and trace filters, but not --min-latency: the
            // percentiles of a task type must include its fast requests.
            if sink.wanted(t) {
                report.stats.add(t);
            }
            let hold = profile.holds_summaries() && !finishing;
            // Clone the ledger only when a stack is to be filled in (long blocks), or the
            // summary waits for its samples.
            if !stacks.wants(t) && !hold {
                if !profile.has_samples(&t.key) {
                    profile.account(t, Default::default());
                    return sink.output(Output::Summary(t));
                }
                let mut t = t.clone();
                profile.attach(&mut t);
                return sink.output(Output::Summary(&t));
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
            if hold {
                profile.defer(t);
                return Ok(());
            }
            profile.attach(&mut t);
            sink.output(Output::Summary(&t))
        }
        other => sink.output(other),
    }
}

impl<S: Sink> Pipeline<S> {
    pub fn new(sink: S, filter: Filter, stacks: Stacks, recorder: Option<Recorder>) -> Self {
        Pipeline {
            corr: Correlator::new(),
            sink: Filtered::new(sink, filter),
            report: SessionReport::default(),
            stacks,
            recorder,
            procs: Vec::new(),
            profile: Profiler::default(),
            profile_out: ProfileOutputs::default(),
            finishing: false,
            rekey: Rekey::default(),
        }
    }

    /// A ring-buffer drain ended (see [`Profiler::drained`]).
    pub fn drained(&mut self) -> io::Result<()> {
        if let Some(r) = &mut self.recorder {
            r.drained()?;
        }
        self.profile.drained();
        Ok(())
    }

    /// On-CPU samples drained from the kernel: attributed, and the summaries whose samples
    /// are now all in are sent on.
    pub fn samples(&mut self, entries: Vec<SampleEntry>) -> io::Result<()> {
        if let Some(r) = &mut self.recorder {
            // Empty ones too: a replay releases summaries exactly where the session did.
            r.samples(&entries)?;
        }
        self.profile.add_samples(entries);
        let ready = self.profile.ready();
        self.send_held(ready)
    }

    fn send_held(&mut self, ready: Vec<crate::model::ledger::TaskState>) -> io::Result<()> {
        for mut t in ready {
            self.profile.attach(&mut t);
            self.sink.output(Output::Summary(&t))?;
        }
        Ok(())
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
        let (sink, stacks, report, recorder, corr) = (&mut self.sink, &mut self.stacks, &mut self.report, &mut self.recorder, &mut self.corr);
        let (profile, finishing) = (&mut self.profile, self.finishing);
        let mut result = Ok(());
        self.rekey.push(rec, &mut |rec| {
            corr.push(&rec, &mut |o| {
                if result.is_ok() {
                    result = deliver(sink, stacks, report, recorder, profile, finishing, o);
                }
            });
        });
        result
    }

    /// Summaries of the tasks still open, then the final report to the sinks (and the file).
    pub fn finish(&mut self) -> io::Result<()> {
        // Foreign task begins still held by the re-keying stage.
        let (sink, stacks, report, recorder, corr) = (&mut self.sink, &mut self.stacks, &mut self.report, &mut self.recorder, &mut self.corr);
        let (profile, finishing) = (&mut self.profile, self.finishing);
        let mut result = Ok(());
        self.rekey.flush(&mut |rec| {
            corr.push(&rec, &mut |o| {
                if result.is_ok() {
                    result = deliver(sink, stacks, report, recorder, profile, finishing, o);
                }
            });
        });
        result?;
        // The last samples are in: held summaries go out, and open tasks' at once.
        self.finishing = true;
        let held = self.profile.release_all();
        self.send_held(held)?;
        let (sink, stacks, report, recorder) = (&mut self.sink, &mut self.stacks, &mut self.report, &mut self.recorder);
        let profile = &mut self.profile;
        let mut result = Ok(());
        self.corr.finish(&mut |o| {
            if result.is_ok() {
                result = deliver(sink, stacks, report, recorder, profile, true, o);
            }
        });
        result?;
        self.profile.finish(&mut self.report.profile);
        let written = self.write_profiles();
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
        self.sink.inner.finish(&self.report)?;
        written
    }

    /// `--pprof`, `--folded`, `--flamegraph`: a failure is a warning of the report and an
    /// error of the command (after every other output is complete).
    fn write_profiles(&mut self) -> io::Result<()> {
        let out = self.profile_out.clone();
        let mut errors = Vec::new();
        if let (Some(path), Some(file)) = (&out.pprof, out.pprof_file()) {
            if let Err(e) = crate::profile::pprof::write(&self.profile, path, file, self.report.duration_ns, 0) {
                errors.push(e.to_string());
            }
        }
        if let (Some(path), Some((on, off))) = (&out.folded, out.folded_files()) {
            if let Err(e) = crate::profile::folded::write(&self.profile, path, on, off) {
                errors.push(e.to_string());
            }
        }
        if let Some(dir) = &out.flamegraph {
            if let Err(e) = crate::profile::flamegraph::write(&self.profile, &self.report.stats, dir) {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        self.report.warnings.extend(errors.iter().cloned());
        Err(io::Error::other(errors.join("; ")))
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.sink.inner.flush()
    }
}
