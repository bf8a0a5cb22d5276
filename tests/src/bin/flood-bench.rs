//! Event flood at a controlled rate, for `cargo xtask bench throughput` and `bench soak`.
//!
//! `flood-bench <region|syscall|mixed> <records_per_s> <seconds> [units_per_task] [cpu]`: pins
//! itself to `cpu` (default 0), prints `ready <pid>`, waits for a line on stdin (so that tprof can attach
//! first), then emits tasks back to back for `seconds`, pacing itself (busy-waiting on the
//! vDSO clock, which makes no syscall) so that tprof would receive `records_per_s` records
//! per second (0: as fast as it can). Each task has a new span id; per task:
//!
//! | mode | records tprof receives per task |
//! |---|---|
//! | `region` | task_begin, `units` x (region_begin + region_end), ON_CPU, task_end |
//! | `syscall` | task_begin, `units` x SYSCALL (a raw `getppid`), ON_CPU, task_end |
//! | `mixed` | task_begin, log, `units` x (region_begin + SYSCALL + region_end), ON_CPU, task_end |
//!
//! (ON_CPU: the task's last on-CPU slice, cut at task_end.) `units_per_task` defaults to 50.
//! At the end it prints `done records=<n> tasks=<t> elapsed_ns=<ns>`: the records it caused
//! (tprof's delivered plus dropped records add up to this, plus two scheduler records for
//! each time the thread was switched out inside a task, e.g. preempted by tprof itself when
//! they share a CPU).

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use usdt_probes::probe;

const TRACE_HI: u64 = 0x464c_4f4f_4442_454e;
const TRACE_LO: u64 = 0x4348_0000_0000_0003;
const SPAN_BASE: u64 = 0x464c_0000_0000_0000;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Region,
    Syscall,
    Mixed,
}

impl Mode {
    fn per_unit(self) -> u64 {
        match self {
            Mode::Region => 2,
            Mode::Syscall => 1,
            Mode::Mixed => 3,
        }
    }
}

#[inline(always)]
fn getppid() {
    // SAFETY: getppid takes no arguments and cannot fail.
    black_box(unsafe { libc::syscall(libc::SYS_getppid) });
}

#[inline(always)]
fn unit(mode: Mode) {
    match mode {
        Mode::Region => {
            probe::region_begin("flood");
            probe::region_end("flood");
        }
        Mode::Syscall => getppid(),
        Mode::Mixed => {
            probe::region_begin("flood");
            getppid();
            probe::region_end("flood");
        }
    }
}


fn usage() -> ! {
    eprintln!("usage: flood-bench <region|syscall|mixed> <records_per_s> <seconds> [units_per_task] [cpu]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.first().map(String::as_str) {
        Some("region") => Mode::Region,
        Some("syscall") => Mode::Syscall,
        Some("mixed") => Mode::Mixed,
        _ => usage(),
    };
    let rate: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| usage());
    let seconds: f64 = args.get(2).and_then(|s| s.parse().ok()).filter(|s: &f64| *s > 0.0).unwrap_or_else(|| usage());
    let units: u64 = match args.get(3) {
        Some(s) => s.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| usage()),
        None => 50,
    };
    let cpu: usize = match args.get(4) {
        Some(s) => s.parse().ok().filter(|c| *c < libc::CPU_SETSIZE as usize).unwrap_or_else(|| usage()),
        None => 0,
    };
    tprof_tests::bench::workload::pin_or_exit("flood-bench", cpu);
    tprof_tests::bench::workload::ready_then_wait_for_go("flood-bench");
    let per_unit = mode.per_unit();
    // Pace in ns per record (0: unpaced).
    let ns_per_record = if rate == 0 { 0.0 } else { 1e9 / rate as f64 };
    let limit = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let (mut records, mut tasks) = (0u64, 0u64);
    'run: loop {
        let span = SPAN_BASE + tasks;
        probe::task_begin(TRACE_HI, TRACE_LO, span, 0, "flood");
        records += 1;
        if mode == Mode::Mixed {
            probe::log("k", "v");
            records += 1;
        }
        for u in 0..units {
            unit(mode);
            records += per_unit;
            if u % 8 == 7 {
                // Ahead of the pace: wait on the clock (vDSO, no syscall, no switch).
                loop {
                    let now = start.elapsed();
                    if ns_per_record == 0.0 || (now.as_nanos() as f64) >= records as f64 * ns_per_record {
                        if now >= limit {
                            probe::task_end(TRACE_HI, TRACE_LO, span);
                            records += 2;
                            tasks += 1;
                            break 'run;
                        }
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
        }
        probe::task_end(TRACE_HI, TRACE_LO, span);
        records += 2;
        tasks += 1;
        if start.elapsed() >= limit {
            break;
        }
    }
    let elapsed = start.elapsed();
    println!("done records={records} tasks={tasks} elapsed_ns={}", elapsed.as_nanos());
    let _ = std::io::stdout().flush();
}
