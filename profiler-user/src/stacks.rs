//! Blocking stacks: the kernel and user stacks the eBPF side stored (by id, deduplicated by
//! the kernel) when a task's thread blocked, symbolized with blazesym off the event path,
//! only for blocks at least as long as the threshold, and cached.
//!
//! User stacks are walked with frame pointers: code built without them (Debian's libc, for
//! one) makes the walk skip or stop early, which the output flags as likely truncated.
//!
//! Nothing here opens a path the target controls, and nothing needs a privilege: user
//! addresses are symbolized from the files the target maps, opened by what is mapped
//! (`discover::mapped`, in the privileged helper) and kept open here, handed to blazesym as
//! `/proc/self/fd/N` (so stacks still resolve after the process exited); kernel addresses
//! from a copy of `/proc/kallsyms` taken while tprof could still see its addresses
//! ([`snapshot_kallsyms`]; it shows zeros without `CAP_SYSLOG`).

use std::collections::HashMap;
use std::fs::File;

use anyhow::{Context, Result};
use aya::maps::{MapData, StackTraceMap};
use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};
use blazesym::MaybeDefault;

use crate::model::ledger::{Block, TaskState};
use crate::model::stack::{Frame, Stack};
use crate::discover::mapped::MappedFile;
use crate::discover::target_file::fd_path;

/// Functions a complete user stack of a Linux thread ends in.
const ENTRY_POINTS: [&str; 5] = ["_start", "__libc_start_main", "__libc_start_call_main", "start_thread", "clone3"];
const MAX_CACHED: usize = 4096;

pub struct Symbolizer {
    map: Option<StackTraceMap<MapData>>,
    blaze: Blaze,
    threshold_ns: u64,
    /// Kernel stacks that came as addresses, by those addresses: the same few blocking
    /// paths recur request after request.
    kernel_addr_cache: HashMap<Vec<u64>, Vec<Frame>>,
    user_cache: HashMap<(u32, u32), Vec<Frame>>,
    /// Executable file mappings of each traced process, as last seen, with their files
    /// open: user addresses are symbolized from the files themselves, so a process that
    /// already exited still works.
    maps: HashMap<u32, Vec<MappedFile>>,
    /// The copy of /proc/kallsyms kernel addresses are symbolized with (None: kernel
    /// frames stay addresses).
    kallsyms: Option<File>,
    /// Stack ids that could not be read back from the kernel map.
    pub missing: u64,
}

impl Symbolizer {
    /// `map`: the STACKS map (None: stacks are off). Blocks shorter than `threshold_ns` are
    /// not symbolized. `kallsyms`: see [`snapshot_kallsyms`].
    pub fn new(map: Option<StackTraceMap<MapData>>, threshold_ns: u64, kallsyms: Option<File>) -> Self {
        Symbolizer {
            map,
            kallsyms,
            blaze: Blaze::new(),
            threshold_ns,
            kernel_addr_cache: HashMap::new(),
            user_cache: HashMap::new(),
            maps: HashMap::new(),
            missing: 0,
        }
    }

    /// Records the executable mappings of `pid` with their open files (call at attach and
    /// on every rescan). An empty list (the process is gone) keeps the last one.
    pub fn update_maps(&mut self, pid: u32, maps: Vec<MappedFile>) {
        let exec: Vec<MappedFile> = maps.into_iter().filter(|m| m.mapping.is_exec()).collect();
        if !exec.is_empty() {
            self.maps.insert(pid, exec);
        }
    }

    /// Forgets process `pid` (it exited and its tasks are done).
    pub fn forget(&mut self, pid: u32) {
        self.maps.remove(&pid);
        self.user_cache.retain(|(p, _), _| *p != pid);
    }

    /// Whether `resolve` would fill in a stack for this block.
    pub fn wants(&self, b: &Block) -> bool {
        self.map.is_some()
            && b.stack.is_none()
            && b.blocked_ns >= self.threshold_ns
            && (b.stack_ids.user.is_some() || !b.kernel_addrs.is_empty())
    }

    /// Fills `stack` for the task's blocks that lasted at least the threshold.
    pub fn resolve(&mut self, task: &mut TaskState) {
        if self.map.is_none() {
            return;
        }
        let pid = task.pid;
        for i in 0..task.blocks.len() {
            let (ids, long) = (task.blocks[i].stack_ids, task.blocks[i].blocked_ns >= self.threshold_ns);
            let addrs = std::mem::take(&mut task.blocks[i].kernel_addrs);
            if !long || (ids.user.is_none() && addrs.is_empty()) {
                continue;
            }
            // The kernel stack comes as addresses, taken from the task at switch-in (the
            // eBPF side no longer stores kernel stacks in the stack map).
            let mut kernel = if addrs.is_empty() { Vec::new() } else { self.kernel_frames_of(addrs) };
            // The first frames are tprof's own program and the tracepoint machinery.
            let ours = kernel
                .iter()
                .take_while(|f| f.func.as_deref().is_some_and(|n| n.starts_with("bpf_") || n.starts_with("__bpf_trace") || n.starts_with("__traceiter")))
                .count();
            kernel.drain(..ours);
            let user = ids.user.map(|id| self.user_frames(pid, id)).unwrap_or_default();
            let user_truncated = !user.is_empty()
                && !user.iter().any(|f| f.func.as_deref().is_some_and(|n| ENTRY_POINTS.iter().any(|e| n.ends_with(e))));
            task.blocks[i].stack = Some(Stack { kernel, user, user_truncated });
        }
    }

    /// Symbolizes user addresses of process `pid` (an on-CPU sample's stack), through the
    /// files it maps.
    pub fn user_frames_of(&self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        self.symbolize_files(self.maps.get(&pid).map(Vec::as_slice).unwrap_or_default(), addrs)
    }

    /// Symbolizes kernel addresses (cached).
    pub fn kernel_frames_cached(&mut self, addrs: Vec<u64>) -> Vec<Frame> {
        self.kernel_frames_of(addrs)
    }

    fn addrs(&mut self, id: u32) -> Vec<u64> {
        let Some(map) = self.map.as_ref() else { return Vec::new() };
        match map.get(&id, 0) {
            Ok(st) => st.frames().iter().map(|f| f.ip).filter(|ip| *ip != 0).collect(),
            Err(e) => {
                self.missing += 1;
                log::debug!("stack {id}: {e}");
                Vec::new()
            }
        }
    }

    /// Symbolizes kernel return addresses, from the kallsyms copy only (looking for a
    /// vmlinux with debug info is slow).
    fn kernel_addrs(&self, addrs: &[u64]) -> Vec<Frame> {
        match &self.kallsyms {
            Some(k) => {
                let kernel = Kernel { kallsyms: MaybeDefault::Some(fd_path(k)), vmlinux: MaybeDefault::None, ..Default::default() };
                self.symbolize(&Source::Kernel(kernel), addrs)
            }
            None => addrs.iter().map(|a| Frame { addr: *a, func: None, file: None, line: None }).collect(),
        }
    }

    /// Symbolized kernel addresses, cached.
    fn kernel_frames_of(&mut self, addrs: Vec<u64>) -> Vec<Frame> {
        if let Some(f) = self.kernel_addr_cache.get(&addrs) {
            return f.clone();
        }
        let frames = self.kernel_addrs(&addrs);
        if self.kernel_addr_cache.len() >= MAX_CACHED {
            self.kernel_addr_cache.clear();
        }
        self.kernel_addr_cache.insert(addrs, frames.clone());
        frames
    }

    fn user_frames(&mut self, pid: u32, id: u32) -> Vec<Frame> {
        if let Some(f) = self.user_cache.get(&(pid, id)) {
            return f.clone();
        }
        let addrs = self.addrs(id);
        // Never blazesym's Process source: it would open the paths the target names.
        let frames = self.symbolize_files(self.maps.get(&pid).map(Vec::as_slice).unwrap_or_default(), &addrs);
        if self.user_cache.len() >= MAX_CACHED {
            self.user_cache.clear();
        }
        self.user_cache.insert((pid, id), frames.clone());
        frames
    }

    /// Symbolizes user addresses through the mapped files: address -> (file, file offset).
    fn symbolize_files(&self, maps: &[MappedFile], addrs: &[u64]) -> Vec<Frame> {
        addrs
            .iter()
            .map(|addr| {
                let unknown = Frame { addr: *addr, func: None, file: None, line: None };
                let Some(mf) = maps.iter().find(|m| (m.mapping.start..m.mapping.end).contains(addr)) else { return unknown };
                let m = &mf.mapping;
                let off = addr - m.start + m.offset;
                let mut f = self.lookup(&Source::Elf(Elf::new(fd_path(&mf.file))), Input::FileOffset(&[off][..]));
                f.pop().map(|mut fr| {
                    fr.addr = *addr;
                    fr
                }).unwrap_or(unknown)
            })
            .collect()
    }

    fn symbolize(&self, src: &Source<'_>, addrs: &[u64]) -> Vec<Frame> {
        self.lookup(src, Input::AbsAddr(addrs))
    }

    fn lookup(&self, src: &Source<'_>, input: Input<&[u64]>) -> Vec<Frame> {
        let addrs: Vec<u64> = input.as_inner_ref().to_vec();
        let syms = match self.blaze.symbolize(src, input) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("symbolizing {} addresses: {e}", addrs.len());
                return addrs.iter().map(|a| Frame { addr: *a, func: None, file: None, line: None }).collect();
            }
        };
        addrs
            .iter()
            .zip(syms)
            .map(|(addr, s)| match s {
                Symbolized::Sym(sym) => {
                    // An inlined call is reported by its innermost function.
                    let (func, code) = match sym.inlined.last() {
                        Some(inl) => (inl.name.to_string(), inl.code_info.as_ref()),
                        None => (sym.name.to_string(), sym.code_info.as_deref()),
                    };
                    Frame {
                        addr: *addr,
                        func: Some(func),
                        file: code.map(|c| c.to_path().display().to_string()),
                        line: code.and_then(|c| c.line),
                    }
                }
                Symbolized::Unknown(_) => Frame { addr: *addr, func: None, file: None, line: None },
            })
            .collect()
    }
}

/// Whether a symbolized user stack (innermost first) likely misses frames: it does not reach
/// a thread or process entry point.
pub fn user_truncated(user: &[Frame]) -> bool {
    !user.is_empty() && !user.iter().any(|f| f.func.as_deref().is_some_and(|n| ENTRY_POINTS.iter().any(|e| n.ends_with(e))))
}

/// A sealed in-memory copy of `/proc/kallsyms`, taken now: tprof gives up `CAP_SYSLOG`
/// after attaching, and without it the kernel shows every address as 0 (unless
/// `kptr_restrict` is 0 and `perf_event_paranoid` at most 1). About 5 MB and 50 ms.
pub fn snapshot_kallsyms() -> Result<File> {
    use std::os::fd::FromRawFd;
    let name = c"tprof-kallsyms";
    // SAFETY: a NUL-terminated name and flags; the kernel returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create for the kallsyms copy");
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    let mut copy = unsafe { File::from_raw_fd(fd) };
    let mut src = File::open("/proc/kallsyms").context("opening /proc/kallsyms")?;
    std::io::copy(&mut src, &mut copy).context("copying /proc/kallsyms")?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on an fd we own, integer arguments only.
    if unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&copy), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sealing the kallsyms copy");
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolizes_this_process_from_its_open_files() {
        // A user address of a function in this test binary resolves to its name, through
        // the mapped file opened by discover::mapped and named by /proc/self/fd/N.
        let addr = symbolizes_this_process_from_its_open_files as *const () as usize as u64;
        let scan = crate::discover::mapped::exec_files(std::process::id()).unwrap();
        let s = Symbolizer::new(None, 0, None);
        let maps = scan.mapped_files();
        let frames = s.symbolize_files(&maps, &[addr, 0x10]);
        let name = frames[0].func.clone().unwrap_or_default();
        assert!(name.contains("symbolizes_this_process_from_its_open_files"), "{frames:?}");
        assert_eq!(frames[1].func, None, "an unmapped address stays unknown");
        let again = s.symbolize_files(&maps, &[addr]);
        assert_eq!(again[0].func, frames[0].func, "a second lookup of the same address");
        let s = Symbolizer::new(None, 0, snapshot_kallsyms().ok());
        let first = s.symbolize_files(&maps, &[addr]);
        assert_eq!(first[0].func, frames[0].func, "with kallsyms");
        let k = s.kernel_addrs(&[0xffffffff81000000]);
        let _ = k;
        let third = s.symbolize_files(&maps, &[addr]);
        assert_eq!(third[0].func, frames[0].func, "after a kernel lookup");
        drop(maps);
        drop(scan);
        let scan2 = crate::discover::mapped::exec_files(std::process::id()).unwrap();
        let maps2 = scan2.mapped_files();
        let fourth = s.symbolize_files(&maps2, &[addr]);
        assert_eq!(fourth[0].func, frames[0].func, "after a rescan: {:?}", maps2.iter().map(|m| fd_path(&m.file)).collect::<Vec<_>>());
    }

    #[test]
    fn kallsyms_copy_is_sealed_and_complete() {
        let copy = snapshot_kallsyms().unwrap();
        let text = std::fs::read_to_string(fd_path(&copy)).unwrap();
        assert!(text.lines().count() > 1000, "a kernel has thousands of symbols");
        assert!(text.lines().any(|l| l.ends_with(" schedule")), "schedule is in kallsyms");
        let e = std::fs::OpenOptions::new().append(true).open(fd_path(&copy)).and_then(|mut f| std::io::Write::write_all(&mut f, b"x"));
        assert!(e.is_err(), "the copy is sealed against writes");
    }
}
