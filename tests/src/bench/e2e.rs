//! `cargo xtask bench e2e`: the example service (`demo-service`, axum; release build, 4 workers, pinned to
//! CPU 0) under `wrk` (Debian's, 1 thread, pinned to CPU 1), untraced and traced by tprof
//! (pinned to CPU 1 too, as in every benchmark here: its own CPU is reported, not charged to
//! the service; `--summary-only --format json`, summaries built but not printed). Untraced
//! and traced runs alternate (which goes first alternates too), 5 pairs per load. Figures:
//! traced / untraced throughput and p50 / p99 latency (wrk's percentiles), tprof's CPU per
//! record it received (utime + stime from /proc/PID/stat over the load window) and its peak
//! RSS (VmHWM, polled while it runs). Loads:
//!
//! - `fast-saturated`: `GET /missing` (the 404 path: a task with a log and no work, so the
//!   largest share of tracing per request), 16 connections, closed loop: CPU 0 saturated,
//!   throughput judged; its latencies are queueing at saturation, reported, not judged.
//! - `fast-paced`: the same path, 4 connections each pausing 1 ms between requests (a wrk Lua
//!   `delay`): CPU 0 partly idle, the latencies are the service's, p99 judged.
//! - `sleep`: `GET /sleep?ms=1` (regions `parse` and `sleep` around a 1 ms sleep, so
//!   blocking, wakeups and stacks), 4 connections for 4 workers: throughput and p99 judged.
//!
//! Every response closes its connection (the service speaks one request per connection), so
//! each request is also a TCP connect/accept/close; server-side TIME_WAIT sockets pile up
//! over the run, which can slow later runs: the alternation spreads that drift.

use std::fmt::Write as _;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::procs::{peak_hwm_kib, pinned, proc_sample, Bins, Tracer, TracerKind};
use super::report::{figures_json, header, render_judged, stats, write_json, Goal, Header, Judged, JudgedJson, Unit};
use super::util::json_u64;
use crate::child::{expect_line, line_reader, wait_exit, Guard};

const REPS: usize = 5;
const SECONDS: u64 = 2;
const GOAL_THROUGHPUT_MIN: f64 = 0.97;
const GOAL_P99_MAX: f64 = 1.05;
const GOAL_CPU_NS_PER_EVENT: f64 = 50.0;

pub(super) struct Load {
    pub(super) key: &'static str,
    pub(super) label: &'static str,
    pub(super) path: &'static str,
    conns: u32,
    /// Pause of each connection between its requests (wrk Lua `delay`), ms.
    think_ms: u32,
    judge_throughput: bool,
    judge_latency: bool,
}

pub(super) const LOADS: &[Load] = &[
    Load {
        key: "fast-saturated",
        label: "/missing saturated",
        path: "/missing",
        conns: 16,
        think_ms: 0,
        judge_throughput: true,
        judge_latency: false,
    },
    Load {
        key: "fast-paced",
        label: "/missing paced",
        path: "/missing",
        conns: 4,
        think_ms: 1,
        judge_throughput: false,
        judge_latency: true,
    },
    Load {
        key: "sleep",
        label: "/sleep?ms=1",
        path: "/sleep?ms=1",
        conns: 4,
        think_ms: 0,
        judge_throughput: true,
        judge_latency: true,
    },
];

#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct Wrk {
    #[serde(rename = "requests_per_s")]
    pub(super) rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    socket_errors: u64,
    non_2xx: u64,
}

/// One traced run's view of tprof.
#[derive(Clone, Debug, Default)]
pub(super) struct TprofSide {
    records: Option<u64>,
    pub(super) drops: Option<u64>,
    tasks_ended: Option<u64>,
    /// CPU time over the load window (stat ticks; schedstat when available).
    cpu_ns: u64,
    run_ns: Option<u64>,
    window_ns: u64,
    hwm_kib: u64,
    pub(super) error: Option<String>,
}

impl TprofSide {
    fn ns_per_record(&self) -> f64 {
        match self.records {
            Some(r) if r > 0 => self.cpu_ns as f64 / r as f64,
            _ => f64::NAN,
        }
    }

    fn cpu_share(&self) -> f64 {
        self.cpu_ns as f64 / self.window_ns.max(1) as f64
    }
}

#[derive(Default)]
struct LoadResult {
    untraced: Vec<Wrk>,
    traced: Vec<(Wrk, TprofSide)>,
    errors: Vec<String>,
}

/// "1.23ms" → ms.
fn parse_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60e3)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

fn parse_wrk(out: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    let mut in_dist = false;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let Some(v) = t.strip_prefix("50%") {
                w.p50_ms = parse_ms(v).unwrap_or(f64::NAN);
            } else if let Some(v) = t.strip_prefix("99%") {
                w.p99_ms = parse_ms(v).unwrap_or(f64::NAN);
                in_dist = false;
            }
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(f64::NAN);
        }
        if t.contains(" requests in ") {
            w.requests = t.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
        if let Some(v) = t.strip_prefix("Socket errors:") {
            w.socket_errors = v.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum();
        }
        if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse().unwrap_or(0);
        }
    }
    if w.rps.is_nan() || w.rps <= 0.0 || !w.p99_ms.is_finite() {
        bail!("could not read wrk's output: {}", out.lines().take(20).collect::<Vec<_>>().join(" | "));
    }
    Ok(w)
}

/// A wrk Lua script pausing each connection `ms` between requests.
fn think_script(ms: u32) -> Result<std::path::PathBuf> {
    let dir = super::util::bench_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("wrk-think-{ms}ms.lua"));
    std::fs::write(&path, format!("-- written by cargo xtask bench e2e\nfunction delay()\n  return {ms}\nend\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

pub(super) fn wrk(bins: &Bins, url: &str, load: &Load, secs: u64) -> Result<Wrk> {
    let mut cmd = pinned(std::path::Path::new("wrk"), bins.tracer_cpu());
    cmd.args(["-t1", &format!("-c{}", load.conns), &format!("-d{secs}s"), "--latency", "--timeout", "2s"]);
    if load.think_ms > 0 {
        cmd.arg("-s").arg(think_script(load.think_ms)?);
    }
    cmd.arg(url);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?} (apt-get install -y wrk)"))?;
    let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let mut guard = Guard(child);
    let h = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let he = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    if !wait_exit(&mut guard.0, Duration::from_secs(secs + 30)) {
        bail!("wrk did not finish within {} s", secs + 30);
    }
    let out = h.join().unwrap_or_default();
    let err = he.join().unwrap_or_default();
    parse_wrk(&out).with_context(|| format!("wrk stderr: {}", err.trim()))
}

/// The example service, pinned to CPU 0, stopped (stdin EOF) and killed on drop.
pub(super) struct Service {
    _guard: Guard,
    pub(super) addr: String,
    pid: u32,
}

pub(super) fn start_service(bins: &Bins) -> Result<Service> {
    let mut cmd = pinned(&bins.example, bins.bench_cpu());
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--workers", "4", "--stop-on-stdin-eof"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let out = line_reader(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
    let guard = Guard(child);
    let mut seen = Vec::new();
    let line = expect_line(&out, "listening on ", Duration::from_secs(30), &mut seen, "demo-service")?;
    std::thread::spawn(move || while out.recv().is_ok() {});
    // "listening on 127.0.0.1:PORT pid PID"
    let w: Vec<&str> = line.split_whitespace().collect();
    let addr = w.get(2).ok_or_else(|| anyhow!("bad line {line:?}"))?.to_string();
    let pid = w.get(4).and_then(|p| p.parse().ok()).ok_or_else(|| anyhow!("bad line {line:?}"))?;
    Ok(Service { _guard: guard, addr, pid })
}

fn traced_run(bins: &Bins, svc: &Service, url: &str, load: &Load) -> Result<(Wrk, TprofSide)> {
    traced_run_with(bins, svc, url, load, &[])
}

/// A traced run with `extra` flags to tprof.
pub(super) fn traced_run_with(bins: &Bins, svc: &Service, url: &str, load: &Load, extra: &[&str]) -> Result<(Wrk, TprofSide)> {
    let mut c = pinned(&bins.tprof, bins.tracer_cpu());
    c.args(["attach", "--pid", &svc.pid.to_string(), "--summary-only", "--format", "json", "--min-latency", "3600s"]);
    c.args(extra);
    c.args(["--duration", "600s"]);
    let tracer = Tracer::start(TracerKind::Tprof, c, "tprof")?;
    let before = proc_sample(tracer.pid).ok_or_else(|| anyhow!("tprof exited"))?;
    let w = wrk(bins, url, load, SECONDS);
    let after = proc_sample(tracer.pid);
    let stopped = tracer.stop(Duration::from_secs(60));
    let w = w?;
    let mut side = TprofSide::default();
    if let Some(a) = after {
        side.cpu_ns = a.cpu_ns.saturating_sub(before.cpu_ns);
        side.run_ns = a.run_ns.zip(before.run_ns).map(|(a, b)| a.saturating_sub(b));
        side.window_ns = a.at.duration_since(before.at).as_nanos() as u64;
    }
    side.hwm_kib = peak_hwm_kib(&stopped.samples);
    if let Some(s) = &stopped.session {
        // Kernel events tprof followed (a summed interval counts as the event it was), so
        // that the CPU per event is comparable whether intervals were streamed or summed.
        side.records = json_u64(s, "events").or_else(|| json_u64(s, "records"));
        side.drops = json_u64(s, "kernel_drops_total");
        side.tasks_ended = json_u64(s, "tasks_ended");
    }
    side.error = stopped.error;
    Ok((w, side))
}

pub fn run(bins: &Bins, root_ok: bool) -> Result<Vec<Judged>> {
    let started = Instant::now();
    let mut notes = Vec::new();
    super::preamble(&mut notes, bins);
    if !root_ok {
        notes.push("not root: only the untraced runs ran (tprof needs root)".into());
    }
    let svc = start_service(bins)?;
    // Warm-up: the service's first connections, wrk, the page cache.
    for load in LOADS {
        let _ = wrk(bins, &format!("http://{}{}", svc.addr, load.path), load, 1);
    }
    let mut results: Vec<(&Load, LoadResult)> = LOADS.iter().map(|l| (l, LoadResult::default())).collect();
    for rep in 0..REPS {
        for (load, res) in results.iter_mut() {
            let url = format!("http://{}{}", svc.addr, load.path);
            // Alternate which goes first, so that drift does not favour one side.
            let order: &[bool] = if rep % 2 == 0 { &[false, true] } else { &[true, false] };
            for &traced in order {
                if traced && !root_ok {
                    continue;
                }
                eprint!(
                    "bench e2e: {:<20} rep {} {:<9}",
                    load.label,
                    rep + 1,
                    if traced { "traced" } else { "untraced" }
                );
                if traced {
                    match traced_run(bins, &svc, &url, load) {
                        Ok((w, t)) => {
                            eprintln!(
                                " {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  tprof {:>6.1} ns/record, {:.1}% CPU",
                                w.rps,
                                w.p50_ms,
                                w.p99_ms,
                                t.ns_per_record(),
                                t.cpu_share() * 100.0
                            );
                            res.traced.push((w, t));
                        }
                        Err(e) => {
                            eprintln!(" FAILED: {e:#}");
                            res.errors.push(format!("traced rep {}: {e:#}", rep + 1));
                        }
                    }
                } else {
                    match wrk(bins, &url, load, SECONDS) {
                        Ok(w) => {
                            eprintln!(" {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms", w.rps, w.p50_ms, w.p99_ms);
                            res.untraced.push(w);
                        }
                        Err(e) => {
                            eprintln!(" FAILED: {e:#}");
                            res.errors.push(format!("untraced rep {}: {e:#}", rep + 1));
                        }
                    }
                }
            }
        }
    }
    drop(svc);
    let figures = derive(&results, &mut notes);
    let table = render(&results, &figures, &notes);
    println!("{table}");
    let path = write_json("e2e", &to_json(bins, &results, &figures, &notes, started.elapsed()))?;
    println!("raw samples and figures: {} ({:.0} s)", path.display(), started.elapsed().as_secs_f64());
    let errors: Vec<String> =
        results.iter().flat_map(|(l, r)| r.errors.iter().map(move |e| format!("{}: {e}", l.key))).collect();
    if !errors.is_empty() {
        bail!("some runs failed: {}", errors.join("; "));
    }
    Ok(figures)
}

fn derive(results: &[(&Load, LoadResult)], notes: &mut Vec<String>) -> Vec<Judged> {
    let mut figs = Vec::new();
    for (load, r) in results {
        for (w, t) in &r.traced {
            if let Some(e) = &t.error {
                notes.push(format!("{}: {e}", load.label));
            }
            if t.drops.unwrap_or(0) > 0 {
                notes.push(format!("{}: tprof dropped {} records", load.label, t.drops.unwrap_or(0)));
            }
            if let Some(n) = t.tasks_ended {
                if (n as f64) < 0.9 * w.requests as f64 {
                    notes.push(format!(
                        "{}: tprof saw {n} tasks end for {} requests wrk completed",
                        load.label, w.requests
                    ));
                }
            }
        }
        for w in r.untraced.iter().chain(r.traced.iter().map(|(w, _)| w)) {
            if w.socket_errors > 0 {
                notes.push(format!("{}: wrk counted {} socket errors in a run", load.label, w.socket_errors));
                break;
            }
        }
        if r.untraced.is_empty() || r.traced.is_empty() {
            continue;
        }
        let col = |v: &[Wrk], f: fn(&Wrk) -> f64| stats(&v.iter().map(f).collect::<Vec<_>>());
        let tw: Vec<Wrk> = r.traced.iter().map(|(w, _)| w.clone()).collect();
        let (_, ur_med, ur_max) = col(&r.untraced, |w| w.rps);
        let (_, tr_med, tr_max) = col(&tw, |w| w.rps);
        let name = |what: &str| format!("{}: {what}", load.label);
        figs.push(Judged {
            name: name("throughput traced / untraced"),
            unit: Unit::Ratio,
            best: tr_max / ur_max,
            median: tr_med / ur_med,
            goal: load.judge_throughput.then_some(Goal::AtLeast(GOAL_THROUGHPUT_MIN)),
            caveat: None,
            detail: format!(
                "requests/s (median): untraced {ur_med:.0}, traced {tr_med:.0} ({:+.1}%)",
                (tr_med / ur_med - 1.0) * 100.0
            ),
        });
        for (what, f, goal) in [
            ("p50 latency traced / untraced", (|w: &Wrk| w.p50_ms) as fn(&Wrk) -> f64, None),
            (
                "p99 latency traced / untraced",
                |w: &Wrk| w.p99_ms,
                load.judge_latency.then_some(Goal::AtMost(GOAL_P99_MAX)),
            ),
        ] {
            let (ub, um, ux) = col(&r.untraced, f);
            let (tb, tm, _) = col(&tw, f);
            figs.push(Judged {
                name: name(what),
                unit: Unit::Ratio,
                best: tb / ub,
                median: tm / um,
                goal,
                caveat: None,
                // The spread of the untraced runs alone: a difference within it is noise.
                detail: format!(
                    "ms (median): untraced {um:.3}, traced {tm:.3}; untraced runs alone spread x{:.2} (max/min){}",
                    ux / ub,
                    if load.judge_latency { "" } else { " (saturated: queueing, not judged)" }
                ),
            });
        }
        let per: Vec<f64> = r.traced.iter().map(|(_, t)| t.ns_per_record()).collect();
        let (pb, pm, _) = stats(&per);
        let recs_per_req: Vec<f64> =
            r.traced.iter().map(|(w, t)| t.records.unwrap_or(0) as f64 / w.requests.max(1) as f64).collect();
        let share: Vec<f64> = r.traced.iter().map(|(_, t)| t.cpu_share() * 100.0).collect();
        let run_per: Vec<f64> = r
            .traced
            .iter()
            .filter_map(|(_, t)| Some(t.run_ns? as f64 / t.records.filter(|n| *n > 0)? as f64))
            .collect();
        figs.push(Judged {
            name: name("tprof CPU per event"),
            unit: Unit::Ns,
            best: pb,
            median: pm,
            goal: Some(Goal::AtMost(GOAL_CPU_NS_PER_EVENT)),
            caveat: None,
            detail: format!(
                "{:.1} kernel events per request; tprof used {:.1}% of a CPU (median){}",
                stats(&recs_per_req).1,
                stats(&share).1,
                if run_per.is_empty() {
                    String::new()
                } else {
                    format!("; schedstat run time {:.0} ns per event", stats(&run_per).1)
                }
            ),
        });
        let hwm: Vec<f64> = r.traced.iter().map(|(_, t)| t.hwm_kib as f64 / 1024.0).collect();
        let (hb, hm, hx) = stats(&hwm);
        figs.push(Judged {
            name: name("tprof peak RSS (VmHWM)"),
            unit: Unit::Mib,
            best: hb,
            median: hm,
            goal: None,
            caveat: None,
            detail: format!("max over runs {hx:.1} MiB (16 MiB ring, mapped twice)"),
        });
    }
    figs
}

fn render(results: &[(&Load, LoadResult)], figures: &[Judged], notes: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nend to end: example service (release, 4 workers, CPU 0) under wrk -t1 (CPU 1), {REPS} x {SECONDS} s per side; \
         tprof on CPU 1; best / median"
    );
    let _ = writeln!(
        s,
        "{:<22} {:<9} {:>22} {:>20} {:>20} {:>18} {:>12}",
        "load", "", "requests/s", "p50 ms", "p99 ms", "tprof ns/record", "tprof MiB"
    );
    for (load, r) in results {
        let row = |ws: Vec<&Wrk>| {
            let col = |f: fn(&Wrk) -> f64| stats(&ws.iter().map(|w| f(w)).collect::<Vec<_>>());
            let ((_, rm, rx), (lb, lm, _), (pb, pm, _)) = (col(|w| w.rps), col(|w| w.p50_ms), col(|w| w.p99_ms));
            (format!("{rx:.0} / {rm:.0}"), format!("{lb:.3} / {lm:.3}"), format!("{pb:.3} / {pm:.3}"))
        };
        let (a, b, c) = row(r.untraced.iter().collect());
        let _ = writeln!(s, "{:<22} {:<9} {a:>22} {b:>20} {c:>20}", load.label, "untraced");
        if !r.traced.is_empty() {
            let (a, b, c) = row(r.traced.iter().map(|(w, _)| w).collect());
            let (pb, pm, _) = stats(&r.traced.iter().map(|(_, t)| t.ns_per_record()).collect::<Vec<_>>());
            let (_, hm, hx) = stats(&r.traced.iter().map(|(_, t)| t.hwm_kib as f64 / 1024.0).collect::<Vec<_>>());
            let _ = writeln!(
                s,
                "{:<22} {:<9} {a:>22} {b:>20} {c:>20} {:>18} {:>12}",
                "",
                "traced",
                format!("{pb:.0} / {pm:.0}"),
                format!("{hm:.0} (max {hx:.0})")
            );
        }
    }
    let legend: Vec<String> = LOADS
        .iter()
        .map(|l| {
            let pause =
                if l.think_ms > 0 { format!(", {} ms pause between requests", l.think_ms) } else { String::new() };
            format!("{}: GET {}, {} connections{pause}", l.label, l.path, l.conns)
        })
        .collect();
    let _ = writeln!(s, "loads: {}", legend.join("; "));
    render_judged(&mut s, "end-to-end goals", figures);
    for (load, r) in results {
        for e in &r.errors {
            let _ = writeln!(s, "\nFAILED {}: {e}", load.label);
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

/// `target/bench/e2e.json`.
#[derive(Serialize)]
struct E2eJson<'a> {
    #[serde(flatten)]
    header: Header,
    method: E2eMethod,
    goals: E2eGoals,
    loads: Vec<LoadJson<'a>>,
    figures: Vec<JudgedJson<'a>>,
    notes: &'a [String],
}

#[derive(Serialize)]
struct E2eMethod {
    reps: usize,
    seconds_per_run: u64,
    service: &'static str,
    load_generator: &'static str,
    tprof: &'static str,
    cpu: &'static str,
    judged_on: &'static str,
}

#[derive(Serialize)]
struct E2eGoals {
    throughput_ratio_min: f64,
    p99_ratio_max: f64,
    tprof_cpu_ns_per_record_max: f64,
}

#[derive(Serialize)]
struct LoadJson<'a> {
    load: &'static str,
    label: &'static str,
    path: &'static str,
    connections: u32,
    think_ms: u32,
    untraced: &'a [Wrk],
    traced: Vec<TracedJson<'a>>,
    errors: &'a [String],
}

/// One traced run: wrk's figures, then tprof's.
#[derive(Serialize)]
struct TracedJson<'a> {
    #[serde(flatten)]
    wrk: &'a Wrk,
    tprof_records: Option<u64>,
    tprof_kernel_drops_total: Option<u64>,
    tprof_tasks_ended: Option<u64>,
    tprof_cpu_ns: u64,
    tprof_schedstat_run_ns: Option<u64>,
    window_ns: u64,
    tprof_cpu_ns_per_record: f64,
    tprof_vmhwm_kib: u64,
    tprof_error: Option<&'a str>,
}

fn to_json<'a>(
    bins: &Bins,
    results: &'a [(&Load, LoadResult)],
    figures: &'a [Judged],
    notes: &'a [String],
    elapsed: Duration,
) -> E2eJson<'a> {
    let loads = results
        .iter()
        .map(|(load, r)| LoadJson {
            load: load.key,
            label: load.label,
            path: load.path,
            connections: load.conns,
            think_ms: load.think_ms,
            untraced: &r.untraced,
            traced: r
                .traced
                .iter()
                .map(|(w, t)| TracedJson {
                    wrk: w,
                    tprof_records: t.records,
                    tprof_kernel_drops_total: t.drops,
                    tprof_tasks_ended: t.tasks_ended,
                    tprof_cpu_ns: t.cpu_ns,
                    tprof_schedstat_run_ns: t.run_ns,
                    window_ns: t.window_ns,
                    tprof_cpu_ns_per_record: t.ns_per_record(),
                    tprof_vmhwm_kib: t.hwm_kib,
                    tprof_error: t.error.as_deref(),
                })
                .collect(),
            errors: &r.errors,
        })
        .collect();
    E2eJson {
        header: header("e2e", &bins.tprof, elapsed),
        method: E2eMethod {
            reps: REPS,
            seconds_per_run: SECONDS,
            service: "demo-service serve --workers 4 (axum, release), CPU 0",
            load_generator: "wrk -t1 --latency --timeout 2s, CPU 1 (closed loop)",
            tprof: "attach --summary-only --format json --min-latency 3600s, CPU 1",
            cpu: "utime+stime from /proc/PID/stat over the wrk run, per record tprof received",
            judged_on: "median",
        },
        goals: E2eGoals {
            throughput_ratio_min: GOAL_THROUGHPUT_MIN,
            p99_ratio_max: GOAL_P99_MAX,
            tprof_cpu_ns_per_record_max: GOAL_CPU_NS_PER_EVENT,
        },
        loads,
        figures: figures_json(figures),
        notes,
    }
}
