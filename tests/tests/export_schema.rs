//! The OpenTelemetry and Zipkin exports checked against their real schemas
//! (`tests/schema/validate_*.py`: OTLP through the official protobuf definitions, Zipkin
//! through the published v2 model).
//!
//! First the validators themselves: they must accept the reference examples and reject the
//! mistakes an exporter typically makes, or passing them would prove nothing. Then (root)
//! a real `tprof attach` on a real target, exporting to files and to loopback HTTP
//! collectors. Python or its packages missing fails with a message to run `cargo xtask setup`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use tprof_tests::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tprof-schema-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Runs a validator; Ok(report) if valid, Err(report) if invalid. Cannot run: panics.
fn run_validator(script: &str, file: &Path) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema").join(script);
    let python = std::env::var("TPROF_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python).arg(&path).arg(file).output().unwrap_or_else(|e| {
        panic!("cannot run {python} for the schema tests ({e}): run `cargo xtask setup`, or set TPROF_PYTHON")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match out.status.code() {
        Some(0) => Ok(text),
        Some(1) => Err(text),
        _ => panic!("{script} cannot run: {text}"),
    }
}

fn check(script: &str, dir: &Path, name: &str, doc: &Value) -> Result<String, String> {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, format!("{doc}\n")).expect("write fixture");
    run_validator(script, &file)
}

/// A named change that must make a valid document invalid.
type Mutation = (&'static str, Box<dyn Fn(&mut Value)>);

const SPAN: &str = "/resourceSpans/0/scopeSpans/0/spans/0";

/// A minimal, valid OTLP/JSON request in the spec's encoding.
fn otlp_example() -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"scope": {"name": "tprof", "version": "0.1.0"}, "spans": [
            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
             "parentSpanId": "eee19b7ec3c1b173", "name": "GET /", "kind": 1,
             "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000",
             "attributes": [{"key": "tprof.on_cpu_ns", "value": {"intValue": "42"}}],
             "events": [{"timeUnixNano": "1544712660300000000", "name": "log",
                         "attributes": [{"key": "k", "value": {"stringValue": "v"}}]}]},
        ]}],
    }]})
}

/// The `Span.example` of zipkin2-api.yaml, as a list.
fn zipkin_example() -> Value {
    json!([{"id": "352bff9a74ca9ad2", "traceId": "5af7183fb1d4cf5f", "parentId": "6b221d5bc9e6496c",
        "name": "get /api", "timestamp": 1556604172355737u64, "duration": 1431, "kind": "SERVER",
        "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
        "remoteEndpoint": {"ipv4": "172.19.0.2", "port": 58648},
        "tags": {"http.method": "GET", "http.path": "/api"}}])
}

#[test]
fn otlp_validator_accepts_the_encoding_and_rejects_typical_mistakes() {
    let dir = tmp("otlp-fixtures");
    check("validate_otlp.py", &dir, "good", &otlp_example()).expect("the example is valid");
    let mutations: Vec<Mutation> = vec![
        ("base64 trace id", Box::new(|v| set(v, &format!("{SPAN}/traceId"), json!("W47/95gDgQPSabYzgT/GDA==")))),
        ("uppercase hex", Box::new(|v| set(v, &format!("{SPAN}/spanId"), json!("EEE19B7EC3C1B174")))),
        ("short span id", Box::new(|v| set(v, &format!("{SPAN}/spanId"), json!("eee19b7ec3c1b17")))),
        ("zero trace id", Box::new(|v| set(v, &format!("{SPAN}/traceId"), json!("0".repeat(32))))),
        ("enum as name", Box::new(|v| set(v, &format!("{SPAN}/kind"), json!("SPAN_KIND_INTERNAL")))),
        ("snake_case field", Box::new(|v| rename(v, SPAN, "startTimeUnixNano", "start_time_unix_nano"))),
        ("unknown field", Box::new(|v| rename(v, SPAN, "kind", "spanKind"))),
        ("non-integer intValue", Box::new(|v| set(v, &format!("{SPAN}/attributes/0/value"), json!({"intValue": "4x"})))),
        ("end before start", Box::new(|v| set(v, &format!("{SPAN}/endTimeUnixNano"), json!("1544712659000000000")))),
        ("milliseconds", Box::new(|v| set(v, &format!("{SPAN}/startTimeUnixNano"), json!("1544712660000")))),
        ("event outside", Box::new(|v| set(v, &format!("{SPAN}/events/0/timeUnixNano"), json!("1544712669000000000")))),
        ("no service.name", Box::new(|v| v["resourceSpans"][0]["resource"]["attributes"] = json!([]))),
        ("self parent", Box::new(|v| set(v, &format!("{SPAN}/parentSpanId"), json!("eee19b7ec3c1b174")))),
    ];
    for (what, mutate) in &mutations {
        let mut doc = otlp_example();
        mutate(&mut doc);
        assert_ne!(doc, otlp_example(), "{what}: the mutation changed nothing");
        let verdict = check("validate_otlp.py", &dir, "bad", &doc);
        assert!(verdict.is_err(), "{what} was accepted: {verdict:?}\n{doc}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn zipkin_validator_accepts_the_published_example_and_rejects_typical_mistakes() {
    let dir = tmp("zipkin-fixtures");
    check("validate_zipkin.py", &dir, "good", &zipkin_example()).expect("the published example is valid");
    let mutations: Vec<Mutation> = vec![
        ("milliseconds", Box::new(|v| v[0]["timestamp"] = json!(1556604172355u64))),
        ("nanoseconds", Box::new(|v| v[0]["timestamp"] = json!(1556604172355737000u64))),
        ("uppercase id", Box::new(|v| v[0]["id"] = json!("352BFF9A74CA9AD2"))),
        ("20-digit trace id", Box::new(|v| v[0]["traceId"] = json!("5af7183fb1d4cf5f0000"))),
        ("zero id", Box::new(|v| v[0]["id"] = json!("0000000000000000"))),
        ("typo parentID", Box::new(|v| rename(v, "/0", "parentId", "parentID"))),
        ("kind INTERNAL", Box::new(|v| v[0]["kind"] = json!("INTERNAL"))),
        ("numeric tag", Box::new(|v| v[0]["tags"]["n"] = json!(1))),
        ("zero duration", Box::new(|v| v[0]["duration"] = json!(0))),
        ("missing id", Box::new(|v| rename(v, "/0", "id", "spanId"))),
        ("annotation without value", Box::new(|v| v[0]["annotations"] = json!([{"timestamp": 1556604172355737u64}]))),
        ("duplicate annotations", Box::new(|v| v[0]["annotations"] = json!([{"timestamp": 1556604172355737u64, "value": "a"}, {"timestamp": 1556604172355737u64, "value": "a"}]))),
        ("annotation outside", Box::new(|v| v[0]["annotations"] = json!([{"timestamp": 1556604172999999u64, "value": "a"}]))),
        ("bad ipv4", Box::new(|v| v[0]["localEndpoint"]["ipv4"] = json!("300.1.1.1"))),
        ("not a list", Box::new(|v| *v = v[0].clone())),
    ];
    for (what, mutate) in &mutations {
        let mut doc = zipkin_example();
        mutate(&mut doc);
        assert_ne!(doc, zipkin_example(), "{what}: the mutation changed nothing");
        let verdict = check("validate_zipkin.py", &dir, "bad", &doc);
        assert!(verdict.is_err(), "{what} was accepted: {verdict:?}\n{doc}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn set(v: &mut Value, ptr: &str, x: Value) {
    *v.pointer_mut(ptr).unwrap_or_else(|| panic!("no {ptr}")) = x;
}

fn rename(v: &mut Value, ptr: &str, from: &str, to: &str) {
    let obj = v.pointer_mut(ptr).and_then(Value::as_object_mut).unwrap_or_else(|| panic!("no object at {ptr}"));
    let x = obj.remove(from).unwrap_or_else(|| panic!("no {from} at {ptr}"));
    obj.insert(to.into(), x);
}

/// Spans of an OTLP NDJSON file or POST bodies, by name.
fn otlp_spans(docs: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for d in docs {
        for rs in d["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    out
}

fn by_name<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found: Vec<&Value> = spans.iter().filter(|s| s["name"] == name).collect();
    assert_eq!(found.len(), 1, "one span named {name:?} expected: {spans:#?}");
    found[0]
}

/// Runs the target's `requests` traced with `extra` tprof arguments; returns its stdout.
fn traced(requests: &[&str], extra: &[&str]) -> Vec<String> {
    trace_requests(requests, extra, RunAs::ROOT).1
}

fn printed_span(lines: &[String], task: &str) -> String {
    let prefix = format!("{task} task span ");
    let l = lines.iter().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {lines:?}"));
    l[prefix.len()..].split_whitespace().next().unwrap_or_default().to_string()
}

/// What both exports must show of the `regions` and `mutex` requests (OTLP field names).
fn check_otlp_spans(spans: &[Value], lines: &[String]) {
    let regions = by_name(spans, "regions");
    assert_eq!(regions["spanId"], printed_span(lines, "regions"), "the task keeps its span id");
    let outer = by_name(spans, "outer");
    let inner = by_name(spans, "inner");
    assert_eq!(outer["parentSpanId"], regions["spanId"]);
    assert_eq!(inner["parentSpanId"], outer["spanId"]);
    assert!([&outer["traceId"], &inner["traceId"]].iter().all(|t| **t == regions["traceId"]));
    let log = regions["events"].as_array().and_then(|e| e.iter().find(|e| e["name"] == "log")).expect("log event");
    assert_eq!(log["attributes"][0], json!({"key": "answer", "value": {"stringValue": "42"}}), "{log}");
    let mutex = by_name(spans, "mutex");
    assert_eq!(mutex["spanId"], printed_span(lines, "mutex"));
    let blocked = mutex["events"].as_array().and_then(|e| e.iter().find(|e| e["name"] == "blocked")).expect("blocked event");
    assert!(blocked.to_string().contains(r#""key":"tprof.waker.kind","value":{"stringValue":"thread"}"#), "{blocked}");
}

#[test]
fn export_files_of_a_traced_target_are_valid() {
    let dir = tmp("files");
    let (otlp, zipkin) = (dir.join("otlp.ndjson"), dir.join("zipkin.ndjson"));
    let lines = traced(
        &["sleep:5", "mutex:10", "regions"],
        &["--otlp-file", otlp.to_str().expect("utf-8"), "--zipkin-file", zipkin.to_str().expect("utf-8")],
    );
    let report = run_validator("validate_otlp.py", &otlp).unwrap_or_else(|e| panic!("invalid OTLP:\n{e}"));
    assert!(!report.contains(" 0 spans"), "{report}");
    run_validator("validate_zipkin.py", &zipkin).unwrap_or_else(|e| panic!("invalid Zipkin:\n{e}"));
    let docs: Vec<Value> = std::fs::read_to_string(&otlp).expect("read").lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    check_otlp_spans(&otlp_spans(&docs), &lines);
    let zspans: Vec<Value> = std::fs::read_to_string(&zipkin)
        .expect("read")
        .lines()
        .flat_map(|l| serde_json::from_str::<Vec<Value>>(l).expect("array"))
        .collect();
    let (outer, regions) = (by_name(&zspans, "outer"), by_name(&zspans, "regions"));
    assert_eq!(outer["parentId"], regions["id"]);
    assert_eq!(regions["id"], printed_span(&lines, "regions"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A loopback collector: answers 200 to every POST and hands over (path, body).
fn collector() -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://127.0.0.1:{}", l.local_addr().expect("addr").port());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { break };
            let mut r = BufReader::new(s);
            let (mut line, mut first, mut len) = (String::new(), String::new(), 0usize);
            while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if first.is_empty() {
                    first = line.clone();
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = r.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let path = first.split_whitespace().nth(1).unwrap_or_default().to_string();
            if tx.send((path, body)).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

/// Everything a collector received (it may still be handing over the last one).
fn received(rx: &mpsc::Receiver<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(2)).ok()).collect()
}

#[test]
fn export_to_http_collectors_is_valid() {
    let (otlp_url, otlp_rx) = collector();
    let (zipkin_url, zipkin_rx) = collector();
    let lines = traced(&["mutex:10", "regions"], &["--otlp-endpoint", &otlp_url, "--zipkin-endpoint", &zipkin_url]);
    let dir = tmp("http");
    let mut docs = Vec::new();
    for (n, (path, body)) in received(&otlp_rx).into_iter().enumerate() {
        assert_eq!(path, "/v1/traces");
        let file = dir.join(format!("otlp-{n}.json"));
        std::fs::write(&file, &body).expect("write");
        run_validator("validate_otlp.py", &file).unwrap_or_else(|e| panic!("invalid OTLP POST:\n{e}"));
        docs.push(serde_json::from_slice(&body).expect("JSON"));
    }
    assert!(!docs.is_empty(), "no OTLP POST received");
    check_otlp_spans(&otlp_spans(&docs), &lines);
    let mut zipkin_posts = 0;
    for (n, (path, body)) in received(&zipkin_rx).into_iter().enumerate() {
        assert_eq!(path, "/api/v2/spans");
        let file = dir.join(format!("zipkin-{n}.json"));
        std::fs::write(&file, &body).expect("write");
        run_validator("validate_zipkin.py", &file).unwrap_or_else(|e| panic!("invalid Zipkin POST:\n{e}"));
        zipkin_posts += 1;
    }
    assert!(zipkin_posts > 0, "no Zipkin POST received");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn perfetto_trace_of_a_traced_target_is_valid() {
    // The published Perfetto protos decode the file with no unknown field; the validator
    // also checks track references, slice balance and flows. The mutex request's wakeup by
    // the holder thread must appear as a flow, and the requests as their own tracks; the
    // convoy's last request has its critical path, down to the first holder's work.
    let dir = tmp("perfetto-e2e");
    let file = dir.join("trace.pftrace");
    let file_arg = file.to_str().expect("utf-8 temp path");
    traced(&["mutex:10", "regions", "convoy:5"], &["--summary-only", "--perfetto", file_arg]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema").join("validate_perfetto.py");
    let python = std::env::var("TPROF_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(&path)
        .arg(&file)
        .args(["--min-flows", "1", "--expect-name", "outer", "--expect-name", "inner", "--expect-name", "on cpu (convoy-a)"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}): run `cargo xtask setup`"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "perfetto trace invalid: {text}");
}
