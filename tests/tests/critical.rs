//! Critical paths: a request's chain of work and waits across the tasks that woke it.
//!
//! The workload (`convoy:10`, as `nobody`): three threads take one mutex in turn, each in
//! its own task and each holding it 10 ms; c waits for b, which waits for a. The truth is the
//! order the target forced, and the wakers the kernel saw.

use serde_json::Value;
use tprof_tests::*;

fn ms_of(v: &Value, k: &str) -> f64 {
    v[k].as_u64().unwrap_or(0) as f64 / 1e6
}

#[test]
fn the_critical_path_of_a_lock_convoy_names_the_holders_in_order() {
    require_root();
    let (out, lines) = trace_requests(&["convoy:10"], &[], RunAs::NOBODY);
    let span = |name: &str| fact(&lines, &format!("{name} task"), "span");
    let tid = |name: &str| fact(&lines, &format!("{name} task"), "tid").parse::<u64>().expect("tid");
    let (a, b, c) = (span("convoy-a"), span("convoy-b"), span("convoy-c"));
    let s = summary(&out, "convoy-c");
    let path = s["critical_path"].as_array().expect("critical_path");
    let show = || path.iter().map(|p| format!("{} {} {} {:.3}", p["depth"], p["name"], p["kind"], ms_of(p, "dur_ns"))).collect::<Vec<_>>().join("\n");

    // The holders, deepest first: a held the lock first (depth 2, explaining b's wait),
    // then b (depth 1, explaining c's), then c itself.
    let mut order: Vec<(&str, u64)> = Vec::new();
    for p in path.iter().filter(|p| p["kind"] == "on_cpu") {
        let who = p["span_id"].as_str().unwrap_or("");
        if order.last().map(|o| o.0) != Some(who) {
            order.push((who, p["depth"].as_u64().unwrap_or(99)));
        }
    }
    assert_eq!(order, vec![(a.as_str(), 2), (b.as_str(), 1), (c.as_str(), 0)], "holders on the path:\n{}", show());

    // Each block is ended by the next holder's thread, and the steps that explain it lie
    // inside it.
    let blocked: Vec<&Value> = path.iter().filter(|p| p["kind"] == "blocked").collect();
    let c_block = blocked.iter().find(|p| p["depth"] == 0).expect("c blocked on the path");
    assert_eq!(c_block["syscall"], "futex", "{}", show());
    assert_eq!(c_block["waker"]["tid"].as_u64(), Some(tid("convoy-b")), "{}", show());
    let b_block = blocked.iter().find(|p| p["depth"] == 1).expect("b blocked on the path");
    assert_eq!(b_block["span_id"], b.as_str());
    assert_eq!(b_block["waker"]["tid"].as_u64(), Some(tid("convoy-a")), "{}", show());
    let window = |p: &Value| {
        let start = p["start_ns"].as_u64().unwrap_or(0);
        (start, start + p["dur_ns"].as_u64().unwrap_or(0))
    };
    let (c0, c1) = window(c_block);
    for p in path.iter().filter(|p| p["depth"].as_u64() >= Some(1)) {
        let (s0, s1) = window(p);
        assert!(s0 >= c0 && s1 <= c1, "a step of depth {} outside c's block:\n{}", p["depth"], show());
    }
    // c's block lasts through all of b's hold (10 ms of spinning by the wall clock).
    assert!(ms_of(c_block, "dur_ns") >= 9.9, "{}", show());

    // The request's own steps tile its wall time: gaps under 20 us (summed intervals) are
    // merged into their neighbours, so at most that much per step is missing.
    let own: Vec<&Value> = path.iter().filter(|p| p["depth"] == 0).collect();
    let sum: f64 = own.iter().map(|p| ms_of(p, "dur_ns")).sum();
    let wall = ms(s, "wall_ns");
    assert!(sum <= wall + 1e-6 && sum >= wall - 0.02 * own.len() as f64, "steps {sum} ms of wall {wall} ms:\n{}", show());
}

#[test]
fn a_request_nobody_woke_has_its_own_steps_only() {
    require_root();
    // sleep:20: a timer wakes it (the kernel): no other task on the path.
    let (out, _) = trace_requests(&["sleep:20"], &[], RunAs::NOBODY);
    let s = summary(&out, "sleep");
    let path = s["critical_path"].as_array().expect("critical_path");
    assert!(path.iter().all(|p| p["depth"] == 0), "{s}");
    let block = path.iter().find(|p| p["kind"] == "blocked").expect("the sleep is on the path");
    assert_eq!(block["waker"]["kind"], "kernel", "{s}");
    assert!(ms_of(block, "dur_ns") >= 19.9, "{s}");
}
