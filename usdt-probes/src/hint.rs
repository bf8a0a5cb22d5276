//! Hints a task gives tprof about itself, as `log` probes fired when it first runs
//! (ABI.md 2.4): `tprof.span.kind=server` for a task made from an incoming request, and with
//! the feature `opentelemetry`, `tprof.otel=1` for one whose ids are the service's
//! OpenTelemetry span. An older tprof shows them as ordinary logs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::context::TraceContext;
use crate::task::Current;

/// The log key of the span-kind hint and its value for incoming requests.
pub const HINT_KIND: &str = "tprof.span.kind";
pub const KIND_SERVER: &str = "server";

/// Which hints a task fires.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Hints {
    server: bool,
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    otel: bool,
}

impl Hints {
    pub(crate) fn wrap<F>(self, inner: F) -> Hinted<F> {
        Hinted { inner, hints: self, fired: false }
    }
}

/// The ids and hints of a server task that would have ids `cur` and parent `parent`:
/// with the feature `opentelemetry`, inside an OpenTelemetry span, that span's ids.
pub(crate) fn server_task(cur: Current, _parent: Option<TraceContext>) -> (Current, Hints) {
    #[cfg(feature = "opentelemetry")]
    if let Some(c) = crate::otel::current_span().and_then(|o| crate::otel::adopt(o, _parent)) {
        return (c, Hints { server: true, otel: true });
    }
    (cur, Hints { server: true, otel: false })
}

pin_project! {
    /// A future that fires its task's hints when first polled (inside its task).
    pub struct Hinted<F> {
        #[pin]
        inner: F,
        hints: Hints,
        fired: bool,
    }
}

impl<F: Future> Future for Hinted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !*this.fired {
            *this.fired = true;
            if this.hints.server {
                crate::sdt::log(HINT_KIND, KIND_SERVER);
            }
            #[cfg(feature = "opentelemetry")]
            if this.hints.otel {
                crate::otel::announce();
            }
        }
        this.inner.poll(cx)
    }
}
