//! `tprof attach`: load, attach, then poll the ring buffer in batches (the programs never
//! wake us per event), decode, correlate and write, until Ctrl-C, SIGTERM, `--duration`,
//! the targets' exit, or a closed output. Everything already captured is written out
//! before stopping, with the losses counted.
//!
//! Privileges: the privileged helper is started first (it creates the uprobes, now and on
//! every rescan: `attach::broker`), the programs are loaded and `/proc/kallsyms` copied,
//! then tprof drops every capability and leaves uid 0 (`attach::drop_privs`) before it
//! attaches anything or reads a single record.

use std::io;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::RingBuf;
use tokio::signal::unix::{signal, SignalKind};

use crate::attach::broker_client::BrokerClient;
use crate::attach::drop_privs::{drop_after_attach, DropOptions};
use crate::attach::{privileges, LoadOptions, Session};
use crate::pipeline::{Pipeline, Stacks};
use crate::record::Recorder;
use crate::clock::monotonic_ns;
use crate::model::report::SessionReport;
use crate::present::kind_name;
use crate::sink::{Filter, Sink};
use crate::stacks::Symbolizer;

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
    pub pids: Vec<u32>,
    pub duration: Option<Duration>,
    pub load: LoadOptions,
    pub filter: Filter,
    /// Blocks at least this long get symbolized stacks.
    pub stack_threshold_ns: u64,
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the last ')' (comm may contain anything).
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|s| s != 'Z' && s != 'X'),
        Err(_) => false,
    }
}

/// Late reads: strings the kernel could not copy (a page not yet faulted in) are read again
/// by the privileged helper, `process_vm_readv`, which honours the target's page
/// protections; only the traced pids, at most 128 bytes at a time.
type LateRead<'a> = dyn FnMut(u32, u64, usize) -> Option<Vec<u8>> + 'a;

/// Drains what the ring holds (up to MAX_BATCH records). Err only for output errors.
fn drain<S: Sink>(p: &mut Pipeline<S>, late: &mut LateRead<'_>, ring: &mut RingBuf<aya::maps::MapData>) -> io::Result<usize> {
    let mut n = 0;
    while n < MAX_BATCH {
        let Some(item) = ring.next() else { break };
        n += 1;
        p.push(&item, &mut |pid, addr, len| late(pid, addr, len))?;
    }
    p.flush()?;
    Ok(n)
}

/// Attaches to `opts.pids` and streams into `sink` (and `recorder`, for `tprof record`)
/// until stopped. Returns the final report (also written to the sink).
pub fn run<S: Sink>(opts: AttachOptions, sink: S, recorder: Option<Recorder>) -> Result<SessionReport> {
    privileges::check()?;
    // Signal handlers first: a Ctrl-C at any point from here on is a clean stop that still
    // reports what was captured (the default action would kill tprof mid-way).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    let _rt_guard = rt.enter();
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut comms = Vec::new();
    for pid in &opts.pids {
        comms.push((*pid, privileges::check_pid(*pid)?));
    }
    // The helper first, while tprof still has every privilege for it to inherit.
    let broker = BrokerClient::spawn(&opts.pids)?;
    let broker_line = broker.privileges.clone();
    let mut session = Session::load(&opts.load)?;
    session.set_broker(broker);
    // What the rest of the session needs and the drop takes away: the kernel's symbols.
    let kallsyms = if opts.load.stacks {
        match crate::stacks::snapshot_kallsyms() {
            Ok(f) => Some(f),
            Err(e) => {
                session.warnings.push(format!("kernel stacks stay unsymbolized: {e:#}"));
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
            eprintln!("tprof: warning: {msg}");
            session.warnings.push(msg);
        }
    }
    log::info!("{broker_line}");
    let mut sites = 0;
    for (pid, comm) in &comms {
        let n = session.attach_pid(*pid)?;
        if n == 0 {
            let why = session.warnings.iter().filter(|w| w.starts_with(&format!("pid {pid}:"))).cloned().collect::<Vec<_>>();
            session.warnings.push(format!(
                "pid {pid} ({comm}) has no tprof probes in its executable or loaded libraries{}: \
                 link the usdt-probes crate (Rust) or include tprof.h (C) and mark requests as tasks",
                if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
            ));
        }
        sites += n;
    }
    if sites == 0 {
        bail!("{}", session.warnings.join("\n"));
    }
    // Readiness line (stderr, so it never mixes with the data on stdout): tests and scripts
    // wait for it before driving the target.
    eprintln!(
        "tprof: attached to {sites} probe sites in {} process{} ({}); Ctrl-C to stop",
        comms.len(),
        if comms.len() == 1 { "" } else { "es" },
        comms.iter().map(|(p, c)| format!("pid {p} {c}")).collect::<Vec<_>>().join(", ")
    );
    let ring = session.ebpf.take_map("EVENTS").ok_or_else(|| anyhow!("eBPF object has no EVENTS ring buffer"))?;
    let mut ring = RingBuf::try_from(ring).context("opening the EVENTS ring buffer")?;
    let start = Instant::now();
    let mut symbolizer = Symbolizer::new(if opts.load.stacks { session.take_stacks() } else { None }, opts.stack_threshold_ns, kallsyms);
    for pid in &opts.pids {
        symbolizer.update_maps(*pid, session.mapped_files(*pid));
    }
    let mut p = Pipeline::new(sink, opts.filter.clone(), Stacks::Live(Box::new(symbolizer)), recorder);
    p.report.pids = opts.pids.clone();
    let stop_reason = rt.block_on(async {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_scan = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = sigint.recv() => return Ok::<_, anyhow::Error>("interrupted (SIGINT)".to_string()),
                _ = sigterm.recv() => return Ok("terminated (SIGTERM)".to_string()),
            }
            if let Err(e) = drain(&mut p, &mut |pid, addr, len| session.read_target(pid, addr, len), &mut ring) {
                return output_stop(e);
            }
            session.flush_ebpf_log();
            if opts.duration.is_some_and(|d| start.elapsed() >= d) {
                return Ok("duration elapsed".to_string());
            }
            if last_scan.elapsed() >= RESCAN {
                last_scan = Instant::now();
                let live: Vec<u32> = opts.pids.iter().copied().filter(|p| alive(*p)).collect();
                if live.is_empty() {
                    return Ok(format!("target{} exited", if opts.pids.len() > 1 { "s" } else { "" }));
                }
                for pid in live {
                    // A library dlopen'ed since the last scan gets its probes attached.
                    match session.attach_pid(pid) {
                        Ok(0) => {}
                        Ok(n) => eprintln!("tprof: attached {n} more probe sites in pid {pid} (new library)"),
                        Err(e) => log::debug!("rescan of pid {pid}: {e:#}"),
                    }
                    if let Stacks::Live(s) = &mut p.stacks {
                        s.update_maps(pid, session.mapped_files(pid));
                    }
                }
            }
        }
    })?;
    // Stop new USDT events first (in parallel: see detach_usdt), then the final drain:
    // whatever the kernel queued before we stopped is still reported. Bounded in time, so
    // a target that floods the scheduler programs cannot keep tprof from stopping; what is
    // left in the ring then is counted, not silently dropped.
    let mut stop_reason = stop_reason;
    session.detach_usdt();
    let deadline = Instant::now() + FINAL_DRAIN;
    loop {
        match drain(&mut p, &mut |pid, addr, len| session.read_target(pid, addr, len), &mut ring) {
            Ok(0) => break,
            Ok(_) if Instant::now() >= deadline => {
                let mut left = 0u64;
                while ring.next().is_some() {
                    left += 1;
                }
                p.report.warnings.push(format!("stopped draining after {} s: {left} queued records discarded", FINAL_DRAIN.as_secs()));
                p.report.undrained = left;
                break;
            }
            Ok(_) => {}
            Err(e) => {
                stop_reason = output_stop(e)?;
                break;
            }
        }
    }
    // Short intervals the kernel summed for tasks still open (sent only when a thread
    // leaves its task): read from its map, so the open tasks' totals include them.
    match session.unsent_sums() {
        Ok(sums) => {
            let ts = monotonic_ns();
            for (tid, st) in sums {
                let Some(bytes) = crate::decode::unsent_agg_bytes(tid, &st, ts) else { continue };
                if let Err(e) = p.push(&bytes, &mut |_, _, _| None) {
                    stop_reason = output_stop(e)?;
                    break;
                }
            }
        }
        Err(e) => p.report.warnings.push(format!("could not read the kernel's unsent sums of open tasks: {e:#}")),
    }
    let drops = session.kernel_drops().unwrap_or_default();
    let anomalies = session.kernel_anomalies().unwrap_or_default();
    p.report.stacks_lost = anomalies.get(profiler_common::anomaly::STACK_LOST as usize).copied().unwrap_or(0) + p.stacks.missing();
    let full = anomalies.get(profiler_common::anomaly::THREADS_FULL as usize).copied().unwrap_or(0);
    if full > 0 {
        p.report.warnings.push(format!("{full} task begins on threads tprof could not track (its kernel thread map is full)"));
    }
    p.report.missed_switch_ins = anomalies.get(profiler_common::anomaly::MISSED_SWITCH_IN as usize).copied().unwrap_or(0);
    p.report.kernel_drops = drops.iter().enumerate().skip(1).map(|(k, n)| (kind_name(k as u32).to_string(), *n)).collect();
    for (prog, n) in session.program_misses() {
        p.report.warnings.push(format!("the kernel skipped {n} runs of tprof's {prog} program (another BPF program was running on that CPU): their events are missing"));
    }
    p.report.sites = session.sites.len();
    p.report.probe_links = session.probe_links().to_string();
    p.report.duration_ns = start.elapsed().as_nanos() as u64;
    p.report.warnings.extend(session.warnings.iter().cloned());
    p.report.stop_reason = stop_reason;
    match p.finish() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.context("writing output")?,
    }
    Ok(p.report)
}

/// A closed pipe (`tprof ... | head`) stops the session quietly; other output errors fail.
fn output_stop(e: io::Error) -> Result<String> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok("output closed".to_string())
    } else {
        Err(anyhow::Error::new(e).context("writing output"))
    }
}
