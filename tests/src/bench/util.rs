//! Helpers shared by the benchmarks (moved out of the former bench.rs): child processes
//! killed on every path, line readers with timeouts, pinning, machine facts, JSON strings.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::root;

/// ns per loop iteration, one value per repetition.
#[derive(Clone, Default)]
pub(crate) struct Samples(pub(crate) Vec<f64>);

impl Samples {
    pub(crate) fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub(crate) fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
}

/// A child killed (SIGKILL) and reaped on drop, whatever path we leave by.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a pipe's lines on a thread, so that we can wait for them with a timeout.
pub(crate) fn line_reader(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line starting with `prefix`; other lines are appended to `seen`.
pub(crate) fn expect_line(
    rx: &Receiver<String>,
    prefix: &str,
    timeout: Duration,
    seen: &mut Vec<String>,
    who: &str,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with(prefix) => return Ok(l),
            Ok(l) => seen.push(l),
            Err(RecvTimeoutError::Timeout) => {
                bail!("{who}: no {prefix:?} line after {timeout:?}; it said: {}", tail(seen))
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!("{who} exited before printing {prefix:?}; it said: {}", tail(seen))
            }
        }
    }
}

pub(crate) fn tail(lines: &[String]) -> String {
    let keep: Vec<&String> = lines.iter().filter(|l| !l.trim().is_empty()).collect();
    let start = keep.len().saturating_sub(8);
    let t: Vec<&str> = keep[start..].iter().map(|s| s.as_str()).collect();
    if t.is_empty() {
        "(nothing)".into()
    } else {
        t.join(" | ")
    }
}

pub(crate) fn have(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// `taskset -c 1 <program>` when taskset exists (it always does with util-linux).
pub(crate) fn on_cpu1(program: &Path, pin: bool) -> Command {
    if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).stderr(Stdio::null()).status();
}

/// Waits for a child to exit, up to `timeout`; false if it is still running.
pub(crate) fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

pub(crate) fn drain_in_background(rx: Receiver<String>) {
    std::thread::spawn(move || while rx.recv().is_ok() {});
}

/// The unsigned field `key` of a JSON object line (tprof's or the bare tracer's `session`).
pub(crate) fn json_u64(line: &str, key: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line).ok()?.get(key)?.as_u64()
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

pub(crate) fn bench_dir() -> PathBuf {
    target_dir().join("bench")
}

/// Per-CPU busy fraction over `window`, from /proc/stat (empty if unreadable).
pub(crate) fn cpu_busy(window: Duration) -> Vec<f64> {
    fn sample() -> Vec<(u64, u64)> {
        read_trim("/proc/stat")
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .map(|l| {
                let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                let total: u64 = v.iter().sum();
                let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                (total, idle)
            })
            .collect()
    }
    let a = sample();
    std::thread::sleep(window);
    let b = sample();
    a.iter()
        .zip(&b)
        .map(|((t0, i0), (t1, i1))| {
            let dt = t1.saturating_sub(*t0);
            if dt == 0 {
                0.0
            } else {
                1.0 - i1.saturating_sub(*i0) as f64 / dt as f64
            }
        })
        .collect()
}

pub(crate) fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

pub(crate) fn cpu_model() -> String {
    read_trim("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_default()
}

pub(crate) fn git_head() -> Option<String> {
    let o = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(root()).stderr(Stdio::null()).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}
