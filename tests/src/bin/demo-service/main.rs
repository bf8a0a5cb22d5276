//! The example service (`cargo xtask demo`, the HTTP end-to-end tests, `cargo xtask bench
//! e2e`): HTTP endpoints that each block in a different way, on axum and tokio's
//! multi-threaded runtime, instrumented the way an async service would be: one
//! `.layer(TprofHttpLayer::new())` (each request a task named `"GET /path"`, a child of its
//! `traceparent`), `TprofLayer` under `tracing` (spans in handlers are regions of that task,
//! events its logs), `with_region` and `log` for the rest. `serve` prints `listening on
//! <addr> pid <pid>` once bound; `load` ([`load`]) is its load generator (see `USAGE`):
//!
//! ```text
//! demo-service serve --addr 127.0.0.1:0 --stop-on-stdin-eof                          # back
//! demo-service serve --addr 127.0.0.1:0 --downstream <back> --stop-on-stdin-eof      # front
//! demo-service load --target <front> --rps 40 --seconds 5
//! ```
//!
//! * `/sleep`: region `parse` (`?ms=N`, default 15), then a `tokio::time::sleep` in span
//!   `sleep`: the task is parked in the executor, no thread works for it (unscheduled);
//! * `/cpu`: region `compute`, 8 ms spinning on the worker (on-CPU);
//! * `/lock`: region `critical`, a process-wide `std::sync::Mutex` held for 5 ms on the worker:
//!   concurrent `/lock` requests block their workers in futex;
//! * `/chain`: span `downstream`, a `GET /sleep` to `--downstream` carrying this task's
//!   `traceparent` (`inject_traceparent`), so the back's task is a child of this one.

use std::future::{pending, IntoFuture};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use std::{env, hint, process, thread};

mod load;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use usdt_probes::http::inject_traceparent;
use usdt_probes::{log, log_enabled, with_region, TprofHttpLayer, TprofLayer};

const USAGE: &str = "usage:
  demo-service serve [--addr 127.0.0.1:PORT] [--downstream 127.0.0.1:PORT]
                     [--workers 4] [--seconds N] [--stop-on-stdin-eof]
  demo-service load --target 127.0.0.1:PORT [--rps 40] [--seconds 5]
                    [--paths /sleep,/cpu,/lock,/chain]
Addresses must be loopback; PORT 0 picks a free port.";

/// The whole budget of a downstream call (or of a load request); how long a stop waits for
/// open connections.
const CLIENT_IO: Duration = Duration::from_secs(2);
const DRAIN: Duration = Duration::from_secs(5);

/// What `/lock` requests contend for.
static CRITICAL: Mutex<u64> = Mutex::new(0);

/// `eprintln!` that does not panic when stderr is a closed pipe.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use note;

struct Config {
    addr: SocketAddr,
    downstream: Option<SocketAddr>,
    workers: usize,
    seconds: Option<u64>,
    stop_on_stdin_eof: bool,
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        announce(USAGE);
        return;
    }
    let result = match args.first().map(String::as_str) {
        Some("serve") => parse(&args[1..]).map(run),
        Some("load") => load::parse_load(&args[1..]).map(load::load),
        _ => Err("expected `serve` or `load`".to_string()),
    };
    match result {
        Ok(code) => process::exit(code),
        Err(msg) => {
            note!("demo-service: {msg}\n{USAGE}");
            process::exit(2);
        }
    }
}

/// Prints one line to stdout and flushes it; a closed stdout is not worth dying for.
fn announce(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn loopback(flag: &str, v: &str) -> Result<SocketAddr, String> {
    match v.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_loopback() => Ok(a),
        _ => Err(format!("{flag} wants a loopback IP:PORT such as 127.0.0.1:8080, not {v:?}")),
    }
}

fn number(flag: &str, v: &str, max: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{flag} wants a whole number from 1 to {max}, not {v:?}")),
    }
}

fn parse(args: &[String]) -> Result<Config, String> {
    let mut cfg = Config {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        downstream: None,
        workers: 4,
        seconds: None,
        stop_on_stdin_eof: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        if flag == "--stop-on-stdin-eof" && inline.is_none() {
            cfg.stop_on_stdin_eof = true;
            continue;
        }
        let mut value = || inline.clone().or_else(|| it.next().cloned()).ok_or(format!("{flag} needs a value"));
        match flag {
            "--addr" => cfg.addr = loopback(flag, &value()?)?,
            "--downstream" => cfg.downstream = Some(loopback(flag, &value()?)?),
            "--workers" => cfg.workers = number(flag, &value()?, 64)? as usize,
            "--seconds" => cfg.seconds = Some(number(flag, &value()?, 86_400)?),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(cfg)
}

fn run(cfg: Config) -> i32 {
    // `tracing` spans and events in handlers: regions and logs of the request's task.
    let subscriber = tracing_subscriber::registry().with(TprofLayer::new());
    if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
        note!("demo-service: cannot install the tracing subscriber: {e}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(cfg.workers).enable_all().build();
    match rt.and_then(|rt| rt.block_on(serve(cfg))) {
        Ok(()) => 0,
        Err(e) => {
            note!("demo-service: {e}");
            1
        }
    }
}

async fn serve(cfg: Config) -> io::Result<()> {
    let listener = TcpListener::bind(cfg.addr).await?;
    let local = listener.local_addr()?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {local} pid {}", process::id()).and_then(|()| out.flush())?;
    drop(out);

    // Stop after `--seconds`, or when stdin closes (the demo's and tests' guard).
    let (stop_tx, mut stop_rx) = mpsc::channel::<()>(2);
    if let Some(secs) = cfg.seconds {
        let tx = stop_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let _ = tx.send(()).await;
        });
    }
    if cfg.stop_on_stdin_eof {
        let tx = stop_tx.clone();
        thread::Builder::new().name("stdin-eof".into()).spawn(move || {
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            let _ = tx.blocking_send(());
        })?;
    }
    drop(stop_tx);
    let stopping = Arc::new(Notify::new());
    let stopped = Arc::clone(&stopping);
    let shutdown = async move {
        if stop_rx.recv().await.is_none() {
            pending::<()>().await; // no way to stop but a signal
        }
        stopped.notify_one();
    };

    let app = Router::new()
        .route("/sleep", get(sleep))
        .route("/cpu", get(cpu))
        .route("/lock", get(lock))
        .route("/chain", get(chain))
        .with_state(cfg.downstream)
        .layer(TprofHttpLayer::new());
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown).into_future();
    tokio::select! {
        done = server => done?,
        _ = async { stopping.notified().await; tokio::time::sleep(DRAIN).await } => {
            note!("demo-service: {local}: connections still open after {DRAIN:?}, stopping anyway");
        }
    }
    note!("demo-service: {local} stopped");
    Ok(())
}

async fn sleep(uri: Uri) -> String {
    let ms = with_region("parse", || {
        let ms = uri.query().unwrap_or_default().split('&').find_map(|kv| kv.strip_prefix("ms=")?.parse().ok());
        ms.unwrap_or(15u64).clamp(1, 200)
    });
    // Across an await, a region is a `tracing` span: it lasts as long as the span.
    tokio::time::sleep(Duration::from_millis(ms)).instrument(tracing::info_span!("sleep")).await;
    format!("slept {ms} ms\n")
}

async fn cpu() -> String {
    let rounds = with_region("compute", || spin(Duration::from_millis(8)));
    if log_enabled() {
        log("rounds", &rounds.to_string());
    }
    format!("computed {rounds} rounds\n")
}

async fn lock() -> String {
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
    format!("held the lock 5 ms after waiting {:.1} ms for it\n", waited.as_secs_f64() * 1e3)
}

async fn chain(State(downstream): State<Option<SocketAddr>>) -> (StatusCode, String) {
    let Some(addr) = downstream else {
        log("downstream_status", "none");
        return (StatusCode::BAD_GATEWAY, "no --downstream configured\n".to_string());
    };
    let started = Instant::now();
    match get_with_traceparent(addr, "/sleep").instrument(tracing::info_span!("downstream")).await {
        Ok(status) => {
            tracing::info!(status, "downstream replied");
            let code = if (200..300).contains(&status) { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
            let took = started.elapsed().as_secs_f64() * 1e3;
            (code, format!("downstream {addr} /sleep: {status} in {took:.1} ms\n"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "downstream failed");
            (StatusCode::BAD_GATEWAY, format!("downstream {addr} /sleep failed: {e}\n"))
        }
    }
}

/// `GET path` on a new connection with the current task's `traceparent`, within
/// `CLIENT_IO`; returns the status. Polled inside the task, so its I/O is the request's.
async fn get_with_traceparent(addr: SocketAddr, path: &str) -> io::Result<u16> {
    let mut headers = HeaderMap::new();
    inject_traceparent(&mut headers);
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in &headers {
        let value = value.to_str().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut conn = TcpStream::connect(addr).await?;
        conn.set_nodelay(true)?;
        conn.write_all(request.as_bytes()).await?;
        let mut reply = Vec::with_capacity(4096); // one read, not a growing series from 32 bytes
        (&mut conn).take(64 * 1024).read_to_end(&mut reply).await?;
        Ok::<_, io::Error>(reply)
    };
    let timed_out = |_| io::Error::new(io::ErrorKind::TimedOut, "no complete reply within 2 s");
    let reply = tokio::time::timeout(CLIENT_IO, exchange).await.map_err(timed_out)??;
    let status_line = reply.split(|&b| b == b'\r').next().unwrap_or_default();
    let status = std::str::from_utf8(status_line).ok().and_then(|l| l.split(' ').nth(1)?.parse().ok());
    status.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP reply"))
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
