//! An async service on tokio's multi-threaded runtime (2 workers), for the end-to-end tests of
//! the usdt-probes integrations: `tokio-target tower N` or `tokio-target tracing N`.
//!
//! Prints `ready <pid>` and waits for a line on stdin (so the tracer can attach first), then
//! runs N concurrent requests and prints one line per request, then `done`.
//!
//! Each request: first poll, a 5 ms `tokio::time::sleep` (parked in the executor: unscheduled
//! time, and the wake-up may land on the other worker), then 2 ms of CPU time (measured with
//! the thread's CPU clock, so preemption cannot shorten it), a `yield_now` (one more chance to
//! move), and the end. The handler notes the worker thread of each poll (gettid); a wrapper
//! around the whole request future adds up the wall time of its polls (`busy_us`).
//!
//! * `tower`: requests `GET /req/{i}` go through `ServiceBuilder` + `TprofHttpLayer` around a
//!   `service_fn`; even ones carry a `traceparent`. Prints
//!   `req I span S trace T parent P tids A,B,C cpu_us C busy_us U`, with the span from the
//!   response's `traceparent` header.
//! * `tracing`: the same handler instrumented only with `tracing`: a `traceparent`-carrying
//!   (even) or plain span `"traced-req"`, a child span `"work"` around the CPU burn and an
//!   event, under `TprofLayer`. Prints `traced I span S trace T parent P tids A,B,C cpu_us C busy_us U`.

use std::convert::Infallible;
use std::future::Future;
use std::io::BufRead;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tower::{ServiceBuilder, ServiceExt};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use usdt_probes::http::{extract_traceparent, TRACEPARENT};
use usdt_probes::{TprofHttpLayer, TprofLayer, TraceContext};

const SLEEP: Duration = Duration::from_millis(5);
const CPU: Duration = Duration::from_millis(2);

fn gettid() -> i64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Burns `d` of this thread's CPU time. The CPU clock is a syscall (no vDSO for it), so it is
/// read every 100 us of busy loop rather than in the loop: ~20 syscalls per burn.
fn burn_cpu(d: Duration) -> Duration {
    let start = thread_cpu();
    loop {
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_micros(100) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            std::hint::black_box(x);
        }
        let used = thread_cpu() - start;
        if used >= d {
            return used;
        }
    }
}

/// Measures the wall time of every poll of a request's future, from outside: everything a
/// worker did for the request (its attach/detach probes included) lies inside these polls.
/// The future is dropped inside its last poll, so drop-time work is measured too.
struct Timed<F> {
    inner: Option<Pin<Box<F>>>,
    busy: Duration,
}

fn timed<F: Future>(f: F) -> Timed<F> {
    Timed { inner: Some(Box::pin(f)), busy: Duration::ZERO }
}

impl<F: Future> Future for Timed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let start = Instant::now();
        let this = &mut *self;
        let fut = this.inner.as_mut().expect("polled after completion");
        let out = match fut.as_mut().poll(cx) {
            Poll::Ready(v) => {
                this.inner = None;
                Some(v)
            }
            Poll::Pending => None,
        };
        this.busy += start.elapsed();
        match out {
            Some(v) => Poll::Ready((v, this.busy)),
            None => Poll::Pending,
        }
    }
}

/// What one request saw.
struct Seen {
    tids: Vec<i64>,
    cpu: Duration,
}

/// The request's work; `region` wraps the CPU burn (the tracing variant makes it a span).
async fn work(region: impl FnOnce(&mut dyn FnMut())) -> Seen {
    let mut tids = vec![gettid()];
    tokio::time::sleep(SLEEP).await;
    tids.push(gettid());
    let mut cpu = Duration::ZERO;
    region(&mut || cpu = burn_cpu(CPU));
    tokio::task::yield_now().await;
    tids.push(gettid());
    Seen { tids, cpu }
}

fn tids(s: &Seen) -> String {
    s.tids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

async fn handle(req: Request<()>) -> Result<Response<String>, Infallible> {
    let ctx = TraceContext::current().expect("the handler runs inside the request's task");
    assert_eq!(req.extensions().get::<TraceContext>(), Some(&ctx), "the layer passes the context to the handler");
    let seen = work(|f| f()).await;
    assert_eq!(TraceContext::current(), Some(ctx), "still the request's task after migrating");
    Ok(Response::new(format!("tids {} cpu_us {}", tids(&seen), seen.cpu.as_micros())))
}

/// An incoming context for even requests (as if from a caller).
fn caller(i: usize) -> Option<TraceContext> {
    i.is_multiple_of(2).then(TraceContext::new_root)
}

fn ids(ctx: &TraceContext, parent: Option<TraceContext>) -> String {
    format!(
        "span {:016x} trace {:032x} parent {:016x}",
        ctx.span_id(),
        ctx.trace_id(),
        parent.map(|p| p.span_id()).unwrap_or(0)
    )
}

async fn tower_requests(n: usize) {
    let svc = ServiceBuilder::new().layer(TprofHttpLayer::new()).service_fn(handle);
    let mut running = Vec::new();
    for i in 0..n {
        let parent = caller(i);
        let mut req = Request::get(format!("/req/{i}"));
        if let Some(p) = parent {
            req = req.header(TRACEPARENT, p.to_traceparent());
        }
        let req = req.body(()).expect("request");
        // The response's body carries the task on: taking the body out of it (the whole
        // String, as a server writes it) ends the task, here on the worker, inside the polls.
        let call = svc.clone().oneshot(req);
        let call = async move { call.await.map(|resp| resp.map(usdt_probes::http::TaskBody::into_inner)) };
        running.push((i, parent, tokio::spawn(timed(call))));
    }
    for (i, parent, h) in running {
        let (resp, busy) = h.await.expect("request task");
        let resp = resp.expect("infallible");
        let ctx = extract_traceparent(resp.headers()).expect("the response carries traceparent");
        println!("req {i} {} {} busy_us {}", ids(&ctx, parent), resp.body(), busy.as_micros());
    }
}

async fn tracing_requests(n: usize) {
    let mut running = Vec::new();
    for i in 0..n {
        let parent = caller(i);
        let span = match parent {
            Some(p) => tracing::info_span!("traced-req", id = i, traceparent = %p.to_traceparent()),
            None => tracing::info_span!("traced-req", id = i),
        };
        let fut = async move {
            let ctx = TraceContext::current().expect("the span's task is current");
            let seen = work(|f| tracing::info_span!("work").in_scope(f)).await;
            tracing::info!(request = i, "finished");
            (ctx, seen)
        };
        running.push((i, parent, tokio::spawn(timed(fut.instrument(span)))));
    }
    for (i, parent, h) in running {
        let ((ctx, seen), busy) = h.await.expect("request task");
        println!(
            "traced {i} {} tids {} cpu_us {} busy_us {}",
            ids(&ctx, parent),
            tids(&seen),
            seen.cpu.as_micros(),
            busy.as_micros()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("tower").to_string();
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    if mode == "tracing" {
        let subscriber = tracing_subscriber::registry().with(TprofLayer::new());
        tracing::subscriber::set_global_default(subscriber).expect("set the tracing subscriber");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("tokio runtime");
    println!("ready {}", std::process::id());
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    match mode.as_str() {
        "tower" => rt.block_on(tower_requests(n)),
        "tracing" => rt.block_on(tracing_requests(n)),
        other => panic!("unknown mode {other:?}: tower or tracing"),
    }
    println!("done");
}
