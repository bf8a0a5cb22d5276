//! The response body of a request's task (feature `tower`): the task goes on until the body
//! is finished or dropped, attached around every chunk the server pulls from it.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::future::TaskCore;

pin_project! {
    /// A response body that carries its request's task: each `poll_frame` runs attached to
    /// the task (so the work of producing the chunk, e.g. a file read, is the request's), and
    /// the task ends with the last frame, an error, or when the server drops the body (the
    /// client went away). Made by [`crate::TprofHttpLayer`].
    pub struct TaskBody<B> {
        #[pin]
        inner: B,
        // None: no task (already ended, or a body made without one).
        task: Option<TaskCore>,
    }
}

impl<B> TaskBody<B> {
    pub(crate) fn new(inner: B, task: TaskCore) -> Self {
        TaskBody { inner, task: Some(task) }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The wrapped body, without the task (which ends now).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for TaskBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let Some(task) = this.task.as_mut() else { return inner.poll_frame(cx) };
        let ran = task.run(
            || {
                let polled = inner.as_mut().poll_frame(cx);
                let last = match &polled {
                    Poll::Ready(None | Some(Err(_))) => true,
                    Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
                    Poll::Pending => false,
                };
                (polled, last)
            },
            |(_, last)| *last,
        );
        match ran {
            Some((polled, last)) => {
                if last {
                    *this.task = None;
                }
                polled
            }
            // The task ended (a panic in an earlier poll): the body goes on without it.
            None => {
                *this.task = None;
                inner.poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
