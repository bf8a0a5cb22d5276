//! The same-run floor for `cargo xtask bench kernel`: a bare tp_btf program that, for each
//! hit of the process given, writes one 64-byte record to a BPF ring buffer (no wakeup),
//! consumed by this process in batches every 20 ms, like tprof does.
//!
//! `bare-tracer --pid PID [--ring-mib 256] [--tp sys_enter,sys_exit,sched_switch,sched_waking]`
//! (needs root). The program, hand-assembled here so that the floor has no loader or
//! compiler of its own to account for:
//!
//! ```text
//! pid_tgid = bpf_get_current_pid_tgid(); if (pid_tgid >> 32 != PID) return 0;
//! r = bpf_ringbuf_reserve(&ring, 64, 0);  if (!r) { drops[0] += 1; return 0; }
//! r[0] = bpf_ktime_get_ns(); r[1] = pid_tgid; r[2] = bpf_get_smp_processor_id(); r[3..8] = 0;
//! bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP); return 0;
//! ```
//!
//! The filter is on the current thread's process only (for sched_switch that is the thread
//! leaving the CPU; for sched_waking, the waker). It prints `bare-tracer: attached ...` on
//! stderr once every program is attached, and on SIGINT/SIGTERM (or once the process is
//! gone) a last line on stdout:
//! `{"type":"session","records":N,"kernel_drops_total":D}`.
//!
//! Kernel: tp_btf (BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP) 5.5, BPF ring buffer 5.8. See
//! <https://docs.kernel.org/bpf/ringbuf.html> (record header, consumer and producer pages),
//! <https://docs.kernel.org/bpf/btf.html> (the type section read below) and
//! <https://docs.kernel.org/bpf/standardization/instruction-set.html> (the encoding).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_RAW_TP: u32 = 23;
const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_KTIME_GET_NS: i32 = 5;
const FN_GET_SMP_PROCESSOR_ID: i32 = 8;
const FN_GET_CURRENT_PID_TGID: i32 = 14;
const FN_RINGBUF_RESERVE: i32 = 131;
const FN_RINGBUF_SUBMIT: i32 = 132;
const BPF_RB_NO_WAKEUP: i32 = 1;
const RECORD: i32 = 64;
const RINGBUF_BUSY: u32 = 1 << 31;
const RINGBUF_DISCARD: u32 = 1 << 30;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn die(msg: &str) -> ! {
    eprintln!("bare-tracer: {msg}");
    std::process::exit(1);
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 144]) -> std::io::Result<i32> {
    // SAFETY: attr is a zero-padded bpf_attr of the kernel's size; the pointers inside it
    // point to buffers that outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as i32)
    }
}

fn put32(a: &mut [u8], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(a: &mut [u8], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn map_create(map_type: u32, key: u32, value: u32, entries: u32) -> std::io::Result<i32> {
    let mut a = [0u8; 144];
    put32(&mut a, 0, map_type);
    put32(&mut a, 4, key);
    put32(&mut a, 8, value);
    put32(&mut a, 12, entries);
    bpf(BPF_MAP_CREATE, &mut a)
}

// ---- a tiny assembler -------------------------------------------------------------------

#[derive(Default)]
struct Asm {
    insns: Vec<u64>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn raw(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        let v = code as u64
            | (((src << 4) | (dst & 0xf)) as u64) << 8
            | ((off as u16) as u64) << 16
            | ((imm as u32) as u64) << 32;
        self.insns.push(v);
    }
    fn mov_reg(&mut self, dst: u8, src: u8) {
        self.raw(0xbf, dst, src, 0, 0);
    }
    fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.raw(0xb7, dst, 0, 0, imm);
    }
    fn rsh_imm(&mut self, dst: u8, imm: i32) {
        self.raw(0x77, dst, 0, 0, imm);
    }
    fn add_imm(&mut self, dst: u8, imm: i32) {
        self.raw(0x07, dst, 0, 0, imm);
    }
    fn call(&mut self, f: i32) {
        self.raw(0x85, 0, 0, 0, f);
    }
    fn exit(&mut self) {
        self.raw(0x95, 0, 0, 0, 0);
    }
    fn stx64(&mut self, dst: u8, off: i16, src: u8) {
        self.raw(0x7b, dst, src, off, 0);
    }
    fn st32(&mut self, dst: u8, off: i16, imm: i32) {
        self.raw(0x62, dst, 0, off, imm);
    }
    fn atomic_add64(&mut self, dst: u8, off: i16, src: u8) {
        self.raw(0xdb, dst, src, off, 0);
    }
    fn ld_map_fd(&mut self, dst: u8, fd: i32) {
        self.raw(0x18, dst, 1, 0, fd);
        self.raw(0, 0, 0, 0, 0);
    }
    fn jmp_imm(&mut self, code: u8, dst: u8, imm: i32, label: &'static str) {
        self.fixups.push((self.insns.len(), label));
        self.raw(code, dst, 0, 0, imm);
    }
    fn jne_imm(&mut self, dst: u8, imm: i32, label: &'static str) {
        self.jmp_imm(0x55, dst, imm, label);
    }
    fn jeq_imm(&mut self, dst: u8, imm: i32, label: &'static str) {
        self.jmp_imm(0x15, dst, imm, label);
    }
    fn ja(&mut self, label: &'static str) {
        self.jmp_imm(0x05, 0, 0, label);
    }
    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.insns.len()));
    }
    fn finish(mut self) -> Vec<u64> {
        for (at, label) in &self.fixups {
            let target = self.labels.iter().find(|(n, _)| n == label).map(|(_, i)| *i).expect("label");
            let off = target as i64 - (*at as i64 + 1);
            let v = self.insns[*at];
            self.insns[*at] = (v & !(0xffff << 16)) | (((off as i16) as u16 as u64) << 16);
        }
        self.insns
    }
}

fn program(tgid: u32, ring_fd: i32, drops_fd: i32) -> Vec<u64> {
    let mut a = Asm::default();
    a.call(FN_GET_CURRENT_PID_TGID);
    a.mov_reg(7, 0);
    a.rsh_imm(0, 32);
    a.jne_imm(0, tgid as i32, "out");
    a.ld_map_fd(1, ring_fd);
    a.mov_imm(2, RECORD);
    a.mov_imm(3, 0);
    a.call(FN_RINGBUF_RESERVE);
    a.jeq_imm(0, 0, "fail");
    a.mov_reg(8, 0);
    a.call(FN_KTIME_GET_NS);
    a.stx64(8, 0, 0);
    a.stx64(8, 8, 7);
    a.call(FN_GET_SMP_PROCESSOR_ID);
    a.stx64(8, 16, 0);
    a.mov_imm(1, 0);
    for off in (24..RECORD as i16).step_by(8) {
        a.stx64(8, off, 1);
    }
    a.mov_reg(1, 8);
    a.mov_imm(2, BPF_RB_NO_WAKEUP);
    a.call(FN_RINGBUF_SUBMIT);
    a.ja("out");
    a.label("fail");
    a.st32(10, -4, 0);
    a.ld_map_fd(1, drops_fd);
    a.mov_reg(2, 10);
    a.add_imm(2, -4);
    a.call(FN_MAP_LOOKUP_ELEM);
    a.jeq_imm(0, 0, "out");
    a.mov_imm(1, 1);
    a.atomic_add64(0, 0, 1);
    a.label("out");
    a.mov_imm(0, 0);
    a.exit();
    a.finish()
}

fn prog_load(insns: &[u64], attach_btf_id: u32, name: &str) -> Result<i32, String> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 1 << 16];
    let mut a = [0u8; 144];
    put32(&mut a, 0, BPF_PROG_TYPE_TRACING);
    put32(&mut a, 4, insns.len() as u32);
    put64(&mut a, 8, insns.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    put32(&mut a, 24, 1);
    put32(&mut a, 28, log.len() as u32);
    put64(&mut a, 32, log.as_mut_ptr() as u64);
    let n = name.len().min(15);
    a[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    put32(&mut a, 68, BPF_TRACE_RAW_TP);
    put32(&mut a, 108, attach_btf_id);
    bpf(BPF_PROG_LOAD, &mut a).map_err(|e| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        format!("loading the program for {name}: {e}\n{}", String::from_utf8_lossy(&log[..end]))
    })
}

fn attach(prog_fd: i32) -> std::io::Result<i32> {
    let mut a = [0u8; 144];
    put64(&mut a, 0, 0); // name: NULL, the BTF id given at load time says where
    put32(&mut a, 8, prog_fd as u32);
    bpf(BPF_RAW_TRACEPOINT_OPEN, &mut a)
}

fn read_drops(fd: i32) -> u64 {
    let key = 0u32;
    let mut value = 0u64;
    let mut a = [0u8; 144];
    put32(&mut a, 0, fd as u32);
    put64(&mut a, 8, &key as *const u32 as u64);
    put64(&mut a, 16, &mut value as *mut u64 as u64);
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut a) {
        Ok(_) => value,
        Err(_) => 0,
    }
}

// ---- vmlinux BTF: the ids of the btf_trace_<tracepoint> typedefs -------------------------

fn btf_typedef_ids(names: &[String]) -> Result<Vec<u32>, String> {
    let data = std::fs::read("/sys/kernel/btf/vmlinux").map_err(|e| format!("reading /sys/kernel/btf/vmlinux: {e}"))?;
    let u32_at = |o: usize| -> u32 { u32::from_ne_bytes(data[o..o + 4].try_into().unwrap_or([0; 4])) };
    if data.len() < 24 || u16::from_ne_bytes([data[0], data[1]]) != 0xeb9f {
        return Err("/sys/kernel/btf/vmlinux is not BTF".into());
    }
    let hdr = u32_at(4) as usize;
    let (type_off, type_len, str_off) = (u32_at(8) as usize, u32_at(12) as usize, u32_at(16) as usize);
    let types = hdr + type_off;
    let strs = hdr + str_off;
    let name_at = |off: usize| -> &[u8] {
        let s = &data[strs + off..];
        &s[..s.iter().position(|b| *b == 0).unwrap_or(0)]
    };
    let wanted: Vec<String> = names.iter().map(|n| format!("btf_trace_{n}")).collect();
    let mut found = vec![0u32; names.len()];
    let (mut p, mut id) = (types, 1u32);
    while p + 12 <= types + type_len {
        let (name_off, info) = (u32_at(p) as usize, u32_at(p + 4));
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if kind == 8 {
            let n = name_at(name_off);
            if let Some(i) = wanted.iter().position(|w| w.as_bytes() == n) {
                found[i] = id;
            }
        }
        p += 12
            + match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
        id += 1;
    }
    for (i, f) in found.iter().enumerate() {
        if *f == 0 {
            return Err(format!("no tracepoint {} in the kernel's BTF", names[i]));
        }
    }
    Ok(found)
}

// ---- the consumer -----------------------------------------------------------------------

struct Ring {
    consumer: *mut u8,
    producer: *const u8,
    mask: u64,
}

impl Ring {
    fn map(fd: i32, size: usize) -> std::io::Result<Ring> {
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: mapping the ring buffer's pages as the kernel documents (consumer page
        // read-write at offset 0; producer page and twice the data read-only after it).
        let consumer = unsafe {
            libc::mmap(std::ptr::null_mut(), page, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if consumer == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        let producer = unsafe {
            libc::mmap(std::ptr::null_mut(), page + 2 * size, libc::PROT_READ, libc::MAP_SHARED, fd, page as i64)
        };
        if producer == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Ring { consumer: consumer as *mut u8, producer: producer as *const u8, mask: size as u64 - 1 })
    }

    /// Consumes every committed record; returns how many.
    fn drain(&self) -> u64 {
        // SAFETY: the positions are aligned u64s at the start of their pages, shared with the
        // kernel (atomics); the data area is mapped twice, so a record never wraps.
        unsafe {
            let cons_pos = &*(self.consumer as *const AtomicU64);
            let prod_pos = &*(self.producer as *const AtomicU64);
            let data = self.producer.add(4096);
            let mut cons = cons_pos.load(Ordering::Acquire);
            let prod = prod_pos.load(Ordering::Acquire);
            let mut n = 0;
            while cons < prod {
                let hdr = &*(data.add((cons & self.mask) as usize) as *const AtomicU32);
                let len = hdr.load(Ordering::Acquire);
                if len & RINGBUF_BUSY != 0 {
                    break;
                }
                if len & RINGBUF_DISCARD == 0 {
                    n += 1;
                }
                let l = (len & !(RINGBUF_BUSY | RINGBUF_DISCARD)) as u64;
                cons += (l + 8 + 7) & !7;
                cons_pos.store(cons, Ordering::Release);
            }
            n
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut pid, mut ring_mib, mut tps) = (None, 256usize, "sys_enter,sys_exit,sched_switch,sched_waking".to_string());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pid" => pid = it.next().and_then(|v| v.parse::<u32>().ok()),
            "--ring-mib" => ring_mib = it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| die("--ring-mib N")),
            "--tp" => tps = it.next().cloned().unwrap_or_else(|| die("--tp LIST")),
            _ => {
                die("usage: bare-tracer --pid PID [--ring-mib 256] [--tp sys_enter,sys_exit,sched_switch,sched_waking]")
            }
        }
    }
    let pid = pid.unwrap_or_else(|| die("--pid PID is required"));
    if !ring_mib.is_power_of_two() {
        die("--ring-mib must be a power of two");
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    // SAFETY: this page size is needed before mapping; sysconf has no memory effects.
    if unsafe { libc::sysconf(libc::_SC_PAGESIZE) } != 4096 {
        die("expects 4 KiB pages");
    }
    let names: Vec<String> = tps.split(',').map(str::to_string).collect();
    let ids = btf_typedef_ids(&names).unwrap_or_else(|e| die(&e));
    let size = ring_mib << 20;
    let ring_fd = map_create(BPF_MAP_TYPE_RINGBUF, 0, 0, size as u32)
        .unwrap_or_else(|e| die(&format!("creating the ring buffer (root needed): {e}")));
    let drops_fd =
        map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1).unwrap_or_else(|e| die(&format!("creating the drop counter: {e}")));
    let ring = Ring::map(ring_fd, size).unwrap_or_else(|e| die(&format!("mapping the ring buffer: {e}")));
    let insns = program(pid, ring_fd, drops_fd);
    let mut links = Vec::new();
    for (name, id) in names.iter().zip(&ids) {
        let prog = prog_load(&insns, *id, name).unwrap_or_else(|e| die(&e));
        links.push(attach(prog).unwrap_or_else(|e| die(&format!("attaching to {name}: {e}"))));
    }
    eprintln!("bare-tracer: attached to {} tracepoints ({tps}) for pid {pid}; Ctrl-C to stop", names.len());
    let mut records = 0u64;
    let proc_dir = format!("/proc/{pid}");
    let mut ticks = 0u64;
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        records += ring.drain();
        ticks += 1;
        // Stop by itself once the process is gone (e.g. whoever started us was killed).
        if ticks.is_multiple_of(25) && !std::path::Path::new(&proc_dir).exists() {
            break;
        }
    }
    records += ring.drain();
    let drops = read_drops(drops_fd);
    println!("{{\"type\":\"session\",\"records\":{records},\"kernel_drops_total\":{drops},\"links\":{}}}", links.len());
}
