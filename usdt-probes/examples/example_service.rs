//! The example service: a tiny std-only HTTP/1.1 server whose endpoints each block in
//! a different way, with every request marked by usdt-probes, plus a built-in load generator.
//!
//! Run by hand, two instances and the load generator make a traced pair:
//!
//! ```text
//! example_service serve --addr 127.0.0.1:0 --stop-on-stdin-eof                          # back
//! example_service serve --addr 127.0.0.1:0 --downstream <back> --stop-on-stdin-eof      # front
//! example_service load --target <front> --rps 40 --seconds 5
//! ```
//!
//! (`cargo xtask demo` serves with the axum `demo-service` of `tests/src/bin/` instead, and
//! uses only this file's `load` generator.) Each `serve` prints `listening on <addr> pid
//! <pid>` once bound: read the address (port 0 picks a free one) and attach `tprof` to the
//! pid. Every request is a `Task` named
//! after its endpoint, a child of the incoming `traceparent` when there is a valid one, so a
//! `/chain` on the front and the `/sleep` it calls on the back share one trace-id:
//!
//! * `/sleep`: regions `parse` (the optional `?ms=N` query, default 15) then `sleep` (off-CPU);
//! * `/cpu`: region `compute`, ~8 ms on-CPU without a syscall;
//! * `/lock`: region `critical`, a process-wide mutex held for 5 ms of spinning, so
//!   concurrent `/lock` requests wait in futex until the holder wakes them;
//! * `/chain`: region `downstream`, a call to the downstream's `/sleep` (a network wait);
//!   502 at once without `--downstream`;
//! * anything else: a fast 404 (task `not_found`).
//!
//! The load generator's clients fire in step (at each tick all of them on the same path, the
//! paths in round-robin), so concurrent requests meet on the same endpoint and `/lock`
//! contends. Everything is loopback-only and bounded: at most 8 KiB of request headers,
//! I/O timeouts, `--seconds` and `--stop-on-stdin-eof` to stop by itself.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use std::{env, hint, process, thread};

use usdt_probes::{log, log_enabled, with_region, Task, TraceContext};

const USAGE: &str = "usage:
  example_service serve [--addr 127.0.0.1:PORT] [--downstream 127.0.0.1:PORT] [--workers 4]
                        [--seconds N] [--stop-on-stdin-eof]
  example_service load --target 127.0.0.1:PORT [--rps 40] [--seconds 5]
                       [--paths /sleep,/cpu,/lock,/chain]
Addresses must be loopback (127.0.0.1:PORT or [::1]:PORT); PORT 0 picks a free port.";

/// The most request-header bytes the server reads before answering 431.
const MAX_HEAD: usize = 8 * 1024;
/// How long the server waits for a request's headers, and for each write.
const SERVER_IO: Duration = Duration::from_secs(5);
/// The whole budget of one outgoing request (downstream call or load request).
const CLIENT_IO: Duration = Duration::from_secs(2);

/// The endpoints; each names the task of its requests.
const ENDPOINTS: [&str; 4] = ["/sleep", "/cpu", "/lock", "/chain"];

/// `eprintln!` that does not panic when stderr is a closed pipe.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stderr(), $($arg)*);
    }};
}

/// What `/lock` requests contend for.
static CRITICAL: Mutex<u64> = Mutex::new(0);

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        announce(USAGE);
        return;
    }
    let result = match args.first().map(String::as_str) {
        Some("serve") => parse_serve(&args[1..]).map(serve),
        Some("load") => parse_load(&args[1..]).map(load),
        Some(other) => Err(format!("unknown command {other:?}")),
        None => Err("missing command".to_string()),
    };
    match result {
        Ok(code) => process::exit(code),
        Err(msg) => {
            note!("example_service: {msg}\n{USAGE}");
            process::exit(2);
        }
    }
}

// ---- command line ----------------------------------------------------------------------------

struct ServeConfig {
    addr: SocketAddr,
    downstream: Option<SocketAddr>,
    workers: usize,
    seconds: Option<u64>,
    stop_on_stdin_eof: bool,
}

struct LoadConfig {
    target: SocketAddr,
    rps: u64,
    seconds: u64,
    paths: Vec<String>,
}

type Flags = Vec<(String, String)>;

/// Splits `--flag value` / `--flag=value` arguments; `switches` take no value.
fn flags(args: &[String], valued: &[&str], switches: &[&str]) -> Result<Flags, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        if switches.contains(&name) && inline.is_none() {
            out.push((name.to_string(), String::new()));
        } else if valued.contains(&name) {
            let value = match inline {
                Some(value) => value,
                None => it.next().cloned().ok_or_else(|| format!("{name} needs a value"))?,
            };
            out.push((name.to_string(), value));
        } else {
            return Err(format!("unknown argument {arg:?}"));
        }
    }
    Ok(out)
}

fn number(flag: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{flag} wants a whole number from {min} to {max}, not {value:?}")),
    }
}

fn loopback(flag: &str, value: &str) -> Result<SocketAddr, String> {
    match value.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() => Ok(addr),
        Ok(_) => Err(format!("{flag} must be a loopback address, not {value}")),
        Err(_) => Err(format!("{flag} wants IP:PORT such as 127.0.0.1:8080, not {value:?}")),
    }
}

fn parse_serve(args: &[String]) -> Result<ServeConfig, String> {
    let mut cfg = ServeConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        downstream: None,
        workers: 4,
        seconds: None,
        stop_on_stdin_eof: false,
    };
    let valued = ["--addr", "--downstream", "--workers", "--seconds"];
    for (flag, value) in flags(args, &valued, &["--stop-on-stdin-eof"])? {
        match flag.as_str() {
            "--addr" => cfg.addr = loopback(&flag, &value)?,
            "--downstream" => cfg.downstream = Some(loopback(&flag, &value)?),
            "--workers" => cfg.workers = number(&flag, &value, 1, 64)? as usize,
            "--seconds" => cfg.seconds = Some(number(&flag, &value, 1, 86_400)?),
            _ => cfg.stop_on_stdin_eof = true,
        }
    }
    Ok(cfg)
}

fn parse_load(args: &[String]) -> Result<LoadConfig, String> {
    let (mut target, mut rps, mut seconds) = (None, 40, 5);
    let mut paths: Vec<String> = ENDPOINTS.map(String::from).to_vec();
    for (flag, value) in flags(args, &["--target", "--rps", "--seconds", "--paths"], &[])? {
        match flag.as_str() {
            "--target" => target = Some(loopback(&flag, &value)?),
            "--rps" => rps = number(&flag, &value, 1, 1_000)?,
            "--seconds" => seconds = number(&flag, &value, 1, 3_600)?,
            _ => paths = value.split(',').map(str::to_string).collect(),
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

/// Starts a named thread; `None` (after saying why) if the system refuses.
fn spawn<T, F>(name: String, f: F) -> Option<thread::JoinHandle<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let spawned = thread::Builder::new().name(name).spawn(f);
    spawned.map_err(|e| note!("example_service: cannot start a thread: {e}")).ok()
}

/// Prints one line to stdout and flushes it; a closed stdout is not worth dying for.
fn announce(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// ---- server ----------------------------------------------------------------------------------

fn serve(cfg: ServeConfig) -> i32 {
    let bound = TcpListener::bind(cfg.addr).and_then(|l| Ok((l.local_addr()?, l)));
    let (local, listener) = match bound {
        Ok(bound) => bound,
        Err(e) => {
            note!("example_service: cannot listen on {}: {e}", cfg.addr);
            return 1;
        }
    };
    announce(&format!("listening on {local} pid {}", process::id()));

    let stop = Arc::new(AtomicBool::new(false));
    let mut stoppers: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    if let Some(seconds) = cfg.seconds {
        stoppers.push(Box::new(move || thread::sleep(Duration::from_secs(seconds))));
    }
    if cfg.stop_on_stdin_eof {
        stoppers.push(Box::new(wait_for_stdin_eof));
    }
    for wait in stoppers {
        let stop = Arc::clone(&stop);
        if spawn("stopper".into(), move || request_stop(wait, &stop, local)).is_none() {
            return 1;
        }
    }

    // A fixed pool of workers takes accepted connections from a bounded channel.
    let (tx, rx) = mpsc::sync_channel::<TcpStream>(64);
    let rx = Arc::new(Mutex::new(rx));
    let served = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..cfg.workers {
        let (rx, served, downstream) = (Arc::clone(&rx), Arc::clone(&served), cfg.downstream);
        let worker = spawn(format!("worker-{i}"), move || loop {
            let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
            let Ok(conn) = next else { break };
            // A bug in one request must not shrink the pool.
            let _ = panic::catch_unwind(AssertUnwindSafe(|| handle(conn, downstream)));
            served.fetch_add(1, Ordering::Relaxed);
        });
        let Some(worker) = worker else { return 1 };
        workers.push(worker);
    }

    for conn in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        match conn {
            Ok(conn) => {
                if tx.send(conn).is_err() {
                    break;
                }
            }
            Err(e) => {
                note!("example_service: accept: {e}");
                thread::sleep(Duration::from_millis(10)); // e.g. out of descriptors: no hot loop
            }
        }
    }
    drop(tx);
    for worker in workers {
        let _ = worker.join();
    }
    let served = served.load(Ordering::Relaxed);
    note!("example_service: {local} stopped after {served} connections");
    0
}

fn wait_for_stdin_eof() {
    let mut stdin = io::stdin().lock();
    let mut buf = [0u8; 256];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Once `wait` returns, stops the accept loop: sets the flag, then wakes the blocking
/// `accept` with a connection of its own.
fn request_stop(wait: Box<dyn FnOnce() + Send>, stop: &AtomicBool, local: SocketAddr) {
    wait();
    stop.store(true, Ordering::Release);
    let _ = TcpStream::connect_timeout(&local, Duration::from_secs(1));
    // Last resort; the pool drains well within its I/O timeouts.
    thread::sleep(Duration::from_secs(15));
    process::exit(0);
}

struct Request {
    path: String,
    query: String,
    parent: Option<TraceContext>,
}

/// Serves the one request of a connection, as one task.
fn handle(mut conn: TcpStream, downstream: Option<SocketAddr>) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_write_timeout(Some(SERVER_IO));
    let request = match read_head(&mut conn) {
        Ok(head) => parse_request(&head),
        Err(None) => return, // closed or timed out before sending anything: nobody to answer
        Err(Some(status)) => Err(status),
    };
    let (name, parent) = match &request {
        Ok(r) if ENDPOINTS.contains(&r.path.as_str()) => (r.path.as_str(), r.parent),
        Ok(r) => ("not_found", r.parent),
        Err(_) => ("bad_request", None),
    };
    let task = match parent {
        Some(parent) => Task::with_parent(name, &parent),
        None => Task::new(name),
    };
    let traceparent = task.context().to_traceparent();
    let (status, body) = match &request {
        Ok(request) => dispatch(request, downstream, &traceparent),
        Err(status) => (*status, format!("{}\n", status_text(*status).1)),
    };
    let (code, reason) = status_text(status);
    log("status", code);
    let length = body.len();
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\n\
         traceparent: {traceparent}\r\nConnection: close\r\n\r\n{body}"
    );
    let _ = conn.write_all(response.as_bytes());
    drop(task);
    if request.is_err() {
        // Let the client read the error before unread input makes the close a reset.
        let _ = conn.shutdown(Shutdown::Write);
        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            if !matches!(conn.read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
    }
}

/// Reads up to the blank line ending the headers. `Err(None)`: nothing to answer;
/// `Err(Some(status))`: answer with that status.
fn read_head(conn: &mut TcpStream) -> Result<Vec<u8>, Option<u16>> {
    let deadline = Instant::now() + SERVER_IO;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            return Err(None);
        }
        let n = match conn.read(&mut chunk) {
            Ok(0) if head.is_empty() => return Err(None),
            Ok(0) => return Err(Some(400)), // the request stopped halfway
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(None),
        };
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(from + end);
            return if head.len() > MAX_HEAD { Err(Some(431)) } else { Ok(head) };
        }
        if head.len() > MAX_HEAD {
            return Err(Some(431));
        }
    }
}

fn parse_request(head: &[u8]) -> Result<Request, u16> {
    let text = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(_method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(400);
    }
    let mut parent = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(400u16)?;
        if name.eq_ignore_ascii_case("traceparent") {
            parent = TraceContext::parse_traceparent(value).ok();
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request { path: path.to_string(), query: query.to_string(), parent })
}

/// Runs an endpoint inside the request's task; returns the status and the body.
fn dispatch(request: &Request, downstream: Option<SocketAddr>, traceparent: &str) -> (u16, String) {
    match request.path.as_str() {
        "/sleep" => {
            let ms = with_region("parse", || {
                let mut pairs = request.query.split('&');
                let ms = pairs.find_map(|kv| kv.strip_prefix("ms=")?.parse::<u64>().ok());
                ms.unwrap_or(15).clamp(1, 200)
            });
            with_region("sleep", || thread::sleep(Duration::from_millis(ms)));
            (200, format!("slept {ms} ms\n"))
        }
        "/cpu" => {
            let rounds = with_region("compute", || spin(Duration::from_millis(8)));
            if log_enabled() {
                log("rounds", &rounds.to_string());
            }
            (200, format!("computed {rounds} rounds\n"))
        }
        "/lock" => {
            let waited = with_region("critical", || {
                let asked = Instant::now();
                let mut guard = CRITICAL.lock().unwrap_or_else(PoisonError::into_inner);
                let waited = asked.elapsed();
                *guard = guard.wrapping_add(spin(Duration::from_millis(5)));
                waited
            });
            if log_enabled() {
                log("lock_wait_us", &waited.as_micros().to_string());
            }
            (200, format!("held the lock 5 ms after waiting {:.1} ms for it\n", millis(waited)))
        }
        "/chain" => chain(downstream, traceparent),
        _ => (404, "not found; try /sleep, /cpu, /lock or /chain\n".to_string()),
    }
}

/// Spins on the CPU for `length` (no syscall: `Instant::now` is a vDSO read); returns the rounds.
fn spin(length: Duration) -> u64 {
    let start = Instant::now();
    let (mut x, mut rounds) = (0x9e37_79b9_7f4a_7c15_u64, 0u64);
    while start.elapsed() < length {
        for _ in 0..1024 {
            x = hint::black_box(x.rotate_left(7) ^ x.wrapping_mul(0x0100_0000_01b3));
        }
        rounds += 1024;
    }
    hint::black_box(x);
    rounds
}

fn chain(downstream: Option<SocketAddr>, traceparent: &str) -> (u16, String) {
    let Some(addr) = downstream else {
        log("downstream_status", "none");
        return (502, "no --downstream configured\n".to_string());
    };
    let started = Instant::now();
    match with_region("downstream", || http_get(addr, "/sleep", traceparent)) {
        Ok(reply) => {
            if log_enabled() {
                log("downstream_status", &reply.status.to_string());
            }
            let status = if (200..300).contains(&reply.status) { 200 } else { 502 };
            let took = millis(started.elapsed());
            (status, format!("downstream {addr} /sleep: {} in {took:.1} ms\n", reply.status))
        }
        Err(e) => {
            log("downstream_status", "error");
            (502, format!("downstream {addr} /sleep failed: {e}\n"))
        }
    }
}

/// A status as text (for `log`, without formatting) and its reason phrase.
fn status_text(status: u16) -> (&'static str, &'static str) {
    match status {
        200 => ("200", "OK"),
        400 => ("400", "Bad Request"),
        404 => ("404", "Not Found"),
        431 => ("431", "Request Header Fields Too Large"),
        502 => ("502", "Bad Gateway"),
        _ => ("500", "Internal Server Error"),
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---- client ----------------------------------------------------------------------------------

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

fn load(cfg: LoadConfig) -> i32 {
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
            Err(_) => note!("example_service: a client thread panicked; its requests are lost"),
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
