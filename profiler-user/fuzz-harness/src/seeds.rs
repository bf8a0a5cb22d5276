//! Hand-built seed inputs for the fuzz targets, small and dense (a fuzzer mutates a 1 KiB
//! ELF far better than a 10 MiB one): tiny ELF files with SDT notes, BTF blobs, raw
//! ring-buffer records and `tprof record` files. Written into `corpus/<target>/seed-*` by
//! the example `write_seeds` of this crate:
//!
//! ```sh
//! cargo run -p tprof-fuzz-harness --example write_seeds
//! ```
//!
//! The corpus also holds a few real files (gcc-built ELFs of `tests/c/*.c`); see the fuzz
//! README. Depends on the `tprof` lib, `profiler_common` and std only.

use std::path::Path;

use profiler_common::{
    kind, strflag, waker, Header, LogRecord, OffCpuRecord, OnCpuRecord, RegionRecord, StrRef, SyscallRecord, TaskEndRecord,
    TaskId, TaskRecord, COMM_LEN, LOG_KEY_LEN, LOG_VALUE_LEN, NAME_LEN,
};

/// `(file name, bytes)` of one seed.
pub type Seed = (String, Vec<u8>);

// ---------------------------------------------------------------- ELF files with SDT notes

/// One SDT note: pc, the `.stapsdt.base` address it was linked against, semaphore, strings.
pub struct Note<'a> {
    pub pc: u64,
    pub base: u64,
    pub sema: u64,
    pub provider: &'a str,
    pub name: &'a str,
    pub args: &'a str,
}

const TEXT_OFF: u64 = 0x100;
const TEXT_LEN: u64 = 0x40;
/// The executable segment maps file offsets 0..0x140 at 0x1000.
const EXEC_VADDR: u64 = 0x1000;
/// The data segment (semaphores, `.probes`) maps file offsets 0x140..0x160 at 0x3140.
const DATA_OFF: u64 = TEXT_OFF + TEXT_LEN;
const DATA_VADDR: u64 = 0x3000 + DATA_OFF;
const DATA_LEN: u64 = 0x20;
/// `.stapsdt.base`: the last byte of `.text`.
pub const BASE_ADDR: u64 = EXEC_VADDR + TEXT_OFF + TEXT_LEN - 1;
/// Address of the `i`th probe's `nop`.
pub const fn probe_pc(i: u64) -> u64 {
    EXEC_VADDR + TEXT_OFF + i
}
/// Address of the `i`th semaphore (2 bytes each).
pub const fn sema_addr(i: u64) -> u64 {
    DATA_VADDR + 2 * i
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend(x.to_le_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend(x.to_le_bytes());
}
fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend(x.to_le_bytes());
}

/// A minimal ELF64 LE shared object: two `PT_LOAD`s (r-x text, rw- data) and the sections
/// `.text`, `.probes`, `.stapsdt.base` (when `with_base`), `.note.stapsdt`, `.shstrtab`.
pub fn tiny_elf(notes: &[Note<'_>], with_base: bool) -> Vec<u8> {
    let mut out = Vec::new();
    // ELF header (64 bytes); e_phoff 64, 2 program headers; e_shoff patched below.
    out.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    put16(&mut out, 3); // ET_DYN
    put16(&mut out, 62); // EM_X86_64
    put32(&mut out, 1);
    put64(&mut out, 0); // e_entry
    put64(&mut out, 64); // e_phoff
    put64(&mut out, 0); // e_shoff (patched)
    put32(&mut out, 0); // e_flags
    put16(&mut out, 64); // e_ehsize
    put16(&mut out, 56); // e_phentsize
    put16(&mut out, 2); // e_phnum
    put16(&mut out, 64); // e_shentsize
    let nsections: u16 = if with_base { 6 } else { 5 };
    put16(&mut out, nsections); // e_shnum
    put16(&mut out, nsections - 1); // e_shstrndx: the last one
    // Program headers.
    for (off, vaddr, len, flags) in [(0, EXEC_VADDR, DATA_OFF, 5u32), (DATA_OFF, DATA_VADDR, DATA_LEN, 6)] {
        put32(&mut out, 1); // PT_LOAD
        put32(&mut out, flags);
        put64(&mut out, off);
        put64(&mut out, vaddr);
        put64(&mut out, vaddr);
        put64(&mut out, len);
        put64(&mut out, len);
        put64(&mut out, 0x1000);
    }
    out.resize(TEXT_OFF as usize, 0);
    out.resize((TEXT_OFF + TEXT_LEN) as usize, 0x90); // .text: nops
    out.resize((DATA_OFF + DATA_LEN) as usize, 0); // .probes: semaphores
    // .note.stapsdt
    let note_off = out.len() as u64;
    for n in notes {
        let mut desc = Vec::new();
        put64(&mut desc, n.pc);
        put64(&mut desc, n.base);
        put64(&mut desc, n.sema);
        for s in [n.provider, n.name, n.args] {
            desc.extend(s.as_bytes());
            desc.push(0);
        }
        put32(&mut out, 8);
        put32(&mut out, desc.len() as u32);
        put32(&mut out, 3);
        out.extend(b"stapsdt\0");
        out.extend(&desc);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    let note_len = out.len() as u64 - note_off;
    // .shstrtab
    let shstr_off = out.len() as u64;
    let mut names = vec![0u8];
    let mut name = |s: &str| {
        let at = names.len() as u32;
        names.extend(s.as_bytes());
        names.push(0);
        at
    };
    let (n_text, n_probes, n_base, n_note, n_shstr) =
        (name(".text"), name(".probes"), name(".stapsdt.base"), name(".note.stapsdt"), name(".shstrtab"));
    out.extend(&names);
    while out.len() % 8 != 0 {
        out.push(0);
    }
    let shoff = out.len() as u64;
    out[40..48].copy_from_slice(&shoff.to_le_bytes());
    // Section headers: (name, type, flags, addr, offset, size, align).
    let mut sections = vec![
        (0, 0, 0, 0, 0, 0, 0),
        (n_text, 1, 6, EXEC_VADDR + TEXT_OFF, TEXT_OFF, TEXT_LEN, 16), // PROGBITS, AX
        (n_probes, 1, 3, DATA_VADDR, DATA_OFF, DATA_LEN, 2),           // PROGBITS, WA
    ];
    if with_base {
        sections.push((n_base, 1, 2, BASE_ADDR, TEXT_OFF + TEXT_LEN - 1, 1, 1));
    }
    sections.push((n_note, 7, 0, 0, note_off, note_len, 4)); // NOTE
    sections.push((n_shstr, 3, 0, 0, shstr_off, names.len() as u64, 1)); // STRTAB
    for (name, ty, flags, addr, off, size, align) in sections {
        put32(&mut out, name);
        put32(&mut out, ty);
        put64(&mut out, flags);
        put64(&mut out, addr);
        put64(&mut out, off);
        put64(&mut out, size);
        put32(&mut out, 0); // sh_link
        put32(&mut out, 0); // sh_info
        put64(&mut out, align);
        put64(&mut out, 0); // sh_entsize
    }
    out
}

/// The notes of a C target built with `tprof.h`, as gcc lays them out.
fn tprof_notes(base: u64) -> Vec<Note<'static>> {
    vec![
        Note { pc: probe_pc(0), base, sema: sema_addr(0), provider: "tprof", name: "task_begin", args: "8@%rax 8@%rdx 8@%rcx 8@$0 8@%r15 8@$10" },
        Note { pc: probe_pc(1), base, sema: sema_addr(1), provider: "tprof", name: "region_begin", args: "8@%r12 8@$2" },
        Note { pc: probe_pc(2), base, sema: sema_addr(2), provider: "tprof", name: "region_end", args: "8@%r12 8@$2" },
        Note { pc: probe_pc(3), base, sema: sema_addr(3), provider: "tprof", name: "log", args: "8@%rbx 8@%rbp 8@%r12 8@$0" },
        Note { pc: probe_pc(4), base, sema: 0, provider: "tprof", name: "task_end", args: "8@%rax 8@%rdx 8@%rcx" },
        Note { pc: probe_pc(5), base, sema: 0, provider: "tprof", name: "task_attach", args: "8@%rax 8@%rdx 8@%rcx 8@%rsi" },
        Note { pc: probe_pc(6), base, sema: 0, provider: "tprof", name: "task_detach", args: "-4@-20(%rbp) 8@16(%rax,%rbx,8) 1@%sil" },
        Note { pc: probe_pc(7), base, sema: 0, provider: "other", name: "probe", args: "" },
    ]
}

pub fn elf_seeds() -> Vec<Seed> {
    let mut seeds = vec![
        ("seed-tprof-probes.elf".to_string(), tiny_elf(&tprof_notes(BASE_ADDR), true)),
        // Prelinked: linked against a base 0x10 lower, so every address moves up by 0x10.
        ("seed-prelinked.elf".to_string(), tiny_elf(&tprof_notes(BASE_ADDR - 0x10), true)),
        ("seed-no-base-section.elf".to_string(), tiny_elf(&tprof_notes(BASE_ADDR)[..2], false)),
    ];
    // What the linker's --gc-sections leaves in Rust binaries (a note whose code is gone,
    // at an address below the text), malformed notes, and unsupported argument specs.
    let odd = [
        Note { pc: 0x40, base: BASE_ADDR, sema: 0, provider: "tprof", name: "task_end", args: "8@%rax 8@%rdx 8@%rcx" },
        Note { pc: probe_pc(0), base: BASE_ADDR, sema: probe_pc(1), provider: "tprof", name: "log", args: "8@%rax" },
        Note { pc: DATA_VADDR, base: BASE_ADDR, sema: 0, provider: "tprof", name: "region_end", args: "8@%rax" },
        Note { pc: probe_pc(2), base: BASE_ADDR, sema: 0, provider: "", name: "x", args: "" },
        Note { pc: probe_pc(3), base: BASE_ADDR, sema: 0, provider: "tprof", name: "task_begin", args: "8@%xmm0 4@sym+4(%rip) 1@%ah" },
        Note { pc: probe_pc(4), base: BASE_ADDR, sema: 0, provider: "tprof", name: "log", args: "8@$1 8@$2 8@$3 8@$4 8@$5 8@$6 8@$7" },
    ];
    seeds.push(("seed-odd-notes.elf".to_string(), tiny_elf(&odd, true)));
    // ELF kinds tprof refuses with a message.
    let mut h32 = tiny_elf(&tprof_notes(BASE_ADDR)[..1], true);
    h32[4] = 1;
    seeds.push(("seed-elf32.elf".to_string(), h32));
    let mut be = tiny_elf(&tprof_notes(BASE_ADDR)[..1], true);
    be[5] = 2;
    seeds.push(("seed-big-endian.elf".to_string(), be));
    seeds
}

// ------------------------------------------------------------------------------ BTF blobs

/// Builds a BTF blob: `ty`/`agg` append a type and return its id (as in btf.rs's tests).
struct Btf(Vec<u8>, Vec<u8>, u32);

const fn info(kind: u32, vlen: u32) -> u32 {
    kind << 24 | vlen
}

impl Btf {
    fn s(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.1.len() as u32;
        self.1.extend(name.bytes().chain([0]));
        off
    }
    fn ty(&mut self, name: &str, info: u32, size_or_type: u32, trail: &[u32]) -> u32 {
        let name_off = self.s(name);
        for w in [name_off, info, size_or_type].iter().chain(trail) {
            self.0.extend(w.to_le_bytes());
        }
        self.2 += 1;
        self.2
    }
    fn agg(&mut self, name: &str, info: u32, size: u32, ms: &[(&str, u32, u32)]) -> u32 {
        let trail: Vec<u32> = ms.iter().flat_map(|&(n, t, o)| [self.s(n), t, o]).collect();
        self.ty(name, info | ms.len() as u32, size, &trail)
    }
    fn build(&self) -> Vec<u8> {
        let (tl, sl) = (self.0.len() as u32, self.1.len() as u32);
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for w in [24u32, 0, tl, tl, sl] {
            out.extend(w.to_le_bytes());
        }
        out.extend(self.0.iter().chain(&self.1));
        out
    }
}

pub fn btf_seeds() -> Vec<Seed> {
    let (st, un) = (info(4, 0), info(5, 0));
    // A kernel-like task_struct: pid and tgid directly, flags inside an anonymous union
    // reached through a typedef and a const, plus every other kind once.
    let mut b = Btf(Vec::new(), vec![0], 0);
    let int = b.ty("int", info(1, 0), 4, &[32]);
    let uint = b.ty("unsigned int", info(1, 0), 4, &[32]);
    b.ty("", info(3, 0), 0, &[int, int, 4]); // ARRAY
    b.ty("e", info(6, 2), 4, &[0, 1, 0, 2]); // ENUM
    b.ty("", info(13, 1), int, &[0, int]); // FUNC_PROTO
    b.ty("v", info(14, 0), int, &[1]); // VAR
    b.ty(".data", info(15, 1), 8, &[6, 0, 4]); // DATASEC
    b.ty("tag", info(17, 0), int, &[u32::MAX]); // DECL_TAG
    b.ty("e64", info(19, 1), 8, &[0, 1, 2]); // ENUM64
    for k in [2, 7, 9, 11, 12, 16, 18] {
        b.ty("", info(k, 0), int, &[]);
    }
    let inner = b.agg("", un, 4, &[("flags", uint, 0), ("raw", int, 0)]);
    let tdef = b.ty("inner_t", info(8, 0), inner, &[]);
    let cnst = b.ty("", info(10, 0), tdef, &[]);
    let int3 = b.ty("int3", info(1, 0), 4, &[3]);
    b.ty("task_struct", info(7, 0), 0, &[]); // FWD
    b.agg("task_struct", st, 32, &[("state", int, 0), ("", cnst, 32), ("bits", int3, 64), ("pid", int, 1216), ("tgid", int, 1248)]);
    let kflag = st | 1 << 31;
    b.agg("bits", kflag, 8, &[("x", int, 0), ("y", int, 32 | 3 << 24)]);
    let cyc = b.2 + 1;
    b.agg("cyc", st, 4, &[("", cyc, 0)]);
    let kernel_like = b.build();

    let mut minimal = Btf(Vec::new(), vec![0], 0);
    let int = minimal.ty("int", info(1, 0), 4, &[32]);
    minimal.agg("task_struct", st, 12, &[("pid", int, 0), ("tgid", int, 32), ("flags", int, 64)]);
    vec![("seed-kernel-like.btf".to_string(), kernel_like), ("seed-minimal.btf".to_string(), minimal.build())]
}

// ------------------------------------------------------------------ ring-buffer records

/// The bytes of one of profiler-common's records.
fn bytes_of<T: Copy>(rec: &T) -> Vec<u8> {
    // SAFETY: T is one of profiler-common's #[repr(C)] records, made of integers and byte
    // arrays without padding (its size is asserted there), so all size_of::<T>() bytes are
    // initialized; the slice lives only while `rec` is borrowed.
    unsafe { std::slice::from_raw_parts((rec as *const T).cast::<u8>(), std::mem::size_of::<T>()).to_vec() }
}

const PID: u32 = 4242;
const TID: u32 = 4243;
const TASK: TaskId = TaskId { trace_hi: 0x0af7651916cd43dd, trace_lo: 0x8448eb211c80319c, span_id: 0xb7ad6b7169203331 };

fn header(kind: u32, ts_ns: u64, task: TaskId) -> Header {
    Header { kind, cpu: 1, ts_ns, pid: PID, tid: TID, task }
}

fn buf<const N: usize>(s: &[u8]) -> (StrRef, [u8; N]) {
    let mut b = [0u8; N];
    let n = s.len().min(N);
    b[..n].copy_from_slice(&s[..n]);
    let flags = if s.len() > N { strflag::TRUNCATED } else { 0 };
    (StrRef { ptr: 0x7f00_0000_1000, len: n as u32, flags }, b)
}

/// One request as the kernel would report it, in order: begin, region, syscall, blocked,
/// on-CPU, log (one value unreadable by the kernel, re-read late), region end, end; then
/// an attach/detach pair.
pub fn task_records() -> Vec<(&'static str, Vec<u8>)> {
    let t0 = 1_000_000_000u64;
    let (name, name_buf) = buf::<NAME_LEN>(b"GET /users");
    let begin = TaskRecord { header: header(kind::TASK_BEGIN, t0, TASK), parent_span_id: 0x1122334455667788, name, name_buf };
    let (rname, rbuf) = buf::<NAME_LEN>(b"db\x1b[31m");
    let region = RegionRecord { header: header(kind::REGION_BEGIN, t0 + 1_000, TASK), name: rname, name_buf: rbuf };
    let sys = SyscallRecord { header: header(kind::SYSCALL, t0 + 9_000, TASK), start_ns: t0 + 2_000, ret: -11, nr: 202, _pad: 0 };
    let mut comm = [0u8; COMM_LEN];
    comm[..6].copy_from_slice(b"worker");
    let off = OffCpuRecord {
        header: header(kind::OFF_CPU, t0 + 8_000, TASK),
        start_ns: t0 + 3_000,
        runnable_ns: t0 + 7_000,
        state: 1,
        syscall_nr: 202,
        waker_flags: waker::SEEN | waker::HAS_TASK,
        waker_pid: PID,
        waker_tid: TID + 1,
        _pad: 0,
        waker_comm: comm,
        waker_task: TaskId { span_id: 0x99, ..TASK },
        kstack_id: 3,
        ustack_id: 4,
    };
    let on = OnCpuRecord { header: header(kind::ON_CPU, t0 + 10_000, TASK), start_ns: t0 + 8_000, steal_ns: 0 };
    let (key, key_buf) = buf::<LOG_KEY_LEN>(b"rows");
    let (_, value_buf) = buf::<LOG_VALUE_LEN>(b"");
    let value = StrRef { ptr: 0x7f00_0000_2000, len: 2, flags: strflag::UNREADABLE };
    let log = LogRecord { header: header(kind::LOG, t0 + 11_000, TASK), key, value, key_buf, value_buf };
    let region_end = RegionRecord { header: header(kind::REGION_END, t0 + 12_000, TASK), ..region };
    let end = TaskEndRecord { header: header(kind::TASK_END, t0 + 13_000, TASK), dropped: 0 };
    let other = TaskId { span_id: 0x77, ..TASK };
    let attach = TaskRecord { header: header(kind::TASK_ATTACH, t0 + 14_000, other), parent_span_id: 0, ..begin };
    let detach = TaskEndRecord { header: header(kind::TASK_DETACH, t0 + 15_000, other), dropped: 0 };
    vec![
        ("task-begin", bytes_of(&begin)),
        ("region-begin", bytes_of(&region)),
        ("syscall", bytes_of(&sys)),
        ("off-cpu", bytes_of(&off)),
        ("on-cpu", bytes_of(&on)),
        ("log-unreadable-value", bytes_of(&log)),
        ("region-end", bytes_of(&region_end)),
        ("task-end", bytes_of(&end)),
        ("task-attach", bytes_of(&attach)),
        ("task-detach", bytes_of(&detach)),
    ]
}

pub fn decode_seeds() -> Vec<Seed> {
    task_records().into_iter().map(|(n, b)| (format!("seed-{n}.rec"), b)).collect()
}

/// `tprof record` files, written with the real `Recorder` through `scratch`.
pub fn recording_seeds(scratch: &Path) -> Vec<Seed> {
    use tprof::record::Recorder;
    use tprof::model::stack::{Frame, Stack};
    let records = task_records();
    let write = |complete: bool| -> Vec<u8> {
        let mut r = Recorder::create(scratch, &[PID], &tprof::model::origin::Origin::default()).expect("creating a recording");
        for (name, bytes) in &records {
            if *name == "log-unreadable-value" {
                r.late(PID, 0x7f00_0000_2000, b"12").unwrap();
            }
            if *name == "on-cpu" {
                let f = |func: &str| Frame { addr: 0xffff_ffff_8100_0000, func: Some(func.into()), file: None, line: None };
                let stack = Stack { kernel: vec![f("schedule"), f("futex_wait")], user: vec![f("main")], user_truncated: true };
                r.stack(TASK.span_id, 1_000_003_000, &stack).unwrap();
            }
            r.raw(bytes).unwrap();
        }
        if complete {
            let report = tprof::model::report::SessionReport { pids: vec![PID], sites: 7, stop_reason: "duration elapsed".into(), ..Default::default() };
            r.trailer(&report).unwrap();
        }
        drop(r);
        std::fs::read(scratch).expect("reading the recording back")
    };
    let complete = write(true);
    let killed = write(false);
    let _ = std::fs::remove_file(scratch);
    vec![("seed-complete.tprof".to_string(), complete), ("seed-killed-no-trailer.tprof".to_string(), killed)]
}

// ------------------------------------------------------------------------- text seeds

pub fn argspec_seeds() -> Vec<Seed> {
    let specs = [
        // Real notes: gcc (tests/c) and rustc (usdt-probes) output.
        "8@%rax 8@%rdx 8@%rcx 8@$0 8@%r15 8@$10",
        "8@%rbx 8@%rbp 8@%r12 8@$0 8@%rax 8@$11",
        "8@$81985529216486895 8@$-81985529216486896 8@$1229801703532086340 8@$6148933456521300104 8@%rcx 8@$5",
        "-8@%rdi 8@%rsi -4@-20(%rbp) 8@16(%rax,%rbx,8) 8@$5 4@$-3",
        "1@0x8(%r14,%rcx,2) 2@(%rdi,%r8) -8@-0x10(%rbp) 8@8(%rip)",
        "-1@%r13b 2@%r9w 4@%r10d -4@$0x10 8@(,%rax,8)",
        "%eax -4@(%rsp) $7 -8(%rbp)",
        "8@$0xffffffffffffffff -8@$-9223372036854775808",
        "1@%ah 4@counter(%rip) 4@sym+4(%rip) 8@$sym",
        "8@%xmm0 16@%rdi 3@%rdi 8@(%rax,%rbx,3) 8@(%eax)",
        "8@$1 8@$2 8@$3 8@$4 8@$5 8@$6 8@$7",
        "",
    ];
    specs.iter().enumerate().map(|(i, s)| (format!("seed-{i:02}.txt"), s.as_bytes().to_vec())).collect()
}

pub fn traceparent_seeds() -> Vec<Seed> {
    let values = [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        " \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\t ",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-future-data",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        "",
    ];
    values.iter().enumerate().map(|(i, s)| (format!("seed-{i:02}.txt"), s.as_bytes().to_vec())).collect()
}

/// Every seed, by fuzz target name.
pub fn all(scratch: &Path) -> Vec<(&'static str, Vec<Seed>)> {
    vec![
        ("stapsdt_notes", elf_seeds()),
        ("argspec", argspec_seeds()),
        ("traceparent", traceparent_seeds()),
        ("btf", btf_seeds()),
        ("decode", decode_seeds()),
        ("recording", recording_seeds(scratch)),
    ]
}
