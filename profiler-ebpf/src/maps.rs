//! Maps shared by the programs, and the load-time configuration.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace};
use profiler_common::{kind, Config, ThreadState, UsdtSpec};

/// Set by userspace at load time (`EbpfLoader::set_global`): BTF offsets and switches.
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config {
    offsets: profiler_common::KernelOffsets { task_pid: 0, task_tgid: 0, task_flags: 0, _pad: 0 },
    syscalls: 1,
    stacks: 1,
    detail_ns: 0,
    stack_ns: 0,
    slow_ns: 0,
    pids: [0; profiler_common::MAX_FILTER_PIDS],
    npids: 0,
    _pad: 0,
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

/// Whether thread group `tgid` is one tprof traces (always true without a pid filter).
/// Cheaper than the THREADS lookup it saves every other process.
#[inline(always)]
pub fn traced_tgid(tgid: u32) -> bool {
    let n = crate::cfg!(npids) as usize;
    if n == 0 {
        return true;
    }
    let mut i = 0;
    while i < profiler_common::MAX_FILTER_PIDS {
        // SAFETY: a plain read of the CONFIG static; `i` is bounded by the array's length.
        if i < n && unsafe { core::ptr::read_volatile(&CONFIG.pids[i]) } == tgid {
            return true;
        }
        i += 1;
    }
    false
}

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
