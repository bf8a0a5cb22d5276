//! A future that carries its task from poll to poll, across threads.
//!
//! Work-stealing executors (tokio's multi-threaded runtime) poll one future on many threads
//! and many futures on one thread. [`InTask`] fires `task_begin` on its first poll,
//! `task_attach`/`task_detach` around every later poll and `task_end` when it completes (or
//! is dropped), and makes the task current in the thread-local for the poll's duration, so
//! neither tprof's kernel map nor [`TraceContext::current`] ever charges one request's time
//! to another.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::context::TraceContext;
use crate::task::{fire_attach, fire_begin, fire_detach, fire_end, swap_current, Current};

/// Where a task run poll by poll is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    NotStarted,
    Started,
    Ended,
}

/// A task run in slices (polls) on whichever thread: `task_begin` before the first slice,
/// `task_attach`/`task_detach` around the later ones, `task_end` after the slice that
/// finishes it, or when dropped once begun (cancelled). Shared by [`InTask`] and the HTTP
/// layer, whose response body goes on with the handler's task.
pub(crate) struct TaskCore {
    cur: Current,
    name: Cow<'static, str>,
    stage: Stage,
}

impl TaskCore {
    pub(crate) fn new(name: Cow<'static, str>, ctx: TraceContext, parent_span_id: u64) -> Self {
        TaskCore { cur: Current { ctx, parent_span_id }, name, stage: Stage::NotStarted }
    }

    pub(crate) fn context(&self) -> TraceContext {
        self.cur.ctx
    }

    /// Runs `slice` with the task attached to this thread and current in the thread-local;
    /// the task ends after it when `finished` says so, else the thread detaches. None (and
    /// `slice` not run) once the task has ended.
    pub(crate) fn run<T>(&mut self, slice: impl FnOnce() -> T, finished: impl FnOnce(&T) -> bool) -> Option<T> {
        let cur = self.cur;
        match self.stage {
            Stage::Ended => return None,
            Stage::NotStarted => {
                fire_begin(&cur, &self.name);
                self.stage = Stage::Started;
            }
            Stage::Started => fire_attach(&cur),
        }
        let prev = swap_current(Some(cur));
        let mut scope = PollScope { prev, cur: &cur, stage: &mut self.stage, finished: false };
        let out = slice();
        scope.finished = true;
        drop(scope);
        if finished(&out) {
            fire_end(&cur.ctx);
            self.stage = Stage::Ended;
        } else {
            fire_detach(&cur.ctx);
        }
        Some(out)
    }

    /// Ends the task now if it began and has not ended.
    pub(crate) fn end(&mut self) {
        if self.stage == Stage::Started {
            fire_end(&self.cur.ctx);
        }
        self.stage = Stage::Ended;
    }
}

impl Drop for TaskCore {
    fn drop(&mut self) {
        // Cancelled (dropped before completion): the request ends here.
        self.end();
    }
}

/// A future running as a task. Build it with [`TaskFutureExt::in_task`].
#[must_use = "futures do nothing unless polled"]
pub struct InTask<F> {
    inner: F,
    core: TaskCore,
}

impl<F> InTask<F> {
    /// Wraps `inner` as a task with exactly these ids (`parent_span_id` 0: none).
    pub fn with_context(
        inner: F,
        name: impl Into<Cow<'static, str>>,
        ctx: TraceContext,
        parent_span_id: u64,
    ) -> Self {
        InTask { inner, core: TaskCore::new(name.into(), ctx, parent_span_id) }
    }

    /// The task's context.
    pub fn context(&self) -> TraceContext {
        self.core.context()
    }
}

/// Runs futures as tasks.
pub trait TaskFutureExt: Future + Sized {
    /// Runs this future as a task named `name`: a child span of the current task when the
    /// future is created, or a new trace.
    fn in_task(self, name: impl Into<Cow<'static, str>>) -> InTask<Self> {
        match TraceContext::current() {
            Some(parent) => InTask::with_context(self, name, parent.child(), parent.span_id()),
            None => InTask::with_context(self, name, TraceContext::new_root(), 0),
        }
    }

    /// Runs this future as a new span of `parent`'s trace (e.g. from a `traceparent` header).
    fn in_task_with_parent(
        self,
        name: impl Into<Cow<'static, str>>,
        parent: &TraceContext,
    ) -> InTask<Self> {
        InTask::with_context(self, name, parent.child(), parent.span_id())
    }
}

impl<F: Future> TaskFutureExt for F {}

/// Restores the thread's previous current task even if the inner poll panics.
struct PollScope<'a> {
    prev: Option<Current>,
    cur: &'a Current,
    stage: &'a mut Stage,
    finished: bool,
}

impl Drop for PollScope<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // The poll unwound: the task cannot go on, so it ends here.
            fire_end(&self.cur.ctx);
            *self.stage = Stage::Ended;
        }
        swap_current(self.prev);
    }
}

impl<F: Future> Future for InTask<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of `self`, and
        // `core` is plain data that is never pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above; `inner` stays where it is.
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        this.core.run(|| inner.poll(cx), Poll::is_ready).unwrap_or(Poll::Pending)
    }
}
