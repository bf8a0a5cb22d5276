//! Unit tests without root: the notes this crate emits, read back from the test binary, and
//! the guard/future sequencing (via the test-only probe recorder).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use object::{Object, ObjectSection, ObjectSegment};

use crate::sdt::recorder;
use crate::{region, with_region, InTask, Task, TaskFutureExt, TraceContext};

/// One `.note.stapsdt` entry, decoded independently of tprof's own parser.
#[derive(Debug)]
struct Note {
    pc: u64,
    base: u64,
    sem: u64,
    provider: String,
    name: String,
    args: String,
}

fn read_notes(data: &[u8]) -> Vec<Note> {
    let file = object::File::parse(data).expect("test binary parses as ELF");
    let sec = file.section_by_name(".note.stapsdt").expect("test binary has .note.stapsdt");
    let bytes = sec.data().expect("note data");
    let mut out = Vec::new();
    let mut at = 0usize;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    while at + 12 <= bytes.len() {
        let (namesz, descsz, ty) = (u32_at(bytes, at), u32_at(bytes, at + 4), u32_at(bytes, at + 8));
        let name_at = at + 12;
        let desc_at = name_at + namesz.div_ceil(4) * 4;
        assert_eq!(&bytes[name_at..name_at + namesz], b"stapsdt\0");
        assert_eq!(ty, 3, "SDT v3 note type");
        let desc = &bytes[desc_at..desc_at + descsz];
        let mut strs = desc[24..].split(|b| *b == 0).map(|s| String::from_utf8_lossy(s).into_owned());
        out.push(Note {
            pc: u64_at(desc, 0),
            base: u64_at(desc, 8),
            sem: u64_at(desc, 16),
            provider: strs.next().unwrap_or_default(),
            name: strs.next().unwrap_or_default(),
            args: strs.next().unwrap_or_default(),
        });
        at = desc_at + descsz.div_ceil(4) * 4;
    }
    out
}

/// Makes sure every probe has at least one site in this binary.
#[inline(never)]
fn fire_every_probe() {
    let ctx = TraceContext::new_root();
    let (hi, lo) = ctx.trace_id_halves();
    crate::probe::task_begin(hi, lo, ctx.span_id(), 0, "notes");
    crate::probe::task_attach(hi, lo, ctx.span_id(), 0);
    crate::probe::region_begin("r");
    crate::probe::log("k", "v");
    crate::probe::region_end("r");
    crate::probe::task_detach(hi, lo, ctx.span_id());
    crate::probe::task_end(hi, lo, ctx.span_id());
}

#[test]
fn notes_read_back_from_own_binary() {
    fire_every_probe();
    let exe = std::env::current_exe().expect("current_exe");
    let data = std::fs::read(&exe).expect("read test binary");
    let notes: Vec<Note> = read_notes(&data).into_iter().filter(|n| n.provider == "tprof").collect();
    let file = object::File::parse(&*data).expect("ELF");
    let base_sec = file.section_by_name(".stapsdt.base").expect(".stapsdt.base kept under --gc-sections");
    let probes_sec = file.section_by_name(".probes").expect(".probes section holds the semaphores");
    let text_segments: Vec<_> = file.segments().map(|s| (s.address(), s.size())).collect();

    let expect = [
        ("task_begin", 6),
        ("task_end", 3),
        ("task_attach", 4),
        ("task_detach", 3),
        ("region_begin", 2),
        ("region_end", 2),
        ("log", 4),
    ];
    for (name, nargs) in expect {
        let sites: Vec<&Note> = notes.iter().filter(|n| n.name == name).collect();
        assert!(!sites.is_empty(), "no site for tprof:{name}");
        for n in sites {
            let args: Vec<&str> = n.args.split(' ').collect();
            assert_eq!(args.len(), nargs, "tprof:{name} args {:?}", n.args);
            for a in &args {
                let reg = a.strip_prefix("8@%").unwrap_or_else(|| panic!("tprof:{name}: {a} is not 8@%reg"));
                assert!(reg.chars().all(|c| c.is_ascii_alphanumeric()), "register {reg}");
            }
            assert_eq!(n.base, base_sec.address(), "note base is the .stapsdt.base address");
            let sem_range = probes_sec.address()..probes_sec.address() + probes_sec.size();
            assert!(sem_range.contains(&n.sem), "tprof:{name} semaphore {:#x} outside .probes", n.sem);
            assert!(
                text_segments.iter().any(|(a, s)| (*a..a + s).contains(&n.pc)),
                "tprof:{name} pc {:#x} outside every segment",
                n.pc
            );
        }
    }
    // The probe site is a one-byte nop (0x90): check the byte in the file itself.
    let text = file.section_by_name(".text").expect(".text");
    let text_data = text.data().expect("text data");
    for n in &notes {
        if let Some(off) = n.pc.checked_sub(text.address()) {
            if let Some(b) = text_data.get(off as usize) {
                assert_eq!(*b, 0x90, "tprof:{} site at {:#x} is not a 1-byte nop", n.name, n.pc);
            }
        }
    }
    // Distinct semaphores per probe name, shared by that name's sites.
    let mut sems: Vec<(String, u64)> = notes.iter().map(|n| (n.name.clone(), n.sem)).collect();
    sems.sort();
    sems.dedup();
    assert_eq!(sems.len(), expect.len(), "one semaphore per probe name: {sems:?}");
}

#[test]
fn unarmed_semaphores_read_disabled() {
    // Nobody attaches to unit tests: the kernel never armed these semaphores.
    assert!(!crate::enabled());
    assert!(!crate::log_enabled());
}

#[test]
fn task_guards_nest_and_restore_current() {
    assert_eq!(TraceContext::current(), None);
    let outer = Task::new("outer");
    let outer_ctx = outer.context();
    assert_eq!(TraceContext::current(), Some(outer_ctx));
    {
        let inner = Task::new("inner");
        let inner_ctx = inner.context();
        assert_eq!(inner_ctx.trace_id(), outer_ctx.trace_id(), "child task stays in the trace");
        assert_ne!(inner_ctx.span_id(), outer_ctx.span_id());
        assert_eq!(TraceContext::current(), Some(inner_ctx));
        let mark = recorder::len();
        with_region("phase", || {
            let _r = region("nested");
        });
        let names: Vec<&str> = recorder::since(mark)
            .into_iter()
            .filter(|f| f.2 == std::thread::current().id())
            .map(|f| f.0)
            .collect();
        assert_eq!(names, ["region_begin", "region_begin", "region_end", "region_end"]);
    }
    assert_eq!(TraceContext::current(), Some(outer_ctx));
    drop(outer);
    assert_eq!(TraceContext::current(), None);
    assert_eq!(
        recorder::for_span(outer_ctx.span_id()).iter().map(|f| f.0).collect::<Vec<_>>(),
        ["task_begin", "task_end"]
    );
}

#[test]
fn task_from_remote_parent_keeps_trace_and_parent() {
    let remote = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .expect("valid traceparent");
    let task = Task::with_parent("GET /", &remote);
    assert_eq!(task.context().trace_id(), remote.trace_id());
    assert_ne!(task.context().span_id(), remote.span_id());
}

#[test]
fn task_ends_on_unwind() {
    let span = std::sync::Mutex::new(0u64);
    let result = std::panic::catch_unwind(|| {
        let t = Task::new("panics");
        *span.lock().unwrap() = t.context().span_id();
        let _r = region("inside");
        panic!("request handler failed");
    });
    assert!(result.is_err());
    let span = *span.lock().unwrap();
    let fired: Vec<&str> = recorder::for_span(span).iter().map(|f| f.0).collect();
    assert_eq!(fired, ["task_begin", "task_end"], "the task ends even when its scope unwinds");
    assert_eq!(TraceContext::current(), None, "current task restored after unwind");
}

/// A future that is Pending `n` times, checking on each poll that it runs inside its task.
struct Yields {
    left: u32,
    expect: TraceContext,
}

impl Future for Yields {
    type Output = u32;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        assert_eq!(TraceContext::current(), Some(self.expect), "polled outside its task");
        if self.left == 0 {
            return Poll::Ready(7);
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

struct NoopWaker;
impl Wake for NoopWaker {
    fn wake(self: Arc<Self>) {}
}

fn new_in_task(left: u32) -> InTask<Yields> {
    let ctx = TraceContext::new_root();
    InTask::with_context(Yields { left, expect: ctx }, "async", ctx, 0)
}

#[test]
fn future_fires_attach_detach_per_poll_across_threads() {
    let mut fut = Box::pin(new_in_task(3));
    let span = fut.context().span_id();
    let waker = Waker::from(Arc::new(NoopWaker));
    // Poll on four different threads, as a work-stealing executor may.
    let mut threads = Vec::new();
    for _ in 0..4 {
        let (f, w) = (fut, waker.clone());
        let h = std::thread::spawn(move || {
            let mut f = f;
            let r = f.as_mut().poll(&mut Context::from_waker(&w));
            assert_eq!(TraceContext::current(), None, "poll leaves no task on the thread");
            (f, r, std::thread::current().id())
        });
        let (f, r, tid) = h.join().expect("poll thread");
        threads.push((tid, r));
        fut = f;
    }
    assert_eq!(threads[3].1, Poll::Ready(7));
    let fired = recorder::for_span(span);
    let names: Vec<&str> = fired.iter().map(|f| f.0).collect();
    assert_eq!(
        names,
        ["task_begin", "task_detach", "task_attach", "task_detach", "task_attach", "task_detach", "task_attach", "task_end"]
    );
    // Each attach/detach pair happened on the thread that polled.
    let poll_threads: Vec<_> = threads.iter().map(|t| t.0).collect();
    let fired_threads: Vec<_> = fired.iter().map(|f| f.1).collect();
    assert_eq!(fired_threads[0], poll_threads[0]);
    assert_eq!(fired_threads[1], poll_threads[0]);
    assert_eq!(fired_threads[2..4], [poll_threads[1], poll_threads[1]]);
    assert_eq!(fired_threads[6..8], [poll_threads[3], poll_threads[3]]);
}

#[test]
fn future_dropped_before_completion_ends_task() {
    let mut fut = Box::pin(new_in_task(5));
    let span = fut.context().span_id();
    let waker = Waker::from(Arc::new(NoopWaker));
    assert!(fut.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
    drop(fut);
    let names: Vec<&str> = recorder::for_span(span).iter().map(|f| f.0).collect();
    assert_eq!(names, ["task_begin", "task_detach", "task_end"]);
}

#[test]
fn future_never_polled_fires_nothing() {
    let fut = new_in_task(0);
    let span = fut.context().span_id();
    drop(fut);
    assert!(recorder::for_span(span).is_empty());
}

#[test]
fn in_task_is_child_of_current() {
    let parent = Task::new("parent");
    let fut = async { 1 }.in_task("child");
    assert_eq!(fut.context().trace_id(), parent.context().trace_id());
    assert_ne!(fut.context().span_id(), parent.context().span_id());
}

#[test]
fn panicking_poll_ends_task_once() {
    struct Boom;
    impl Future for Boom {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            panic!("handler bug")
        }
    }
    let ctx = TraceContext::new_root();
    let mut fut = Box::pin(InTask::with_context(Boom, "boom", ctx, 0));
    let waker = Waker::from(Arc::new(NoopWaker));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = fut.as_mut().poll(&mut Context::from_waker(&waker));
    }));
    assert!(r.is_err());
    drop(fut);
    let names: Vec<&str> = recorder::for_span(ctx.span_id()).iter().map(|f| f.0).collect();
    assert_eq!(names, ["task_begin", "task_end"]);
    assert_eq!(TraceContext::current(), None);
}
