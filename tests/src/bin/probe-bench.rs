//! Per-call cost of the tprof probes, for `cargo xtask bench probes`.
//!
//! `probe-bench <case> <iterations> [reps]`: pins itself to CPU 0, prints `ready <pid>`,
//! waits for a line on stdin (so a tracer can attach first), runs a short warm-up, then
//! `reps` (default 5) timed repetitions of a loop of `iterations`, and prints
//! `ns_per_iter <r1> ... <rN>` (nanoseconds per loop iteration) and exits.
//!
//! Every loop body is the empty loop's body (`black_box` of the counter) plus the case's
//! probe sites with constant arguments (set up once, outside the loop):
//!
//! | case | sites | body |
//! |---|---|---|
//! | `empty` | 0 | nothing more: the baseline |
//! | `enabled` | 0 | `if usdt_probes::enabled() { black_box(..) }` (the semaphore check) |
//! | `task_begin` | 1 | `probe::task_begin` (6 arguments) |
//! | `region_begin` | 1 | `probe::region_begin` (2 arguments) |
//! | `log` | 1 | `probe::log` (4 arguments), inside a task begun before the loop |
//! | `task` | 2 | `probe::task_begin` + `probe::task_end` (same span each time) |
//! | `region` | 2 | `probe::region_begin` + `probe::region_end`, inside a task |
//! | `attach_detach` | 2 | `probe::task_attach` + `probe::task_detach` (an async poll) |
//!
//! Single-site cases that would grow tprof's per-thread state without bound when attached
//! (`task_begin`, `region_begin` outside a balanced pair) are meant to be run unattached;
//! the balanced cases are the attached ones.

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use usdt_probes::probe;

const TRACE_HI: u64 = 0x0123_4567_89ab_cdef;
const TRACE_LO: u64 = 0xfedc_ba98_7654_3210;
const SPAN: u64 = 0x1111_2222_3333_4444;
const PARENT: u64 = 0x5555_6666_7777_8888;
const OUTER_SPAN: u64 = 0x9999_aaaa_bbbb_cccc;
const NAME: &str = "bench";
const REGION: &str = "phase";
const KEY: &str = "key";
const VALUE: &str = "value";

/// The cases, with the number of probe sites in their loop body.
const CASES: [(&str, u32); 8] = [
    ("empty", 0),
    ("enabled", 0),
    ("task_begin", 1),
    ("region_begin", 1),
    ("log", 1),
    ("task", 2),
    ("region", 2),
    ("attach_detach", 2),
];

#[inline(never)]
fn empty(n: u64) {
    for i in 0..n {
        black_box(i);
    }
}

#[inline(never)]
fn enabled(n: u64) {
    for i in 0..n {
        black_box(i);
        if usdt_probes::enabled() {
            black_box(i);
        }
    }
}

#[inline(never)]
fn task_begin(n: u64) {
    for i in 0..n {
        black_box(i);
        probe::task_begin(TRACE_HI, TRACE_LO, SPAN, PARENT, NAME);
    }
}

#[inline(never)]
fn region_begin(n: u64) {
    for i in 0..n {
        black_box(i);
        probe::region_begin(REGION);
    }
}

#[inline(never)]
fn log(n: u64) {
    for i in 0..n {
        black_box(i);
        probe::log(KEY, VALUE);
    }
}

#[inline(never)]
fn task(n: u64) {
    for i in 0..n {
        black_box(i);
        probe::task_begin(TRACE_HI, TRACE_LO, SPAN, PARENT, NAME);
        probe::task_end(TRACE_HI, TRACE_LO, SPAN);
    }
}

#[inline(never)]
fn region(n: u64) {
    for i in 0..n {
        black_box(i);
        probe::region_begin(REGION);
        probe::region_end(REGION);
    }
}

#[inline(never)]
fn attach_detach(n: u64) {
    for i in 0..n {
        black_box(i);
        probe::task_attach(TRACE_HI, TRACE_LO, SPAN, PARENT);
        probe::task_detach(TRACE_HI, TRACE_LO, SPAN);
    }
}


fn usage() -> ! {
    let names: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    eprintln!("usage: probe-bench <{}> <iterations> [reps]", names.join("|"));
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(case), Some(iters)) = (args.first(), args.get(1).and_then(|s| s.parse::<u64>().ok())) else { usage() };
    let reps: usize = match args.get(2) {
        Some(s) => s.parse().unwrap_or_else(|_| usage()),
        None => 5,
    };
    let body: fn(u64) = match case.as_str() {
        "empty" => empty,
        "enabled" => enabled,
        "task_begin" => task_begin,
        "region_begin" => region_begin,
        "log" => log,
        "task" => task,
        "region" => region,
        "attach_detach" => attach_detach,
        _ => usage(),
    };
    tprof_tests::bench::workload::pin_or_exit("probe-bench", 0);
    tprof_tests::bench::workload::ready_then_wait_for_go("probe-bench");
    // Regions and logs belong to the thread's current task: give them one, outside the
    // timed loops (a tracer attached by now sees it begin).
    let in_task = matches!(case.as_str(), "region" | "log" | "region_begin");
    if in_task {
        probe::task_begin(TRACE_HI, TRACE_LO, OUTER_SPAN, PARENT, "bench-outer");
    }
    body((iters / 10).max(1));
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        body(iters);
        samples.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    if in_task {
        probe::task_end(TRACE_HI, TRACE_LO, OUTER_SPAN);
    }
    let s: Vec<String> = samples.iter().map(|v| format!("{v:.6}")).collect();
    println!("ns_per_iter {}", s.join(" "));
    let _ = std::io::stdout().flush();
}
