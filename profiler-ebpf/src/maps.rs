//! Maps shared by the programs, and the load-time configuration.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace};
use profiler_common::{kind, Config, SampleKey, ThreadState, UsdtSpec};

/// Set by userspace at load time (`EbpfLoader::set_global`): BTF offsets and switches.
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config {
    offsets: profiler_common::KernelOffsets { task_pid: 0, task_tgid: 0, task_flags: 0, task_runtime: 0, se_cfs_rq: 0, cfs_rq_rq: 0, rq_steal: 0, task_prev_runtime: 0 },
    syscalls: 1,
    stacks: 1,
    detail_ns: 0,
    stack_ns: 0,
    slow_ns: 0,
    follow: 0,
    traced_words: 0,
    fault: 0,
    fault_every: 0,
};

/// One field of CONFIG: `cfg!(detail_ns)`. A volatile read of that field only, which stops
/// the compiler from folding the zero initializer (userspace rewrites CONFIG before load);
/// reading the whole struct would cost a load per field at every use.
#[macro_export]
macro_rules! cfg {
    ($field:ident) => {
        // SAFETY: CONFIG is a plain static, never written by the programs.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::maps::CONFIG.$field)) }
    };
}

/// The bit of `tgid` in the TRACED_* bitmaps: (word, mask).
#[inline(always)]
pub fn traced_bit(tgid: u32) -> (u32, u64) {
    (tgid >> 6, 1u64 << (tgid & 63))
}

/// Whether thread group `tgid` is one tprof traces: its bit is set in TRACED_USER, or it
/// is a child forked since userspace last looked (FORKED). An array lookup (inlined by the
/// verifier) for every process the session does not trace; the hash lookup only while a
/// followed child waits to be adopted (a poll interval, ~20 ms).
#[inline(always)]
pub fn traced_tgid(tgid: u32) -> bool {
    let (word, mask) = traced_bit(tgid);
    if TRACED_USER.get(word).copied().unwrap_or(0) & mask != 0 {
        // The bit outlives its process until userspace reads the exit: a new process
        // given the same pid in between is not the one traced (EXITED). One more array
        // lookup while nothing traced has exited unseen.
        // SAFETY: the value is not kept beyond the check.
        if ANY_EXITED.get(0).copied().unwrap_or(0) == 0 || unsafe { EXITED.get(&tgid).is_none() } {
            return true;
        }
    }
    if ANY_FORKED.get(0).copied().unwrap_or(0) == 0 {
        return false;
    }
    // SAFETY: the value is not kept beyond the check.
    unsafe { FORKED.get(&tgid).is_some() }
}

/// One bit per pid (thread group id): the processes tprof traces (the `--pid`s, members
/// of the `--cgroup`, mappers of the `--binary`, and the followed children it adopted).
/// Written only by userspace. Sized by userspace to the kernel's `pid_max`.
#[map]
pub static TRACED_USER: Array<u64> = Array::with_max_entries(512, 0);

/// Children forked by traced processes (with `follow`) that userspace has not adopted yet
/// (set their TRACED_USER bit): inserted by the fork program before the child first runs,
/// removed by userspace once adopted, or at the child's exit. A hash, not bits of a
/// bitmap: the BPF target has no atomic read-modify-write, and forks on two CPUs would
/// lose each other's bits.
#[map]
pub static FORKED: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Non-zero when FORKED may hold entries: set by the fork program after its insert,
/// cleared by userspace before it adopts them, so that the common case (nothing forked
/// since) costs no hash lookup.
#[map]
pub static ANY_FORKED: Array<u32> = Array::with_max_entries(1, 0);

/// Traced processes that exited (their last thread), inserted by the exit program, removed
/// by userspace once it has cleared their TRACED_USER bit: until then their pid may already
/// be a new process's, which must not be traced by the stale bit. A forked child of a traced
/// process that gets such a pid leaves this map (it is traced, through FORKED).
#[map]
pub static EXITED: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Non-zero when EXITED may hold entries (set after an insert, cleared by userspace
/// before it looks), so that the common case costs no hash lookup.
#[map]
pub static ANY_EXITED: Array<u32> = Array::with_max_entries(1, 0);

/// Records to userspace. Sized by userspace (`set_max_entries`); no per-event wakeups.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// tid -> what the thread is doing for which task. Only threads of traced processes that
/// ran a task are here, so an untraced thread costs one failed lookup. A plain
/// (preallocated) hash, not an LRU: an LRU may evict a live thread's entry, which silently
/// loses its scheduler events. Entries go when their thread exits (sched_process_exit);
/// when the map is full, new threads are counted (anomaly THREADS_FULL) and not tracked.
#[map]
pub static THREADS: HashMap<u32, ThreadState> = HashMap::with_max_entries(32768, 0);

/// Attach cookie -> how to read that USDT site's arguments.
#[map]
pub static USDT_SPECS: Array<UsdtSpec> = Array::with_max_entries(4096, 0);

/// Per-CPU count of records lost because the ring buffer was full, by record kind.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::MAX + 1, 0);

/// span-id -> records lost for that task; read into its TASK_END record.
#[map]
pub static SPAN_DROPS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// Non-zero once any task lost a record: until then, a task's end skips the SPAN_DROPS
/// lookup (an LRU hash lookup per task end, for nothing, in the common case).
#[map]
pub static ANY_SPAN_DROPS: Array<u64> = Array::with_max_entries(1, 0);

/// Per-CPU interrupt nesting depth (hardirq, softirq, hrtimer expiry): a wakeup seen at a
/// depth above zero has no user waker.
#[map]
pub static IRQ_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(2, 0);

/// Kernel and user stacks of blocked task threads, deduplicated by the kernel.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// Per-CPU counts of expected scheduler events that were not seen (see `anomaly`).
#[map]
pub static ANOMALIES: PerCpuArray<u64> = PerCpuArray::with_max_entries(profiler_common::anomaly::COUNT, 0);

/// Zeroed scratch value used to insert new THREADS entries without a 200-byte stack copy.
#[map]
pub static ZERO_THREAD: PerCpuArray<ThreadState> = PerCpuArray::with_max_entries(1, 0);

/// Fault injection (`Config::fault`, tests only): per-CPU count of scheduler events of
/// task-carrying threads, and the threads whose next switch-in is to be dropped.
#[map]
pub static FAULT_TICK: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static FAULT_PENDING: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// On-CPU samples (see `sample.rs`): (task, stacks) -> count, written in turn with
/// SAMPLES_1 as SAMPLE_SLOT says; userspace reads and clears the one not being written.
#[map]
pub static SAMPLES_0: HashMap<SampleKey, u64> = HashMap::with_max_entries(16384, 0);
#[map]
pub static SAMPLES_1: HashMap<SampleKey, u64> = HashMap::with_max_entries(16384, 0);

/// Which SAMPLES map the sampler writes (0 or 1); written only by userspace.
#[map]
pub static SAMPLE_SLOT: Array<u32> = Array::with_max_entries(1, 0);

/// User and kernel stacks of on-CPU samples (apart from STACKS, so that sampling never
/// takes the blocking stacks' room).
#[map]
pub static SAMPLE_STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// Per-CPU counters of the sampler (`profiler_common::sample_count`).
#[map]
pub static SAMPLE_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(profiler_common::sample_count::COUNT, 0);
