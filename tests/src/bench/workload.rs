//! The workloads' side of the benchmarks (`tests/src/bin/*-bench.rs`): pinning to a CPU and
//! the `ready <pid>` / go-line handshake that lets a tracer attach before the measured loop.

use std::io::{BufRead, Write};

/// Pins the calling thread (and threads it starts later) to `cpu`, or exits saying why.
pub fn pin_or_exit(name: &str, cpu: usize) {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set, and CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the caller's cpu index is below CPU_SETSIZE on any machine this runs on.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is this thread; the set is initialised and its size is passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        eprintln!("{name}: cannot pin to CPU {cpu}: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
}

/// Prints `ready <pid>` and waits for a line on stdin, or exits if stdin closes first.
pub fn ready_then_wait_for_go(name: &str) {
    println!("ready {}", std::process::id());
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
        eprintln!("{name}: stdin closed before the go line");
        std::process::exit(1);
    }
}
