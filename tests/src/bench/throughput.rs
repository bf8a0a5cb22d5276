//! `cargo xtask bench throughput`: the highest record rate tprof takes with zero drops, and
//! what happens past it; `cargo xtask bench soak`: tprof's memory over a long run.
//!
//! Producers are `flood-bench` processes (tests/src/bin): tasks back to back, each with 50
//! units of work, paced to a given rate of records tprof receives. One producer thread tops
//! out near 2 M records/s here (a traced getppid is ~0.5 us), so each step runs two producers
//! at half the rate each, one on CPU 0 and one on CPU 1, which they share with tprof (the
//! machine has 2 CPUs): tprof competes for its CPU as it would on a loaded host. Steps of
//! 2 s at 250 k, 500 k, 1 M, 2 M and 4 M records/s, each a fresh tprof session (ring 64 MiB,
//! `--summary-only --format json`), in two modes: `syscall` (a getppid per unit: one SYSCALL
//! record, the cheapest event to produce) and `region` (region_begin + region_end per unit:
//! USDT probes with a name). A mode stops stepping once offering more no longer gets more
//! (the producers' ceiling). Per step: the rate achieved (records the producers caused per second),
//! tprof's delivered and dropped records (its `session` line), its CPU per record (utime +
//! stime from /proc/PID/stat over the step; best / median over 500 ms windows, from the
//! threads' schedstat run time, whose ns resolution such short windows need, or from
//! utime + stime without schedstats) and its peak RSS (VmHWM).
//!
//! Past it: the ring only overflows when tprof falls behind, and the producers here cannot
//! outrun it, so the overload step stops tprof (SIGSTOP) for 2 s of a 3.5 s unpaced flood:
//! the ring fills, the kernel counts the drops, and tprof, continued, must report
//! delivered + dropped = caused, with its memory where it was.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use super::procs::{peak_hwm_kib, pinned, proc_sample, BenchProc, Bins, ProcSample, Tracer, TracerKind};
use super::report::{figures_json, fmt_rate, header, render_judged, stats, write_json, Goal, Header, Judged, JudgedJson, Unit};
use super::util::json_u64;
use crate::child::signal;

const STEPS: &[u64] = &[250_000, 500_000, 1_000_000, 2_000_000, 4_000_000];
const STEP_SECONDS: f64 = 2.0;
const RING_MIB: u32 = 64;
const UNITS_PER_TASK: u64 = 50;
const PRODUCER_CPUS: &[u32] = &[0, 1];
/// Achieved below this share of the offered rate: the producers are the limit.
const PRODUCER_BOUND: f64 = 0.9;
const WINDOW: Duration = Duration::from_millis(500);
const GOAL_RATE: f64 = 2_000_000.0;
const GOAL_CPU_NS: f64 = 50.0;
const GOAL_SOAK_GROWTH_PCT: f64 = 5.0;
const OVERLOAD_SECONDS: f64 = 3.5;
const OVERLOAD_STOP_AT: Duration = Duration::from_millis(500);
const OVERLOAD_STOP_FOR: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Step {
    mode: &'static str,
    /// Records per second asked of the producers in total (0: unpaced).
    offered: u64,
    overload: bool,
    /// Records the producers caused, and the longest producer's run time.
    emitted: u64,
    tasks: u64,
    elapsed_ns: u64,
    delivered: Option<u64>,
    drops: Option<u64>,
    /// tprof CPU over the whole flood (stat ticks), and schedstat run time when available.
    cpu_ns: u64,
    run_ns: Option<u64>,
    /// ns of tprof CPU per record, per window inside the flood.
    windows: Vec<f64>,
    hwm_kib: u64,
    rss_kib: u64,
    anon_kib: u64,
    error: Option<String>,
}

impl Step {
    fn achieved(&self) -> f64 {
        self.emitted as f64 / (self.elapsed_ns.max(1) as f64 / 1e9)
    }

    fn producer_bound(&self) -> bool {
        self.offered == 0 || self.achieved() < PRODUCER_BOUND * self.offered as f64
    }

    fn ns_per_record(&self) -> f64 {
        match self.delivered {
            Some(d) if d > 0 => self.cpu_ns as f64 / d as f64,
            _ => f64::NAN,
        }
    }

    fn clean(&self) -> bool {
        self.error.is_none() && self.drops == Some(0) && self.delivered.is_some()
    }
}

/// Runs producers of `mode` at `offered` records/s in total for `seconds`, traced by one
/// tprof; `stop_tprof`: SIGSTOP tprof at that point for that long.
fn run_step(
    bins: &Bins,
    mode: &'static str,
    offered: u64,
    seconds: f64,
    cpus: &[u32],
    stop_tprof: Option<(Duration, Duration)>,
) -> Result<Step> {
    let mut producers = Vec::new();
    let per = offered / cpus.len() as u64;
    for cpu in cpus {
        let mut c = Command::new(&bins.flood_bench);
        let cpu_arg = if bins.pin { cpu.to_string() } else { "0".into() };
        c.args([mode.to_string(), per.to_string(), seconds.to_string(), UNITS_PER_TASK.to_string(), cpu_arg]);
        producers.push(BenchProc::spawn(c, &format!("flood-bench {mode} on cpu {cpu}"))?);
    }
    let mut c = pinned(&bins.tprof, bins.tracer_cpu());
    c.arg("attach");
    for p in &producers {
        c.args(["--pid", &p.pid.to_string()]);
    }
    c.args(["--summary-only", "--format", "json", "--min-latency", "3600s", "--duration", "600s"]);
    c.args(["--ring-size", &RING_MIB.to_string()]);
    // Every event its own record: this bench measures the record pipeline (the default sums
    // short intervals in the kernel, which sends far fewer records).
    c.args(["--detail-threshold", "0"]);
    let tracer = Tracer::start(TracerKind::Tprof, c, "tprof")?;
    let before = proc_sample(tracer.pid).ok_or_else(|| anyhow!("tprof exited"))?;
    for p in producers.iter_mut() {
        p.go()?;
    }
    if let Some((at, len)) = stop_tprof {
        std::thread::sleep(at);
        let _ = signal(tracer.pid, libc::SIGSTOP);
        std::thread::sleep(len);
        let _ = signal(tracer.pid, libc::SIGCONT);
    }
    let mut step = Step { mode, offered, overload: stop_tprof.is_some(), ..Default::default() };
    let budget = Duration::from_secs_f64(seconds + 60.0);
    let mut dones = Vec::new();
    for p in producers.iter_mut() {
        dones.push(p.expect("done ", budget));
    }
    let after = proc_sample(tracer.pid);
    let samples = tracer.samples();
    let stopped = tracer.stop(Duration::from_secs(60));
    for p in producers {
        p.finish();
    }
    for d in dones {
        let d = d?;
        step.emitted += super::procs::kv_u64(&d, "records").unwrap_or(0);
        step.tasks += super::procs::kv_u64(&d, "tasks").unwrap_or(0);
        step.elapsed_ns = step.elapsed_ns.max(super::procs::kv_u64(&d, "elapsed_ns").unwrap_or(0));
    }
    if let Some(a) = after {
        step.cpu_ns = a.cpu_ns.saturating_sub(before.cpu_ns);
        step.run_ns = a.run_ns.zip(before.run_ns).map(|(a, b)| a.saturating_sub(b));
    }
    step.hwm_kib = peak_hwm_kib(&stopped.samples);
    if let Some(last) = stopped.samples.last() {
        step.rss_kib = last.rss_kib;
        step.anon_kib = last.anon_kib;
    }
    if let Some(s) = &stopped.session {
        step.delivered = json_u64(s, "records");
        step.drops = json_u64(s, "kernel_drops_total");
    }
    step.error = stopped.error;
    // Per-window CPU per record: records per window from the (paced, steady) achieved rate.
    if !step.overload {
        let rate = step.achieved();
        let start = before.at;
        let end = start + Duration::from_nanos(step.elapsed_ns);
        let inside: Vec<&ProcSample> = samples.iter().filter(|s| s.at >= start && s.at <= end).collect();
        let mut i = 0;
        while i < inside.len() {
            let a = inside[i];
            let Some(j) = (i + 1..inside.len()).find(|&j| inside[j].at.duration_since(a.at) >= WINDOW) else { break };
            let b = inside[j];
            let secs = b.at.duration_since(a.at).as_secs_f64();
            let cpu = match (a.run_ns, b.run_ns) {
                (Some(x), Some(y)) => y.saturating_sub(x),
                _ => b.cpu_ns.saturating_sub(a.cpu_ns),
            };
            step.windows.push(cpu as f64 / (rate * secs));
            i = j;
        }
    }
    Ok(step)
}

fn say(step: &Step) {
    eprintln!(
        " achieved {:>10}  delivered {:>9}  dropped {:>8}  tprof {:>5.0} ns/record  VmHWM {:>4} MiB",
        fmt_rate(step.achieved()),
        step.delivered.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
        step.drops.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
        step.ns_per_record(),
        step.hwm_kib / 1024
    );
}

pub fn run(bins: &Bins, root_ok: bool) -> Result<Vec<Judged>> {
    let started = Instant::now();
    if !root_ok {
        println!(
            "\nthroughput: skipped, every step attaches tprof and needs root (sudo -E cargo xtask bench throughput)"
        );
        return Ok(Vec::new());
    }
    let mut notes = Vec::new();
    super::preamble(&mut notes, bins);
    let cpus: &[u32] = if bins.pin { PRODUCER_CPUS } else { &[0] };
    let mut steps: Vec<Step> = Vec::new();
    let mut errors = Vec::new();
    for mode in ["syscall", "region"] {
        let mut last_achieved = 0.0;
        for &rate in STEPS {
            eprint!("bench throughput: {mode:<8} offered {:>10}", fmt_rate(rate as f64));
            match run_step(bins, mode, rate, STEP_SECONDS, cpus, None) {
                Ok(s) => {
                    say(&s);
                    // The producers' ceiling: offering more no longer gets more.
                    let saturated = s.producer_bound() && s.achieved() < 1.1 * last_achieved;
                    last_achieved = s.achieved();
                    steps.push(s);
                    if saturated {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!(" FAILED: {e:#}");
                    errors.push(format!("{mode} at {}: {e:#}", fmt_rate(rate as f64)));
                    break;
                }
            }
        }
    }
    eprint!("bench throughput: overload  unpaced, tprof stopped {OVERLOAD_STOP_FOR:?}");
    match run_step(bins, "syscall", 0, OVERLOAD_SECONDS, cpus, Some((OVERLOAD_STOP_AT, OVERLOAD_STOP_FOR))) {
        Ok(s) => {
            say(&s);
            steps.push(s);
        }
        Err(e) => {
            eprintln!(" FAILED: {e:#}");
            errors.push(format!("overload: {e:#}"));
        }
    }
    let figures = derive(&steps, &mut notes);
    println!("{}", render(&steps, &figures, &notes, cpus.len()));
    let path = write_json("throughput", &to_json(bins, &steps, &figures, &notes, &errors, started.elapsed()))?;
    println!("raw figures: {} ({:.0} s)", path.display(), started.elapsed().as_secs_f64());
    if !errors.is_empty() {
        bail!("some steps failed: {}", errors.join("; "));
    }
    Ok(figures)
}

fn derive(steps: &[Step], notes: &mut Vec<String>) -> Vec<Judged> {
    let mut figs = Vec::new();
    for s in steps {
        if let Some(e) = &s.error {
            notes.push(format!("{} at {}: {e}", s.mode, fmt_rate(s.offered as f64)));
        }
        if let (Some(d), Some(x)) = (s.delivered, s.drops) {
            let gap = (d + x) as f64 - s.emitted as f64;
            if gap.abs() > 0.01 * s.emitted as f64 {
                notes.push(format!(
                    "{} at {}: delivered + dropped = {} for {} records caused ({:+.2}%)",
                    s.mode,
                    fmt_rate(s.offered as f64),
                    d + x,
                    s.emitted,
                    gap / s.emitted.max(1) as f64 * 100.0
                ));
            }
        }
    }
    let normal: Vec<&Step> = steps.iter().filter(|s| !s.overload).collect();
    let best = normal.iter().filter(|s| s.clean()).max_by(|a, b| a.achieved().total_cmp(&b.achieved()));
    let first_drop =
        normal.iter().filter(|s| s.drops.unwrap_or(0) > 0).min_by(|a, b| a.achieved().total_cmp(&b.achieved()));
    if let Some(b) = best {
        let mut detail = format!("{} mode, {} offered", b.mode, fmt_rate(b.offered as f64));
        // Nothing dropped anywhere and the producers topped out: the rate says what the
        // producers could do, not where tprof starts dropping.
        let caveat = (first_drop.is_none() && normal.iter().any(|s| s.producer_bound()))
            .then(|| "the producers' ceiling on this machine; tprof dropped nothing at any step".to_string());
        match first_drop {
            Some(d) => {
                let _ = write!(
                    detail,
                    "; drops from {} ({} mode: {} of {} records)",
                    fmt_rate(d.achieved()),
                    d.mode,
                    d.drops.unwrap_or(0),
                    d.emitted
                );
            }
            None => {
                let ceiling = normal.iter().map(|s| s.achieved()).fold(0.0, f64::max);
                let _ = write!(
                    detail,
                    "; no step dropped: the producers' ceiling ({} on {} CPUs) was reached first",
                    fmt_rate(ceiling),
                    PRODUCER_CPUS.len()
                );
            }
        }
        figs.push(Judged {
            name: "highest record rate with zero drops".into(),
            unit: Unit::Rate,
            best: b.achieved(),
            median: b.achieved(),
            goal: Some(Goal::AtLeast(GOAL_RATE)),
            caveat,
            detail,
        });
    }
    for mode in ["syscall", "region"] {
        // The busiest clean step of the mode: fixed costs (20 ms polls) weigh least there.
        let Some(s) =
            normal.iter().filter(|s| s.mode == mode && s.clean()).max_by(|a, b| a.achieved().total_cmp(&b.achieved()))
        else {
            continue;
        };
        let (wb, wm, _) = stats(&s.windows);
        let (best, med) = if s.windows.is_empty() { (s.ns_per_record(), s.ns_per_record()) } else { (wb, wm) };
        let sched = s.run_ns.zip(s.delivered).map(|(r, d)| r as f64 / d.max(1) as f64);
        if mode == "syscall" && med.is_finite() && med > 0.0 {
            notes.push(format!(
                "at {med:.0} ns of CPU per record, tprof's consumer alone would take ~{} on a CPU of its own",
                fmt_rate(1e9 / med)
            ));
        }
        figs.push(Judged {
            name: format!("tprof CPU per record ({mode} mode)"),
            unit: Unit::Ns,
            best,
            median: med,
            goal: Some(Goal::AtMost(GOAL_CPU_NS)),
            caveat: None,
            detail: format!(
                "at {}: whole step {:.0} ns{}; {} windows of {} ms",
                fmt_rate(s.achieved()),
                s.ns_per_record(),
                sched.map(|v| format!(" (schedstat {v:.0} ns)")).unwrap_or_default(),
                s.windows.len(),
                WINDOW.as_millis()
            ),
        });
    }
    let hwm: Vec<f64> = normal.iter().filter(|s| s.error.is_none()).map(|s| s.hwm_kib as f64 / 1024.0).collect();
    if !hwm.is_empty() {
        let (lo, md, hi) = stats(&hwm);
        figs.push(Judged {
            name: "tprof peak RSS across steps (VmHWM)".into(),
            unit: Unit::Mib,
            best: lo,
            median: md,
            goal: None,
            caveat: None,
            detail: format!("max {hi:.1} MiB; the {RING_MIB} MiB ring is mapped twice and counts in RSS once read"),
        });
    }
    if let Some(o) = steps.iter().find(|s| s.overload) {
        let delivered = o.delivered.unwrap_or(0);
        let drops = o.drops.unwrap_or(0);
        let accounted = delivered + drops;
        let gap = accounted as i64 - o.emitted as i64;
        let normal_hwm = normal.iter().map(|s| s.hwm_kib).max().unwrap_or(0);
        figs.push(Judged {
            name: "overload: records dropped while tprof was stopped".into(),
            unit: Unit::Percent,
            best: drops as f64 / o.emitted.max(1) as f64 * 100.0,
            median: drops as f64 / o.emitted.max(1) as f64 * 100.0,
            goal: None,
            caveat: None,
            detail: format!(
                "caused {}, delivered {delivered}, dropped {drops}: delivered + dropped - caused = {gap:+} \
                 (scheduler records when a producer shares tprof's CPU); VmHWM {:.1} MiB vs {:.1} MiB at most without drops",
                o.emitted,
                o.hwm_kib as f64 / 1024.0,
                normal_hwm as f64 / 1024.0
            ),
        });
        if drops == 0 {
            notes.push("overload: no drops although tprof was stopped: the ring never filled".into());
        }
        if normal_hwm > 0 && o.hwm_kib as f64 > 1.25 * normal_hwm as f64 {
            notes.push(format!(
                "overload: tprof's peak RSS rose to {:.1} MiB (vs {:.1} MiB): memory not bounded by the ring?",
                o.hwm_kib as f64 / 1024.0,
                normal_hwm as f64 / 1024.0
            ));
        }
    }
    figs
}

fn render(steps: &[Step], figures: &[Judged], notes: &[String], producers: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nthroughput: {producers} flood-bench producer(s) (CPU 0{}), tprof on CPU 1, ring {RING_MIB} MiB, {STEP_SECONDS} s per step",
        if producers > 1 { " and CPU 1" } else { "" }
    );
    let _ = writeln!(
        s,
        "{:<9} {:>10} {:>11} {:>10} {:>10} {:>10} {:>9} {:>18} {:>9} {:>9}",
        "mode", "offered", "achieved", "caused", "delivered", "dropped", "tasks", "tprof ns/record", "VmHWM", "RssAnon"
    );
    for st in steps {
        let offered = if st.overload {
            "overload".to_string()
        } else if st.offered == 0 {
            "unpaced".into()
        } else {
            fmt_rate(st.offered as f64)
        };
        let (wb, wm, _) = stats(&st.windows);
        let per = if st.windows.is_empty() {
            format!("{:.0}", st.ns_per_record())
        } else {
            format!("{:.0} ({wb:.0}/{wm:.0})", st.ns_per_record())
        };
        let _ = writeln!(
            s,
            "{:<9} {:>10} {:>11} {:>10} {:>10} {:>10} {:>9} {:>18} {:>6} MiB {:>5} MiB{}",
            st.mode,
            offered,
            fmt_rate(st.achieved()),
            st.emitted,
            st.delivered.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
            st.drops.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
            st.tasks,
            per,
            st.hwm_kib / 1024,
            st.anon_kib / 1024,
            if !st.overload && st.producer_bound() { "  (producer-bound)" } else { "" }
        );
    }
    let _ = writeln!(s, "tprof ns/record: whole step (best/median of {} ms windows)", WINDOW.as_millis());
    render_judged(&mut s, "throughput goals", figures);
    if !notes.is_empty() {
        s.push('\n');
        for n in notes {
            let _ = writeln!(s, "note: {n}");
        }
    }
    s
}

/// `target/bench/throughput.json`.
#[derive(Serialize)]
struct ThroughputJson<'a> {
    #[serde(flatten)]
    header: Header,
    method: ThroughputMethod,
    goals: ThroughputGoals,
    steps: Vec<StepJson<'a>>,
    figures: Vec<JudgedJson<'a>>,
    errors: &'a [String],
    notes: &'a [String],
}

#[derive(Serialize)]
struct ThroughputMethod {
    steps_per_s: &'static [u64],
    step_seconds: f64,
    producer_cpus: &'static [u32],
    tprof_cpu: u32,
    ring_mib: u32,
    units_per_task: u64,
    cpu: &'static str,
    overload: &'static str,
}

#[derive(Serialize)]
struct ThroughputGoals {
    zero_drop_rate_min: f64,
    tprof_cpu_ns_per_record_max: f64,
}

#[derive(Serialize)]
struct StepJson<'a> {
    mode: &'static str,
    offered_per_s: u64,
    overload: bool,
    achieved_per_s: f64,
    producer_bound: bool,
    records_caused: u64,
    tasks: u64,
    elapsed_ns: u64,
    tprof_records: Option<u64>,
    tprof_kernel_drops_total: Option<u64>,
    tprof_cpu_ns: u64,
    tprof_schedstat_run_ns: Option<u64>,
    tprof_cpu_ns_per_record: f64,
    window_cpu_ns_per_record: &'a [f64],
    tprof_vmhwm_kib: u64,
    tprof_vmrss_kib_last: u64,
    tprof_rssanon_kib_last: u64,
    error: Option<&'a str>,
}

fn step_json(st: &Step) -> StepJson<'_> {
    StepJson {
        mode: st.mode,
        offered_per_s: st.offered,
        overload: st.overload,
        achieved_per_s: st.achieved(),
        producer_bound: !st.overload && st.producer_bound(),
        records_caused: st.emitted,
        tasks: st.tasks,
        elapsed_ns: st.elapsed_ns,
        tprof_records: st.delivered,
        tprof_kernel_drops_total: st.drops,
        tprof_cpu_ns: st.cpu_ns,
        tprof_schedstat_run_ns: st.run_ns,
        tprof_cpu_ns_per_record: st.ns_per_record(),
        window_cpu_ns_per_record: &st.windows,
        tprof_vmhwm_kib: st.hwm_kib,
        tprof_vmrss_kib_last: st.rss_kib,
        tprof_rssanon_kib_last: st.anon_kib,
        error: st.error.as_deref(),
    }
}

fn to_json<'a>(
    bins: &Bins,
    steps: &'a [Step],
    figures: &'a [Judged],
    notes: &'a [String],
    errors: &'a [String],
    elapsed: Duration,
) -> ThroughputJson<'a> {
    ThroughputJson {
        header: header("throughput", &bins.tprof, elapsed),
        method: ThroughputMethod {
            steps_per_s: STEPS,
            step_seconds: STEP_SECONDS,
            producer_cpus: PRODUCER_CPUS,
            tprof_cpu: 1,
            ring_mib: RING_MIB,
            units_per_task: UNITS_PER_TASK,
            cpu: "utime+stime from /proc/PID/stat over the flood, per record delivered",
            overload: "unpaced syscall flood, tprof SIGSTOPped 0.5 s in for 2 s",
        },
        goals: ThroughputGoals { zero_drop_rate_min: GOAL_RATE, tprof_cpu_ns_per_record_max: GOAL_CPU_NS },
        steps: steps.iter().map(step_json).collect(),
        figures: figures_json(figures),
        errors,
        notes,
    }
}

/// `target/bench/soak.json`.
#[derive(Serialize)]
struct SoakJson<'a> {
    #[serde(flatten)]
    header: Header,
    method: SoakMethod,
    achieved_per_s: f64,
    records_caused: u64,
    tprof_records: Option<u64>,
    tprof_kernel_drops_total: Option<u64>,
    tprof_cpu_ns: u64,
    series: Vec<SoakSample>,
    figures: Vec<JudgedJson<'a>>,
    notes: &'a [String],
}

#[derive(Serialize)]
struct SoakMethod {
    minutes: f64,
    offered_per_s: u64,
    mode: &'static str,
    warmup_s: f64,
    ring_mib: u32,
}

#[derive(Serialize)]
struct SoakSample {
    t_s: f64,
    vmrss_kib: u64,
    rssanon_kib: u64,
    vmhwm_kib: u64,
    cpu_ns: u64,
}

// ---- soak -----------------------------------------------------------------------------------

/// `cargo xtask bench soak --minutes N --rate R`: one producer (CPU 0) in `mixed` mode (a log,
/// regions and syscalls in every task) at R records/s for N minutes under one tprof
/// session (CPU 1, ring 64 MiB); tprof's VmRSS and RssAnon every 100 ms. Goal: flat, i.e. at
/// most 5% growth from the end of the warm-up (the first minute, or a tenth of a shorter
/// run) to the end.
pub fn soak(bins: &Bins, root_ok: bool, minutes: f64, rate: u64) -> Result<Vec<Judged>> {
    let started = Instant::now();
    if !root_ok {
        bail!("the soak attaches tprof and needs root (sudo -E cargo xtask bench soak)");
    }
    let mut notes = Vec::new();
    super::preamble(&mut notes, bins);
    let seconds = minutes * 60.0;
    let mut c = Command::new(&bins.flood_bench);
    c.args(["mixed".to_string(), rate.to_string(), seconds.to_string(), "10".into(), "0".into()]);
    let mut producer = BenchProc::spawn(c, "flood-bench mixed")?;
    let mut t = pinned(&bins.tprof, bins.tracer_cpu());
    t.args(["attach", "--pid", &producer.pid.to_string(), "--summary-only", "--format", "json"]);
    // A record per event, as in the throughput steps: the soak loads the record pipeline.
    t.args(["--detail-threshold", "0"]);
    t.args(["--min-latency", "3600s", "--ring-size", &RING_MIB.to_string()]);
    let tracer = Tracer::start(TracerKind::Tprof, t, "tprof")?;
    let before = proc_sample(tracer.pid).ok_or_else(|| anyhow!("tprof exited"))?;
    producer.go()?;
    eprintln!("bench soak: {minutes} min at {} (mixed mode), tprof pid {}", fmt_rate(rate as f64), tracer.pid);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds + 120.0);
    let mut last_say = Instant::now();
    let done = loop {
        match producer.expect("done ", Duration::from_secs(10)) {
            Ok(l) => break Ok(l),
            Err(e) if Instant::now() > deadline => break Err(e),
            Err(_) => {}
        }
        if last_say.elapsed() >= Duration::from_secs(60) {
            last_say = Instant::now();
            if let Some(s) = tracer.samples().last() {
                eprintln!(
                    "bench soak: {:>4.0} s  VmRSS {:.1} MiB  RssAnon {:.1} MiB",
                    s.at.duration_since(before.at).as_secs_f64(),
                    s.rss_kib as f64 / 1024.0,
                    s.anon_kib as f64 / 1024.0
                );
            }
        }
    };
    let after = proc_sample(tracer.pid);
    let end = Instant::now();
    let stopped = tracer.stop(Duration::from_secs(60));
    producer.finish();
    let done = done?;
    let emitted = super::procs::kv_u64(&done, "records").unwrap_or(0);
    let elapsed_ns = super::procs::kv_u64(&done, "elapsed_ns").unwrap_or(1);
    let delivered = stopped.session.as_deref().and_then(|s| json_u64(s, "records"));
    let drops = stopped.session.as_deref().and_then(|s| json_u64(s, "kernel_drops_total"));
    let cpu_ns = after.map(|a| a.cpu_ns.saturating_sub(before.cpu_ns)).unwrap_or(0);
    // While the flood ran (not tprof's final drain and exit).
    let samples: Vec<&ProcSample> = stopped.samples.iter().filter(|s| s.at >= before.at && s.at <= end).collect();
    let warm = Duration::from_secs_f64((seconds / 10.0).clamp(5.0, 60.0));
    let at = |s: &ProcSample| s.at.duration_since(before.at);
    let after_warm: Vec<&&ProcSample> = samples.iter().filter(|s| at(s) >= warm).collect();
    let (Some(first), Some(last)) = (after_warm.first(), after_warm.last()) else {
        bail!("tprof's memory was not sampled after the warm-up ({} samples)", samples.len());
    };
    let growth = |f: fn(&ProcSample) -> u64| (f(last) as f64 / f(first).max(1) as f64 - 1.0) * 100.0;
    let max_after = |f: fn(&ProcSample) -> u64| after_warm.iter().map(|s| f(s)).max().unwrap_or(0);
    let rss_growth = growth(|s| s.rss_kib);
    let anon_growth = growth(|s| s.anon_kib);
    let peak_growth = (max_after(|s| s.rss_kib) as f64 / first.rss_kib.max(1) as f64 - 1.0) * 100.0;
    let mut figs = vec![
        Judged {
            name: "soak: VmRSS growth after warm-up".into(),
            unit: Unit::Percent,
            best: rss_growth,
            median: rss_growth.max(peak_growth),
            goal: Some(Goal::AtMost(GOAL_SOAK_GROWTH_PCT)),
            caveat: None,
            detail: format!(
                "{:.1} MiB at {:.0} s -> {:.1} MiB at the end (judged on the larger of end and peak growth: {peak_growth:+.1}%)",
                first.rss_kib as f64 / 1024.0,
                at(first).as_secs_f64(),
                last.rss_kib as f64 / 1024.0
            ),
        },
        Judged {
            name: "soak: RssAnon growth after warm-up (heap; ring excluded)".into(),
            unit: Unit::Percent,
            best: anon_growth,
            median: anon_growth,
            goal: None,
            caveat: None,
            detail: format!(
                "{:.1} MiB -> {:.1} MiB (max {:.1} MiB)",
                first.anon_kib as f64 / 1024.0,
                last.anon_kib as f64 / 1024.0,
                max_after(|s| s.anon_kib) as f64 / 1024.0
            ),
        },
    ];
    if let Some(d) = delivered.filter(|d| *d > 0) {
        let v = cpu_ns as f64 / d as f64;
        figs.push(Judged {
            name: "soak: tprof CPU per record".into(),
            unit: Unit::Ns,
            best: v,
            median: v,
            goal: Some(Goal::AtMost(GOAL_CPU_NS)),
            caveat: None,
            detail: format!("{d} records, {} dropped", drops.unwrap_or(0)),
        });
    }
    if let Some(e) = &stopped.error {
        notes.push(e.clone());
    }
    let achieved = emitted as f64 / (elapsed_ns as f64 / 1e9);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nsoak: {minutes} min, flood-bench mixed on CPU 0 at {} offered ({} achieved), tprof on CPU 1, ring {RING_MIB} MiB",
        fmt_rate(rate as f64),
        fmt_rate(achieved)
    );
    let _ = writeln!(s, "{:>8} {:>12} {:>12} {:>12}", "t (s)", "VmRSS MiB", "RssAnon MiB", "VmHWM MiB");
    let step = (samples.len() / 20).max(1);
    for smp in samples.iter().step_by(step).chain(samples.last()) {
        let _ = writeln!(
            s,
            "{:>8.0} {:>12.1} {:>12.1} {:>12.1}",
            at(smp).as_secs_f64(),
            smp.rss_kib as f64 / 1024.0,
            smp.anon_kib as f64 / 1024.0,
            smp.hwm_kib as f64 / 1024.0
        );
    }
    let _ = writeln!(
        s,
        "records caused {emitted}, delivered {}, dropped {}",
        delivered.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
        drops.map(|d| d.to_string()).unwrap_or_else(|| "?".into())
    );
    render_judged(&mut s, "soak goals", &figs);
    for n in &notes {
        let _ = writeln!(s, "note: {n}");
    }
    println!("{s}");
    let series = samples
        .iter()
        .step_by(10)
        .map(|s| SoakSample {
            t_s: at(s).as_secs_f64(),
            vmrss_kib: s.rss_kib,
            rssanon_kib: s.anon_kib,
            vmhwm_kib: s.hwm_kib,
            cpu_ns: s.cpu_ns.saturating_sub(before.cpu_ns),
        })
        .collect();
    let json = SoakJson {
        header: header("soak", &bins.tprof, started.elapsed()),
        method: SoakMethod {
            minutes,
            offered_per_s: rate,
            mode: "mixed, 10 units per task",
            warmup_s: warm.as_secs_f64(),
            ring_mib: RING_MIB,
        },
        achieved_per_s: achieved,
        records_caused: emitted,
        tprof_records: delivered,
        tprof_kernel_drops_total: drops,
        tprof_cpu_ns: cpu_ns,
        series,
        figures: figures_json(&figs),
        notes: &notes,
    };
    let path = write_json("soak", &json)?;
    println!("series and figures: {} ({:.0} s)", path.display(), started.elapsed().as_secs_f64());
    Ok(figs)
}
