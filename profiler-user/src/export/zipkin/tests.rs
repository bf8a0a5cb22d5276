//! Zipkin export of the OTLP tests' ledgers, checked against the published v2 model
//! (`tests/schema/validate_zipkin.py`) and by hand.

use super::*;
use crate::clock::WallClock;
use crate::model::report::SessionReport;
use crate::sink::Sink;
use crate::export::otlp::region_span_id;
use crate::export::otlp::tests::{sample_tasks, tmp, validate, MS};
use std::collections::HashMap;

#[test]
fn export_is_valid_zipkin_v2_with_the_same_spans_as_otlp() {
    let dir = tmp("zipkin");
    let path = dir.join("zipkin.ndjson");
    let base = crate::clock::monotonic_ns() - 100 * MS;
    let mut sink = ZipkinSink::new(Some(&path), None, WallClock::now()).expect("sink");
    for t in &sample_tasks(base) {
        sink.summary(t).expect("summary");
    }
    sink.finish(&SessionReport::default()).expect("finish");
    let report = validate("validate_zipkin.py", &[&path]);
    assert!(report.contains("1 ListOfSpans, 9 spans"), "{report}");

    let text = std::fs::read_to_string(&path).expect("read");
    let list: Vec<Value> = serde_json::from_str(text.trim()).expect("one array per line");
    let s: HashMap<&str, &Value> = list.iter().map(|v| (v["name"].as_str().expect("name"), v)).collect();
    let task = s["GET /users"];
    assert_eq!(task["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(task["id"], "00f067aa0ba902b7");
    assert_eq!(task["parentId"], "5555666677778888");
    assert_eq!(task["duration"], 30_000, "microseconds");
    assert!(task.get("kind").is_none(), "local span");
    assert_eq!(task["tags"]["tprof.blocked_ns"], (20 * MS).to_string());
    assert_eq!(task["tags"]["tprof.threads"], "11,12");
    let service = task["localEndpoint"]["serviceName"].as_str().expect("service");
    assert!(!service.is_empty() && service == service.to_lowercase(), "{service}");
    let notes: Vec<&str> = task["annotations"].as_array().expect("annotations").iter().filter_map(|a| a["value"].as_str()).collect();
    assert!(notes.iter().any(|n| n.starts_with("blocked 15.000 ms in futex (tid 11), woken by pid 1 tid 2 (pool)")), "{notes:?}");
    assert_eq!(notes.iter().filter(|n| **n == "rows=12").count(), 1, "equal annotations collapse: {notes:?}");
    assert_eq!(s["db"]["id"], format!("{:016x}", region_span_id(0x00f0_67aa_0ba9_02b7, 0)));
    assert_eq!(s["query"]["parentId"], s["db"]["id"]);
    assert_eq!(s["render"]["parentId"], "00f067aa0ba902b7");
    assert!(s["task 0000000000003333"].get("parentId").is_none());
    assert_eq!(s["task 0000000000003333"]["localEndpoint"]["serviceName"], "pid-999999999");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn endpoint_gets_the_v2_spans_path() {
    use std::io::{BufRead, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        let mut r = std::io::BufReader::new(s);
        let (mut first, mut line, mut len) = (String::new(), String::new(), 0);
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
        std::io::Read::read_exact(&mut r, &mut body).expect("body");
        r.get_mut().write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n").expect("respond");
        first
    });
    let mut sink = ZipkinSink::new(None, Some(&format!("http://127.0.0.1:{port}/")), WallClock::now()).expect("sink");
    sink.summary(&sample_tasks(crate::clock::monotonic_ns() - 100 * MS)[0]).expect("summary");
    sink.finish(&SessionReport::default()).expect("finish");
    assert_eq!(server.join().expect("server"), "POST /api/v2/spans HTTP/1.1\r\n");
    assert_eq!(sink.stats().map(|s| s.sent), None, "closed at finish");
}
