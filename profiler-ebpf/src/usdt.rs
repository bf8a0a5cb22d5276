//! The USDT handler: one program for every tprof probe site. The site's attach cookie
//! indexes `USDT_SPECS`, which says which probe it is and how to fetch each argument
//! (register, memory operand or constant), in the manner of libbpf's `usdt.bpf.h`.

use aya_ebpf::cty::c_void;
use aya_ebpf::helpers::generated::bpf_copy_from_user;
use aya_ebpf::helpers::{bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user};
use aya_ebpf::macros::uprobe;
use aya_ebpf::programs::ProbeContext;
use aya_ebpf::EbpfContext;
use profiler_common::{
    arg, kind, probe, strflag, LogRecord, ProbeDef, RegionRecord, StrRef, TaskEndRecord, TaskId, TaskRecord, UsdtArg,
    LOG_KEY_LEN, LOG_VALUE_LEN, MAX_USDT_ARGS, NAME_LEN, NO_REG,
};

use crate::emit::{emit, header, now, take_span_drops};
use crate::maps::USDT_SPECS;
use crate::thread::{self, ThreadExt};
use profiler_common::ThreadState;

/// Size of `struct pt_regs` on x86_64; register offsets must lie below it.
const PT_REGS_SIZE: u16 = 168;

// Where the arguments read below are among a site's note arguments, from the probe table
// (`profiler_common::tprof_probes!`). A string is its address, then its length.
const PARENT_SPAN: usize = ProbeDef::of(probe::TASK_BEGIN).arg_slot("parent_span_id");
const TASK_NAME: usize = ProbeDef::of(probe::TASK_BEGIN).arg_slot("name");
const REGION_NAME: usize = ProbeDef::of(probe::REGION_BEGIN).arg_slot("name");
const LOG_KEY: usize = ProbeDef::of(probe::LOG).arg_slot("key");
const LOG_VALUE: usize = ProbeDef::of(probe::LOG).arg_slot("value");
const _: () = {
    // The task probes share their leading arguments; region_end is region_begin's twin.
    let attach = ProbeDef::of(probe::TASK_ATTACH);
    assert!(attach.arg_slot("parent_span_id") == PARENT_SPAN && ProbeDef::of(probe::REGION_END).arg_slot("name") == REGION_NAME);
    let ids = ["trace_hi", "trace_lo", "span_id"];
    let task_probes = [probe::TASK_BEGIN, probe::TASK_END, probe::TASK_ATTACH, probe::TASK_DETACH];
    let mut p = 0;
    while p < task_probes.len() {
        let mut i = 0;
        while i < ids.len() {
            assert!(ProbeDef::of(task_probes[p]).arg_slot(ids[i]) == i);
            i += 1;
        }
        p += 1;
    }
    // Exactly the probes whose strings `try_usdt` copies go to the sleepable program
    // (userspace picks the program from the same table): the others carry none.
    assert!(ProbeDef::of(probe::TASK_BEGIN).passes_strings());
    assert!(ProbeDef::of(probe::REGION_BEGIN).passes_strings() && ProbeDef::of(probe::REGION_END).passes_strings());
    assert!(ProbeDef::of(probe::LOG).passes_strings());
    assert!(!attach.passes_strings());
    assert!(!ProbeDef::of(probe::TASK_END).passes_strings() && !ProbeDef::of(probe::TASK_DETACH).passes_strings());
};

/// For the probes that pass strings (task_begin, region_begin/end, log). Sleepable, so
/// that strings on pages the target has not touched yet (a freshly dlopen'ed library's
/// .rodata) are faulted in by `bpf_copy_from_user` instead of lost.
#[uprobe(sleepable)]
pub fn tprof_usdt(ctx: ProbeContext) -> u32 {
    let _ = try_usdt::<true>(&ctx);
    0
}

/// For the probes without strings (task_end, task_attach/detach: once per poll in async
/// services): not sleepable, which is cheaper per hit.
#[uprobe]
pub fn tprof_usdt_fast(ctx: ProbeContext) -> u32 {
    let _ = try_usdt::<false>(&ctx);
    0
}

#[inline(always)]
fn read_reg(ctx: &ProbeContext, off: u16) -> Option<u64> {
    if off > PT_REGS_SIZE - 8 {
        return None;
    }
    // Through the helper: LLVM merges per-register context loads into one load at a
    // computed offset, which the verifier rejects ("dereference of modified ctx ptr").
    // SAFETY: ctx.regs points at the probed thread's saved registers; the offset is bounded
    // by the size of pt_regs and the helper checks the read.
    unsafe { bpf_probe_read_kernel((ctx.regs as *const u8).add(off as usize) as *const u64).ok() }
}

#[inline(always)]
fn read_user_sized(addr: u64, size: u8) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address; a bad one is an error, not a fault.
    unsafe {
        match size {
            1 => bpf_probe_read_user(addr as *const u8).ok().map(u64::from),
            2 => bpf_probe_read_user(addr as *const u16).ok().map(u64::from),
            4 => bpf_probe_read_user(addr as *const u32).ok().map(u64::from),
            _ => bpf_probe_read_user(addr as *const u64).ok(),
        }
    }
}

/// Fetches one argument and narrows or sign-extends it to its declared size.
#[inline(always)]
fn fetch(ctx: &ProbeContext, a: &UsdtArg) -> u64 {
    let raw = match a.kind {
        arg::CONST => a.value as u64,
        // `value` is 0 but for `$sym` (an address: %rip plus the symbol's distance).
        arg::REG => read_reg(ctx, a.reg_off).unwrap_or(0).wrapping_add(a.value as u64),
        arg::MEM => {
            // No base register: `(,%index,scale)` or an absolute address.
            let base = if a.reg_off == NO_REG {
                0
            } else {
                let Some(base) = read_reg(ctx, a.reg_off) else { return 0 };
                base
            };
            let index = if a.index_reg_off == NO_REG {
                0
            } else {
                read_reg(ctx, a.index_reg_off).unwrap_or(0).wrapping_mul(a.scale as u64)
            };
            let addr = base.wrapping_add(index).wrapping_add(a.value as u64);
            return narrow(read_user_sized(addr, a.size).unwrap_or(0), a.size, a.signed);
        }
        _ => 0,
    };
    narrow(raw, a.size, a.signed)
}

#[inline(always)]
fn narrow(v: u64, size: u8, signed: u8) -> u64 {
    let bits: u32 = match size {
        1 => 8,
        2 => 16,
        4 => 32,
        _ => return v,
    };
    let shift = 64 - bits;
    if signed != 0 {
        (((v << shift) as i64) >> shift) as u64
    } else {
        (v << shift) >> shift
    }
}

/// Copies at most `N` bytes of a target string into `dst` and describes it.
#[inline(always)]
fn read_str<const N: usize, const SLEEPABLE: bool>(ptr: u64, len: u64, dst: &mut [u8; N]) -> StrRef {
    let mut flags = 0;
    let n = if len > N as u64 {
        flags |= strflag::TRUNCATED;
        N
    } else {
        len as usize
    };
    let mut out = StrRef { ptr, len: n as u32, flags };
    if n == 0 {
        return out;
    }
    let Some(buf) = dst.get_mut(..n) else {
        out.flags |= strflag::UNREADABLE;
        return out;
    };
    // First without faulting (the string is nearly always resident, and this path skips
    // the hardened-usercopy check of the destination, a vmalloc-area lookup for ring-buffer
    // memory: measured ~10% of a probe hit); the sleepable program then retries with
    // `bpf_copy_from_user`, which faults the page in.
    // SAFETY: the helper checks the target address; no fault is taken.
    let mut ok = unsafe { aya_ebpf::helpers::bpf_probe_read_user_buf(ptr as *const u8, buf).is_ok() };
    if !ok && SLEEPABLE {
        // SAFETY: the helper checks the target address (faulting the page in if needed);
        // the destination is a bounded slice of the reserved record.
        ok = unsafe { bpf_copy_from_user(buf.as_mut_ptr().cast(), buf.len() as u32, ptr as *const c_void) == 0 };
    }
    if !ok {
        // Keep `len` (the bytes wanted): userspace retries from /proc/PID/mem.
        out.flags |= strflag::UNREADABLE;
    }
    out
}

fn try_usdt<const SLEEPABLE: bool>(ctx: &ProbeContext) -> Option<()> {
    // Links made for a process tree, a cgroup or a binary are not tied to one pid: every
    // process mapping the file runs this, and only the traced ones go on.
    let pid_tgid = bpf_get_current_pid_tgid();
    if !crate::maps::traced_tgid((pid_tgid >> 32) as u32) {
        return None;
    }
    // SAFETY: helper reading the attach cookie of the running program.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let Some(spec) = USDT_SPECS.get(cookie as u32) else {
        aya_log_ebpf::debug!(ctx, "tprof_usdt: no spec for cookie {}", cookie);
        return None;
    };
    let mut args = [0u64; MAX_USDT_ARGS];
    let mut i = 0;
    while i < MAX_USDT_ARGS {
        if (i as u32) < spec.nargs {
            args[i] = fetch(ctx, &spec.args[i]);
        }
        i += 1;
    }
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let ts = now();
    match spec.probe {
        probe::TASK_BEGIN | probe::TASK_ATTACH => {
            let task = TaskId { trace_hi: args[0], trace_lo: args[1], span_id: args[2] };
            let Some(st) = thread::get_or_insert(pid, tid) else {
                aya_log_ebpf::warn!(ctx, "tid {}: THREADS map full, span {:x} not tracked", tid, task.span_id);
                return None;
            };
            // A task nested deeper than the stack: its record says so, and userspace flags it.
            let untracked = if begin(st, pid, tid, ts, task) { 0 } else { strflag::TASK_UNTRACKED };
            if untracked != 0 {
                aya_log_ebpf::warn!(ctx, "tid {}: task stack full, span {:x} not tracked on this thread", tid, task.span_id);
            }
            let k = if spec.probe == probe::TASK_BEGIN { kind::TASK_BEGIN } else { kind::TASK_ATTACH };
            let (name_ptr, name_len) = if k == kind::TASK_BEGIN { (args[TASK_NAME], args[TASK_NAME + 1]) } else { (0, 0) };
            emit::<TaskRecord>(k, &task, |r| {
                // SAFETY: `r` is a reserved ring-buffer slot of the right size.
                let r = unsafe { &mut *r };
                r.header = header(k, ts, pid, tid, &task);
                r.parent_span_id = args[PARENT_SPAN];
                r.name = read_str::<NAME_LEN, SLEEPABLE>(name_ptr, name_len, &mut r.name_buf);
                r.name.flags |= untracked;
            });
        }
        probe::TASK_END | probe::TASK_DETACH => {
            let task = TaskId { trace_hi: args[0], trace_lo: args[1], span_id: args[2] };
            if let Some(st) = thread::get(tid) {
                end(st, pid, tid, ts, task.span_id);
            }
            let k = if spec.probe == probe::TASK_END { kind::TASK_END } else { kind::TASK_DETACH };
            let dropped = if k == kind::TASK_END { take_span_drops(task.span_id) } else { 0 };
            emit::<TaskEndRecord>(k, &task, |r| {
                // SAFETY: `r` is a reserved ring-buffer slot of the right size.
                unsafe { r.write(TaskEndRecord { header: header(k, ts, pid, tid, &task), dropped }) }
            });
        }
        probe::REGION_BEGIN | probe::REGION_END => {
            let task = thread::get(tid)?.top()?;
            let k = if spec.probe == probe::REGION_BEGIN { kind::REGION_BEGIN } else { kind::REGION_END };
            emit::<RegionRecord>(k, &task, |r| {
                // SAFETY: `r` is a reserved ring-buffer slot of the right size.
                let r = unsafe { &mut *r };
                r.header = header(k, ts, pid, tid, &task);
                r.name = read_str::<NAME_LEN, SLEEPABLE>(args[REGION_NAME], args[REGION_NAME + 1], &mut r.name_buf);
            });
        }
        probe::LOG => {
            let task = thread::get(tid)?.top()?;
            emit::<LogRecord>(kind::LOG, &task, |r| {
                // SAFETY: `r` is a reserved ring-buffer slot of the right size.
                let r = unsafe { &mut *r };
                r.header = header(kind::LOG, ts, pid, tid, &task);
                r.key = read_str::<LOG_KEY_LEN, SLEEPABLE>(args[LOG_KEY], args[LOG_KEY + 1], &mut r.key_buf);
                r.value = read_str::<LOG_VALUE_LEN, SLEEPABLE>(args[LOG_VALUE], args[LOG_VALUE + 1], &mut r.value_buf);
            });
        }
        _ => {}
    }
    Some(())
}

/// The thread starts (or resumes) work for `task`: the outer task's slice ends here.
/// Returns false when the task could not be pushed (stack full).
#[inline(always)]
fn begin(st: &mut ThreadState, pid: u32, tid: u32, ts: u64, task: TaskId) -> bool {
    st.running(pid, tid, ts);
    st.cut_slice(pid, tid, ts);
    st.flush_agg(pid, tid, ts);
    let pushed = st.push(task, ts);
    st.oncpu_since = ts;
    pushed
}

/// The thread stops work for `span_id`: its last slice ends here, the outer task resumes.
#[inline(always)]
fn end(st: &mut ThreadState, pid: u32, tid: u32, ts: u64, span_id: u64) {
    st.running(pid, tid, ts);
    if st.top().map(|t| t.span_id) == Some(span_id) {
        st.cut_slice(pid, tid, ts);
    }
    // Before TASK_END: userspace closes the task's ledger at that record.
    st.flush_agg(pid, tid, ts);
    st.remove(span_id);
    st.oncpu_since = ts;
}
