//! Writing records to the ring buffer, and counting what could not be written.

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};
use profiler_common::{Header, TaskId};

use crate::maps::{DROPS, EVENTS, SPAN_DROPS};

/// No wakeup per record: userspace polls the ring in batches (1.7 us vs 0.5 us per event).
pub const RB_FLAGS: u64 = aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64;

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn header(kind: u32, ts_ns: u64, pid: u32, tid: u32, task: &TaskId) -> Header {
    Header {
        kind,
        // SAFETY: helper without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns,
        pid,
        tid,
        task: *task,
    }
}

/// Counts a record of `kind` that could not be queued, per CPU and against its task.
#[inline(always)]
pub fn count_drop(kind: u32, task: &TaskId) {
    if let Some(p) = DROPS.get_ptr_mut(kind) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *p += 1 };
    }
    if task.span_id != 0 {
        match SPAN_DROPS.get_ptr_mut(task.span_id) {
            // SAFETY: the pointer is a live map value; racing increments may lose a count,
            // never memory safety.
            Some(p) => unsafe { *p += 1 },
            None => {
                let _ = SPAN_DROPS.insert(task.span_id, 1u64, 0);
            }
        }
    }
}

/// Takes (and clears) the lost-record count of a task, for its TASK_END record.
#[inline(always)]
pub fn take_span_drops(span_id: u64) -> u64 {
    // SAFETY: plain read of a map value.
    match unsafe { SPAN_DROPS.get(span_id) } {
        Some(n) => {
            let n = *n;
            let _ = SPAN_DROPS.remove(span_id);
            n
        }
        None => 0,
    }
}

/// Queues one fixed-size record built by `fill`, or counts it as dropped.
#[inline(always)]
pub fn emit<T: 'static>(kind: u32, task: &TaskId, fill: impl FnOnce(*mut T)) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            fill(entry.as_mut_ptr());
            entry.submit(RB_FLAGS);
        }
        None => count_drop(kind, task),
    }
}
