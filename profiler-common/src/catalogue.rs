//! The catalogue of tprof's probes, record kinds, maps and programs, declared once.
//!
//! * [`tprof_probes!`](crate::tprof_probes) is the probe table (ABI v1, `usdt-probes/ABI.md`):
//!   the kernel side and the user side read it through [`probe`] (ids, names, argument
//!   counts, which probes pass strings), and `usdt-probes` expands it into its probe sites
//!   (inline `asm!` needs the names as literals, hence a macro rather than a `const`).
//! * [`kind`] adds the record kinds that are not probes (ON_CPU ..= USTACK) and names them all.
//! * [`maps`], [`globals`] and [`programs`] name what userspace looks up in the eBPF object;
//!   aya-ebpf's `#[map]` takes the static's own name, so the kernel side cannot use these
//!   constants: a test in `profiler-user` checks that the built object has every one.

/// The tprof probes (ABI v1), declared once: `tprof_probes!(callback)` expands to
/// `callback! { ... }` with the provider, then one entry per probe, in id order:
///
/// ```text
/// provider = tprof;
/// $(#[$doc])* $CONST = $id => $name($($arg: $ty),*);
/// ```
///
/// `$CONST` is its [`probe`] constant, `$id` its number (also its record kind), `$name` the
/// probe name (an identifier: `stringify!` it). Each argument is `u64` (one 64-bit note
/// argument) or `str` (two: `<arg>_ptr` and `<arg>_len`, the names ABI.md uses). A probe with
/// a `str` argument passes strings: the kernel handles it with the sleepable USDT program.
#[macro_export]
macro_rules! tprof_probes {
    ($callback:ident) => {
        $callback! {
            provider = tprof;
            /// `tprof:task_begin(trace_hi, trace_lo, span_id, parent_span_id, name_ptr, name_len)`.
            TASK_BEGIN = 1 => task_begin(trace_hi: u64, trace_lo: u64, span_id: u64, parent_span_id: u64, name: str);
            /// `tprof:task_end(trace_hi, trace_lo, span_id)`.
            TASK_END = 2 => task_end(trace_hi: u64, trace_lo: u64, span_id: u64);
            /// `tprof:region_begin(name_ptr, name_len)`, for the thread's current task.
            REGION_BEGIN = 3 => region_begin(name: str);
            /// `tprof:region_end(name_ptr, name_len)`, for the thread's current task.
            REGION_END = 4 => region_end(name: str);
            /// `tprof:log(key_ptr, key_len, value_ptr, value_len)`, for the thread's current task.
            LOG = 5 => log(key: str, value: str);
            /// `tprof:task_attach(trace_hi, trace_lo, span_id, parent_span_id)`: this thread resumes
            /// work for the task (an executor polls its future here).
            TASK_ATTACH = 6 => task_attach(trace_hi: u64, trace_lo: u64, span_id: u64, parent_span_id: u64);
            /// `tprof:task_detach(trace_hi, trace_lo, span_id)`: this thread stops working for the task.
            TASK_DETACH = 7 => task_detach(trace_hi: u64, trace_lo: u64, span_id: u64);
        }
    };
}

/// What one argument of a probe is, as the Rust emitter takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// One 64-bit note argument.
    U64,
    /// Two 64-bit note arguments: the bytes' address, then their length.
    Str,
}

/// One argument of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeArg {
    pub name: &'static str,
    pub kind: ArgKind,
}

impl ProbeArg {
    /// How many 64-bit note arguments it takes.
    pub const fn slots(&self) -> usize {
        match self.kind {
            ArgKind::U64 => 1,
            ArgKind::Str => 2,
        }
    }
}

/// One probe of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeDef {
    /// Its [`probe`] id (and record kind).
    pub id: u32,
    pub name: &'static str,
    pub args: &'static [ProbeArg],
}

impl ProbeDef {
    /// 64-bit arguments in its note (what a site must pass).
    pub const fn nargs(&self) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.args.len() {
            n += self.args[i].slots();
            i += 1;
        }
        n
    }

    /// Whether it passes strings (and so is handled by the sleepable USDT program).
    pub const fn passes_strings(&self) -> bool {
        let mut i = 0;
        while i < self.args.len() {
            if matches!(self.args[i].kind, ArgKind::Str) {
                return true;
            }
            i += 1;
        }
        false
    }

    /// Index of the first note argument of argument `name` (a string's `_ptr`); panics (at
    /// compile time, in a `const`) if there is none.
    pub const fn arg_slot(&self, name: &str) -> usize {
        let mut slot = 0;
        let mut i = 0;
        while i < self.args.len() {
            if str_eq(self.args[i].name, name) {
                return slot;
            }
            slot += self.args[i].slots();
            i += 1;
        }
        panic!("no such probe argument")
    }
}

/// `a == b`, in a `const`.
pub(crate) const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

macro_rules! arg_kind {
    (u64) => {
        ArgKind::U64
    };
    (str) => {
        ArgKind::Str
    };
}

/// Expands the probe table into the probe ids (shared by [`probe`] and [`kind`]) and
/// [`probe::ALL`].
macro_rules! catalogue {
    (
        provider = $provider:ident;
        $( $(#[$doc:meta])* $id_const:ident = $id:literal => $name:ident($($arg:ident: $ty:ident),* $(,)?); )*
    ) => {
        mod probe_ids {
            $( $(#[$doc])* pub const $id_const: u32 = $id; )*
        }

        /// The tprof probes, as numbered in [`UsdtSpec::probe`](crate::UsdtSpec::probe). Names
        /// are those of ABI.md; declared in [`tprof_probes!`](crate::tprof_probes).
        pub mod probe {
            use super::{ArgKind, ProbeArg, ProbeDef};
            pub use super::probe_ids::*;

            /// USDT provider of tprof's probes.
            pub const PROVIDER: &str = stringify!($provider);

            /// Every probe, in id order.
            pub const ALL: &[ProbeDef] = &[$(
                ProbeDef {
                    id: $id,
                    name: stringify!($name),
                    args: &[$(ProbeArg { name: stringify!($arg), kind: arg_kind!($ty) }),*],
                },
            )*];
        }
    };
}

crate::tprof_probes!(catalogue);

impl ProbeDef {
    /// The probe numbered `id`.
    pub const fn by_id(id: u32) -> Option<&'static ProbeDef> {
        let mut i = 0;
        while i < probe::ALL.len() {
            if probe::ALL[i].id == id {
                return Some(&probe::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// The probe named `name` (exact, as in its notes).
    pub const fn by_name(name: &str) -> Option<&'static ProbeDef> {
        let mut i = 0;
        while i < probe::ALL.len() {
            if str_eq(probe::ALL[i].name, name) {
                return Some(&probe::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// The probe numbered `id`, in a `const`; panics at compile time if there is none.
    pub const fn of(id: u32) -> &'static ProbeDef {
        match Self::by_id(id) {
            Some(p) => p,
            None => panic!("no such probe"),
        }
    }
}

/// Declares the record kinds that are not probes: their constants and [`kind::OTHERS`].
macro_rules! record_kinds {
    ($( $(#[$doc:meta])* $kind_const:ident = $id:literal => $name:ident; )*) => {
        $( $(#[$doc])* pub const $kind_const: u32 = $id; )*
        /// The kinds that are not probes: (kind, name).
        pub const OTHERS: &[(u32, &str)] = &[$(($id, stringify!($name))),*];
    };
}

/// Record kinds, the first field of every ring-buffer record. A probe's record has the
/// probe's own number (and name).
pub mod kind {
    pub use super::probe_ids::*;
    use super::probe;

    record_kinds! {
        /// A slice of on-CPU time of a thread while it carried a task.
        ON_CPU = 8 => on_cpu;
        /// A thread carrying a task was off the CPU: blocked and/or waiting in the run queue.
        OFF_CPU = 9 => off_cpu;
        /// A syscall made by a thread carrying a task.
        SYSCALL = 10 => syscall;
        /// Sums of the short intervals (on-CPU slices, off-CPU intervals, syscalls) a thread
        /// spent on a task since its last AGG record, kept in the kernel instead of streamed
        /// (see [`Config::detail_ns`](crate::Config::detail_ns)).
        AGG = 11 => agg;
        /// Kernel stack of a long block, taken when the thread comes back on the CPU.
        KSTACK = 12 => kstack;
        /// User stack of the long blocks of a syscall, taken when the syscall returns.
        USTACK = 13 => ustack;
        /// A traced process forked a process tprof now follows, exec'ed, or exited
        /// ([`ProcRecord`](crate::ProcRecord)).
        PROC = 14 => proc;
    }

    /// Highest kind; sizes the per-CPU drop counters.
    pub const MAX: u32 = max();

    /// Kind names, indexed by kind; index 0 (no kind) is `"unknown"`.
    pub const NAMES: [&str; MAX as usize + 1] = names();

    /// The name of kind `k` (`"unknown"` for a number that is no kind).
    pub fn name(k: u32) -> &'static str {
        NAMES.get(k as usize).copied().unwrap_or(NAMES[0])
    }

    /// The kind named `name`.
    pub fn by_name(name: &str) -> Option<u32> {
        NAMES.iter().position(|n| *n == name).map(|k| k as u32)
    }

    const fn max() -> u32 {
        let mut max = 0;
        let mut i = 0;
        while i < probe::ALL.len() {
            if probe::ALL[i].id > max {
                max = probe::ALL[i].id;
            }
            i += 1;
        }
        let mut i = 0;
        while i < OTHERS.len() {
            if OTHERS[i].0 > max {
                max = OTHERS[i].0;
            }
            i += 1;
        }
        max
    }

    /// Also checks, at compile time, that kinds are numbered 1..=MAX without gaps or repeats.
    const fn names() -> [&'static str; MAX as usize + 1] {
        let mut out = [""; MAX as usize + 1];
        out[0] = "unknown";
        let mut i = 0;
        while i < probe::ALL.len() {
            let k = probe::ALL[i].id as usize;
            assert!(k > 0 && out[k].is_empty(), "two record kinds share a number");
            out[k] = probe::ALL[i].name;
            i += 1;
        }
        let mut i = 0;
        while i < OTHERS.len() {
            let k = OTHERS[i].0 as usize;
            assert!(k > 0 && out[k].is_empty(), "two record kinds share a number");
            out[k] = OTHERS[i].1;
            i += 1;
        }
        let mut k = 0;
        while k < out.len() {
            assert!(!out[k].is_empty(), "a gap in the record kinds");
            k += 1;
        }
        out
    }
}

/// Names of the maps of the eBPF object (the `#[map]` statics of `profiler-ebpf/src/maps.rs`).
pub mod maps {
    /// Ring buffer of records to userspace.
    pub const EVENTS: &str = "EVENTS";
    /// tid -> per-thread state.
    pub const THREADS: &str = "THREADS";
    /// Attach cookie -> USDT site spec.
    pub const USDT_SPECS: &str = "USDT_SPECS";
    /// Per-CPU records lost, by kind.
    pub const DROPS: &str = "DROPS";
    /// span-id -> records lost for that task.
    pub const SPAN_DROPS: &str = "SPAN_DROPS";
    /// Whether any task lost a record.
    pub const ANY_SPAN_DROPS: &str = "ANY_SPAN_DROPS";
    /// Per-CPU interrupt nesting depth.
    pub const IRQ_DEPTH: &str = "IRQ_DEPTH";
    /// Stacks of blocked task threads.
    pub const STACKS: &str = "STACKS";
    /// Per-CPU counts of [`anomaly`](crate::anomaly) slots.
    pub const ANOMALIES: &str = "ANOMALIES";
    /// Zeroed scratch thread state.
    pub const ZERO_THREAD: &str = "ZERO_THREAD";
    /// One bit per traced pid, written by userspace.
    pub const TRACED_USER: &str = "TRACED_USER";
    /// Followed children not adopted by userspace yet.
    pub const FORKED: &str = "FORKED";
    /// Whether FORKED may hold entries.
    pub const ANY_FORKED: &str = "ANY_FORKED";
    /// Traced processes that exited and userspace has not untraced yet.
    pub const EXITED: &str = "EXITED";
    /// Whether EXITED may hold entries.
    pub const ANY_EXITED: &str = "ANY_EXITED";
    /// Fault injection (tests only): per-CPU event count, threads whose switch-in is due.
    pub const FAULT_TICK: &str = "FAULT_TICK";
    pub const FAULT_PENDING: &str = "FAULT_PENDING";
    /// Per process, per CPU: its threads' slices and their time outside tasks
    /// ([`unattr`](crate::unattr)).
    pub const UNATTR_CPU: &str = "UNATTR_CPU";
    /// Per (process, syscall), per CPU: syscalls made outside tasks.
    pub const UNATTR_SYS: &str = "UNATTR_SYS";
    /// Per CPU: the traced thread on it, from its switch-in seen.
    pub const UNATTR_SLICE: &str = "UNATTR_SLICE";
    /// tid -> the syscall in flight of a thread without a task.
    pub const UNATTR_SYS_START: &str = "UNATTR_SYS_START";
    /// On-CPU samples, (task, stacks) -> count: two maps, written in turn (see SAMPLE_SLOT).
    pub const SAMPLES_0: &str = "SAMPLES_0";
    pub const SAMPLES_1: &str = "SAMPLES_1";
    /// Which SAMPLES map the sampler writes (0 or 1), flipped by userspace.
    pub const SAMPLE_SLOT: &str = "SAMPLE_SLOT";
    /// Stacks of on-CPU samples.
    pub const SAMPLE_STACKS: &str = "SAMPLE_STACKS";
    /// Per-CPU counters of the sampler (`sample_count`).
    pub const SAMPLE_COUNTS: &str = "SAMPLE_COUNTS";
    /// All of the above.
    pub const ALL: [&str; 26] = [
        EVENTS, THREADS, USDT_SPECS, DROPS, SPAN_DROPS, ANY_SPAN_DROPS, IRQ_DEPTH, STACKS, ANOMALIES, ZERO_THREAD, TRACED_USER,
        FORKED, ANY_FORKED, EXITED, ANY_EXITED, FAULT_TICK, FAULT_PENDING, UNATTR_CPU, UNATTR_SYS, UNATTR_SLICE, UNATTR_SYS_START,
        SAMPLES_0, SAMPLES_1, SAMPLE_SLOT, SAMPLE_STACKS, SAMPLE_COUNTS,
    ];
}

/// Globals of the eBPF object that userspace sets at load time.
pub mod globals {
    /// The [`Config`](crate::Config).
    pub const CONFIG: &str = "CONFIG";
    /// aya-log's level switch (aya-log-ebpf's global).
    pub const AYA_LOG_LEVEL: &str = "AYA_LOG_LEVEL";
    /// All of the above.
    pub const ALL: [&str; 2] = [CONFIG, AYA_LOG_LEVEL];
}

/// Names of the programs of the eBPF object.
pub mod programs {
    /// The USDT program of the probes that pass strings (sleepable).
    pub const USDT: &str = "tprof_usdt";
    /// The USDT program of the other probes (not sleepable: cheaper per hit).
    pub const USDT_FAST: &str = "tprof_usdt_fast";
    /// The perf_event program of the on-CPU sampler (`--sample-hz`).
    pub const SAMPLE: &str = "tprof_sample";
    /// The tp_btf programs, each named after its tracepoint. Interrupt exits come before
    /// their entries: attached in this order, no entry is ever counted without its exit.
    pub const TRACEPOINTS: [&str; 13] = [
        "irq_handler_exit",
        "softirq_exit",
        "hrtimer_expire_exit",
        "irq_handler_entry",
        "softirq_entry",
        "hrtimer_expire_entry",
        "sched_switch",
        "sched_waking",
        "sys_enter",
        "sys_exit",
        "sched_process_exit",
        "sched_process_exec",
        "sched_process_fork",
    ];
    /// The USDT program that handles probe `id`: [`USDT`] for the probes that pass strings,
    /// [`USDT_FAST`] for the others (and for an unknown id).
    pub const fn usdt_for(id: u32) -> &'static str {
        match super::ProbeDef::by_id(id) {
            Some(p) if p.passes_strings() => USDT,
            _ => USDT_FAST,
        }
    }
}

// The widest probe fits the kernel's per-site argument array.
const _: () = {
    let mut i = 0;
    while i < probe::ALL.len() {
        assert!(probe::ALL[i].nargs() <= crate::MAX_USDT_ARGS, "a probe has more arguments than MAX_USDT_ARGS");
        i += 1;
    }
};

#[cfg(test)]
mod tests;
