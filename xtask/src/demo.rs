//! `cargo xtask demo [SECONDS]`: two instances of the axum demo service
//! (`tests/src/bin/demo-service.rs`: a front whose `/chain` calls the back's `/sleep`,
//! propagating `traceparent`), load on the front from its own load generator (`load`),
//! and `tprof attach` on both, streaming each request's kernel story live, then a summary:
//! one trace crosses the two processes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::bin_dir;

/// Kills the child on drop, so the demo never leaves services running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `demo-service serve`, returns it with its bound address and pid.
fn serve(extra: &[&str]) -> Result<(Guard, String)> {
    let exe = bin_dir().join("demo-service");
    let mut child = Command::new(&exe)
        .args(["serve", "--addr", "127.0.0.1:0", "--stop-on-stdin-eof"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let guard = Guard(child);
    let line = first_line(stdout, "listening on ")?;
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|r| r.split_whitespace().next())
        .ok_or_else(|| anyhow!("unexpected service banner {line:?}"))?
        .to_string();
    Ok((guard, addr))
}

fn first_line(stdout: ChildStdout, prefix: &str) -> Result<String> {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        if line.starts_with(prefix) {
            let l = line.trim().to_string();
            // Keep draining the service's stdout in the background so it never blocks.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            return Ok(l);
        }
        line.clear();
    }
    bail!("process exited before printing {prefix:?}")
}

pub fn run(args: &[String]) -> Result<()> {
    let secs: u64 = match args.first() {
        Some(s) => s.parse().with_context(|| format!("demo takes a number of seconds, got {s:?}"))?,
        None => 5,
    };
    if !crate::is_root() {
        bail!("the demo attaches eBPF programs and needs root: run `sudo -E cargo xtask demo`");
    }
    let (back, back_addr) = serve(&[])?;
    let (front, front_addr) = serve(&["--downstream", &back_addr])?;
    let pids = [front.0.id(), back.0.id()];
    eprintln!("demo: front {front_addr} (pid {}), back {back_addr} (pid {})", pids[0], pids[1]);

    let tprof = bin_dir().join("tprof");
    let mut t = Command::new(&tprof)
        .args(["attach", "--pid", &pids[0].to_string(), "--pid", &pids[1].to_string()])
        .args(["--duration", &format!("{}s", secs + 2)])
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tprof.display()))?;
    let stderr = t.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let mut tprof_guard = Guard(t);
    let mut err = BufReader::new(stderr);
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        line.clear();
        if err.read_line(&mut line)? == 0 || Instant::now() > deadline {
            bail!("tprof exited before attaching: {}", line.trim());
        }
        eprint!("{line}");
        if line.starts_with("tprof: attached") {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut l = String::new();
        while err.read_line(&mut l).map(|n| n > 0).unwrap_or(false) {
            eprint!("{l}");
            let _ = std::io::stderr().flush();
            l.clear();
        }
    });
    let load = Command::new(bin_dir().join("demo-service"))
        .args(["load", "--target", &front_addr, "--rps", "20", "--seconds", &secs.to_string()])
        .args(["--paths", "/sleep,/cpu,/lock,/chain"])
        .stdout(Stdio::piped())
        .output()
        .context("running the load generator")?;
    let st = tprof_guard.0.wait()?;
    eprintln!("demo: {}", String::from_utf8_lossy(&load.stdout).trim());
    if !st.success() {
        bail!("tprof failed ({st})");
    }
    drop(front);
    drop(back);
    Ok(())
}
