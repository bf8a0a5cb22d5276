//! `cargo xtask bench probes`: per-call cost of each tprof probe, unattached and attached,
//! as ratios to baselines measured in the same run.
//!
//! - Unattached: each probe's loop against an empty loop (goal: within 0.05 ns per site) and
//!   against a plain C `<sys/sdt.h>` probe (`tests/c/probe_bench.c`, built with gcc -O2).
//! - Attached: the same loops with tprof attached (its real programs) against the same sites
//!   attached by bpftrace with an empty action, the uprobe floor (goal: at most 1.2x).
//!
//! The benchmark processes (`tests/src/bin/probe-bench.rs` and the C one) pin themselves to
//! CPU 0; tprof and bpftrace run pinned to CPU 1 (`taskset`). Each run prints the ns per loop
//! iteration of 5 repetitions; the table shows min / median, and goals are judged on the
//! median. Every loop is aligned to 64 bytes (`-align-loops=64`, `-falign-loops=64`) so that
//! the figures measure the probe sites, not where the loop happens to fall in the i-cache.
//! Results: a table on stdout and `target/bench/probes.json` (raw samples included).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::report::{header, write_json, Header, InOrder};

use super::util::{bench_dir, bin_dir, cargo, cpu_busy, have, is_root, json_u64, on_cpu1, root, status, target_dir, Samples};
use crate::child::{drain_in_background, expect_line, line_reader, signal, tail, wait_exit, Guard};

/// Loop iterations per repetition: ~55 ms unattached, ~0.1-0.4 s attached.
const ITERS_UNATTACHED: u64 = 200_000_000;
const ITERS_ATTACHED: u64 = 100_000;
const REPS: usize = 5;
/// Goals (issue text): unattached within 0.05 ns per site of an empty loop; attached by
/// tprof within 1.2x of the same sites attached by bpftrace with an empty action.
const GOAL_UNATTACHED_NS_PER_SITE: f64 = 0.05;
const GOAL_ATTACHED_RATIO: f64 = 1.2;
/// tprof's ring buffer for the attached runs (MiB): large enough to hold every record of a
/// run, so the figure is the cost of queuing records, not of counting drops.
const TPROF_RING_MIB: u32 = 256;
/// An attached loop iteration faster than this means the probes did not fire.
const ATTACHED_FLOOR_NS: f64 = 50.0;

const USAGE: &str = "usage: cargo xtask bench probes [--unattached-only] [--tprof PATH]
  per-call cost of each probe, unattached (vs an empty loop and a C <sys/sdt.h> probe) and
  attached by tprof (vs the same sites attached by bpftrace with an empty action);
  prints a table and writes target/bench/probes.json. The attached part needs root.
  --tprof PATH: the tprof binary to measure (default: target/debug/tprof).";

#[derive(Clone, Copy, PartialEq)]
enum Lang {
    Rust,
    C,
}

/// One loop of the benchmark binaries.
struct Case {
    lang: Lang,
    /// Argument to the benchmark binary.
    arg: &'static str,
    label: &'static str,
    /// Probe sites in the loop body.
    sites: u32,
    /// Probe names attached by bpftrace (empty: not run attached).
    attach: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case { lang: Lang::Rust, arg: "empty", label: "rust empty loop", sites: 0, attach: &[] },
    Case { lang: Lang::Rust, arg: "enabled", label: "rust if enabled()", sites: 0, attach: &[] },
    Case { lang: Lang::Rust, arg: "task_begin", label: "rust task_begin", sites: 1, attach: &[] },
    Case { lang: Lang::Rust, arg: "region_begin", label: "rust region_begin", sites: 1, attach: &[] },
    Case { lang: Lang::Rust, arg: "log", label: "rust log", sites: 1, attach: &["log"] },
    Case { lang: Lang::Rust, arg: "task", label: "rust task_begin+end", sites: 2, attach: &["task_begin", "task_end"] },
    Case {
        lang: Lang::Rust,
        arg: "region",
        label: "rust region_begin+end",
        sites: 2,
        attach: &["region_begin", "region_end"],
    },
    Case {
        lang: Lang::Rust,
        arg: "attach_detach",
        label: "rust task_attach+detach",
        sites: 2,
        attach: &["task_attach", "task_detach"],
    },
    Case { lang: Lang::C, arg: "empty", label: "c empty loop", sites: 0, attach: &[] },
    Case { lang: Lang::C, arg: "sdt2", label: "c STAP_PROBE2", sites: 1, attach: &[] },
    Case { lang: Lang::C, arg: "sdt6", label: "c STAP_PROBE6", sites: 1, attach: &[] },
];

#[derive(Clone, Copy, PartialEq)]
enum Tracer {
    None,
    Tprof,
    Bpftrace,
}

impl Tracer {
    fn name(self) -> &'static str {
        match self {
            Tracer::None => "unattached",
            Tracer::Tprof => "tprof",
            Tracer::Bpftrace => "bpftrace_empty",
        }
    }
}

/// What one run of a benchmark binary gave.
#[derive(Default)]
struct RunResult {
    samples: Samples,
    iterations: u64,
    /// tprof's closing `session` object (raw JSON), for its record and drop counts.
    tprof_session: Option<String>,
    error: Option<String>,
}

struct Env {
    rust_bench: PathBuf,
    c_bench: PathBuf,
    tprof: PathBuf,
    pin: bool,
}

/// A started tracer: the process, its stdout collector (tprof: the session line).
struct TracerProc {
    guard: Guard,
    stdout: Option<JoinHandle<Option<String>>>,
}

fn start_tracer(env: &Env, tracer: Tracer, case: &Case, pid: u32) -> Result<TracerProc> {
    let exe = match case.lang {
        Lang::Rust => &env.rust_bench,
        Lang::C => &env.c_bench,
    };
    let mut cmd = match tracer {
        Tracer::None => unreachable!("no tracer to start"),
        Tracer::Tprof => {
            let mut c = on_cpu1(&env.tprof, env.pin);
            c.args(["attach", "--pid", &pid.to_string(), "--summary-only", "--format", "json"]);
            // Summaries are still built (on CPU 1), but none is printed: the run's output is
            // then just the session line, so no pipe traffic competes with the benchmark.
            c.args(["--min-latency", "3600s", "--duration", "300s", "--ring-size", &TPROF_RING_MIB.to_string()]);
            c
        }
        Tracer::Bpftrace => {
            let mut prog = String::new();
            for p in case.attach {
                let _ = write!(prog, "usdt:{}:tprof:{p} {{}} ", exe.display());
            }
            // BEGIN fires once every probe is attached: our readiness line.
            prog.push_str("BEGIN { printf(\"xtask-bench: attached\\n\"); }");
            let mut c = on_cpu1(Path::new("bpftrace"), env.pin);
            c.args(["-B", "none", "-p", &pid.to_string(), "-e", &prog]);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let stderr = line_reader(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?);
    let guard = Guard(child);
    let mut seen = Vec::new();
    let patience = Duration::from_secs(60);
    match tracer {
        Tracer::Tprof => {
            // Drain stdout on a thread (tprof must never block on it); keep the session line.
            let h = std::thread::spawn(move || {
                let mut session = None;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("\"type\":\"session\"") {
                        session = Some(line);
                    }
                }
                session
            });
            expect_line(&stderr, "tprof: attached", patience, &mut seen, "tprof")?;
            drain_in_background(stderr);
            Ok(TracerProc { guard, stdout: Some(h) })
        }
        Tracer::Bpftrace => {
            let out = line_reader(stdout);
            // bpftrace's warnings and errors go to stderr: fold them into the report on failure.
            let err_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
            let sink = std::sync::Arc::clone(&err_lines);
            std::thread::spawn(move || {
                while let Ok(l) = stderr.recv() {
                    if let Ok(mut v) = sink.lock() {
                        v.push(l);
                    }
                }
            });
            if let Err(e) = expect_line(&out, "xtask-bench: attached", patience, &mut seen, "bpftrace") {
                std::thread::sleep(Duration::from_millis(200));
                let errs = err_lines.lock().map(|v| tail(&v)).unwrap_or_default();
                bail!("{e:#}; stderr: {errs}");
            }
            drain_in_background(out);
            Ok(TracerProc { guard, stdout: None })
        }
        Tracer::None => unreachable!(),
    }
}

/// Runs one benchmark process, optionally under a tracer, and returns its samples.
fn run_case(env: &Env, case: &Case, tracer: Tracer) -> Result<RunResult> {
    let exe = match case.lang {
        Lang::Rust => &env.rust_bench,
        Lang::C => &env.c_bench,
    };
    let iterations = if tracer == Tracer::None { ITERS_UNATTACHED } else { ITERS_ATTACHED };
    let mut child = Command::new(exe)
        .args([case.arg, &iterations.to_string(), &REPS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut stdin: ChildStdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
    let out = line_reader(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
    let err = line_reader(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?);
    let mut bench = Guard(child);
    let who = format!("{} {}", exe.display(), case.arg);
    let mut seen = Vec::new();
    let fail = |e: anyhow::Error, err: &Receiver<String>| {
        let mut lines = Vec::new();
        while let Ok(l) = err.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
        if lines.is_empty() {
            e
        } else {
            e.context(format!("stderr: {}", tail(&lines)))
        }
    };
    let ready = expect_line(&out, "ready ", Duration::from_secs(30), &mut seen, &who).map_err(|e| fail(e, &err))?;
    let pid: u32 =
        ready.trim_start_matches("ready ").trim().parse().with_context(|| format!("{who}: bad line {ready:?}"))?;
    let mut tracer_proc = match tracer {
        Tracer::None => None,
        t => Some(start_tracer(env, t, case, pid)?),
    };
    writeln!(stdin, "go").and_then(|()| stdin.flush()).with_context(|| format!("{who}: sending the go line"))?;
    let budget = Duration::from_secs(if tracer == Tracer::None { 60 } else { 240 });
    let line = expect_line(&out, "ns_per_iter", budget, &mut seen, &who).map_err(|e| fail(e, &err))?;
    let samples: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|s| s.parse::<f64>().with_context(|| format!("{who}: bad sample {s:?} in {line:?}")))
        .collect::<Result<_>>()?;
    if samples.len() != REPS {
        bail!("{who}: expected {REPS} samples, got {line:?}");
    }
    let _ = wait_exit(&mut bench.0, Duration::from_secs(10));
    let mut result = RunResult { samples: Samples(samples), iterations, ..Default::default() };
    if let Some(tp) = tracer_proc.as_mut() {
        // Stop the tracer cleanly (tprof then drains its ring and prints its session line).
        let pid = tp.guard.0.id();
        let _ = signal(pid, libc::SIGINT);
        if !wait_exit(&mut tp.guard.0, Duration::from_secs(120)) {
            result.error = Some(format!("{} did not exit within 120 s of SIGINT; killed", tracer.name()));
        }
        if let Some(h) = tp.stdout.take() {
            result.tprof_session = h.join().ok().flatten();
        }
        let med = result.samples.median();
        if med < ATTACHED_FLOOR_NS {
            bail!("{who}: {med:.2} ns per iteration with {} attached: the probes did not fire", tracer.name());
        }
    }
    Ok(result)
}

/// One derived figure: a value judged against an optional goal.
struct Figure {
    group: &'static str,
    name: String,
    unit: &'static str,
    min: f64,
    median: f64,
    goal_max: Option<f64>,
    /// Extra words for the table (e.g. the per-site ns behind a ratio).
    detail: String,
}

impl Figure {
    fn met(&self) -> Option<bool> {
        self.goal_max.map(|g| self.median <= g)
    }

    fn verdict(&self) -> String {
        match (self.goal_max, self.met()) {
            (Some(g), Some(false)) if self.unit == "x" => {
                let by = self.median - g;
                format!("MISSED by {by:.2}x (x{:.2} > x{g}, {:.0}% over the goal)", self.median, by / g * 100.0)
            }
            (Some(g), Some(false)) => format!("MISSED by {:.4} ns (goal <= {g} ns)", self.median - g),
            (Some(g), Some(true)) if self.unit == "x" => format!("ok (goal <= x{g})"),
            (Some(g), Some(true)) => format!("ok (goal <= {g} ns)"),
            _ => String::new(),
        }
    }
}

struct Outcome {
    case: &'static Case,
    runs: Vec<(Tracer, Result<RunResult>)>,
}

impl Outcome {
    fn get(&self, t: Tracer) -> Option<&RunResult> {
        self.runs.iter().find(|(tt, _)| *tt == t).and_then(|(_, r)| r.as_ref().ok())
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let mut unattached_only = false;
    let mut tprof_bin: Option<PathBuf> = None;
    match args.first().map(String::as_str) {
        Some("probes") => {}
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => bail!("unknown benchmark {other:?}\n{USAGE}"),
    }
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--unattached-only" => unattached_only = true,
            "--tprof" => tprof_bin = Some(it.next().map(PathBuf::from).ok_or_else(|| anyhow!("--tprof needs a path"))?),
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    let started = Instant::now();
    let env = prepare(tprof_bin)?;
    let root_ok = is_root();
    let bpftrace_ok = have("bpftrace");
    let mut notes: Vec<String> = Vec::new();
    let busy = cpu_busy(Duration::from_millis(300));
    if busy.iter().any(|b| *b > 0.10) {
        let pct: Vec<String> = busy.iter().enumerate().map(|(i, b)| format!("cpu{i} {:.0}%", b * 100.0)).collect();
        notes.push(format!(
            "the machine was busy before the run ({}): expect noisy figures, compare the minima",
            pct.join(", ")
        ));
    }
    eprintln!("bench: tprof {}", env.tprof.display());
    if !env.pin {
        notes.push("taskset not found: tracers were not pinned to CPU 1".into());
    }
    let attached = !unattached_only && root_ok;
    if unattached_only {
        notes.push("attached runs skipped (--unattached-only)".into());
    } else if !root_ok {
        notes.push(
            "attached runs skipped: they attach eBPF programs and need root (sudo -E cargo xtask bench probes)".into(),
        );
    } else if !bpftrace_ok {
        notes.push(
            "bpftrace not found: no uprobe floor, attached ratios unavailable (cargo xtask setup installs it)".into(),
        );
    }

    let mut outcomes: Vec<Outcome> = Vec::new();
    for case in CASES {
        let mut tracers = vec![Tracer::None];
        if attached && !case.attach.is_empty() {
            tracers.push(Tracer::Tprof);
            if bpftrace_ok {
                tracers.push(Tracer::Bpftrace);
            }
        }
        let mut runs = Vec::new();
        for t in tracers {
            eprint!("bench: {:<26} {:<15}", case.label, t.name());
            let _ = std::io::stderr().flush();
            let r = run_case(&env, case, t);
            match &r {
                Ok(res) => eprintln!(" min {:>10.4}  median {:>10.4} ns/iter", res.samples.min(), res.samples.median()),
                Err(e) => eprintln!(" FAILED: {e:#}"),
            }
            runs.push((t, r));
        }
        outcomes.push(Outcome { case, runs });
    }

    for o in &outcomes {
        for (t, r) in &o.runs {
            if let Ok(r) = r {
                let spread = r.samples.0.iter().copied().fold(0.0, f64::max) / r.samples.min();
                if spread > 1.25 {
                    notes.push(format!(
                        "{} ({}): samples spread x{spread:.2} (max/min): disturbed, compare minima or rerun",
                        o.case.label,
                        t.name()
                    ));
                }
            }
        }
    }
    let figures = derive(&outcomes, &mut notes);
    let table = render(&outcomes, &figures, &notes);
    println!("{table}");
    let path = write_json("probes", &to_json(&outcomes, &figures, &notes, &env.tprof, started.elapsed()))?;
    println!("raw samples and figures: {} ({:.0} s)", path.display(), started.elapsed().as_secs_f64());
    let failed: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.runs.iter().filter(|(_, r)| r.is_err()).map(move |(t, _)| format!("{} ({})", o.case.label, t.name()))
        })
        .collect();
    if !failed.is_empty() {
        bail!("some runs failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Builds the benchmark binaries: the Rust one optimized (release; only its own crate gets
/// the loop-alignment flag, so dependencies keep their normal build), the C one with gcc.
fn prepare(tprof: Option<PathBuf>) -> Result<Env> {
    status(
        cargo()
            .args(["rustc", "--release", "-p", "tprof-tests", "--bin", "probe-bench", "--"])
            .args(["-C", "llvm-args=-align-loops=64"]),
    )?;
    let rust_bench = target_dir().join("release").join("probe-bench");
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let c_bench = dir.join("probe_bench");
    let src = root().join("tests").join("c").join("probe_bench.c");
    status(Command::new("gcc").args(["-O2", "-falign-loops=64", "-Wall", "-Wextra", "-o"]).arg(&c_bench).arg(&src))
        .context("compiling the C reference benchmark (gcc, systemtap-sdt-dev: cargo xtask setup)")?;
    let tprof = tprof.unwrap_or_else(|| bin_dir().join("tprof"));
    if !tprof.exists() {
        bail!("{} not found (cargo xtask build)", tprof.display());
    }
    let pin = Command::new("taskset").args(["-c", "1", "true"]).status().map(|s| s.success()).unwrap_or(false);
    if pin {
        // This process and its pipe-reader threads stay off the benchmark's CPU as well (the
        // benchmark pins itself back to CPU 0 after it is spawned).
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    Ok(Env { rust_bench, c_bench, tprof, pin })
}

fn find<'a>(outcomes: &'a [Outcome], lang: Lang, arg: &str) -> Option<&'a Outcome> {
    outcomes.iter().find(|o| o.case.lang == lang && o.case.arg == arg)
}

fn derive(outcomes: &[Outcome], notes: &mut Vec<String>) -> Vec<Figure> {
    let mut figs = Vec::new();
    let base = |lang| find(outcomes, lang, "empty").and_then(|o| o.get(Tracer::None));
    // 1. Unattached, against the empty loop of the same language.
    for lang in [Lang::Rust, Lang::C] {
        let Some(empty) = base(lang) else { continue };
        let (em, ed) = (empty.samples.min(), empty.samples.median());
        for o in outcomes.iter().filter(|o| o.case.lang == lang && o.case.arg != "empty") {
            let Some(r) = o.get(Tracer::None) else { continue };
            let per = o.case.sites.max(1) as f64;
            let (m, d) = (r.samples.min(), r.samples.median());
            let what = if o.case.sites == 0 { "per check" } else { "per site" };
            figs.push(Figure {
                group: "unattached_vs_empty",
                name: o.case.label.to_string(),
                unit: "ns",
                min: (m - em) / per,
                median: (d - ed) / per,
                // The goal is about probe sites; `enabled()` is reported, not judged.
                goal_max: (lang == Lang::Rust && o.case.sites > 0).then_some(GOAL_UNATTACHED_NS_PER_SITE),
                detail: format!("{what}; loop x{:.3} / x{:.3} of the empty loop", m / em, d / ed),
            });
        }
    }
    // 2. Unattached, Rust probe against the C <sys/sdt.h> probe with as many arguments.
    let pairs =
        [("task_begin", "sdt6", "6 args"), ("region_begin", "sdt2", "2 args"), ("empty", "empty", "sanity: same loop")];
    for (rs, c, why) in pairs {
        let (Some(ro), Some(co)) = (find(outcomes, Lang::Rust, rs), find(outcomes, Lang::C, c)) else { continue };
        let (Some(r), Some(cr)) = (ro.get(Tracer::None), co.get(Tracer::None)) else { continue };
        let mut detail = why.to_string();
        if let (Some(re), Some(ce)) = (base(Lang::Rust), base(Lang::C)) {
            if rs != "empty" {
                let _ = write!(
                    detail,
                    "; over own empty loop (median): rust {:+.4} ns, c {:+.4} ns",
                    r.samples.median() - re.samples.median(),
                    cr.samples.median() - ce.samples.median()
                );
            }
        }
        figs.push(Figure {
            group: "unattached_rust_vs_c_sdt",
            name: format!("{} / {}", ro.case.label, co.case.label),
            unit: "x",
            min: r.samples.min() / cr.samples.min(),
            median: r.samples.median() / cr.samples.median(),
            goal_max: None,
            detail,
        });
    }
    // 3. Attached: tprof against bpftrace with an empty action (the uprobe floor).
    for o in outcomes.iter().filter(|o| !o.case.attach.is_empty()) {
        let per = o.case.sites.max(1) as f64;
        if let Some(t) = o.get(Tracer::Tprof) {
            if let Some(s) = &t.tprof_session {
                let records = json_u64(s, "records").unwrap_or(0);
                let drops = json_u64(s, "kernel_drops_total").unwrap_or(0);
                if drops > 0 {
                    notes.push(format!(
                        "{}: tprof lost {drops} records (ring buffer full; {records} delivered): part of its figure is the drop path",
                        o.case.label
                    ));
                }
            } else {
                notes.push(format!("{}: tprof printed no session line (records/drops unknown)", o.case.label));
            }
        }
        let (Some(t), Some(b)) = (o.get(Tracer::Tprof), o.get(Tracer::Bpftrace)) else { continue };
        let (tm, td, bm, bd) = (t.samples.min(), t.samples.median(), b.samples.min(), b.samples.median());
        let over = td / per - GOAL_ATTACHED_RATIO * bd / per;
        let mut detail = format!("per site (median): tprof {:.0} ns, bpftrace {{}} {:.0} ns", td / per, bd / per);
        if over > 0.0 {
            let _ = write!(detail, "; {over:.0} ns per site over the goal");
        }
        figs.push(Figure {
            group: "attached_tprof_vs_bpftrace_empty",
            name: o.case.label.to_string(),
            unit: "x",
            min: tm / bm,
            median: td / bd,
            goal_max: Some(GOAL_ATTACHED_RATIO),
            detail,
        });
    }
    figs
}

fn cell(r: Option<&Result<RunResult>>) -> String {
    match r {
        None => String::new(),
        Some(Err(_)) => "FAILED".into(),
        Some(Ok(r)) => {
            let (m, d) = (r.samples.min(), r.samples.median());
            if d >= 100.0 {
                format!("{m:.1} / {d:.1}")
            } else {
                format!("{m:.4} / {d:.4}")
            }
        }
    }
}

fn render(outcomes: &[Outcome], figures: &[Figure], notes: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "probe cost: ns per loop iteration, min / median of {REPS} runs (bench on CPU 0, tracer on CPU 1; \
         {ITERS_UNATTACHED} iterations unattached, {ITERS_ATTACHED} attached)"
    );
    let _ = writeln!(
        s,
        "{:<26} {:>5}  {:>19}  {:>19}  {:>21}",
        "case", "sites", "unattached", "tprof attached", "bpftrace {} attached"
    );
    for o in outcomes {
        let get = |t: Tracer| o.runs.iter().find(|(tt, _)| *tt == t).map(|(_, r)| r);
        let _ = writeln!(
            s,
            "{:<26} {:>5}  {:>19}  {:>19}  {:>21}",
            o.case.label,
            o.case.sites,
            cell(get(Tracer::None)),
            cell(get(Tracer::Tprof)),
            cell(get(Tracer::Bpftrace))
        );
    }
    let groups = [
        ("unattached_vs_empty", "unattached: ns over the empty loop of the same language (min / median)"),
        ("unattached_rust_vs_c_sdt", "unattached: Rust probe loop / C <sys/sdt.h> probe loop (min / median)"),
        (
            "attached_tprof_vs_bpftrace_empty",
            "attached: tprof / bpftrace with an empty action, the uprobe floor (min / median)",
        ),
    ];
    for (g, title) in groups {
        let fs: Vec<&Figure> = figures.iter().filter(|f| f.group == g).collect();
        if fs.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n{title}; goals judged on the median");
        for f in fs {
            let v = if f.unit == "x" {
                format!("x{:.3} / x{:.3}", f.min, f.median)
            } else {
                format!("{:+.4} / {:+.4}", f.min, f.median)
            };
            let _ = writeln!(s, "  {:<44} {:>19}  {}  {}", f.name, v, f.verdict(), f.detail);
        }
    }
    for o in outcomes {
        for (t, r) in &o.runs {
            if let Err(e) = r {
                let _ = writeln!(s, "\nFAILED {} ({}): {e:#}", o.case.label, t.name());
            } else if let Ok(RunResult { error: Some(e), .. }) = r {
                let _ = writeln!(s, "\nnote {} ({}): {e}", o.case.label, t.name());
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(s);
        for n in notes {
            let _ = writeln!(s, "note: {n}");
        }
    }
    s
}

/// `target/bench/probes.json` (its header is every benchmark's: [`header`]).
#[derive(Serialize)]
struct ProbesJson<'a> {
    #[serde(flatten)]
    header: Header,
    method: ProbesMethod,
    goals: ProbesGoals,
    cases: Vec<CaseJson<'a>>,
    figures: Vec<FigureJson<'a>>,
    notes: &'a [String],
}

#[derive(Serialize)]
struct ProbesMethod {
    reps: usize,
    iterations_unattached: u64,
    iterations_attached: u64,
    unit: &'static str,
    bench_cpu: u32,
    tracer_cpu: u32,
    tprof_ring_mib: u32,
    loop_alignment: u32,
    judged_on: &'static str,
}

#[derive(Serialize)]
struct ProbesGoals {
    unattached_ns_per_site_over_empty_max: f64,
    attached_tprof_over_bpftrace_empty_max: f64,
}

#[derive(Serialize)]
struct CaseJson<'a> {
    case: &'static str,
    lang: &'static str,
    label: &'static str,
    sites: u32,
    /// By tracer, in the order they ran.
    runs: InOrder<&'static str, RunJson<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum RunJson<'a> {
    Failed {
        error: String,
    },
    Ran {
        iterations: u64,
        samples: &'a [f64],
        min: f64,
        median: f64,
        /// Present for tprof's runs: from its closing `session` object.
        #[serde(skip_serializing_if = "Option::is_none")]
        tprof_records: Option<Option<u64>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tprof_kernel_drops: Option<Option<u64>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<&'a str>,
    },
}

#[derive(Serialize)]
struct FigureJson<'a> {
    group: &'static str,
    name: &'a str,
    unit: &'static str,
    min: f64,
    median: f64,
    goal_max: Option<f64>,
    met: Option<bool>,
    missed_by: Option<f64>,
    detail: &'a str,
}

fn run_json(r: &Result<RunResult>) -> RunJson<'_> {
    match r {
        Err(e) => RunJson::Failed { error: format!("{e:#}") },
        Ok(r) => RunJson::Ran {
            iterations: r.iterations,
            samples: &r.samples.0,
            min: r.samples.min(),
            median: r.samples.median(),
            tprof_records: r.tprof_session.as_deref().map(|s| json_u64(s, "records")),
            tprof_kernel_drops: r.tprof_session.as_deref().map(|s| json_u64(s, "kernel_drops_total")),
            note: r.error.as_deref(),
        },
    }
}

fn to_json<'a>(outcomes: &'a [Outcome], figures: &'a [Figure], notes: &'a [String], tprof: &Path, elapsed: Duration) -> ProbesJson<'a> {
    let cases = outcomes
        .iter()
        .map(|o| CaseJson {
            case: o.case.arg,
            lang: if o.case.lang == Lang::Rust { "rust" } else { "c" },
            label: o.case.label,
            sites: o.case.sites,
            runs: InOrder(o.runs.iter().map(|(t, r)| (t.name(), run_json(r))).collect()),
        })
        .collect();
    let figures = figures
        .iter()
        .map(|f| FigureJson {
            group: f.group,
            name: &f.name,
            unit: f.unit,
            min: f.min,
            median: f.median,
            goal_max: f.goal_max,
            met: f.met(),
            missed_by: f.goal_max.filter(|g| f.median > *g).map(|g| f.median - g),
            detail: &f.detail,
        })
        .collect();
    ProbesJson {
        header: header("probes", tprof, elapsed),
        method: ProbesMethod {
            reps: REPS,
            iterations_unattached: ITERS_UNATTACHED,
            iterations_attached: ITERS_ATTACHED,
            unit: "ns per loop iteration",
            bench_cpu: 0,
            tracer_cpu: 1,
            tprof_ring_mib: TPROF_RING_MIB,
            loop_alignment: 64,
            judged_on: "median",
        },
        goals: ProbesGoals {
            unattached_ns_per_site_over_empty_max: GOAL_UNATTACHED_NS_PER_SITE,
            attached_tprof_over_bpftrace_empty_max: GOAL_ATTACHED_RATIO,
        },
        cases,
        figures,
        notes,
    }
}
