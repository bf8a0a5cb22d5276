//! OTLP export of hand-built ledgers, checked by the official protobuf schema
//! (`tests/schema/validate_otlp.py`) and by hand.

use super::*;
use crate::model::critical::{Step, StepKind};
use crate::model::event::{TaskKey, Waker};
use crate::model::ledger::{Block, RegionSpan, SyscallStat};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

pub(crate) const MS: u64 = 1_000_000;
pub(crate) const TRACE: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;

/// A temp dir of this test process, removed by the caller.
pub(crate) fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tprof-export-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Runs a schema validator from tests/schema on `files`; panics with its report unless valid.
/// Python or its packages missing is a failure that says how to install them.
pub(crate) fn validate(script: &str, files: &[&Path]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/schema").join(script);
    let python = std::env::var("TPROF_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python).arg(&path).args(files).output().unwrap_or_else(|e| {
        panic!("cannot run {python} for the schema tests ({e}): run `cargo xtask setup`, or set TPROF_PYTHON")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match out.status.code() {
        Some(0) => text,
        Some(2) => panic!("schema validator cannot run: {text}"),
        _ => panic!("{script} rejects the export:\n{text}"),
    }
}

fn block(start_ns: u64, blocked_ns: u64, waker: Waker) -> Block {
    Block { tid: 11, start_ns, blocked_ns, syscall_nr: Some(202), waker, stack_ids: Default::default(), kernel_addrs: Vec::new(), stack: None, waker_task_name: None, chain: Vec::new() }
}

/// Ledgers covering what the exporters must handle: nested regions, logs, blocks with each
/// kind of waker, a task still open at session end, one begun before attach.
#[allow(clippy::field_reassign_with_default)] // TaskState has private fields: no struct literal
pub(crate) fn sample_tasks(base: u64) -> Vec<TaskState> {
    let region = |name: &str, s: u64, e: Option<u64>, depth| RegionSpan { name: name.into(), start_ns: base + s, end_ns: e.map(|e| base + e), depth };
    let waker_task = TaskKey { trace_id: TRACE, span_id: 0x1111 };
    let mut done = TaskState::default();
    done.key = TaskKey { trace_id: TRACE, span_id: 0x00f0_67aa_0ba9_02b7 };
    done.name = "GET /users".into();
    done.parent_span_id = 0x5555_6666_7777_8888;
    done.pid = std::process::id();
    done.begin_ns = Some(base);
    done.end_ns = Some(base + 30 * MS);
    (done.on_cpu_ns, done.runq_ns, done.blocked_ns) = (5 * MS, MS, 20 * MS);
    done.regions = vec![
        region("db", 2 * MS, Some(25 * MS), 0),
        region("query", 3 * MS, Some(20 * MS), 1),
        region("decode", 21 * MS, Some(24 * MS), 1),
        region("render", 26 * MS, Some(29 * MS), 0),
    ];
    done.logs = vec![("rows".into(), "12".into()), ("rows".into(), "12".into()), (String::new(), "x\"y\n".into())];
    done.blocks = vec![
        block(base + 4 * MS, 15 * MS, Waker::Thread { pid: 1, tid: 2, comm: "pool".into(), task: Some(waker_task), via_softirq: false }),
        block(base + 22 * MS, 4 * MS, Waker::Kernel),
        block(base + 27 * MS, MS, Waker::Unknown),
    ];
    done.threads = vec![11, 12];
    let step = |depth, task, name: Option<&str>, a: u64, b: u64, kind| Step { depth, task, name: name.map(str::to_string), tid: 11, start_ns: base + a, end_ns: base + b, kind };
    let woken = Waker::Thread { pid: 1, tid: 2, comm: "pool".into(), task: Some(waker_task), via_softirq: false };
    done.critical_path = vec![
        step(0, done.key, None, 0, 4 * MS, StepKind::OnCpu),
        step(0, done.key, None, 4 * MS, 19 * MS, StepKind::Blocked { syscall_nr: Some(202), waker: woken }),
        step(1, waker_task, Some("pool-job"), 4 * MS, 19 * MS, StepKind::OnCpu),
        step(0, done.key, None, 19 * MS, 30 * MS, StepKind::Untraced),
    ];
    done.syscalls.insert(202, SyscallStat { count: 2, total_ns: 19 * MS, errors: 0 });
    done.syscalls.insert(1, SyscallStat { count: 1, total_ns: MS / 100, errors: 0 });
    let mut open = TaskState::default();
    open.key = TaskKey { trace_id: TRACE + 1, span_id: 0x2222 };
    open.name = "stuck".into();
    open.pid = std::process::id();
    open.begin_ns = Some(base + MS);
    open.regions = vec![region("waiting", 2 * MS, None, 0)];
    let mut before_attach = TaskState::default();
    before_attach.key = TaskKey { trace_id: TRACE + 2, span_id: 0x3333 };
    before_attach.pid = 999_999_999;
    before_attach.end_ns = Some(base + 10 * MS);
    before_attach.regions = vec![region("late", 5 * MS, Some(8 * MS), 0)];
    before_attach.dropped = 3;
    let mut nothing = TaskState::default();
    nothing.key = TaskKey { trace_id: TRACE + 3, span_id: 0x4444 };
    vec![done, open, before_attach, nothing]
}

fn base() -> u64 {
    crate::clock::monotonic_ns() - 100 * MS
}

fn export(dir: &Path, tasks: &[TaskState], base: u64) -> (PathBuf, OtlpSink) {
    let path = dir.join("otlp.ndjson");
    let mut sink = OtlpSink::new(Some(&path), None, WallClock::now()).expect("sink");
    sink.batch.builder.now_mono = || crate::clock::monotonic_ns();
    // A log record seen as an event gives the first log its time.
    let t = &tasks[0];
    let meta = crate::model::event::Meta { cpu: 0, ts_ns: base + 5 * MS, pid: t.pid, tid: 11, task: t.key };
    sink.event(&Record::Log { meta, key: "rows".into(), value: "12".into(), flags: 0 }, t).expect("event");
    for t in tasks {
        sink.summary(t).expect("summary");
    }
    sink.finish(&SessionReport::default()).expect("finish");
    (path, sink)
}

fn spans_by_name(v: &Value) -> HashMap<String, Value> {
    let mut m = HashMap::new();
    for rs in v["resourceSpans"].as_array().expect("resourceSpans") {
        for s in rs["scopeSpans"][0]["spans"].as_array().expect("spans") {
            m.insert(s["name"].as_str().expect("name").to_string(), s.clone());
        }
    }
    m
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key).map(|a| &a["value"])
}

#[test]
fn export_is_valid_otlp_and_keeps_ids_ledger_regions_and_events() {
    let dir = tmp("otlp");
    let base = base();
    let (path, sink) = export(&dir, &sample_tasks(base), base);
    assert_eq!(sink.batch.builder.skipped, 1, "the task with no time at all is skipped");
    let report = validate("validate_otlp.py", &[&path]);
    assert!(report.contains("1 ExportTraceServiceRequest, 9 spans"), "{report}");

    let text = std::fs::read_to_string(&path).expect("read");
    let v: Value = serde_json::from_str(text.trim()).expect("one JSON line");
    let rs = v["resourceSpans"].as_array().expect("resourceSpans");
    assert_eq!(rs.len(), 2, "one resource per pid");
    let res = &rs[0]["resource"]["attributes"];
    assert!(res.as_array().expect("attrs").iter().any(|a| a["key"] == "service.name" && a["value"]["stringValue"] != ""));
    assert_eq!(rs[0]["scopeSpans"][0]["scope"]["name"], "tprof");
    assert_eq!(rs[1]["resource"]["attributes"][0]["value"]["stringValue"], "pid-999999999");
    let s = spans_by_name(&v);

    let task = &s["GET /users"];
    assert_eq!(task["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(task["spanId"], "00f067aa0ba902b7");
    assert_eq!(task["parentSpanId"], "5555666677778888");
    assert_eq!(task["kind"], 1);
    let start: u64 = task["startTimeUnixNano"].as_str().expect("string").parse().expect("decimal");
    let end: u64 = task["endTimeUnixNano"].as_str().expect("string").parse().expect("decimal");
    assert_eq!(end - start, 30 * MS);
    assert_eq!(attr(task, "tprof.blocked_ns").expect("blocked")["intValue"], (20 * MS).to_string());
    assert_eq!(attr(task, "tprof.unscheduled_ns").expect("unscheduled")["intValue"], (4 * MS).to_string());
    assert_eq!(attr(task, "tprof.threads").expect("threads")["arrayValue"]["values"][1]["intValue"], "12");
    let top = attr(task, "tprof.top_syscalls").expect("top")["stringValue"].as_str().expect("str").to_string();
    assert!(top.starts_with("futex 2x 19.000 ms, write 1x"), "{top}");
    assert!(attr(task, "tprof.incomplete").is_none());

    // Events: 3 blocks, 3 logs, in time order; the first log has the time of its event.
    let events = task["events"].as_array().expect("events");
    assert_eq!(events.iter().filter(|e| e["name"] == "blocked").count(), 3);
    assert_eq!(events.iter().filter(|e| e["name"] == "log").count(), 3);
    // The critical path crosses into the waker's task: one event per step, in time order.
    let path: Vec<&Value> = events.iter().filter(|e| e["name"] == "critical_path").collect();
    assert_eq!(path.len(), 4);
    let depth_of = |e: &Value| attr(e, "tprof.critical_path.depth").map(|d| d["intValue"].clone());
    assert_eq!(depth_of(path[2]), Some(json!("1")));
    assert_eq!(attr(path[2], "tprof.critical_path.task").expect("task")["stringValue"], "pool-job");
    assert_eq!(attr(path[2], "tprof.critical_path.span_id").expect("span")["stringValue"], "0000000000001111");
    assert_eq!(attr(path[1], "tprof.critical_path.kind").expect("kind")["stringValue"], "blocked");
    assert_eq!(attr(path[1], "tprof.critical_path.share").expect("share")["stringValue"], "0.500");
    let first_block = events.iter().find(|e| e["name"] == "blocked").expect("block");
    let at: u64 = first_block["timeUnixNano"].as_str().expect("str").parse().expect("int");
    assert_eq!(at - start, 4 * MS);
    let keys: Vec<&str> = first_block["attributes"].as_array().expect("a").iter().filter_map(|a| a["key"].as_str()).collect();
    for k in ["tprof.blocked_ns", "tprof.syscall", "tprof.waker.kind", "tprof.waker.pid", "tprof.waker.tid", "tprof.waker.comm", "tprof.waker.span_id"] {
        assert!(keys.contains(&k), "{k} missing in {keys:?}");
    }
    let timed = |e: &&Value| e["attributes"].as_array().is_some_and(|a| a.iter().all(|a| a["key"] != "tprof.log_time_unknown"));
    let log = events.iter().filter(|e| e["name"] == "log").find(timed).expect("a log with its time");
    assert_eq!(events.iter().filter(|e| e["name"] == "log").filter(timed).count(), 1, "the others' times are unknown");
    assert_eq!(log["attributes"][0], json!({"key": "rows", "value": {"stringValue": "12"}}));
    let log_at: u64 = log["timeUnixNano"].as_str().expect("str").parse().expect("int");
    assert_eq!(log_at - start, 5 * MS);
    assert_eq!(task["links"][0]["spanId"], "0000000000001111", "the waker's span is linked");

    // Regions: children of the task, or of the enclosing region.
    let id = |n: &str| s[n]["spanId"].as_str().expect("id").to_string();
    assert_eq!(s["db"]["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(s["render"]["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(s["query"]["parentSpanId"].as_str(), Some(id("db").as_str()));
    assert_eq!(s["decode"]["parentSpanId"].as_str(), Some(id("db").as_str()));
    assert_eq!(s["db"]["spanId"], format!("{:016x}", region_span_id(0x00f0_67aa_0ba9_02b7, 0)));

    // Still open at session end: ends now, says so; its open region too.
    assert!(attr(&s["stuck"], "tprof.incomplete").expect("incomplete")["stringValue"].as_str().expect("s").contains("did not end"));
    assert!(attr(&s["waiting"], "tprof.incomplete").is_some());
    // Begun before attach: starts at its earliest known time, named by its span id.
    let early = &s["task 0000000000003333"];
    assert!(attr(early, "tprof.incomplete").expect("incomplete")["stringValue"].as_str().expect("s").contains("began before attach"));
    assert!(early.get("parentSpanId").is_none(), "no parent: field omitted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn region_ids_are_distinct_nonzero_and_stable() {
    let mut all = std::collections::HashSet::new();
    for task in [1u64, 2, u64::MAX, 0x00f0_67aa_0ba9_02b7] {
        for i in 0..crate::model::ledger::MAX_REGIONS {
            let id = region_span_id(task, i);
            assert!(id != 0 && id != task);
            assert!(all.insert(id), "collision for task {task:x} region {i}");
        }
    }
    assert_eq!(region_span_id(7, 3), region_span_id(7, 3));
}

#[test]
fn batches_ship_at_flush_when_due_and_when_large() {
    let dir = tmp("otlp-batch");
    let path = dir.join("b.ndjson");
    let mut sink = OtlpSink::new(Some(&path), None, WallClock::now()).expect("sink");
    let mut t = sample_tasks(base()).swap_remove(0);
    sink.summary(&t).expect("summary");
    sink.flush().expect("flush");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "", "not due yet");
    sink.batch.ship_every = Duration::ZERO;
    sink.flush().expect("flush");
    assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 1);
    // 5 spans per task: a batch goes out as soon as MAX_BATCH are pending.
    sink.batch.ship_every = Duration::from_secs(3600);
    for _ in 0..MAX_BATCH / 5 + 1 {
        t.key.span_id += 1;
        sink.summary(&t).expect("summary");
    }
    assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 2);
    sink.finish(&SessionReport::default()).expect("finish");
    assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 2, "nothing left over");
    validate("validate_otlp.py", &[&path]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn posts_to_an_otlp_http_endpoint() {
    use std::io::{BufRead, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        let mut r = std::io::BufReader::new(s);
        let (mut line, mut len, mut first) = (String::new(), 0, String::new());
        while r.read_line(&mut line).expect("read") > 0 && line != "\r\n" {
            if first.is_empty() {
                first = line.clone();
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().expect("length");
            }
            line.clear();
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).expect("body");
        r.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").expect("respond");
        (first, body)
    });
    let mut sink = OtlpSink::new(None, Some(&format!("http://127.0.0.1:{port}")), WallClock::now()).expect("sink");
    sink.summary(&sample_tasks(base())[0]).expect("summary");
    sink.finish(&SessionReport::default()).expect("finish");
    let (first, body) = server.join().expect("server");
    assert_eq!(first, "POST /v1/traces HTTP/1.1\r\n");
    let dir = tmp("otlp-http");
    let path = dir.join("body.json");
    std::fs::write(&path, body).expect("write");
    validate("validate_otlp.py", &[&path]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hints_make_server_spans_and_kernel_children_under_the_services_span() {
    let base = base();
    let mut t = sample_tasks(base).remove(0);
    t.logs.push((model::HINT_KIND.into(), "server".into()));
    let mut b = SpanBuilder::new(WallClock::now());
    let own = b.build(&t).expect("spans");
    assert_eq!((own[0].span_id, own[0].kind), (t.key.span_id, SPAN_KIND_SERVER), "a server task is a SERVER span");
    assert!(own[0].events.iter().all(|e| e.attrs.iter().all(|(k, _)| k != model::HINT_KIND)), "hints are not log events");

    // The service exports this span itself (`tprof.otel`): auto makes a child.
    t.logs.push((model::HINT_OTEL.into(), "1".into()));
    let spans = b.build(&t).expect("spans");
    let kernel = &spans[0];
    assert_eq!((kernel.name.as_str(), kernel.parent_span_id, kernel.kind), (KERNEL_SPAN, t.key.span_id, SPAN_KIND_INTERNAL));
    assert_eq!(kernel.span_id, kernel_span_id(t.key.span_id));
    assert!(kernel.attrs.contains(&model::kv("tprof.task", Attr::Str("GET /users".into()))));
    assert!(spans.iter().all(|s| s.span_id != t.key.span_id), "no span with the service's id");
    let top: Vec<&SpanData> = spans[1..].iter().filter(|s| s.attrs.contains(&model::kv("tprof.region.depth", Attr::Int(0)))).collect();
    assert!(!top.is_empty() && top.iter().all(|s| s.parent_span_id == kernel.span_id), "top regions under the kernel span");
    let ids: std::collections::HashSet<u64> = spans.iter().map(|s| s.span_id).collect();
    assert_eq!(ids.len(), spans.len());

    b.mode = SpanMode::Own;
    assert_eq!(b.build(&t).expect("spans")[0].span_id, t.key.span_id, "own: the task's span even so");
    t.logs.pop();
    b.mode = SpanMode::Child;
    assert_eq!(b.build(&t).expect("spans")[0].name, KERNEL_SPAN, "child: always the kernel span");
}

/// The protobuf body, decoded by the official protos, says what the JSON one says.
#[test]
fn protobuf_bodies_decode_with_the_official_protos_like_the_json_ones() {
    let base = base();
    let tasks = sample_tasks(base);
    let mut b = SpanBuilder::new(WallClock::now());
    let spans: Vec<SpanData> = tasks.iter().filter_map(|t| b.build(t)).flatten().collect();
    let dir = tmp("proto");
    let (pb, js) = (dir.join("req.pb"), dir.join("req.json"));
    std::fs::write(&pb, request_proto(&spans, &mut b)).expect("write");
    std::fs::write(&js, serde_json::to_vec(&request_json(&spans, &mut b)).expect("json")).expect("write");
    let script = r#"
import base64, json, sys
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
sys.path.insert(0, sys.argv[3])
from validate_otlp import normalize
a = ExportTraceServiceRequest(); a.ParseFromString(open(sys.argv[1], 'rb').read())
b = ExportTraceServiceRequest(); errors = []
json_format.ParseDict(normalize(json.load(open(sys.argv[2])), '$', errors), b)
assert not errors, errors
assert a == b, 'the protobuf and JSON bodies differ'
print(sum(len(ss.spans) for rs in a.resource_spans for ss in rs.scope_spans))
"#;
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/schema");
    let python = std::env::var("TPROF_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python).arg("-c").arg(script).arg(&pb).arg(&js).arg(&schema).output().expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), spans.len().to_string());
    let _ = std::fs::remove_dir_all(&dir);
}
