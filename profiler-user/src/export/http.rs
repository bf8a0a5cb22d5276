//! Delivery of export batches: an NDJSON file and/or an HTTP/1.1 POST endpoint.
//!
//! The HTTP client is deliberately small ([`client`]: std::net plus rustls, RFC 9112
//! subset): one connection per batch with `Content-Length` and `Connection: close`, http or
//! https (system CA roots), optional gzip and extra headers, and a total deadline per attempt
//! (`Config::timeout`, 10 s as the OTLP exporters' default). It runs on its own thread fed by a bounded
//! queue, so an unreachable or slow endpoint never stalls tracing: when the queue is full
//! the batch is dropped and counted. Retries follow the OTLP/HTTP guidance
//! (<https://opentelemetry.io/docs/specs/otlp/#failures-1>): 429, 502, 503, 504 (we retry
//! every 5xx) and connection errors are retried with exponential backoff; other statuses
//! are permanent failures.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

mod client;
pub use client::{check_header, gzip, system_tls, Endpoint, RequestOptions};
#[cfg(test)]
use client::content_length;

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
    /// Total deadline of each try: connect, TLS, request and response.
    pub timeout: Duration,
    /// Headers, content type, compression.
    pub request: RequestOptions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            queue: 64,
            attempts: 5,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            // The OTLP exporters' default (OTEL_EXPORTER_OTLP_TIMEOUT).
            timeout: Duration::from_secs(10),
            request: RequestOptions::default(),
        }
    }
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
    /// Bodies are to be gzipped by the caller (see [`Delivery::ship_http`]).
    gzip: bool,
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
        let tls = if ep.tls { Some(system_tls()?) } else { None };
        Self::with_tls(ep, name, cfg, tls)
    }

    /// Like [`Exporter::with_config`] with this TLS configuration for an https endpoint
    /// (e.g. a test CA).
    pub fn with_tls(ep: Endpoint, name: &'static str, cfg: Config, tls: Option<Arc<rustls::ClientConfig>>) -> anyhow::Result<Self> {
        if ep.tls && tls.is_none() {
            bail!("{}: https needs a TLS configuration", ep.url());
        }
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(cfg.queue.max(1));
        let (done_tx, done) = mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let sh = Arc::clone(&shared);
        let gzip = cfg.request.gzip;
        let worker = std::thread::Builder::new()
            .name(format!("tprof-{name}"))
            .spawn(move || {
                let mut failing = false;
                while let Ok(body) = rx.recv() {
                    let ok = deliver(&ep, &body, &cfg, tls.as_ref(), &sh, name, failing);
                    if ok && failing {
                        log::info!("{name} export to {} works again", ep.url());
                    }
                    failing = !ok;
                }
                let _ = done_tx.send(());
            })
            .context("starting the HTTP export thread")?;
        Ok(Exporter { gzip, tx: Some(tx), shared, worker: Some(worker), done })
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
fn deliver(ep: &Endpoint, body: &[u8], cfg: &Config, tls: Option<&Arc<rustls::ClientConfig>>, sh: &Mutex<Shared>, name: &str, quiet: bool) -> bool {
    let mut backoff = cfg.backoff_min;
    let mut why = String::new();
    for attempt in 1..=cfg.attempts.max(1) {
        let deadline = lock(sh).deadline;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            why = "session ended first".into();
            break;
        }
        match ep.post(body, &cfg.request, tls, cfg.timeout) {
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
        log::warn!("{name} export to {}: batch lost: {}", ep.url(), why.trim());
    }
    false
}

/// Where an exporter's batches go: one line each in a file, one POST each to an endpoint.
pub struct Delivery {
    file: Option<BufWriter<File>>,
    http: Option<Exporter>,
}

impl Delivery {
    /// `default_path` is added to an endpoint given without a path; `cfg` is how it is posted to.
    pub fn new(name: &'static str, file: Option<&Path>, endpoint: Option<&str>, default_path: &str, cfg: Config) -> anyhow::Result<Self> {
        if file.is_none() && endpoint.is_none() {
            bail!("{name} export needs a file or an endpoint");
        }
        let file = match file {
            Some(p) => Some(BufWriter::new(File::create(p).with_context(|| format!("creating {}", p.display()))?)),
            None => None,
        };
        let http = match endpoint {
            Some(url) => Some(Exporter::with_config(Endpoint::parse(url, default_path)?, name, cfg)?),
            None => None,
        };
        Ok(Delivery { file, http })
    }

    pub fn ship(&mut self, body: Vec<u8>) -> io::Result<()> {
        self.ship_file(&body)?;
        self.ship_http(body);
        Ok(())
    }

    /// Whether there is a file / an endpoint.
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }
    pub fn has_http(&self) -> bool {
        self.http.is_some()
    }

    /// One line of the file (if any).
    pub fn ship_file(&mut self, body: &[u8]) -> io::Result<()> {
        if let Some(f) = &mut self.file {
            f.write_all(body)?;
            f.write_all(b"\n")?;
            f.flush()?;
        }
        Ok(())
    }

    /// One POST to the endpoint (if any), gzipped when its options say so.
    pub fn ship_http(&mut self, body: Vec<u8>) {
        if let Some(h) = &self.http {
            if !h.gzip {
                return h.send(body);
            }
            match gzip(&body) {
                Ok(z) => h.send(z),
                Err(e) => {
                    log::warn!("compressing an export batch: {e}");
                    lock(&h.shared).stats.failed += 1;
                }
            }
        }
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
