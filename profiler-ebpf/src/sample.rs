//! The on-CPU sampler (`--sample-hz`): a perf_event program on a per-CPU software
//! `cpu-clock` event. Each sample of a thread of a traced process is counted in the kernel
//! under (its current task, its user stack, its kernel stack), so the cost stays one map
//! update per sample however busy the service is; userspace drains the counts.
//!
//! Two count maps are written in turn (`SAMPLE_SLOT` says which): userspace flips the slot,
//! then, a poll later (long after any program that read the old slot has finished), reads
//! and clears the map it retired. No count is lost between a read and a delete.
//!
//! A thread outside any task (no `THREADS` entry, or an empty task stack) is counted with an
//! all-zero task under its process: the process's "not attributed" CPU, by stack.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::macros::perf_event;
use aya_ebpf::programs::tracing::StackIdContext;
use aya_ebpf::programs::PerfEventContext;
use profiler_common::{sample_count, SampleKey, TaskId};

use crate::maps::{traced_tgid, SAMPLES_0, SAMPLES_1, SAMPLE_COUNTS, SAMPLE_SLOT, SAMPLE_STACKS};
use crate::thread::ThreadExt;

/// `BPF_F_USER_STACK`.
const USER_STACK: u64 = 1 << 8;
/// `-EFAULT`: `bpf_get_stackid` found no stack to walk (no kernel stack for a sample taken
/// in user mode): not a loss.
const EFAULT: i32 = -14;

#[inline(always)]
fn count(slot: u32) {
    if let Some(p) = SAMPLE_COUNTS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array; a perf_event program does not nest
        // with itself on a CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn stack(ctx: &PerfEventContext, flags: u64, lost: u32) -> i32 {
    match ctx.get_stackid(&SAMPLE_STACKS, flags) {
        Ok(id) => id as i32,
        Err(e) => {
            if e != EFAULT {
                count(lost);
            }
            -1
        }
    }
}

#[perf_event]
pub fn tprof_sample(ctx: PerfEventContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Idle (tid 0) and every process the session does not trace leave here.
    if tid == 0 || !traced_tgid(pid) {
        return 0;
    }
    count(sample_count::TAKEN);
    let task = crate::thread::get(tid).and_then(|st| st.top()).unwrap_or(TaskId::default());
    let key = SampleKey {
        task,
        pid,
        ustack_id: stack(&ctx, USER_STACK, sample_count::USTACK_LOST),
        kstack_id: stack(&ctx, 0, sample_count::KSTACK_LOST),
        _pad: 0,
    };
    let map = if SAMPLE_SLOT.get(0).copied().unwrap_or(0) == 0 { &SAMPLES_0 } else { &SAMPLES_1 };
    if let Some(p) = map.get_ptr_mut(&key) {
        // SAFETY: a live, aligned map value. Two CPUs can sample the same task with the same
        // stacks at once only if the task runs on two threads there: a lost count then.
        unsafe { *p += 1 };
        return 0;
    }
    // BPF_NOEXIST: a racing insert of the same key by another CPU is found again below.
    if map.insert(&key, &1u64, 1).is_err() {
        match map.get_ptr_mut(&key) {
            // SAFETY: as above.
            Some(p) => unsafe { *p += 1 },
            None => count(sample_count::MAP_FULL),
        }
    }
    0
}
