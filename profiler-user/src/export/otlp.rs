//! OpenTelemetry export: each task becomes one span in OTLP/JSON, written as NDJSON to a file
//! and/or POSTed to an OTLP/HTTP collector (`http://host:4318/v1/traces`).
//!
//! Spec: <https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding> and the
//! messages of `opentelemetry/proto/trace/v1/trace.proto`. OTLP/JSON is the proto3 JSON
//! mapping with three differences the spec mandates and we follow: trace and span ids are
//! lowercase hex (not base64), enums are integers, and field names are lowerCamelCase.
//! 64-bit integers are decimal strings (the canonical proto3 mapping).
//!
//! The span keeps the task's W3C trace-id and span-id, so it joins the service's distributed
//! trace; its parent is the task's parent span. Kind is INTERNAL (1): tprof cannot tell
//! whether a task is the service's entry point, and a service instrumented with an OTel SDK
//! already emits its own SERVER span. The kernel ledger goes into `tprof.*` attributes, the
//! longest blocked intervals into `blocked` span events (with a link to the waker's span
//! when the waker worked for a task), logs into `log` events, and regions into child spans
//! whose ids come from [`region_span_id`]. Resource: `service.name` (the process's comm),
//! `process.pid`, `host.name`, and `container.id`, `k8s.pod.uid` when the process's cgroup
//! path carries them.
//!
//! Times: a task spans its begin..end records. One still open at session end ends then, and
//! one begun before attach starts at its first record seen (else its earliest region or
//! block); `tprof.incomplete` says so. A task with no time at all is skipped and counted.
//! Log events have the time of their record when events are streamed; with
//! `--summary-only` there is none, and they sit at the span start with
//! `tprof.log_time_unknown = true`.
//!
//! Batching (like the SDKs' batch span processor): spans are shipped at the first
//! [`Sink::flush`] at least [`SHIP_EVERY`] after the oldest pending one, as soon as
//! [`MAX_BATCH`] are pending, and at session end. One batch is one
//! `ExportTraceServiceRequest`: one line of the file (the Collector file exporter's layout),
//! one POST body.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::{Config, Delivery, ExportStats};
use crate::clock::WallClock;
use crate::model::origin::Origin;
use crate::model::event::Record;
use crate::model::ledger::TaskState;
use crate::model::report::SessionReport;
use crate::sink::Sink;

pub mod env;
mod model;
mod proto;
pub use model::Attr;
pub use model::{kernel_span_id, SpanBuilder, SpanData, SpanMode, KERNEL_SPAN, SPAN_KIND_INTERNAL, SPAN_KIND_SERVER};
use model::kv;

/// Longest a finished span waits before it is shipped.
pub const SHIP_EVERY: Duration = Duration::from_secs(1);
/// Most spans in one batch (the OTel SDKs' default `maxExportBatchSize`).
pub const MAX_BATCH: usize = 512;
/// How long the session end waits for queued HTTP batches.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A child span id for region `index` of the task span `task_span`: a SplitMix64 mix of
/// both, deterministic (the same task exported twice, or to OTLP and Zipkin, gets the same
/// ids, so backends deduplicate rather than fork), never 0 and never the task's own id.
/// Within a task the ids are distinct (the mix is a bijection of the index); across tasks
/// they collide like random 64-bit ids.
pub fn region_span_id(task_span: u64, index: usize) -> u64 {
    const SALT: u64 = 0x7470_726f_665f_7267; // "tprof_rg"
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let mut id = mix(task_span ^ mix(SALT.wrapping_add(index as u64)));
    while id == 0 || id == task_span {
        id = mix(id ^ SALT);
    }
    id
}

fn any_value(a: &Attr) -> Value {
    match a {
        Attr::Int(n) => json!({"intValue": i64::try_from(*n).unwrap_or(i64::MAX).to_string()}),
        Attr::Str(s) => json!({"stringValue": s}),
        Attr::Bool(b) => json!({"boolValue": b}),
        Attr::Ints(v) => json!({"arrayValue": {"values": v.iter().map(|n| any_value(&Attr::Int(*n))).collect::<Vec<_>>()}}),
    }
}

fn attributes(attrs: &[(String, Attr)]) -> Value {
    Value::Array(attrs.iter().map(|(k, v)| json!({"key": k, "value": any_value(v)})).collect())
}

/// One OTLP/JSON `Span`.
pub(crate) fn span_json(s: &SpanData) -> Value {
    let mut v = json!({
        "traceId": format!("{:032x}", s.trace_id),
        "spanId": format!("{:016x}", s.span_id),
        "name": s.name,
        "kind": s.kind,
        "startTimeUnixNano": s.start_ns.to_string(),
        "endTimeUnixNano": s.end_ns.to_string(),
        "attributes": attributes(&s.attrs),
        "events": s.events.iter().map(|e| json!({
            "timeUnixNano": e.unix_ns.to_string(), "name": e.name, "attributes": attributes(&e.attrs),
        })).collect::<Vec<_>>(),
        "links": s.links.iter().map(|k| json!({
            "traceId": k.trace_hex(), "spanId": k.span_hex(),
            "attributes": attributes(&[kv("tprof.link", Attr::Str("waker".into()))]),
        })).collect::<Vec<_>>(),
    });
    if s.parent_span_id != 0 {
        v["parentSpanId"] = format!("{:016x}", s.parent_span_id).into();
    }
    v
}

/// The pids of `spans`, in first-seen order.
fn pids_of(spans: &[SpanData]) -> Vec<u32> {
    let mut pids: Vec<u32> = Vec::new();
    for s in spans {
        if !pids.contains(&s.pid) {
            pids.push(s.pid);
        }
    }
    pids
}

/// One OTLP/protobuf `ExportTraceServiceRequest`, grouped like [`request_json`].
pub(crate) fn request_proto(spans: &[SpanData], b: &mut SpanBuilder) -> Vec<u8> {
    let groups: Vec<_> = pids_of(spans).into_iter().map(|pid| (b.resource(pid), spans.iter().filter(|s| s.pid == pid).collect())).collect();
    proto::request(&groups)
}

/// One `ExportTraceServiceRequest`: a `ResourceSpans` per process, in first-seen order.
pub(crate) fn request_json(spans: &[SpanData], b: &mut SpanBuilder) -> Value {
    let pids = pids_of(spans);
    let resource_spans: Vec<Value> = pids
        .iter()
        .map(|pid| {
            let res = b.resource(*pid);
            let mine: Vec<Value> = spans.iter().filter(|s| s.pid == *pid).map(span_json).collect();
            json!({
                "resource": {"attributes": attributes(&res)},
                "scopeSpans": [{"scope": {"name": "tprof", "version": env!("CARGO_PKG_VERSION")}, "spans": mine}],
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
}

/// Batches spans and hands them to a [`Delivery`]; shared by the OTLP and Zipkin sinks.
pub(crate) struct Batcher {
    pub builder: SpanBuilder,
    pub pending: Vec<SpanData>,
    oldest: Option<Instant>,
    pub ship_every: Duration,
    pub out: Delivery,
    pub spans: u64,
}

impl Batcher {
    pub fn new(builder: SpanBuilder, out: Delivery) -> Self {
        Batcher { builder, pending: Vec::new(), oldest: None, ship_every: SHIP_EVERY, out, spans: 0 }
    }

    /// Adds a task's spans; true when a batch is due now.
    pub fn add(&mut self, t: &TaskState) -> bool {
        if let Some(spans) = self.builder.build(t) {
            self.oldest.get_or_insert_with(Instant::now);
            self.pending.extend(spans);
        }
        self.pending.len() >= MAX_BATCH
    }

    /// True when the pending spans waited long enough.
    pub fn due(&self) -> bool {
        self.oldest.is_some_and(|o| o.elapsed() >= self.ship_every)
    }

    pub fn take(&mut self) -> Vec<SpanData> {
        self.oldest = None;
        self.spans += self.pending.len() as u64;
        std::mem::take(&mut self.pending)
    }

    /// End of session: says on stderr what could not be exported.
    pub fn close(&mut self, name: &str) -> Option<ExportStats> {
        let stats = self.out.close(CLOSE_TIMEOUT);
        let s = stats.unwrap_or_default();
        let mut lost = Vec::new();
        if s.failed > 0 {
            lost.push(format!("{} batches not delivered", s.failed));
        }
        if s.dropped_queue_full > 0 {
            lost.push(format!("{} batches dropped (queue full)", s.dropped_queue_full));
        }
        if self.builder.skipped > 0 {
            lost.push(format!("{} tasks skipped (no timestamp seen)", self.builder.skipped));
        }
        if !lost.is_empty() {
            eprintln!("tprof: {name} export: {} spans; {}", self.spans, lost.join(", "));
        }
        stats
    }
}

/// How a batch of spans is encoded for one tracing backend.
pub trait SpanFormat {
    /// For messages (`otlp export: ...`).
    const NAME: &'static str;
    /// Path added to an endpoint given without one.
    const DEFAULT_PATH: &'static str;
    fn encode(spans: &[SpanData], builder: &mut SpanBuilder) -> io::Result<Vec<u8>>;
    /// The binary encoding of the batch, where the format has one.
    fn encode_binary(_spans: &[SpanData], _builder: &mut SpanBuilder) -> Option<Vec<u8>> {
        None
    }
    /// The `Content-Type` of [`SpanFormat::encode`]'s bodies and of the binary ones.
    const CONTENT_TYPE: &'static str = "application/json";
    const BINARY_CONTENT_TYPE: &'static str = "application/x-protobuf";
}

/// How a span sink exports, besides where.
#[derive(Clone, Debug)]
pub struct SpanOptions {
    /// How batches are POSTed (headers, compression, deadline).
    pub http: Config,
    /// POST the binary encoding (OTLP/protobuf) rather than JSON. Files are always JSON.
    pub binary: bool,
    pub spans: SpanMode,
    /// The machine and clock of the session (a report: the recording's).
    pub origin: Origin,
    /// A live session (names may be read from /proc); false for a report.
    pub live: bool,
}

impl Default for SpanOptions {
    fn default() -> Self {
        SpanOptions { http: Config::default(), binary: false, spans: SpanMode::default(), origin: Origin::default(), live: true }
    }
}

/// A sink that batches finished tasks as spans in format `F` to a file and/or endpoint.
pub struct SpanSink<F: SpanFormat> {
    batch: Batcher,
    binary: bool,
    _format: std::marker::PhantomData<F>,
}

impl<F: SpanFormat> SpanSink<F> {
    /// Spans go to `file` (NDJSON, one request body per line, created or truncated) and/or
    /// `endpoint` (`http://host:port`, to which the format's default path is added when it
    /// has no path; https is not supported). At least one is required.
    pub fn new(file: Option<&Path>, endpoint: Option<&str>, clock: WallClock) -> anyhow::Result<Self> {
        let out = Delivery::new(F::NAME, file, endpoint, F::DEFAULT_PATH, Config::default())?;
        Ok(SpanSink { batch: Batcher::new(SpanBuilder::new(clock), out), binary: false, _format: std::marker::PhantomData })
    }

    /// Like [`SpanSink::new`], with these options (the endpoint is a full URL when given
    /// with a path).
    pub fn with_options(file: Option<&Path>, endpoint: Option<&str>, opts: SpanOptions) -> anyhow::Result<Self> {
        let mut http = opts.http;
        http.request.content_type = if opts.binary { F::BINARY_CONTENT_TYPE } else { F::CONTENT_TYPE };
        let out = Delivery::new(F::NAME, file, endpoint, F::DEFAULT_PATH, http)?;
        let mut builder = SpanBuilder::with_origin(&opts.origin, opts.live);
        builder.mode = opts.spans;
        Ok(SpanSink { batch: Batcher::new(builder, out), binary: opts.binary, _format: std::marker::PhantomData })
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
        if !self.binary {
            let body = F::encode(&spans, &mut self.batch.builder)?;
            return self.batch.out.ship(body);
        }
        if self.batch.out.has_file() {
            let body = F::encode(&spans, &mut self.batch.builder)?;
            self.batch.out.ship_file(&body)?;
        }
        if let Some(body) = F::encode_binary(&spans, &mut self.batch.builder) {
            self.batch.out.ship_http(body);
        }
        Ok(())
    }
}

impl<F: SpanFormat> Sink for SpanSink<F> {
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
        self.batch.close(F::NAME);
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.batch.due() {
            self.ship()?;
        }
        self.batch.out.flush()
    }
}

/// OTLP/JSON: one `ExportTraceServiceRequest` per batch, POSTed to `/v1/traces`.
pub struct Otlp;

impl SpanFormat for Otlp {
    const NAME: &'static str = "otlp";
    const DEFAULT_PATH: &'static str = "/v1/traces";
    fn encode(spans: &[SpanData], builder: &mut SpanBuilder) -> io::Result<Vec<u8>> {
        Ok(serde_json::to_vec(&request_json(spans, builder))?)
    }
    fn encode_binary(spans: &[SpanData], builder: &mut SpanBuilder) -> Option<Vec<u8>> {
        Some(request_proto(spans, builder))
    }
}

/// `--otlp-file` / `--otlp-endpoint`.
pub type OtlpSink = SpanSink<Otlp>;

#[cfg(test)]
pub(crate) mod tests;
