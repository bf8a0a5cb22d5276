//! Tasks, regions and logs: the analog of Go's `runtime/trace` API, keyed by W3C ids.
//!
//! The thread's current task lives in a thread-local (the analog of Go's `FromContext`);
//! [`Task`] and [`Region`] are guards, so a task or region ends when its scope does, on
//! unwinding too. tprof keeps the same "current task per thread" inside the kernel, from the
//! probes these guards fire.

use std::cell::Cell;
use std::marker::PhantomData;

use crate::context::TraceContext;
use crate::sdt;

thread_local! {
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

/// What a thread knows of its current task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Current {
    pub(crate) ctx: TraceContext,
    pub(crate) parent_span_id: u64,
}

/// Makes `cur` the thread's current task and returns what was current before.
pub(crate) fn swap_current(cur: Option<Current>) -> Option<Current> {
    CURRENT.with(|c| c.replace(cur))
}

impl TraceContext {
    /// The context of the task this thread is working for, if any.
    pub fn current() -> Option<TraceContext> {
        CURRENT.with(|c| c.get()).map(|c| c.ctx)
    }
}

pub(crate) fn fire_begin(cur: &Current, name: &str) {
    let (hi, lo) = cur.ctx.trace_id_halves();
    #[cfg(test)]
    sdt::recorder::push_name(cur.ctx.span_id(), name);
    sdt::task_begin(hi, lo, cur.ctx.span_id(), cur.parent_span_id, name);
}

pub(crate) fn fire_end(ctx: &TraceContext) {
    let (hi, lo) = ctx.trace_id_halves();
    sdt::task_end(hi, lo, ctx.span_id());
}

pub(crate) fn fire_attach(cur: &Current) {
    let (hi, lo) = cur.ctx.trace_id_halves();
    sdt::task_attach(hi, lo, cur.ctx.span_id(), cur.parent_span_id);
}

pub(crate) fn fire_detach(ctx: &TraceContext) {
    let (hi, lo) = ctx.trace_id_halves();
    sdt::task_detach(hi, lo, ctx.span_id());
}

/// One request (or unit of work): begins when created, ends when dropped.
///
/// A `Task` is bound to the thread that created it (it is `!Send`): for async code, use
/// [`crate::TaskFutureExt::in_task`], which moves the task along with the future and tells
/// the kernel on every poll which thread works for it.
#[must_use = "a Task ends when dropped"]
pub struct Task {
    cur: Current,
    prev: Option<Current>,
    _not_send: PhantomData<*const ()>,
}

impl Task {
    /// Begins a task named `name`: a child span of the thread's current task, or the root of
    /// a new trace when there is none.
    ///
    /// With the feature `opentelemetry`, inside an OpenTelemetry span the task takes that
    /// span's ids instead (see the crate's `otel` module).
    pub fn new(name: &str) -> Task {
        #[cfg(feature = "opentelemetry")]
        if let Some(cur) = crate::otel::current_span().and_then(|o| crate::otel::adopt(o, TraceContext::current())) {
            let task = Self::with_context(name, cur.ctx, cur.parent_span_id);
            crate::otel::announce();
            return task;
        }
        match TraceContext::current() {
            Some(parent) => Self::with_parent(name, &parent),
            None => Self::with_context(name, TraceContext::new_root(), 0),
        }
    }

    /// Begins a task as a new span in `parent`'s trace, e.g. the context an incoming request
    /// carried in its `traceparent` header.
    pub fn with_parent(name: &str, parent: &TraceContext) -> Task {
        Self::with_context(name, parent.child(), parent.span_id())
    }

    /// Begins a task with exactly these ids (`parent_span_id` 0: none).
    pub fn with_context(name: &str, ctx: TraceContext, parent_span_id: u64) -> Task {
        let cur = Current { ctx, parent_span_id };
        let prev = swap_current(Some(cur));
        fire_begin(&cur, name);
        Task { cur, prev, _not_send: PhantomData }
    }

    /// This task's context: pass it on (e.g. as `traceparent`) to the services it calls.
    pub fn context(&self) -> TraceContext {
        self.cur.ctx
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        fire_end(&self.cur.ctx);
        swap_current(self.prev);
    }
}

/// The thread's current task, to carry onto another thread: work run there with
/// [`TaskHandle::run`] is the task's (`task_attach` before it, `task_detach` after), e.g. a
/// closure sent to a thread pool. The task's owner still ends it; run the work before that
/// (await its result), or tprof sees work for a task that has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskHandle {
    cur: Current,
}

impl TaskHandle {
    /// The task this thread is working for, if any.
    pub fn current() -> Option<TaskHandle> {
        CURRENT.with(|c| c.get()).map(|cur| TaskHandle { cur })
    }

    /// The task's context.
    pub fn context(&self) -> TraceContext {
        self.cur.ctx
    }

    /// Runs `f` on this thread for the task: attached to it (unless it is this thread's
    /// current task already) and current in the thread-local; detached after, on unwinding
    /// too.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        if TraceContext::current() == Some(self.cur.ctx) {
            return f();
        }
        struct Attached(TraceContext, Option<Current>);
        impl Drop for Attached {
            fn drop(&mut self) {
                fire_detach(&self.0);
                swap_current(self.1);
            }
        }
        fire_attach(&self.cur);
        let _attached = Attached(self.cur.ctx, swap_current(Some(self.cur)));
        f()
    }
}

/// A phase of the current task: begins when created, ends when dropped.
#[must_use = "a Region ends when dropped"]
pub struct Region<'a> {
    name: &'a str,
    _not_send: PhantomData<*const ()>,
}

/// Begins a region of the current task; it ends when the guard is dropped.
pub fn region(name: &str) -> Region<'_> {
    sdt::region_begin(name);
    Region { name, _not_send: PhantomData }
}

impl Drop for Region<'_> {
    fn drop(&mut self) {
        sdt::region_end(self.name);
    }
}

/// Runs `f` inside a region named `name`.
pub fn with_region<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let _region = region(name);
    f()
}

/// Logs `key=value` for the current task. Format costly values only when
/// [`crate::log_enabled`] says somebody listens.
#[inline(always)]
pub fn log(key: &str, value: &str) {
    sdt::log(key, value);
}
