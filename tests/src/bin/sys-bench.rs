//! Syscall-heavy microbenchmark for `cargo xtask bench kernel`.
//!
//! `sys-bench <iterations> [reps]`: pins itself to CPU 0, prints `ready <pid>`, waits for a
//! line on stdin (so that a tracer can attach first), begins one tprof task (raw probe, so
//! that tprof follows the thread and traces every syscall it makes), runs a warm-up, then
//! `reps` (default 5) timed loops of `iterations` `getppid` syscalls (raw `syscall(2)`, no
//! libc caching), ends the task and prints `ns_per_iter <r1> ... <rN>` (ns per syscall).
//!
//! Per iteration the kernel runs `sys_enter` and `sys_exit` once each: tprof emits one
//! SYSCALL record per iteration; a tracer on those two tracepoints sees 2 events.

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use usdt_probes::probe;

const TRACE_HI: u64 = 0x5359_5342_454e_4348;
const TRACE_LO: u64 = 0x0000_0000_0000_0001;
const SPAN: u64 = 0x5359_5300_0000_0001;

#[inline(never)]
fn body(n: u64) {
    for i in 0..n {
        black_box(i);
        // SAFETY: getppid takes no arguments and cannot fail.
        black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
}


fn usage() -> ! {
    eprintln!("usage: sys-bench <iterations> [reps]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(iters) = args.first().and_then(|s| s.parse::<u64>().ok()).filter(|n| *n > 0) else { usage() };
    let reps: usize = match args.get(1) {
        Some(s) => s.parse().unwrap_or_else(|_| usage()),
        None => 5,
    };
    tprof_tests::bench::workload::pin_or_exit("sys-bench", 0);
    tprof_tests::bench::workload::ready_then_wait_for_go("sys-bench");
    probe::task_begin(TRACE_HI, TRACE_LO, SPAN, 0, "sys-bench");
    body((iters / 10).max(1));
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        body(iters);
        samples.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    probe::task_end(TRACE_HI, TRACE_LO, SPAN);
    let s: Vec<String> = samples.iter().map(|v| format!("{v:.3}")).collect();
    println!("ns_per_iter {}", s.join(" "));
    let _ = std::io::stdout().flush();
}
