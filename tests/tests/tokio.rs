//! The usdt-probes integrations on a real tokio multi-threaded runtime, traced by tprof:
//! requests migrate between the 2 workers, and each is charged its own work only.
//!
//! The target (`tokio-target`) runs 20 concurrent requests, each: a first poll, a 5 ms
//! `tokio::time::sleep`, 2 ms of thread CPU time, a `yield_now`, the end. It reports for
//! each its ids, the worker tid of each of its polls, the CPU time it burned (`cpu_us`) and
//! the wall time of all its future's polls, measured around them (`busy_us`). It runs as a
//! non-root user (uid 1000, or `nobody`).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use tprof_tests::*;

const N: usize = 20;

/// One request as the target reported it.
#[derive(Debug)]
struct Req {
    line: String,
    span: String,
    trace: String,
    /// The caller's span (the `traceparent` given), "0000000000000000" for none.
    parent: String,
    tids: Vec<u64>,
    busy_ms: f64,
    cpu_ms: f64,
}

fn word<'a>(line: &'a str, key: &str) -> &'a str {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it.next().unwrap_or_else(|| panic!("no value after {key:?} in {line:?}"));
        }
    }
    panic!("no {key:?} in {line:?}")
}

fn parse(line: &str) -> Req {
    let us = |k: &str| word(line, k).parse::<f64>().unwrap_or_else(|e| panic!("{k} in {line:?}: {e}")) / 1e3;
    Req {
        line: line.to_string(),
        span: word(line, "span").to_string(),
        trace: word(line, "trace").to_string(),
        parent: word(line, "parent").to_string(),
        tids: word(line, "tids").split(',').map(|t| t.parse().expect("tid")).collect(),
        busy_ms: us("busy_us"),
        cpu_ms: us("cpu_us"),
    }
}

/// Runs `tokio-target MODE N` as `who` under `tprof attach` and returns tprof's NDJSON and the
/// target's per-request lines starting with `prefix`.
fn run_once(mode: &str, prefix: &str, who: RunAs) -> (Vec<Value>, Vec<Req>) {
    let n = N.to_string();
    let mut target = start_program_as(Path::new(env!("CARGO_BIN_EXE_tokio-target")), &[mode, &n], who);
    let tprof = attach(&[target.pid()], &[]);
    target.send_line("go");
    let mut lines = Vec::new();
    target.expect_line("done", &mut lines);
    assert!(target.wait().success(), "target failed; it printed {lines:#?}");
    let (out, status) = collect(tprof);
    assert!(status.success(), "tprof failed: {status}");
    let sess = session(&out);
    eprintln!("session: {sess}");
    assert_eq!(sess["kernel_drops_total"], 0, "nothing may be lost at this rate: {sess}");
    let reqs: Vec<Req> = lines.iter().filter(|l| l.starts_with(prefix)).map(|l| parse(l)).collect();
    assert_eq!(reqs.len(), N, "one line per request: {lines:#?}");
    (out, reqs)
}

/// [`run_once`], on a session in which tprof saw every scheduler event of the target.
///
/// When the kernel does not run tprof's scheduler program for a switch-in (tprof counts
/// these in `missed_switch_ins`), tprof ends that off-CPU interval at the thread's next sign
/// of life and may charge it to whichever task is current then: the ledger of up to two
/// requests is then wrong through no fault of the integration under test, and no bound here
/// can hold. That is a profiler-side miss, seen in about 1 session in 15 of this workload on
/// the 2-CPU test machine; such a session is reported on stderr and the scenario runs again.
/// Four sessions in a row with misses fail the test.
fn trace(mode: &str, prefix: &str, who: RunAs) -> (Vec<Value>, Vec<Req>) {
    require_root();
    for attempt in 1..=4 {
        let (out, reqs) = run_once(mode, prefix, who);
        let missed = session(&out)["missed_switch_ins"].as_u64().expect("missed_switch_ins");
        if missed == 0 {
            return (out, reqs);
        }
        eprintln!("attempt {attempt}: tprof missed {missed} switch-ins of the target's threads; running again");
    }
    panic!("tprof missed switch-ins in 4 sessions in a row: attribution cannot be checked");
}

fn summary_of<'a>(out: &'a [Value], span: &str) -> &'a Value {
    let found: Vec<&Value> = out.iter().filter(|v| v["type"] == "summary" && v["span_id"] == span).collect();
    assert_eq!(found.len(), 1, "one summary for span {span}: {found:#?}");
    found[0]
}

fn events<'a>(out: &'a [Value], kind: &str, span: &str) -> Vec<&'a Value> {
    out.iter().filter(|v| v["type"] == kind && v["span_id"] == span).collect()
}

/// The checks both variants share: ids, the ledger, migration.
fn check_requests(out: &[Value], reqs: &[Req], name: impl Fn(usize) -> String) {
    let workers: BTreeSet<u64> = reqs.iter().flat_map(|r| r.tids.iter().copied()).collect();
    assert!(workers.len() <= 2, "a 2-worker runtime polled on {workers:?}");
    let mut migrated = 0;
    for (i, r) in reqs.iter().enumerate() {
        let s = summary_of(out, &r.span);
        assert_eq!(s["name"], name(i).as_str(), "{}: {s}", r.line);
        assert!(s["incomplete"].is_null(), "{}: {s}", r.line);
        assert_eq!(s["trace_id"], r.trace.as_str(), "{}: {s}", r.line);
        if i.is_multiple_of(2) {
            // The incoming traceparent's trace goes on, as a child of the caller's span.
            assert_ne!(r.parent, "0000000000000000");
            assert_eq!(s["parent_span_id"], r.parent.as_str(), "{}: {s}", r.line);
        }

        let (on, runq, blocked) = (ms(s, "on_cpu_ns"), ms(s, "runq_ns"), ms(s, "blocked_ns"));
        let unscheduled = ms(s, "unscheduled_ns");
        eprintln!(
            "{}: tprof on-cpu {on:.3} run-queue {runq:.3} blocked {blocked:.3} unscheduled {unscheduled:.3} wall {:.3} threads {}",
            r.line,
            ms(s, "wall_ns"),
            s["threads"]
        );
        // Lower bound: the request burned r.cpu_ms (>= 2 ms) of its thread's CPU clock
        // inside one poll, while attached. tprof counts the thread's time on CPU between its
        // switch-in/out and the attach/detach probes, which contains that CPU time (it also
        // contains irq time, which the thread's clock may leave out; VM steal both leave out),
        // so it cannot be smaller, bar 50 us for the two clocks' different reads.
        assert!(r.cpu_ms >= 2.0, "{}", r.line);
        assert!(on >= r.cpu_ms - 0.05, "{}: on-CPU {on} ms < the {} ms it burned: {s}", r.line, r.cpu_ms);
        // Upper bound: tprof charges a worker's time to a request only between that
        // request's attach and detach, i.e. inside the polls of its future, whose wall time
        // the target measured from outside (busy_ms: the future's own code, the layer's
        // bookkeeping, the probes' uprobe traps, and any preemption in between). Everything
        // charged (on-CPU, run queue, blocked) fits in it; 1 ms covers the two clocks and the
        // poll wrapper's own few instructions many times over. Another request's 2 ms burn
        // charged here would break this: that is the point.
        let charged = on + ms(s, "steal_ns") + runq + blocked;
        assert!(charged <= r.busy_ms + 1.0, "{}: charged {charged} ms > its polls' {} ms + 1: {s}", r.line, r.busy_ms);
        // And in absolute terms: its 2 ms burn plus at most 3 ms of anything else (its other
        // code runs for microseconds).
        assert!(on <= r.cpu_ms + 3.0, "{}: on-CPU {on} ms: {s}", r.line);
        // The 5 ms sleep: the future is parked in the executor between the detach after its
        // first poll and the attach of the next one, which cannot come before the timer
        // fires (tokio rounds a sleep up to its 1 ms tick, never down). The sleep starts a
        // few microseconds before that detach: >= 4.5 ms unscheduled. (More: after the
        // timer fires, a request waits its turn behind the others' 2 ms burns.)
        assert!(unscheduled >= 4.5, "{}: unscheduled {unscheduled} ms: {s}", r.line);

        // Three polls: an attach for each after the first (tokio may poll a task an extra
        // time on a spurious wake-up, never fewer), and the detaches that pair with them.
        let attaches = events(out, "task_attach", &r.span);
        let detaches = events(out, "task_detach", &r.span);
        // Both variants pair every attach (and the begin) with a detach; the end comes after
        // the last one: `tracing` closes the span, the target takes the body out of
        // `TprofHttpLayer`'s response (the body carries the task on until then).
        let expect_detaches = attaches.len() + 1;
        assert!(
            attaches.len() >= 2 && detaches.len() == expect_detaches,
            "{}: {} attaches, {} detaches",
            r.line,
            attaches.len(),
            detaches.len()
        );
        // Every thread that worked for it is a worker, and every worker the handler saw
        // itself on is one tprof charged.
        let threads: BTreeSet<u64> = s["threads"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
        let seen: BTreeSet<u64> = r.tids.iter().copied().collect();
        assert!(seen.is_subset(&threads), "{}: tprof threads {threads:?}: {s}", r.line);
        assert!(threads.is_subset(&workers), "{}: tprof threads {threads:?} beyond the workers {workers:?}", r.line);
        if seen.len() >= 2 {
            migrated += 1;
            // The later polls ran on another worker than the first: tprof saw that worker
            // attach to the request.
            let attach_tids: BTreeSet<u64> = attaches.iter().filter_map(|e| e["tid"].as_u64()).collect();
            let later: BTreeSet<u64> = r.tids[1..].iter().copied().collect();
            assert!(later.is_subset(&attach_tids), "{}: attaches on {attach_tids:?}", r.line);
        }
    }
    // After the sleep, the worker that drives the timer wakes the requests into its own
    // queue and the other worker steals half of them: of 20 requests, about half move (6 to
    // 14 in the runs seen). None moving would mean the runtime never used its second worker
    // (odds ~2^-20).
    assert!(migrated >= 1, "no request migrated between workers: {reqs:#?}");
    eprintln!("{migrated} of {} requests ran on both workers", reqs.len());
}

#[test]
fn tower_requests_migrate_between_workers_and_are_charged_separately() {
    // As uid 1000 from its own 0700 directory.
    let (out, reqs) = trace("tower", "req ", RunAs::UID_1000.private());
    // Named by route, ids folded (`/req/{i}` -> `/req/{id}`).
    check_requests(&out, &reqs, |_| "GET /req/{id}".to_string());
}

#[test]
fn tracing_spans_become_tasks_regions_and_logs() {
    let (out, reqs) = trace("tracing", "traced ", RunAs::NOBODY);
    // tracing enters the span once more to drop the future: one more attach/detach pair.
    check_requests(&out, &reqs, |_| "traced-req".to_string());
    for (i, r) in reqs.iter().enumerate() {
        let s = summary_of(&out, &r.span);
        // The child span `work` around the CPU burn is a region of the request, holding
        // its 2 ms of CPU.
        let regions = s["regions"].as_array().cloned().unwrap_or_default();
        assert_eq!(regions.len(), 1, "{}: {s}", r.line);
        assert_eq!(regions[0]["name"], "work");
        let region_ms = (regions[0]["end_ns"].as_u64().unwrap_or(0) as f64 - regions[0]["start_ns"].as_u64().unwrap_or(0) as f64) / 1e6;
        assert!(region_ms >= r.cpu_ms - 0.05, "{}: region {region_ms} ms: {s}", r.line);
        // The event inside the span is a log: key the target, value message + fields.
        let logs = s["logs"].as_array().cloned().unwrap_or_default();
        assert_eq!(logs.len(), 1, "{}: {s}", r.line);
        assert_eq!(logs[0]["key"], "tokio_target");
        assert_eq!(logs[0]["value"], format!("finished request={i}").as_str());
    }
}
