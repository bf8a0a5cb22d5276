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

/// Where an [`InTask`] is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    NotStarted,
    Started,
    Ended,
}

/// A future running as a task. Build it with [`TaskFutureExt::in_task`].
#[must_use = "futures do nothing unless polled"]
pub struct InTask<F> {
    inner: F,
    cur: Current,
    name: Cow<'static, str>,
    stage: Stage,
}

impl<F> InTask<F> {
    /// Wraps `inner` as a task with exactly these ids (`parent_span_id` 0: none).
    pub fn with_context(
        inner: F,
        name: impl Into<Cow<'static, str>>,
        ctx: TraceContext,
        parent_span_id: u64,
    ) -> Self {
        InTask { inner, cur: Current { ctx, parent_span_id }, name: name.into(), stage: Stage::NotStarted }
    }

    /// The task's context.
    pub fn context(&self) -> TraceContext {
        self.cur.ctx
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
        // SAFETY: `inner` is structurally pinned: it is never moved out of `self` (Drop only
        // fires probes), and the other fields are plain data that are never pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if this.stage == Stage::Ended {
            return Poll::Pending;
        }
        let cur = this.cur;
        if this.stage == Stage::NotStarted {
            fire_begin(&cur, &this.name);
            this.stage = Stage::Started;
        } else {
            fire_attach(&cur);
        }
        let prev = swap_current(Some(cur));
        let mut scope = PollScope { prev, cur: &cur, stage: &mut this.stage, finished: false };
        // SAFETY: see above; `inner` stays where it is.
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        let out = inner.poll(cx);
        scope.finished = true;
        drop(scope);
        match out {
            Poll::Ready(v) => {
                fire_end(&cur.ctx);
                this.stage = Stage::Ended;
                Poll::Ready(v)
            }
            Poll::Pending => {
                fire_detach(&cur.ctx);
                Poll::Pending
            }
        }
    }
}

impl<F> Drop for InTask<F> {
    fn drop(&mut self) {
        if self.stage == Stage::Started {
            // Cancelled (dropped before completion): the request ends here.
            fire_end(&self.cur.ctx);
        }
    }
}
