//! Delivery of export batches: an NDJSON file and/or a plain-HTTP/1.1 POST endpoint.
//!
//! The HTTP client is deliberately tiny (std::net only, RFC 9112 subset): one connection per
//! batch with `Content-Length` and `Connection: close`, 2 s connect/read/write timeouts,
//! no TLS, no redirects, no chunked bodies sent. It runs on its own thread fed by a bounded
//! queue, so an unreachable or slow endpoint never stalls tracing: when the queue is full
//! the batch is dropped and counted. Retries follow the OTLP/HTTP guidance
//! (<https://opentelemetry.io/docs/specs/otlp/#failures-1>): 429, 502, 503, 504 (we retry
//! every 5xx) and connection errors are retried with exponential backoff; other statuses
//! are permanent failures.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Batch counts of one exporter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Accepted by the endpoint (2xx).
    pub sent: u64,
    /// Given up: rejected (4xx other than 429), retries exhausted, or still queued when
    /// `close` timed out.
    pub failed: u64,
    /// Never queued: the queue was full.
    pub dropped_queue_full: u64,
    /// Attempts beyond the first.
    pub retries: u64,
}

/// Knobs of an [`Exporter`]; `Default` is what tprof uses.
#[derive(Clone, Debug)]
pub struct Config {
    /// Batches waiting to be sent.
    pub queue: usize,
    /// Tries per batch, the first included.
    pub attempts: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Connect, read and write timeout of each try.
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            queue: 64,
            attempts: 5,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A parsed `http://host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// As written in the URL (brackets kept for IPv6): also the `Host` header.
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    /// Parses `url`; `default_path` replaces an empty or `/` path (e.g. `/v1/traces`). A
    /// URL without a scheme is taken as http.
    pub fn parse(url: &str, default_path: &str) -> anyhow::Result<Endpoint> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => bail!(
                "{url}: https is not supported (tprof has no TLS); send to a local collector's plain-HTTP port, e.g. http://127.0.0.1:4318"
            ),
            Some((scheme, _)) => bail!("{url}: unsupported scheme {scheme:?} (only http://host:port)"),
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                let port = authority[i + 1..].parse::<u16>().with_context(|| format!("{url}: bad port"))?;
                (&authority[..i], port)
            }
            _ => (authority, 80),
        };
        if host.is_empty() || host.contains('@') {
            bail!("{url}: expected http://host:port");
        }
        let path = if path.is_empty() || path == "/" { default_path } else { path };
        Ok(Endpoint { host: host.to_string(), port, path: path.to_string() })
    }

    fn connect(&self, timeout: Duration) -> io::Result<TcpStream> {
        let name = self.host.trim_start_matches('[').trim_end_matches(']');
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} resolves to no address", self.host));
        for addr in (name, self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One POST; returns the status code and the start of the response body.
    pub fn post(&self, body: &[u8], timeout: Duration) -> io::Result<(u16, String)> {
        let mut s = self.connect(timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let _ = s.set_nodelay(true);
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: tprof/{}\r\n\r\n",
            self.path,
            self.host,
            self.port,
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        s.flush()?;
        // Read the head and at most 1 KiB of body (for error messages).
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match s.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if !buf.is_empty() && matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => 0,
                Err(e) => return Err(e),
            };
            buf.extend_from_slice(&chunk[..n]);
            let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
            let done = match head_end {
                Some(h) => {
                    let len = content_length(&buf[..h]).unwrap_or(usize::MAX).min(1024);
                    buf.len() >= h + 4 + len
                }
                None => buf.len() > 16 * 1024,
            };
            if n == 0 || done {
                break;
            }
        }
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line in the response"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.chars().take(200).collect()).unwrap_or_default();
        Ok((status, body))
    }
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
    })
}

#[derive(Default)]
struct Shared {
    stats: ExportStats,
    accepted: u64,
    /// Set by `close`: give up on retries and queued batches past it.
    deadline: Option<Instant>,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// POSTs batches from a background thread, with retries and a bounded queue.
pub struct Exporter {
    tx: Option<SyncSender<Vec<u8>>>,
    shared: Arc<Mutex<Shared>>,
    worker: Option<JoinHandle<()>>,
    done: Receiver<()>,
}

impl Exporter {
    /// Starts the sender thread for `url` (a full URL: nothing is appended to its path).
    /// `name` labels log messages.
    pub fn new(url: &str, name: &'static str) -> anyhow::Result<Self> {
        Self::with_config(Endpoint::parse(url, "/")?, name, Config::default())
    }

    pub fn with_config(ep: Endpoint, name: &'static str, cfg: Config) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(cfg.queue.max(1));
        let (done_tx, done) = mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let sh = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name(format!("tprof-{name}"))
            .spawn(move || {
                let mut failing = false;
                while let Ok(body) = rx.recv() {
                    let ok = deliver(&ep, &body, &cfg, &sh, name, failing);
                    if ok && failing {
                        log::info!("{name} export to http://{}:{}{} works again", ep.host, ep.port, ep.path);
                    }
                    failing = !ok;
                }
                let _ = done_tx.send(());
            })
            .context("starting the HTTP export thread")?;
        Ok(Exporter { tx: Some(tx), shared, worker: Some(worker), done })
    }

    /// Queues a batch; never blocks: with the queue full, the batch is dropped and counted.
    pub fn send(&self, body: Vec<u8>) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(body) {
            Ok(()) => lock(&self.shared).accepted += 1,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                lock(&self.shared).stats.dropped_queue_full += 1;
            }
        }
    }

    pub fn stats(&self) -> ExportStats {
        lock(&self.shared).stats
    }

    /// Sends what is queued, waiting at most `timeout`; what is still undelivered then
    /// counts as failed (the thread is left to die with the process).
    pub fn close(mut self, timeout: Duration) -> ExportStats {
        lock(&self.shared).deadline = Some(Instant::now() + timeout);
        self.tx = None;
        match self.done.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(w) = self.worker.take() {
                    let _ = w.join();
                }
                lock(&self.shared).stats
            }
            Err(RecvTimeoutError::Timeout) => {
                let sh = lock(&self.shared);
                let mut s = sh.stats;
                s.failed = sh.accepted.saturating_sub(s.sent);
                s
            }
        }
    }
}

/// Sends one batch with retries; true if it was delivered.
fn deliver(ep: &Endpoint, body: &[u8], cfg: &Config, sh: &Mutex<Shared>, name: &str, quiet: bool) -> bool {
    let mut backoff = cfg.backoff_min;
    let mut why = String::new();
    for attempt in 1..=cfg.attempts.max(1) {
        let deadline = lock(sh).deadline;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            why = "session ended first".into();
            break;
        }
        match ep.post(body, cfg.timeout) {
            Ok((code, _)) if (200..300).contains(&code) => {
                lock(sh).stats.sent += 1;
                return true;
            }
            Ok((code, text)) if code == 429 || code >= 500 => why = format!("HTTP {code} {text}"),
            Ok((code, text)) => {
                why = format!("rejected with HTTP {code} {text}");
                break;
            }
            Err(e) => why = e.to_string(),
        }
        if attempt == cfg.attempts {
            break;
        }
        lock(sh).stats.retries += 1;
        let mut pause = backoff;
        if let Some(d) = deadline {
            pause = pause.min(d.saturating_duration_since(Instant::now()));
        }
        std::thread::sleep(pause);
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
    lock(sh).stats.failed += 1;
    if !quiet {
        log::warn!("{name} export to http://{}:{}{}: batch lost: {}", ep.host, ep.port, ep.path, why.trim());
    }
    false
}

/// Where an exporter's batches go: one line each in a file, one POST each to an endpoint.
pub struct Delivery {
    file: Option<BufWriter<File>>,
    http: Option<Exporter>,
}

impl Delivery {
    /// `default_path` is added to an endpoint given without a path.
    pub fn new(name: &'static str, file: Option<&Path>, endpoint: Option<&str>, default_path: &str) -> anyhow::Result<Self> {
        if file.is_none() && endpoint.is_none() {
            bail!("{name} export needs a file or an endpoint");
        }
        let file = match file {
            Some(p) => Some(BufWriter::new(File::create(p).with_context(|| format!("creating {}", p.display()))?)),
            None => None,
        };
        let http = match endpoint {
            Some(url) => Some(Exporter::with_config(Endpoint::parse(url, default_path)?, name, Config::default())?),
            None => None,
        };
        Ok(Delivery { file, http })
    }

    pub fn ship(&mut self, body: Vec<u8>) -> io::Result<()> {
        if let Some(f) = &mut self.file {
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.flush()?;
        }
        if let Some(h) = &self.http {
            h.send(body);
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    pub fn stats(&self) -> Option<ExportStats> {
        self.http.as_ref().map(Exporter::stats)
    }

    /// Waits (at most `timeout`) for queued batches; None without an endpoint.
    pub fn close(&mut self, timeout: Duration) -> Option<ExportStats> {
        self.http.take().map(|h| h.close(timeout))
    }
}

#[cfg(test)]
mod tests;
