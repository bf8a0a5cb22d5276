//! Scheduler tracepoints (tp_btf): on-CPU slices, off-CPU intervals, run-queue delay and
//! wakers, charged to the task the thread works for.
//!
//! sched_switch runs with `current == prev`; sched_waking runs in the waker's context, so
//! `bpf_get_current_pid_tgid()` there is the waker (unless it runs in an interrupt, tracked
//! by the irq programs below, or in a kernel thread: then there is no user waker).
//! See <https://docs.kernel.org/trace/events.html> and `docs/kernel.md`.

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
};
use aya_ebpf::macros::btf_tracepoint;
use aya_ebpf::programs::tracing::StackIdContext;
use aya_ebpf::programs::BtfTracePointContext;
use aya_ebpf::cty::c_void;
use aya_ebpf::helpers::generated::bpf_get_task_stack;
use profiler_common::{
    anomaly, kind, proc_event, waker, KStackRecord, ProcRecord, TaskId, IRQ_HARD, IRQ_SOFT, KSTACK_DEPTH, PF_KTHREAD,
    USTACK_DEFERRED,
};

use crate::emit::{count_anomaly, count_drop, header, now, RB_FLAGS};
use crate::maps::{traced_tgid, EVENTS, IRQ_DEPTH, STACKS};
use crate::thread::ThreadExt;

/// `BPF_F_USER_STACK`: bpf_get_stackid takes the user-space stack.
pub const USER_STACK: u64 = 1 << 8;

/// A stack id of the current thread, or -1 (counted) when it could not be stored.
#[inline(always)]
pub fn stack_id(ctx: &BtfTracePointContext, flags: u64) -> i32 {
    match ctx.get_stackid(&STACKS, flags) {
        Ok(id) => id as i32,
        Err(_) => {
            count_anomaly(anomaly::STACK_LOST);
            -1
        }
    }
}
use crate::thread;

/// Reads an `i32` field of a `task_struct` at `off`.
#[inline(always)]
fn task_field(task: u64, off: u32) -> Option<u32> {
    if task == 0 {
        return None;
    }
    // SAFETY: kernel pointer from a tracepoint argument or helper; the helper checks the read.
    unsafe { bpf_probe_read_kernel((task + off as u64) as *const u32).ok() }
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_switch(&ctx);
    0
}

fn try_sched_switch(ctx: &BtfTracePointContext) -> Option<()> {
    // Nobody schedules from interrupt context: heal a depth left behind by an irq entry
    // whose exit program missed it.
    for slot in [IRQ_HARD, IRQ_SOFT] {
        if let Some(p) = IRQ_DEPTH.get_ptr_mut(slot) {
            // SAFETY: per-CPU slot of this CPU.
            unsafe { *p = 0 };
        }
    }
    let next: u64 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    let ts = now();
    let pid_tgid = bpf_get_current_pid_tgid();
    let (prev_pid, prev_tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);

    // prev leaves the CPU.
    if prev_tid != 0 && traced_tgid(prev_pid) {
        if let Some(st) = thread::get(prev_tid).filter(|st| st.depth == 0 || !crate::fault::lose_switch_out(prev_tid)) {
            if st.depth > 0 {
                st.running(prev_pid, prev_tid, ts);
                // SAFETY: helper without arguments: the running task, prev.
                check_slice(st, unsafe { bpf_get_current_task() }, ts);
                st.cut_slice(prev_pid, prev_tid, ts);
                st.oncpu_since = 0;
                st.state = prev_state as u32;
                st.offcpu_sys_nr = st.sys_nr;
                st.waker_task = TaskId::default();
                st.ustack_id = -1;
                if prev_state == 0 {
                    // Preempted: runnable at once, waiting in the run queue.
                    st.runnable_since = ts;
                    st.waker_flags = waker::PREEMPTED;
                } else {
                    st.runnable_since = 0;
                    st.waker_flags = 0;
                }
                // After the resets: a wakeup racing on another CPU (sched_waking checks
                // offcpu_since) must not have its runnable time and waker overwritten.
                st.offcpu_since = ts;
                // Stacks are taken only for blocks that turn out long (at switch-in): the
                // kernel stack from the task there, the user stack when the syscall it
                // blocked in returns. A block outside a syscall (a page fault) has no such
                // later point: its user stack is taken now.
                if prev_state != 0 && crate::cfg!(stacks) != 0 && st.sys_nr < 0 {
                    st.ustack_id = stack_id(ctx, USER_STACK);
                }
            } else {
                st.offcpu_since = 0;
                // The slice check needs a switch-in and a switch-out both seen with a task.
                st.in_at = 0;
            }
        }
        // After the task's last piece of the slice was cut above.
        crate::unattr::switch_out(prev_pid, prev_tid);
    }

    // next comes on the CPU.
    let offs = crate::cfg!(offsets);
    let next_pid = task_field(next, offs.task_tgid)?;
    if !traced_tgid(next_pid) {
        return Some(());
    }
    let next_tid = task_field(next, offs.task_pid)?;
    if next_tid == 0 {
        return Some(());
    }
    crate::unattr::switch_in(next, next_tid);
    let st = thread::get(next_tid)?;
    if st.top().is_none() || crate::fault::lose_switch_in(next_tid) {
        return Some(());
    }
    let start = st.offcpu_since;
    st.oncpu_since = ts;
    st.in_at = ts;
    st.runtime_at_in = task_runtime(next).unwrap_or(0);
    st.steal_mark = steal_of(next);
    st.steal_at_in = st.steal_mark;
    if start == 0 {
        return Some(());
    }
    let (blocked, runq) = st.sum_off_cpu(ts);
    let long_block = crate::cfg!(stacks) != 0 && st.state != 0 && blocked > 0 && blocked >= crate::cfg!(stack_ns);
    if !long_block && !thread::detailed(st, blocked + runq, ts) {
        thread::add_off_cpu(st, blocked, runq);
        st.offcpu_since = 0;
        return Some(());
    }
    if long_block && st.offcpu_sys_nr >= 0 {
        st.ustack_id = USTACK_DEFERRED;
        st.ustack_wanted = 1;
    }
    st.emit_off_cpu(next_pid, next_tid, ts, 0);
    if long_block {
        if let Some(task) = st.top() {
            emit_kstack(next, next_pid, next_tid, ts, start, &task);
        }
    }
    st.offcpu_since = 0;
    Some(())
}

/// The CPU time the scheduler accounted to `task` (`se.sum_exec_runtime`; exact at a
/// context switch), when its offset is known.
#[inline(always)]
fn task_runtime(task: u64) -> Option<u64> {
    let off = crate::cfg!(offsets).task_runtime;
    if task == 0 || off == 0 {
        return None;
    }
    // SAFETY: a kernel task pointer; the helper checks the read.
    unsafe { bpf_probe_read_kernel((task + off as u64) as *const u64).ok() }
}

/// The steal time (the hypervisor ran another guest) accounted so far by the run queue of
/// `task` (`task->se.cfs_rq->rq->prev_steal_time_rq`, what the run queue's task clock left out; exact at a context switch, else as of
/// the queue's last clock update, at most a tick ago); 0 when the kernel has no such
/// accounting.
#[inline(always)]
fn steal_of(task: u64) -> u64 {
    let offs = crate::cfg!(offsets);
    if task == 0 || offs.rq_steal == 0 {
        return 0;
    }
    // SAFETY: kernel pointers from the task; each read is checked by the helper.
    unsafe {
        let Ok(cfs_rq) = bpf_probe_read_kernel((task + offs.se_cfs_rq as u64) as *const u64) else { return 0 };
        if cfs_rq == 0 {
            return 0;
        }
        let Ok(rq) = bpf_probe_read_kernel((cfs_rq + offs.cfs_rq_rq as u64) as *const u64) else { return 0 };
        if rq == 0 {
            return 0;
        }
        bpf_probe_read_kernel((rq + offs.rq_steal as u64) as *const u64).unwrap_or(0)
    }
}

/// [`steal_of`] the running thread.
#[inline(always)]
pub fn current_steal() -> u64 {
    // SAFETY: helper without arguments.
    steal_of(unsafe { bpf_get_current_task() })
}

/// Most a slice may exceed the kernel's runtime of it plus its steal before it is counted
/// as a mismatch (the clocks differ by a little: the kernel's leaves out interrupt time
/// when it accounts it apart); a lost switch-out/switch-in pair leaves out a whole off-CPU
/// interval.
const MISMATCH_SLACK_NS: u64 = 500_000;

/// At a switch-out: the slice since the last switch-in seen is compared with the kernel's
/// runtime of the thread over it, plus the steal of its CPU then (all exact at the
/// switches). Longer means the thread was off the CPU in between without tprof seeing it go
/// or come back: counted, and the task flagged (its AGG sums carry the count).
#[inline(always)]
fn check_slice(st: &mut profiler_common::ThreadState, task: u64, now: u64) {
    let (in_at, at_in, steal_in) = (st.in_at, st.runtime_at_in, st.steal_at_in);
    st.in_at = 0;
    if in_at == 0 || at_in == 0 || now <= in_at {
        return;
    }
    let Some(runtime) = task_runtime(task) else { return };
    let ran = runtime.saturating_sub(at_in);
    let steal = if steal_in != 0 { steal_of(task).saturating_sub(steal_in) } else { 0 };
    let slice = now - in_at;
    if slice > ran + steal + MISMATCH_SLACK_NS + slice / 8 {
        count_anomaly(anomaly::RUNTIME_MISMATCH);
        st.agg.mismatches += 1;
    }
}

/// Sends the kernel stack of `task_ptr`, a thread about to resume after a long block (its
/// kernel stack is still the one it blocked with).
#[inline(always)]
fn emit_kstack(task_ptr: u64, pid: u32, tid: u32, ts: u64, start: u64, task: &TaskId) {
    let Some(mut entry) = EVENTS.reserve::<KStackRecord>(0) else {
        count_drop(kind::KSTACK, task);
        return;
    };
    let r = entry.as_mut_ptr();
    // SAFETY: `r` is a reserved ring-buffer slot of the right size; the helper writes at most
    // the size given into its `frames`, and reads the (BTF-typed, trusted) task pointer of
    // the tracepoint's argument.
    unsafe {
        (*r).header = header(kind::KSTACK, ts, pid, tid, task);
        (*r).start_ns = start;
        (*r)._pad = 0;
        let n = bpf_get_task_stack(
            task_ptr as *mut _,
            (*r).frames.as_mut_ptr() as *mut c_void,
            (8 * KSTACK_DEPTH) as u32,
            0,
        );
        (*r).nframes = if n > 0 { (n / 8) as u32 } else { 0 };
        if n <= 0 {
            count_anomaly(anomaly::STACK_LOST);
        }
    }
    entry.submit(RB_FLAGS);
}

#[btf_tracepoint(function = "sched_waking")]
pub fn sched_waking(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_waking(&ctx);
    0
}

fn try_sched_waking(ctx: &BtfTracePointContext) -> Option<()> {
    let p: u64 = ctx.arg(0);
    let offs = crate::cfg!(offsets);
    if !traced_tgid(task_field(p, offs.task_tgid)?) {
        return Some(());
    }
    let tid = task_field(p, offs.task_pid)?;
    let st = thread::get(tid)?;
    if st.offcpu_since == 0 || st.runnable_since != 0 {
        return Some(());
    }
    st.runnable_since = now();
    let pid_tgid = bpf_get_current_pid_tgid();
    let (wpid, wtid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let depth = |slot| IRQ_DEPTH.get(slot).map(|d| *d > 0).unwrap_or(false);
    let (in_hardirq, in_softirq) = (depth(IRQ_HARD), depth(IRQ_SOFT));
    // SAFETY: helper returning the current task pointer.
    let cur = unsafe { bpf_get_current_task() };
    let kthread = task_field(cur, offs.task_flags).map(|f| f & PF_KTHREAD != 0).unwrap_or(false);
    // A softirq counts as the interrupted thread's doing only when that thread is a traced
    // one in the middle of a syscall (a loopback send runs the receive path right there).
    let softirq_by_syscall = in_softirq && thread::get(wtid).is_some_and(|w| w.sys_nr >= 0);
    if in_hardirq || kthread || wtid == 0 || (in_softirq && !softirq_by_syscall) {
        st.waker_flags = waker::SEEN | waker::KERNEL;
        st.waker_pid = 0;
        st.waker_tid = 0;
        st.waker_comm = [0; 16];
        return Some(());
    }
    let mut flags = if in_softirq { waker::SEEN | waker::SOFTIRQ } else { waker::SEEN };
    st.waker_pid = wpid;
    st.waker_tid = wtid;
    st.waker_comm = bpf_get_current_comm().unwrap_or([0; 16]);
    if let Some(wt) = thread::get(wtid).and_then(|w| w.top()) {
        st.waker_task = wt;
        flags |= waker::HAS_TASK;
    }
    st.waker_flags = flags;
    Some(())
}

#[inline(always)]
fn irq_depth_add(slot: u32, delta: i32) {
    if let Some(p) = IRQ_DEPTH.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot; interrupts on this CPU nest, they do not race.
        unsafe {
            let v = *p as i32 + delta;
            *p = if v < 0 { 0 } else { v as u32 };
        }
    }
}

macro_rules! irq_edge {
    ($name:ident, $tp:literal, $slot:expr, $delta:expr) => {
        #[btf_tracepoint(function = $tp)]
        pub fn $name(_ctx: BtfTracePointContext) -> i32 {
            irq_depth_add($slot, $delta);
            0
        }
    };
}

irq_edge!(irq_handler_entry, "irq_handler_entry", IRQ_HARD, 1);
irq_edge!(irq_handler_exit, "irq_handler_exit", IRQ_HARD, -1);
irq_edge!(hrtimer_expire_entry, "hrtimer_expire_entry", IRQ_HARD, 1);
irq_edge!(hrtimer_expire_exit, "hrtimer_expire_exit", IRQ_HARD, -1);
irq_edge!(softirq_entry, "softirq_entry", IRQ_SOFT, 1);
irq_edge!(softirq_exit, "softirq_exit", IRQ_SOFT, -1);

/// A thread exits: forget it (the kernel map only holds live threads). When it was the
/// last thread of a traced process, the process's fork bit goes (its pid may be reused)
/// and userspace hears of it.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if let Some(st) = thread::get(tid) {
        st.flush_agg(pid, tid, now());
        let _ = crate::maps::THREADS.remove(tid);
    }
    crate::unattr::forget(tid);
    // (struct task_struct *p, bool group_dead) since Linux 6.x: the second argument.
    let group_dead = ctx.arg::<u64>(1) & 0xff != 0;
    if group_dead && traced_tgid(pid) {
        let _ = crate::maps::FORKED.remove(&pid);
        note_exited(pid);
        emit_proc(proc_event::EXIT, pid, 0);
    }
    0
}

/// A thread execs: the tasks it carried belonged to the old program; nothing after this is
/// theirs (their summaries say they did not end while traced). At exec the thread takes the
/// thread-group leader's id, so both ids are forgotten.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let old_pid: u32 = ctx.arg::<u64>(1) as u32;
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    for t in [old_pid, tid] {
        if let Some(st) = thread::get(t) {
            st.flush_agg(pid, t, now());
            let _ = crate::maps::THREADS.remove(t);
        }
        crate::unattr::forget(t);
    }
    // Userspace attaches the new program's probe sites.
    if traced_tgid(pid) {
        emit_proc(proc_event::EXEC, pid, 0);
    }
    0
}

/// A process forks: with `follow`, a child of a traced process is traced too. Its bit is
/// set here, in the parent's context before the child first runs, so the probe sites it
/// inherited (breakpoints and armed semaphores are copied with its memory) report from its
/// first instruction; a PROC record tells userspace to adopt it. Threads share their
/// process's bit already.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_process_fork(&ctx);
    0
}

fn try_sched_process_fork(ctx: &BtfTracePointContext) -> Option<()> {
    if crate::cfg!(follow) == 0 {
        return None;
    }
    let offs = crate::cfg!(offsets);
    let parent: u64 = ctx.arg(0);
    let child: u64 = ctx.arg(1);
    let parent_tgid = task_field(parent, offs.task_tgid)?;
    if !traced_tgid(parent_tgid) {
        return None;
    }
    let child_pid = task_field(child, offs.task_pid)?;
    let child_tgid = task_field(child, offs.task_tgid)?;
    if child_pid != child_tgid {
        return None;
    }
    if crate::maps::ANY_EXITED.get(0).copied().unwrap_or(0) != 0 {
        // A followed child at the pid of a traced process that just exited.
        let _ = crate::maps::EXITED.remove(&child_tgid);
    }
    note_forked(child_tgid);
    emit_proc(proc_event::FORK, child_tgid, parent_tgid);
    Some(())
}

/// Marks a forked child as traced until userspace adopts it (see `maps::FORKED`).
#[inline(always)]
fn note_forked(tgid: u32) {
    mark(&crate::maps::FORKED, &crate::maps::ANY_FORKED, tgid, anomaly::FORKED_FULL);
}

/// Marks a traced process as exited until userspace untraces it (see `maps::EXITED`); when
/// the map is full its pid may be traced in a new process until then (counted).
#[inline(always)]
fn note_exited(tgid: u32) {
    mark(&crate::maps::EXITED, &crate::maps::ANY_EXITED, tgid, anomaly::EXITED_FULL);
}

/// Inserts `tgid` into a map userspace sweeps, then raises the map's "may hold entries"
/// flag (after the insert: userspace clears the flag before it looks); a full map is
/// counted in anomaly slot `full`.
#[inline(always)]
fn mark(map: &aya_ebpf::maps::HashMap<u32, u32>, any: &aya_ebpf::maps::Array<u32>, tgid: u32, full: u32) {
    if map.insert(&tgid, &1, 0).is_err() {
        count_anomaly(full);
        return;
    }
    if let Some(p) = any.get_ptr_mut(0) {
        // SAFETY: a live, aligned map value; every writer stores a whole value.
        unsafe { core::ptr::write_volatile(p, 1) };
    }
}

/// A PROC record about process `pid`.
#[inline(always)]
fn emit_proc(event: u32, pid: u32, parent: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (cur_pid, cur_tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let none = TaskId::default();
    crate::emit::emit::<ProcRecord>(kind::PROC, &none, |r| {
        // SAFETY: `r` points at a reserved ring-buffer slot of the right size.
        unsafe { *r = ProcRecord { header: header(kind::PROC, now(), cur_pid, cur_tid, &none), event, pid, parent, _pad: 0 } };
    });
}
