//! Foreign probe sites: USDT probes of other providers (`postgresql:query__start`...) that a
//! mapping (`usdt-probes/MAPPING.md`) says stand for tprof events. They run in the same two
//! programs as tprof's own probes ([`crate::usdt`]), which hand a site whose spec has actions
//! over to [`run`] after fetching its arguments (userspace put the ones the actions use in
//! the slots they name). tprof's own probes never come here: one test of `nactions`.
//!
//! Foreign probes carry no trace context: a task begin generates its ids (`bpf_get_prandom_u32`,
//! trace-id marked [`foreign::GENERATED_TRACE_HI`]), pushed on the thread's stack like
//! tprof's own tasks; a task end removes the innermost task if it is a generated one. A
//! generated task still current when the next one begins on its thread (the program left
//! it by an error path that has no end probe) is ended there, with a log saying so.

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_probe_read_user_str_bytes};
use profiler_common::{
    foreign, kind, probe, strflag, ForeignAction, LogRecord, RegionRecord, StrRef, TaskEndRecord, TaskId, TaskRecord, UsdtSpec, FOREIGN_TEXT_LEN,
    LOG_VALUE_LEN, MAX_FOREIGN_ACTIONS, MAX_USDT_ARGS, NAME_LEN,
};

use crate::emit::{emit, header, take_span_drops};
use crate::thread::{self, ThreadExt};
use crate::usdt::{begin, end, read_str};

/// Runs the actions of a foreign site, in order. Each kind of action is a BPF subprogram
/// of its own (not inlined), with one copy of the thread bookkeeping each, so that no frame
/// outgrows the BPF stack and the handler of tprof's own probes keeps its frame (and cost).
#[inline(always)]
pub fn run<const SLEEPABLE: bool>(spec: &UsdtSpec, args: &[u64; MAX_USDT_ARGS], pid: u32, tid: u32, ts: u64) {
    let pid_tgid = (u64::from(pid) << 32) | u64::from(tid);
    let mut i = 0;
    while i < MAX_FOREIGN_ACTIONS {
        if i as u32 >= spec.nactions {
            break;
        }
        match spec.actions[i].event as u32 {
            probe::TASK_BEGIN => {
                // A generated task still current: its end probe never fired (an error path).
                end_generated(pid_tgid, ts, 1);
                task_begin::<SLEEPABLE>(spec, i as u64, args, pid_tgid, ts);
            }
            probe::TASK_END => end_generated(pid_tgid, ts, 0),
            probe::REGION_BEGIN | probe::REGION_END | probe::LOG => record::<SLEEPABLE>(spec, i as u64, args, pid_tgid, ts),
            _ => {}
        }
        i += 1;
    }
}

/// Ends the thread's innermost task if the kernel generated it; `implicit`: because a new
/// one begins (a log says so first).
#[inline(never)]
fn end_generated(pid_tgid: u64, ts: u64, implicit: u64) {
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let Some(st) = thread::get(tid) else { return };
    let Some(top) = st.top() else { return };
    if !foreign::is_generated(top.trace_hi) {
        return;
    }
    if implicit != 0 {
        emit::<LogRecord>(kind::LOG, &top, |r| {
            // SAFETY: `r` is a reserved ring-buffer slot of the right size.
            let r = unsafe { &mut *r };
            r.header = header(kind::LOG, ts, pid, tid, &top);
            let key = foreign::IMPLICIT_END_KEY;
            let n = if key.len() < r.key_buf.len() { key.len() } else { r.key_buf.len() };
            if let (Some(d), Some(s)) = (r.key_buf.get_mut(..n), key.get(..n)) {
                d.copy_from_slice(s);
            }
            r.key = StrRef { ptr: 0, len: n as u32, flags: 0 };
            r.value = StrRef { ptr: 0, len: 0, flags: 0 };
        });
    }
    end(st, pid, tid, ts, top.span_id);
    let dropped = take_span_drops(top.span_id);
    emit::<TaskEndRecord>(kind::TASK_END, &top, |r| {
        // SAFETY: `r` is a reserved ring-buffer slot of the right size.
        unsafe { r.write(TaskEndRecord { header: header(kind::TASK_END, ts, pid, tid, &top), dropped }) }
    });
}

/// A task begins, with generated ids.
#[inline(never)]
fn task_begin<const SLEEPABLE: bool>(spec: &UsdtSpec, i: u64, args: &[u64; MAX_USDT_ARGS], pid_tgid: u64, ts: u64) {
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let Some(a) = spec.actions.get(i as usize) else { return };
    let Some(st) = thread::get_or_insert(pid, tid) else { return };
    // SAFETY (all four): helper without arguments.
    let (r0, r1, r2, r3) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32(), bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    let task = TaskId {
        trace_hi: foreign::GENERATED_TRACE_HI | u64::from(a.flags),
        trace_lo: (u64::from(r0) << 32) | u64::from(r1),
        // Span-id 0 means "no task": never generate it.
        span_id: ((u64::from(r2) << 32) | u64::from(r3)) | 1,
    };
    let untracked = if begin(st, pid, tid, ts, task) { 0 } else { strflag::TASK_UNTRACKED };
    emit::<TaskRecord>(kind::TASK_BEGIN, &task, |r| {
        // SAFETY: `r` is a reserved ring-buffer slot of the right size.
        let r = unsafe { &mut *r };
        r.header = header(kind::TASK_BEGIN, ts, pid, tid, &task);
        r.parent_span_id = 0;
        r.name = value::<NAME_LEN, SLEEPABLE>(spec, a, args, &mut r.name_buf);
        r.name.flags |= untracked;
    });
}

/// A region edge or a log of the thread's innermost task.
#[inline(never)]
fn record<const SLEEPABLE: bool>(spec: &UsdtSpec, i: u64, args: &[u64; MAX_USDT_ARGS], pid_tgid: u64, ts: u64) {
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let Some(a) = spec.actions.get(i as usize) else { return };
    let Some(task) = thread::get(tid).and_then(|st| st.top()) else { return };
    match a.event as u32 {
        probe::REGION_BEGIN | probe::REGION_END => {
            let k = if a.event as u32 == probe::REGION_BEGIN { kind::REGION_BEGIN } else { kind::REGION_END };
            emit::<RegionRecord>(k, &task, |r| {
                // SAFETY: `r` is a reserved ring-buffer slot of the right size.
                let r = unsafe { &mut *r };
                r.header = header(k, ts, pid, tid, &task);
                r.name = fixed_text(a, &mut r.name_buf);
            });
        }
        _ => {
            emit::<LogRecord>(kind::LOG, &task, |r| {
                // SAFETY: `r` is a reserved ring-buffer slot of the right size.
                let r = unsafe { &mut *r };
                r.header = header(kind::LOG, ts, pid, tid, &task);
                r.key = fixed_text(a, &mut r.key_buf);
                r.value = value::<LOG_VALUE_LEN, SLEEPABLE>(spec, a, args, &mut r.value_buf);
            });
        }
    }
}

/// The action's fixed text (region name, log key) copied into `dst`.
#[inline(always)]
fn fixed_text<const N: usize>(a: &ForeignAction, dst: &mut [u8; N]) -> StrRef {
    let n = if (a.text_len as usize) < FOREIGN_TEXT_LEN { a.text_len as usize } else { FOREIGN_TEXT_LEN };
    let n = if n < N { n } else { N };
    if let (Some(d), Some(s)) = (dst.get_mut(..FOREIGN_TEXT_LEN), a.text.get(..)) {
        d.copy_from_slice(s);
    }
    StrRef { ptr: 0, len: n as u32, flags: 0 }
}

/// The action's value read into `dst`, in its form.
#[inline(always)]
fn value<const N: usize, const SLEEPABLE: bool>(spec: &UsdtSpec, a: &ForeignAction, args: &[u64; MAX_USDT_ARGS], dst: &mut [u8; N]) -> StrRef {
    let at = |slot: u8| args.get(slot as usize).copied().unwrap_or(0);
    match a.form {
        foreign::CSTR => read_cstr(at(a.arg), dst),
        foreign::STR => read_str::<N, SLEEPABLE>(at(a.arg), at(a.arg2), dst),
        foreign::INTS => format_ints(spec, a, args, dst),
        _ => StrRef { ptr: 0, len: 0, flags: 0 },
    }
}

/// A NUL-terminated string of the target, at most `N - 1` bytes. One that fills the buffer
/// is flagged truncated (it may have been exactly `N - 1` bytes long). Unreadable: empty and
/// flagged, with no length for userspace to retry (it would not know where the string ends).
#[inline(always)]
fn read_cstr<const N: usize>(ptr: u64, dst: &mut [u8; N]) -> StrRef {
    if ptr == 0 {
        return StrRef { ptr, len: 0, flags: strflag::UNREADABLE };
    }
    // SAFETY: the helper checks the target address; no fault is taken; it writes at most
    // `dst.len()` bytes, NUL included.
    match unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, dst) } {
        Ok(s) => {
            let n = s.len();
            let flags = if n + 1 >= N { strflag::TRUNCATED } else { 0 };
            StrRef { ptr, len: n as u32, flags }
        }
        Err(_) => StrRef { ptr, len: 0, flags: strflag::UNREADABLE },
    }
}

/// `a.arg2` integers from slot `a.arg`, in decimal, joined by `/`. Signedness was applied
/// when the argument was fetched (sign-extended to 64 bits).
#[inline(always)]
fn format_ints<const N: usize>(spec: &UsdtSpec, a: &ForeignAction, args: &[u64; MAX_USDT_ARGS], dst: &mut [u8; N]) -> StrRef {
    let mut pos = 0usize;
    let mut k = 0usize;
    while k < MAX_USDT_ARGS {
        if k >= a.arg2 as usize {
            break;
        }
        let slot = a.arg as usize + k;
        let Some(&raw) = args.get(slot) else { break };
        let signed = spec.args.get(slot).is_some_and(|x| x.signed != 0);
        if k > 0 {
            if let Some(b) = dst.get_mut(pos) {
                *b = b'/';
                pos += 1;
            }
        }
        pos = put_decimal(raw, signed, dst, pos);
        k += 1;
    }
    let (len, flags) = if pos > N { (N, strflag::TRUNCATED) } else { (pos, 0) };
    StrRef { ptr: 0, len: len as u32, flags }
}

/// Writes `v` (a signed value if `signed`) in decimal at `dst[pos..]`; returns the new
/// position.
#[inline(always)]
fn put_decimal<const N: usize>(v: u64, signed: bool, dst: &mut [u8; N], mut pos: usize) -> usize {
    let neg = signed && (v as i64) < 0;
    let mut x = if neg { (v as i64).unsigned_abs() } else { v };
    if neg {
        if let Some(b) = dst.get_mut(pos) {
            *b = b'-';
            pos += 1;
        }
    }
    // How many digits, then write them from the last.
    let mut n = 1usize;
    let mut t = x / 10;
    while n < 20 {
        if t == 0 {
            break;
        }
        t /= 10;
        n += 1;
    }
    let mut j = 0usize;
    while j < 20 {
        if j >= n {
            break;
        }
        if let Some(b) = dst.get_mut(pos + n - 1 - j) {
            *b = b'0' + (x % 10) as u8;
        }
        x /= 10;
        j += 1;
    }
    pos += n;
    pos
}
