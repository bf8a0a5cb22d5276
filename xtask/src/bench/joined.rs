//! `cargo xtask bench joined`: how soon tprof traces a process that joins its scope.
//!
//! `tprof attach --binary FILE` runs; processes of FILE are started one by one at random
//! moments, and the delay from each start (its `exec`) to tprof's `tracing pid N` line is
//! measured: the rescan period bounds it (a process *forked* by a traced one needs no such
//! wait: the kernel marks it traced before it runs, see docs/usage.md). Reported, not
//! judged against a goal; `target/bench/joined.json`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::procs::Bins;
use super::report::{header, stats, write_json, Header};

/// Processes started per run.
const STARTS: usize = 20;

#[derive(Serialize)]
struct JoinedJson {
    #[serde(flatten)]
    header: Header,
    starts: usize,
    delays_ms: Vec<f64>,
    min_ms: f64,
    median_ms: f64,
    max_ms: f64,
}

pub fn run(bins: &Bins, root: bool) -> Result<()> {
    if !root {
        bail!("needs root (tprof attaches)");
    }
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("tprof-bench-joined-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin = dir.join("tprof-target");
    std::fs::copy(&bins.target, &bin).with_context(|| format!("copying {}", bins.target.display()))?;
    let result = measure(bins, &bin);
    let _ = std::fs::remove_dir_all(&dir);
    let delays = result?;
    let (min, median, max) = stats(&delays);
    println!("\n== joined: delay from a process's start to tprof tracing it (--binary, {STARTS} starts)");
    println!("   min {min:.1} ms, median {median:.1} ms, max {max:.1} ms (the rescan period is 500 ms; forked children: 0, traced before they run)");
    let json = JoinedJson {
        header: header("joined", &bins.tprof, started.elapsed()),
        starts: delays.len(),
        delays_ms: delays.clone(),
        min_ms: min,
        median_ms: median,
        max_ms: max,
    };
    let path = write_json("joined", &json)?;
    println!("   {}", path.display());
    Ok(())
}

fn measure(bins: &Bins, bin: &Path) -> Result<Vec<f64>> {
    let mut tprof = Command::new(&bins.tprof)
        .args(["attach", "--format", "json", "--summary-only", "--duration", "120s", "--binary"])
        .arg(bin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tprof")?;
    let stderr = tprof.stderr.take().context("tprof's stderr")?;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let wait_for = |prefix: &str| -> Result<Instant> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok((at, l)) if l.starts_with(prefix) => return Ok(at),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        bail!("tprof never said {prefix:?}")
    };
    let outcome = (|| -> Result<Vec<f64>> {
        wait_for("tprof: attached")?;
        let mut delays = Vec::new();
        // A fixed sequence of pauses spread over the rescan period (the phase of each start
        // against the rescans is what varies the delay).
        for i in 0..STARTS {
            std::thread::sleep(Duration::from_millis(37 * (i as u64 % 13)));
            let t0 = Instant::now();
            let mut target = Command::new(bin).arg("sleep:1").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().context("starting the target")?;
            let seen = wait_for(&format!("tprof: tracing pid {}", target.id()));
            if let Some(stdin) = target.stdin.as_mut() {
                let _ = writeln!(stdin, "go");
            }
            let _ = target.wait();
            delays.push(seen?.duration_since(t0).as_secs_f64() * 1e3);
        }
        Ok(delays)
    })();
    let _ = tprof.kill();
    let _ = tprof.wait();
    outcome
}
