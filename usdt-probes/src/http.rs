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
//! Each request becomes a task named `"{METHOD} {route}"` (see [`default_task_name`]): a new
//! span of the trace in its `traceparent` header (a missing or invalid header starts a new
//! trace). Every poll of the handler, on whichever worker thread, is attached to it, and so
//! is every chunk of the response body: the task ends when the body is finished, or dropped
//! (the client went away), as `tower-http`'s `TraceLayer` span does, not when the headers
//! are ready. The response body is therefore a [`TaskBody`] around the handler's body.
//! The task's [`TraceContext`] is put in the request's extensions (axum:
//! `Extension<TraceContext>`) and is [`TraceContext::current`] inside the handler; the
//! response carries it back in its own `traceparent` header.
//!
//! In axum, add the layer with `Router::layer` (it then runs after routing, so the route
//! template is known: with the crate's `axum` feature, [`default_task_name`] reads axum's
//! `MatchedPath`); any other router can put a [`RouteTemplate`] in the request's
//! extensions before this layer runs, or name tasks itself with
//! [`TprofHttpLayer::with_task_name`].
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

pub use crate::body::TaskBody;
use crate::context::TraceContext;
use crate::future::TaskCore;
use crate::naming::method_name;
pub use crate::naming::{normalize_path, ID_PLACEHOLDER};
use crate::task::{swap_current, Current};

/// The W3C Trace Context header.
pub const TRACEPARENT: &str = "traceparent";

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

/// The `traceparent` header of `headers` as a string for a `tracing` span field ("" when
/// absent or not text): for services that make tasks with `TprofLayer` alone, e.g. in
/// `tower-http`'s `make_span_with`:
/// `info_span!("request", method = %req.method(), uri = %req.uri(), traceparent = usdt_probes::http::traceparent_str(req.headers()))`.
pub fn traceparent_str(headers: &HeaderMap) -> &str {
    headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A request's route template (`/users/{id}`), for routers other than axum's: put it in the
/// request's extensions before [`TprofHttpLayer`] runs and the task is named after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTemplate(pub Cow<'static, str>);

/// The route template of a request, when the router left one in its extensions: axum's
/// `MatchedPath` (feature `axum`) or a [`RouteTemplate`].
pub fn route_template(parts: &request::Parts) -> Option<&str> {
    #[cfg(feature = "axum")]
    if let Some(m) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return Some(m.as_str());
    }
    parts.extensions.get::<RouteTemplate>().map(|r| &*r.0)
}

/// The default task name: `"{METHOD} {route template}"` when the router says which route
/// matched ([`route_template`]), else `"{METHOD} {normalized path}"`, ids and numbers folded
/// to `{id}` ([`normalize_path`]: `/users/42` -> `/users/{id}`); cut
/// to tprof's 64-byte limit. tprof groups its statistics by task name: a name per URL would
/// make a row per URL.
pub fn default_task_name(parts: &request::Parts) -> String {
    let rest = match route_template(parts) {
        Some(route) => Cow::Borrowed(route),
        None => normalize_path(parts.uri.path()),
    };
    method_name(Some(parts.method.as_str()), &rest)
}

/// The raw `"{METHOD} {path}"` name (one statistics row per URL), cut to tprof's limit: the
/// default before route templates, for [`TprofHttpLayer::with_task_name`].
pub fn raw_path_task_name(parts: &request::Parts) -> String {
    method_name(Some(parts.method.as_str()), parts.uri.path())
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
    /// Tasks named by [`default_task_name`]: `"{METHOD} {route}"`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tasks named by `name` (e.g. from the router's own route type in the extensions), since
    /// tprof groups its statistics by task name.
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
    type Response = Response<TaskBody<R>>;
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
        // the first poll, where `TaskCore::run` fires `task_begin`.
        let scope = CallScope(swap_current(Some(cur)));
        let fut = self.inner.call(Request::from_parts(parts, body));
        drop(scope);
        TprofHttpFuture { inner: hints.wrap(fut), task: Some(TaskCore::new(Cow::Owned(name), cur.ctx, cur.parent_span_id)), ctx: cur.ctx }
    }
}

pin_project! {
    /// The response future of [`TprofHttpService`]: the handler's future run as a task, its
    /// response given the task's `traceparent` and a body that goes on with the task.
    #[must_use = "futures do nothing unless polled"]
    pub struct TprofHttpFuture<F> {
        #[pin]
        inner: crate::hint::Hinted<F>,
        // None once the response (and the task with it) is handed on.
        task: Option<TaskCore>,
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
    type Output = Result<Response<TaskBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(task) = this.task.as_mut() else { return Poll::Pending };
        let mut inner = this.inner;
        // The task ends here only on an error (or a panic): a response's body goes on with it.
        let Some(polled) = task.run(|| inner.as_mut().poll(cx), |r| matches!(r, Poll::Ready(Err(_)))) else {
            return Poll::Pending;
        };
        let Poll::Ready(out) = polled else { return Poll::Pending };
        let Some(task) = this.task.take() else { return Poll::Pending };
        Poll::Ready(out.map(|mut resp| {
            if !resp.headers().contains_key(TRACEPARENT) {
                inject_context(resp.headers_mut(), this.ctx);
            }
            resp.map(|body| TaskBody::new(body, task))
        }))
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

    use super::{
        default_task_name, extract_traceparent, inject_traceparent, raw_path_task_name, traceparent_str, RouteTemplate,
        TprofClientLayer, TprofHttpLayer, TRACEPARENT,
    };
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
        let names = || -> Vec<&str> { recorder::for_span(ctx.span_id()).iter().map(|f| f.0).collect() };
        assert_eq!(names(), ["task_begin", "task_detach", "task_attach", "task_detach"], "the body goes on with the task");
        assert_eq!(TraceContext::current(), None);
        drop(resp);
        assert_eq!(names().last(), Some(&"task_end"), "a body dropped unread ends the task");
    }

    /// A body of `chunks`, each pending once before it is ready (a file read, a slow client).
    struct Chunks {
        chunks: Vec<&'static [u8]>,
        ready: bool,
        /// The task current in each `poll_frame`.
        seen: Arc<Mutex<Vec<Option<TraceContext>>>>,
    }

    impl http_body::Body for Chunks {
        type Data = &'static [u8];
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<&'static [u8]>, Infallible>>> {
            self.seen.lock().unwrap().push(TraceContext::current());
            if !self.ready {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.ready = false;
            if self.chunks.is_empty() {
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Ok(http_body::Frame::data(self.chunks.remove(0)))))
        }
    }

    /// Polls `body` to its end on this thread; the number of data frames.
    fn drain<B: http_body::Body + Unpin>(body: &mut B) -> usize {
        let waker = Waker::from(Arc::new(NoopWaker));
        let mut frames = 0;
        loop {
            match Pin::new(&mut *body).poll_frame(&mut Context::from_waker(&waker)) {
                Poll::Ready(Some(_)) => frames += 1,
                Poll::Ready(None) => return frames,
                Poll::Pending => {}
            }
        }
    }

    #[test]
    fn the_task_lasts_until_the_body_is_finished_or_dropped() {
        for read_all in [true, false] {
            let seen: Arc<Mutex<Vec<Option<TraceContext>>>> = Arc::default();
            let body_seen = Arc::clone(&seen);
            let mut svc = TprofHttpLayer::new().layer(ServiceFn(move |_req: Request<()>| {
                let body = Chunks { chunks: vec![b"a", b"b"], ready: false, seen: Arc::clone(&body_seen) };
                std::future::ready(Ok::<_, Infallible>(Response::new(body)))
            }));
            let fut = svc.call(request(None));
            let ctx = fut.context();
            let (resp, _) = block_on(fut);
            let mut body = resp.expect("infallible").into_body();
            let names = || -> Vec<&str> { recorder::for_span(ctx.span_id()).iter().map(|f| f.0).collect() };
            assert_eq!(names(), ["task_begin", "task_detach"], "headers ready: the task goes on");
            if read_all {
                assert_eq!(drain(&mut body), 2);
                // Each poll of the body is attached; the one that finds the end ends the task.
                let polls = seen.lock().unwrap().clone();
                assert_eq!(polls.len(), 6);
                assert!(polls.iter().all(|c| *c == Some(ctx)), "every chunk is made inside the request's task");
                let mut want = vec!["task_begin", "task_detach"];
                for _ in 0..5 {
                    want.extend(["task_attach", "task_detach"]);
                }
                want.extend(["task_attach", "task_end"]);
                assert_eq!(names(), want);
                drop(body);
                assert_eq!(names().len(), want.len(), "ended once");
            } else {
                drop(body);
                assert_eq!(names(), ["task_begin", "task_detach", "task_end"], "the client went away");
            }
        }
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
        assert_eq!(traceparent_str(&h), REMOTE, "the first, for a span field (TprofLayer checks it)");
        assert_eq!(traceparent_str(&HeaderMap::new()), "");
    }

    #[test]
    fn task_names_are_method_and_path_within_tprofs_limit() {
        let (parts, _) = request(None).into_parts();
        assert_eq!(default_task_name(&parts), "POST /users/{id}", "ids folded");
        assert_eq!(raw_path_task_name(&parts), "POST /users/42");
        let (mut parts, _) = request(None).into_parts();
        parts.extensions.insert(RouteTemplate("/users/{user}".into()));
        assert_eq!(default_task_name(&parts), "POST /users/{user}", "the router's template first");
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
            // is the task's hint `tprof.span.kind=server` (ABI.md 2.4). The task goes on with
            // the response's body.
            assert_eq!(fired, ["task_begin", "log", "region_begin", "task_detach", "task_attach", "region_end", "task_detach"]);
        }
    }
}
