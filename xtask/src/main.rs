//! `cargo xtask <command>`: the project's own automation.
//!
//! - `setup`: install what a fresh machine needs (apt packages, bpf-linker on LLVM 22);
//!   idempotent, and quick when everything is there.
//! - `build`: build everything (the eBPF object is built by profiler-user/build.rs).
//! - `test`: every test, the end-to-end ones (root) included.
//! - `demo`: start the bundled example service under load and attach tprof to it.
//! - `dist`: one optimized, static `tprof` with man pages and completions, in `target/dist/`.
//! - `install [--prefix DIR]`: `dist`, then copy it into `/usr/local` (or DIR).
//! - `bench [probes|kernel|e2e|throughput|joined|all|soak|sampling]`: what tprof costs (default `all`);
//!   the driver is the tests crate's `tprof-bench` binary (`tests/src/bench/`), run from here.
//!
//! The other commands run `setup` first when something is missing, and say what they install.

mod bench;
mod demo;
mod dist;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <setup|build|test|demo|dist|install|bench> [args]
  setup            install the apt packages and bpf-linker this project needs (idempotent)
  build            build tprof, the eBPF programs, the example service and test targets
  test [--under-load] [ARGS]
                   run every test (unit tests, then the root-only end-to-end tests);
                   --under-load: with a busy thread per CPU beside them
  demo [SECONDS]   run the example service under load and stream tprof's view of it
  dist             release tprof (static), man pages, completions and a tarball in target/dist/
  install [--prefix DIR] [--no-build]
                   dist, then copy it into DIR (default /usr/local): bin/, share/man, completions
  bench [WHICH]    what tprof costs, tables + target/bench/*.json (WHICH, default all):
    probes           per-call probe cost, unattached and attached
    kernel           syscall and context-switch microbenchmarks: untraced, tprof, bare tp_btf, bpftrace
    e2e              the example service under wrk, untraced vs traced
    throughput       highest record rate with zero drops, and an overload
    joined           delay from a process's start to tprof tracing it (--binary)
    all              the five above (about 5 minutes)
    soak [--minutes N]  tprof's memory over a long run (default 10 minutes; not in all)
    sampling         what on-CPU sampling costs the saturated example service (not in all)
    (cargo xtask bench --help: every option)";

fn run(args: &[String]) -> Result<()> {
    let cmd = args.first().map(String::as_str).unwrap_or("help");
    let rest = args.get(1..).unwrap_or_default();
    match cmd {
        "setup" => setup::run(),
        "build" => {
            setup::ensure()?;
            build()
        }
        "test" => {
            setup::ensure()?;
            test(rest)
        }
        "demo" => {
            setup::ensure()?;
            build()?;
            demo::run(rest)
        }
        "dist" => {
            setup::ensure()?;
            dist::dist().map(drop)
        }
        "install" => dist::install(rest),
        "bench" => bench::run(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Where cargo puts binaries for the dev profile.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target")).join("debug")
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

pub fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn build() -> Result<()> {
    status(cargo().args(["build", "--workspace", "--all-targets"]))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|u| u.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn test(args: &[String]) -> Result<()> {
    // `--under-load`: the whole suite with a CPU hog beside it (one busy thread per CPU, at
    // the tests' own priority), as on a shared CI machine: attribution is checked against the
    // kernel's own accounting, so it must hold there too.
    let under_load = args.iter().any(|a| a == "--under-load");
    let extra: Vec<String> = args.iter().filter(|a| *a != "--under-load").cloned().collect();
    let extra = extra.as_slice();
    let _hog = under_load.then(CpuHog::start);
    build()?;
    let mut totals = Totals::default();
    // Unit and crate tests: no root needed.
    let mut unit = cargo();
    unit.args(["test", "--workspace", "--exclude", "tprof-tests"]).args(extra);
    totals.run(&mut unit)?;
    // usdt-probes' optional integrations (tracing, tower) are tested with their features on.
    let mut features = cargo();
    features.args(["test", "-p", "usdt-probes", "--all-features"]).args(extra);
    totals.run(&mut features)?;
    // End-to-end: real eBPF on real processes. They need root (CAP_SYS_ADMIN, CAP_BPF,
    // CAP_PERFMON) and run one at a time, so that timing-sensitive workloads do not compete
    // for the 2 CPUs. `--tests`: the harness crate has no doctests to run.
    if !is_root() {
        bail!("the end-to-end tests attach eBPF programs and need root: run `sudo -E cargo xtask test`");
    }
    let mut e2e = cargo();
    e2e.args(["test", "-p", "tprof-tests", "--tests", "--no-fail-fast"]).args(extra).args(["--", "--test-threads=1"]);
    // The release build an operator installs: tests/tests/dist.rs runs it from a copy.
    let dist = dist::dist()?;
    e2e.env("TPROF_BIN", bin_dir().join("tprof"))
        .env("TPROF_DIST_DIR", &dist)
        .env("TPROF_XTASK_BIN", bin_dir().join("xtask"))
        .env("TPROF_TARGET_BIN", bin_dir().join("tprof-target"))
        .env("TPROF_EXAMPLE_BIN", bin_dir().join("demo-service"))
        .env("TPROF_FAULT_TARGET_BIN", bin_dir().join("fault-target"));
    totals.run(&mut e2e)?;
    // One closing line over every test binary (cargo prints one per binary).
    println!("xtask: {} passed, {} failed", totals.passed, totals.failed);
    Ok(())
}

/// Busy threads, one per CPU, until dropped.
struct CpuHog {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHog {
    fn start() -> CpuHog {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        println!("xtask: under load: {n} busy threads beside the tests");
        let threads = (0..n)
            .map(|_| {
                let stop = std::sync::Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                })
            })
            .collect();
        CpuHog { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Passed/failed counts summed over cargo's `test result:` lines.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    /// Runs a `cargo test`, echoing its output and adding up its results.
    fn run(&mut self, cmd: &mut Command) -> Result<()> {
        use std::io::BufRead;
        cmd.stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("running {cmd:?}"))?;
        let out = child.stdout.take().context("cargo test stdout")?;
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| {
                    rest.split(';').find_map(|part| part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse::<u64>().ok())
                };
                self.passed += count(" passed").or_else(|| count("passed")).unwrap_or(0);
                self.failed += count(" failed").or_else(|| count("failed")).unwrap_or(0);
            }
        }
        let st = child.wait()?;
        if !st.success() {
            bail!("{cmd:?} failed ({st}); so far {} passed, {} failed", self.passed, self.failed);
        }
        Ok(())
    }
}
