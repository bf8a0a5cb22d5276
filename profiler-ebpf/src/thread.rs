//! Per-thread state: the stack of tasks the thread works for, and its scheduling state.

use profiler_common::{kind, OffCpuRecord, OnCpuRecord, TaskId, COMM_LEN, TASK_STACK_DEPTH};

use crate::emit::{count_anomaly, emit, header};
use crate::maps::{THREADS, ZERO_THREAD};

/// Kernel-only; never crosses to userspace.
#[repr(C)]
pub struct ThreadState {
    /// Tasks this thread works for, innermost last (`depth` valid entries).
    pub stack: [TaskId; TASK_STACK_DEPTH],
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
    pub _pad: u32,
    pub waker_comm: [u8; COMM_LEN],
    pub waker_task: TaskId,
    /// Stack ids taken at the last blocking switch-out (-1: none).
    pub kstack_id: i32,
    pub ustack_id: i32,
}

/// The thread's entry, if it ever ran a task while traced.
#[inline(always)]
pub fn get(tid: u32) -> Option<&'static mut ThreadState> {
    // SAFETY: map values live as long as the entry; the verifier checks the pointer. Other
    // CPUs may touch the same entry (wakeups): fields are plain integers, races lose
    // precision, never memory safety.
    THREADS.get_ptr_mut(tid).map(|p| unsafe { &mut *p })
}

/// The thread's entry, created (zeroed) if missing.
#[inline(always)]
pub fn get_or_insert(tid: u32) -> Option<&'static mut ThreadState> {
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
    st.sys_nr = -1;
    st.offcpu_sys_nr = -1;
    st.kstack_id = -1;
    st.ustack_id = -1;
    Some(st)
}

impl ThreadState {
    /// The innermost task, if any.
    #[inline(always)]
    pub fn top(&self) -> Option<TaskId> {
        let d = self.depth as usize;
        if d == 0 || d > TASK_STACK_DEPTH {
            return None;
        }
        Some(self.stack[d - 1])
    }

    /// Pushes a task; returns false when the stack is full (the task is then not tracked
    /// on this thread, and userspace sees its begin without kernel time).
    #[inline(always)]
    pub fn push(&mut self, task: TaskId) -> bool {
        let d = self.depth as usize;
        if d >= TASK_STACK_DEPTH {
            return false;
        }
        self.stack[d] = task;
        self.depth += 1;
        true
    }

    /// Removes `span_id` from the stack (normally the innermost entry). Returns whether it
    /// was there.
    #[inline(always)]
    pub fn remove(&mut self, span_id: u64) -> bool {
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
    pub fn running(&mut self, pid: u32, tid: u32, now: u64) {
        if self.offcpu_since == 0 {
            return;
        }
        count_anomaly(profiler_common::anomaly::MISSED_SWITCH_IN);
        // Still account for the interval, flagged: it ends at this sign of life.
        self.emit_off_cpu(pid, tid, now, profiler_common::waker::END_INFERRED);
        self.offcpu_since = 0;
        self.oncpu_since = now;
    }

    /// Emits the off-CPU interval that started at `offcpu_since` and ends at `now`.
    #[inline(always)]
    pub fn emit_off_cpu(&self, pid: u32, tid: u32, now: u64, extra_flags: u32) {
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
                    kstack_id: self.kstack_id,
                    ustack_id: self.ustack_id,
                })
            }
        });
    }

    /// Ends the innermost task's on-CPU slice at `now` (if one is open) and starts a new one.
    #[inline(always)]
    pub fn cut_slice(&mut self, pid: u32, tid: u32, now: u64) {
        if let Some(task) = self.top() {
            let start = self.oncpu_since;
            if start != 0 && now > start {
                emit::<OnCpuRecord>(kind::ON_CPU, &task, |r| {
                    // SAFETY: `r` is a reserved ring-buffer slot of the right size.
                    unsafe {
                        r.write(OnCpuRecord { header: header(kind::ON_CPU, now, pid, tid, &task), start_ns: start })
                    }
                });
            }
        }
        self.oncpu_since = now;
    }
}
