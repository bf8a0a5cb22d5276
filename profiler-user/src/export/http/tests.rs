//! The HTTP client against tiny loopback servers whose answers are scripted.

use super::*;
use std::io::{BufRead, Read};
use std::net::TcpStream;
use std::net::TcpListener;

/// A request as the server saw it.
#[derive(Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

fn read_request(s: &mut TcpStream) -> Seen {
    let mut r = io::BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).expect("read request line") == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let len = content_length(head.as_bytes()).expect("request has Content-Length");
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("read body");
    Seen { head, body }
}

/// Serves one connection per status in `statuses`, then returns what it was sent.
fn serve(statuses: Vec<u16>) -> (u16, std::thread::JoinHandle<Vec<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = l.local_addr().expect("addr").port();
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for code in statuses {
            let (mut s, _) = l.accept().expect("accept");
            seen.push(read_request(&mut s));
            let body = format!("status {code}");
            let resp = format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            s.write_all(resp.as_bytes()).expect("respond");
        }
        seen
    });
    (port, h)
}

fn fast() -> Config {
    Config {
        queue: 4,
        attempts: 5,
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
        request: RequestOptions::default(),
    }
}

fn exporter(port: u16, cfg: Config) -> Exporter {
    let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}"), "/v1/traces").expect("url");
    Exporter::with_config(ep, "test", cfg).expect("exporter")
}

#[test]
fn urls() {
    let e = Endpoint::parse("http://collector:4318", "/v1/traces").unwrap();
    assert_eq!(e, Endpoint { host: "collector".into(), port: 4318, path: "/v1/traces".into(), tls: false });
    let e = Endpoint::parse("http://127.0.0.1:9411/", "/api/v2/spans").unwrap();
    assert_eq!(e.path, "/api/v2/spans");
    let e = Endpoint::parse("HTTP://[::1]:8080/custom/path", "/v1/traces").unwrap();
    assert_eq!((e.host.as_str(), e.port, e.path.as_str()), ("[::1]", 8080, "/custom/path"));
    let e = Endpoint::parse("localhost", "/x").unwrap();
    assert_eq!((e.port, e.path.as_str()), (80, "/x"));
    let e = Endpoint::parse("https://otel.example", "/v1/traces").unwrap();
    assert_eq!((e.port, e.tls, e.url().as_str()), (443, true, "https://otel.example:443/v1/traces"));
    assert!(Endpoint::parse("http://:4318", "/").is_err());
    assert!(Endpoint::parse("http://h:99999", "/").is_err());
    assert!(Endpoint::parse("grpc://h:4317", "/").is_err());
}

#[test]
fn success_posts_json_with_length_and_close() {
    let (port, server) = serve(vec![200]);
    let ex = exporter(port, fast());
    ex.send(br#"{"resourceSpans":[]}"#.to_vec());
    let stats = ex.close(Duration::from_secs(5));
    assert_eq!(stats, ExportStats { sent: 1, ..Default::default() });
    let seen = server.join().expect("server");
    let head = seen[0].head.to_ascii_lowercase();
    assert!(head.starts_with("post /v1/traces http/1.1\r\n"), "{head}");
    for h in ["content-type: application/json", "connection: close", &format!("host: 127.0.0.1:{port}")] {
        assert!(head.contains(h), "{h} missing in {head}");
    }
    assert_eq!(seen[0].body, br#"{"resourceSpans":[]}"#);
}

#[test]
fn unavailable_then_ok_is_retried() {
    let (port, server) = serve(vec![503, 429, 200]);
    let ex = exporter(port, fast());
    ex.send(b"[]".to_vec());
    let stats = ex.close(Duration::from_secs(5));
    assert_eq!(stats, ExportStats { sent: 1, retries: 2, ..Default::default() });
    let seen = server.join().expect("server");
    assert!(seen.iter().all(|s| s.body == b"[]"), "every retry resends the batch");
}

#[test]
fn bad_request_is_not_retried() {
    let (port, server) = serve(vec![400, 200]);
    let ex = exporter(port, fast());
    ex.send(b"{}".to_vec());
    ex.send(b"{}".to_vec());
    let stats = ex.close(Duration::from_secs(5));
    assert_eq!(stats, ExportStats { sent: 1, failed: 1, ..Default::default() });
    assert_eq!(server.join().expect("server").len(), 2);
}

#[test]
fn unreachable_endpoint_fails_quickly_without_blocking() {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let ex = exporter(port, fast());
    // send() only queues (a blocking send would hang this test, not slow it down).
    ex.send(b"{}".to_vec());
    let stats = ex.close(Duration::from_secs(5));
    assert_eq!(stats, ExportStats { failed: 1, retries: 4, ..Default::default() });
}

#[test]
fn full_queue_drops_without_blocking_and_close_honours_its_timeout() {
    // Accepts connections (the kernel's backlog does) but never answers.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let cfg = Config { queue: 2, timeout: Duration::from_secs(2), ..fast() };
    let ex = exporter(port, cfg);
    // The server never answers: a send that waited for the queue would hang here.
    for _ in 0..20 {
        ex.send(b"{}".to_vec());
    }
    let s = ex.stats();
    // One batch in flight at most, two queued: the rest dropped.
    assert!(s.dropped_queue_full >= 17, "{s:?}");
    // close() gives up on what is still queued after its timeout and counts it.
    let s = ex.close(Duration::from_millis(200));
    assert_eq!(s.sent, 0);
    assert_eq!(s.failed + s.dropped_queue_full, 20, "{s:?}");
    drop(l);
}

#[test]
fn delivery_writes_one_line_per_batch() {
    let dir = std::env::temp_dir().join(format!("tprof-delivery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("out.ndjson");
    let mut d = Delivery::new("test", Some(&path), None, "/", Config::default()).expect("delivery");
    d.ship(b"[1]".to_vec()).expect("ship");
    d.ship(b"[2]".to_vec()).expect("ship");
    assert_eq!(d.close(Duration::from_secs(1)), None);
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "[1]\n[2]\n");
    assert!(Delivery::new("test", None, None, "/", Config::default()).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn headers_and_gzip_arrive() {
    let (port, server) = serve(vec![200]);
    let mut cfg = fast();
    cfg.request = RequestOptions { content_type: "application/x-protobuf", headers: vec![("authorization".into(), "Bearer t".into())], gzip: true };
    let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}"), "/v1/traces").expect("url");
    let mut d = Delivery { file: None, http: Some(Exporter::with_config(ep, "test", cfg).expect("exporter")) };
    d.ship_http(b"hello hello hello".to_vec());
    assert_eq!(d.close(Duration::from_secs(5)).map(|s| s.sent), Some(1));
    let seen = server.join().expect("server");
    let head = seen[0].head.to_ascii_lowercase();
    for h in ["content-type: application/x-protobuf", "content-encoding: gzip", "authorization: bearer t"] {
        assert!(head.contains(h), "{h} missing in {head}");
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(&seen[0].body[..]).read_to_string(&mut text).expect("gunzip");
    assert_eq!(text, "hello hello hello");
}

/// A peer that answers one byte every 300 ms: the attempt ends at its deadline (1 s), not
/// when the peer is done.
#[test]
fn a_trickling_peer_is_cut_at_the_attempt_deadline() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = l.local_addr().expect("addr").port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let _ = read_request(&mut s);
        for b in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".iter().cycle().take(200) {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}"), "/").expect("url");
    let r = ep.post(b"x", &RequestOptions::default(), None, Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = r.expect_err("the deadline passes before the head is complete");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    let _ = h.join();
}
