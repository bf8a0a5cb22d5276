//! Feature `opentelemetry`: tprof's task *is* the service's OpenTelemetry span.
//!
//! A task about to begin inside an OpenTelemetry span takes that span's trace-id and
//! span-id instead of making its own (a child of them), so tprof's view of the request is
//! keyed like the trace the service exports. Where the ids come from:
//!
//! * [`crate::Task::new`] and `TprofHttpLayer`: `opentelemetry::Context::current()`, i.e. the
//!   span the service made current (with `tracing-opentelemetry`, the entered span when its
//!   layer activates contexts, its default);
//! * `TprofLayer` (feature `tracing` too): the span data `tracing-opentelemetry`'s layer keeps
//!   for the same `tracing` span. Add `TprofLayer` after the OpenTelemetry layer
//!   (`registry().with(otel).with(TprofLayer::new())`) so that layer has started the span
//!   when tprof's task begins; a task whose OpenTelemetry span has no ids yet keeps its own.
//!
//! A task that took a service span's ids says so to tprof with the log hint
//! [`HINT_OTEL`] (ABI.md 2.4): the service exports that span itself, so tprof exports its
//! kernel breakdown as a child span of it rather than a second span with the same id.

use opentelemetry::trace::TraceContextExt;

use crate::context::TraceContext;
use crate::task::Current;

/// The log key of the hint (ABI.md 2.4).
pub const HINT_OTEL: &str = "tprof.otel";

/// An OpenTelemetry span context as tprof ids (None: invalid).
pub(crate) fn ids(sc: &opentelemetry::trace::SpanContext) -> Option<TraceContext> {
    if !sc.is_valid() {
        return None;
    }
    let trace_id = u128::from_be_bytes(sc.trace_id().to_bytes());
    let span_id = u64::from_be_bytes(sc.span_id().to_bytes());
    TraceContext::new(trace_id, span_id, sc.trace_flags().to_u8())
}

/// The current OpenTelemetry span's ids, if there is a valid one.
pub(crate) fn current_span() -> Option<TraceContext> {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    ids(span.span_context())
}

/// The ids a new task takes from OpenTelemetry span `otel`: its own, with the parent the
/// task would have had (`parent`) when that is another span of the same trace. None when
/// `otel` is already the thread's current task (the new task nests under it as usual).
pub(crate) fn adopt(otel: TraceContext, parent: Option<TraceContext>) -> Option<Current> {
    if TraceContext::current().is_some_and(|c| c.span_id() == otel.span_id()) {
        return None;
    }
    let parent_span_id = parent.filter(|p| p.trace_id() == otel.trace_id() && p.span_id() != otel.span_id()).map_or(0, |p| p.span_id());
    Some(Current { ctx: otel, parent_span_id })
}

/// Tells tprof that the thread's current task is the service's exported span.
pub(crate) fn announce() {
    crate::sdt::log(HINT_OTEL, "1");
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn otel_span(trace: u128, span: u64) -> opentelemetry::ContextGuard {
        let sc = SpanContext::new(TraceId::from(trace), SpanId::from(span), TraceFlags::SAMPLED, true, TraceState::default());
        opentelemetry::Context::new().with_remote_span_context(sc).attach()
    }

    #[test]
    fn a_task_inside_an_opentelemetry_span_takes_its_ids() {
        assert_eq!(current_span(), None);
        let outside = crate::Task::new("outside");
        assert_ne!(outside.context().span_id(), 0xab);
        drop(outside);
        let _g = otel_span(0x1234, 0xab);
        let task = crate::Task::new("inside");
        assert_eq!((task.context().trace_id(), task.context().span_id()), (0x1234, 0xab));
        // Nested in the same OpenTelemetry span: a child of the task, as without the feature.
        let inner = crate::Task::new("nested");
        assert_eq!(inner.context().trace_id(), 0x1234);
        assert_ne!(inner.context().span_id(), 0xab);
    }

    #[test]
    fn the_parent_is_kept_only_within_the_trace() {
        let otel = TraceContext::new(5, 6, 1).expect("ids");
        let same = TraceContext::new(5, 9, 1);
        let other = TraceContext::new(7, 9, 1);
        assert_eq!(adopt(otel, same).map(|c| c.parent_span_id), Some(9));
        assert_eq!(adopt(otel, other).map(|c| c.parent_span_id), Some(0));
    }
}
