//! The ABI between tprof's eBPF programs (`profiler-ebpf`) and its userspace (`profiler-user`).
//!
//! Everything here is `#[repr(C)]`, made of fixed-width integers and byte arrays only (no
//! `bool`, no Rust enums), and laid out without implicit padding: every struct's size is
//! asserted below, so a change on one side that the other does not share fails to compile.
//! Kernel bytes are never transmuted into Rust enums: the decoder reads `kind` as a `u32`.
//!
//! The catalogue (`catalogue.rs`) declares tprof's probes once ([`tprof_probes!`], read by
//! both sides and expanded by `usdt-probes` into its probe sites), the record kinds, and the
//! names of the eBPF object's maps, globals and programs.
#![no_std]

/// Version of the record layout. Bumped on any incompatible change to the structs below.
pub const RECORD_ABI_VERSION: u32 = 3;

/// Longest task or region name copied from the target; longer names are truncated and flagged.
pub const NAME_LEN: usize = 64;
/// Longest log key copied from the target.
pub const LOG_KEY_LEN: usize = 32;
/// Longest log value copied from the target.
pub const LOG_VALUE_LEN: usize = 128;
/// Arguments decoded per USDT site (our widest probe, `task_begin`, has six).
pub const MAX_USDT_ARGS: usize = 6;
/// Nested tasks kept per thread (a request that starts a sub-task on the same thread).
pub const TASK_STACK_DEPTH: usize = 4;
/// `comm` length, as in the kernel.
pub const COMM_LEN: usize = 16;
/// Syscall numbers an AGG record breaks its syscall sums down by (the others are summed
/// under [`AGG_OTHER_NR`]).
pub const AGG_SYSCALLS: usize = 4;
/// The syscall "number" of the sums of syscalls beyond the [`AGG_SYSCALLS`] slots.
pub const AGG_OTHER_NR: i32 = -2;
/// Kernel frames kept in a KSTACK record.
pub const KSTACK_DEPTH: usize = 48;
/// `OffCpuRecord::ustack_id` of a long block in a syscall: its user stack is taken when the
/// syscall returns and follows in a USTACK record.
pub const USTACK_DEFERRED: i32 = -2;

mod catalogue;
pub mod unattr;
pub use catalogue::{globals, kind, maps, probe, programs, ArgKind, ProbeArg, ProbeDef};

/// Identity of a task (request): W3C trace-id (as two big-endian halves) and span-id.
/// An all-zero `TaskId` means "no task".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TaskId {
    pub trace_hi: u64,
    pub trace_lo: u64,
    pub span_id: u64,
}

impl TaskId {
    pub const fn is_none(&self) -> bool {
        self.span_id == 0 && self.trace_hi == 0 && self.trace_lo == 0
    }
}

/// First field of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    /// One of [`kind`].
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the event, or at its end for intervals.
    pub ts_ns: u64,
    /// tgid of the thread the record is about.
    pub pid: u32,
    pub tid: u32,
    /// The thread's current task when the event happened.
    pub task: TaskId,
}

/// A string passed by the target: where it was, and what was copied of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrRef {
    /// The target's pointer (so userspace can retry an unreadable string from
    /// `/proc/PID/mem`: the page may simply not have been faulted in yet).
    pub ptr: u64,
    /// Bytes copied; when [`strflag::UNREADABLE`], the bytes wanted (already clamped).
    pub len: u32,
    /// [`strflag`] bits.
    pub flags: u32,
}

/// `TASK_BEGIN`, `TASK_ATTACH`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TaskRecord {
    pub header: Header,
    pub parent_span_id: u64,
    pub name: StrRef,
    pub name_buf: [u8; NAME_LEN],
}

/// `TASK_END`, `TASK_DETACH`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskEndRecord {
    pub header: Header,
    /// Records about this task the kernel could not queue (ring buffer full).
    pub dropped: u64,
}

/// `REGION_BEGIN`, `REGION_END`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RegionRecord {
    pub header: Header,
    pub name: StrRef,
    pub name_buf: [u8; NAME_LEN],
}

/// `LOG`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LogRecord {
    pub header: Header,
    pub key: StrRef,
    pub value: StrRef,
    pub key_buf: [u8; LOG_KEY_LEN],
    pub value_buf: [u8; LOG_VALUE_LEN],
}

/// Bits of [`StrRef::flags`].
pub mod strflag {
    /// The target passed a longer string than tprof copies.
    pub const TRUNCATED: u32 = 1;
    /// The kernel could not read the target's pointer (bad pointer, or page not present).
    pub const UNREADABLE: u32 = 2;
    /// Set by userspace: read later from `/proc/PID/mem` after the kernel could not.
    pub const LATE: u32 = 4;
    /// On the name of a `TASK_BEGIN` or `TASK_ATTACH` record only, set by the kernel: the
    /// thread was already [`TASK_STACK_DEPTH`](crate::TASK_STACK_DEPTH) tasks deep, so the
    /// task was not pushed on its task stack and its time on that thread is not tracked.
    /// Not a property of the string: userspace takes it off the name's flags.
    pub const TASK_UNTRACKED: u32 = 1 << 16;
    /// Set by the kernel on a foreign log value (`usdt-probes/MAPPING.md`, `int(...)`): the
    /// bytes are integers, each one byte (1: signed) then 64 bits little-endian; userspace
    /// shows them in decimal, joined by `/`, and takes the flag off.
    pub const INTS: u32 = 8;
}

/// `ON_CPU`: the thread ran from `start_ns` to `header.ts_ns` for `header.task`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OnCpuRecord {
    pub header: Header,
    pub start_ns: u64,
    /// Of the slice, the time the hypervisor ran something else (steal): not the task's.
    pub steal_ns: u64,
}

/// `OFF_CPU`: the thread left the CPU at `start_ns` in state `state`, became runnable at
/// `runnable_ns` (woken, or at once if preempted) and ran again at `header.ts_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OffCpuRecord {
    pub header: Header,
    pub start_ns: u64,
    /// When it became runnable; 0 if no wakeup was seen (attributed as blocked throughout).
    pub runnable_ns: u64,
    /// `prev_state` at switch-out (0 = runnable, i.e. preempted).
    pub state: u32,
    /// Syscall number the thread was in when it left the CPU, or -1.
    pub syscall_nr: i32,
    /// Who woke it (see [`waker`]).
    pub waker_flags: u32,
    pub waker_pid: u32,
    pub waker_tid: u32,
    pub _pad: u32,
    pub waker_comm: [u8; COMM_LEN],
    /// The waker's own current task, if it had one.
    pub waker_task: TaskId,
    /// `STACKS` ids of the kernel and user stacks at switch-out (-1: not taken or lost).
    pub kstack_id: i32,
    pub ustack_id: i32,
}

/// Bits of `OffCpuRecord::waker_flags`.
pub mod waker {
    /// A wakeup was seen; `waker_pid`/`waker_tid`/`waker_comm` are valid.
    pub const SEEN: u32 = 1;
    /// The wakeup ran in interrupt context or a kernel thread: there is no user waker.
    pub const KERNEL: u32 = 2;
    /// `waker_task` is valid.
    pub const HAS_TASK: u32 = 4;
    /// The thread was preempted (runnable at switch-out), not woken.
    pub const PREEMPTED: u32 = 8;
    /// Woken from a softirq that ran while `waker_pid`/`waker_tid` was in a syscall on that
    /// CPU (e.g. a loopback send processes the receive path right away): most likely that
    /// thread's own doing, though an interrupt arriving then would look the same.
    pub const SOFTIRQ: u32 = 16;
    /// The switch-in of this interval was not seen: it ends at the thread's next sign of
    /// life instead (counted as `anomaly::MISSED_SWITCH_IN`).
    pub const END_INFERRED: u32 = 32;
}

/// `SYSCALL`: syscall `nr` ran from `start_ns` to `header.ts_ns` and returned `ret`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallRecord {
    pub header: Header,
    pub start_ns: u64,
    pub ret: i64,
    pub nr: u32,
    pub _pad: u32,
}

/// How one USDT argument is fetched, in the style of libbpf's `usdt.bpf.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsdtArg {
    /// Constant value (`ARG_CONST`), memory displacement (`ARG_MEM`), or what is added to the
    /// register (`ARG_REG`: 0 but for `$sym`, the distance of a symbol from the probe site).
    pub value: i64,
    /// One of [`arg`].
    pub kind: u8,
    /// Size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// 1 when the value is signed and is sign-extended from `size`.
    pub signed: u8,
    /// Index scale for `disp(%base,%index,scale)`.
    pub scale: u8,
    /// Offset of the (base) register in `struct pt_regs` ([`NO_REG`] for a memory operand
    /// without base: `(,%rax,8)` or an absolute address).
    pub reg_off: u16,
    /// Offset of the index register in `struct pt_regs`, or [`NO_REG`].
    pub index_reg_off: u16,
}

/// "No index register" in [`UsdtArg::index_reg_off`].
pub const NO_REG: u16 = u16::MAX;

/// Kinds of [`UsdtArg`].
pub mod arg {
    /// `8@$5`: a constant.
    pub const CONST: u8 = 1;
    /// `-4@%edi`: a register value.
    pub const REG: u8 = 2;
    /// `-4@-20(%rbp)` or `8@16(%rax,%rbx,8)`: a value in the target's memory.
    pub const MEM: u8 = 3;
}

/// Per-site spec, stored in the `USDT_SPECS` map under the site's attach cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsdtSpec {
    /// One of [`probe`]. For a foreign site, the probe whose program handles it (the first
    /// action's event: [`probe::TASK_END`] alone goes to the fast program).
    pub probe: u32,
    pub nargs: u32,
    /// The arguments fetched. For a foreign site, only those its actions use, remapped by
    /// userspace into the slots the actions name.
    pub args: [UsdtArg; MAX_USDT_ARGS],
    /// 0 for tprof's own probes; else a foreign site (a mapping, `usdt-probes/MAPPING.md`)
    /// and how many of `actions` it runs, in order.
    pub nactions: u32,
    pub _pad: u32,
    pub actions: [ForeignAction; MAX_FOREIGN_ACTIONS],
}

/// Most tprof events one foreign probe site stands for.
pub const MAX_FOREIGN_ACTIONS: usize = 4;
/// Longest fixed text (region name, log key) of a [`ForeignAction`].
pub const FOREIGN_TEXT_LEN: usize = 32;

/// One tprof event a foreign probe site stands for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForeignAction {
    /// [`probe::TASK_BEGIN`], [`probe::TASK_END`], [`probe::REGION_BEGIN`],
    /// [`probe::REGION_END`] or [`probe::LOG`].
    pub event: u8,
    /// How the value (task name, log value) is read: one of [`foreign`].
    pub form: u8,
    /// The value's argument slot (`args[arg]`).
    pub arg: u8,
    /// [`foreign::STR`]: the length's slot; [`foreign::INTS`]: how many consecutive slots
    /// from `arg` (joined by `/`).
    pub arg2: u8,
    /// Task begin: [`foreign::TASK_SQL`] and friends, carried in the generated trace-id.
    pub flags: u8,
    /// Bytes of `text` used.
    pub text_len: u8,
    pub _pad: [u8; 2],
    /// Region name or log key.
    pub text: [u8; FOREIGN_TEXT_LEN],
}

/// Value forms and task flags of [`ForeignAction`], and the generated ids of foreign tasks.
pub mod foreign {
    /// No value (task end, regions: their name is the action's text).
    pub const NONE: u8 = 0;
    /// A NUL-terminated C string at the argument's address (bounded read; a string that
    /// fills the buffer is flagged truncated).
    pub const CSTR: u8 = 1;
    /// A pointer argument and a length argument.
    pub const STR: u8 = 2;
    /// Integers (each as declared by its note: signed or not), in decimal, joined by `/`
    /// (formatted by userspace: `strflag::INTS`).
    pub const INTS: u8 = 3;

    /// Task flag: the name is SQL, normalized by userspace (literals become `$1`...).
    pub const TASK_SQL: u8 = 1;
    /// Task flag: the SQL may carry a sqlcommenter `traceparent` (userspace re-keys the task).
    pub const TASK_SQLCOMMENTER: u8 = 2;

    /// The trace-ids the kernel generates for foreign tasks (which carry none) are
    /// `GENERATED_TRACE_HI | flags` (high half: tprof's marker, then the task's flags) and a
    /// random low half; their span-ids are random. A valid W3C trace-id: exports need no
    /// special case, and userspace tells them apart by the marker.
    pub const GENERATED_TRACE_HI: u64 = 0x7470_726f_6667_0000;
    /// Mask of the marker in a trace-id's high half.
    pub const GENERATED_MASK: u64 = 0xffff_ffff_ffff_0000;

    /// Whether a trace-id high half is one the kernel generated.
    pub const fn is_generated(trace_hi: u64) -> bool {
        trace_hi & GENERATED_MASK == GENERATED_TRACE_HI
    }
    /// The task flags of a generated trace-id high half.
    pub const fn flags(trace_hi: u64) -> u8 {
        (trace_hi & 0xff) as u8
    }
    /// Key of the log the kernel adds to a generated task that a new one replaced on its
    /// thread before its own end probe fired (the program errored out of it).
    pub const IMPLICIT_END_KEY: &[u8] = b"tprof.implicit_end";
}

/// Slots of the per-CPU `ANOMALIES` counters: scheduler events the programs expected
/// and did not see. Reported by userspace, never silently absorbed.
pub mod anomaly {
    /// A thread carrying a task ran (fired a probe, or was switched out) although its last
    /// switch-in was not seen: the off-CPU interval in between is lost.
    pub const MISSED_SWITCH_IN: u32 = 0;
    /// A blocking stack could not be stored (stack map full or hash collision).
    pub const STACK_LOST: u32 = 1;
    /// A thread could not be tracked: the kernel's thread map was full.
    pub const THREADS_FULL: u32 = 2;
    /// A forked child could not be followed from its first instruction: the kernel's map
    /// of children awaiting adoption was full (userspace adopts it from its PROC record).
    pub const FORKED_FULL: u32 = 3;
    /// An on-CPU slice of a task-carrying thread disagreed with the kernel's runtime
    /// accounting of the thread: a switch-out/switch-in pair was lost unseen.
    pub const RUNTIME_MISMATCH: u32 = 4;
    /// A traced process exited while the kernel's map of exited processes was full: a new
    /// process given its pid before userspace read the exit may be traced by mistake.
    pub const EXITED_FULL: u32 = 5;
    /// The time or a syscall outside tasks of a traced process could not be counted: the
    /// kernel's per-process (or in-flight syscall) map was full.
    pub const UNATTR_FULL: u32 = 6;
    pub const COUNT: u32 = 7;
}

/// Per-CPU interrupt nesting slots in the `IRQ_DEPTH` map: hard interrupts (and hrtimer
/// expiry), and softirqs.
pub const IRQ_HARD: u32 = 0;
pub const IRQ_SOFT: u32 = 1;

/// Offsets into `struct task_struct`, read from the running kernel's BTF by userspace and
/// passed to the eBPF programs as a global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    /// `task_struct.flags` (for `PF_KTHREAD`).
    pub task_flags: u32,
    /// `task_struct.se.sum_exec_runtime`: the CPU time the scheduler accounted to the
    /// thread, exact at each context switch (0: not found in BTF, no cross-check).
    pub task_runtime: u32,
    /// `task_struct.se.cfs_rq`, `cfs_rq.rq` and `rq.prev_steal_time_rq`: the hypervisor's
    /// steal time the thread's run queue has accounted, exact at each context switch
    /// (0: not in this kernel, no steal accounting).
    pub se_cfs_rq: u32,
    pub cfs_rq_rq: u32,
    pub rq_steal: u32,
    /// `task_struct.se.prev_sum_exec_runtime`: `sum_exec_runtime` when the fair scheduler
    /// last picked the thread (0: not found, slices whose switch-in was not seen are not
    /// measured; see [`unattr`]).
    pub task_prev_runtime: u32,
}

/// `PF_KTHREAD` in `task_struct.flags`.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// Global configuration for the eBPF programs, set at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub offsets: KernelOffsets,
    /// Non-zero: also stream syscall records.
    pub syscalls: u32,
    /// Non-zero: take kernel and user stacks when a task's thread blocks at least
    /// `stack_ns`.
    pub stacks: u32,
    /// On-CPU slices, off-CPU intervals and syscalls shorter than this are summed per
    /// thread and task in the kernel (AGG records) instead of streamed one by one; 0
    /// streams every one.
    pub detail_ns: u64,
    /// Blocks at least this long get their stacks.
    pub stack_ns: u64,
    /// A task a thread has worked for at least this long (since it began or was attached
    /// there) streams every interval from then on, however short (0: never).
    pub slow_ns: u64,
    /// Non-zero: a process forked by a traced process is traced too, from its first
    /// instruction (it is in the `FORKED` map before it runs).
    pub follow: u32,
    /// Words of the `TRACED_USER` bitmap (one bit per pid, up to the kernel's `pid_max`).
    pub traced_words: u32,
    /// Fault injection for tests (one of [`fault`]; 0 in every real session): scheduler
    /// events of task-carrying threads dropped on purpose, to prove that the checks which
    /// catch lost events catch them.
    pub fault: u32,
    /// Every how many scheduler events of task-carrying threads (per CPU) one is dropped.
    pub fault_every: u32,
}

/// What [`Config::fault`] drops (`tprof attach --inject-fault`, hidden: for tests only).
pub mod fault {
    pub const NONE: u32 = 0;
    /// A switch-in: the thread runs while tprof believes it off the CPU.
    pub const LOSE_SWITCH_IN: u32 = 1;
    /// A switch-out and the thread's next switch-in: the time off the CPU in between looks
    /// like time on it.
    pub const LOSE_SWITCH_PAIR: u32 = 2;
}

/// What a [`ProcRecord`] says happened.
pub mod proc_event {
    /// `pid` was forked by `parent`, a traced process, and is followed.
    pub const FORK: u32 = 1;
    /// Traced process `pid` exec'ed a new program.
    pub const EXEC: u32 = 2;
    /// Traced process `pid` exited (its last thread).
    pub const EXIT: u32 = 3;
}

/// `PROC`: the life of a traced process, for userspace's bookkeeping (its probe sites,
/// symbols and counts); rare, so always streamed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcRecord {
    pub header: Header,
    /// One of [`proc_event`].
    pub event: u32,
    /// The process it is about (a thread group id).
    pub pid: u32,
    /// The forking process, for [`proc_event::FORK`]; else 0.
    pub parent: u32,
    pub _pad: u32,
}

/// Sums for one syscall number in an [`Agg`] (`nr` -1: free slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggSyscall {
    pub nr: i32,
    pub count: u32,
    pub errors: u32,
    pub _pad: u32,
    pub total_ns: u64,
    /// Blocked time inside this syscall (a view of [`Agg::blocked_ns`]).
    pub blocked_ns: u64,
}

/// Short intervals of one thread for one task, summed in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Agg {
    pub oncpu_ns: u64,
    /// Steal within the summed on-CPU slices (not in `oncpu_ns`).
    pub steal_ns: u64,
    pub runq_ns: u64,
    pub blocked_ns: u64,
    /// On-CPU slices summed.
    pub slices: u32,
    /// Off-CPU intervals summed (blocked and/or waiting in the run queue).
    pub offcpu: u32,
    /// Syscalls summed.
    pub syscalls: u32,
    /// On-CPU slices whose length disagreed with the kernel's own runtime accounting of
    /// the thread (scheduler events lost without a trace): counted, and the task flagged.
    pub mismatches: u32,
    pub sys: [AggSyscall; AGG_SYSCALLS],
}

impl Agg {
    pub const fn is_empty(&self) -> bool {
        self.slices == 0 && self.offcpu == 0 && self.syscalls == 0 && self.mismatches == 0
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AggRecord {
    pub header: Header,
    pub agg: Agg,
}

/// Kernel stack of the long block of thread `header.tid` that started at `start_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KStackRecord {
    pub header: Header,
    pub start_ns: u64,
    /// Valid entries of `frames`, innermost first.
    pub nframes: u32,
    pub _pad: u32,
    pub frames: [u64; KSTACK_DEPTH],
}

/// User stack (an id in the STACKS map, -1: lost) of the long blocks of thread
/// `header.tid` whose OFF_CPU records said [`USTACK_DEFERRED`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UStackRecord {
    pub header: Header,
    pub ustack_id: i32,
    pub _pad: u32,
}

/// Per-thread state of the eBPF programs (the THREADS map's values). Kernel-side except
/// at the end of a session, when userspace reads the sums of the tasks still open.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadState {
    /// Short intervals of the innermost task not yet sent (an AGG record).
    pub agg: Agg,
    /// Tasks this thread works for, innermost last (`depth` valid entries).
    pub stack: [TaskId; TASK_STACK_DEPTH],
    /// When each began (or was attached) on this thread.
    pub since: [u64; TASK_STACK_DEPTH],
    pub depth: u32,
    /// `prev_state` at the last switch-out.
    pub state: u32,
    /// Start of the current on-CPU slice of the innermost task (0: none).
    pub oncpu_since: u64,
    /// Switch-out time while off the CPU with a task (0: on the CPU, or no task).
    pub offcpu_since: u64,
    /// When it became runnable while off the CPU (0: not yet).
    pub runnable_since: u64,
    pub sys_start: u64,
    /// Syscall in flight (-1: none).
    pub sys_nr: i32,
    /// Syscall in flight at the last switch-out (-1: none).
    pub offcpu_sys_nr: i32,
    pub waker_flags: u32,
    pub waker_pid: u32,
    pub waker_tid: u32,
    /// Thread group (process) of the thread.
    pub pid: u32,
    pub waker_comm: [u8; COMM_LEN],
    pub waker_task: TaskId,
    /// User stack id taken at the last blocking switch-out outside a syscall (-1: none).
    pub ustack_id: i32,
    /// Non-zero: a long block of the syscall in flight wants the user stack at its return.
    pub ustack_wanted: u32,
    /// At the last switch-in seen with a task: when, and the kernel's runtime of the thread
    /// then (exact at a switch); the next switch-out compares the slice with the kernel's.
    pub in_at: u64,
    pub runtime_at_in: u64,
    /// The run queue's steal time at the start of the current on-CPU piece (a switch-in, or
    /// the last cut of the slice).
    pub steal_mark: u64,
    /// ... and at the last switch-in seen with a task.
    pub steal_at_in: u64,
}

/// Key of the on-CPU sample maps (`SAMPLES_0`/`SAMPLES_1`, value: samples): the sampled
/// thread's current task (all zero: none) in process `pid`, and its stacks in the
/// `SAMPLE_STACKS` map (-1: none, e.g. no kernel stack for a sample taken in user mode).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SampleKey {
    pub task: TaskId,
    pub pid: u32,
    pub ustack_id: i32,
    pub kstack_id: i32,
    pub _pad: u32,
}

/// Slots of the per-CPU `SAMPLE_COUNTS` counters of the on-CPU sampler.
pub mod sample_count {
    /// Samples of threads of traced processes (counted in a SAMPLES map, or lost below).
    pub const TAKEN: u32 = 0;
    /// Samples not counted: the SAMPLES map was full.
    pub const MAP_FULL: u32 = 1;
    /// Samples whose user stack could not be stored (SAMPLE_STACKS full, or a collision).
    pub const USTACK_LOST: u32 = 2;
    /// Samples whose kernel stack could not be stored (a sample in user mode has none: not
    /// counted).
    pub const KSTACK_LOST: u32 = 3;
    pub const COUNT: u32 = 4;
}

// Sizes are part of the ABI: both sides compile these.
const _: () = assert!(core::mem::size_of::<TaskId>() == 24);
const _: () = assert!(core::mem::size_of::<Header>() == 48);
const _: () = assert!(core::mem::size_of::<StrRef>() == 16);
const _: () = assert!(core::mem::size_of::<TaskRecord>() == 48 + 8 + 16 + NAME_LEN);
const _: () = assert!(core::mem::size_of::<TaskEndRecord>() == 56);
const _: () = assert!(core::mem::size_of::<RegionRecord>() == 48 + 16 + NAME_LEN);
const _: () = assert!(core::mem::size_of::<LogRecord>() == 48 + 32 + LOG_KEY_LEN + LOG_VALUE_LEN);
const _: () = assert!(core::mem::size_of::<OnCpuRecord>() == 64);
const _: () = assert!(core::mem::size_of::<OffCpuRecord>() == 48 + 40 + COMM_LEN + 24 + 8);
const _: () = assert!(core::mem::size_of::<SyscallRecord>() == 72);
const _: () = assert!(core::mem::size_of::<UsdtArg>() == 16);
const _: () = assert!(core::mem::size_of::<ForeignAction>() == 8 + FOREIGN_TEXT_LEN);
const _: () = assert!(core::mem::size_of::<UsdtSpec>() == 8 + 16 * MAX_USDT_ARGS + 8 + (8 + FOREIGN_TEXT_LEN) * MAX_FOREIGN_ACTIONS);
const _: () = assert!(core::mem::size_of::<Config>() == 80);
const _: () = assert!(core::mem::size_of::<ProcRecord>() == 48 + 16);
const _: () = assert!(core::mem::size_of::<AggSyscall>() == 32);
const _: () = assert!(core::mem::size_of::<Agg>() == 48 + 32 * AGG_SYSCALLS);
const _: () = assert!(core::mem::size_of::<AggRecord>() == 48 + 48 + 32 * AGG_SYSCALLS);
const _: () = assert!(core::mem::size_of::<KStackRecord>() == 48 + 16 + 8 * KSTACK_DEPTH);
const _: () = assert!(core::mem::size_of::<UStackRecord>() == 56);
const _: () = assert!(core::mem::size_of::<SampleKey>() == 40);
const _: () = assert!(core::mem::size_of::<ThreadState>() == 176 + 32 * TASK_STACK_DEPTH + 64 + COMM_LEN + 24 + 8 + 32);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all these types are #[repr(C)], contain only integers and integer arrays, have
    // no padding (sizes asserted above) and are valid for any bit pattern.
    unsafe impl aya::Pod for super::TaskId {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UsdtSpec {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ThreadState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SampleKey {}
}
