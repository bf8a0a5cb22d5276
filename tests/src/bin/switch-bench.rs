//! Context-switch-heavy microbenchmark for `cargo xtask bench kernel`.
//!
//! `switch-bench <round_trips> [reps]`: pins itself (and so both its threads) to CPU 0,
//! prints `ready <pid>`, waits for a line on stdin (so that a tracer can attach first), then
//! two threads, each inside its own tprof task (raw probes), ping-pong over two futex words:
//! `ping` posts `pong` and waits; `pong` waits and posts `ping`. After a warm-up, `reps`
//! (default 5) timed runs of `round_trips` round trips; prints `ns_per_iter <r1> ... <rN>`
//! (ns per round trip) and exits.
//!
//! `switch-bench <round_trips> <reps> workers`: the same, but `ping` runs in a spawned
//! thread too, so that the main thread (which tprof binds its uprobe perf events to) sits
//! idle in `join`: the common shape of a service whose requests run on worker threads.
//!
//! A round trip on one CPU is 2 context switches, 2 wakeups and 4 futex syscalls (each side
//! wakes the other, then waits): 2 sched_switch, 2 sched_waking, 4 sys_enter and 4 sys_exit
//! tracepoint hits, all in the traced process.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use usdt_probes::probe;

const TRACE_HI: u64 = 0x5357_4954_4348_0000;
const TRACE_LO: u64 = 0x0000_0000_0000_0002;
const PING_SPAN: u64 = 0x5357_0000_0000_0001;
const PONG_SPAN: u64 = 0x5357_0000_0000_0002;

/// 1: the owner may go (posted); 0: it must wait.
static PING: AtomicU32 = AtomicU32::new(0);
static PONG: AtomicU32 = AtomicU32::new(0);

fn futex(word: &AtomicU32, op: i32, val: u32) {
    // SAFETY: the word is a live, aligned u32; no timeout, no second word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Waits until the word is posted, and consumes the post.
#[inline(always)]
fn wait(word: &AtomicU32) {
    loop {
        if word.swap(0, Ordering::Acquire) == 1 {
            return;
        }
        futex(word, libc::FUTEX_WAIT, 0);
    }
}

#[inline(always)]
fn post(word: &AtomicU32) {
    word.store(1, Ordering::Release);
    futex(word, libc::FUTEX_WAKE, 1);
}

#[inline(never)]
fn ping(n: u64) {
    for _ in 0..n {
        post(&PONG);
        wait(&PING);
    }
}


fn usage() -> ! {
    eprintln!("usage: switch-bench <round_trips> [reps]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(n) = args.first().and_then(|s| s.parse::<u64>().ok()).filter(|n| *n > 0) else { usage() };
    let reps: u64 = match args.get(1) {
        Some(s) => s.parse().unwrap_or_else(|_| usage()),
        None => 5,
    };
    // Before the second thread exists: it inherits the affinity.
    tprof_tests::bench::workload::pin_or_exit("switch-bench", 0);
    tprof_tests::bench::workload::ready_then_wait_for_go("switch-bench");
    let warm = (n / 10).max(1);
    let total = warm + reps * n;
    let pong = std::thread::Builder::new()
        .name("pong".into())
        .spawn(move || {
            probe::task_begin(TRACE_HI, TRACE_LO, PONG_SPAN, PING_SPAN, "switch-pong");
            for _ in 0..total {
                wait(&PONG);
                post(&PING);
            }
            probe::task_end(TRACE_HI, TRACE_LO, PONG_SPAN);
        })
        .unwrap_or_else(|e| {
            eprintln!("switch-bench: cannot start the second thread: {e}");
            std::process::exit(1);
        });
    let run_ping = move || {
        probe::task_begin(TRACE_HI, TRACE_LO, PING_SPAN, 0, "switch-ping");
        ping(warm);
        let mut samples = Vec::with_capacity(reps as usize);
        for _ in 0..reps {
            let t = Instant::now();
            ping(n);
            samples.push(t.elapsed().as_nanos() as f64 / n as f64);
        }
        probe::task_end(TRACE_HI, TRACE_LO, PING_SPAN);
        samples
    };
    let samples = if args.get(2).map(String::as_str) == Some("workers") {
        match std::thread::Builder::new().name("ping".into()).spawn(run_ping) {
            Ok(t) => t.join().unwrap_or_default(),
            Err(e) => {
                eprintln!("switch-bench: cannot start the ping thread: {e}");
                std::process::exit(1);
            }
        }
    } else {
        run_ping()
    };
    let _ = pong.join();
    let s: Vec<String> = samples.iter().map(|v| format!("{v:.3}")).collect();
    println!("ns_per_iter {}", s.join(" "));
    let _ = std::io::stdout().flush();
}
