//! A traced process for the fault suite (`tests/tests/faults/`): the process-lifecycle
//! faults a tracer must survive, driven like `tprof-target` (prints `ready <pid>`, waits for
//! a line on stdin, then runs each request named on the command line, then prints `done`).
//!
//! Requests:
//! * `task:NAME` - a task NAME sleeping 1 ms; prints `task NAME span <hex> tid <tid>`;
//! * `threads:N` - spawns and joins N threads, at most 64 alive at once, each running one
//!   tiny task `thr` (a 100 us sleep); prints `threads <N> done`;
//! * `fork` - forks a child that prints `child enabled-before <bool>`, runs a task `child`
//!   (prints `child pid <pid> span <hex>`), prints `child enabled <bool>` and exits; the parent waits for it, then runs a task
//!   `parent` (prints `parent span <hex>`);
//! * `exec` - replaces itself (same pid) with the program given after `--` on the command
//!   line; `exec-open` does the same while a task `open-at-exec` is still open
//!   (prints `open-at-exec span <hex> tid <tid>` first);
//! * `enabled` - prints `enabled <bool>` (tprof armed the semaphores), `wait` - reads a line.

use std::ffi::CString;
use std::io::{BufRead, Write};
use std::time::Duration;

use usdt_probes::Task;

fn gettid() -> i64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn threads(n: usize) {
    const ALIVE: usize = 64;
    let mut left = n;
    while left > 0 {
        let batch = left.min(ALIVE);
        let handles: Vec<_> = (0..batch)
            .map(|_| {
                std::thread::spawn(|| {
                    let _t = Task::new("thr");
                    std::thread::sleep(Duration::from_micros(100));
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread panicked");
        }
        left -= batch;
    }
    println!("threads {n} done");
}

fn fork_request() {
    let _ = std::io::stdout().flush();
    // SAFETY: the process is single-threaded here (requests run on the main thread and
    // `threads` joins all its threads), so the child may run arbitrary code before _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        println!("child enabled-before {}", usdt_probes::enabled());
        {
            let t = Task::new("child");
            println!("child pid {} span {:016x}", std::process::id(), t.context().span_id());
            std::thread::sleep(Duration::from_millis(2));
        }
        println!("child enabled {}", usdt_probes::enabled());
        let _ = std::io::stdout().flush();
        // SAFETY: _exit ends the child without running the parent's atexit handlers twice.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child we just forked; status is a valid out-pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: {status:#x}");
    let t = Task::new("parent");
    println!("parent span {:016x}", t.context().span_id());
    std::thread::sleep(Duration::from_millis(2));
}

fn exec(argv: &[String]) -> ! {
    assert!(!argv.is_empty(), "exec needs a program after `--`");
    let _ = std::io::stdout().flush();
    let c: Vec<CString> = argv.iter().map(|a| CString::new(a.as_str()).expect("no NUL in argv")).collect();
    let mut ptrs: Vec<*const libc::c_char> = c.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: a NULL-terminated argv of NUL-terminated strings that outlive the call.
    unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
    panic!("execv {}: {}", argv[0], std::io::Error::last_os_error());
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let (requests, program) = match all.iter().position(|a| a == "--") {
        Some(i) => (&all[..i], &all[i + 1..]),
        None => (&all[..], &all[..0]),
    };
    println!("ready {}", std::process::id());
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    for req in requests {
        let (what, arg) = req.split_once(':').unwrap_or((req.as_str(), ""));
        match what {
            "task" => {
                let t = Task::new(arg);
                println!("task {arg} span {:016x} tid {}", t.context().span_id(), gettid());
                std::thread::sleep(Duration::from_millis(1));
            }
            "threads" => threads(arg.parse().expect("threads:N")),
            "fork" => fork_request(),
            "exec" => exec(program),
            "exec-open" => {
                let t = Task::new("open-at-exec");
                println!("open-at-exec span {:016x} tid {}", t.context().span_id(), gettid());
                std::thread::sleep(Duration::from_millis(1));
                std::mem::forget(t);
                exec(program);
            }
            "enabled" => println!("enabled {}", usdt_probes::enabled()),
            "wait" => {
                let mut l = String::new();
                let _ = std::io::stdin().lock().read_line(&mut l);
            }
            other => panic!("unknown request {other:?}"),
        }
        let _ = std::io::stdout().flush();
    }
    println!("done");
    let _ = std::io::stdout().flush();
}
