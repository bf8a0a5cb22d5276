//! The probe sites: one `nop` each, described by a SystemTap SDT v3 note.
//!
//! Each probe function is `#[inline(always)]`, so every call site in the application becomes
//! its own one-byte `nop` plus a `.note.stapsdt` entry (provider `tprof`, the probe name, the
//! `nop`'s address, the `.stapsdt.base` address and the probe's semaphore address, and
//! argument specs such as `8@%rdi`). Nobody attached: the `nop` is all it costs. A tracer
//! (tprof, bpftrace, perf) puts a uprobe on the `nop` and reads the arguments from the
//! registers named in the note. The layout is that of `<sys/sdt.h>`; see `ABI.md` and
//! <https://sourceware.org/systemtap/wiki/UserSpaceProbeImplementation>.
//!
//! The one-byte `nop` is deliberate: on kernel 6.18 the five-byte "optimized uprobe" path
//! measured ~9% slower than the int3 path here (`docs/performance.md`, cost floors).

use core::cell::UnsafeCell;

/// A USDT semaphore: a `u16` in the `.probes` section that the kernel increments for each
/// uprobe created on the probe with a `ref_ctr_offset`, and decrements when it goes away.
#[repr(transparent)]
pub struct Semaphore(UnsafeCell<u16>);

// SAFETY: the value is only ever read (volatile) by this process; only the kernel writes it.
unsafe impl Sync for Semaphore {}

impl Semaphore {
    const fn new() -> Self {
        Self(UnsafeCell::new(0))
    }

    /// True when at least one tracer armed the semaphore.
    #[inline(always)]
    pub fn armed(&self) -> bool {
        // SAFETY: the pointer comes from a live static and is aligned; the kernel updates the
        // value from outside, which is why the read is volatile.
        unsafe { core::ptr::read_volatile(self.0.get()) != 0 }
    }
}

macro_rules! semaphores {
    ($($sem:ident),* $(,)?) => {$(
        #[used]
        #[link_section = ".probes"]
        pub(crate) static $sem: Semaphore = Semaphore::new();
    )*};
}

semaphores!(TASK_BEGIN_SEM, TASK_END_SEM, REGION_BEGIN_SEM, REGION_END_SEM, LOG_SEM, TASK_ATTACH_SEM, TASK_DETACH_SEM);

/// Emits one probe site: the `nop`, its `.note.stapsdt` entry and (once per object) the
/// `.stapsdt.base` section, kept by `--gc-sections` thanks to the `R` (retain) flag.
macro_rules! sdt_probe {
    ($name:literal, $sem:ident, $spec:literal, $($operands:tt)*) => {
        // SAFETY: the template only emits a `nop` into the code stream and data into two
        // sections of their own; it touches no register, memory, stack or flag.
        unsafe {
            core::arch::asm!(
                "990: nop",
                ".pushsection .note.stapsdt,\"\",\"note\"",
                ".balign 4",
                ".4byte 992f-991f, 994f-993f, 3",
                "991: .asciz \"stapsdt\"",
                "992: .balign 4",
                "993: .8byte 990b",
                ".8byte _.stapsdt.base",
                ".8byte {sem}",
                ".asciz \"tprof\"",
                concat!(".asciz \"", $name, "\""),
                concat!(".asciz \"", $spec, "\""),
                "994: .balign 4",
                ".popsection",
                ".ifndef _.stapsdt.base",
                ".pushsection .stapsdt.base,\"aGR\",\"progbits\",.stapsdt.base,comdat",
                ".weak _.stapsdt.base",
                ".hidden _.stapsdt.base",
                "_.stapsdt.base: .space 1",
                ".size _.stapsdt.base, 1",
                ".popsection",
                ".endif",
                sem = sym $sem,
                $($operands)*
                options(att_syntax, readonly, nostack, preserves_flags),
            )
        }
    };
}

/// `tprof:task_begin(trace_hi, trace_lo, span_id, parent_span_id, name_ptr, name_len)`.
#[inline(always)]
pub fn task_begin(trace_hi: u64, trace_lo: u64, span_id: u64, parent_span_id: u64, name: &str) {
    #[cfg(test)]
    recorder::push("task_begin", span_id);
    sdt_probe!(
        "task_begin", TASK_BEGIN_SEM, "8@{a0} 8@{a1} 8@{a2} 8@{a3} 8@{a4} 8@{a5}",
        a0 = in(reg) trace_hi, a1 = in(reg) trace_lo, a2 = in(reg) span_id,
        a3 = in(reg) parent_span_id, a4 = in(reg) name.as_ptr(), a5 = in(reg) name.len(),
    );
}

/// `tprof:task_end(trace_hi, trace_lo, span_id)`.
#[inline(always)]
pub fn task_end(trace_hi: u64, trace_lo: u64, span_id: u64) {
    #[cfg(test)]
    recorder::push("task_end", span_id);
    sdt_probe!(
        "task_end", TASK_END_SEM, "8@{a0} 8@{a1} 8@{a2}",
        a0 = in(reg) trace_hi, a1 = in(reg) trace_lo, a2 = in(reg) span_id,
    );
}

/// `tprof:task_attach(trace_hi, trace_lo, span_id, parent_span_id)`: this thread resumes
/// work for the task (an executor polls its future here).
#[inline(always)]
pub fn task_attach(trace_hi: u64, trace_lo: u64, span_id: u64, parent_span_id: u64) {
    #[cfg(test)]
    recorder::push("task_attach", span_id);
    sdt_probe!(
        "task_attach", TASK_ATTACH_SEM, "8@{a0} 8@{a1} 8@{a2} 8@{a3}",
        a0 = in(reg) trace_hi, a1 = in(reg) trace_lo, a2 = in(reg) span_id,
        a3 = in(reg) parent_span_id,
    );
}

/// `tprof:task_detach(trace_hi, trace_lo, span_id)`: this thread stops working for the task.
#[inline(always)]
pub fn task_detach(trace_hi: u64, trace_lo: u64, span_id: u64) {
    #[cfg(test)]
    recorder::push("task_detach", span_id);
    sdt_probe!(
        "task_detach", TASK_DETACH_SEM, "8@{a0} 8@{a1} 8@{a2}",
        a0 = in(reg) trace_hi, a1 = in(reg) trace_lo, a2 = in(reg) span_id,
    );
}

/// `tprof:region_begin(name_ptr, name_len)`, for the thread's current task.
#[inline(always)]
pub fn region_begin(name: &str) {
    #[cfg(test)]
    recorder::push("region_begin", 0);
    sdt_probe!(
        "region_begin", REGION_BEGIN_SEM, "8@{a0} 8@{a1}",
        a0 = in(reg) name.as_ptr(), a1 = in(reg) name.len(),
    );
}

/// `tprof:region_end(name_ptr, name_len)`, for the thread's current task.
#[inline(always)]
pub fn region_end(name: &str) {
    #[cfg(test)]
    recorder::push("region_end", 0);
    sdt_probe!(
        "region_end", REGION_END_SEM, "8@{a0} 8@{a1}",
        a0 = in(reg) name.as_ptr(), a1 = in(reg) name.len(),
    );
}

/// `tprof:log(key_ptr, key_len, value_ptr, value_len)`, for the thread's current task.
#[inline(always)]
pub fn log(key: &str, value: &str) {
    #[cfg(test)]
    recorder::push("log", 0);
    sdt_probe!(
        "log", LOG_SEM, "8@{a0} 8@{a1} 8@{a2} 8@{a3}",
        a0 = in(reg) key.as_ptr(), a1 = in(reg) key.len(),
        a2 = in(reg) value.as_ptr(), a3 = in(reg) value.len(),
    );
}

/// True when a tracer has armed the tprof probes (tprof arms every probe's semaphore on
/// attach and the kernel disarms them when it detaches or dies). Costs one load.
#[inline(always)]
pub fn enabled() -> bool {
    TASK_BEGIN_SEM.armed()
}

/// True when a tracer armed the `log` probe: guard costly log values with it.
#[inline(always)]
pub fn log_enabled() -> bool {
    LOG_SEM.armed()
}

/// Test-only record of which probes fired, on which thread, for which span: lets unit tests
/// check the sequencing logic (attach/detach per poll, end on unwind) without a kernel. The
/// real probe path is covered by the end-to-end tests in `tests/`.
#[cfg(test)]
pub(crate) mod recorder {
    use std::sync::Mutex;
    use std::thread::ThreadId;

    pub(crate) static FIRED: Mutex<Vec<(&'static str, u64, ThreadId)>> = Mutex::new(Vec::new());

    pub(crate) fn push(probe: &'static str, span_id: u64) {
        if let Ok(mut v) = FIRED.lock() {
            v.push((probe, span_id, std::thread::current().id()));
        }
    }

    /// Probes fired for `span_id`, in order, with their threads.
    pub(crate) fn for_span(span_id: u64) -> Vec<(&'static str, ThreadId)> {
        FIRED.lock().map(|v| v.iter().filter(|f| f.1 == span_id).map(|f| (f.0, f.2)).collect()).unwrap_or_default()
    }

    /// Names of region/log probes fired on this thread since `mark`.
    pub(crate) fn len() -> usize {
        FIRED.lock().map(|v| v.len()).unwrap_or(0)
    }

    pub(crate) fn since(mark: usize) -> Vec<(&'static str, u64, ThreadId)> {
        FIRED.lock().map(|v| v.get(mark..).map(|s| s.to_vec()).unwrap_or_default()).unwrap_or_default()
    }
}
