//! Per-thread state (`profiler_common::ThreadState`): the stack of tasks the thread works
//! for, its scheduling state, and the sums of its short intervals not yet sent.
//!
//! Intervals at least `Config::detail_ns` long are streamed one by one (ON_CPU, OFF_CPU,
//! SYSCALL records); shorter ones are summed here and sent as one AGG record when the
//! thread stops working for the task (task end, detach, a nested task begins, exit, exec),
//! or read by userspace from the map at the end of the session.

use profiler_common::{
    kind, waker, Agg, AggRecord, AggSyscall, OffCpuRecord, OnCpuRecord, TaskId, ThreadState, AGG_OTHER_NR, AGG_SYSCALLS,
    TASK_STACK_DEPTH,
};

use crate::emit::{count_anomaly, emit, header};

use crate::maps::{THREADS, ZERO_THREAD};

/// The thread's entry, if it ever ran a task while traced.
#[inline(always)]
pub fn get(tid: u32) -> Option<&'static mut ThreadState> {
    // SAFETY: map values live as long as the entry; the verifier checks the pointer. Other
    // CPUs may touch the same entry (wakeups): fields are plain integers, races lose
    // precision, never memory safety.
    THREADS.get_ptr_mut(tid).map(|p| unsafe { &mut *p })
}

/// The thread's entry, created if missing.
#[inline(always)]
pub fn get_or_insert(pid: u32, tid: u32) -> Option<&'static mut ThreadState> {
    if let Some(st) = get(tid) {
        return Some(st);
    }
    // SAFETY: per-CPU scratch slot that nobody writes: it stays zeroed.
    let zero = unsafe { &*ZERO_THREAD.get_ptr(0)? };
    // BPF_NOEXIST: never replace an entry another CPU just created.
    if THREADS.insert(tid, zero, 1).is_err() && get(tid).is_none() {
        count_anomaly(profiler_common::anomaly::THREADS_FULL);
        return None;
    }
    let st = get(tid)?;
    st.pid = pid;
    st.sys_nr = -1;
    st.offcpu_sys_nr = -1;
    st.ustack_id = -1;
    clear_agg(&mut st.agg);
    Some(st)
}

#[inline(always)]
fn clear_agg(agg: &mut Agg) {
    *agg = Agg::default();
    let mut i = 0;
    while i < AGG_SYSCALLS {
        agg.sys[i].nr = -1;
        i += 1;
    }
}

/// The slot of syscall `nr` in `agg` (claimed if free). When every slot holds another
/// syscall, the last one becomes the "other syscalls" slot.
#[inline(always)]
fn sys_slot(agg: &mut Agg, nr: i32) -> &mut AggSyscall {
    let mut i = 0;
    while i < AGG_SYSCALLS - 1 {
        if agg.sys[i].nr == nr || agg.sys[i].nr == -1 {
            agg.sys[i].nr = nr;
            return &mut agg.sys[i];
        }
        i += 1;
    }
    let last = &mut agg.sys[AGG_SYSCALLS - 1];
    if last.nr == -1 {
        last.nr = nr;
    } else if last.nr != nr {
        last.nr = AGG_OTHER_NR;
    }
    last
}

/// Whether an interval of `ns` ending at `now` is streamed as its own record (else
/// summed): a long one, or any one of a task that turned slow (worked for on this thread
/// for at least `Config::slow_ns`).
#[inline(always)]
pub fn detailed(st: &ThreadState, ns: u64, now: u64) -> bool {
    let detail_ns = crate::cfg!(detail_ns);
    if detail_ns == 0 || ns >= detail_ns {
        return true;
    }
    let slow_ns = crate::cfg!(slow_ns);
    if slow_ns == 0 {
        return false;
    }
    // The innermost task's entry, found with constant indices.
    let d = st.depth as usize;
    let mut since = 0;
    let mut i = 0;
    while i < TASK_STACK_DEPTH {
        // SAFETY: a read of an element of an array we hold a reference to. Volatile: LLVM
        // would otherwise merge these constant-index loads into one indexed load whose
        // bound the verifier cannot follow.
        let v = unsafe { core::ptr::read_volatile(&st.since[i]) };
        if i + 1 == d {
            since = v;
        }
        i += 1;
    }
    since != 0 && now.saturating_sub(since) >= slow_ns
}

/// Methods on the map value (the type is shared with userspace, hence a trait).
pub trait ThreadExt {
    fn top(&self) -> Option<TaskId>;
    fn push(&mut self, task: TaskId, now: u64) -> bool;
    fn remove(&mut self, span_id: u64) -> bool;
    fn running(&mut self, pid: u32, tid: u32, now: u64);
    fn emit_off_cpu(&self, pid: u32, tid: u32, now: u64, extra_flags: u32);
    fn sum_off_cpu(&self, now: u64) -> (u64, u64);
    fn cut_slice(&mut self, pid: u32, tid: u32, now: u64);
    fn add_syscall(&mut self, nr: i32, ns: u64, error: bool);
    fn flush_agg(&mut self, pid: u32, tid: u32, now: u64);
}

impl ThreadExt for ThreadState {
    /// The innermost task, if any.
    #[inline(always)]
    fn top(&self) -> Option<TaskId> {
        let d = self.depth as usize;
        if d == 0 || d > TASK_STACK_DEPTH {
            return None;
        }
        Some(self.stack[d - 1])
    }

    /// Pushes a task; returns false when the stack is full (the task is then not tracked
    /// on this thread, and userspace sees its begin without kernel time).
    #[inline(always)]
    fn push(&mut self, task: TaskId, now: u64) -> bool {
        let d = self.depth as usize;
        if d >= TASK_STACK_DEPTH {
            return false;
        }
        self.stack[d] = task;
        self.since[d] = now;
        self.depth += 1;
        true
    }

    /// Removes `span_id` from the stack (normally the innermost entry). Returns whether it
    /// was there.
    #[inline(always)]
    fn remove(&mut self, span_id: u64) -> bool {
        let d = self.depth as usize;
        if d == 0 || d > TASK_STACK_DEPTH {
            return false;
        }
        if self.stack[d - 1].span_id == span_id {
            self.depth -= 1;
            return true;
        }
        // Out-of-order end: drop it and everything above it (bounded by the stack depth).
        let mut i = 0;
        while i < TASK_STACK_DEPTH {
            if i < d && self.stack[i].span_id == span_id {
                self.depth = i as u32;
                return true;
            }
            i += 1;
        }
        false
    }

    /// The thread is running now: if its switch-in was never seen, count that and resume
    /// the ledger from `now` rather than losing every later slice.
    #[inline(always)]
    fn running(&mut self, pid: u32, tid: u32, now: u64) {
        if self.offcpu_since == 0 {
            return;
        }
        count_anomaly(profiler_common::anomaly::MISSED_SWITCH_IN);
        // Still account for the interval, flagged (always streamed): it ends at this sign
        // of life.
        self.emit_off_cpu(pid, tid, now, waker::END_INFERRED);
        self.offcpu_since = 0;
        self.oncpu_since = now;
        self.steal_mark = crate::sched::current_steal();
    }

    /// Emits the off-CPU interval that started at `offcpu_since` and ends at `now`.
    #[inline(always)]
    fn emit_off_cpu(&self, pid: u32, tid: u32, now: u64, extra_flags: u32) {
        let Some(task) = self.top() else { return };
        let start = self.offcpu_since;
        if start == 0 {
            return;
        }
        emit::<OffCpuRecord>(kind::OFF_CPU, &task, |r| {
            // SAFETY: `r` is a reserved ring-buffer slot of the right size.
            unsafe {
                r.write(OffCpuRecord {
                    header: header(kind::OFF_CPU, now, pid, tid, &task),
                    start_ns: start,
                    runnable_ns: self.runnable_since,
                    state: self.state,
                    syscall_nr: self.offcpu_sys_nr,
                    waker_flags: self.waker_flags | extra_flags,
                    waker_pid: self.waker_pid,
                    waker_tid: self.waker_tid,
                    _pad: 0,
                    waker_comm: self.waker_comm,
                    waker_task: self.waker_task,
                    kstack_id: -1,
                    ustack_id: self.ustack_id,
                })
            }
        });
    }

    /// Splits the off-CPU interval ending at `now` into (blocked, run queue), by the
    /// correlator's rules: a preempted thread waited in the run queue throughout; a blocked
    /// one waited from its wakeup on.
    #[inline(always)]
    fn sum_off_cpu(&self, now: u64) -> (u64, u64) {
        let start = if self.offcpu_since > now { now } else { self.offcpu_since };
        if self.waker_flags & waker::PREEMPTED != 0 {
            return (0, now - start);
        }
        if self.runnable_since == 0 {
            return (now - start, 0);
        }
        let r = self.runnable_since.clamp(start, now);
        (r - start, now - r)
    }

    /// Ends the innermost task's on-CPU slice at `now` (if one is open) and starts a new one.
    #[inline(always)]
    fn cut_slice(&mut self, pid: u32, tid: u32, now: u64) {
        // Always in the thread's own context (a switch-out of it, or one of its probes or
        // syscalls): its run queue is this CPU's.
        let steal_now = crate::sched::current_steal();
        if let Some(task) = self.top() {
            let start = self.oncpu_since;
            if start != 0 && now > start {
                let piece = now - start;
                let steal = if self.steal_mark != 0 { steal_now.saturating_sub(self.steal_mark).min(piece) } else { 0 };
                crate::unattr::task_piece(tid, piece - steal);
                if detailed(self, piece, now) {
                    emit::<OnCpuRecord>(kind::ON_CPU, &task, |r| {
                        // SAFETY: `r` is a reserved ring-buffer slot of the right size.
                        unsafe {
                            r.write(OnCpuRecord { header: header(kind::ON_CPU, now, pid, tid, &task), start_ns: start, steal_ns: steal })
                        }
                    });
                } else {
                    self.agg.oncpu_ns += piece - steal;
                    self.agg.steal_ns += steal;
                    self.agg.slices += 1;
                }
            }
        }
        self.oncpu_since = now;
        self.steal_mark = steal_now;
    }

    /// Sums a short syscall.
    #[inline(always)]
    fn add_syscall(&mut self, nr: i32, ns: u64, error: bool) {
        self.agg.syscalls += 1;
        let s = sys_slot(&mut self.agg, nr);
        s.count += 1;
        s.total_ns += ns;
        if error {
            s.errors += 1;
        }
    }

    /// Sends the sums of the innermost task (if any) and starts new ones. Call before the
    /// innermost task changes.
    #[inline(always)]
    fn flush_agg(&mut self, pid: u32, tid: u32, now: u64) {
        if self.agg.is_empty() {
            return;
        }
        if let Some(task) = self.top() {
            let agg = &self.agg;
            emit::<AggRecord>(kind::AGG, &task, |r| {
                // SAFETY: `r` is a reserved ring-buffer slot of the right size.
                unsafe { r.write(AggRecord { header: header(kind::AGG, now, pid, tid, &task), agg: *agg }) }
            });
        }
        clear_agg(&mut self.agg);
    }
}

/// Sums a short off-CPU interval (blocked `blocked` ns, in the run queue `runq` ns).
#[inline(always)]
pub fn add_off_cpu(st: &mut ThreadState, blocked: u64, runq: u64) {
    st.agg.offcpu += 1;
    st.agg.blocked_ns += blocked;
    st.agg.runq_ns += runq;
    if blocked > 0 && st.offcpu_sys_nr >= 0 {
        let nr = st.offcpu_sys_nr;
        sys_slot(&mut st.agg, nr).blocked_ns += blocked;
    }
}
