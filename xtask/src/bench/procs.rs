//! Processes of the kernel, end-to-end and throughput benchmarks: the benchmark binaries
//! (`ready <pid>` / go-line protocol), the tracers (tprof, bpftrace, bare-tracer) with their
//! readiness lines and closing session line, and a watcher that samples a process's CPU time
//! and memory from /proc while it runs. Every child is held by a [`Guard`]: killed and
//! reaped on every path out.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::util::{expect_line, line_reader, signal, tail, wait_exit, Guard};

/// How long a tracer may take to say it is attached.
const PATIENCE: Duration = Duration::from_secs(60);

/// `taskset -c <cpu> <program>` (or the program itself when not pinning).
pub(crate) fn pinned(program: &Path, cpu: Option<u32>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Clock ticks per second of /proc/PID/stat's utime and stime (`getconf CLK_TCK`; 100 if
/// that fails, the value on every Linux this runs on).
pub(crate) fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// One look at a process in /proc.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcSample {
    pub(crate) at: Instant,
    /// utime + stime of all its threads, from /proc/PID/stat, in ns (clock-tick resolution).
    pub(crate) cpu_ns: u64,
    /// Sum of its threads' run time from /proc/PID/task/*/schedstat (ns resolution), if
    /// the kernel has schedstats.
    pub(crate) run_ns: Option<u64>,
    pub(crate) rss_kib: u64,
    /// Anonymous memory only (its heap; not the mapped BPF ring buffer).
    pub(crate) anon_kib: u64,
    /// Peak resident set size so far (VmHWM).
    pub(crate) hwm_kib: u64,
}

/// Reads /proc/PID now; None once the process is gone.
pub(crate) fn proc_sample(pid: u32) -> Option<ProcSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the comm's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    let cpu_ns = ticks.saturating_mul(1_000_000_000) / clk_tck();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // An exiting process (zombie) has no memory lines left: nothing to sample.
    if !status.lines().any(|l| l.starts_with("VmRSS:")) {
        return None;
    }
    let mut run_ns = None;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let mut sum = 0u64;
        let mut any = false;
        for e in dir.flatten() {
            let p = e.path().join("schedstat");
            if let Some(v) =
                std::fs::read_to_string(p).ok().and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                sum += v;
                any = true;
            }
        }
        if any {
            run_ns = Some(sum);
        }
    }
    Some(ProcSample { at, cpu_ns, run_ns, rss_kib: kib("VmRSS:"), anon_kib: kib("RssAnon:"), hwm_kib: kib("VmHWM:") })
}

/// Samples a process every `every` on a thread, until stopped or the process is gone
/// (VmHWM disappears with the process, so the last sample is the peak we can know).
pub(crate) struct ProcWatch {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<ProcSample>>>,
    handle: Option<JoinHandle<()>>,
}

impl ProcWatch {
    pub(crate) fn start(pid: u32, every: Duration) -> ProcWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s2, v2) = (Arc::clone(&stop), Arc::clone(&samples));
        let handle = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let Some(s) = proc_sample(pid) else { break };
                if let Ok(mut v) = v2.lock() {
                    v.push(s);
                }
                std::thread::sleep(every);
            }
        });
        ProcWatch { stop, samples, handle: Some(handle) }
    }

    /// The samples so far.
    pub(crate) fn snapshot(&self) -> Vec<ProcSample> {
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub(crate) fn finish(mut self) -> Vec<ProcSample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.snapshot()
    }
}

impl Drop for ProcWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The largest VmHWM seen.
pub(crate) fn peak_hwm_kib(samples: &[ProcSample]) -> u64 {
    samples.iter().map(|s| s.hwm_kib).max().unwrap_or(0)
}

// ---- benchmark processes ------------------------------------------------------------------

/// A benchmark binary that printed `ready <pid>` and waits for a line on stdin.
pub(crate) struct BenchProc {
    pub(crate) guard: Guard,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    err: Receiver<String>,
    pub(crate) pid: u32,
    pub(crate) who: String,
    seen: Vec<String>,
}

impl BenchProc {
    pub(crate) fn spawn(mut cmd: Command, who: &str) -> Result<BenchProc> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let stdin = child.stdin.take();
        let out = line_reader(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let err = line_reader(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?);
        let mut p = BenchProc { guard: Guard(child), stdin, out, err, pid: 0, who: who.to_string(), seen: Vec::new() };
        let ready = p.expect("ready ", Duration::from_secs(30))?;
        p.pid =
            ready.trim_start_matches("ready ").trim().parse().with_context(|| format!("{who}: bad line {ready:?}"))?;
        Ok(p)
    }

    /// Sends the go line.
    pub(crate) fn go(&mut self) -> Result<()> {
        let who = self.who.clone();
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("{who}: go sent twice"))?;
        writeln!(stdin, "go").and_then(|()| stdin.flush()).with_context(|| format!("{who}: sending the go line"))?;
        self.stdin = None;
        Ok(())
    }

    /// Waits for a stdout line starting with `prefix`; on failure, says what it printed on
    /// stderr.
    pub(crate) fn expect(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let who = self.who.clone();
        expect_line(&self.out, prefix, timeout, &mut self.seen, &who).map_err(|e| {
            let mut lines = Vec::new();
            while let Ok(l) = self.err.recv_timeout(Duration::from_millis(100)) {
                lines.push(l);
            }
            if lines.is_empty() {
                e
            } else {
                e.context(format!("stderr: {}", tail(&lines)))
            }
        })
    }

    /// Waits for it to exit (it does once it printed its result); killed by the guard otherwise.
    pub(crate) fn finish(mut self) {
        let _ = wait_exit(&mut self.guard.0, Duration::from_secs(10));
    }
}

/// `ns_per_iter a b c ...` → the values.
pub(crate) fn parse_samples(line: &str, who: &str) -> Result<Vec<f64>> {
    line.split_whitespace()
        .skip(1)
        .map(|s| s.parse::<f64>().with_context(|| format!("{who}: bad sample {s:?} in {line:?}")))
        .collect()
}

/// `key=<unsigned>` in a `done ...` line.
pub(crate) fn kv_u64(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

// ---- tracers ------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TracerKind {
    Tprof,
    Bpftrace,
    Bare,
}

/// A tracer that said it is attached.
pub(crate) struct Tracer {
    guard: Guard,
    kind: TracerKind,
    session: Option<JoinHandle<Option<String>>>,
    errs: Arc<Mutex<Vec<String>>>,
    watch: Option<ProcWatch>,
    pub(crate) pid: u32,
    who: String,
}

/// What a stopped tracer left.
#[derive(Default)]
pub(crate) struct Stopped {
    /// The closing `session` JSON line (tprof, bare-tracer).
    pub(crate) session: Option<String>,
    /// /proc samples taken every 100 ms while it ran.
    pub(crate) samples: Vec<ProcSample>,
    pub(crate) error: Option<String>,
}

impl Tracer {
    /// Starts `cmd` (already pinned) and waits for its readiness line.
    pub(crate) fn start(kind: TracerKind, mut cmd: Command, who: &str) -> Result<Tracer> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr = line_reader(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?);
        let guard = Guard(child);
        let errs = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut seen = Vec::new();
        let collect_rest = |rx: Receiver<String>, errs: &Arc<Mutex<Vec<String>>>| {
            let sink = Arc::clone(errs);
            std::thread::spawn(move || {
                while let Ok(l) = rx.recv() {
                    if let Ok(mut v) = sink.lock() {
                        if v.len() < 200 {
                            v.push(l);
                        }
                    }
                }
            });
        };
        let session_reader = |stdout: std::process::ChildStdout| {
            std::thread::spawn(move || {
                let mut session = None;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("\"type\":\"session\"") {
                        session = Some(line);
                    }
                }
                session
            })
        };
        let session = match kind {
            TracerKind::Tprof | TracerKind::Bare => {
                let h = session_reader(stdout);
                let prefix = if kind == TracerKind::Tprof { "tprof: attached" } else { "bare-tracer: attached" };
                expect_line(&stderr, prefix, PATIENCE, &mut seen, who)?;
                collect_rest(stderr, &errs);
                Some(h)
            }
            TracerKind::Bpftrace => {
                let out = line_reader(stdout);
                collect_rest(stderr, &errs);
                if let Err(e) = expect_line(&out, "xtask-bench: attached", PATIENCE, &mut seen, who) {
                    std::thread::sleep(Duration::from_millis(200));
                    let said = errs.lock().map(|v| tail(&v)).unwrap_or_default();
                    bail!("{e:#}; stderr: {said}");
                }
                std::thread::spawn(move || while out.recv().is_ok() {});
                None
            }
        };
        let watch = Some(ProcWatch::start(pid, Duration::from_millis(100)));
        Ok(Tracer { guard, kind, session, errs, watch, pid, who: who.to_string() })
    }

    /// The samples taken so far.
    pub(crate) fn samples(&self) -> Vec<ProcSample> {
        self.watch.as_ref().map(ProcWatch::snapshot).unwrap_or_default()
    }

    /// SIGINT, then waits for its exit (tprof drains its ring and prints its session line).
    pub(crate) fn stop(mut self, timeout: Duration) -> Stopped {
        // A stopped process (SIGSTOP by the overload step) must run again to see SIGINT.
        signal(self.pid, "-CONT");
        signal(self.pid, "-INT");
        let mut st = Stopped::default();
        if !wait_exit(&mut self.guard.0, timeout) {
            st.error = Some(format!("{} did not exit within {timeout:?} of SIGINT; killed", self.who));
            let _ = self.guard.0.kill();
        }
        let _ = self.guard.0.wait();
        if let Some(w) = self.watch.take() {
            st.samples = w.finish();
        }
        if let Some(h) = self.session.take() {
            st.session = h.join().ok().flatten();
        }
        if st.session.is_none() && self.kind != TracerKind::Bpftrace {
            let said = self.errs.lock().map(|v| tail(&v)).unwrap_or_default();
            let msg = format!("{} printed no session line; stderr: {said}", self.who);
            st.error = Some(match st.error.take() {
                Some(e) => format!("{e}; {msg}"),
                None => msg,
            });
        }
        st
    }
}

/// The binaries the kernel, end-to-end and throughput benchmarks run (release builds).
pub(crate) struct Bins {
    pub(crate) tprof: PathBuf,
    pub(crate) sys_bench: PathBuf,
    pub(crate) switch_bench: PathBuf,
    pub(crate) flood_bench: PathBuf,
    pub(crate) bare_tracer: PathBuf,
    pub(crate) example: PathBuf,
    /// The e2e tests' target program (requests of known behaviour).
    pub(crate) target: PathBuf,
    /// Tracers and load generators go to CPU 1 and benchmarks to CPU 0 (taskset works).
    pub(crate) pin: bool,
}

impl Bins {
    pub(crate) fn bench_cpu(&self) -> Option<u32> {
        self.pin.then_some(0)
    }

    pub(crate) fn tracer_cpu(&self) -> Option<u32> {
        self.pin.then_some(1)
    }
}
