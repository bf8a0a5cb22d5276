//! OpenTelemetry end to end: a service on the real OpenTelemetry SDK and tprof export to the
//! same OTLP receiver, and tprof's spans land inside the service's own trace, under its spans,
//! with no span id twice; the Collector's transport (protobuf and JSON bodies decoded with
//! the official protos, gzip, https with a test CA, headers); recordings that report
//! elsewhere and later (after the target exited, in another time namespace, under another
//! host name) with the recording machine's wall times and names.
//!
//! The receiver and the decoder are `tests/schema/otlp_receiver.py` (python, with the
//! opentelemetry-proto package `cargo xtask setup` installs).

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use tprof_tests::*;

fn schema(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema").join(name)
}

fn otel_service_bin() -> PathBuf {
    let p = tprof_bin().with_file_name("otel-service");
    assert!(p.exists(), "{} not found: build the tests' binaries first", p.display());
    p
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tprof-otel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The OTLP receiver: requests go to `out`, one JSON line each. Stops when dropped.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> Receiver {
        let out = dir.join("requests.jsonl");
        let mut cmd = Command::new("python3");
        cmd.arg(schema("otlp_receiver.py")).arg("serve").arg(&out);
        if let Some((cert, key)) = tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("start the OTLP receiver");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("receiver banner");
        let port = line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("receiver said {line:?}"));
        Receiver { child, port, out }
    }

    /// Every request received, decoded with the official protos.
    fn decoded(&self) -> Vec<Value> {
        if !self.out.exists() {
            return Vec::new();
        }
        let d = Command::new("python3").arg(schema("otlp_receiver.py")).arg("decode").arg(&self.out).output().expect("run the decoder");
        assert!(d.status.success(), "the official protos do not decode a body: {}", String::from_utf8_lossy(&d.stderr));
        String::from_utf8_lossy(&d.stdout).lines().map(|l| serde_json::from_str(l).expect("decoder JSON")).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests sent by tprof (its User-Agent) and by the others.
fn split_by_sender(reqs: &[Value]) -> (Vec<&Value>, Vec<&Value>) {
    reqs.iter().partition(|r| r["headers"]["user-agent"].as_str().is_some_and(|u| u.starts_with("tprof/")))
}

fn spans<'a>(reqs: &[&'a Value]) -> Vec<&'a Value> {
    reqs.iter().flat_map(|r| r["spans"].as_array().into_iter().flatten()).collect()
}

/// Clears the OpenTelemetry variables this file sets (tests run one at a time).
fn clear_otel_env() {
    for k in ["OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS", "SSL_CERT_FILE"] {
        std::env::remove_var(k);
    }
}

#[test]
fn tprof_spans_sit_inside_the_services_own_trace() {
    require_root();
    clear_otel_env();
    let dir = temp_dir("sdk");
    let rx = Receiver::start(&dir, None);
    // The service and tprof read the same standard variables: one receiver, protobuf.
    std::env::set_var("OTEL_SERVICE_NAME", "checkout");
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", rx.port));
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    std::env::set_var("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme");
    let mut svc = start_program(&otel_service_bin(), &["3"]);
    let pid = svc.pid();
    let tprof = attach(&[pid], &["--otlp-header", "authorization=Bearer t0k"]);
    svc.send_line("go");
    svc.expect_line("done", &mut Vec::new());
    drop(svc.stdin.take());
    assert!(svc.wait().success());
    let (_, status) = collect(tprof);
    assert!(status.success());
    clear_otel_env();

    let reqs = rx.decoded();
    let (mine, theirs) = split_by_sender(&reqs);
    assert!(!mine.is_empty() && !theirs.is_empty(), "requests: {reqs:#?}");
    for r in &mine {
        assert_eq!(r["encoding"], "protobuf", "{r}");
        assert_eq!(r["path"], "/v1/traces");
        assert_eq!(r["headers"]["authorization"], "Bearer t0k", "--otlp-header arrives");
        assert_eq!(r["headers"]["x-tenant"], "acme", "OTEL_EXPORTER_OTLP_HEADERS arrives");
    }
    let service = spans(&theirs);
    let tprof = spans(&mine);
    let service_ids: HashSet<&str> = service.iter().filter_map(|s| s["span_id"].as_str()).collect();
    let service_traces: HashSet<&str> = service.iter().filter_map(|s| s["trace_id"].as_str()).collect();
    let by_name = |n: &str| service.iter().filter(|s| s["name"] == n).count();
    assert_eq!((by_name("request"), by_name("job")), (3, 1), "the service's spans: {service:#?}");

    // No span id arrives twice, across both senders.
    let mut seen = HashSet::new();
    for s in service.iter().chain(&tprof) {
        let key = (s["trace_id"].as_str().unwrap_or(""), s["span_id"].as_str().unwrap_or(""));
        assert!(seen.insert(key), "span id {key:?} arrived twice");
    }
    // Every tprof span is in one of the service's traces; its kernel spans sit under the
    // service's request and job spans, its regions under those.
    let kernel: Vec<&&Value> = tprof.iter().filter(|s| s["name"] == "tprof: kernel").collect();
    let kernel_ids: HashSet<&str> = kernel.iter().filter_map(|s| s["span_id"].as_str()).collect();
    assert_eq!(kernel.len(), 4, "one kernel span per request and job: {tprof:#?}");
    for s in &tprof {
        assert!(service_traces.contains(s["trace_id"].as_str().unwrap_or("")), "tprof span outside the service's traces: {s}");
        let parent = s["parent_span_id"].as_str().unwrap_or("");
        if s["name"] == "tprof: kernel" {
            assert!(service_ids.contains(parent), "kernel span not under a service span: {s}");
            assert_eq!(s["kind"], 1, "INTERNAL");
        } else {
            assert!(s["attributes"]["tprof.region.depth"].is_i64(), "only kernel and region spans: {s}");
            assert!(kernel_ids.contains(parent), "region not under its kernel span: {s}");
        }
    }
    let tasks: HashSet<&str> = kernel.iter().filter_map(|s| s["attributes"]["tprof.task"].as_str()).collect();
    assert_eq!(tasks, HashSet::from(["request", "job"]));
    assert!(kernel.iter().any(|s| s["events"].as_array().is_some_and(|e| e.iter().any(|n| n == "blocked"))), "blocking intervals as events");
    // The resource a backend groups by.
    let res = &tprof[0]["resource"];
    assert_eq!(res["service.name"], "checkout", "OTEL_SERVICE_NAME from the target's environment: {res}");
    assert_eq!(res["process.executable.name"], "otel-service");
    assert_eq!(res["process.pid"], pid);
    assert!(res["process.command_line"].as_str().is_some_and(|c| c.contains("otel-service 3")), "{res}");
    assert!(res["service.instance.id"].as_str().is_some_and(|i| i.len() == 36), "{res}");
    assert!(res["host.name"].as_str().is_some_and(|h| !h.is_empty()), "{res}");
    assert_eq!(res["telemetry.distro.name"], "tprof");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA and a server certificate for localhost / 127.0.0.1, made with openssl.
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=tprof test CA"]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("write ext");
    run(&[
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2",
        "-extfile", "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

#[test]
fn json_and_gzip_over_https_with_a_test_ca() {
    require_root();
    clear_otel_env();
    let dir = temp_dir("tls");
    let (ca, cert, key) = test_ca(&dir);
    let rx = Receiver::start(&dir, Some((&cert, &key)));
    // The system's roots, as rustls-native-certs reads them, are the test CA here.
    std::env::set_var("SSL_CERT_FILE", &ca);
    let mut target = start_target(&["sleep:5", "regions"]);
    let endpoint = format!("https://localhost:{}", rx.port);
    let tprof = attach(
        &[target.pid()],
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", "http/json", "--otlp-compression", "gzip", "--otlp-header", "api-key=k1"],
    );
    target.send_line("go");
    target.expect_line("done", &mut Vec::new());
    assert!(target.wait().success());
    let (_, status) = collect(tprof);
    assert!(status.success());
    clear_otel_env();
    let reqs = rx.decoded();
    assert!(!reqs.is_empty(), "nothing arrived over https");
    for r in &reqs {
        assert_eq!((r["encoding"].as_str(), r["headers"]["content-encoding"].as_str()), (Some("json"), Some("gzip")), "{r}");
        assert_eq!(r["headers"]["api-key"], "k1");
    }
    let all = spans(&reqs.iter().collect::<Vec<_>>());
    let names: HashSet<&str> = all.iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(names.contains("sleep") && names.contains("regions"), "{names:?}");
    // Without the service's OpenTelemetry ids, each task is its own span (the auto mode).
    assert!(!names.contains("tprof: kernel"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The OTLP/JSON file of `tprof report FILE` with `extra` run through `wrap` (e.g.
/// `unshare`): its spans.
fn report_spans(wrap: &[&str], file: &Path, out: &Path, extra: &[&str]) -> (Vec<Value>, std::process::Output) {
    let tprof = tprof_bin();
    let mut argv: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
    argv.push(tprof.display().to_string());
    argv.extend(["report".into(), file.display().to_string(), "--format".into(), "json".into(), "--otlp-file".into(), out.display().to_string()]);
    argv.extend(extra.iter().map(|s| s.to_string()));
    let o = Command::new(&argv[0]).args(&argv[1..]).output().expect("run tprof report");
    let mut spans = Vec::new();
    for line in std::fs::read_to_string(out).unwrap_or_default().lines() {
        let req: Value = serde_json::from_str(line).expect("OTLP/JSON line");
        for rs in req["resourceSpans"].as_array().into_iter().flatten() {
            let res: HashMap<String, Value> = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|kv| (kv["key"].as_str().unwrap_or("").to_string(), kv["value"].clone()))
                .collect();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let mut s = s.clone();
                    s["resource"] = serde_json::to_value(&res).expect("resource");
                    spans.push(s);
                }
            }
        }
    }
    (spans, o)
}

fn unix_ns_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[test]
fn a_recording_reports_elsewhere_and_later_with_its_own_clock_and_names() {
    require_root();
    clear_otel_env();
    let dir = temp_dir("travel");
    let file = dir.join("session.tprof");
    std::env::set_var("OTEL_SERVICE_NAME", "billing");
    let mut target = start_target(&["sleep:5", "regions"]);
    std::env::remove_var("OTEL_SERVICE_NAME");
    let pid = target.pid();
    let before = unix_ns_now();
    let mut rec = spawn_tprof(&["record", "--pid", &pid.to_string(), "-o", file.to_str().expect("utf-8")]);
    let stderr = rec.stderr.take().expect("stderr");
    loop {
        match stderr.recv_timeout(PATIENCE) {
            Ok(l) if l.starts_with("tprof: attached") => break,
            Ok(_) => {}
            Err(_) => panic!("tprof record did not attach"),
        }
    }
    target.send_line("go");
    target.expect_line("done", &mut Vec::new());
    assert!(target.wait().success());
    assert!(rec.wait().success());
    let after = unix_ns_now();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_string();

    // The target is gone: names come from the recording.
    let pftrace = dir.join("here.pftrace");
    let (here, o) = report_spans(&[], &file, &dir.join("here.json"), &["--perfetto", pftrace.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The Perfetto tracks are named from the recording too (the process is gone).
    let v = Command::new("python3").arg(schema("validate_perfetto.py")).arg(&pftrace).args(["--expect-track", "tprof-target"]).output().expect("validate");
    assert!(v.status.success(), "process and thread tracks named from the recording: {}", String::from_utf8_lossy(&v.stdout));
    let sleep = here.iter().find(|s| s["name"] == "sleep").unwrap_or_else(|| panic!("no sleep span: {here:#?}"));
    let res = &sleep["resource"];
    assert_eq!(res["service.name"]["stringValue"], "billing", "{res}");
    assert_eq!(res["process.executable.name"]["stringValue"], "tprof-target");
    assert_eq!(res["host.name"]["stringValue"], host.as_str());
    let start: u64 = sleep["startTimeUnixNano"].as_str().and_then(|t| t.parse().ok()).expect("start time");
    assert!((before..=after).contains(&start), "span start {start} outside the recording's wall time {before}..{after}");

    // Another time namespace (CLOCK_MONOTONIC a day ahead) and another host name: the same
    // spans, to the nanosecond, and the recording machine's host.
    let (there, o) = report_spans(
        &["unshare", "--fork", "--time", "--monotonic", "86400", "--boottime", "86400", "--uts", "sh", "-c", "hostname elsewhere && exec \"$0\" \"$@\""],
        &file,
        &dir.join("there.json"),
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(there, here, "a report elsewhere and later gives the same spans");

    // Cut short: said, with a non-zero exit, unless --allow-truncated.
    let bytes = std::fs::read(&file).expect("read recording");
    let cut = dir.join("cut.tprof");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let (_, o) = report_spans(&[], &cut, &dir.join("cut.json"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("is incomplete") && err.contains("offset"), "{err}");
    let (_, o) = report_spans(&[], &cut, &dir.join("cut2.json"), &["--allow-truncated"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A damaged byte: its frame is named by its offset.
    let mut bad = bytes.clone();
    let at = bytes.len() / 2;
    bad[at] ^= 0x5a;
    let damaged = dir.join("damaged.tprof");
    std::fs::write(&damaged, &bad).expect("write");
    let (_, o) = report_spans(&[], &damaged, &dir.join("damaged.json"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("frame at offset"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits for a line of tprof's stderr starting with `prefix`.
fn await_stderr(t: &Proc, prefix: &str) {
    let rx = t.stderr.as_ref().expect("stderr");
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(l) if l.starts_with(prefix) => return,
            Ok(l) => seen.push(l),
            Err(_) => panic!("tprof never said {prefix:?}: {seen:#?}"),
        }
    }
}

#[test]
fn another_users_process_is_named_by_its_otel_service_name_through_the_helper() {
    // A process that joins the session after tprof dropped its privileges, running as
    // another user: tprof cannot read its environment, the helper reads the one variable.
    require_root();
    clear_otel_env();
    let dir = temp_dir("environ");
    let bin = dir.join("tprof-target");
    std::fs::copy(target_bin(), &bin).expect("copy the target");
    let out = dir.join("spans.json");
    let tprof = spawn_tprof(&["attach", "--format", "json", "--binary", bin.to_str().expect("utf-8"), "--duration", "20s", "--otlp-file", out.to_str().expect("utf-8")]);
    await_stderr(&tprof, "tprof: attached");
    std::env::set_var("OTEL_SERVICE_NAME", "payments");
    let setpriv = PathBuf::from("/usr/bin/setpriv");
    let mut target = start_program(&setpriv, &["--reuid", "54321", "--regid", "54321", "--clear-groups", bin.to_str().expect("utf-8"), "sleep:5"]);
    clear_otel_env();
    await_stderr(&tprof, &format!("tprof: tracing pid {}", target.pid()));
    target.send_line("go");
    target.expect_line("done", &mut Vec::new());
    assert!(target.wait().success());
    tprof.signal(libc::SIGINT);
    let (_, status) = collect(tprof);
    assert!(status.success());
    let text = std::fs::read_to_string(&out).expect("the OTLP file");
    let req: Value = serde_json::from_str(text.lines().next().expect("a batch")).expect("OTLP/JSON");
    let attrs = &req["resourceSpans"][0]["resource"]["attributes"];
    let get = |k: &str| attrs.as_array().into_iter().flatten().find(|a| a["key"] == k).map(|a| a["value"]["stringValue"].clone());
    assert_eq!(get("service.name"), Some(Value::from("payments")), "{attrs}");
    assert_eq!(get("process.executable.name"), Some(Value::from("tprof-target")), "{attrs}");
    let _ = std::fs::remove_dir_all(&dir);
}
