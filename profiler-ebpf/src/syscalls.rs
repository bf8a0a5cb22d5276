//! Syscalls of threads that carry a task (raw_syscalls sys_enter/sys_exit, tp_btf), and,
//! summed per process, those of traced threads without one (`unattr`). Every syscall of
//! every process passes here: the first thing done is the traced-process check.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::macros::btf_tracepoint;
use aya_ebpf::programs::BtfTracePointContext;
use profiler_common::{kind, SyscallRecord, UStackRecord};

use crate::emit::{emit, header, now};
use crate::maps::traced_tgid;
use crate::sched::{stack_id, USER_STACK};
use crate::thread::{self, ThreadExt};

#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced_tgid((pid_tgid >> 32) as u32) {
        return 0;
    }
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let Some(st) = thread::get(tid).filter(|st| st.depth > 0) else {
        // Outside any task: counted per process.
        if crate::cfg!(syscalls) != 0 {
            crate::unattr::sys_enter(tid, ctx.arg(1));
        }
        return 0;
    };
    let ts = now();
    // A sign of life: an off-CPU interval whose switch-in was missed ends here, not at the
    // next switch-out.
    st.running(pid, tid, ts);
    // Tracked for stacks too: the syscall a long block happened in is where its user stack
    // is taken.
    if crate::cfg!(syscalls) != 0 || crate::cfg!(stacks) != 0 {
        let nr: i64 = ctx.arg(1);
        st.sys_nr = nr as i32;
        st.sys_start = ts;
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if !traced_tgid(pid) {
        return 0;
    }
    let Some(st) = thread::get(tid).filter(|st| st.sys_nr >= 0) else {
        // Not a syscall entered with a task: perhaps one entered without.
        if crate::cfg!(syscalls) != 0 {
            crate::unattr::sys_exit(pid, tid, ctx.arg(1));
        }
        return 0;
    };
    let nr = st.sys_nr;
    st.sys_nr = -1;
    let Some(task) = st.top() else { return 0 };
    let ts = now();
    // A sign of life (a switch-in missed while the thread blocked in this syscall).
    st.running(pid, tid, ts);
    if st.ustack_wanted != 0 {
        // A long block of this syscall: the user stack is the one it blocked with.
        st.ustack_wanted = 0;
        let id = stack_id(&ctx, USER_STACK);
        emit::<UStackRecord>(kind::USTACK, &task, |r| {
            // SAFETY: `r` is a reserved ring-buffer slot of the right size.
            unsafe { r.write(UStackRecord { header: header(kind::USTACK, ts, pid, tid, &task), ustack_id: id, _pad: 0 }) }
        });
    }
    if crate::cfg!(syscalls) == 0 {
        return 0;
    }
    let ret: i64 = ctx.arg(1);
    let start = st.sys_start;
    let took = ts.saturating_sub(start);
    if !thread::detailed(st, took, ts) {
        st.add_syscall(nr, took, ret < 0);
        return 0;
    }
    emit::<SyscallRecord>(kind::SYSCALL, &task, |r| {
        // SAFETY: `r` is a reserved ring-buffer slot of the right size.
        unsafe {
            r.write(SyscallRecord { header: header(kind::SYSCALL, ts, pid, tid, &task), start_ns: start, ret, nr: nr as u32, _pad: 0 })
        }
    });
    0
}
