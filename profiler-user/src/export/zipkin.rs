//! Zipkin v2 export: each task becomes one span in Zipkin's v2 JSON model, written to a file
//! and/or POSTed to a Zipkin server (`http://host:9411/api/v2/spans`).
//!
//! Model: `Span` in zipkin2-api.yaml (<https://zipkin.io/zipkin-api/#/default/post_spans>,
//! <https://github.com/openzipkin/zipkin-api/blob/master/zipkin2-api.yaml>): `traceId`
//! (32 lowercase hex), `id` (16), `parentId`, `name`, `timestamp` and `duration` in epoch
//! **microseconds** (duration at least 1), `localEndpoint.serviceName`, `tags` (string →
//! string) and `annotations` (`{timestamp, value}`, unique).
//!
//! Same spans as the OTLP export ([`super::otlp`]): the task keeps its W3C ids, regions are
//! child spans with ids from [`region_span_id`], the kernel ledger is in `tprof.*` tags, and
//! blocks and logs are annotations (`blocked 10.008 ms in futex (tid 7), woken by ...`,
//! `key=value`). `kind` is omitted (a local span: see the OTLP module for why not SERVER).
//!
//! File layout: one JSON array of spans per batch, one batch per line (NDJSON of arrays);
//! each line is a valid `POST /api/v2/spans` body (`curl -d @<(sed -n 1p FILE)`).
//!
//! [`region_span_id`]: super::otlp::region_span_id

use std::io;

use serde_json::{json, Map, Value};

use super::otlp::{Attr, SpanBuilder, SpanData, SpanFormat, SpanSink};


fn tag(a: &Attr) -> String {
    match a {
        Attr::Int(n) => n.to_string(),
        Attr::Str(s) => s.clone(),
        Attr::Bool(b) => b.to_string(),
        Attr::Ints(v) => v.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
    }
}

fn micros(unix_ns: u64) -> u64 {
    unix_ns / 1_000
}

/// One Zipkin v2 span.
pub(crate) fn span_json(s: &SpanData, service: &str) -> Value {
    let tags: Map<String, Value> = s.attrs.iter().map(|(k, v)| (k.clone(), Value::from(tag(v)))).collect();
    let mut annotations: Vec<(u64, String)> = Vec::new();
    for e in &s.events {
        let a = (micros(e.unix_ns), e.text.clone());
        // The model wants annotations unique (equal logs at the same microsecond collapse).
        if !annotations.contains(&a) {
            annotations.push(a);
        }
    }
    let mut v = json!({
        "traceId": format!("{:032x}", s.trace_id),
        "id": format!("{:016x}", s.span_id),
        "name": s.name,
        "timestamp": micros(s.start_ns),
        "duration": micros(s.end_ns.saturating_sub(s.start_ns)).max(1),
        "localEndpoint": {"serviceName": service.to_lowercase()},
        "tags": tags,
    });
    if s.parent_span_id != 0 {
        v["parentId"] = format!("{:016x}", s.parent_span_id).into();
    }
    if !annotations.is_empty() {
        v["annotations"] = annotations.into_iter().map(|(t, value)| json!({"timestamp": t, "value": value})).collect();
    }
    v
}

/// Zipkin v2 JSON: one array of spans per batch, POSTed to `/api/v2/spans`.
pub struct Zipkin;

impl SpanFormat for Zipkin {
    const NAME: &'static str = "zipkin";
    const DEFAULT_PATH: &'static str = "/api/v2/spans";
    fn encode(spans: &[SpanData], builder: &mut SpanBuilder) -> io::Result<Vec<u8>> {
        let list: Vec<Value> = spans.iter().map(|s| span_json(s, &builder.service(s.pid))).collect();
        Ok(serde_json::to_vec(&list)?)
    }
}

/// `--zipkin-file` / `--zipkin-endpoint`.
pub type ZipkinSink = SpanSink<Zipkin>;

#[cfg(test)]
mod tests;
