//! Writing records to the ring buffer, and counting what could not be written.

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};
use profiler_common::{Header, TaskId};

use crate::maps::{ANOMALIES, ANY_SPAN_DROPS, DROPS, EVENTS, SPAN_DROPS};

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

/// Increments a counter in a map value. Not atomic (the bpfel target has no atomic RMW in
/// `core`): per-CPU slots are exact except when the sleepable USDT program is preempted
/// inside these three instructions by another USDT hit of the same kind on the same CPU;
/// span counters shared across CPUs can lose a count under the same kind of race.
#[inline(always)]
fn bump(p: *mut u64) {
    // SAFETY: `p` is a live, aligned map value returned by a lookup.
    unsafe { *p += 1 };
}

/// Counts a record of `kind` that could not be queued, per CPU and against its task.
#[inline(always)]
pub fn count_drop(kind: u32, task: &TaskId) {
    if let Some(p) = DROPS.get_ptr_mut(kind) {
        bump(p);
    }
    if task.span_id != 0 {
        if let Some(p) = ANY_SPAN_DROPS.get_ptr_mut(0) {
            // SAFETY: a live, aligned map value; a racing writer writes the same value.
            unsafe { *p = 1 };
        }
        match SPAN_DROPS.get_ptr_mut(task.span_id) {
            Some(p) => bump(p),
            None => {
                let _ = SPAN_DROPS.insert(task.span_id, 1u64, 0);
            }
        }
    }
}

/// Counts an expected event that was not seen (see `profiler_common::anomaly`).
#[inline(always)]
pub fn count_anomaly(slot: u32) {
    if let Some(p) = ANOMALIES.get_ptr_mut(slot) {
        bump(p);
    }
}

/// Takes (and clears) the lost-record count of a task, for its TASK_END record.
#[inline(always)]
pub fn take_span_drops(span_id: u64) -> u64 {
    if ANY_SPAN_DROPS.get(0).is_none_or(|v| *v == 0) {
        return 0;
    }
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
