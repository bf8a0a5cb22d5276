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
use std::path::Path;

use serde_json::{json, Map, Value};

use super::http::{Delivery, ExportStats};
use super::otlp::{Attr, Batcher, SpanData};
use super::WallClock;
use crate::correlate::TaskState;
use crate::decode::Record;
use crate::sink::{SessionReport, Sink};

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

/// `--zipkin-file` / `--zipkin-endpoint`.
pub struct ZipkinSink {
    batch: Batcher,
}

impl ZipkinSink {
    /// Spans go to `file` (NDJSON: one array of spans per line, created or truncated)
    /// and/or `endpoint` (`http://host:port`, to which `/api/v2/spans` is added when it has
    /// no path; https is not supported). At least one is required.
    pub fn new(file: Option<&Path>, endpoint: Option<&str>, clock: WallClock) -> anyhow::Result<Self> {
        let out = Delivery::new("zipkin", file, endpoint, "/api/v2/spans")?;
        Ok(ZipkinSink { batch: Batcher::new(clock, out) })
    }

    /// Names the traced processes' resources after their comms, read now (without this,
    /// each pid's comm is read when it is first seen, `pid-N` if it has exited by then).
    pub fn with_pids(mut self, pids: &[u32]) -> Self {
        self.batch.builder.preload(pids);
        self
    }

    /// HTTP delivery figures so far (None without an endpoint).
    pub fn stats(&self) -> Option<ExportStats> {
        self.batch.out.stats()
    }

    fn ship(&mut self) -> io::Result<()> {
        let spans = self.batch.take();
        if spans.is_empty() {
            return Ok(());
        }
        let b = &mut self.batch.builder;
        let list: Vec<Value> = spans.iter().map(|s| span_json(s, &b.service(s.pid))).collect();
        let body = serde_json::to_vec(&list)?;
        self.batch.out.ship(body)
    }
}

impl Sink for ZipkinSink {
    fn event(&mut self, rec: &Record, _task: &TaskState) -> io::Result<()> {
        self.batch.builder.event(rec);
        Ok(())
    }

    fn summary(&mut self, task: &TaskState) -> io::Result<()> {
        if self.batch.add(task) {
            self.ship()?;
        }
        Ok(())
    }

    fn finish(&mut self, _report: &SessionReport) -> io::Result<()> {
        let r = self.ship().and_then(|()| self.batch.out.flush());
        self.batch.close("zipkin");
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.batch.due() {
            self.ship()?;
        }
        self.batch.out.flush()
    }
}

#[cfg(test)]
mod tests;
