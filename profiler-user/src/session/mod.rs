//! `tprof attach` and `tprof record`: a live session in named phases.
//!
//! 1. [`Live::start`]: check privileges, start the privileged helper, load the programs,
//!    copy `/proc/kallsyms`, drop every privilege, attach the targets' probe sites.
//! 2. [`Live::poll`]: drain the ring buffer in batches (the programs never wake us per
//!    event), decode, correlate and write; adopt the children the kernel followed, attach
//!    the probes of exec'ed images and of processes that joined the scope, forget the ones
//!    that exited; until Ctrl-C, SIGTERM, `--duration`, the targets' exit (with `--pid`
//!    only), or a closed output.
//! 3. [`Live::final_drain`]: stop new USDT events, then drain what the kernel queued
//!    (bounded in time), and read the sums of the tasks still open.
//! 4. [`Live::report`]: the kernel's counters and the session's facts into the report.
//!
//! Everything already captured is written out before stopping, with the losses counted.
//!
//! Privileges: the helper is started first (it creates the uprobes, now and on every
//! rescan: `attach::broker`), the programs are loaded and `/proc/kallsyms` copied, then
//! tprof drops every capability and leaves uid 0 (`attach::drop_privs`) before it attaches
//! anything or reads a single record.

use std::fs::File;
use std::sync::Arc;
use std::io;
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::attach::broker_client::BrokerClient;
use crate::attach::drop_privs::{drop_after_attach, DropOptions};
use crate::attach::{pidfd, privileges, Counters, Probes, Scope, TraceOptions, Tracer};
use crate::clock::monotonic_ns;
use crate::model::process::ProcessInfo;
use crate::model::report::SessionReport;
use crate::pipeline::{Pipeline, Stacks};
use crate::present::kind_name;
use crate::record::Recorder;
use crate::sink::{Filter, Sink};
use crate::stacks::Symbolizer;
use profiler_common::proc_event;

mod late;
mod names;
mod targets;
mod unattributed;
use late::LateReads;
use targets::{Origin, Targets};

/// How often the ring buffer is drained.
const POLL: Duration = Duration::from_millis(20);
/// How often targets are checked for exit and rescanned for new libraries.
const RESCAN: Duration = Duration::from_millis(500);
/// Most records handled per drain before checking signals again (stays responsive under
/// load: ~25 ms of work at ~100 ns per record), i.e. up to ~13 M records/s at one drain per
/// POLL.
const MAX_BATCH: usize = 1 << 18;
/// Longest final drain after a stop.
const FINAL_DRAIN: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// The `--pid`s.
    pub pids: Vec<u32>,
    /// Which other processes the session traces (children, a cgroup, a binary's mappers).
    pub scope: Scope,
    /// What the user named: the `--cgroup` and `--binary` paths, for messages.
    pub cgroup_path: Option<std::path::PathBuf>,
    pub binary_path: Option<std::path::PathBuf>,
    pub duration: Option<Duration>,
    pub trace: TraceOptions,
    pub filter: Filter,
    /// Foreign probes mapped onto tprof's events (`--preset`, `--probes`).
    pub mapping: Option<std::sync::Arc<crate::mapping::ProbeMapping>>,
    /// `--pprof`, `--folded`, `--flamegraph`.
    pub profile: crate::profile::ProfileOutputs,
}

impl AttachOptions {
    /// Whether the session waits for processes to come (a cgroup, a binary) rather than
    /// ending when its processes are gone.
    fn open_ended(&self) -> bool {
        self.scope.cgroup.is_some() || self.scope.binary.is_some()
    }
}

/// Runs a session into `sink` (and `recorder`, for `tprof record`) until stopped. Returns
/// the final report (also written to the sink).
pub fn run<S: Sink>(opts: AttachOptions, sink: S, recorder: Option<Recorder>) -> Result<SessionReport> {
    let mut live = Live::start(&opts)?;
    let mut p = live.pipeline(sink, &opts, recorder);
    let stop = live.poll(&mut p, &opts)?;
    let stop = live.final_drain(&mut p, stop)?;
    live.report(p, stop)
}

/// A session attached and running.
pub struct Live {
    // Field order is drop order: links and programs go before the runtime.
    probes: Probes,
    /// The on-CPU sampler (`--sample-hz`), when on and attached.
    sampler: Option<crate::attach::sampler::Sampler>,
    samples: crate::profile::live::LiveSamples,
    tracer: Tracer,
    ring: RingBuf<MapData>,
    kallsyms: Option<File>,
    targets: Targets,
    /// What was read of processes added since the pipeline last heard (see `Live::tell`).
    learnt: Vec<Arc<ProcessInfo>>,
    /// The `--pid`s' environments, read while tprof could (see `names::complete`).
    environs: std::collections::HashMap<u32, Vec<u8>>,
    /// This boot's id: with a process's start time, its `service.instance.id`.
    boot_id: Option<String>,
    late: LateReads,
    start: Instant,
    sigint: Signal,
    sigterm: Signal,
    rt: tokio::runtime::Runtime,
}

impl Live {
    /// Phase 1: everything up to the first record.
    pub fn start(opts: &AttachOptions) -> Result<Live> {
        privileges::check()?;
        // Signal handlers first: a Ctrl-C at any point from here on is a clean stop that
        // still reports what was captured (the default action would kill tprof mid-way).
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
        let (sigint, sigterm) = {
            let _in_rt = rt.enter();
            let int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
            (int, signal(SignalKind::terminate()).context("installing the SIGTERM handler")?)
        };
        let mut comms = Vec::new();
        let mut environs = std::collections::HashMap::new();
        let mut pidfds = Vec::new();
        for pid in &opts.pids {
            // The pidfd first: the checks then look at the process it holds, and the session
            // (and the helper) keep holding that very process, whatever its pid becomes.
            let fd = pidfd::open(*pid);
            let comm = privileges::check_pid(*pid)?;
            let fd = fd.filter(pidfd::alive).ok_or_else(|| anyhow!("pid {pid} exited while tprof looked at it"))?;
            comms.push((*pid, comm));
            pidfds.push((*pid, fd));
            if let Ok(e) = std::fs::read(format!("/proc/{pid}/environ")) {
                environs.insert(*pid, e);
            }
        }
        let boot_id = crate::model::origin::Origin::here().boot_id;
        // The helper first, while tprof still has every privilege for it to inherit.
        let held: Vec<(u32, BorrowedFd<'_>)> = pidfds.iter().map(|(p, fd)| (*p, fd.as_fd())).collect();
        let broker = BrokerClient::spawn(&held, &opts.scope)?;
        let broker_line = broker.privileges.clone();
        let mut tracer = Tracer::load(&opts.trace, opts.scope.follow)?;
        let usdt = tracer.take_usdt().context("the USDT programs were not loaded")?;
        let mut probes = Probes::new(broker, usdt);
        probes.mapping = opts.mapping.clone();
        // Perf events need CAP_PERFMON: opened before the drop below.
        let sampler = match opts.trace.sample_hz {
            0 => None,
            hz => match crate::attach::sampler::Sampler::attach(&mut tracer.ebpf, hz) {
                Ok(s) => Some(s),
                Err(e) => {
                    let msg = format!("on-CPU sampling is off: {e:#}");
                    eprintln!("tprof: warning: {}", crate::present::escape_lines(&msg));
                    probes.warnings.push(msg);
                    None
                }
            },
        };
        // What the rest of the session needs and the drop takes away: the kernel's symbols.
        let kallsyms = if opts.trace.stacks || sampler.is_some() {
            match crate::stacks::snapshot_kallsyms() {
                Ok(f) => Some(f),
                Err(e) => {
                    probes.warnings.push(format!("kernel stacks stay unsymbolized: {e:#}"));
                    None
                }
            }
        } else {
            None
        };
        match drop_after_attach(&DropOptions::for_tprof()) {
            Ok(dropped) => log::info!("tprof (pid {}) {dropped}", std::process::id()),
            Err(e) => {
                let msg = format!("tprof could not drop its privileges, and runs on with them: {e:#}");
                eprintln!("tprof: warning: {}", crate::present::escape_lines(&msg));
                probes.warnings.push(msg);
            }
        }
        log::info!("{broker_line}");
        let ring = tracer.take_ring()?;
        let mut live = Live {
            probes,
            sampler,
            samples: Default::default(),
            tracer,
            ring,
            kallsyms,
            targets: Targets::default(),
            learnt: Vec::new(),
            environs,
            boot_id,
            late: LateReads::default(),
            start: Instant::now(),
            sigint,
            sigterm,
            rt,
        };
        let mut sites = 0;
        for ((pid, comm), (_, fd)) in comms.iter().zip(pidfds) {
            let n = live.add(*pid, Origin::Given, Some(fd))?;
            if n == 0 && !live.probes.has_sites(*pid) && !opts.open_ended() {
                let why = live.probes.warnings.iter().filter(|w| w.starts_with(&format!("pid {pid}:"))).cloned().collect::<Vec<_>>();
                let mapped = match &opts.mapping {
                    Some(m) => format!(" nor any probe {} maps ({})", m.source, m.probe_names().join(", ")),
                    None => String::new(),
                };
                live.probes.warnings.push(format!(
                    "pid {pid} ({comm}) has no tprof probes{mapped} in its executable or loaded libraries{}: \
                     link the usdt-probes crate (Rust) or include tprof.h (C) and mark requests as tasks",
                    if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
                ));
            }
            sites += n;
        }
        // The processes of the scope that exist already: in the cgroup, mapping the binary,
        // or (following) forked before attach.
        sites += live.discover(false);
        if sites == 0 && !opts.open_ended() {
            bail!("{}", live.probes.warnings.join("\n"));
        }
        let missing = live.probes.mapped_missing();
        if let (Some(m), false) = (&opts.mapping, missing.is_empty()) {
            let msg = format!("{}: {} mapped probe(s) are in none of the traced files (not attached): {}", m.source, missing.len(), missing.join(", "));
            eprintln!("tprof: warning: {}", crate::present::escape_lines(&msg));
            live.probes.warnings.push(msg);
        }
        // Readiness line (stderr, so it never mixes with the data on stdout): tests and
        // scripts wait for it before driving the target.
        let mut what: Vec<String> = comms.iter().map(|(p, c)| format!("pid {p} {c}")).collect();
        if let Some(c) = &opts.cgroup_path {
            what.push(format!("cgroup {}", crate::present::escape(&c.display().to_string())));
        }
        if let Some(b) = &opts.binary_path {
            what.push(format!("binary {}", crate::present::escape(&b.display().to_string())));
        }
        let n = live.targets.pids().len();
        eprintln!(
            "tprof: attached to {sites} probe sites in {n} process{} ({}){}; Ctrl-C to stop",
            if n == 1 { "" } else { "es" },
            what.join(", "),
            if opts.scope.follow { ", following their children" } else { "" }
        );
        Ok(live)
    }

    /// Starts on process `pid`: traced by the kernel programs, served by the helper (it
    /// checks that the process is in the scope), its files scanned and their probe sites
    /// attached. `fd`: the pidfd of the session's first look, if it had one (otherwise it
    /// is opened now). Returns how many sites were newly attached.
    fn add(&mut self, pid: u32, origin: Origin, fd: Option<OwnedFd>) -> Result<usize> {
        if self.targets.contains(pid) {
            return Ok(0);
        }
        let fd = fd.or_else(|| pidfd::open(pid));
        if !self.targets.add(pid, origin, fd) {
            return Ok(0);
        }
        self.tracer.trace_pid(pid, true)?;
        let mut info = crate::discover::process::read(pid);
        let environ = self.environs.remove(&pid).or_else(|| std::fs::read(format!("/proc/{pid}/environ")).ok());
        names::complete(&mut info, environ.as_deref(), self.boot_id.as_deref());
        // Discovered processes were adopted by the helper as it found them.
        let adopted = if origin == Origin::Followed { self.probes.adopt(pid).with_context(|| format!("following pid {pid}")) } else { Ok(()) };
        if environ.is_none() && adopted.is_ok() {
            // Another user's process: its environment through the helper, one variable.
            info.otel_service_name = self.probes.environ(pid, "OTEL_SERVICE_NAME").filter(|s| !s.is_empty());
        }
        self.learnt.push(Arc::new(info));
        adopted?;
        self.probes.attach_pid(pid)
    }

    /// Processes of the scope the helper found and serves: added (said on stderr when
    /// `announce`). Returns the sites newly attached.
    fn discover(&mut self, announce: bool) -> usize {
        let found = match self.probes.discover() {
            Ok(f) => f,
            Err(e) => {
                log::debug!("looking for processes of the scope: {e:#}");
                return 0;
            }
        };
        let mut sites = 0;
        for pid in found {
            match self.add(pid, Origin::Discovered, None) {
                Ok(n) => {
                    sites += n;
                    if announce {
                        eprintln!("tprof: tracing pid {pid} too (it joined the session's scope; {n} new probe sites)");
                    }
                }
                Err(e) => log::debug!("pid {pid}: {e:#}"),
            }
        }
        sites
    }

    /// Process `pid` exited: no longer traced, and forgotten.
    fn gone<S: Sink>(&mut self, pid: u32, p: &mut Pipeline<S>) {
        if self.targets.contains(pid) && self.sampler.is_some() {
            // Its last samples (in both sample maps) are symbolized while its files are
            // still known.
            for _ in 0..2 {
                if let Err(e) = self.drain_samples(p) {
                    log::debug!("draining samples of exited pid {pid}: {e}");
                }
            }
        }
        if self.targets.remove(pid) {
            if let Err(e) = self.tracer.trace_pid(pid, false) {
                log::debug!("{e:#}");
            }
            self.probes.forget(pid);
            self.samples.forget(pid);
            p.corr.forget_process(pid);
            if let Stacks::Live(s) = &mut p.stacks {
                s.forget(pid);
            }
        }
    }

    /// The kernel's marks of exited processes go once their pids are untraced (see
    /// `Tracer::sweep_exited`).
    fn sweep_exited(&mut self) {
        let targets = &self.targets;
        if let Err(e) = self.tracer.sweep_exited(|pid| !targets.contains(pid)) {
            log::debug!("{e:#}");
        }
    }

    /// The correlator learns what was read of the processes added since the last call.
    fn tell<S: Sink>(&mut self, p: &mut Pipeline<S>) {
        for info in self.learnt.drain(..) {
            if let Some(r) = &mut p.recorder {
                if let Err(e) = r.process(&info) {
                    log::warn!("{e}");
                }
            }
            p.corr.set_process(info);
        }
    }

    /// The symbolizer learns `pid`'s mappings as of its last scan.
    fn update_maps<S: Sink>(&self, pid: u32, p: &mut Pipeline<S>) {
        if let Stacks::Live(s) = &mut p.stacks {
            s.update_maps(pid, self.probes.mapped_files(pid));
        }
    }

    /// The pipeline records go through, with a symbolizer over the targets' mapped files.
    pub fn pipeline<S: Sink>(&mut self, sink: S, opts: &AttachOptions, recorder: Option<Recorder>) -> Pipeline<S> {
        let stack_map = if opts.trace.stacks { self.tracer.take_stacks() } else { None };
        let symbolizer = Symbolizer::new(stack_map, opts.trace.stack_ns, self.kallsyms.take());
        let mut p = Pipeline::new(sink, opts.filter.clone(), Stacks::Live(Box::new(symbolizer)), recorder);
        let hz = self.sampler.as_ref().map_or(0, |s| s.hz);
        p.profile = crate::profile::Profiler::new(hz);
        p.profile_out = opts.profile.clone();
        for pid in self.targets.pids() {
            self.update_maps(pid, &mut p);
        }
        self.tell(&mut p);
        p.report.pids = opts.pids.clone();
        p
    }

    /// Phase 2: until something stops the session; returns why.
    pub fn poll<S: Sink>(&mut self, p: &mut Pipeline<S>, opts: &AttachOptions) -> Result<String> {
        let mut tick = {
            let _in_rt = self.rt.enter();
            let mut t = tokio::time::interval(POLL);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let mut last_scan = Instant::now();
        loop {
            let Live { rt, sigint, sigterm, .. } = self;
            let signalled = rt.block_on(async {
                tokio::select! {
                    _ = tick.tick() => None,
                    _ = sigint.recv() => Some("interrupted (SIGINT)"),
                    _ = sigterm.recv() => Some("terminated (SIGTERM)"),
                }
            });
            if let Some(why) = signalled {
                return Ok(why.to_string());
            }
            if let Err(e) = drain(&mut self.ring, &mut self.probes, &mut self.late, p) {
                return output_stop(e);
            }
            if let Err(e) = self.drain_samples(p) {
                return output_stop(e);
            }
            self.tracer.flush_log();
            self.follow(p);
            if opts.duration.is_some_and(|d| self.start.elapsed() >= d) {
                return Ok("duration elapsed".to_string());
            }
            if last_scan.elapsed() >= RESCAN {
                last_scan = Instant::now();
                if let Err(e) = self.rescan(p, opts) {
                    return output_stop(e);
                }
                if self.targets.is_empty() && !opts.open_ended() {
                    return Ok(format!("target{} exited", if opts.pids.len() > 1 { "s" } else { "" }));
                }
            }
        }
    }

    /// After a ring drain: the on-CPU samples of the map the sampler retired a poll ago, and
    /// the summaries whose samples are now all in (see `profile::aggregate`). Err only for
    /// output errors.
    fn drain_samples<S: Sink>(&mut self, p: &mut Pipeline<S>) -> io::Result<()> {
        let Some(sampler) = self.sampler.as_mut() else { return Ok(()) };
        p.drained()?;
        let raw = match sampler.drain() {
            Ok(r) => r,
            Err(e) => {
                log::debug!("draining the on-CPU samples: {e:#}");
                Vec::new()
            }
        };
        let sym = match &mut p.stacks {
            Stacks::Live(s) => Some(&mut **s),
            _ => None,
        };
        let entries = self.samples.entries(sampler, sym, raw);
        p.samples(entries)
    }

    /// After each drain: the children the kernel followed are adopted, exec'ed images get
    /// their probe sites, exited processes are forgotten.
    fn follow<S: Sink>(&mut self, p: &mut Pipeline<S>) {
        let mut forked = self.tracer.take_forked().unwrap_or_else(|e| {
            log::debug!("reading the followed children: {e:#}");
            Vec::new()
        });
        let events = std::mem::take(&mut p.procs);
        // A child the kernel map was too full to hold still comes by its PROC record.
        forked.extend(events.iter().filter(|e| e.event == proc_event::FORK).map(|e| e.pid));
        for pid in forked {
            match self.add(pid, Origin::Followed, None) {
                Ok(_) => self.update_maps(pid, p),
                Err(e) => log::debug!("{e:#}"),
            }
        }
        for e in events {
            match e.event {
                proc_event::EXEC if self.targets.contains(e.pid) => {
                    match self.probes.attach_pid(e.pid) {
                        Ok(0) => {}
                        Ok(n) => eprintln!("tprof: attached {n} more probe sites in pid {} (exec)", e.pid),
                        Err(err) => log::debug!("pid {} after exec: {err:#}", e.pid),
                    }
                    self.update_maps(e.pid, p);
                }
                proc_event::EXIT => self.gone(e.pid, p),
                _ => {}
            }
        }
        self.sweep_exited();
        self.tell(p);
    }

    /// Every RESCAN: processes that exited (their PROC record may have been lost), libraries
    /// loaded since the last scan, processes that joined the scope. The ring is drained
    /// between processes whenever a POLL has passed, so many targets (or a slow scan) do not
    /// hold the live stream up. Err only for output errors.
    fn rescan<S: Sink>(&mut self, p: &mut Pipeline<S>, opts: &AttachOptions) -> io::Result<()> {
        let mut drained = Instant::now();
        for pid in self.targets.pids() {
            if drained.elapsed() >= POLL {
                drain(&mut self.ring, &mut self.probes, &mut self.late, p)?;
                drained = Instant::now();
            }
            if !self.targets.alive(pid) {
                self.gone(pid, p);
                continue;
            }
            // A library dlopen'ed since the last scan gets its probes attached.
            match self.probes.attach_pid(pid) {
                Ok(0) => {}
                Ok(n) => eprintln!("tprof: attached {n} more probe sites in pid {pid} (new library)"),
                Err(e) => log::debug!("rescan of pid {pid}: {e:#}"),
            }
            self.update_maps(pid, p);
        }
        if opts.open_ended() {
            let before = self.targets.pids();
            self.discover(true);
            for pid in self.targets.pids().into_iter().filter(|p| !before.contains(p)) {
                self.update_maps(pid, p);
            }
            self.tell(p);
        }
        // Exits whose PROC record was lost (or of children never adopted).
        self.sweep_exited();
        Ok(())
    }

    /// Phase 3: stop new USDT events first (in parallel: see `Probes::detach`), then the
    /// final drain: whatever the kernel queued before we stopped is still reported. Bounded
    /// in time, so a target that floods the scheduler programs cannot keep tprof from
    /// stopping; what is left in the ring then is counted, not silently dropped. Then the
    /// short intervals the kernel summed for tasks still open (sent only when a thread
    /// leaves its task), so the open tasks' totals include them.
    pub fn final_drain<S: Sink>(&mut self, p: &mut Pipeline<S>, stop: String) -> Result<String> {
        self.probes.detach();
        let deadline = Instant::now() + FINAL_DRAIN;
        loop {
            match drain(&mut self.ring, &mut self.probes, &mut self.late, p) {
                Ok(0) => break,
                Ok(_) if Instant::now() >= deadline => {
                    let mut left = 0u64;
                    while self.ring.next().is_some() {
                        left += 1;
                    }
                    p.report.warnings.push(format!("stopped draining after {} s: {left} queued records discarded", FINAL_DRAIN.as_secs()));
                    p.report.undrained = left;
                    break;
                }
                Ok(_) => {}
                Err(e) => return output_stop(e),
            }
        }
        // Both sample maps: the one retired a poll ago, then the one written until now.
        for _ in 0..2 {
            if let Err(e) = self.drain_samples(p) {
                return output_stop(e);
            }
        }
        // Exits read in the final drain still count (no new process is followed now); after
        // the samples, which want their processes' symbols.
        for e in std::mem::take(&mut p.procs) {
            if e.event == proc_event::EXIT {
                self.gone(e.pid, p);
            }
        }
        match self.tracer.unsent_sums() {
            Ok(sums) => {
                let ts = monotonic_ns();
                for (tid, st) in sums {
                    let Some(bytes) = crate::decode::unsent_agg_bytes(tid, &st, ts) else { continue };
                    if let Err(e) = p.push(&bytes, &mut |_, _, _| None) {
                        return output_stop(e);
                    }
                }
            }
            Err(e) => p.report.warnings.push(format!("could not read the kernel's unsent sums of open tasks: {e:#}")),
        }
        Ok(stop)
    }

    /// Phase 4: the kernel's counters and the session's facts into the report, written to
    /// the sinks.
    pub fn report<S: Sink>(self, mut p: Pipeline<S>, stop_reason: String) -> Result<SessionReport> {
        let counters = match self.tracer.counters() {
            Ok(c) => c,
            Err(e) => {
                p.report.warnings.push(format!("could not read the kernel's loss counters: {e:#}"));
                Counters::default()
            }
        };
        let r = &mut p.report;
        use profiler_common::anomaly;
        r.stacks_lost = counters.anomaly(anomaly::STACK_LOST) + p.stacks.missing();
        let full = counters.anomaly(anomaly::THREADS_FULL);
        if full > 0 {
            r.warnings.push(format!("{full} task begins on threads tprof could not track (its kernel thread map is full)"));
        }
        r.missed_switch_ins = counters.anomaly(anomaly::MISSED_SWITCH_IN);
        let forked_full = counters.anomaly(anomaly::FORKED_FULL);
        if forked_full > 0 {
            r.warnings.push(format!("{forked_full} forked children were followed late (the kernel's map of children awaiting adoption was full): their first events may be missing"));
        }
        let exited_full = counters.anomaly(anomaly::EXITED_FULL);
        if exited_full > 0 {
            r.warnings.push(format!("{exited_full} traced processes exited while the kernel's map of exited processes was full: a new process given such a pid within a poll may have been traced"));
        }
        let mismatched = counters.anomaly(anomaly::RUNTIME_MISMATCH);
        if mismatched > 0 {
            r.warnings.push(format!(
                "{mismatched} on-CPU slices were longer than the kernel's own runtime accounting of their thread \
                 (a switch-out and switch-in lost unseen): their tasks are marked incomplete"
            ));
        }
        let unattr_full = counters.anomaly(anomaly::UNATTR_FULL);
        if unattr_full > 0 {
            r.warnings.push(format!(
                "{unattr_full} slices or syscalls outside tasks were not counted (the kernel's per-process map was full): \
                 the not_attributed figures are low"
            ));
        }
        match unattributed::read(&self.tracer.ebpf) {
            Ok(list) => list.into_iter().for_each(|p| r.add_kernel_cpu(p)),
            Err(e) => r.warnings.push(format!("could not read the kernel's per-process CPU outside tasks: {e:#}")),
        }
        r.kernel_drops = counters.drops.iter().enumerate().skip(1).map(|(k, n)| (kind_name(k as u32).to_string(), *n)).collect();
        for (prog, n) in &counters.program_misses {
            r.warnings.push(format!(
                "the kernel skipped {n} runs of tprof's {prog} program (another BPF program was running on that CPU): their events are missing"
            ));
        }
        if let Some(s) = &self.sampler {
            match s.counts() {
                Ok(c) => {
                    r.profile.kernel_samples = c.taken;
                    r.profile.samples_lost = c.map_full;
                    r.profile.sample_stacks_lost = c.ustack_lost + c.kstack_lost + s.stacks_unreadable;
                    if c.map_full > 0 {
                        r.warnings.push(format!("{} on-CPU samples lost: the kernel's sample map was full", c.map_full));
                    }
                    if r.profile.sample_stacks_lost > 0 {
                        r.warnings.push(format!(
                            "{} stacks of on-CPU samples could not be stored or read (their samples count with the stack missing)",
                            r.profile.sample_stacks_lost
                        ));
                    }
                }
                Err(e) => r.warnings.push(format!("could not read the sampler's counters: {e:#}")),
            }
        }
        r.sites = self.probes.sites.len();
        r.processes_attached = self.targets.attached;
        r.processes_followed = self.targets.followed;
        r.processes_gone = self.targets.gone;
        r.probe_links = self.probes.probe_links().to_string();
        r.duration_ns = self.start.elapsed().as_nanos() as u64;
        r.warnings.extend(self.tracer.warnings.iter().cloned());
        r.warnings.extend(self.probes.warnings.iter().cloned());
        if self.late.over_budget > 0 {
            r.warnings.push(format!(
                "{} strings the kernel could not copy were left unread: more than {} per process (or {} in all) in one drain",
                self.late.over_budget,
                late::LATE_PER_PROCESS,
                late::LATE_PER_DRAIN
            ));
        }
        r.stop_reason = stop_reason;
        // Warnings quote what the target chose (probe names, mapped paths, comms) and are
        // printed, written as the session line and kept in recordings: escaped once, here.
        // And bounded: a hostile file's many bad notes or sites are a few lines and a count.
        summarize_warnings(&mut r.warnings);
        match p.finish() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            other => other.context("writing output")?,
        }
        Ok(p.report)
    }
}

/// Warnings listed one by one in the report; the rest are counted in a last line.
const MAX_WARNINGS: usize = 64;

/// Escapes the warnings for the terminal and keeps the first [`MAX_WARNINGS`] of them.
fn summarize_warnings(warnings: &mut Vec<String>) {
    let more = warnings.len().saturating_sub(MAX_WARNINGS);
    warnings.truncate(MAX_WARNINGS);
    for w in warnings.iter_mut() {
        *w = crate::present::escape(w);
    }
    if more > 0 {
        warnings.push(format!("and {more} more warnings (only the first {MAX_WARNINGS} are listed)"));
    }
}

/// Drains what the ring holds (up to MAX_BATCH records). Err only for output errors.
///
/// Late reads: strings the kernel could not copy (a page not yet faulted in) are read again
/// by the privileged helper, `process_vm_readv`, which honours the target's page
/// protections; only the traced pids, at most 128 bytes at a time, batched and within a
/// budget per process ([`late`]).
fn drain<S: Sink>(ring: &mut RingBuf<MapData>, probes: &mut Probes, late: &mut LateReads, p: &mut Pipeline<S>) -> io::Result<usize> {
    let mut n = 0;
    late.start_drain();
    let mut read = |wants: &[crate::decode::LateWant]| probes.read_targets(wants);
    let mut push = |bytes: &[u8], reader: crate::decode::LateReader<'_>| p.push(bytes, reader);
    while n < MAX_BATCH {
        let Some(item) = ring.next() else { break };
        n += 1;
        late.record(&item, &mut read, &mut push)?;
    }
    late.flush(&mut read, &mut push)?;
    p.flush()?;
    Ok(n)
}

/// A closed pipe (`tprof ... | head`) stops the session quietly; other output errors fail.
fn output_stop(e: io::Error) -> Result<String> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok("output closed".to_string())
    } else {
        Err(anyhow::Error::new(e).context("writing output"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_escaped_and_bounded() {
        let mut w: Vec<String> = (0..95_905).map(|i| format!("pid 1: tprof:\u{202E}evil{i} at /x\x1b[2J")).collect();
        summarize_warnings(&mut w);
        assert_eq!(w.len(), MAX_WARNINGS + 1);
        assert_eq!(w[0], "pid 1: tprof:\\u{202e}evil0 at /x\\u{1b}[2J");
        assert_eq!(w[MAX_WARNINGS], format!("and {} more warnings (only the first 64 are listed)", 95_905 - MAX_WARNINGS));
    }
}
