//! `tracing` integration (feature `tracing`): see [`TprofLayer`].

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::context::TraceContext;
use crate::naming::{cut, method_name, normalize_path, uri_path, NAME_MAX};
use crate::sdt;
use crate::task::{fire_attach, fire_begin, fire_detach, fire_end, swap_current, Current};

/// Field that makes a span a task wherever it is (`tprof.task = true`).
const TASK_FIELD: &str = "tprof.task";
/// Field that names a task span (defaults to the span's name).
const NAME_FIELD: &str = "tprof.name";
/// Fields holding an incoming W3C `traceparent` (ours, OpenTelemetry's).
const TRACEPARENT_FIELDS: [&str; 2] = ["traceparent", "http.request.header.traceparent"];
/// `tower-http`'s `DefaultMakeSpan::include_headers(true)`: the request's headers, Debug.
const HEADERS_FIELD: &str = "headers";
/// Common fields of HTTP request spans (tower-http, axum examples, OpenTelemetry's
/// semantic conventions) that name a task.
const METHOD_FIELDS: [&str; 3] = ["method", "http.method", "http.request.method"];
const ROUTE_FIELDS: [&str; 3] = ["http.route", "matched_path", "route"];
const PATH_FIELDS: [&str; 6] = ["uri", "path", "url.path", "http.target", "url", "url.full"];
const OTEL_NAME_FIELD: &str = "otel.name";
/// tprof copies at most this many bytes of a log key / value (ABI.md 1.2).
const LOG_KEY_MAX: usize = 32;
const LOG_VALUE_MAX: usize = 128;

type TaskPredicate = dyn Fn(&Metadata<'_>) -> bool + Send + Sync;
type TaskNamer = dyn Fn(&SpanInfo<'_>) -> Option<String> + Send + Sync;

/// What a naming function ([`TprofLayer::with_task_name`]) sees of a task span: its
/// metadata and the common HTTP fields it has (values as recorded, strings unquoted).
#[non_exhaustive]
#[derive(Clone, Copy, Debug)]
pub struct SpanInfo<'a> {
    pub metadata: &'static Metadata<'static>,
    /// `method`, `http.method` or `http.request.method`.
    pub method: Option<&'a str>,
    /// `http.route`, `matched_path` or `route`: a route template.
    pub route: Option<&'a str>,
    /// The path of `uri`, `path`, `url.path`, `http.target`, `url` or `url.full` (no query).
    pub path: Option<&'a str>,
    /// `otel.name`.
    pub otel_name: Option<&'a str>,
}

impl SpanInfo<'_> {
    /// The name [`TprofLayer`] gives a task span by default: `otel.name`, else
    /// `"{method} {route}"`, else `"{method} {path}"` with ids and numbers folded
    /// ([`crate::normalize_path`]), else the span's name; cut to tprof's 64 bytes.
    pub fn default_name(&self) -> String {
        if let Some(n) = self.otel_name {
            return method_name(None, n);
        }
        if let Some(r) = self.route {
            return method_name(self.method, r);
        }
        if let Some(p) = self.path {
            return method_name(self.method, &normalize_path(p));
        }
        method_name(None, self.metadata.name())
    }
}

/// `tracing` integration (feature `tracing`): a `tracing-subscriber` [`Layer`] that turns spans
/// into tprof tasks and regions and events into logs, so a service already instrumented with
/// `tracing` emits tprof probes with one line:
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
/// tracing_subscriber::registry()
///     .with(usdt_probes::TprofLayer::new())
///     // .with(tracing_subscriber::fmt::layer()) and the service's other layers, unchanged
///     .init();
/// ```
///
/// Requests whose root spans come from a framework (e.g. `tower-http`'s `TraceLayer`) are
/// tasks as they are; async code instrumented with `.instrument(span)` is followed across
/// worker threads. Use either this layer or `TprofHttpLayer` (feature `tower`) to make a request's
/// task: with both, spans made inside the HTTP layer's task become its regions.
///
/// # Mapping
///
/// * **Tasks**: a span becomes a task when it is a root span (no parent span), when it has the
///   field `tprof.task = true`, or when the predicate given to
///   [`TprofLayer::with_task_predicate`] accepts its metadata. Its name: the field `tprof.name`,
///   else [`TprofLayer::with_task_name`]'s function, else [`SpanInfo::default_name`]
///   (`otel.name`, or `method` with `http.route`/`matched_path`/`route`, or with the path of
///   `uri`/`path`/`url.path`/`http.target`, ids folded), else the span's name. Its ids: a child span of the W3C context in a
///   `traceparent` field (`info_span!("request", traceparent = %header)`; it may also be
///   recorded later, before the span is first entered), else a child of the enclosing task
///   span, else of the thread's current task ([`TraceContext::current`]), else a new trace.
///   The `traceparent` may also come as OpenTelemetry's `http.request.header.traceparent`
///   field or inside tower-http's `headers` field: this layer never sees the request itself.
///   The context is stored in the span's extensions as a [`TraceContext`], for other layers.
/// * **Polls**: `tracing` enters and exits a span around every poll of an instrumented future,
///   on whichever thread polls it. The first enter fires `task_begin`; an enter on a thread the
///   task is not current on fires `task_attach`, and the matching exit `task_detach`; the
///   span's close fires `task_end`. While the span is entered, its task is also current in the
///   thread-local, so [`TraceContext::current`] (e.g. for `http::inject_traceparent`)
///   and [`crate::Task::new`] see it.
/// * **Regions**: other spans inside a task become regions named after the span, from their
///   first enter to their close: for an instrumented future, the region covers its whole life
///   (awaits included), not just its polls, which is what a latency breakdown needs (tprof keeps
///   regions per task, so begin and end may fire on different threads). Entering a region span
///   on a thread where its task is not current (e.g. a future spawned on another worker)
///   attaches the task there for the duration of the enter: that work is the request's.
///   A root span created while a task that this layer does not own is current (a
///   [`crate::TaskFutureExt::in_task`] future, the `tower` layer's handler) is a region of
///   that task.
/// * **Events** become `log(key, value)` for the thread's current task: the key is the event's
///   target, the value its `message` (or first field), followed by its other fields as
///   `name=value`, cut at tprof's limits (32 and 128 bytes). Nothing is formatted unless a
///   tracer armed the `log` probe ([`crate::log_enabled`]) and a task is current.
#[derive(Clone)]
pub struct TprofLayer {
    roots_are_tasks: bool,
    logs: bool,
    predicate: Option<Arc<TaskPredicate>>,
    namer: Option<Arc<TaskNamer>>,
}

impl Default for TprofLayer {
    fn default() -> Self {
        TprofLayer { roots_are_tasks: true, logs: true, predicate: None, namer: None }
    }
}

impl fmt::Debug for TprofLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TprofLayer")
            .field("roots_are_tasks", &self.roots_are_tasks)
            .field("logs", &self.logs)
            .field("predicate", &self.predicate.is_some())
            .field("namer", &self.namer.is_some())
            .finish()
    }
}

impl TprofLayer {
    /// Root spans and spans with `tprof.task = true` are tasks; events are logs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also makes a task of every span whose metadata `pred` accepts, wherever it is (e.g.
    /// `|m| m.name() == "request"` for `tower-http`'s spans).
    pub fn with_task_predicate(mut self, pred: impl Fn(&Metadata<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(pred));
        self
    }

    /// Whether root spans are tasks (default true). With false, only spans marked
    /// `tprof.task = true` or accepted by the predicate are, and spans outside every task are
    /// ignored (background loops, start-up).
    pub fn roots_are_tasks(mut self, yes: bool) -> Self {
        self.roots_are_tasks = yes;
        self
    }

    /// Names task spans with `name` (a span's `tprof.name` field still wins): its `None`
    /// falls back to [`SpanInfo::default_name`]. tprof groups its statistics by task name,
    /// so a name should say what kind of request it is, not which object it was for.
    pub fn with_task_name(mut self, name: impl Fn(&SpanInfo<'_>) -> Option<String> + Send + Sync + 'static) -> Self {
        self.namer = Some(Arc::new(name));
        self
    }

    fn task_name(&self, meta: &'static Metadata<'static>, f: &SpanFields) -> Cow<'static, str> {
        if let Some(n) = &f.name {
            return Cow::Owned(n.clone());
        }
        let info = SpanInfo {
            metadata: meta,
            method: f.method.as_deref(),
            route: f.route.as_deref(),
            path: f.path.as_deref().map(uri_path),
            otel_name: f.otel_name.as_deref(),
        };
        if let Some(n) = self.namer.as_ref().and_then(|namer| namer(&info)) {
            return Cow::Owned(cut(&n, NAME_MAX).to_string());
        }
        if info.otel_name.is_none() && info.route.is_none() && info.path.is_none() {
            return Cow::Borrowed(meta.name());
        }
        Cow::Owned(info.default_name())
    }

    /// Whether events become `log` probes (default true).
    pub fn with_logs(mut self, yes: bool) -> Self {
        self.logs = yes;
        self
    }
}

/// A task owned by this layer (one per task span), shared with its region spans.
struct OwnedTask {
    state: Mutex<TaskState>,
}

struct TaskState {
    cur: Current,
    name: Cow<'static, str>,
    /// The span's fields so far: fields recorded before the first enter rename it.
    fields: SpanFields,
    meta: &'static Metadata<'static>,
    begun: bool,
    ended: bool,
}

impl OwnedTask {
    fn lock(&self) -> MutexGuard<'_, TaskState> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // matters more than losing the task: go on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The task a region belongs to.
#[derive(Clone)]
enum TaskRef {
    /// A task span of this layer: it can be begun and attached from any thread.
    Owned(Arc<OwnedTask>),
    /// A task someone else owns (an `InTask`, a `Task` guard) that was current when the span
    /// was created. This layer cannot know whether it is still alive, so it only fires region
    /// probes on threads where that task is current.
    Foreign(TraceContext),
}

/// What this layer made of a span (in its extensions).
enum Role {
    Task(Arc<OwnedTask>),
    Region { task: TaskRef, name: &'static str, begun: AtomicBool },
}

impl Role {
    fn owned_task(&self) -> Option<&Arc<OwnedTask>> {
        match self {
            Role::Task(t) | Role::Region { task: TaskRef::Owned(t), .. } => Some(t),
            Role::Region { task: TaskRef::Foreign(_), .. } => None,
        }
    }
}

/// One enter of a span this layer tracks, on this thread.
struct Frame {
    span: u64,
    /// Set when this enter attached the task to the thread (fired `task_begin` or
    /// `task_attach`): the exit fires `task_detach` and restores `prev` as current.
    attached: Option<Attached>,
}

struct Attached {
    ctx: TraceContext,
    prev: Option<Current>,
    /// Tasks attached below this one whose spans exited first (out of order): detached
    /// after this one, so the kernel's stack pops in order (a detach of a deeper entry would
    /// drop this one with it, ABI.md 2.3).
    deferred: Vec<TraceContext>,
}

thread_local! {
    /// The thread's enters of tracked spans, innermost last.
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

fn current_span_id() -> Option<u64> {
    TraceContext::current().map(|c| c.span_id())
}

/// Makes `task` current on this thread unless it already is: fires `task_begin` the first
/// time the task runs anywhere, `task_attach` after that.
fn attach_owned(task: &OwnedTask) -> Option<Attached> {
    let mut st = task.lock();
    if st.ended || current_span_id() == Some(st.cur.ctx.span_id()) {
        return None;
    }
    if st.begun {
        fire_attach(&st.cur);
    } else {
        st.begun = true;
        fire_begin(&st.cur, &st.name);
    }
    let prev = swap_current(Some(st.cur));
    Some(Attached { ctx: st.cur.ctx, prev, deferred: Vec::new() })
}

fn detach(a: Attached) {
    fire_detach(&a.ctx);
    for ctx in a.deferred.iter().rev() {
        fire_detach(ctx);
    }
    swap_current(a.prev);
}

fn push_frame(span: &Id, attached: Option<Attached>) {
    let mut frame = Some(Frame { span: span.into_u64(), attached });
    let _ = FRAMES.try_with(|f| f.borrow_mut().extend(frame.take()));
    if let Some(Frame { attached: Some(a), .. }) = frame {
        // The thread is exiting (its thread-locals are gone): no exit will find this frame,
        // so undo the attach now.
        detach(a);
    }
}

/// Pops this thread's innermost enter of `span`. Exits normally come in LIFO order; if not,
/// the removed frame's detach and saved "previous current task" pass to the next attaching
/// frame above it, so the kernel's stack and the thread-local end up right when all have
/// exited.
fn pop_frame(span: &Id) {
    let id = span.into_u64();
    let removed = FRAMES
        .try_with(|f| {
            let mut frames = f.borrow_mut();
            let pos = frames.iter().rposition(|fr| fr.span == id)?;
            let mut fr = frames.remove(pos);
            let Some(att) = fr.attached.take() else { return Some(None) };
            if let Some(above) = frames[pos..].iter_mut().find_map(|fr| fr.attached.as_mut()) {
                // Out-of-order exit: the thread stays on the task attached above.
                above.prev = att.prev;
                let mut below = att.deferred;
                below.push(att.ctx);
                below.append(&mut above.deferred);
                above.deferred = below;
                return Some(None);
            }
            Some(Some(att))
        })
        .ok()
        .flatten()
        .flatten();
    if let Some(att) = removed {
        detach(att);
    }
}

/// Reads the fields this layer cares about.
#[derive(Default)]
struct SpanFields {
    task: bool,
    name: Option<String>,
    traceparent: Option<String>,
    method: Option<String>,
    route: Option<String>,
    path: Option<String>,
    otel_name: Option<String>,
}

impl SpanFields {
    /// Whether a field that names a task or gives its ids was recorded.
    fn any(&self) -> bool {
        self.name.is_some()
            || self.traceparent.is_some()
            || self.method.is_some()
            || self.route.is_some()
            || self.path.is_some()
            || self.otel_name.is_some()
    }

    /// Takes the fields `later` recorded.
    fn merge(&mut self, later: SpanFields) {
        fn take(into: &mut Option<String>, v: Option<String>) {
            if v.is_some() {
                *into = v;
            }
        }
        take(&mut self.name, later.name);
        take(&mut self.traceparent, later.traceparent);
        take(&mut self.method, later.method);
        take(&mut self.route, later.route);
        take(&mut self.path, later.path);
        take(&mut self.otel_name, later.otel_name);
    }

    fn set(&mut self, name: &str, value: impl FnOnce() -> String) {
        let slot = match name {
            NAME_FIELD => &mut self.name,
            OTEL_NAME_FIELD => &mut self.otel_name,
            n if TRACEPARENT_FIELDS.contains(&n) => &mut self.traceparent,
            n if METHOD_FIELDS.contains(&n) => &mut self.method,
            n if ROUTE_FIELDS.contains(&n) => &mut self.route,
            n if PATH_FIELDS.contains(&n) => &mut self.path,
            _ => return,
        };
        *slot = Some(value());
    }
}

/// `?value` fields are Debug-formatted: a string comes back quoted.
fn unquote(s: String) -> String {
    match s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.to_string(),
        None => s,
    }
}

/// The `traceparent` in a Debug-formatted `HeaderMap` (`{"traceparent": "00-...", ...}`).
fn traceparent_in_headers(headers: &str) -> Option<String> {
    let at = headers.find("\"traceparent\": \"")? + "\"traceparent\": \"".len();
    let rest = &headers[at..];
    Some(rest[..rest.find('"')?].to_string())
}

impl Visit for SpanFields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == TASK_FIELD {
            self.task = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == TASK_FIELD {
            self.task = value == "true";
        }
        self.set(field.name(), || value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            TASK_FIELD => self.task = format!("{value:?}") == "true",
            HEADERS_FIELD if self.traceparent.is_none() => self.traceparent = traceparent_in_headers(&format!("{value:?}")),
            n => self.set(n, || unquote(format!("{value:?}"))),
        }
    }
}

/// The nearest ancestor this layer tracks, and what it is.
fn tracked_parent<'a, S>(span: &SpanRef<'a, S>) -> Option<TaskRef>
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    let mut p = span.parent();
    while let Some(s) = p {
        if let Some(role) = s.extensions().get::<Role>() {
            return Some(match role {
                Role::Task(t) => TaskRef::Owned(Arc::clone(t)),
                Role::Region { task, .. } => task.clone(),
            });
        }
        p = s.parent();
    }
    None
}

fn task_ref_ctx(t: &TaskRef) -> TraceContext {
    match t {
        TaskRef::Owned(o) => o.lock().cur.ctx,
        TaskRef::Foreign(c) => *c,
    }
}

/// Feature `opentelemetry`: a task not begun yet takes the ids of its `tracing` span's
/// OpenTelemetry span (tracing-opentelemetry's span data, else, for a span that layer does not
/// track, the current OpenTelemetry context). Returns the new ids when it did.
#[cfg(feature = "opentelemetry")]
fn adopt_otel(task: &OwnedTask, ext: &tracing_subscriber::registry::Extensions<'_>) -> Option<TraceContext> {
    let mut st = task.lock();
    if st.begun || st.ended {
        return None;
    }
    let otel = match ext.get::<tracing_opentelemetry::OtelData>() {
        Some(d) => {
            let (trace, span) = (d.trace_id()?, d.span_id()?);
            TraceContext::new(u128::from_be_bytes(trace.to_bytes()), u64::from_be_bytes(span.to_bytes()), st.cur.ctx.flags())?
        }
        None => crate::otel::current_span()?,
    };
    let parent = TraceContext::new(st.cur.ctx.trace_id(), st.cur.parent_span_id, 0);
    st.cur = crate::otel::adopt(otel, parent)?;
    Some(st.cur.ctx)
}

fn parse(traceparent: Option<&str>) -> Option<TraceContext> {
    traceparent.and_then(|t| TraceContext::parse_traceparent(t.trim()).ok())
}

/// Ids for a new task: a child of the valid `traceparent` field, else of `parent`, else of
/// the thread's current task, else the root of a new trace.
fn task_ids(traceparent: Option<&str>, parent: Option<TraceContext>) -> Current {
    match parse(traceparent).or(parent).or_else(TraceContext::current) {
        Some(p) => Current { ctx: p.child(), parent_span_id: p.span_id() },
        None => Current { ctx: TraceContext::new_root(), parent_span_id: 0 },
    }
}

/// What a new span is to this layer (None: ignored).
enum NewRole {
    Task(Option<TraceContext>),
    Region(TaskRef),
}

impl<S> Layer<S> for TprofLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        let meta = attrs.metadata();
        let parent = tracked_parent(&span);
        let marked = fields.task || self.predicate.as_ref().is_some_and(|p| p(meta));
        let role = match parent {
            Some(p) if marked => NewRole::Task(Some(task_ref_ctx(&p))),
            Some(p) => NewRole::Region(p),
            // Marked, outside every tracked span.
            None if marked => NewRole::Task(None),
            // Inside spans this layer ignores (see `roots_are_tasks`): ignored too.
            None if span.parent().is_some() => return,
            // A root span: a region of a task someone else made current here (unless it
            // carries its own incoming context), else a task.
            None => match TraceContext::current() {
                Some(cur) if fields.traceparent.is_none() => NewRole::Region(TaskRef::Foreign(cur)),
                _ if self.roots_are_tasks => NewRole::Task(None),
                _ => return,
            },
        };
        let role = match role {
            NewRole::Region(task) => Role::Region { task, name: meta.name(), begun: AtomicBool::new(false) },
            NewRole::Task(parent) => {
                let cur = task_ids(fields.traceparent.as_deref(), parent);
                let name = self.task_name(meta, &fields);
                span.extensions_mut().insert(cur.ctx);
                let state = TaskState { cur, name, fields, meta, begun: false, ended: false };
                Role::Task(Arc::new(OwnedTask { state: Mutex::new(state) }))
            }
        };
        span.extensions_mut().insert(role);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        values.record(&mut fields);
        if !fields.any() {
            return;
        }
        let task = match span.extensions().get::<Role>() {
            Some(Role::Task(t)) => Arc::clone(t),
            _ => return,
        };
        let new_ctx = {
            let mut st = task.lock();
            if st.begun {
                // The probes already carry the old name and ids; tprof cannot take them back.
                return;
            }
            if let Some(remote) = parse(fields.traceparent.as_deref()) {
                st.cur = Current { ctx: remote.child(), parent_span_id: remote.span_id() };
            }
            st.fields.merge(fields);
            st.name = self.task_name(st.meta, &st.fields);
            st.cur.ctx
        };
        span.extensions_mut().replace(new_ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        let Some(role) = ext.get::<Role>() else { return };
        #[cfg(feature = "opentelemetry")]
        let adopted = match role {
            Role::Task(t) => adopt_otel(t, &ext),
            _ => None,
        };
        let attached = role.owned_task().and_then(|t| attach_owned(t));
        #[cfg(feature = "opentelemetry")]
        if adopted.is_some() && attached.is_some() {
            crate::otel::announce();
        }
        if let Role::Region { task, name, begun } = role {
            let ours = match task {
                TaskRef::Owned(t) => !t.lock().ended,
                TaskRef::Foreign(c) => current_span_id() == Some(c.span_id()),
            };
            if ours && !begun.swap(true, Ordering::AcqRel) {
                sdt::region_begin(name);
            }
        }
        drop(ext);
        #[cfg(feature = "opentelemetry")]
        if let Some(ctx) = adopted {
            span.extensions_mut().replace(ctx);
        }
        push_frame(id, attached);
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        pop_frame(id);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let ext = span.extensions();
        match ext.get::<Role>() {
            Some(Role::Task(t)) => {
                let mut st = t.lock();
                if st.begun && !st.ended {
                    fire_end(&st.cur.ctx);
                }
                st.ended = true;
            }
            Some(Role::Region { task, name, begun }) if begun.load(Ordering::Acquire) => match task {
                TaskRef::Owned(t) => {
                    // Fired for the task: attach it here for the probe if it is not current.
                    let attached = attach_owned(t);
                    if !t.lock().ended {
                        sdt::region_end(name);
                    }
                    if let Some(a) = attached {
                        detach(a);
                    }
                }
                TaskRef::Foreign(c) => {
                    // Otherwise tprof closes the region when the task ends.
                    if current_span_id() == Some(c.span_id()) {
                        sdt::region_end(name);
                    }
                }
            },
            _ => {}
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // A log with no task current on the thread would be dropped by tprof: skip the
        // formatting too.
        if !self.logs || !log_wanted() || TraceContext::current().is_none() {
            return;
        }
        let mut v = LogValue::default();
        event.record(&mut v);
        let mut value = v.message.unwrap_or_default();
        if !v.rest.is_empty() {
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str(&v.rest);
        }
        let (key, value) = (cut(event.metadata().target(), LOG_KEY_MAX), cut(&value, LOG_VALUE_MAX));
        #[cfg(test)]
        tests::LAST_LOG.with(|l| *l.borrow_mut() = Some((key.to_string(), value.to_string())));
        sdt::log(key, value);
    }
}

/// True when somebody listens to `log` (in unit tests, always: nobody can arm the probe).
#[inline(always)]
fn log_wanted() -> bool {
    cfg!(test) || sdt::log_enabled()
}

/// An event's message and other fields, formatted up to the log value limit.
#[derive(Default)]
struct LogValue {
    message: Option<String>,
    rest: String,
}

impl Visit for LogValue {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" && self.message.is_none() {
            self.message = Some(format!("{value:?}"));
            return;
        }
        if self.rest.len() >= LOG_VALUE_MAX {
            return;
        }
        if !self.rest.is_empty() {
            self.rest.push(' ');
        }
        let _ = write!(self.rest, "{}={value:?}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::{self, ThreadId};

    use tracing::{info_span, Dispatch, Instrument, Span};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::registry::{LookupSpan, Registry};

    use super::TprofLayer;
    use crate::sdt::recorder;
    use crate::task::{swap_current, Current};
    use crate::{TaskFutureExt, TraceContext};

    thread_local! {
        /// The last (key, value) this thread logged through the layer.
        pub(super) static LAST_LOG: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
    }

    const REMOTE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn dispatch(layer: TprofLayer) -> Dispatch {
        Dispatch::new(tracing_subscriber::registry().with(layer))
    }

    /// The thread's current task, parent span-id included.
    fn current() -> Option<Current> {
        let c = swap_current(None);
        swap_current(c);
        c
    }

    fn names(fired: &[(&'static str, ThreadId)]) -> Vec<&'static str> {
        fired.iter().map(|f| f.0).collect()
    }

    /// Probes fired on this thread since `mark`.
    fn here_since(mark: usize) -> Vec<&'static str> {
        let me = thread::current().id();
        recorder::since(mark).into_iter().filter(|f| f.2 == me).map(|f| f.0).collect()
    }

    /// Enters `span` on a new thread; returns the task current there and the thread.
    fn enter_elsewhere(span: &Span) -> (Option<TraceContext>, ThreadId) {
        let span = span.clone();
        thread::spawn(move || {
            let seen = span.in_scope(TraceContext::current);
            assert_eq!(TraceContext::current(), None, "the exit restores the thread's current task");
            (seen, thread::current().id())
        })
        .join()
        .expect("enter thread")
    }

    #[test]
    fn root_span_entered_on_two_threads_is_one_task_attached_to_each() {
        let d = dispatch(TprofLayer::new());
        let span = tracing::dispatcher::with_default(&d, || info_span!("GET /users"));
        let (ctx_a, a) = enter_elsewhere(&span);
        let (ctx_b, b) = enter_elsewhere(&span);
        let ctx = ctx_a.expect("the span's task is current while entered");
        assert_eq!(ctx_b, Some(ctx), "one task, whichever thread enters");
        // The context is in the span's extensions too, for other layers.
        let stored = span.with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>().expect("registry");
            registry.span(id).and_then(|s| s.extensions().get::<TraceContext>().copied())
        });
        assert_eq!(stored, Some(Some(ctx)));
        drop(span);
        let main = thread::current().id();
        assert_eq!(
            recorder::for_span(ctx.span_id()),
            [("task_begin", a), ("task_detach", a), ("task_attach", b), ("task_detach", b), ("task_end", main)]
        );
        assert_eq!(TraceContext::current(), None);
    }

    /// Pending `n` times; checks on each poll that it runs inside `expect`.
    struct Yields {
        left: u32,
        expect: Option<TraceContext>,
        seen: Option<TraceContext>,
    }

    impl Future for Yields {
        type Output = Option<TraceContext>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let now = TraceContext::current();
            assert!(now.is_some(), "polled outside any task");
            if let Some(e) = self.expect {
                assert_eq!(now, Some(e), "polled outside its task");
            }
            self.seen = now;
            if self.left == 0 {
                return Poll::Ready(self.seen);
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    struct NoopWaker;
    impl Wake for NoopWaker {
        fn wake(self: Arc<Self>) {}
    }

    /// Polls `fut` once on a new thread.
    fn poll_elsewhere<F: Future + Send + Unpin + 'static>(mut fut: F) -> (F, Poll<F::Output>, ThreadId)
    where
        F::Output: Send,
    {
        thread::spawn(move || {
            let waker = Waker::from(Arc::new(NoopWaker));
            let r = Pin::new(&mut fut).poll(&mut Context::from_waker(&waker));
            assert_eq!(TraceContext::current(), None, "a poll leaves no task on the thread");
            (fut, r, thread::current().id())
        })
        .join()
        .expect("poll thread")
    }

    #[test]
    fn instrumented_future_attaches_per_poll_across_threads() {
        let d = dispatch(TprofLayer::new());
        let fut = tracing::dispatcher::with_default(&d, || {
            Box::pin(Yields { left: 2, expect: None, seen: None }.instrument(info_span!("async request")))
        });
        let (fut, r1, t1) = poll_elsewhere(fut);
        assert!(r1.is_pending());
        let (fut, r2, t2) = poll_elsewhere(fut);
        assert!(r2.is_pending());
        let (fut, r3, t3) = poll_elsewhere(fut);
        let Poll::Ready(Some(ctx)) = r3 else { panic!("third poll completes inside the task") };
        assert_eq!(ctx.span_id(), fut.inner().seen.map(|c| c.span_id()).unwrap_or_default());
        drop(fut);
        let main = thread::current().id();
        // tracing enters the span once more to drop the inner future: an attach/detach pair
        // on the dropping thread, then the close ends the task.
        assert_eq!(
            recorder::for_span(ctx.span_id()),
            [
                ("task_begin", t1),
                ("task_detach", t1),
                ("task_attach", t2),
                ("task_detach", t2),
                ("task_attach", t3),
                ("task_detach", t3),
                ("task_attach", main),
                ("task_detach", main),
                ("task_end", main),
            ]
        );
    }

    #[test]
    fn child_spans_are_regions_and_events_are_logs() {
        let d = dispatch(TprofLayer::new());
        let mark = recorder::len();
        let ctx = tracing::dispatcher::with_default(&d, || {
            let root = info_span!("handler");
            let ctx = root.in_scope(|| {
                let db = info_span!("db", table = "users");
                db.in_scope(|| {
                    let _inner = info_span!("decode").entered();
                    tracing::info!(rows = 12, "query done");
                });
                drop(db); // a region ends with its span (not at each exit)
                LAST_LOG.with(|l| {
                    let (key, value) = l.borrow_mut().take().expect("the event was logged");
                    assert_eq!(key, &module_path!()[..32], "the key is the event's target, cut to 32 bytes");
                    assert_eq!(value, "query done rows=12");
                });
                tracing::warn!(user = "ann", id = 7);
                let (_, value) = LAST_LOG.with(|l| l.borrow_mut().take()).expect("field-only event logged");
                assert_eq!(value, "user=ann id=7", "no message: the fields");
                TraceContext::current().expect("task current")
            });
            drop(root);
            ctx
        });
        assert_eq!(
            here_since(mark),
            [
                "task_begin",
                "region_begin",
                "region_begin",
                "log",
                "region_end",
                "region_end",
                "log",
                "task_detach",
                "task_end"
            ]
        );
        assert_eq!(names(&recorder::for_span(ctx.span_id())), ["task_begin", "task_detach", "task_end"]);
    }

    #[test]
    fn long_log_values_are_cut_on_a_char_boundary() {
        let d = dispatch(TprofLayer::new());
        tracing::dispatcher::with_default(&d, || {
            let _t = info_span!("t").entered();
            let long = "é".repeat(100); // 200 bytes
            tracing::info!("{long}");
            let (_, value) = LAST_LOG.with(|l| l.borrow_mut().take()).expect("logged");
            assert_eq!(value.len(), 128);
            assert!(value.chars().all(|c| c == 'é'));
        });
        let d = dispatch(TprofLayer::new().with_logs(false));
        tracing::dispatcher::with_default(&d, || {
            let _t = info_span!("t").entered();
            tracing::info!("not logged");
            assert_eq!(LAST_LOG.with(|l| l.borrow_mut().take()), None);
        });
    }

    #[test]
    fn region_span_entered_on_another_thread_attaches_its_task_there() {
        let d = dispatch(TprofLayer::new());
        let (root, child) = tracing::dispatcher::with_default(&d, || {
            let root = info_span!("request");
            let child = root.in_scope(|| info_span!("spawned work"));
            (root, child)
        });
        let ctx = root.in_scope(TraceContext::current).expect("task");
        let mark = recorder::len();
        let (seen, t) = enter_elsewhere(&child);
        assert_eq!(seen, Some(ctx), "the work is the request's");
        let there: Vec<&str> = recorder::since(mark).into_iter().filter(|f| f.2 == t).map(|f| f.0).collect();
        assert_eq!(there, ["task_attach", "region_begin", "task_detach"]);
        // The close fires the region's end for the task, attached for that moment.
        let mark = recorder::len();
        drop(child);
        assert_eq!(here_since(mark), ["task_attach", "region_end", "task_detach"]);
        drop(root);
    }

    #[test]
    fn traceparent_field_continues_the_incoming_trace() {
        let remote = TraceContext::parse_traceparent(REMOTE).expect("valid");
        let d = dispatch(TprofLayer::new());
        tracing::dispatcher::with_default(&d, || {
            let span = info_span!("req", traceparent = REMOTE);
            span.in_scope(|| {
                let cur = current().expect("task current");
                assert_eq!(cur.ctx.trace_id(), remote.trace_id());
                assert_eq!(cur.parent_span_id, remote.span_id());
                assert_ne!(cur.ctx.span_id(), remote.span_id());
            });
            // Recorded after creation (before the first enter), as `%header` (Display).
            let span = info_span!("req", traceparent = tracing::field::Empty);
            span.record("traceparent", tracing::field::display(REMOTE));
            span.in_scope(|| {
                let cur = current().expect("task current");
                assert_eq!((cur.ctx.trace_id(), cur.parent_span_id), (remote.trace_id(), remote.span_id()));
            });
            // Invalid: a new trace.
            let span = info_span!("req", traceparent = "00-garbage");
            span.in_scope(|| {
                let cur = current().expect("task current");
                assert_ne!(cur.ctx.trace_id(), remote.trace_id());
                assert_eq!(cur.parent_span_id, 0);
            });
        });
    }

    #[test]
    fn marked_spans_are_nested_tasks_and_names_come_from_fields() {
        let d = dispatch(TprofLayer::new());
        tracing::dispatcher::with_default(&d, || {
            let outer = info_span!("outer", tprof.name = "GET /a");
            outer.in_scope(|| {
                let outer_ctx = TraceContext::current().expect("outer");
                let inner = info_span!("call", tprof.task = true);
                let inner_ctx = inner.in_scope(|| current().expect("inner"));
                assert_eq!(inner_ctx.ctx.trace_id(), outer_ctx.trace_id(), "same trace");
                assert_eq!(inner_ctx.parent_span_id, outer_ctx.span_id(), "child of the outer task");
                assert_eq!(TraceContext::current(), Some(outer_ctx), "the outer task is current again");
                drop(inner);
                assert_eq!(names(&recorder::for_span(inner_ctx.ctx.span_id())), ["task_begin", "task_detach", "task_end"]);
            });
        });
    }

    /// The name of the task `span` makes (its `task_begin`, once entered).
    fn task_name_of(span: &Span) -> String {
        let ctx = span.in_scope(TraceContext::current).expect("a task");
        recorder::names_of(ctx.span_id()).expect("task_begin fired")
    }

    #[test]
    fn http_span_fields_name_tasks_by_route_then_normalized_path() {
        let d = dispatch(TprofLayer::new());
        tracing::dispatcher::with_default(&d, || {
            // tower-http's DefaultMakeSpan: method and uri (Display), version (Debug).
            let s = info_span!("request", method = %"GET", uri = %"/users/42?x=1", version = ?"HTTP/1.1");
            assert_eq!(task_name_of(&s), "GET /users/{id}");
            // A route template (axum's MatchedPath as `matched_path`, or `http.route`) wins.
            let s = info_span!("request", method = ?"GET", matched_path = "/users/{id}", uri = "/users/7");
            assert_eq!(task_name_of(&s), "GET /users/{id}");
            // Recorded after creation, before the first enter: renames the task.
            let s = info_span!("request", method = "PUT", uri = "/x/1", http.route = tracing::field::Empty);
            s.record("http.route", "/x/{n}");
            assert_eq!(task_name_of(&s), "PUT /x/{n}");
            // otel.name as given; tprof.name above everything.
            let s = info_span!("request", otel.name = "GET /files/{name}", uri = "/files/a");
            assert_eq!(task_name_of(&s), "GET /files/{name}");
            let s = info_span!("request", tprof.name = "mine", otel.name = "GET /x");
            assert_eq!(task_name_of(&s), "mine");
            // No HTTP fields: the span's name.
            assert_eq!(task_name_of(&info_span!("job", id = 3)), "job");
        });
        // A naming function; its None falls back to the default.
        let layer = TprofLayer::new().with_task_name(|i| i.path.filter(|p| p.starts_with("/static")).map(|_| "static".into()));
        tracing::dispatcher::with_default(&dispatch(layer), || {
            assert_eq!(task_name_of(&info_span!("request", method = "GET", uri = "/static/a.css")), "static");
            assert_eq!(task_name_of(&info_span!("request", method = "GET", uri = "/api/3")), "GET /api/{id}");
        });
    }

    #[test]
    fn traceparent_comes_from_common_fields_and_debug_headers() {
        let remote = TraceContext::parse_traceparent(REMOTE).expect("valid");
        let d = dispatch(TprofLayer::new());
        tracing::dispatcher::with_default(&d, || {
            // OpenTelemetry's attribute name.
            let s = info_span!("request", http.request.header.traceparent = REMOTE);
            let cur = s.in_scope(current).expect("task");
            assert_eq!((cur.ctx.trace_id(), cur.parent_span_id), (remote.trace_id(), remote.span_id()));
            // tower-http's DefaultMakeSpan::include_headers(true): `headers = ?request.headers()`.
            let mut headers = ::http::HeaderMap::new();
            headers.insert("host", "svc".parse().expect("value"));
            headers.insert("traceparent", REMOTE.parse().expect("value"));
            let s = info_span!("request", method = %"GET", uri = %"/", headers = ?headers);
            let cur = s.in_scope(current).expect("task");
            assert_eq!((cur.ctx.trace_id(), cur.parent_span_id), (remote.trace_id(), remote.span_id()));
        });
    }

    #[test]
    fn fmt_builder_finish_with_the_layer_makes_tasks() {
        // `tracing_subscriber::fmt()` builders have no `.with()`: `.finish()` makes a
        // subscriber that takes layers, the layer's `Layer<S>` bound holds for it.
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber = tracing_subscriber::fmt().with_writer(std::io::sink).finish().with(TprofLayer::new());
        let d = Dispatch::new(subscriber);
        tracing::dispatcher::with_default(&d, || {
            let s = info_span!("request", method = "GET", uri = "/a/12");
            assert_eq!(task_name_of(&s), "GET /a/{id}");
            tracing::info!("inside");
        });
        // And a fmt layer next to it on a registry (the form the crate documents first).
        let d = Dispatch::new(
            tracing_subscriber::registry()
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
                .with(TprofLayer::new()),
        );
        tracing::dispatcher::with_default(&d, || {
            assert_eq!(task_name_of(&info_span!("request", method = "GET", uri = "/b")), "GET /b");
        });
    }

    #[test]
    fn predicate_and_roots_are_tasks_choose_tasks() {
        let layer = TprofLayer::new().roots_are_tasks(false).with_task_predicate(|m| m.name() == "request");
        let d = dispatch(layer);
        tracing::dispatcher::with_default(&d, || {
            let mark = recorder::len();
            info_span!("startup").in_scope(|| {
                assert_eq!(TraceContext::current(), None, "roots are not tasks here");
                info_span!("child of startup").in_scope(|| tracing::info!("no task: not logged"));
                info_span!("request").in_scope(|| assert!(TraceContext::current().is_some(), "the predicate's task"));
            });
            assert_eq!(here_since(mark), ["task_begin", "task_detach", "task_end"]);
        });
    }

    #[test]
    fn root_span_inside_a_foreign_task_is_a_region_of_it() {
        let d = dispatch(TprofLayer::new());
        let mark = recorder::len();
        let fut = async {
            let _r = info_span!("db").entered();
            TraceContext::current()
        }
        .in_task("GET /b");
        let span = fut.context().span_id();
        let waker = Waker::from(Arc::new(NoopWaker));
        let seen = tracing::dispatcher::with_default(&d, || {
            let mut fut = Box::pin(fut);
            match fut.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(seen) => seen,
                Poll::Pending => panic!("ready at once"),
            }
        });
        assert_eq!(seen.map(|c| c.span_id()), Some(span), "no task of its own: the InTask's");
        assert_eq!(here_since(mark), ["task_begin", "region_begin", "region_end", "task_end"]);
    }

    #[test]
    fn out_of_order_exits_restore_the_thread() {
        let d = dispatch(TprofLayer::new());
        tracing::dispatcher::with_default(&d, || {
            let a = info_span!("a");
            let b = info_span!(parent: None, "b", tprof.task = true);
            let ga = a.enter();
            let ctx_a = TraceContext::current().expect("a");
            let gb = b.enter();
            let ctx_b = TraceContext::current().expect("b");
            assert_ne!(ctx_a, ctx_b);
            let mark = recorder::len();
            drop(ga);
            assert_eq!(TraceContext::current(), Some(ctx_b), "b is still entered");
            assert!(here_since(mark).is_empty(), "a's detach waits for b's: the kernel pops in order");
            drop(gb);
            assert_eq!(TraceContext::current(), None, "nothing entered: no task");
            let me = thread::current().id();
            let detaches: Vec<u64> =
                recorder::since(mark).into_iter().filter(|f| f.2 == me && f.0 == "task_detach").map(|f| f.1).collect();
            assert_eq!(detaches, [ctx_b.span_id(), ctx_a.span_id()]);
        });
    }
}
