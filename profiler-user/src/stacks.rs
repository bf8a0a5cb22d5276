//! Blocking stacks: the kernel and user stacks the eBPF side stored (by id, deduplicated by
//! the kernel) when a task's thread blocked, symbolized with blazesym off the event path,
//! only for blocks at least as long as the threshold, and cached.
//!
//! User stacks are walked with frame pointers: code built without them (Debian's libc, for
//! one) makes the walk skip or stop early, which the output flags as likely truncated.

use std::collections::HashMap;

use aya::maps::{MapData, StackTraceMap};
use blazesym::symbolize::source::{Elf, Kernel, Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};
use blazesym::{MaybeDefault, Pid};

use crate::correlate::TaskState;
use crate::discover::Mapping;

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    pub addr: u64,
    pub func: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl Frame {
    /// `func (file:line)`, or the address.
    pub fn display(&self) -> String {
        let mut s = self.func.clone().unwrap_or_else(|| format!("{:#x}", self.addr));
        if let Some(file) = &self.file {
            let base = file.rsplit('/').next().unwrap_or(file);
            match self.line {
                Some(l) => s.push_str(&format!(" ({base}:{l})")),
                None => s.push_str(&format!(" ({base})")),
            }
        }
        s
    }
}

/// A blocked thread's stacks, innermost frame first.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stack {
    pub kernel: Vec<Frame>,
    pub user: Vec<Frame>,
    /// The user stack does not reach a thread or process entry point: frames are likely
    /// missing (code without frame pointers).
    pub user_truncated: bool,
}

/// Functions a complete user stack of a Linux thread ends in.
const ENTRY_POINTS: [&str; 5] = ["_start", "__libc_start_main", "__libc_start_call_main", "start_thread", "clone3"];
const MAX_CACHED: usize = 4096;

pub struct Symbolizer {
    map: Option<StackTraceMap<MapData>>,
    blaze: Blaze,
    threshold_ns: u64,
    kernel_cache: HashMap<u32, Vec<Frame>>,
    user_cache: HashMap<(u32, u32), Vec<Frame>>,
    /// Executable file mappings of each traced process, as last seen: user addresses are
    /// symbolized from the files themselves, so a process that already exited still works.
    maps: HashMap<u32, Vec<Mapping>>,
    /// Stack ids that could not be read back from the kernel map.
    pub missing: u64,
}

impl Symbolizer {
    /// `map`: the STACKS map (None: stacks are off). Blocks shorter than `threshold_ns` are
    /// not symbolized.
    pub fn new(map: Option<StackTraceMap<MapData>>, threshold_ns: u64) -> Self {
        Symbolizer {
            map,
            blaze: Blaze::new(),
            threshold_ns,
            kernel_cache: HashMap::new(),
            user_cache: HashMap::new(),
            maps: HashMap::new(),
            missing: 0,
        }
    }

    /// Records the executable mappings of `pid` (call at attach and on every rescan). A
    /// mapped path is the target's to choose, so a mapping is kept only if the path, seen
    /// from tprof, is a regular file and the very file the target mapped (same device and
    /// inode as through `/proc/PID/root`): never a device or FIFO it pointed us at. Plain
    /// paths are kept so that stacks still resolve after the process exits.
    pub fn update_maps(&mut self, pid: u32, maps: Vec<Mapping>) {
        use std::os::unix::fs::MetadataExt;
        let exec: Vec<Mapping> = maps
            .into_iter()
            .filter(|m| m.is_exec() && m.is_file() && !m.is_deleted())
            .filter(|m| {
                let Some(path) = m.path.as_deref() else { return false };
                let theirs = std::fs::metadata(format!("/proc/{pid}/root{path}"));
                let ours = std::fs::metadata(path);
                matches!((theirs, ours), (Ok(t), Ok(o)) if o.is_file() && t.dev() == o.dev() && t.ino() == o.ino())
            })
            .collect();
        if !exec.is_empty() {
            self.maps.insert(pid, exec);
        }
    }

    /// Whether `resolve` would fill in a stack for this block.
    pub fn wants(&self, b: &crate::correlate::Block) -> bool {
        self.map.is_some()
            && b.stack.is_none()
            && b.blocked_ns >= self.threshold_ns
            && (b.stack_ids.kernel.is_some() || b.stack_ids.user.is_some() || !b.kernel_addrs.is_empty())
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
            if !long || (ids.kernel.is_none() && ids.user.is_none() && addrs.is_empty()) {
                continue;
            }
            // The kernel stack comes as addresses (taken from the task at switch-in), or as
            // an id in the stack map.
            let mut kernel = if addrs.is_empty() {
                ids.kernel.map(|id| self.kernel_frames(id)).unwrap_or_default()
            } else {
                self.kernel_addrs(&addrs)
            };
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

    /// Symbolizes kernel return addresses (from kallsyms only: looking for a vmlinux with
    /// debug info is slow).
    fn kernel_addrs(&self, addrs: &[u64]) -> Vec<Frame> {
        let kernel = Kernel { vmlinux: MaybeDefault::None, ..Default::default() };
        self.symbolize(&Source::Kernel(kernel), addrs)
    }

    fn kernel_frames(&mut self, id: u32) -> Vec<Frame> {
        if let Some(f) = self.kernel_cache.get(&id) {
            return f.clone();
        }
        let addrs = self.addrs(id);
        let frames = self.kernel_addrs(&addrs);
        if self.kernel_cache.len() >= MAX_CACHED {
            self.kernel_cache.clear();
        }
        self.kernel_cache.insert(id, frames.clone());
        frames
    }

    fn user_frames(&mut self, pid: u32, id: u32) -> Vec<Frame> {
        if let Some(f) = self.user_cache.get(&(pid, id)) {
            return f.clone();
        }
        let addrs = self.addrs(id);
        let frames = match self.maps.get(&pid) {
            Some(maps) => self.symbolize_files(maps, &addrs),
            None => self.symbolize(&Source::Process(Process::new(Pid::from(pid))), &addrs),
        };
        if self.user_cache.len() >= MAX_CACHED {
            self.user_cache.clear();
        }
        self.user_cache.insert((pid, id), frames.clone());
        frames
    }

    /// Symbolizes user addresses through the mapped files: address -> (file, file offset).
    fn symbolize_files(&self, maps: &[Mapping], addrs: &[u64]) -> Vec<Frame> {
        addrs
            .iter()
            .map(|addr| {
                let unknown = Frame { addr: *addr, func: None, file: None, line: None };
                let Some(m) = maps.iter().find(|m| (m.start..m.end).contains(addr)) else { return unknown };
                let Some(path) = m.path.as_deref() else { return unknown };
                let off = addr - m.start + m.offset;
                let mut f = self.lookup(&Source::Elf(Elf::new(path)), Input::FileOffset(&[off][..]));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_display() {
        let f = Frame { addr: 0x10, func: Some("main".into()), file: Some("/src/a/main.rs".into()), line: Some(7) };
        assert_eq!(f.display(), "main (main.rs:7)");
        let f = Frame { addr: 0x10, func: None, file: None, line: None };
        assert_eq!(f.display(), "0x10");
    }

    #[test]
    fn symbolizes_this_process() {
        // A user address of a function in this test binary resolves to its name.
        let addr = symbolizes_this_process as *const () as usize as u64;
        let s = Symbolizer::new(None, 0);
        let frames = s.symbolize(&Source::Process(Process::new(Pid::Slf)), &[addr]);
        let name = frames[0].func.clone().unwrap_or_default();
        assert!(name.contains("symbolizes_this_process"), "{frames:?}");
    }
}
