//! OTLP/protobuf: the same `ExportTraceServiceRequest` as the JSON rendering, in the binary
//! encoding a Collector takes by default (`Content-Type: application/x-protobuf`).
//!
//! Field numbers are those of opentelemetry-proto's `opentelemetry/proto/trace/v1/trace.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto` and
//! `collector/trace/v1/trace_service.proto`, named in [`f`]. Ids are bytes in big-endian
//! order (the W3C hex read left to right); times are fixed64; enums and ints are varints.

use super::model::{Attr, SpanData};
use crate::export::perfetto::proto::Msg;

/// Field numbers.
mod f {
    // collector/trace/v1: ExportTraceServiceRequest
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    // trace/v1: ResourceSpans, ScopeSpans
    pub const RS_RESOURCE: u32 = 1;
    pub const RS_SCOPE_SPANS: u32 = 2;
    pub const SS_SCOPE: u32 = 1;
    pub const SS_SPANS: u32 = 2;
    // resource/v1: Resource; common/v1: InstrumentationScope, KeyValue, AnyValue, ArrayValue
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    pub const SCOPE_NAME: u32 = 1;
    pub const SCOPE_VERSION: u32 = 2;
    pub const KV_KEY: u32 = 1;
    pub const KV_VALUE: u32 = 2;
    pub const ANY_STRING: u32 = 1;
    pub const ANY_BOOL: u32 = 2;
    pub const ANY_INT: u32 = 3;
    pub const ANY_ARRAY: u32 = 5;
    pub const ARRAY_VALUES: u32 = 1;
    // trace/v1: Span
    pub const SPAN_TRACE_ID: u32 = 1;
    pub const SPAN_SPAN_ID: u32 = 2;
    pub const SPAN_PARENT_SPAN_ID: u32 = 4;
    pub const SPAN_NAME: u32 = 5;
    pub const SPAN_KIND: u32 = 6;
    pub const SPAN_START: u32 = 7;
    pub const SPAN_END: u32 = 8;
    pub const SPAN_ATTRIBUTES: u32 = 9;
    pub const SPAN_EVENTS: u32 = 11;
    pub const SPAN_LINKS: u32 = 13;
    // trace/v1: Span.Event, Span.Link
    pub const EVENT_TIME: u32 = 1;
    pub const EVENT_NAME: u32 = 2;
    pub const EVENT_ATTRIBUTES: u32 = 3;
    pub const LINK_TRACE_ID: u32 = 1;
    pub const LINK_SPAN_ID: u32 = 2;
    pub const LINK_ATTRIBUTES: u32 = 4;
}

fn any_value(a: &Attr) -> Msg {
    let mut m = Msg::new();
    match a {
        Attr::Int(n) => m.varint(f::ANY_INT, i64::try_from(*n).unwrap_or(i64::MAX) as u64),
        Attr::Str(s) => m.str(f::ANY_STRING, s),
        Attr::Bool(b) => m.varint(f::ANY_BOOL, u64::from(*b)),
        Attr::Ints(v) => {
            let mut arr = Msg::new();
            for n in v {
                arr.msg(f::ARRAY_VALUES, &any_value(&Attr::Int(*n)));
            }
            m.msg(f::ANY_ARRAY, &arr)
        }
    };
    m
}

fn put_attrs(m: &mut Msg, field: u32, attrs: &[(String, Attr)]) {
    for (k, v) in attrs {
        let mut kv = Msg::new();
        kv.str(f::KV_KEY, k).msg(f::KV_VALUE, &any_value(v));
        m.msg(field, &kv);
    }
}

/// One `Span`.
pub fn span(s: &SpanData) -> Msg {
    let mut m = Msg::new();
    m.bytes(f::SPAN_TRACE_ID, &s.trace_id.to_be_bytes()).bytes(f::SPAN_SPAN_ID, &s.span_id.to_be_bytes());
    if s.parent_span_id != 0 {
        m.bytes(f::SPAN_PARENT_SPAN_ID, &s.parent_span_id.to_be_bytes());
    }
    m.str(f::SPAN_NAME, &s.name)
        .varint(f::SPAN_KIND, u64::from(s.kind))
        .fixed64(f::SPAN_START, s.start_ns)
        .fixed64(f::SPAN_END, s.end_ns);
    put_attrs(&mut m, f::SPAN_ATTRIBUTES, &s.attrs);
    for e in &s.events {
        let mut ev = Msg::new();
        ev.fixed64(f::EVENT_TIME, e.unix_ns).str(f::EVENT_NAME, e.name);
        put_attrs(&mut ev, f::EVENT_ATTRIBUTES, &e.attrs);
        m.msg(f::SPAN_EVENTS, &ev);
    }
    for k in &s.links {
        let mut l = Msg::new();
        l.bytes(f::LINK_TRACE_ID, &k.trace_id.to_be_bytes()).bytes(f::LINK_SPAN_ID, &k.span_id.to_be_bytes());
        put_attrs(&mut l, f::LINK_ATTRIBUTES, &[super::model::kv("tprof.link", Attr::Str("waker".into()))]);
        m.msg(f::SPAN_LINKS, &l);
    }
    m
}

/// A resource's attributes and its spans.
pub type Group<'a> = (Vec<(String, Attr)>, Vec<&'a SpanData>);

/// One `ExportTraceServiceRequest` from (resource attributes, spans) groups.
pub fn request(groups: &[Group<'_>]) -> Vec<u8> {
    let mut req = Msg::new();
    for (resource, spans) in groups {
        let mut res = Msg::new();
        put_attrs(&mut res, f::RESOURCE_ATTRIBUTES, resource);
        let mut scope = Msg::new();
        scope.str(f::SCOPE_NAME, "tprof").str(f::SCOPE_VERSION, env!("CARGO_PKG_VERSION"));
        let mut ss = Msg::new();
        ss.msg(f::SS_SCOPE, &scope);
        for s in spans {
            ss.msg(f::SS_SPANS, &span(s));
        }
        let mut rs = Msg::new();
        rs.msg(f::RS_RESOURCE, &res).msg(f::RS_SCOPE_SPANS, &ss);
        req.msg(f::REQUEST_RESOURCE_SPANS, &rs);
    }
    req.0
}
