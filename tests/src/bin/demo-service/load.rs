//! `demo-service load`: the load generator (formerly the std-only example service's). Its
//! clients fire in step (at each tick all of them on the same path, the paths in
//! round-robin), so concurrent requests meet on the same endpoint and `/lock` contends. Each
//! request carries a new `traceparent` and must come back 2xx with one of the same trace.
//! Prints per-path figures on stderr and one `load: N requests, E errors, p50 .. ms, p99 ..
//! ms` line on stdout; exits 1 only if nothing got through. Blocking std I/O on threads:
//! nothing here runs on the service's runtime.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use usdt_probes::TraceContext;

use crate::{announce, loopback, note, number, CLIENT_IO};

/// The endpoints the load goes to by default.
const ENDPOINTS: [&str; 4] = ["/sleep", "/cpu", "/lock", "/chain"];

pub(crate) struct LoadConfig {
    target: SocketAddr,
    rps: u64,
    seconds: u64,
    paths: Vec<String>,
}

pub(crate) fn parse_load(args: &[String]) -> Result<LoadConfig, String> {
    let (mut target, mut rps, mut seconds) = (None, 40, 5);
    let mut paths: Vec<String> = ENDPOINTS.map(String::from).to_vec();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned()).ok_or(format!("{flag} needs a value"));
        match flag {
            "--target" => target = Some(loopback(flag, &value()?)?),
            "--rps" => rps = number(flag, &value()?, 1_000)?,
            "--seconds" => seconds = number(flag, &value()?, 3_600)?,
            "--paths" => paths = value()?.split(',').map(str::to_string).collect(),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    let valid = |p: &String| {
        p.starts_with('/') && p.len() <= 200 && p.bytes().all(|b| b.is_ascii_graphic())
    };
    if paths.len() > 16 || !paths.iter().all(valid) {
        return Err("--paths wants up to 16 comma-separated paths such as /sleep,/cpu".to_string());
    }
    let target = target.ok_or("load needs --target 127.0.0.1:PORT")?;
    Ok(LoadConfig { target, rps, seconds, paths })
}


struct Reply {
    status: u16,
    traceparent: Option<String>,
}

/// `GET path` on a new connection, all within `CLIENT_IO`; reads the reply to its end.
fn http_get(addr: SocketAddr, path: &str, traceparent: &str) -> io::Result<Reply> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let deadline = Instant::now() + CLIENT_IO;
    let mut conn = TcpStream::connect_timeout(&addr, CLIENT_IO)?;
    conn.set_nodelay(true)?;
    conn.set_write_timeout(Some(CLIENT_IO))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\ntraceparent: {traceparent}\r\n\
         Connection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes())?;
    let (mut reply, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no complete reply within 2 s"));
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if reply.len() + n > 64 * 1024 => return Err(invalid("reply larger than 64 KiB")),
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&reply);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| invalid("not an HTTP reply"))?;
    let traceparent = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("traceparent"))
        .map(|(_, value)| value.trim().to_string());
    Ok(Reply { status, traceparent })
}

/// One load request under a new trace: its latency, or why it failed.
fn one_request(target: SocketAddr, path: &str) -> Result<Duration, String> {
    let sent = TraceContext::new_root();
    let started = Instant::now();
    let reply = http_get(target, path, &sent.to_traceparent()).map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if !(200..300).contains(&reply.status) {
        return Err(format!("status {}", reply.status));
    }
    match reply.traceparent.as_deref().map(TraceContext::parse_traceparent) {
        Some(Ok(ctx)) if ctx.trace_id() == sent.trace_id() => Ok(took),
        Some(Ok(_)) => Err("reply traceparent is of another trace".to_string()),
        _ => Err("reply has no valid traceparent".to_string()),
    }
}

pub(crate) fn load(cfg: LoadConfig) -> i32 {
    let clients = cfg.rps.min(4);
    let tick = clients as f64 / cfg.rps as f64; // seconds between two requests of one client
    let paths = Arc::new(cfg.paths);
    note!(
        "load generator: {} req/s over {} on {} for {} s ({clients} clients in step)",
        cfg.rps,
        paths.join(","),
        cfg.target,
        cfg.seconds
    );
    let start = Instant::now();
    let deadline = start + Duration::from_secs(cfg.seconds);
    let mut clients_running = Vec::new();
    for i in 0..clients {
        let (paths, target) = (Arc::clone(&paths), cfg.target);
        let client = spawn(format!("client-{i}"), move || {
            let mut samples = Vec::new();
            let mut k = 0u64;
            loop {
                let at = start + Duration::from_secs_f64(k as f64 * tick);
                if at >= deadline {
                    break samples; // hard stop: nothing starts after the deadline
                }
                thread::sleep(at.saturating_duration_since(Instant::now()));
                let index = (k % paths.len() as u64) as usize;
                samples.push((index, one_request(target, &paths[index])));
                // Ticks missed while that request ran are skipped, not made up in a burst.
                let now_tick = (start.elapsed().as_secs_f64() / tick) as u64;
                k = (k + 1).max(now_tick);
            }
        });
        let Some(client) = client else { return 1 };
        clients_running.push(client);
    }
    let mut samples: Vec<(usize, Result<Duration, String>)> = Vec::new();
    for handle in clients_running {
        match handle.join() {
            Ok(mut some) => samples.append(&mut some),
            Err(_) => note!("demo-service load: a client thread panicked; its requests are lost"),
        }
    }

    let summarize = |wanted: Option<usize>| {
        let mut ok = Vec::new();
        let (mut errors, mut first_error) = (0, None);
        for (_, result) in samples.iter().filter(|(i, _)| wanted.is_none_or(|w| *i == w)) {
            match result {
                Ok(took) => ok.push(*took),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.clone());
                }
            }
        }
        ok.sort();
        let pct = |p: f64| match ok.len() {
            0 => "n/a".to_string(),
            n => format!("{:.1}", millis(ok[((p * n as f64).ceil() as usize).clamp(1, n) - 1])),
        };
        (ok.len() + errors, errors, pct(0.50), pct(0.99), first_error)
    };
    for (i, path) in paths.iter().enumerate() {
        let (n, errors, p50, p99, first_error) = summarize(Some(i));
        let example = first_error.map(|e| format!(" (e.g. {e})")).unwrap_or_default();
        let latency = format!("p50 {p50:>6} ms  p99 {p99:>6} ms");
        note!("  {path:<10} {n:>5} requests {errors:>4} errors  {latency}{example}");
    }
    let (n, errors, p50, p99, _) = summarize(None);
    announce(&format!("load: {n} requests, {errors} errors, p50 {p50} ms, p99 {p99} ms"));
    // Exit 1 only if nothing got through (e.g. wrong target).
    if n > 0 && errors == n {
        1
    } else {
        0
    }
}

/// Starts a named thread; `None` (after saying why) if the system refuses.
fn spawn<T, F>(name: String, f: F) -> Option<thread::JoinHandle<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let spawned = thread::Builder::new().name(name).spawn(f);
    spawned.map_err(|e| note!("demo-service load: cannot start a thread: {e}")).ok()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
