//! HTTP integration (feature `tower`): a tower [`Layer`] for servers (axum, hyper through
//! `hyper-util`, tonic, anything built on `tower::Service<http::Request<B>>`) and helpers that
//! carry the W3C `traceparent` on outgoing requests.
//!
//! Server, one line:
//!
//! ```text
//! let app = axum::Router::new().route("/users", get(users)).layer(usdt_probes::TprofHttpLayer::new());
//! ```
//!
//! Each request becomes a task named `"{METHOD} {path}"`: a new span of the trace in its
//! `traceparent` header (a missing or invalid header starts a new trace), run with
//! [`InTask`], so every poll of the handler, on whichever worker thread, is attached to it.
//! The task's [`TraceContext`] is put in the request's extensions (axum:
//! `Extension<TraceContext>`) and is [`TraceContext::current`] inside the handler; the
//! response carries it back in its own `traceparent` header.
//!
//! Client: the transport injects, the handler extracts. Wrap the client's tower stack in
//! [`TprofClientLayer`], or call [`inject_traceparent`] on each outgoing request's headers
//! from inside the task, so the called service's task becomes a child of this one.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::http::header::{HeaderMap, HeaderValue};
use ::http::{request, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::context::TraceContext;
use crate::future::InTask;
use crate::task::{swap_current, Current};

/// The W3C Trace Context header.
pub const TRACEPARENT: &str = "traceparent";

/// tprof copies at most 64 bytes of a task name (ABI.md 1.2).
const NAME_MAX: usize = 64;

/// The incoming context in `headers`: the `traceparent` header if there is exactly one and it
/// is valid (W3C: otherwise the receiver starts a new trace).
pub fn extract_traceparent(headers: &HeaderMap) -> Option<TraceContext> {
    let mut all = headers.get_all(TRACEPARENT).iter();
    let (Some(v), None) = (all.next(), all.next()) else { return None };
    TraceContext::parse_traceparent(v.to_str().ok()?.trim()).ok()
}

/// Sets `traceparent` in `headers` to `ctx` (replacing any).
pub fn inject_context(headers: &mut HeaderMap, ctx: &TraceContext) {
    // A traceparent is 55 ASCII characters: always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&ctx.to_traceparent()) {
        headers.insert(TRACEPARENT, v);
    }
}

/// Sets `traceparent` in an outgoing request's `headers` to the current task's context
/// ([`TraceContext::current`]), so the service called continues this trace as a child of this
/// task. Returns the context injected; none when no task is current (headers left alone).
pub fn inject_traceparent(headers: &mut HeaderMap) -> Option<TraceContext> {
    let ctx = TraceContext::current()?;
    inject_context(headers, &ctx);
    Some(ctx)
}

/// The default task name: `"{METHOD} {path}"`, cut to tprof's 64-byte limit.
pub fn default_task_name(parts: &request::Parts) -> String {
    let mut name = format!("{} {}", parts.method, parts.uri.path());
    if name.len() > NAME_MAX {
        let mut end = NAME_MAX;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// Server layer: each request a task (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub struct TprofHttpLayer {
    name: fn(&request::Parts) -> String,
}

impl Default for TprofHttpLayer {
    fn default() -> Self {
        TprofHttpLayer { name: default_task_name }
    }
}

impl TprofHttpLayer {
    /// Tasks named `"{METHOD} {path}"`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tasks named by `name`, e.g. to fold ids out of paths (`GET /users/:id`), since tprof
    /// groups its statistics by task name.
    pub fn with_task_name(name: fn(&request::Parts) -> String) -> Self {
        TprofHttpLayer { name }
    }
}

impl<S> Layer<S> for TprofHttpLayer {
    type Service = TprofHttpService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TprofHttpService { inner, name: self.name }
    }
}

/// The service [`TprofHttpLayer`] wraps around `S`.
#[derive(Clone, Debug)]
pub struct TprofHttpService<S> {
    inner: S,
    name: fn(&request::Parts) -> String,
}

impl<S> TprofHttpService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Restores the thread's current task when `call` returns or unwinds.
struct CallScope(Option<Current>);

impl Drop for CallScope {
    fn drop(&mut self) {
        swap_current(self.0.take());
    }
}

impl<S, B, R> Service<Request<B>> for TprofHttpService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = TprofHttpFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let parent = extract_traceparent(&parts.headers).or_else(TraceContext::current);
        let cur = match parent {
            Some(p) => Current { ctx: p.child(), parent_span_id: p.span_id() },
            None => Current { ctx: TraceContext::new_root(), parent_span_id: 0 },
        };
        let (cur, hints) = crate::hint::server_task(cur, parent);
        let name = (self.name)(&parts);
        parts.extensions.insert(cur.ctx);
        // The inner `call` (routing, building the handler's future, `tracing` spans made
        // there) already sees the request's context as current; the task itself begins at
        // the first poll, where `InTask` fires `task_begin`.
        let scope = CallScope(swap_current(Some(cur)));
        let fut = self.inner.call(Request::from_parts(parts, body));
        drop(scope);
        TprofHttpFuture { inner: InTask::with_context(hints.wrap(fut), Cow::Owned(name), cur.ctx, cur.parent_span_id), ctx: cur.ctx }
    }
}

pin_project! {
    /// The response future of [`TprofHttpService`]: the handler's future run as a task, its
    /// response given the task's `traceparent`.
    #[must_use = "futures do nothing unless polled"]
    pub struct TprofHttpFuture<F> {
        #[pin]
        inner: InTask<crate::hint::Hinted<F>>,
        ctx: TraceContext,
    }
}

impl<F> TprofHttpFuture<F> {
    /// The request's task context.
    pub fn context(&self) -> TraceContext {
        self.ctx
    }
}

impl<F, R, E> Future for TprofHttpFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(Ok(mut resp)) => {
                if !resp.headers().contains_key(TRACEPARENT) {
                    inject_context(resp.headers_mut(), this.ctx);
                }
                Poll::Ready(Ok(resp))
            }
            other => other,
        }
    }
}

/// Client layer: sets `traceparent` on every outgoing request made while a task is current
/// (see [`inject_traceparent`]), unless the request already has one.
#[derive(Clone, Copy, Debug, Default)]
pub struct TprofClientLayer;

impl TprofClientLayer {
    pub fn new() -> Self {
        TprofClientLayer
    }
}

impl<S> Layer<S> for TprofClientLayer {
    type Service = TprofClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TprofClientService { inner }
    }
}

/// The service [`TprofClientLayer`] wraps around a client `S`.
#[derive(Clone, Debug)]
pub struct TprofClientService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for TprofClientService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        if !req.headers().contains_key(TRACEPARENT) {
            inject_traceparent(req.headers_mut());
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Wake, Waker};

    use ::http::{HeaderMap, Request, Response};
    use tower_layer::Layer;
    use tower_service::Service;

    use super::{default_task_name, extract_traceparent, inject_traceparent, TprofClientLayer, TprofHttpLayer, TRACEPARENT};
    use crate::sdt::recorder;
    use crate::task::{swap_current, Current};
    use crate::{Task, TaskFutureExt, TraceContext};

    const REMOTE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// `tower::service_fn`, without the dependency.
    #[derive(Clone)]
    struct ServiceFn<F>(F);

    impl<F, Fut, B, R> Service<Request<B>> for ServiceFn<F>
    where
        F: FnMut(Request<B>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Infallible>>,
    {
        type Response = Response<R>;
        type Error = Infallible;
        type Future = Fut;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Request<B>) -> Fut {
            (self.0)(req)
        }
    }

    struct NoopWaker;
    impl Wake for NoopWaker {
        fn wake(self: Arc<Self>) {}
    }

    /// Polls `fut` to completion on this thread, returning how many polls it took.
    fn block_on<F: Future>(fut: F) -> (F::Output, u32) {
        let mut fut = Box::pin(fut);
        let waker = Waker::from(Arc::new(NoopWaker));
        let mut polls = 0;
        loop {
            polls += 1;
            if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
                return (v, polls);
            }
        }
    }

    /// Pending once, then ready: a handler that awaits something.
    struct YieldOnce(bool);
    impl Future for YieldOnce {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn current() -> Option<Current> {
        let c = swap_current(None);
        swap_current(c);
        c
    }

    /// What the handler saw: (current task incl. parent, the context in the extensions).
    type Seen = Arc<Mutex<Vec<(Option<Current>, Option<TraceContext>)>>>;

    type Handled = Pin<Box<dyn Future<Output = Result<Response<&'static str>, Infallible>>>>;

    fn handler(seen: Seen) -> ServiceFn<impl FnMut(Request<()>) -> Handled + Clone> {
        ServiceFn(move |req: Request<()>| {
            let seen = Arc::clone(&seen);
            let ext = req.extensions().get::<TraceContext>().copied();
            Box::pin(async move {
                YieldOnce(false).await;
                seen.lock().unwrap().push((current(), ext));
                Ok::<_, Infallible>(Response::new("ok"))
            }) as Handled
        })
    }

    fn request(traceparent: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method("POST").uri("http://svc/users/42?x=1");
        if let Some(t) = traceparent {
            b = b.header(TRACEPARENT, t);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn traceparent_round_trips_through_the_layer() {
        let remote = TraceContext::parse_traceparent(REMOTE).expect("valid");
        let seen = Seen::default();
        let mut svc = TprofHttpLayer::new().layer(handler(Arc::clone(&seen)));
        let fut = svc.call(request(Some(REMOTE)));
        let ctx = fut.context();
        let (resp, polls) = block_on(fut);
        let resp = resp.expect("infallible");
        assert_eq!(polls, 2);
        let (cur, ext) = seen.lock().unwrap()[0];
        let cur = cur.expect("the handler runs inside the request's task");
        assert_eq!(cur.ctx, ctx);
        assert_eq!(ext, Some(ctx), "the context is in the request's extensions");
        assert_eq!(cur.ctx.trace_id(), remote.trace_id(), "the incoming trace goes on");
        assert_eq!(cur.parent_span_id, remote.span_id(), "as a child of the caller's span");
        assert_ne!(cur.ctx.span_id(), remote.span_id());
        let back = extract_traceparent(resp.headers()).expect("the response carries traceparent");
        assert_eq!(back, ctx, "the response names the server's task");
        let names: Vec<&str> = recorder::for_span(ctx.span_id()).iter().map(|f| f.0).collect();
        assert_eq!(names, ["task_begin", "task_detach", "task_attach", "task_end"]);
        assert_eq!(TraceContext::current(), None);
    }

    #[test]
    fn missing_or_invalid_traceparent_starts_a_new_trace() {
        let remote = TraceContext::parse_traceparent(REMOTE).expect("valid");
        for header in [None, Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), Some("garbage")] {
            let seen = Seen::default();
            let mut svc = TprofHttpLayer::new().layer(handler(Arc::clone(&seen)));
            let (resp, _) = block_on(svc.call(request(header)));
            let cur = seen.lock().unwrap()[0].0.expect("task");
            assert_eq!(cur.parent_span_id, 0, "{header:?}: a root span");
            assert_ne!(cur.ctx.trace_id(), remote.trace_id());
            assert_eq!(extract_traceparent(resp.expect("ok").headers()), Some(cur.ctx));
        }
        // Two traceparent headers: invalid as well.
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, REMOTE.parse().unwrap());
        h.append(TRACEPARENT, REMOTE.parse().unwrap());
        assert_eq!(extract_traceparent(&h), None);
    }

    #[test]
    fn task_names_are_method_and_path_within_tprofs_limit() {
        let (parts, _) = request(None).into_parts();
        assert_eq!(default_task_name(&parts), "POST /users/42");
        let long = format!("http://svc/{}", "ü".repeat(60));
        let (parts, _) = Request::get(long.as_str()).body(()).expect("request").into_parts();
        let name = default_task_name(&parts);
        assert!(name.len() <= 64 && name.starts_with("GET /"), "{name}");
        let named = TprofHttpLayer::with_task_name(|p| format!("{} /users/:id", p.method));
        let seen = Seen::default();
        let mut svc = named.layer(handler(Arc::clone(&seen)));
        let _ = block_on(svc.call(request(None)));
    }

    #[test]
    fn client_helpers_inject_the_current_task() {
        let mut h = HeaderMap::new();
        assert_eq!(inject_traceparent(&mut h), None, "no task, no header");
        assert!(h.is_empty());
        let task = Task::new("client");
        let task_ctx = task.context();
        assert_eq!(inject_traceparent(&mut h), Some(task_ctx));
        assert_eq!(extract_traceparent(&h), Some(task.context()));

        // The client layer, as a tower stack around the transport.
        let sent: Arc<Mutex<Vec<Option<TraceContext>>>> = Arc::default();
        let log = Arc::clone(&sent);
        let transport = ServiceFn(move |req: Request<()>| {
            log.lock().unwrap().push(extract_traceparent(req.headers()));
            std::future::ready(Ok::<_, Infallible>(Response::new(())))
        });
        let mut client = TprofClientLayer::new().layer(transport);
        let _ = block_on(client.call(request(None)));
        let _ = block_on(client.call(request(Some(REMOTE))));
        drop(task);
        let _ = block_on(client.call(request(None)));
        // Inside an async task too: made current by `in_task` around each poll.
        let (ctx, _) = block_on(
            async {
                let _ = client.call(request(None)).await;
                TraceContext::current()
            }
            .in_task("async client"),
        );
        let sent = sent.lock().unwrap().clone();
        let remote = TraceContext::parse_traceparent(REMOTE).ok();
        assert!(ctx.is_some());
        assert_eq!(sent, [Some(task_ctx), remote, None, ctx], "inject, keep, nothing, inject");
    }

    #[test]
    fn handler_spans_under_the_layer_are_regions_of_the_request() {
        // With the tracing layer too: a `tracing` span made in the handler is a region of
        // the HTTP task, not a second task.
        #[cfg(feature = "tracing")]
        {
            use tracing_subscriber::layer::SubscriberExt;
            let d = tracing::Dispatch::new(tracing_subscriber::registry().with(crate::TprofLayer::new()));
            let seen = Seen::default();
            let inner = handler(Arc::clone(&seen));
            let mut svc = TprofHttpLayer::new().layer(ServiceFn(move |req: Request<()>| {
                let mut inner = inner.clone();
                async move {
                    let span = tracing::info_span!("db");
                    let _ = span.in_scope(TraceContext::current);
                    inner.call(req).await
                }
            }));
            let mark = recorder::len();
            let me = std::thread::current().id();
            let (resp, _) = tracing::dispatcher::with_default(&d, || block_on(svc.call(request(None))));
            assert!(resp.is_ok());
            let fired: Vec<&str> = recorder::since(mark).into_iter().filter(|f| f.2 == me).map(|f| f.0).collect();
            // The region lives as long as its span: across the handler's await (a detach and
            // an attach), closed when the span is dropped at the end of the handler. The `log`
            // is the task's hint `tprof.span.kind=server` (ABI.md 2.4).
            assert_eq!(fired, ["task_begin", "log", "region_begin", "task_detach", "task_attach", "region_end", "task_end"]);
        }
    }
}
