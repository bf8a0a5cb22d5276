//! The benchmarks: `cargo xtask bench [probes|kernel|e2e|throughput|joined|all|soak]` builds
//! and runs the `tprof-bench` binary (`tests/src/bin/tprof-bench.rs`), which calls [`run`]
//! with the same arguments. What tprof costs, every figure a ratio to (or a difference from)
//! a baseline measured in the same run, repeated, with min (best) / median shown and goals
//! judged on the median. Each benchmark prints a table and writes `target/bench/<name>.json`;
//! a goal that is missed says by how much. Goals are reported here, never asserted in tests.
//!
//! - `probes` ([`probes`]): per-call probe cost, unattached and attached.
//! - `kernel` ([`kernel`]): a syscall-heavy and a context-switch-heavy microbenchmark,
//!   untraced vs traced by tprof vs a bare tp_btf+record program vs bpftrace.
//! - `e2e` ([`e2e`]): the example service under wrk, untraced vs traced.
//! - `throughput` ([`throughput`]): the highest record rate tprof takes with zero drops,
//!   and an overload (drops counted, memory bounded).
//! - `joined` ([`joined`]): how soon a process that starts mapping a `--binary` is traced.
//! - `sampling` ([`sampling`], not in `all`): what on-CPU sampling at the default rate costs
//!   the saturated example service, against sampling off.
//! - `soak` (not in `all`): tprof's memory over a long run (`--minutes N`, default 10).
//!
//! Benchmarks run on CPU 0, tracers and load generators on CPU 1 (`taskset`). The kernel,
//! e2e, throughput and soak benchmarks use release builds (tprof, the example service, the
//! benchmark binaries of `tests/src/bin`), built here.
//!
//! # Why here, in the tests crate
//!
//! A benchmark is the driver (this module) plus the workloads it runs: `tests/src/bin/`
//! `{sys,switch,flood,probe}-bench`, `bare-tracer`, `demo-service`, `tprof-target` and the
//! workloads' side of the handshake ([`workload`]). Those binaries belong to this crate, as
//! the end-to-end tests run several of them too; the driver and the tests start, read, signal
//! and kill the same kinds of processes, with one set of helpers ([`crate::child`]). Keeping
//! the driver beside them puts the benchmark code in one crate, and keeps xtask light: it
//! builds before `cargo xtask setup` on a fresh machine, so it takes no tokio, axum or aya
//! dependencies and only wraps this binary (`xtask/src/main.rs`, `bench`).

mod e2e;
mod joined;
mod kernel;
mod probes;
mod procs;
mod report;
mod sampling;
mod throughput;
mod util;
pub mod workload;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};

use self::procs::Bins;
use self::report::Judged;
use self::util::{cargo, cpu_busy, have, is_root, status, target_dir};

const USAGE: &str = "usage: cargo xtask bench [all|probes|kernel|e2e|throughput|joined|sampling|soak] [options]
  all (default)   probes, kernel, e2e, throughput and joined in turn (about 4-5 minutes)
  probes          per-call probe cost, unattached and attached (target/bench/probes.json)
                  [--unattached-only] [--tprof PATH] (default target/debug/tprof)
  kernel          getppid loop and futex ping-pong: untraced vs tprof vs a bare tp_btf+record
                  program vs an equivalent bpftrace script (target/bench/kernel.json)
  e2e             the example service under wrk: untraced vs traced throughput and p50/p99,
                  tprof's CPU and peak RSS (target/bench/e2e.json)
  throughput      highest record rate with zero drops, and an overload (target/bench/throughput.json)
  joined          delay from a process's start to tprof tracing it with --binary (target/bench/joined.json)
  sampling        the example service saturated, traced with on-CPU sampling at the default rate
                  vs --sample-hz 0 (target/bench/sampling.json; not part of `all`; needs wrk)
  soak [--minutes N] [--rate R]  tprof's memory over N minutes (default 10) at R records/s
                  (default 500000); not part of `all` (target/bench/soak.json)
  --tprof PATH    tprof binary for kernel/e2e/throughput/soak (default: target/release/tprof,
                  built here: tprof's own CPU per event is a release-build figure)
Everything attached needs root (sudo -E cargo xtask bench ...). `wrk` (apt) is needed by e2e.";

/// Builds the release binaries of the kernel/e2e/throughput/soak benchmarks.
fn prepare(tprof: Option<PathBuf>) -> Result<Bins> {
    let release = target_dir().join("release");
    if tprof.is_none() {
        status(cargo().args(["build", "--release", "-p", "profiler-user", "--bin", "tprof"]))?;
    }
    status(cargo().args(["build", "--release", "-p", "tprof-tests"]).args([
        "--bin",
        "sys-bench",
        "--bin",
        "switch-bench",
        "--bin",
        "flood-bench",
        "--bin",
        "bare-tracer",
        "--bin",
        "demo-service",
        "--bin",
        "tprof-target",
    ]))?;
    let tprof = tprof.unwrap_or_else(|| release.join("tprof"));
    if !tprof.exists() {
        bail!("{} not found", tprof.display());
    }
    let pin = Command::new("taskset").args(["-c", "1", "true"]).status().map(|s| s.success()).unwrap_or(false);
    if pin {
        // This driver and its reader threads stay off the benchmarks' CPU.
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    Ok(Bins {
        tprof,
        sys_bench: release.join("sys-bench"),
        switch_bench: release.join("switch-bench"),
        flood_bench: release.join("flood-bench"),
        bare_tracer: release.join("bare-tracer"),
        example: release.join("demo-service"),
        target: release.join("tprof-target"),
        pin,
    })
}

/// Notes that apply to every benchmark of a run.
pub(crate) fn preamble(notes: &mut Vec<String>, bins: &Bins) {
    let busy = cpu_busy(std::time::Duration::from_millis(300));
    if busy.iter().any(|b| *b > 0.10) {
        let pct: Vec<String> = busy.iter().enumerate().map(|(i, b)| format!("cpu{i} {:.0}%", b * 100.0)).collect();
        notes.push(format!(
            "the machine was busy before the run ({}): expect noisy figures, compare the best values",
            pct.join(", ")
        ));
    }
    if !bins.pin {
        notes.push("taskset not found: nothing was pinned (benchmark and tracer share CPUs)".into());
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let which = args.first().map(String::as_str).unwrap_or("all");
    match which {
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return Ok(());
        }
        "probes" => return probes::run(args),
        "all" | "kernel" | "e2e" | "throughput" | "joined" | "sampling" | "soak" => {}
        other => bail!("unknown benchmark {other:?}\n{USAGE}"),
    }
    let mut tprof: Option<PathBuf> = None;
    let (mut minutes, mut rate) = (10.0f64, 500_000u64);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| anyhow!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--tprof" => tprof = Some(PathBuf::from(value()?)),
            "--minutes" if which == "soak" => {
                minutes = value()?.parse().ok().filter(|m: &f64| *m > 0.0).ok_or_else(|| anyhow!("--minutes N"))?
            }
            "--rate" if which == "soak" => {
                rate = value()?.parse().ok().filter(|r: &u64| *r > 0).ok_or_else(|| anyhow!("--rate R"))?
            }
            other => bail!("unknown option {other:?} for bench {which}\n{USAGE}"),
        }
    }
    let started = Instant::now();
    let root_ok = is_root();
    if !root_ok {
        eprintln!(
            "bench: not root: the attached parts (tprof, bpftrace, the bare tracer) need root; \
             only untraced baselines run (sudo -E cargo xtask bench {which})"
        );
    }
    let mut judged: Vec<(&str, Vec<Judged>)> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    if which == "all" {
        let mut pargs = vec!["probes".to_string()];
        if let Some(t) = &tprof {
            pargs.push("--tprof".into());
            pargs.push(t.display().to_string());
        }
        if let Err(e) = probes::run(&pargs) {
            eprintln!("bench probes: {e:#}");
            failed.push(format!("probes: {e:#}"));
        }
    }
    let bins = prepare(tprof)?;
    eprintln!("bench: tprof {}", bins.tprof.display());
    let steps: Vec<&str> = match which {
        "all" => vec!["kernel", "e2e", "throughput", "joined"],
        w => vec![w],
    };
    for step in steps {
        let r = match step {
            "kernel" => kernel::run(&bins, root_ok),
            "e2e" => {
                if have("wrk") {
                    e2e::run(&bins, root_ok)
                } else {
                    Err(anyhow!("wrk not found: apt-get install -y wrk"))
                }
            }
            "throughput" => throughput::run(&bins, root_ok),
            "joined" => joined::run(&bins, root_ok).map(|()| Vec::new()),
            "sampling" => {
                if have("wrk") {
                    sampling::run(&bins, root_ok)
                } else {
                    Err(anyhow!("wrk not found: apt-get install -y wrk"))
                }
            }
            "soak" => throughput::soak(&bins, root_ok, minutes, rate),
            _ => unreachable!(),
        };
        match r {
            Ok(j) => judged.push((step, j)),
            Err(e) => {
                eprintln!("bench {step}: {e:#}");
                failed.push(format!("{step}: {e:#}"));
            }
        }
    }
    if which == "all" || judged.len() > 1 {
        println!("\n== goals of this run ({:.0} s; probes: see its table above)", started.elapsed().as_secs_f64());
        for (step, figs) in &judged {
            for f in figs.iter().filter(|f| f.goal.is_some()) {
                println!("  {step:<10} {:<52} {}", f.name, f.verdict());
            }
        }
    }
    if !failed.is_empty() {
        bail!("some benchmarks failed:\n  {}", failed.join("\n  "));
    }
    Ok(())
}
