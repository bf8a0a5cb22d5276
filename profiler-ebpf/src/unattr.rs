//! "Not attributed": the CPU time and syscalls of traced processes' threads while they
//! carry no task, summed per process (see `profiler_common::unattr` for the arithmetic
//! and the edge cases). Called from the scheduler and syscall programs; kept apart so
//! that their task paths stay as they are.
//!
//! * At a switch-in of a traced thread, this CPU's slot remembers the thread and the
//!   kernel's runtime of it then (`se.sum_exec_runtime`, exact at a switch).
//! * Every on-CPU piece charged to a task on this CPU (`ThreadExt::cut_slice`) is added to
//!   the slot.
//! * At the switch-out, the slice's runtime minus those pieces is the time outside tasks.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use aya_ebpf::macros::map;
use aya_ebpf::maps::{HashMap, PerCpuArray, PerCpuHashMap};
use profiler_common::unattr::{sys_key, UnattrCpu, UnattrSys};
use profiler_common::anomaly;

use crate::emit::{count_anomaly, now};

/// `BPF_F_NO_PREALLOC`: per-CPU values of processes are allocated as processes show up,
/// not `max_entries * CPUs` of them at load.
const NO_PREALLOC: u32 = 1;

/// tgid -> its slices and their time outside tasks, per CPU.
#[map]
pub static UNATTR_CPU: PerCpuHashMap<u32, UnattrCpu> = PerCpuHashMap::with_max_entries(4096, NO_PREALLOC);

/// `sys_key(tgid, nr)` -> syscalls made outside tasks, per CPU.
#[map]
pub static UNATTR_SYS: PerCpuHashMap<u64, UnattrSys> = PerCpuHashMap::with_max_entries(32768, NO_PREALLOC);

/// The traced thread on this CPU since a switch-in seen (tid 0: none).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SliceMark {
    pub tid: u32,
    pub _pad: u32,
    /// `se.sum_exec_runtime` at the switch-in.
    pub runtime_at_in: u64,
    /// On-CPU pieces charged to tasks since.
    pub task_ns: u64,
}

#[map]
pub static UNATTR_SLICE: PerCpuArray<SliceMark> = PerCpuArray::with_max_entries(1, 0);

/// The syscall in flight of a thread without a task.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SysMark {
    pub nr: u32,
    pub _pad: u32,
    pub start: u64,
}

/// tid -> its syscall in flight, entered without a task (removed at its exit, or the
/// thread's).
#[map]
pub static UNATTR_SYS_START: HashMap<u32, SysMark> = HashMap::with_max_entries(32768, 0);

/// A `u64` field of a task at `off` (0: unknown offset).
#[inline(always)]
fn task_u64(task: u64, off: u32) -> Option<u64> {
    if task == 0 || off == 0 {
        return None;
    }
    // SAFETY: a kernel task pointer; the helper checks the read.
    unsafe { bpf_probe_read_kernel((task + off as u64) as *const u64).ok() }
}

/// Traced thread `tid` (task pointer `task`) comes on this CPU.
#[inline(always)]
pub fn switch_in(task: u64, tid: u32) {
    let Some(slot) = UNATTR_SLICE.get_ptr_mut(0) else { return };
    let runtime = task_u64(task, crate::cfg!(offsets).task_runtime).unwrap_or(0);
    // SAFETY: this CPU's slot; only programs on this CPU touch it.
    unsafe { *slot = SliceMark { tid: if runtime != 0 { tid } else { 0 }, _pad: 0, runtime_at_in: runtime, task_ns: 0 } };
}

/// A piece of `ns` on-CPU time of thread `tid` was charged to a task.
#[inline(always)]
pub fn task_piece(tid: u32, ns: u64) {
    let Some(slot) = UNATTR_SLICE.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot.
    unsafe {
        if (*slot).tid == tid {
            (*slot).task_ns += ns;
        }
    }
}

/// Traced thread `tid` of process `pid`, the current task, leaves this CPU.
#[inline(always)]
pub fn switch_out(pid: u32, tid: u32) {
    let Some(slot) = UNATTR_SLICE.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot; the copy is taken before it is cleared.
    let mark = unsafe { *slot };
    // SAFETY: as above. Cleared: a later switch-out of this thread whose switch-in was
    // missed must not take this switch-in for its own.
    unsafe { (*slot).tid = 0 };
    let offs = crate::cfg!(offsets);
    // SAFETY: helper without arguments: the running task, the one leaving.
    let task = unsafe { bpf_get_current_task() };
    let Some(runtime) = task_u64(task, offs.task_runtime) else { return };
    let Some(c) = cpu_entry(pid) else { return };
    if mark.tid == tid && runtime >= mark.runtime_at_in {
        c.add_slice(runtime - mark.runtime_at_in, mark.task_ns);
    } else if let Some(prev) = task_u64(task, offs.task_prev_runtime) {
        // The switch-in was not seen: the kernel's own start of the slice.
        c.add_unseen(runtime.saturating_sub(prev));
    }
}

/// This CPU's figures of process `pid`, created if missing.
#[inline(always)]
fn cpu_entry(pid: u32) -> Option<&'static mut UnattrCpu> {
    if let Some(p) = UNATTR_CPU.get_ptr_mut(pid) {
        // SAFETY: this CPU's value of a live entry.
        return Some(unsafe { &mut *p });
    }
    // BPF_NOEXIST: another CPU may have just created it (with zeroed values for us).
    if UNATTR_CPU.insert(pid, UnattrCpu::default(), 1).is_err() && UNATTR_CPU.get_ptr_mut(pid).is_none() {
        count_anomaly(anomaly::UNATTR_FULL);
        return None;
    }
    // SAFETY: as above.
    UNATTR_CPU.get_ptr_mut(pid).map(|p| unsafe { &mut *p })
}

/// Thread `tid` without a task enters syscall `nr`.
#[inline(always)]
pub fn sys_enter(tid: u32, nr: i64) {
    if nr < 0 {
        return;
    }
    let mark = SysMark { nr: nr as u32, _pad: 0, start: now() };
    if UNATTR_SYS_START.insert(tid, mark, 0).is_err() {
        count_anomaly(anomaly::UNATTR_FULL);
    }
}

/// Thread `tid` of process `pid` leaves a syscall: counted if it entered it without a task.
#[inline(always)]
pub fn sys_exit(pid: u32, tid: u32, ret: i64) {
    // SAFETY: the value is copied out before the entry is removed.
    let Some(mark) = (unsafe { UNATTR_SYS_START.get(tid) }).copied() else { return };
    let _ = UNATTR_SYS_START.remove(tid);
    let took = now().saturating_sub(mark.start);
    let key = sys_key(pid, mark.nr);
    let s = match UNATTR_SYS.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            if UNATTR_SYS.insert(key, UnattrSys::default(), 1).is_err() && UNATTR_SYS.get_ptr_mut(key).is_none() {
                count_anomaly(anomaly::UNATTR_FULL);
                return;
            }
            let Some(p) = UNATTR_SYS.get_ptr_mut(key) else { return };
            p
        }
    };
    // SAFETY: this CPU's value of a live entry.
    unsafe {
        (*s).count += 1;
        (*s).total_ns += took;
        if ret < 0 {
            (*s).errors += 1;
        }
    }
}

/// Thread `tid` exits or execs: a syscall it entered without a task never returns.
#[inline(always)]
pub fn forget(tid: u32) {
    let _ = UNATTR_SYS_START.remove(tid);
}
