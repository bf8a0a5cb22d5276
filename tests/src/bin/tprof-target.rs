//! A traced process whose per-request behaviour is known, for the end-to-end tests.
//!
//! Prints `ready <pid>` and waits for a line on stdin (so the tracer can attach first), then
//! runs each request named on the command line as a tprof task, printing facts the test
//! checks against (thread ids, child pids), then `done` and exits.
//!
//! Requests: `sleep:MS` (nanosleep), `spin:MS` (busy loop, no syscalls), `mutex:MS` (blocks
//! on a mutex another thread holds for MS, inside that thread's own task), `pipe:MS` (reads
//! a pipe that a child process writes MS later), `regions` (nested regions and a log),
//! `enabled` (prints whether a tracer armed the probes' semaphores), `wait` (waits for
//! another line on stdin), `nest:N` (N nested tasks),
//! `flood:N` (N region pairs back to back, to overflow the ring buffer), `async:MS` (two
//! async tasks spinning MS per poll, 3 polls each, moved between two worker threads),
//! `chain:MS` (task front waits for task back, which waits MS for a child process),
//! `fifo-read=PATH` (task `fifo-read` opens the FIFO at PATH and reads a byte: it blocks
//! until another process writes), `fifo-write=PATH` (task `fifo-write` opens the FIFO, waits
//! 15 ms, then writes the byte: two processes, one blocked on the other's task).
//! `spin_a:MS` / `spin_b:MS` (tasks `spin_a` / `spin_b`: MS of CPU time, by the thread's
//! CPU clock, in the functions `spin_a` / `spin_b`, for the on-CPU sampler's tests; they
//! print the thread's CPU time and context switches over the spin).
//! `--pipe-writer` is the child's role.

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use usdt_probes::{log, region, with_region, Task, TaskFutureExt};

fn gettid() -> i64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn spin(d: Duration) {
    let t = Instant::now();
    let mut x = 0u64;
    while t.elapsed() < d {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        std::hint::black_box(x);
    }
}

/// The kernel's own accounting of this thread: its CPU time (CLOCK_THREAD_CPUTIME_ID,
/// which includes the running slice; `schedstat`'s run time lags by up to a tick while the
/// thread runs) and its time waiting in a run queue (`/proc/thread-self/schedstat`, exact
/// once the thread runs), in ns. The truth tprof's figures are checked against, whatever
/// else loads the machine.
fn schedstat() -> (u64, u64) {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    let run = (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64;
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let wait = text.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (run, wait)
}

/// Prints what the kernel accounted to this thread since `before`: `<what> kernel run_ns N
/// wait_ns N`.
fn print_kernel(what: &str, before: (u64, u64)) {
    let (run, wait) = schedstat();
    println!("{what} kernel run_ns {} wait_ns {}", run.saturating_sub(before.0), wait.saturating_sub(before.1));
}

/// This thread's CPU time (CLOCK_THREAD_CPUTIME_ID), in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// This thread's context switches so far (voluntary and not).
fn thread_switches() -> u64 {
    // SAFETY: a zeroed rusage is a valid value; getrusage writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    (ru.ru_nvcsw + ru.ru_nivcsw) as u64
}

/// A function that burns `ms` of this thread's CPU time in its own body: xorshift rounds
/// (no calls, even in a debug build), the CPU clock read once every 2^16 rounds (well under
/// 1% of the time), so that nearly every on-CPU sample of it has it as its innermost frame.
macro_rules! spinner {
    ($name:ident) => {
        #[inline(never)]
        fn $name(ms: u64) -> u64 {
            let until = thread_cpu_ns() + ms * 1_000_000;
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            loop {
                let mut i = 0u32;
                while i < 65_536 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    i += 1;
                }
                if thread_cpu_ns() >= until {
                    return std::hint::black_box(x);
                }
            }
        }
    };
}
spinner!(spin_a);
spinner!(spin_b);

/// `spin_a:MS` / `spin_b:MS`: a task of that name spinning in that function.
fn spin_request(name: &str, ms: u64) {
    let t = Task::new(name);
    println!("{name} task span {:016x} tid {}", t.context().span_id(), gettid());
    let (cpu0, sw0) = (thread_cpu_ns(), thread_switches());
    let x = if name == "spin_a" { spin_a(ms) } else { spin_b(ms) };
    let (cpu1, sw1) = (thread_cpu_ns(), thread_switches());
    drop(t);
    println!("{name} cpu_ns {} switches {} x {x}", cpu1 - cpu0, sw1 - sw0);
}

/// Waits (at most ~1 s) until thread `tid` of this process sleeps (state S in /proc).
fn await_sleeping(tid: i64) {
    let stat = format!("/proc/self/task/{tid}/stat");
    for _ in 0..10_000 {
        let state = std::fs::read_to_string(&stat).ok().and_then(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next().map(str::to_string)));
        if state.as_deref() == Some("S") {
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn mutex_request(ms: u64) {
    let lock = Arc::new(Mutex::new(()));
    let (held_tx, held_rx) = mpsc::channel();
    let holder_lock = Arc::clone(&lock);
    // The request asks for the lock, and the holder spins its MS only once it sleeps on it:
    // on a loaded machine the request may otherwise come to the lock after it was freed.
    let asking = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder_sees = Arc::clone(&asking);
    let me = gettid();
    let holder = std::thread::spawn(move || {
        let task = Task::new("holder");
        let guard = holder_lock.lock().unwrap_or_else(|e| e.into_inner());
        let locked = Instant::now();
        let _ = held_tx.send((gettid(), task.context().span_id()));
        while !holder_sees.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(Duration::from_micros(100));
        }
        await_sleeping(me);
        spin(Duration::from_millis(ms));
        drop(guard);
        // How long the lock was really held (a loaded machine stretches it): the most the
        // request can have waited for it.
        println!("mutex holder held_ns {}", locked.elapsed().as_nanos());
        drop(task);
    });
    let (holder_tid, holder_span) = held_rx.recv().unwrap_or((0, 0));
    println!("mutex holder tid {holder_tid} span {holder_span:016x}");
    let task = Task::new("mutex");
    println!("mutex task span {:016x} tid {}", task.context().span_id(), gettid());
    asking.store(true, std::sync::atomic::Ordering::Release);
    drop(lock.lock().unwrap_or_else(|e| e.into_inner()));
    drop(task);
    let _ = holder.join();
}

/// `convoy:MS`: three threads take one mutex in turn, each in its own task (`convoy-a`,
/// `convoy-b`, `convoy-c`) and each holding it MS ms (spinning): c waits for b, which waits
/// for a. The order is forced: b asks for the lock once a holds it, c once b is blocked on
/// it (b's thread state is read from /proc until it sleeps).
fn convoy_request(ms: u64) {
    let lock = Arc::new(Mutex::new(()));
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (tid_tx, tid_rx) = mpsc::channel::<u32>();
    let hold = move |name: &'static str, lock: Arc<Mutex<()>>, held: Option<mpsc::Sender<()>>, tids: mpsc::Sender<u32>| {
        move || {
            let task = Task::new(name);
            println!("{name} task span {:016x} tid {}", task.context().span_id(), gettid());
            let _ = tids.send(gettid() as u32);
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = held {
                let _ = h.send(());
            }
            spin(Duration::from_millis(ms));
            drop(guard);
            drop(task);
        }
    };
    let a = std::thread::spawn(hold("convoy-a", Arc::clone(&lock), Some(held_tx), tid_tx.clone()));
    let _ = tid_rx.recv();
    let _ = held_rx.recv();
    let b = std::thread::spawn(hold("convoy-b", Arc::clone(&lock), None, tid_tx.clone()));
    let b_tid = tid_rx.recv().unwrap_or(0);
    // c asks only once b sleeps on the lock (state S in /proc), so the futex queue is a, b, c.
    await_sleeping(i64::from(b_tid));
    let c = std::thread::spawn(hold("convoy-c", lock, None, tid_tx));
    let _ = tid_rx.recv();
    for t in [a, b, c] {
        let _ = t.join();
    }
}

fn pipe_request(ms: u64) {
    // Waits until the child runs, so the request measures only the pipe wait.
    let (mut child, mut to_child, mut from_child) = spawn_writer(ms);
    println!("pipe writer pid {}", child.id());
    let task = Task::new("pipe");
    println!("pipe task span {:016x} tid {}", task.context().span_id(), gettid());
    let _ = to_child.write_all(b"g");
    let _ = to_child.flush();
    let mut buf = [0u8; 1];
    let _ = from_child.read_exact(&mut buf);
    drop(task);
    let _ = child.wait();
}

/// A future that spins `ms` on each of `polls` polls, yielding (Pending) in between.
struct SpinPolls {
    left: u32,
    ms: u64,
}

impl std::future::Future for SpinPolls {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        spin(Duration::from_millis(self.ms));
        self.left = self.left.saturating_sub(1);
        if self.left == 0 {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

type Job = (usize, std::pin::Pin<Box<usdt_probes::InTask<SpinPolls>>>);

/// Two async tasks interleaved on two worker threads, each poll of each task on the other
/// thread than its previous poll: what a work-stealing executor does.
fn async_request(ms: u64) {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let mut futs: Vec<Option<std::pin::Pin<Box<usdt_probes::InTask<SpinPolls>>>>> = ["async-a", "async-b"]
        .iter()
        .map(|name| Some(Box::pin(SpinPolls { left: 3, ms }.in_task(*name))))
        .collect();
    for (f, name) in futs.iter().zip(["async-a", "async-b"]) {
        if let Some(f) = f {
            println!("{name} task span {:016x}", f.context().span_id());
        }
    }
    let (back_tx, back_rx) = mpsc::channel::<Job>();
    let mut workers = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = mpsc::channel::<Job>();
        let back = back_tx.clone();
        handles.push(std::thread::spawn(move || {
            let waker = Waker::from(Arc::new(Noop));
            while let Ok((tag, mut f)) = rx.recv() {
                let _ = f.as_mut().poll(&mut Context::from_waker(&waker));
                let _ = back.send((tag, f));
            }
        }));
        workers.push(tx);
    }
    for round in 0..3 {
        // Round 0: a on worker 0, b on worker 1; round 1: swapped; and so on.
        for (tag, slot) in futs.iter_mut().enumerate() {
            if let Some(f) = slot.take() {
                let _ = workers[(tag + round) % 2].send((tag, f));
            }
        }
        for _ in 0..2 {
            let Ok((tag, f)) = back_rx.recv() else { panic!("worker died") };
            futs[tag] = Some(f);
        }
    }
    drop(workers);
    for h in handles {
        let _ = h.join();
    }
}

/// Spawns the pipe-writer child and waits until it runs; returns it with its pipes.
fn spawn_writer(ms: u64) -> (std::process::Child, std::process::ChildStdin, std::process::ChildStdout) {
    let exe = std::env::current_exe().unwrap_or_else(|_| "tprof-target".into());
    let mut child = Command::new(exe)
        .arg("--pipe-writer")
        .arg(ms.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning the pipe writer: {e}"));
    let (Some(to_child), Some(mut from_child)) = (child.stdin.take(), child.stdout.take()) else {
        panic!("pipe writer has no stdio");
    };
    let mut ready = [0u8; 1];
    let _ = from_child.read_exact(&mut ready);
    (child, to_child, from_child)
}

/// A wake-up chain: task "front" waits on a channel for task "back" (another thread), which
/// first waits MS for a pipe that a child process writes.
fn chain_request(ms: u64) {
    let (mut child, mut to_child, mut from_child) = spawn_writer(ms);
    println!("chain writer pid {}", child.id());
    let (tx, rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let back = std::thread::spawn(move || {
        let task = Task::new("back");
        println!("back task span {:016x} tid {}", task.context().span_id(), gettid());
        let _ = started_rx.recv();
        let _ = to_child.write_all(b"g");
        let _ = to_child.flush();
        let mut buf = [0u8; 1];
        let _ = from_child.read_exact(&mut buf);
        let _ = tx.send(());
        drop(task);
    });
    let task = Task::new("front");
    println!("front task span {:016x} tid {}", task.context().span_id(), gettid());
    let _ = started_tx.send(());
    let _ = rx.recv();
    drop(task);
    let _ = back.join();
    let _ = child.wait();
}

/// How long `fifo-write` holds its reader.
const FIFO_HOLD: Duration = Duration::from_millis(15);

/// `fifo-read=PATH` / `fifo-write=PATH`: one byte through a FIFO between two processes, each
/// side inside its own task.
fn fifo_request(path: &str, write: bool) {
    let name = if write { "fifo-write" } else { "fifo-read" };
    let task = Task::new(name);
    println!("{name} task span {:016x} tid {}", task.context().span_id(), gettid());
    let _ = std::io::stdout().flush();
    if write {
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::sleep(FIFO_HOLD);
        f.write_all(b"x").unwrap_or_else(|e| panic!("write {path}: {e}"));
    } else {
        let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let mut buf = [0u8; 1];
        f.read_exact(&mut buf).unwrap_or_else(|e| panic!("read {path}: {e}"));
    }
    drop(task);
}

fn pipe_writer(ms: u64) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b"r");
    let _ = out.flush();
    let mut go = [0u8; 1];
    let _ = std::io::stdin().read_exact(&mut go);
    std::thread::sleep(Duration::from_millis(ms));
    let _ = out.write_all(b"x");
    let _ = out.flush();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--pipe-writer") {
        pipe_writer(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5));
        return;
    }
    println!("ready {}", std::process::id());
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    for req in &args {
        if let Some((side, path)) = req.split_once('=') {
            match side {
                "fifo-read" => fifo_request(path, false),
                "fifo-write" => fifo_request(path, true),
                other => panic!("unknown request {other:?}"),
            }
            continue;
        }
        let (what, ms) = req.split_once(':').unwrap_or((req.as_str(), "0"));
        let ms: u64 = ms.parse().unwrap_or(0);
        match what {
            "sleep" => {
                let t = Task::new("sleep");
                println!("sleep task span {:016x} tid {}", t.context().span_id(), gettid());
                std::thread::sleep(Duration::from_millis(ms));
            }
            "spin" => {
                let t = Task::new("spin");
                println!("spin task span {:016x} tid {}", t.context().span_id(), gettid());
                let before = schedstat();
                spin(Duration::from_millis(ms));
                print_kernel("spin", before);
            }
            "mutex" => mutex_request(ms),
            "convoy" => convoy_request(ms),
            "spin_a" | "spin_b" => spin_request(what, ms),
            "async" => async_request(ms),
            "pipe" => pipe_request(ms),
            "chain" => chain_request(ms),
            "flood" => {
                // N region pairs as fast as possible: far more than a small ring buffer
                // holds between two polls. The pause lets tprof drain before the task ends.
                let t = Task::new("flood");
                println!("flood task span {:016x} tid {}", t.context().span_id(), gettid());
                for _ in 0..ms {
                    let _r = region("f");
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            "nest" => {
                // Deeper than the kernel's per-thread task stack (4): the fifth is not
                // tracked on this thread, which --debug-ebpf reports.
                let tasks: Vec<Task> = (0..ms.max(1)).map(|_| Task::new("nest")).collect();
                drop(tasks.into_iter().rev().collect::<Vec<_>>());
            }
            "short" => {
                // N rounds of one getppid and one 1 us nanosleep (~50-60 us with the
                // default timer slack): every interval far below a 10 ms detail threshold.
                // The target measures its own time asleep, the truth tprof's sums are
                // checked against.
                // The kernel's accounting is read outside the task: its file reads would be
                // syscalls of the task (more kinds than the kernel's sums have slots for).
                let before = schedstat();
                let t = Task::new("short");
                println!("short task span {:016x} tid {}", t.context().span_id(), gettid());
                let mut asleep = Duration::ZERO;
                for _ in 0..ms {
                    // SAFETY: a raw syscall without arguments or memory.
                    unsafe { libc::syscall(libc::SYS_getppid) };
                    let t0 = Instant::now();
                    std::thread::sleep(Duration::from_micros(1));
                    asleep += t0.elapsed();
                }
                drop(t);
                print_kernel("short", before);
                println!("short asleep_ns {}", asleep.as_nanos());
            }
            "naps" => {
                // N rounds of a 2 ms sleep then a 1 ms spin (wall clock): a known
                // mix of blocks and CPU that lost scheduler events would misplace (the
                // fault-injection tests). The kernel's accounting is read outside the task.
                let before = schedstat();
                let t = Task::new("naps");
                println!("naps task span {:016x} tid {}", t.context().span_id(), gettid());
                for _ in 0..ms {
                    std::thread::sleep(Duration::from_millis(2));
                    spin(Duration::from_millis(1));
                }
                drop(t);
                print_kernel("naps", before);
            }
            "open" => {
                // A task still open when tprof stops: N getppid, then it waits for a line.
                let t = Task::new("open");
                println!("open task span {:016x} tid {}", t.context().span_id(), gettid());
                for _ in 0..ms {
                    // SAFETY: a raw syscall without arguments or memory.
                    unsafe { libc::syscall(libc::SYS_getppid) };
                }
                println!("open waiting");
                let _ = std::io::stdout().flush();
                let mut l = String::new();
                let _ = std::io::stdin().lock().read_line(&mut l);
            }
            "enabled" => println!("enabled {}", usdt_probes::enabled()),
            "wait" => {
                let mut l = String::new();
                let _ = std::io::stdin().lock().read_line(&mut l);
            }
            "regions" => {
                let t = Task::new("regions");
                println!("regions task span {:016x} tid {}", t.context().span_id(), gettid());
                with_region("outer", || {
                    let _inner = region("inner");
                    log("answer", "42");
                });
            }
            other => panic!("unknown request {other:?}"),
        }
    }
    println!("done");
    let _ = std::io::stdout().flush();
}
