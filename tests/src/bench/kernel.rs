//! `cargo xtask bench kernel`: what tprof's kernel side (tp_btf programs on sys_enter,
//! sys_exit, sched_switch, sched_waking) costs the traced process, per operation and per
//! tracepoint hit, against baselines measured in the same run:
//!
//! - untraced: the same loop with nothing attached;
//! - bare: `bare-tracer` (tests/src/bin), a hand-assembled tp_btf program on the same four
//!   tracepoints that filters on the process and writes one 64-byte ring-buffer record per
//!   hit (no wakeup; consumed every 20 ms): the floor for "an event recorded", goal tprof
//!   within 1.2x of it;
//! - bpftrace: Debian's bpftrace 0.17 with [`BPFTRACE_SCRIPT`], the same work as tprof's
//!   kernel side without the records (per-thread maps of syscall and off-CPU start times,
//!   durations summed in maps, stacks at blocking switch-outs; nothing emitted per event),
//!   goal at least 3x tprof's cost (bpftrace needs tracefs: mounted for the run if it is not);
//! - tprof, every event (`--detail-threshold 0`): what streaming a record per event costs
//!   over the default, which sums intervals shorter than 100 us in the kernel (the plain
//!   tprof modes run with `--slow-request 0`: each workload is one task lasting seconds,
//!   which the default would stream in full after 10 ms, as it does a slow request);
//! - "other pid" (tprof, bare): the tracer traces another process, the measured one is a
//!   bystander: what a tracer's global tracepoint programs cost everyone else.
//!
//! Workloads (tests/src/bin, pinned to CPU 0, inside a tprof task so that tprof follows
//! every event): `sys-bench` (a loop of raw getppid syscalls: 2 hits, 1 tprof SYSCALL record
//! per syscall) and `switch-bench` (two threads ping-ponging over futexes on one CPU: 2
//! switches, 2 wakeups, 4 syscalls per round trip; once with the main thread as one of the
//! two, once with both on worker threads: tprof's uprobe perf events are bound to the main
//! thread, whose context switches then also switch perf contexts). Tracers run pinned to CPU 1. The run is
//! 5 rounds; each round runs every mode once, in turn, each in a fresh process (a warm-up
//! then one timed loop) under a fresh tracer session, so that drift spreads over all modes;
//! the table shows best / median of the 5 samples. Costs are overheads (traced - untraced,
//! ns per operation); ratios divide overheads.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use super::procs::{pinned, BenchProc, Bins, Stopped, Tracer, TracerKind};
use super::report::{figures_json, header, render_judged, stats, write_json, Goal, Header, InOrder, Judged, JudgedJson, Unit};
use super::util::{have, json_u64};

const REPS: usize = 5;
const RING_MIB: u32 = 256;
const GOAL_VS_BARE: f64 = 1.2;
const GOAL_BPFTRACE_OVER_TPROF: f64 = 3.0;

/// The bpftrace equivalent of tprof's kernel side for one process (`PID` is replaced):
/// syscalls: at entry, the thread's syscall number and start time in per-tid maps; at exit
/// (any thread with a start time), the duration summed per (tid, syscall). Scheduler: at a
/// switch-out of one of its threads, its on-CPU time summed and its off-CPU start and state
/// kept, and if it blocks, its kernel and user stacks (as tprof takes by default); at the
/// switch-in of a thread with an off-CPU start, its off-CPU and run-queue time
/// summed; at a wakeup of such a thread, when and by whom. Nothing is printed per event;
/// the maps are cleared at exit, unprinted (and it exits by itself after 10 minutes, should
/// xtask be killed before it can stop it). Classic tracepoints (bpftrace 0.17 has no
/// tp_btf), filtered on the process like tprof (whose sys_exit and switch-in programs look
/// the thread up in a map, as this script does).
pub(crate) const BPFTRACE_SCRIPT: &str = r#"
tracepoint:raw_syscalls:sys_enter /pid == PID/ { @sys_nr[tid] = args->id; @sys_ts[tid] = nsecs; }
tracepoint:raw_syscalls:sys_exit /@sys_ts[tid]/ {
  @sys_ns[tid, @sys_nr[tid]] = sum(nsecs - @sys_ts[tid]);
  @sys_ts[tid] = 0;
}
tracepoint:sched:sched_switch {
  if (pid == PID) {
    @on_ns[tid] = sum(nsecs - @on_since[tid]);
    @off_since[tid] = nsecs;
    @off_state[tid] = args->prev_state;
    if (args->prev_state != 0) { @kstack[tid] = kstack; @ustack[tid] = ustack; }
  }
  $next = (uint64)args->next_pid;
  if (@off_since[$next]) {
    @off_ns[$next] = sum(nsecs - @off_since[$next]);
    @runq_ns[$next] = sum(nsecs - @runnable_since[$next]);
    @off_since[$next] = 0;
    @on_since[$next] = nsecs;
  }
}
tracepoint:sched:sched_waking /@off_since[(uint64)args->pid]/ {
  @runnable_since[(uint64)args->pid] = nsecs;
  @waker[(uint64)args->pid] = tid;
}
BEGIN { printf("xtask-bench: attached\n"); }
interval:s:600 { exit(); }
END {
  clear(@sys_nr); clear(@sys_ts); clear(@sys_ns); clear(@on_ns); clear(@on_since); clear(@off_since);
  clear(@off_state); clear(@off_ns); clear(@runq_ns); clear(@runnable_since); clear(@waker);
  clear(@kstack); clear(@ustack);
}
"#;

struct Case {
    key: &'static str,
    /// Extra argument of the bench binary after `<iterations> 1`.
    variant: Option<&'static str>,
    label: &'static str,
    unit: &'static str,
    iters_untraced: u64,
    iters_traced: u64,
    /// Tracepoint hits of the process per operation, by construction (the bare tracer's
    /// records per operation measure it).
    nominal_hits: f64,
    hits: &'static str,
    modes: &'static [Mode],
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Untraced,
    Bare,
    Tprof,
    /// tprof with `--detail-threshold 0`: every event streamed as its own record, none
    /// summed in the kernel.
    TprofStream,
    /// tprof attached to another process: what its global tracepoint programs cost a
    /// process it does not trace.
    TprofOther,
    /// The bare tracer attached to another process: the floor of that.
    BareOther,
    Bpftrace,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Bare => "bare",
            Mode::Tprof => "tprof",
            Mode::TprofStream => "tprof_stream",
            Mode::TprofOther => "tprof_other_pid",
            Mode::BareOther => "bare_other_pid",
            Mode::Bpftrace => "bpftrace",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Bare => "bare tp_btf+rec",
            Mode::Tprof => "tprof",
            Mode::TprofStream => "tprof, every event",
            Mode::TprofOther => "tprof, other pid",
            Mode::BareOther => "bare, other pid",
            Mode::Bpftrace => "bpftrace",
        }
    }
}

const ALL_MODES: &[Mode] =
    &[Mode::Untraced, Mode::Bare, Mode::Tprof, Mode::TprofStream, Mode::Bpftrace, Mode::BareOther, Mode::TprofOther];

const CASES: &[Case] = &[
    Case {
        key: "syscall",
        variant: None,
        label: "getppid syscall",
        unit: "syscall",
        iters_untraced: 1_000_000,
        iters_traced: 200_000,
        nominal_hits: 2.0,
        hits: "sys_enter + sys_exit",
        modes: &[Mode::Untraced, Mode::Bare, Mode::Tprof, Mode::TprofStream, Mode::Bpftrace, Mode::BareOther, Mode::TprofOther],
    },
    Case {
        key: "switch",
        variant: None,
        label: "futex round trip, 1 CPU",
        unit: "round trip",
        iters_untraced: 40_000,
        iters_traced: 20_000,
        nominal_hits: 12.0,
        hits: "at most 2 sched_switch + 2 sched_waking + 4 sys_enter + 4 sys_exit; fewer when the woken \
               thread runs before its waker waits, which then finds its word posted and skips futex_wait",
        modes: ALL_MODES,
    },
    // tprof's uprobes are perf events bound to the target's main thread, which then pays
    // for switching perf contexts at each of its context switches; above, the main thread
    // is one of the two ping-pong threads. Here both are workers and main waits in join.
    Case {
        key: "switch_w",
        variant: Some("workers"),
        label: "futex round trip, worker threads",
        unit: "round trip",
        iters_untraced: 40_000,
        iters_traced: 20_000,
        nominal_hits: 12.0,
        hits: "as above",
        modes: &[Mode::Untraced, Mode::Bare, Mode::Tprof, Mode::TprofStream],
    },
];

/// The runs of one case, by mode.
type CaseRuns<'a> = (&'a Case, Vec<(Mode, Run)>);

/// One mode of one case over the rounds: a sample per round.
#[derive(Default)]
struct Run {
    samples: Vec<f64>,
    /// Operations of all its processes (warm-ups included: the tracer saw them too).
    ops: u64,
    /// Sums over its tracer sessions (tprof, bare-tracer).
    records: Option<u64>,
    /// Kernel events tprof followed (streamed or summed in the kernel; tprof only).
    events: Option<u64>,
    drops: Option<u64>,
    errors: Vec<String>,
}

impl Run {
    fn session_u64(&self, key: &str) -> Option<u64> {
        match key {
            "records" => self.records,
            "events" => self.events,
            "kernel_drops_total" => self.drops,
            _ => None,
        }
    }

    fn ok(&self) -> bool {
        !self.samples.is_empty()
    }
}

fn exe<'a>(bins: &'a Bins, case: &Case) -> &'a Path {
    if case.key == "syscall" {
        &bins.sys_bench
    } else {
        &bins.switch_bench
    }
}

/// tracefs is where bpftrace finds tracepoints; mounted for the run if it is not (and
/// unmounted after).
struct TracefsMount(bool);

impl TracefsMount {
    fn ensure(notes: &mut Vec<String>) -> TracefsMount {
        if Path::new("/sys/kernel/tracing/events").exists() {
            return TracefsMount(false);
        }
        let ok = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            notes.push("tracefs was not mounted: mounted on /sys/kernel/tracing for bpftrace, unmounted after".into());
        } else {
            notes.push("tracefs is not mounted and mounting it failed: bpftrace cannot find tracepoints".into());
        }
        TracefsMount(ok)
    }
}

impl Drop for TracefsMount {
    fn drop(&mut self) {
        if self.0 {
            let _ = Command::new("umount").arg("/sys/kernel/tracing").status();
        }
    }
}

fn start_tracer(bins: &Bins, mode: Mode, pid: u32) -> Result<Option<Tracer>> {
    let cpu = bins.tracer_cpu();
    let p = pid.to_string();
    let t = match mode {
        Mode::Untraced => return Ok(None),
        Mode::Tprof | Mode::TprofStream | Mode::TprofOther => {
            let mut c = pinned(&bins.tprof, cpu);
            c.args(["attach", "--pid", &p, "--summary-only", "--format", "json", "--min-latency", "3600s"]);
            c.args(["--duration", "300s", "--ring-size", &RING_MIB.to_string()]);
            if mode == Mode::TprofStream {
                c.args(["--detail-threshold", "0"]);
            } else {
                // Each workload is one task lasting seconds, which --slow-request (10 ms)
                // would stream in full after its first 10 ms, as it does a slow request:
                // off, so that this mode measures the summed path fast requests take.
                c.args(["--slow-request", "0"]);
            }
            Tracer::start(TracerKind::Tprof, c, "tprof")?
        }
        Mode::Bare | Mode::BareOther => {
            let mut c = pinned(&bins.bare_tracer, cpu);
            c.args(["--pid", &p, "--ring-mib", &RING_MIB.to_string()]);
            Tracer::start(TracerKind::Bare, c, "bare-tracer")?
        }
        Mode::Bpftrace => {
            let mut c = pinned(Path::new("bpftrace"), cpu);
            c.args(["-B", "none", "-e", &BPFTRACE_SCRIPT.replace("PID", &p)]);
            Tracer::start(TracerKind::Bpftrace, c, "bpftrace")?
        }
    };
    Ok(Some(t))
}

/// One process of `case` under `mode`: a warm-up and one timed loop. Returns ns per
/// operation, the operations run, and what the tracer left.
fn run_one(bins: &Bins, case: &Case, mode: Mode) -> Result<(f64, u64, Option<Stopped>)> {
    let iters = if mode == Mode::Untraced { case.iters_untraced } else { case.iters_traced };
    let exe = exe(bins, case);
    let mut cmd = Command::new(exe);
    cmd.args([iters.to_string(), "1".to_string()]);
    cmd.args(case.variant);
    let who = format!("{} {}", exe.file_name().and_then(|n| n.to_str()).unwrap_or("bench"), mode.name());
    let mut bench = BenchProc::spawn(cmd, &who)?;
    // For the "other pid" modes, the tracer traces an idle copy (waiting for a go line it
    // never gets) and the measured process is a bystander.
    let other = match mode {
        Mode::TprofOther | Mode::BareOther => {
            let mut c = Command::new(&bins.sys_bench);
            c.args(["1", "1"]);
            Some(BenchProc::spawn(c, "sys-bench (idle, traced instead)")?)
        }
        _ => None,
    };
    let tracer = start_tracer(bins, mode, other.as_ref().map(|o| o.pid).unwrap_or(bench.pid))?;
    bench.go()?;
    let line = bench.expect("ns_per_iter", Duration::from_secs(240))?;
    let samples = super::procs::parse_samples(&line, &who)?;
    bench.finish();
    let stopped = tracer.map(|t| t.stop(Duration::from_secs(120)));
    drop(other);
    let [sample] = samples[..] else { bail!("{who}: expected one sample, got {line:?}") };
    Ok((sample, iters + (iters / 10).max(1), stopped))
}

pub fn run(bins: &Bins, root_ok: bool) -> Result<Vec<Judged>> {
    let started = Instant::now();
    let mut notes = Vec::new();
    super::preamble(&mut notes, bins);
    let bpftrace_ok = have("bpftrace");
    if !root_ok {
        notes.push("not root: only the untraced runs ran (tprof, bpftrace and the bare tracer need root)".into());
    } else if !bpftrace_ok {
        notes.push("bpftrace not found: no bpftrace column (cargo xtask setup installs it)".into());
    }
    let _tracefs = (root_ok && bpftrace_ok).then(|| TracefsMount::ensure(&mut notes));
    let mut results: Vec<CaseRuns> = CASES
        .iter()
        .map(|case| {
            let modes = case
                .modes
                .iter()
                .filter(|m| (**m == Mode::Untraced || root_ok) && (**m != Mode::Bpftrace || bpftrace_ok))
                .map(|m| (*m, Run::default()))
                .collect();
            (case, modes)
        })
        .collect();
    // Rounds: every mode once per round, each in a fresh process (and tracer session), so
    // that whatever drifts during the run spreads over all modes alike.
    for round in 0..REPS {
        for (case, runs) in results.iter_mut() {
            eprint!("bench kernel: round {}/{REPS} {:<24}", round + 1, case.label);
            for (mode, run) in runs.iter_mut() {
                match run_one(bins, case, *mode) {
                    Ok((ns, ops, stopped)) => {
                        eprint!(" {} {ns:.0}", mode.name());
                        run.samples.push(ns);
                        run.ops += ops;
                        if let Some(st) = stopped {
                            if let Some(s) = &st.session {
                                let add = |acc: &mut Option<u64>, key| {
                                    if let Some(v) = json_u64(s, key) {
                                        *acc = Some(acc.unwrap_or(0) + v);
                                    }
                                };
                                add(&mut run.records, "records");
                                add(&mut run.events, "events");
                                add(&mut run.drops, "kernel_drops_total");
                            }
                            if let Some(e) = st.error {
                                run.errors.push(format!("round {}: {e}", round + 1));
                            }
                        }
                    }
                    Err(e) => {
                        eprint!(" {} FAILED", mode.name());
                        run.errors.push(format!("round {}: {e:#}", round + 1));
                    }
                }
            }
            eprintln!(" ns/{}", case.unit);
        }
    }
    let figures = derive(&results, &mut notes);
    let table = render(&results, &figures, &notes);
    println!("{table}");
    let json = to_json(bins, &results, &figures, &notes, started.elapsed());
    let path = write_json("kernel", &json)?;
    println!("raw samples and figures: {} ({:.0} s)", path.display(), started.elapsed().as_secs_f64());
    let failed: Vec<String> = results
        .iter()
        .flat_map(|(c, runs)| {
            runs.iter().filter(|(_, r)| !r.ok()).map(move |(m, _)| format!("{} ({})", c.key, m.name()))
        })
        .collect();
    if !failed.is_empty() {
        bail!("some runs failed: {}", failed.join(", "));
    }
    Ok(figures)
}

fn get(runs: &[(Mode, Run)], mode: Mode) -> Option<&Run> {
    runs.iter().find(|(m, _)| *m == mode).map(|(_, r)| r).filter(|r| r.ok())
}

/// (best, median) overhead per operation of `mode` over the untraced run.
fn overhead(runs: &[(Mode, Run)], mode: Mode) -> Option<(f64, f64)> {
    let (u, t) = (get(runs, Mode::Untraced)?, get(runs, mode)?);
    let ((ub, um, _), (tb, tm, _)) = (stats(&u.samples), stats(&t.samples));
    Some((tb - ub, tm - um))
}

/// Tracepoint hits per operation: measured by the bare tracer (one record per hit) when it
/// ran, else the nominal count.
fn hits(case: &Case, runs: &[(Mode, Run)]) -> (f64, bool) {
    match get(runs, Mode::Bare).and_then(|r| Some(r.session_u64("records")? as f64 / r.ops as f64)) {
        Some(h) if h > 0.0 => (h, true),
        _ => (case.nominal_hits, false),
    }
}

fn derive(results: &[CaseRuns], notes: &mut Vec<String>) -> Vec<Judged> {
    let mut figs = Vec::new();
    for (case, runs) in results {
        let (h, _) = hits(case, runs);
        for (mode, r) in runs {
            for e in &r.errors {
                notes.push(format!("{} ({}): {e}", case.label, mode.label()));
            }
            if !r.ok() {
                continue;
            }
            if matches!(mode, Mode::Tprof | Mode::TprofStream | Mode::Bare) {
                // What tprof followed: kernel events, streamed or summed (the bare tracer's
                // records are its events).
                let recs = r.session_u64("events").or_else(|| r.session_u64("records"));
                let drops = r.session_u64("kernel_drops_total").unwrap_or(0);
                if drops > 0 {
                    notes.push(format!(
                        "{} ({}): {drops} records dropped (ring full): part of its figure is the drop path",
                        case.label,
                        mode.label()
                    ));
                }
                if matches!(mode, Mode::Tprof | Mode::TprofStream)
                    && recs.is_some_and(|n| (n as f64) < 0.9 * r.ops as f64)
                {
                    notes.push(format!(
                        "{} ({}): only {} events for {} operations: tprof did not follow the loop",
                        case.label,
                        mode.label(),
                        recs.unwrap_or(0),
                        r.ops
                    ));
                }
            }
        }
        let name = |what: &str| format!("{}: {what}", case.label);
        let (tprof, bare, bpf) =
            (overhead(runs, Mode::Tprof), overhead(runs, Mode::Bare), overhead(runs, Mode::Bpftrace));
        if let (Some(t), Some(b)) = (tprof, bare) {
            figs.push(Judged {
                name: name("tprof / bare tp_btf+record"),
                unit: Unit::Ratio,
                best: t.0 / b.0,
                median: t.1 / b.1,
                goal: Some(Goal::AtMost(GOAL_VS_BARE)),
                caveat: None,
                detail: format!(
                    "overhead per {} (median): tprof {:.0} ns, bare {:.0} ns; per hit ({h:.1}/{}): {:.0} vs {:.0} ns",
                    case.unit,
                    t.1,
                    b.1,
                    case.unit,
                    t.1 / h,
                    b.1 / h
                ),
            });
        }
        if let (Some(t), Some(b)) = (tprof, bpf) {
            figs.push(Judged {
                name: name("bpftrace / tprof"),
                unit: Unit::Ratio,
                best: b.0 / t.0,
                median: b.1 / t.1,
                goal: Some(Goal::AtLeast(GOAL_BPFTRACE_OVER_TPROF)),
                caveat: None,
                detail: format!(
                    "overhead per {} (median): bpftrace {:.0} ns, tprof {:.0} ns; per hit: {:.0} vs {:.0} ns",
                    case.unit,
                    b.1,
                    t.1,
                    b.1 / h,
                    t.1 / h
                ),
            });
        }
        if let (Some(n), Some(b)) = (overhead(runs, Mode::TprofStream), bare) {
            figs.push(Judged {
                name: name("tprof, every event / bare"),
                unit: Unit::Ratio,
                best: n.0 / b.0,
                median: n.1 / b.1,
                goal: None,
                caveat: None,
                detail: format!(
                    "--detail-threshold 0 (a record per event, nothing summed): {:.0} ns per {} (median), {:+.0} ns vs the default",
                    n.1,
                    case.unit,
                    n.1 - tprof.map_or(n.1, |t| t.1)
                ),
            });
        }
        if let (Some(t), Some(b)) = (overhead(runs, Mode::TprofOther), overhead(runs, Mode::BareOther)) {
            figs.push(Judged {
                name: name("not traced: tprof / bare, other pid"),
                unit: Unit::Ratio,
                best: t.0 / b.0,
                median: t.1 / b.1,
                goal: None,
                caveat: None,
                detail: format!(
                    "a process neither traces pays, per {} (median): tprof {:.0} ns, bare {:.0} ns (tp_btf programs run for \
                     every process: the kernel's tracepoint path, then tprof's THREADS lookup, the bare pid compare)",
                    case.unit, t.1, b.1
                ),
            });
        }
        for (mode, ns) in [(Mode::Bare, bare), (Mode::Tprof, tprof), (Mode::Bpftrace, bpf)] {
            if let Some((b, m)) = ns {
                figs.push(Judged {
                    name: name(&format!("{} ns per hit", mode.label())),
                    unit: Unit::Ns,
                    best: b / h,
                    median: m / h,
                    goal: None,
                    caveat: None,
                    detail: String::new(),
                });
            }
        }
    }
    figs
}

fn cell(r: Option<&Run>) -> String {
    match r {
        None => "-".into(),
        Some(r) if !r.ok() => "FAILED".into(),
        Some(r) => {
            let (b, m, _) = stats(&r.samples);
            format!("{b:.0} / {m:.0}")
        }
    }
}

fn render(results: &[CaseRuns], figures: &[Judged], notes: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nkernel-side cost: ns per operation, best / median of {REPS} rounds (benchmark on CPU 0, tracer on CPU 1)"
    );
    for case in results.iter().map(|(c, _)| c) {
        let _ = writeln!(s, "  {:<8} {} (ns per {})", case.key, case.label, case.unit);
    }
    let _ = writeln!(
        s,
        "  modes: bare = tp_btf + 64 B ring record per hit; \"other pid\" = the tracer traces another process"
    );
    let _ = write!(s, "{:<10}", "case");
    for m in ALL_MODES {
        let _ = write!(s, " {:>17}", m.label());
    }
    s.push('\n');
    for (case, runs) in results {
        let _ = write!(s, "{:<10}", case.key);
        for m in ALL_MODES {
            let _ = write!(s, " {:>17}", cell(runs.iter().find(|(mm, _)| mm == m).map(|(_, r)| r)));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\noverhead over untraced, ns per operation (best / median), and per tracepoint hit (median)");
    for (case, runs) in results {
        let (h, measured) = hits(case, runs);
        let _ = write!(s, "{:<10}", case.key);
        for m in ALL_MODES {
            let c = match (m, overhead(runs, *m)) {
                (Mode::Untraced, _) => "-".to_string(),
                (_, Some((b, md))) => format!("{b:.0} / {md:.0} ({:.0})", md / h),
                _ => "-".into(),
            };
            let _ = write!(s, " {c:>17}");
        }
        let _ = writeln!(
            s,
            "\n{:<10} hits per {}: {h:.2} ({}; {})",
            "",
            case.unit,
            case.hits,
            if measured { "counted by the bare tracer" } else { "nominal" }
        );
        let per_op = |m: Mode, k: &str| get(runs, m).and_then(|r| Some(r.session_u64(k)? as f64 / r.ops as f64));
        for (m, what) in [(Mode::Tprof, "tprof"), (Mode::TprofStream, "tprof, every event")] {
            if let (Some(rec), Some(ev)) = (per_op(m, "records"), per_op(m, "events")) {
                let _ = writeln!(s, "{:<10} {what}: records per {}: {rec:.2}, kernel events followed: {ev:.2}", "", case.unit);
            }
        }
    }
    render_judged(&mut s, "kernel-side goals: ratios of overheads per operation", figures);
    // The floors measured on this kind of machine, for plausibility (another run, another day).
    let bare_hit: Vec<String> = results
        .iter()
        .filter_map(|(c, runs)| {
            overhead(runs, Mode::Bare).map(|(_, m)| format!("{} {:.0} ns", c.key, m / hits(c, runs).0))
        })
        .collect();
    if !bare_hit.is_empty() {
        let _ = writeln!(
            s,
            "\ncross-run reference (docs/performance.md, not this run): tp_btf + 64 B record 130-200 ns per event, \
             bpftrace realistic actions ~700 ns; this run's bare tp_btf+record per hit: {}",
            bare_hit.join(", ")
        );
    }
    for (case, runs) in results {
        for (m, r) in runs {
            if !r.ok() {
                let _ = writeln!(s, "\nFAILED {} ({}): {}", case.label, m.label(), r.errors.join("; "));
            }
        }
    }
    if !notes.is_empty() {
        s.push('\n');
        for n in notes {
            let _ = writeln!(s, "note: {n}");
        }
    }
    s
}

/// `target/bench/kernel.json`.
#[derive(Serialize)]
struct KernelJson<'a> {
    #[serde(flatten)]
    header: Header,
    method: KernelMethod,
    goals: KernelGoals,
    cases: Vec<CaseJson<'a>>,
    figures: Vec<JudgedJson<'a>>,
    notes: &'a [String],
}

#[derive(Serialize)]
struct KernelMethod {
    reps: usize,
    unit: &'static str,
    bench_cpu: u32,
    tracer_cpu: u32,
    ring_mib: u64,
    judged_on: &'static str,
    overhead: &'static str,
    bpftrace_script: &'static str,
}

#[derive(Serialize)]
struct KernelGoals {
    tprof_over_bare_max: f64,
    bpftrace_over_tprof_min: f64,
}

#[derive(Serialize)]
struct CaseJson<'a> {
    case: &'static str,
    label: &'static str,
    unit: &'static str,
    hits_per_op_nominal: f64,
    hits: &'static str,
    /// By mode name, in the order they ran.
    runs: InOrder<&'static str, RunJson<'a>>,
}

#[derive(Serialize)]
struct RunJson<'a> {
    samples: &'a [f64],
    best: f64,
    median: f64,
    max: f64,
    operations: u64,
    records: Option<u64>,
    events: Option<u64>,
    kernel_drops_total: Option<u64>,
    errors: &'a [String],
}

fn to_json<'a>(bins: &Bins, results: &'a [CaseRuns], figures: &'a [Judged], notes: &'a [String], elapsed: Duration) -> KernelJson<'a> {
    let cases = results
        .iter()
        .map(|(case, runs)| {
            let runs = runs
                .iter()
                .map(|(m, r)| {
                    let (best, median, max) = stats(&r.samples);
                    let run = RunJson {
                        samples: &r.samples,
                        best,
                        median,
                        max,
                        operations: r.ops,
                        records: r.records,
                        events: r.events,
                        kernel_drops_total: r.drops,
                        errors: &r.errors,
                    };
                    (m.name(), run)
                })
                .collect();
            CaseJson {
                case: case.key,
                label: case.label,
                unit: case.unit,
                hits_per_op_nominal: case.nominal_hits,
                hits: case.hits,
                runs: InOrder(runs),
            }
        })
        .collect();
    KernelJson {
        header: header("kernel", &bins.tprof, elapsed),
        method: KernelMethod {
            reps: REPS,
            unit: "ns per operation",
            bench_cpu: 0,
            tracer_cpu: 1,
            ring_mib: RING_MIB as u64,
            judged_on: "median",
            overhead: "traced - untraced, ns per operation; ratios divide overheads",
            bpftrace_script: BPFTRACE_SCRIPT.trim(),
        },
        goals: KernelGoals { tprof_over_bare_max: GOAL_VS_BARE, bpftrace_over_tprof_min: GOAL_BPFTRACE_OVER_TPROF },
        cases,
        figures: figures_json(figures),
        notes,
    }
}
