//! The USDT programs attached with BPF uprobe_multi links (Linux >= 6.6) instead of one
//! perf event per probe site.
//!
//! Why: a uprobe perf event is bound to a task (the target's main thread), and the kernel
//! switches perf contexts at every context switch of that thread: measured ~1 µs per
//! switch with 4 sites (`cargo xtask bench kernel`, the main-thread futex case). And each
//! perf-event uprobe costs an RCU grace period (~0.1 s here) to detach. A uprobe_multi link
//! filters by process itself, with no perf event, and holds every site of one file: one
//! link, one detach.
//!
//! aya 0.14 cannot load `uprobe.multi` programs (the kernel requires the program to be
//! loaded with `expected_attach_type = BPF_TRACE_UPROBE_MULTI`). So the USDT programs are
//! loaded a second time here, from the same object: aya-obj parses and relocates it
//! against the maps aya already created (so both copies share every map, globals
//! included), and `BPF_PROG_LOAD` is issued with that attach type. Links are created with
//! `BPF_LINK_CREATE` (by the privileged helper, which checks every offset: see broker.rs).

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Map, MapData};
use aya::Ebpf;

/// `enum bpf_attach_type`: BPF_TRACE_UPROBE_MULTI.
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_F_SLEEPABLE: u32 = 1 << 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;

fn map_data(m: &Map) -> Option<&MapData> {
    match m {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::RingBuf(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d) => Some(d),
        _ => None,
    }
}

fn sys_bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<RawFd> {
    // SAFETY: `attr` is a 128-byte bpf_attr the kernel reads (and for some commands writes)
    // within its size; every pointer in it refers to memory the caller keeps alive.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as libc::c_uint) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc as RawFd)
}

fn put_u32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// The programs `names` (with whether each is sleepable) of the eBPF object `obj_bytes`,
/// loaded for uprobe_multi links, sharing the maps of `ebpf` (loaded from the same bytes).
pub fn load(obj_bytes: &[u8], ebpf: &Ebpf, names: &[(&str, bool)]) -> Result<Vec<OwnedFd>> {
    let mut obj = aya_obj::Object::parse(obj_bytes).context("parsing the eBPF object")?;
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    let maps = obj.maps.clone();
    let mut fds: Vec<(String, RawFd)> = Vec::new();
    for name in maps.keys() {
        let m = ebpf.map(name).ok_or_else(|| anyhow!("map {name} is not loaded"))?;
        let d = map_data(m).ok_or_else(|| anyhow!("map {name}: unexpected map type"))?;
        fds.push((name.clone(), d.fd().as_fd().as_raw_fd()));
    }
    let with_objs: Vec<(&str, RawFd, &aya_obj::Map)> =
        fds.iter().filter_map(|(n, fd)| Some((n.as_str(), *fd, maps.get(n)?))).collect();
    obj.relocate_maps(with_objs.into_iter(), &text_sections).context("relocating map references")?;
    obj.relocate_calls(&text_sections).context("relocating calls")?;
    let license = CString::new("GPL").map_err(|e| anyhow!("{e}"))?;
    let mut out = Vec::new();
    for (name, sleepable) in names {
        let prog = obj.programs.get(*name).ok_or_else(|| anyhow!("eBPF object lacks program {name}"))?;
        let func = obj.functions.get(&prog.function_key()).ok_or_else(|| anyhow!("program {name} has no code"))?;
        out.push(load_one(name, &func.instructions, &license, *sleepable)?);
    }
    Ok(out)
}

fn load_one(name: &str, insns: &[aya_obj::generated::bpf_insn], license: &CString, sleepable: bool) -> Result<OwnedFd> {
    let mut log = vec![0u8; 0];
    for attempt in 0..2 {
        let mut a = [0u8; 128];
        put_u32(&mut a, 0, BPF_PROG_TYPE_KPROBE);
        put_u32(&mut a, 4, insns.len() as u32);
        put_u64(&mut a, 8, insns.as_ptr() as u64);
        put_u64(&mut a, 16, license.as_ptr() as u64);
        if attempt == 1 {
            // Again with the verifier's log, to say why.
            log = vec![0u8; 1 << 20];
            put_u32(&mut a, 24, 1);
            put_u32(&mut a, 28, log.len() as u32);
            put_u64(&mut a, 32, log.as_mut_ptr() as u64);
        }
        put_u32(&mut a, 44, if sleepable { BPF_F_SLEEPABLE } else { 0 });
        let short: Vec<u8> = name.bytes().filter(|b| b.is_ascii_alphanumeric() || *b == b'_').take(15).collect();
        a[48..48 + short.len()].copy_from_slice(&short);
        put_u32(&mut a, 68, BPF_TRACE_UPROBE_MULTI);
        match sys_bpf(BPF_PROG_LOAD, &mut a) {
            // SAFETY: the kernel just returned this fd; nothing else owns it.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(e) if attempt == 1 => {
                let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let tail: Vec<&str> = text.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
                bail!("loading {name} for uprobe_multi links: {e}\n{}", tail.join("\n"));
            }
            Err(_) => {}
        }
    }
    bail!("loading {name} for uprobe_multi links failed")
}

/// One site of a uprobe_multi link: where, its semaphore (0: none) and its cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiSite {
    pub offset: u64,
    pub ref_ctr_offset: u64,
    pub cookie: u64,
}

/// Attaches `prog` to every site of the file at `path` in process `pid` (the semaphores
/// are armed while the link lives).
pub fn link(prog: BorrowedFd<'_>, path: &Path, pid: u32, sites: &[MultiSite]) -> Result<OwnedFd> {
    if sites.is_empty() {
        bail!("no sites to attach");
    }
    let cpath = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).context("path has a NUL byte")?;
    let offsets: Vec<u64> = sites.iter().map(|s| s.offset).collect();
    let refs: Vec<u64> = sites.iter().map(|s| s.ref_ctr_offset).collect();
    let cookies: Vec<u64> = sites.iter().map(|s| s.cookie).collect();
    let mut a = [0u8; 128];
    put_u32(&mut a, 0, prog.as_raw_fd() as u32);
    put_u32(&mut a, 8, BPF_TRACE_UPROBE_MULTI);
    put_u64(&mut a, 16, cpath.as_ptr() as u64);
    put_u64(&mut a, 24, offsets.as_ptr() as u64);
    put_u64(&mut a, 32, refs.as_ptr() as u64);
    put_u64(&mut a, 40, cookies.as_ptr() as u64);
    put_u32(&mut a, 48, sites.len() as u32);
    put_u32(&mut a, 56, pid);
    let fd = sys_bpf(BPF_LINK_CREATE, &mut a).with_context(|| format!("BPF_LINK_CREATE uprobe_multi, {} sites", sites.len()))?;
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
