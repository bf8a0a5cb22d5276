//! A realistic axum service (`file-server`: blocking-pool file reads, a streamed download, a
//! `spawn_blocking` job, routes with path parameters) traced the way a new user would, with
//! either integration: `TprofHttpLayer`, or tower-http's `TraceLayer` spans with `TprofLayer`
//! alone. Tasks are named by route template, a streamed download's task lasts as long as its
//! transfer, incoming traceparents continue, the blocking-pool work is the request's, and
//! the text output of a 1 MiB download stays short. Under that traffic, the tasks' CPU plus
//! what tprof reports as not attributed is the process's CPU as the kernel accounted it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde_json::Value;
use tprof_tests::*;

const REMOTE_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REMOTE_SPAN: &str = "00f067aa0ba902b7";
const BIG: usize = 16 * 1024 * 1024;
const MID: usize = 1024 * 1024;

/// Removes the server's files when the test ends (the server is killed, it cannot).
struct Files(std::path::PathBuf);

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn serve(layer: &str) -> (Proc, String, Files) {
    let dir = std::env::temp_dir().join(format!("rust-service-test-{}-{layer}", std::process::id()));
    let files = Files(dir.clone());
    let dir = dir.to_str().expect("utf-8 temp dir").to_string();
    let (p, addr) = start_service(Path::new(env!("CARGO_BIN_EXE_file-server")), &["--layer", layer, "--dir", &dir], RunAs::ROOT);
    (p, addr, files)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What a client saw of one response.
struct Got {
    status: u16,
    body_len: usize,
    /// CLOCK_MONOTONIC when the client had received `mark` body bytes (if it did).
    mark_ns: Option<u64>,
}

/// One HTTP/1.1 request (`Connection: close`), read to the end. `mark`: note when that many
/// body bytes have arrived. A small receive buffer keeps the transfer paced by the client.
fn get(addr: &str, path: &str, traceparent: Option<&str>, mark: Option<usize>) -> Got {
    let mut s = TcpStream::connect(addr).expect("connect");
    let rcvbuf: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt on a socket we own, with a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&rcvbuf as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let tp = traceparent.map(|t| format!("traceparent: {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{tp}\r\n").expect("send");
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut body_len = 0;
    let mut in_body = false;
    let mut mark_ns = None;
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        if in_body {
            body_len += n;
        } else {
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                body_len = head.len() - end - 4;
                head.truncate(end);
                in_body = true;
            }
        }
        if mark.is_some_and(|m| body_len >= m) && mark_ns.is_none() {
            mark_ns = Some(monotonic_ns());
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    // Chunked framing adds a few bytes per chunk: the length is only compared loosely.
    Got { status, body_len, mark_ns }
}

/// CPU time (ns) the kernel accounted to process `pid` so far: its CPU-time clock
/// (`clock_getcpuclockid`), the sum of `se.sum_exec_runtime` over its live threads plus
/// what its exited threads ran (the kernel keeps that in the process's signal struct).
/// Tokio's blocking threads exit after 10 s idle, so a sum over `/proc/PID/task/*/schedstat`
/// could lose some between two reads; this clock cannot.
fn process_cpu_ns(pid: u32) -> u64 {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: writes the clock id into a variable we own.
    let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    assert_eq!(rc, 0, "no CPU clock for pid {pid}");
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "reading the CPU clock of pid {pid}");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn summaries(out: &[Value]) -> Vec<&Value> {
    out.iter().filter(|v| v["type"] == "summary").collect()
}

/// The traffic both variants get: small files, users, hashes, 20 distinct 404s, one
/// continued trace, and a 16 MiB download. Returns the download's mark time and the
/// threshold it was taken at.
fn traffic(addr: &str) -> (u64, usize) {
    for i in 0..20 {
        assert_eq!(get(addr, "/files/small.txt", None, None).status, 200);
        assert_eq!(get(addr, &format!("/users/{i}"), None, None).status, 200);
        assert_eq!(get(addr, &format!("/missing/file-{i}.txt"), None, None).status, 404);
    }
    assert_eq!(get(addr, "/files/nope.txt", None, None).status, 404);
    for _ in 0..3 {
        assert_eq!(get(addr, "/hash/mid.bin", None, None).status, 200);
    }
    let tp = format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01");
    assert_eq!(get(addr, "/users/7", Some(&tp), None).status, 200);
    // When the client has received `mark` bytes, the server cannot have produced the last
    // chunk: what it produced is at most what the client got, plus its socket's send buffer
    // (at most tcp_wmem's max), the client's receive buffer (locked at 2 x 64 KiB by
    // SO_RCVBUF) and hyper's write buffer (< 1 MiB): the download's task is still open then.
    let wmem: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(4 << 20);
    let in_flight = wmem + 128 * 1024 + (1 << 20);
    assert!(in_flight + (1 << 20) < BIG, "tcp_wmem max {wmem} too large for this check");
    let mark = BIG - in_flight - 64 * 1024;
    let got = get(addr, "/download/big.bin", None, Some(mark));
    assert_eq!(got.status, 200);
    assert!(got.body_len >= BIG, "{} bytes", got.body_len);
    (got.mark_ns.expect("mark reached"), mark)
}

fn check(layer: &str) {
    require_root();
    let (server, addr, _files) = serve(layer);
    let pid = server.pid();
    // The process's CPU from before the attach to after tprof stopped; the traffic is all
    // inside the session, and the server is idle outside it.
    let cpu_before = process_cpu_ns(pid);
    let tprof = attach(&[pid], &["--summary-only"]);
    let (mark_ns, mark) = traffic(&addr);
    tprof.signal(libc::SIGINT);
    let (out, status) = collect(tprof);
    assert!(status.success());
    let cpu_ns = process_cpu_ns(pid) - cpu_before;
    let tasks = summaries(&out);

    // Route templates name the tasks: 20 user ids and 20 distinct 404 URLs make one row each.
    let mut names: Vec<&str> = tasks.iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort();
    names.dedup();
    let want = ["GET /download/{name}", "GET /files/{name}", "GET /hash/{name}", "GET /missing/{id}", "GET /users/{id}"];
    assert_eq!(names, want, "{layer}");
    let named = |n: &str| tasks.iter().filter(|t| t["name"] == n).count();
    assert_eq!(named("GET /users/{id}"), 21, "{layer}");
    assert_eq!(named("GET /missing/{id}"), 20, "{layer}: the fallback's paths, ids folded");

    // The incoming traceparent continues, with either layer.
    let cont: Vec<&&Value> = tasks.iter().filter(|t| t["trace_id"] == REMOTE_TRACE).collect();
    assert_eq!(cont.len(), 1, "{layer}");
    assert_eq!(cont[0]["parent_span_id"], REMOTE_SPAN, "{layer}");
    assert_eq!(cont[0]["name"], "GET /users/{id}", "{layer}");

    // The streamed download's task lasts as long as its transfer (see `traffic`).
    let dl: Vec<&&Value> = tasks.iter().filter(|t| t["name"] == "GET /download/{name}").collect();
    assert_eq!(dl.len(), 1);
    let end_ns = dl[0]["end_ns"].as_u64().expect("the download ended");
    assert!(end_ns > mark_ns, "{layer}: the download's task ended before the client had {mark} bytes: {}", dl[0]);
    // Its chunks were read on the blocking pool, for it.
    let preads = dl[0]["syscalls"].as_array().into_iter().flatten().find(|s| s["name"] == "pread64");
    assert!(preads.is_some_and(|s| s["count"].as_u64() >= Some(BIG as u64 / (16 * 1024))), "{layer}: {}", dl[0]);

    // The spawn_blocking hash job (8 passes over 1 MiB) is the request's: its CPU and its
    // read of the file, on a blocking thread.
    for h in tasks.iter().filter(|t| t["name"] == "GET /hash/{name}") {
        let reads = h["syscalls"].as_array().into_iter().flatten().find(|s| s["name"] == "read");
        assert!(reads.is_some(), "{layer}: {h}");
        assert!(h["threads"].as_array().is_some_and(|t| t.len() >= 2), "{layer}: a worker and a blocking thread: {h}");
    }

    // CPU: what tprof charged to tasks plus what it reports as not attributed is the
    // process's CPU as the kernel accounted it. The not-attributed part is each slice's
    // kernel runtime less the task pieces tprof cut in it, so the two add up slice by slice
    // when every slice is seen and every task piece reaches a summary: what this checks is
    // that none is lost on the way (records, threads that exit, the blocking pool's threads
    // that never carry a task, slices split by task switches) and that no task time comes
    // from elsewhere. 5%: the slices tprof cannot split (those in flight at the attach and
    // at the stop, while the server idles: its runtime's timers and the attach's uprobe
    // installation) and the task pieces' clock (they include interrupt time the kernel
    // leaves out of a thread's runtime).
    let on_cpu: u64 = tasks.iter().filter_map(|t| t["on_cpu_ns"].as_u64()).sum();
    let session = out.iter().find(|v| v["type"] == "session").expect("session line");
    let procs = session["process_cpu"].as_array().expect("process_cpu");
    let me = procs.iter().find(|p| p["pid"] == pid).unwrap_or_else(|| panic!("{layer}: pid {pid} not in {procs:?}"));
    assert_eq!(me["tasks_cpu_ns"].as_u64(), Some(on_cpu), "{layer}: the session line sums the summaries: {me}");
    let free = me["not_attributed"]["cpu_ns"].as_u64().expect("not_attributed.cpu_ns");
    eprintln!("{layer}: tasks {on_cpu} ns + not attributed {free} ns vs the process's {cpu_ns} ns: {me}");
    let sum = on_cpu + free;
    assert!(sum.abs_diff(cpu_ns) * 20 <= cpu_ns, "{layer}: tasks {on_cpu} + not attributed {free} = {sum} ns, the kernel says {cpu_ns} ns: {me}");
    // Axum's accept loop runs outside any task: each connection accepted there once (the
    // other accept4 calls found none and failed with EAGAIN).
    let connections = 20 * 3 + 1 + 3 + 1 + 1;
    let syscalls = me["not_attributed"]["syscalls"].as_array().expect("syscalls");
    let accept = syscalls.iter().find(|s| s["name"] == "accept4").unwrap_or_else(|| panic!("{layer}: no accept4: {me}"));
    let accepted = accept["count"].as_u64().zip(accept["errors"].as_u64()).map(|(n, e)| n - e);
    assert_eq!(accepted, Some(connections), "{layer}: connections accepted outside tasks: {accept}");
    drop(server);
}

#[test]
fn http_layer_tasks_follow_their_work_and_name_routes() {
    check("http");
}

#[test]
fn tracing_spans_with_tprof_layer_alone_follow_their_work_and_name_routes() {
    check("tracing");
}

#[test]
fn text_output_of_a_1_mib_download_is_a_few_lines() {
    require_root();
    let (server, addr, _files) = serve("http");
    let pid = server.pid().to_string();
    let tprof = spawn_tprof(&["attach", "--pid", &pid]);
    let stderr = tprof.stderr.as_ref().expect("stderr");
    loop {
        match stderr.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(l) if l.starts_with("tprof: attached") => break,
            Ok(_) => {}
            Err(e) => panic!("tprof did not attach: {e}"),
        }
    }
    let got = get(&addr, "/download/mid.bin", None, None);
    assert_eq!((got.status, got.body_len >= MID), (200, true));
    tprof.signal(libc::SIGINT);
    let mut tprof = tprof;
    assert!(tprof.wait().success());
    let mut lines = Vec::new();
    while let Ok(l) = tprof.stdout.recv_timeout(std::time::Duration::from_secs(5)) {
        lines.push(l);
    }
    let text = lines.join("\n");
    // 64 chunks of 16 KiB, each an attach, a sum and a detach: ~200 lines before the churn
    // was collapsed. Now: begin, a few runs broken by long records, end, the summary, the
    // footer. "A few dozen" at most.
    assert!(lines.len() <= 36, "{} lines:\n{text}", lines.len());
    assert!(text.contains("task begin \"GET /download/{name}\""), "{text}");
    assert!(text.contains("attaches"), "the churn is summed on a line: {text}");
    drop(server);
}
