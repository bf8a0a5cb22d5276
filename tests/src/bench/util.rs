//! Helpers of the benchmark driver alone: where the workspace and its build outputs are,
//! cargo, pinning, machine facts, JSON fields. What it shares with the end-to-end tests
//! (child processes killed on every path, line readers with timeouts, signals) is in
//! [`crate::child`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

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

/// The unsigned field `key` of a JSON object line (tprof's or the bare tracer's `session`).
pub(crate) fn json_u64(line: &str, key: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line).ok()?.get(key)?.as_u64()
}

/// The workspace root (the tests crate lives one level below it).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `cargo` (the one that runs us, if any), in the workspace root.
pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs `cmd`; an error if it cannot start or fails.
pub(crate) fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Where cargo puts binaries for the dev profile.
pub(crate) fn bin_dir() -> PathBuf {
    target_dir().join("debug")
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
