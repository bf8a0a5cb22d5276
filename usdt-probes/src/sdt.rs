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
//! The probes are not written out here: their names, arguments and docs come from the probe
//! table in `profiler-common` (`tprof_probes!`), which tprof itself reads, and the macros
//! below turn each entry into a semaphore and an `#[inline(always)]` function.
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

/// The operands of one probe site, in order: `u64` arguments as they are, `str` arguments as
/// address and length (tt-muncher: `in(reg)` operands cannot come out of a macro one by one).
macro_rules! sdt_site {
    ($probe:tt, $args:tt, [$($ops:tt)*]) => {
        sdt_probe!($probe, $args, $($ops)*)
    };
    ($probe:tt, $args:tt, [$($ops:tt)*] $arg:ident: u64 $(, $($rest:tt)*)?) => {
        sdt_site!($probe, $args, [$($ops)* in(reg) $arg,] $($($rest)*)?)
    };
    ($probe:tt, $args:tt, [$($ops:tt)*] $arg:ident: str $(, $($rest:tt)*)?) => {
        sdt_site!($probe, $args, [$($ops)* in(reg) $arg.as_ptr(), in(reg) $arg.len(),] $($($rest)*)?)
    };
}

/// The note's argument spec for one probe argument: `8@%reg` per 64-bit value, the register
/// filled in by `asm!`.
macro_rules! sdt_spec {
    (u64) => {
        "8@{}"
    };
    (str) => {
        "8@{} 8@{}"
    };
}

/// The Rust type a probe argument is taken as.
macro_rules! sdt_type {
    (u64) => { u64 };
    (str) => { &str };
}

/// The `span_id` argument of a probe, or 0 (what the test recorder files it under).
#[cfg(test)]
macro_rules! span_arg {
    () => { 0 };
    (@is span_id $arg:ident; $($rest:tt)*) => { $arg };
    (@is $other:ident $arg:ident; $($rest:tt)*) => { span_arg!($($rest)*) };
    ($arg:ident: $ty:ident $(, $($rest:tt)*)?) => { span_arg!(@is $arg $arg; $($($rest)*)?) };
}

/// Emits one probe site: the `nop`, its `.note.stapsdt` entry and (once per object) the
/// `.stapsdt.base` section, kept by `--gc-sections` thanks to the `R` (retain) flag.
macro_rules! sdt_probe {
    (
        ($provider:ident, $name:ident, $sem:ident),
        ($first:ident: $first_ty:ident $(, $arg:ident: $ty:ident)*),
        $($operands:tt)*
    ) => {
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
                concat!(".asciz \"", stringify!($provider), "\""),
                concat!(".asciz \"", stringify!($name), "\""),
                concat!(".asciz \"", sdt_spec!($first_ty) $(, " ", sdt_spec!($ty))*, "\""),
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
                $($operands)*
                sem = sym sem::$sem,
                options(att_syntax, readonly, nostack, preserves_flags),
            )
        }
    };
}

/// Expands profiler-common's probe table into one semaphore (in `sem`, named after the
/// probe) and one `#[inline(always)]` probe function per probe.
macro_rules! probes {
    (
        provider = $provider:ident;
        $( $(#[$doc:meta])* $id_const:ident = $id:literal => $name:ident($($arg:ident: $ty:ident),* $(,)?); )*
    ) => {
        /// The semaphores, one per probe.
        mod sem {
            /// Starts the `.probes` section on a page of its own. The kernel arms a
            /// semaphore of a process that execs through the first writable mapping of the
            /// file that covers its file offset; when the page holding the semaphores is
            /// also the last file page of the previous writable segment (a layout the
            /// linker produces at some binary sizes), the kernel arms that other mapping
            /// and the new program reads its probes disarmed. A page-aligned section keeps
            /// the semaphores' file page in one mapping. (Costs up to 4 KiB of padding.)
            #[repr(C, align(4096))]
            struct PageStart([u8; 0]);

            #[used]
            #[link_section = ".probes"]
            static PAGE_START: PageStart = PageStart([]);

            $(
                #[used]
                #[link_section = ".probes"]
                pub(crate) static $id_const: super::Semaphore = super::Semaphore::new();
            )*
        }

        $(
            $(#[$doc])*
            #[inline(always)]
            pub fn $name($($arg: sdt_type!($ty)),*) {
                #[cfg(test)]
                recorder::push(stringify!($name), span_arg!($($arg: $ty),*));
                sdt_site!(($provider, $name, $id_const), ($($arg: $ty),*), [] $($arg: $ty),*);
            }
        )*
    };
}

profiler_common::tprof_probes!(probes);

/// True when a tracer has armed the tprof probes (tprof arms every probe's semaphore on
/// attach and the kernel disarms them when it detaches or dies). Costs one load.
#[inline(always)]
pub fn enabled() -> bool {
    sem::TASK_BEGIN.armed()
}

/// True when a tracer armed the `log` probe: guard costly log values with it.
#[inline(always)]
pub fn log_enabled() -> bool {
    sem::LOG.armed()
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

    /// Task names given to `task_begin`, by span-id.
    pub(crate) static NAMES: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());

    pub(crate) fn push_name(span_id: u64, name: &str) {
        if let Ok(mut v) = NAMES.lock() {
            v.push((span_id, name.to_string()));
        }
    }

    /// The name the task `span_id` began with.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn names_of(span_id: u64) -> Option<String> {
        NAMES.lock().ok()?.iter().find(|n| n.0 == span_id).map(|n| n.1.clone())
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
