//! A realistic axum file server, set up the way real services are, for the end-to-end tests
//! of `tests/rust_service.rs` (and to try tprof on by hand):
//!
//! * `GET /files/{name}`: a whole file read with `tokio::fs`-style calls on the blocking pool
//!   (`usdt_probes::tokio::fs::read`, so the read is the request's);
//! * `GET /download/{name}`: the file streamed in 16 KiB chunks, each read on the blocking
//!   pool (`usdt_probes::tokio::spawn_blocking`) while the body is polled;
//! * `GET /hash/{name}`: a CPU-heavy `spawn_blocking` job (read and hash the file);
//! * `GET /users/{id}`: a route with a path parameter and no I/O; anything else: 404.
//!
//! `--layer http` adds `usdt_probes::TprofHttpLayer` with `Router::layer` (tasks named by
//! axum's `MatchedPath`); `--layer tracing` adds tower-http's `TraceLayer` (INFO spans with the
//! method, uri, matched path and headers) and makes the tasks with `TprofLayer` alone, in a
//! subscriber built with `tracing_subscriber::fmt()...finish().with(TprofLayer::new())`.
//!
//! `serve --addr A [--seconds N] [--stop-on-stdin-eof] [--layer http|tracing] [--dir D]`:
//! prints `listening on <addr> pid <pid>`; makes `small.txt` (4 KiB), `mid.bin` (1 MiB) and
//! `big.bin` (16 MiB) in D (default: a new directory under the temporary directory).

use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;
use tower_http::trace::TraceLayer;
use tracing::{info_span, Level};
use tracing_subscriber::layer::SubscriberExt;
use usdt_probes::{TprofHttpLayer, TprofLayer};

/// Chunk of a streamed download.
const CHUNK: usize = 16 * 1024;

/// The files the server makes: name and size.
const FILES: [(&str, usize); 3] = [("small.txt", 4 * 1024), ("mid.bin", 1024 * 1024), ("big.bin", 16 * 1024 * 1024)];

struct Config {
    addr: String,
    seconds: Option<u64>,
    stop_on_stdin_eof: bool,
    layer: String,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Config, String> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("serve") {
        return Err("usage: file-server serve --addr A [--seconds N] [--stop-on-stdin-eof] [--layer http|tracing] [--dir D]".into());
    }
    let mut cfg =
        Config { addr: "127.0.0.1:0".into(), seconds: None, stop_on_stdin_eof: false, layer: "http".into(), dir: None };
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--addr" => cfg.addr = value()?,
            "--seconds" => cfg.seconds = Some(value()?.parse().map_err(|e| format!("--seconds: {e}"))?),
            "--stop-on-stdin-eof" => cfg.stop_on_stdin_eof = true,
            "--layer" => cfg.layer = value()?,
            "--dir" => cfg.dir = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !["http", "tracing"].contains(&cfg.layer.as_str()) {
        return Err(format!("--layer {}: http or tracing", cfg.layer));
    }
    Ok(cfg)
}

/// Makes the served files (deterministic bytes).
fn make_files(dir: &FsPath) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, size) in FILES {
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

type Dir = Arc<PathBuf>;

/// The file `name` in `dir`, if `name` is a plain file name.
fn file_path(dir: &FsPath, name: &str) -> Option<PathBuf> {
    (!name.is_empty() && !name.contains('/') && !name.starts_with('.')).then(|| dir.join(name))
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn file(State(dir): State<Dir>, Path(name): Path<String>) -> Response {
    let Some(path) = file_path(&dir, &name) else { return not_found() };
    match usdt_probes::tokio::fs::read(path).await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => not_found(),
    }
}

/// A file streamed in chunks, each read on the blocking pool while the body is polled.
struct FileChunks {
    file: Arc<std::fs::File>,
    offset: u64,
    len: u64,
    reading: Option<JoinHandle<io::Result<Vec<u8>>>>,
}

impl http_body::Body for FileChunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.offset >= this.len {
            return Poll::Ready(None);
        }
        let (offset, len) = (this.offset, this.len);
        let file = Arc::clone(&this.file);
        let reading = this.reading.get_or_insert_with(|| {
            let n = usize::try_from(len - offset).map_or(CHUNK, |left| left.min(CHUNK));
            // The read runs on a blocking thread, attached to the request's task.
            usdt_probes::tokio::spawn_blocking(move || {
                let mut buf = vec![0; n];
                file.read_exact_at(&mut buf, offset)?;
                Ok(buf)
            })
        });
        let Poll::Ready(done) = Pin::new(reading).poll(cx) else { return Poll::Pending };
        this.reading = None;
        Poll::Ready(Some(match done {
            Ok(Ok(buf)) => {
                this.offset += buf.len() as u64;
                Ok(Frame::data(Bytes::from(buf)))
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(io::Error::other(e)),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len.saturating_sub(self.offset))
    }
}

async fn download(State(dir): State<Dir>, Path(name): Path<String>) -> Response {
    let Some(path) = file_path(&dir, &name) else { return not_found() };
    let opened = usdt_probes::tokio::spawn_blocking(move || {
        let f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        Ok::<_, io::Error>((f, len))
    })
    .await;
    match opened {
        Ok(Ok((f, len))) => Body::new(FileChunks { file: Arc::new(f), offset: 0, len, reading: None }).into_response(),
        _ => not_found(),
    }
}

async fn hash(State(dir): State<Dir>, Path(name): Path<String>) -> Response {
    let Some(path) = file_path(&dir, &name) else { return not_found() };
    let job = usdt_probes::tokio::spawn_blocking(move || {
        let bytes = std::fs::read(path)?;
        // FNV-1a, eight rounds: a CPU-bound job for the blocking pool.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..8 {
            for b in &bytes {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        Ok::<_, io::Error>(h)
    });
    match job.await {
        Ok(Ok(h)) => format!("{h:016x}\n").into_response(),
        _ => not_found(),
    }
}

async fn user(Path(id): Path<u64>) -> String {
    format!("user {id}\n")
}

fn app(dir: Dir, layer: &str) -> Router {
    let router = Router::new()
        .route("/files/{name}", get(file))
        .route("/download/{name}", get(download))
        .route("/hash/{name}", get(hash))
        .route("/users/{id}", get(user))
        .fallback(|| async { not_found() })
        .with_state(dir);
    match layer {
        "tracing" => router.layer(TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
            let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
            // The common axum + tower-http span: TprofLayer names the task from `method` and
            // `matched_path` and continues the `traceparent` in `headers`.
            info_span!("request", method = %req.method(), uri = %req.uri(), matched_path = route, headers = ?req.headers())
        })),
        _ => router.layer(TprofHttpLayer::new()),
    }
}

fn main() {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("file-server: {e}");
            std::process::exit(2);
        }
    };
    if cfg.layer == "tracing" {
        // `fmt()` builders have no `.with()`: finish them, then add the layer.
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::INFO)
            .with_writer(io::sink)
            .finish()
            .with(TprofLayer::new());
        if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
            eprintln!("file-server: {e}");
            std::process::exit(1);
        }
    }
    let dir = cfg.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("file-server-{}", std::process::id())));
    let made_dir = cfg.dir.is_none();
    if let Err(e) = make_files(&dir) {
        eprintln!("file-server: {}: {e}", dir.display());
        std::process::exit(1);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("file-server: runtime: {e}");
            std::process::exit(1);
        }
    };
    let res = rt.block_on(serve(&cfg, Arc::new(dir.clone())));
    if made_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Err(e) = res {
        eprintln!("file-server: {e}");
        std::process::exit(1);
    }
}

async fn serve(cfg: &Config, dir: Dir) -> io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&cfg.addr).await?;
    println!("listening on {} pid {}", listener.local_addr()?, std::process::id());
    let stop = Arc::new(tokio::sync::Notify::new());
    if cfg.stop_on_stdin_eof {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            stop.notify_one();
        });
    }
    let seconds = cfg.seconds;
    let limit = async move {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    let server = axum::serve(listener, app(dir, &cfg.layer));
    tokio::select! {
        done = server => done,
        _ = stop.notified() => Ok(()),
        _ = limit => Ok(()),
    }
}
