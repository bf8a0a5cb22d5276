//! The fallback USDT attach (kernels without uprobe_multi links, before 6.6: see
//! `multi.rs` for the default), which also arms semaphores: `perf_event_open` on the `uprobe` PMU with the
//! probe's file offset and its semaphore's `ref_ctr_offset` (so the kernel increments the
//! semaphore in the target, and decrements it when the event goes away, even if tprof is
//! killed), then `BPF_LINK_CREATE` (`BPF_PERF_EVENT`) to run our program with a per-site
//! cookie. aya 0.14 can set the cookie but not the `ref_ctr_offset`, hence this module.
//!
//! Kernel: ref_ctr_offset needs 4.20, perf-event BPF links with cookies 5.15.
//! See `perf_event_open(2)`, `/sys/bus/event_source/devices/uprobe/format/*` and
//! <https://docs.kernel.org/trace/uprobetracer.html>.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

const PMU_TYPE_PATH: &str = "/sys/bus/event_source/devices/uprobe/type";
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PERF_EVENT: u32 = 41;

/// One armed uprobe: dropping it detaches the program and disarms the semaphore.
#[derive(Debug)]
pub struct UprobeLink {
    _link: OwnedFd,
    _perf: OwnedFd,
}

/// The `uprobe` PMU's type number.
pub fn uprobe_pmu_type() -> Result<u32> {
    let text = std::fs::read_to_string(PMU_TYPE_PATH)
        .with_context(|| format!("reading {PMU_TYPE_PATH}: this kernel lacks uprobe perf events (CONFIG_UPROBE_EVENTS)"))?;
    text.trim().parse().with_context(|| format!("parsing {PMU_TYPE_PATH}: {text:?}"))
}

/// `struct perf_event_attr`, as the bytes the kernel reads; only the fields a uprobe needs.
/// Offsets from `include/uapi/linux/perf_event.h`.
#[repr(C, align(8))]
struct PerfEventAttr([u8; 128]);

impl PerfEventAttr {
    fn put_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

/// Opens the uprobe perf event at `offset` in `path` for process `pid`, arming the
/// semaphore at file offset `ref_ctr_offset` (0: none); no program yet. tprof's privileged
/// helper creates them (`broker`); `tprof doctor` checks with one that uprobes can be made.
pub fn open_event(pmu_type: u32, path: &Path, offset: u64, ref_ctr_offset: u64, pid: u32) -> Result<OwnedFd> {
    if ref_ctr_offset > u64::from(u32::MAX) {
        bail!("semaphore offset {ref_ctr_offset:#x} in {} does not fit the kernel's 32 bits", path.display());
    }
    let cpath = CString::new(path.as_os_str().as_bytes()).with_context(|| format!("path {} has a NUL byte", path.display()))?;
    let mut attr = PerfEventAttr([0; 128]);
    attr.put_u32(0, pmu_type); // type
    attr.put_u32(4, 128); // size
    attr.put_u64(8, ref_ctr_offset << 32); // config: ref_ctr_offset in bits 32-63, bit 0 = retprobe (no)
    attr.put_u64(16, 1); // sample_period
    attr.put_u64(56, cpath.as_ptr() as u64); // config1: uprobe_path
    attr.put_u64(64, offset); // config2: probe_offset
    let pid = libc::pid_t::try_from(pid).with_context(|| format!("pid {pid} out of range"))?;
    // SAFETY: attr is a valid, zero-padded perf_event_attr of the size it declares, and the
    // path it points to outlives the call; the other arguments are plain integers.
    let fd = unsafe {
        libc::syscall(libc::SYS_perf_event_open, attr.0.as_ptr(), pid, -1 as libc::c_int, -1 as libc::c_int, PERF_FLAG_FD_CLOEXEC)
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let hint = if matches!(err.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
            " (uprobe perf events need CAP_SYS_ADMIN on this kernel: run tprof with sudo)"
        } else {
            ""
        };
        bail!("perf_event_open(uprobe {}:{offset:#x}, semaphore {ref_ctr_offset:#x}, pid {pid}) failed: {err}{hint}", path.display());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Runs `prog` on the uprobe perf event `perf` (`what` names it in errors), with `cookie`.
/// Needs no capability (measured on 6.18): the program and the event exist already.
pub fn link(prog: BorrowedFd<'_>, perf: OwnedFd, what: &str, cookie: u64) -> Result<UprobeLink> {
    // union bpf_attr, link_create: prog_fd, target_fd, attach_type, flags, perf_event.bpf_cookie.
    let mut battr = [0u8; 64];
    battr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    battr[4..8].copy_from_slice(&(perf.as_raw_fd() as u32).to_ne_bytes());
    battr[8..12].copy_from_slice(&BPF_PERF_EVENT.to_ne_bytes());
    battr[16..24].copy_from_slice(&cookie.to_ne_bytes());
    // SAFETY: battr is a zero-padded bpf_attr for BPF_LINK_CREATE of the size passed.
    let link = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, battr.as_ptr(), battr.len() as libc::c_uint) };
    if link < 0 {
        let err = std::io::Error::last_os_error();
        bail!("BPF_LINK_CREATE (perf event, cookie {cookie}) for {what} failed: {err}");
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let link = unsafe { OwnedFd::from_raw_fd(link as libc::c_int) };
    Ok(UprobeLink { _link: link, _perf: perf })
}
