//! Ring-buffer bytes -> [`Record`]s. Checks each record's kind and length before reading;
//! a short or unknown record is an error the caller counts, never a panic. Strings from the
//! traced process are kept as lossy UTF-8 and escaped by the sinks.

use profiler_common::{
    kind, strflag, AggRecord, Header, KStackRecord, LogRecord, OffCpuRecord, OnCpuRecord, ProcRecord, RegionRecord, StrRef,
    SyscallRecord, TaskEndRecord, TaskRecord, UStackRecord, KSTACK_DEPTH, USTACK_DEFERRED,
};

use crate::model::event::{Meta, Name, Record, StackIds, TaskKey, Waker};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Short { kind: u32, len: usize, need: usize },
    UnknownKind(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short { kind, len, need } => {
                write!(f, "record of kind {kind} is {len} bytes, needs {need}")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Copies a `#[repr(C)]` record out of `bytes` after checking the length.
fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short { kind, len: bytes.len(), need });
    }
    // SAFETY: the length was checked above; T is one of profiler-common's #[repr(C)] records,
    // made only of integers and byte arrays, valid for any bit pattern; read_unaligned makes
    // no alignment assumption about the ring buffer slice.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn meta(h: &Header) -> Meta {
    Meta { cpu: h.cpu, ts_ns: h.ts_ns, pid: h.pid, tid: h.tid, task: TaskKey::from_raw(&h.task) }
}

/// Reads `len` bytes at `addr` in process `pid`, for strings the kernel could not read
/// (typically a page of a freshly loaded library that was not faulted in yet).
pub type LateReader<'a> = &'a mut dyn FnMut(u32, u64, usize) -> Option<Vec<u8>>;

/// A target string: the copied bytes, or a late read when the kernel could not copy them.
fn text(pid: u32, s: &StrRef, buf: &[u8], late: LateReader<'_>) -> (String, u32) {
    let n = (s.len as usize).min(buf.len());
    if s.flags & strflag::INTS != 0 {
        return (crate::mapping::format_ints(&buf[..n]), s.flags & !strflag::INTS);
    }
    if s.flags & strflag::UNREADABLE != 0 && n > 0 {
        if let Some(bytes) = late(pid, s.ptr, n) {
            let flags = (s.flags & !strflag::UNREADABLE) | strflag::LATE;
            return (String::from_utf8_lossy(&bytes[..n.min(bytes.len())]).into_owned(), flags);
        }
        return (String::new(), s.flags);
    }
    (String::from_utf8_lossy(&buf[..n]).into_owned(), s.flags)
}


/// A late read [`decode_with`] would ask for: (pid, address, length).
pub type LateWant = (u32, u64, usize);

/// The late reads decoding `bytes` would ask for (the strings the kernel could not copy),
/// appended to `out` in the order [`decode_with`] asks for them; nothing for records
/// without target strings, or that do not decode.
pub fn late_wants(bytes: &[u8], out: &mut Vec<LateWant>) {
    let mut want = |pid: u32, s: &StrRef, buf: &[u8]| {
        let n = (s.len as usize).min(buf.len());
        if s.flags & strflag::UNREADABLE != 0 && n > 0 {
            out.push((pid, s.ptr, n));
        }
    };
    match read::<u32>(bytes, 0) {
        Ok(kind::TASK_BEGIN) => {
            if let Ok(r) = read::<TaskRecord>(bytes, kind::TASK_BEGIN) {
                want(r.header.pid, &r.name, &r.name_buf);
            }
        }
        Ok(k @ (kind::REGION_BEGIN | kind::REGION_END)) => {
            if let Ok(r) = read::<RegionRecord>(bytes, k) {
                want(r.header.pid, &r.name, &r.name_buf);
            }
        }
        Ok(kind::LOG) => {
            if let Ok(r) = read::<LogRecord>(bytes, kind::LOG) {
                want(r.header.pid, &r.key, &r.key_buf);
                want(r.header.pid, &r.value, &r.value_buf);
            }
        }
        _ => {}
    }
}

/// Distinct names interned per thread; beyond, each record's name is its own copy.
const MAX_INTERNED_NAMES: usize = 4096;

thread_local! {
    static NAMES: std::cell::RefCell<std::collections::HashMap<Box<[u8]>, Name, foldhash::fast::RandomState>> =
        std::cell::RefCell::new(std::collections::HashMap::default());
}

/// The name of these bytes (lossy UTF-8), shared with earlier records of the same name.
fn intern(bytes: &[u8]) -> Name {
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(n) = names.get(bytes) {
            return Name::clone(n);
        }
        let n: Name = Name::from(String::from_utf8_lossy(bytes));
        if names.len() < MAX_INTERNED_NAMES {
            names.insert(bytes.into(), Name::clone(&n));
        }
        n
    })
}

/// A target string used as a name: like [`text`], interned.
fn name_text(pid: u32, s: &StrRef, buf: &[u8], late: LateReader<'_>) -> (Name, u32) {
    let n = (s.len as usize).min(buf.len());
    if s.flags & strflag::UNREADABLE != 0 && n > 0 {
        let (t, flags) = text(pid, s, buf, late);
        return (Name::from(t), flags);
    }
    (intern(&buf[..n]), s.flags)
}

/// Decodes one ring-buffer record (strings the kernel could not read stay empty).
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    decode_with(bytes, &mut |_, _, _| None)
}

/// Decodes one ring-buffer record, retrying unreadable strings with `late`.
pub fn decode_with(bytes: &[u8], late: LateReader<'_>) -> Result<Record, DecodeError> {
    let kind_raw = read::<u32>(bytes, 0)?;
    let rec = match kind_raw {
        kind::TASK_BEGIN | kind::TASK_ATTACH => {
            let mut r: TaskRecord = read(bytes, kind_raw)?;
            let untracked = r.name.flags & strflag::TASK_UNTRACKED != 0;
            r.name.flags &= !strflag::TASK_UNTRACKED;
            if kind_raw == kind::TASK_BEGIN {
                let (name, name_flags) = name_text(r.header.pid, &r.name, &r.name_buf, late);
                Record::TaskBegin { meta: meta(&r.header), parent_span_id: r.parent_span_id, name, name_flags, untracked }
            } else {
                Record::TaskAttach { meta: meta(&r.header), parent_span_id: r.parent_span_id, untracked }
            }
        }
        kind::TASK_END => {
            let r: TaskEndRecord = read(bytes, kind_raw)?;
            Record::TaskEnd { meta: meta(&r.header), dropped: r.dropped }
        }
        kind::TASK_DETACH => {
            let r: TaskEndRecord = read(bytes, kind_raw)?;
            Record::TaskDetach { meta: meta(&r.header) }
        }
        kind::REGION_BEGIN | kind::REGION_END => {
            let r: RegionRecord = read(bytes, kind_raw)?;
            let (name, name_flags) = name_text(r.header.pid, &r.name, &r.name_buf, late);
            let meta = meta(&r.header);
            if kind_raw == kind::REGION_BEGIN {
                Record::RegionBegin { meta, name, name_flags }
            } else {
                Record::RegionEnd { meta, name, name_flags }
            }
        }
        kind::LOG => {
            let r: LogRecord = read(bytes, kind_raw)?;
            let (key, kf) = text(r.header.pid, &r.key, &r.key_buf, late);
            let (value, vf) = text(r.header.pid, &r.value, &r.value_buf, late);
            Record::Log { meta: meta(&r.header), key, value, flags: kf | (vf << 8) }
        }
        kind::ON_CPU => {
            let r: OnCpuRecord = read(bytes, kind_raw)?;
            Record::OnCpu { meta: meta(&r.header), start_ns: r.start_ns, steal_ns: r.steal_ns }
        }
        kind::OFF_CPU => {
            let r: OffCpuRecord = read(bytes, kind_raw)?;
            Record::OffCpu {
                meta: meta(&r.header),
                start_ns: r.start_ns,
                runnable_ns: (r.runnable_ns != 0).then_some(r.runnable_ns),
                state: r.state,
                syscall_nr: u32::try_from(r.syscall_nr).ok(),
                waker: waker(&r),
                stacks: StackIds {
                    kernel: u32::try_from(r.kstack_id).ok(),
                    user: u32::try_from(r.ustack_id).ok(),
                    user_pending: r.ustack_id == USTACK_DEFERRED,
                },
                end_inferred: r.waker_flags & profiler_common::waker::END_INFERRED != 0,
            }
        }
        kind::SYSCALL => {
            let r: SyscallRecord = read(bytes, kind_raw)?;
            Record::Syscall { meta: meta(&r.header), nr: r.nr, start_ns: r.start_ns, ret: r.ret }
        }
        kind::AGG => {
            let r: AggRecord = read(bytes, kind_raw)?;
            Record::Agg { meta: meta(&r.header), sums: r.agg }
        }
        kind::KSTACK => {
            let r: KStackRecord = read(bytes, kind_raw)?;
            let n = (r.nframes as usize).min(KSTACK_DEPTH);
            let frames = r.frames[..n].iter().copied().filter(|ip| *ip != 0).collect();
            Record::KStack { meta: meta(&r.header), start_ns: r.start_ns, frames }
        }
        kind::USTACK => {
            let r: UStackRecord = read(bytes, kind_raw)?;
            Record::UStack { meta: meta(&r.header), id: u32::try_from(r.ustack_id).ok() }
        }
        kind::PROC => {
            let r: ProcRecord = read(bytes, kind_raw)?;
            Record::Proc { meta: meta(&r.header), event: r.event, pid: r.pid, parent: r.parent }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(rec)
}

fn waker(r: &OffCpuRecord) -> Waker {
    use profiler_common::waker as w;
    let f = r.waker_flags;
    if f & w::PREEMPTED != 0 {
        Waker::Preempted
    } else if f & w::SEEN == 0 {
        Waker::Unknown
    } else if f & w::KERNEL != 0 {
        Waker::Kernel
    } else {
        let comm_len = r.waker_comm.iter().position(|b| *b == 0).unwrap_or(r.waker_comm.len());
        Waker::Thread {
            pid: r.waker_pid,
            tid: r.waker_tid,
            comm: String::from_utf8_lossy(&r.waker_comm[..comm_len]).into_owned(),
            task: (f & w::HAS_TASK != 0).then(|| TaskKey::from_raw(&r.waker_task)),
            via_softirq: f & w::SOFTIRQ != 0,
        }
    }
}

/// The AGG record the kernel would send for a thread's unsent sums (read from its map at the
/// end of a session): the thread's innermost task, at `ts_ns`.
pub fn unsent_agg_bytes(tid: u32, st: &profiler_common::ThreadState, ts_ns: u64) -> Option<Vec<u8>> {
    let d = st.depth as usize;
    let task = *st.stack.get(d.checked_sub(1)?)?;
    let rec = AggRecord { header: Header { kind: kind::AGG, cpu: 0, ts_ns, pid: st.pid, tid, task }, agg: st.agg };
    Some(raw_bytes(&rec))
}

/// Serializes a record as the eBPF side would.
pub(crate) fn raw_bytes<T: Copy>(rec: &T) -> Vec<u8> {
    // SAFETY: T is a #[repr(C)] record without padding (sizes asserted in profiler-common).
    unsafe { std::slice::from_raw_parts((rec as *const T).cast::<u8>(), std::mem::size_of::<T>()).to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiler_common::{waker as w, TaskId, NAME_LEN};
    use profiler_common::StrRef;

    fn hdr(kind: u32) -> Header {
        Header {
            kind,
            cpu: 1,
            ts_ns: 5_000,
            pid: 10,
            tid: 11,
            task: TaskId { trace_hi: 0xaa, trace_lo: 0xbb, span_id: 0xcc },
        }
    }

    #[test]
    fn task_begin_round_trip() {
        let mut name_buf = [0u8; NAME_LEN];
        name_buf[..5].copy_from_slice(b"GET /");
        let name = StrRef { ptr: 0x1000, len: 5, flags: 0 };
        let r = TaskRecord { header: hdr(kind::TASK_BEGIN), parent_span_id: 7, name, name_buf };
        let rec = decode(&raw_bytes(&r)).expect("decodes");
        let Record::TaskBegin { meta, parent_span_id, name, .. } = rec else { panic!("wrong variant {rec:?}") };
        assert_eq!(&*name, "GET /");
        assert_eq!(parent_span_id, 7);
        assert_eq!(meta.task.trace_hex(), "00000000000000aa00000000000000bb");
        assert_eq!(meta.task.span_hex(), "00000000000000cc");
        assert_eq!((meta.pid, meta.tid, meta.cpu, meta.ts_ns), (10, 11, 1, 5_000));
    }

    #[test]
    fn a_task_the_kernel_could_not_push_is_untracked() {
        let mut name_buf = [0u8; NAME_LEN];
        name_buf[..4].copy_from_slice(b"deep");
        let name = StrRef { ptr: 0x1000, len: 4, flags: strflag::TASK_UNTRACKED | strflag::TRUNCATED };
        let r = TaskRecord { header: hdr(kind::TASK_BEGIN), parent_span_id: 0, name, name_buf };
        let Ok(Record::TaskBegin { name, name_flags, untracked, .. }) = decode(&raw_bytes(&r)) else { panic!("decodes") };
        assert_eq!((&*name, name_flags, untracked), ("deep", strflag::TRUNCATED, true), "the flag is the task's, not the name's");
        let r = TaskRecord { header: hdr(kind::TASK_ATTACH), parent_span_id: 0, name: StrRef { ptr: 0, len: 0, flags: strflag::TASK_UNTRACKED }, name_buf };
        assert!(matches!(decode(&raw_bytes(&r)), Ok(Record::TaskAttach { untracked: true, .. })));
    }

    #[test]
    fn hostile_name_len_is_clamped() {
        let name = StrRef { ptr: 0, len: u32::MAX, flags: 0 };
        let r = TaskRecord { header: hdr(kind::TASK_BEGIN), parent_span_id: 0, name, name_buf: [b'x'; NAME_LEN] };
        let Ok(Record::TaskBegin { name, .. }) = decode(&raw_bytes(&r)) else { panic!("decodes") };
        assert_eq!(name.len(), NAME_LEN);
    }

    #[test]
    fn unreadable_strings_are_read_late() {
        let name = StrRef { ptr: 0xdead0, len: 6, flags: strflag::UNREADABLE };
        let r = RegionRecord { header: hdr(kind::REGION_BEGIN), name, name_buf: [0; NAME_LEN] };
        let mut asked = Vec::new();
        let rec = decode_with(&raw_bytes(&r), &mut |pid, ptr, len| {
            asked.push((pid, ptr, len));
            Some(b"lazy-p".to_vec())
        });
        let Ok(Record::RegionBegin { name, name_flags, .. }) = rec else { panic!("decodes: {rec:?}") };
        assert_eq!((&*name, name_flags), ("lazy-p", strflag::LATE));
        assert_eq!(asked, [(10, 0xdead0, 6)]);
        // Still unreadable later (e.g. a freed buffer): empty, flagged.
        let Ok(Record::RegionBegin { name, name_flags, .. }) = decode(&raw_bytes(&r)) else { panic!() };
        assert_eq!((&*name, name_flags), ("", strflag::UNREADABLE));
    }

    #[test]
    fn late_wants_are_what_decoding_asks_for() {
        let readable = StrRef { ptr: 0x10, len: 3, flags: 0 };
        let bad = |ptr| StrRef { ptr, len: 500, flags: strflag::UNREADABLE };
        let mut log = LogRecord { header: hdr(kind::LOG), key: bad(0x20), value: readable, key_buf: [0; profiler_common::LOG_KEY_LEN], value_buf: [0; profiler_common::LOG_VALUE_LEN] };
        let region = RegionRecord { header: hdr(kind::REGION_END), name: bad(0x30), name_buf: [0; NAME_LEN] };
        let task = TaskRecord { header: hdr(kind::TASK_BEGIN), parent_span_id: 0, name: bad(0x40), name_buf: [0; NAME_LEN] };
        let on = OnCpuRecord { header: hdr(kind::ON_CPU), start_ns: 1, steal_ns: 0 };
        for bytes in [raw_bytes(&log), raw_bytes(&region), raw_bytes(&task), raw_bytes(&on)] {
            let mut wants = Vec::new();
            late_wants(&bytes, &mut wants);
            let mut asked = Vec::new();
            decode_with(&bytes, &mut |pid, addr, len| {
                asked.push((pid, addr, len));
                None
            })
            .unwrap();
            assert_eq!(wants, asked);
        }
        log.value = bad(0x50);
        let mut wants = Vec::new();
        late_wants(&raw_bytes(&log), &mut wants);
        assert_eq!(wants.iter().map(|w| w.1).collect::<Vec<_>>(), [0x20, 0x50]);
        late_wants(&raw_bytes(&log)[..20], &mut wants);
        assert_eq!(wants.len(), 2, "a short record asks for nothing");
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let r = OnCpuRecord { header: hdr(kind::ON_CPU), start_ns: 1, steal_ns: 0 };
        let bytes = raw_bytes(&r);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "len {len} must not decode");
        }
        let mut bad = bytes.clone();
        bad[0] = 99;
        assert_eq!(decode(&bad), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn off_cpu_wakers() {
        let mut r = OffCpuRecord { header: hdr(kind::OFF_CPU), start_ns: 100, runnable_ns: 300, state: 1, syscall_nr: 202, kstack_id: 7, ustack_id: -1, ..Default::default() };
        r.waker_flags = w::SEEN | w::HAS_TASK;
        r.waker_pid = 50;
        r.waker_tid = 51;
        r.waker_comm[..4].copy_from_slice(b"lock");
        r.waker_task = TaskId { trace_hi: 0, trace_lo: 1, span_id: 2 };
        let Ok(Record::OffCpu { runnable_ns, syscall_nr, waker, stacks, .. }) = decode(&raw_bytes(&r)) else { panic!() };
        assert_eq!(stacks, StackIds { kernel: Some(7), user: None, user_pending: false });
        assert_eq!(runnable_ns, Some(300));
        assert_eq!(syscall_nr, Some(202));
        assert_eq!(
            waker,
            Waker::Thread { pid: 50, tid: 51, comm: "lock".into(), task: Some(TaskKey { trace_id: 1, span_id: 2 }), via_softirq: false }
        );
        r.waker_flags = w::SEEN | w::KERNEL;
        r.syscall_nr = -1;
        let Ok(Record::OffCpu { waker, syscall_nr, .. }) = decode(&raw_bytes(&r)) else { panic!() };
        assert_eq!((waker, syscall_nr), (Waker::Kernel, None));
        r.waker_flags = w::PREEMPTED;
        let Ok(Record::OffCpu { waker, .. }) = decode(&raw_bytes(&r)) else { panic!() };
        assert_eq!(waker, Waker::Preempted);
        r.waker_flags = 0;
        r.runnable_ns = 0;
        let Ok(Record::OffCpu { waker, runnable_ns, .. }) = decode(&raw_bytes(&r)) else { panic!() };
        assert_eq!((waker, runnable_ns), (Waker::Unknown, None));
    }

    #[test]
    fn kernel_sums_and_deferred_stacks() {
        use crate::model::event::{agg_intervals, agg_syscalls, OTHER_SYSCALLS};
        use profiler_common::{Agg, AggSyscall, AGG_OTHER_NR, AGG_SYSCALLS};
        let mut agg = Agg { oncpu_ns: 1, runq_ns: 2, blocked_ns: 3, slices: 4, offcpu: 5, syscalls: 9, ..Default::default() };
        agg.sys = [AggSyscall { nr: -1, ..Default::default() }; AGG_SYSCALLS];
        agg.sys[0] = AggSyscall { nr: 7, count: 6, errors: 1, total_ns: 70, blocked_ns: 3, _pad: 0 };
        agg.sys[1] = AggSyscall { nr: AGG_OTHER_NR, count: 3, total_ns: 30, ..Default::default() };
        let Ok(Record::Agg { sums, .. }) = decode(&raw_bytes(&AggRecord { header: hdr(kind::AGG), agg })) else { panic!() };
        assert_eq!((sums.oncpu_ns, sums.runq_ns, sums.blocked_ns, agg_intervals(&sums)), (1, 2, 3, 18));
        let nrs: Vec<(u32, u32)> = agg_syscalls(&sums).map(|(nr, s)| (nr, s.count)).collect();
        assert_eq!(nrs, [(7, 6), (OTHER_SYSCALLS, 3)], "free slots are skipped, the other-slot is named");

        let mut k = KStackRecord { header: hdr(kind::KSTACK), start_ns: 9, nframes: 3, _pad: 0, frames: [0; KSTACK_DEPTH] };
        k.frames[..3].copy_from_slice(&[0xa, 0xb, 0xc]);
        let Ok(Record::KStack { start_ns, frames, .. }) = decode(&raw_bytes(&k)) else { panic!() };
        assert_eq!((start_ns, frames), (9, vec![0xa, 0xb, 0xc]));
        // A frame count beyond the array is clamped, never read past it.
        k.nframes = u32::MAX;
        let Ok(Record::KStack { frames, .. }) = decode(&raw_bytes(&k)) else { panic!() };
        assert_eq!(frames.len(), 3, "zero frames are dropped");

        let u = UStackRecord { header: hdr(kind::USTACK), ustack_id: -1, _pad: 0 };
        assert!(matches!(decode(&raw_bytes(&u)), Ok(Record::UStack { id: None, .. })));
        let o = OffCpuRecord { header: hdr(kind::OFF_CPU), kstack_id: -1, ustack_id: USTACK_DEFERRED, ..Default::default() };
        let Ok(Record::OffCpu { stacks, .. }) = decode(&raw_bytes(&o)) else { panic!() };
        assert_eq!(stacks, StackIds { kernel: None, user: None, user_pending: true });
    }
}
