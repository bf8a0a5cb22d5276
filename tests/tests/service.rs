//! The bundled example service, two instances (front calls back, passing `traceparent`),
//! traced by one tprof: a request's trace crosses the two processes and both halves are
//! joined by trace-id, with the back's work nested under the front's span.

use std::process::Command;

use tprof_tests::*;

fn serve(extra: &[&str]) -> (Proc, String) {
    start_service(&example_bin(), extra)
}

#[test]
fn one_trace_crosses_two_processes() {
    require_root();
    let (back, back_addr) = serve(&[]);
    let (front, front_addr) = serve(&["--downstream", &back_addr]);
    let tprof = attach(&[front.pid(), back.pid()], &["--summary-only"]);
    let load = Command::new(example_bin())
        .args(["load", "--target", &front_addr, "--rps", "10", "--seconds", "1", "--paths", "/chain"])
        .output()
        .expect("run the load generator");
    assert!(load.status.success(), "load: {}", String::from_utf8_lossy(&load.stderr));
    tprof.signal(libc::SIGINT);
    let (out, status) = collect(tprof);
    assert!(status.success());
    let fronts: Vec<&serde_json::Value> =
        out.iter().filter(|v| v["type"] == "summary" && v["name"] == "/chain" && v["pid"] == front.pid()).collect();
    assert!(fronts.len() >= 5, "about 10 /chain requests in 1 s at 10 rps: {}", fronts.len());
    let mut charged = 0;
    for f in fronts {
        let backs: Vec<&serde_json::Value> = out
            .iter()
            .filter(|v| v["type"] == "summary" && v["pid"] == back.pid() && v["trace_id"] == f["trace_id"])
            .collect();
        assert_eq!(backs.len(), 1, "the back half of trace {} was traced: {f}", f["trace_id"]);
        let b = backs[0];
        assert_eq!(b["name"], "/sleep");
        assert_eq!(b["parent_span_id"], f["span_id"], "the back's task is a child of the front's span");
        // The back sleeps 15 ms; the front's span contains the back's (the back may start
        // sleeping before the front reaches its recv, so the front's block can be shorter).
        assert!(ms(b, "blocked_ns") >= 14.9, "{b}");
        assert!(ms(f, "wall_ns") >= ms(b, "wall_ns"), "the front's span contains the back's: {f} / {b}");
        // The front's wait ends when the back's thread answers: charged to the back's task
        // when the loopback receive runs in the back's send (usual); if the kernel deferred
        // it to ksoftirqd, the waker is the kernel, so this is counted, not required each time.
        let waited: Vec<&serde_json::Value> = f["waited_on"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        if waited.iter().any(|w| w["span_id"] == b["span_id"]) {
            charged += 1;
        }
    }
    assert!(charged >= 1, "no front wait was charged to its back task");
    drop(front);
    drop(back);
}
