//! The kernel side, loaded: tprof's eBPF object with its tp_btf programs attached to the
//! scheduler, syscall and irq tracepoints, its USDT programs loaded (and loaded again for
//! uprobe_multi links where the kernel has them), and its maps. What the session reads
//! back from the kernel goes through here: the ring buffer, the stack map, the counters
//! ([`Tracer::counters`]) and the sums of tasks still open.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::{BtfTracePoint, UProbe};
use aya::{Btf, Ebpf, EbpfLoader};
use profiler_common::{globals, maps, programs, Config, ThreadState, UsdtSpec};

use super::multi;

/// The eBPF object built by build.rs (empty when the toolchain was missing).
static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler.bpf.o"));

/// The tp_btf programs and the tracepoints they attach to. Interrupt exits attach before
/// their entries, so that no entry is ever counted without its exit.
const TRACEPOINTS: [&str; 13] = programs::TRACEPOINTS;
/// The USDT programs: sleepable for the probes that pass strings, plain for the others.
pub const USDT_PROGRAM: &str = programs::USDT;
pub const USDT_FAST_PROGRAM: &str = programs::USDT_FAST;

/// The uprobe_multi program slot of `probe`: 0 for [`USDT_PROGRAM`], 1 for the fast one.
pub fn usdt_slot(probe: u32) -> u32 {
    u32::from(usdt_program(probe) != USDT_PROGRAM)
}

/// The program that handles `probe` (see the eBPF side's docs for why there are two).
pub fn usdt_program(probe: u32) -> &'static str {
    programs::usdt_for(probe)
}

/// Size of the SAMPLE_STACKS map with sampling on (distinct sampled stacks a session keeps).
const SAMPLE_STACKS: u32 = 16384;

/// Size of the USDT_SPECS map: the most probe sites one session can attach.
pub const MAX_SITES: u32 = 4096;

/// How the kernel side traces.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    pub syscalls: bool,
    /// Take kernel and user stacks when a task's thread blocks at least `stack_ns` (the
    /// session symbolizes those blocks' stacks too).
    pub stacks: bool,
    pub stack_ns: u64,
    /// Intervals shorter than this are summed in the kernel (0: stream every one).
    pub detail_ns: u64,
    /// A task worked for this long on a thread streams every interval from then on (0: never).
    pub slow_ns: u64,
    /// Enable the eBPF programs' aya-log diagnostics (otherwise the verifier prunes them).
    pub debug_ebpf: bool,
    /// Try uprobe_multi links (else one perf event per probe site).
    pub uprobe_multi: bool,
    /// Scheduler events dropped on purpose, for tests: (one of `profiler_common::fault`,
    /// every how many). `(0, 0)` in every real session.
    pub fault: (u32, u32),
    /// On-CPU samples per second per CPU (0: no sampling; see `attach::sampler`).
    pub sample_hz: u64,
}

/// What the kernel counted that the session reports: losses and missed events.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Records lost in the kernel (ring buffer full), summed over CPUs, by record kind.
    pub drops: Vec<u64>,
    /// Scheduler events the programs expected and did not see, summed over CPUs, by
    /// `profiler_common::anomaly` slot.
    pub anomalies: Vec<u64>,
    /// Runs of each program the kernel skipped because another BPF program was already
    /// running on that CPU (`recursion_misses` of `bpf_prog_info`): events the kernel
    /// lost silently, reported so they are not silent here.
    pub program_misses: Vec<(String, u64)>,
}

impl Counters {
    pub fn anomaly(&self, slot: u32) -> u64 {
        self.anomalies.get(slot as usize).copied().unwrap_or(0)
    }
}

/// What the probe sites need of the loaded object: the spec map written per site, and the
/// USDT programs (for perf-event links, and for uprobe_multi links where the kernel has
/// them, until they go to the privileged helper).
pub struct UsdtPrograms {
    pub specs: Array<MapData, UsdtSpec>,
    /// By [`usdt_slot`].
    pub perf: [OwnedFd; 2],
    pub multi: Option<[OwnedFd; 2]>,
}

/// The loaded object; dropping it detaches the tracepoints and unloads everything.
pub struct Tracer {
    pub ebpf: Ebpf,
    /// aya-log reader, with --debug-ebpf.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    usdt: Option<UsdtPrograms>,
    /// The TRACED_USER bitmap (see [`Tracer::trace_pid`]).
    traced: Array<MapData, u64>,
    /// Problems that did not stop the load (no uprobe_multi links, say).
    pub warnings: Vec<String>,
}

pub fn ebpf_object() -> Result<&'static [u8]> {
    if EBPF_OBJ.is_empty() {
        let why = option_env!("TPROF_EBPF_MISSING").unwrap_or("unknown reason");
        bail!("this tprof was built without its eBPF programs ({why}); run `cargo xtask setup` and rebuild");
    }
    Ok(EBPF_OBJ)
}

impl Tracer {
    /// Loads the programs and attaches the kernel tracepoints. Nothing is traced until
    /// [`Tracer::trace_pid`]; with `follow`, the children of traced processes are traced
    /// from their first instruction.
    pub fn load(opts: &TraceOptions, follow: bool) -> Result<Tracer> {
        let obj = ebpf_object()?;
        let offsets = crate::btf::kernel_offsets().context("reading task_struct offsets from the kernel's BTF")?;
        let traced_words = pid_max().div_ceil(64);
        let config = Config {
            offsets,
            syscalls: u32::from(opts.syscalls),
            stacks: u32::from(opts.stacks),
            detail_ns: opts.detail_ns,
            stack_ns: opts.stack_ns,
            slow_ns: opts.slow_ns,
            follow: u32::from(follow),
            traced_words,
            fault: opts.fault.0,
            fault_every: opts.fault.1,
        };
        // aya-log level: 0 disables every log statement at load time; 4 is Debug.
        let log_level: u8 = if opts.debug_ebpf { 4 } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::CONFIG, &config, true)
            .override_global(globals::AYA_LOG_LEVEL, &log_level, true)
            .map_max_entries(maps::EVENTS, opts.ring_bytes)
            .map_max_entries(maps::USDT_SPECS, MAX_SITES)
            .map_max_entries(maps::TRACED_USER, traced_words)
            // Without sampling, its stack map (~1 KiB per entry, preallocated) stays tiny.
            .map_max_entries(maps::SAMPLE_STACKS, if opts.sample_hz > 0 { SAMPLE_STACKS } else { 1 })
            .load(obj)
            .context("loading tprof's eBPF object into the kernel")?;
        let btf = Btf::from_sys_fs().context("reading /sys/kernel/btf/vmlinux (tp_btf programs need kernel BTF)")?;
        for tp in TRACEPOINTS {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(tp)
                .ok_or_else(|| anyhow!("eBPF object lacks program {tp}"))?
                .try_into()
                .with_context(|| format!("program {tp} is not a tp_btf program"))?;
            prog.load(tp, &btf).with_context(|| format!("loading tp_btf program {tp} (verifier output above)"))?;
            prog.attach().with_context(|| format!("attaching tp_btf/{tp}"))?;
        }
        let mut perf = Vec::new();
        for name in [USDT_PROGRAM, USDT_FAST_PROGRAM] {
            let usdt: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("eBPF object lacks program {name}"))?
                .try_into()
                .with_context(|| format!("{name} is not a uprobe program"))?;
            usdt.load().with_context(|| format!("loading the USDT program {name}"))?;
            perf.push(usdt.fd()?.as_fd().try_clone_to_owned().with_context(|| format!("duplicating the fd of {name}"))?);
        }
        let perf = <[OwnedFd; 2]>::try_from(perf).map_err(|_| anyhow!("two USDT programs expected"))?;
        // The same programs again, for uprobe_multi links (see multi.rs); without them (a
        // kernel before 6.6), one perf event per site.
        let mut warnings = Vec::new();
        let loaded = opts.uprobe_multi.then(|| multi::load(obj, &ebpf, &[(USDT_PROGRAM, true), (USDT_FAST_PROGRAM, false)]));
        let multi = match loaded.unwrap_or_else(|| Ok(Vec::new())) {
            // Empty: --probe-links perf-event asked for the older way.
            Ok(v) => <[OwnedFd; 2]>::try_from(v).ok(),
            Err(e) => {
                warnings.push(format!(
                    "uprobe_multi links unavailable ({e:#}): one perf event per probe site instead (slower to detach; \
                     the target's main thread pays a perf context switch at each of its context switches)"
                ));
                None
            }
        };
        let specs = ebpf.take_map(maps::USDT_SPECS).ok_or_else(|| anyhow!("eBPF object has no {} map", maps::USDT_SPECS))?;
        let specs = Array::try_from(specs).with_context(|| format!("opening the {} map", maps::USDT_SPECS))?;
        let logger = if opts.debug_ebpf {
            Some(aya_log::EbpfLogger::init(&mut ebpf).context("starting the eBPF logger (--debug-ebpf)")?)
        } else {
            None
        };
        let traced = ebpf.take_map(maps::TRACED_USER).ok_or_else(|| anyhow!("eBPF object has no TRACED_USER map"))?;
        let traced = Array::try_from(traced).context("opening the TRACED_USER map")?;
        Ok(Tracer { ebpf, logger, usdt: Some(UsdtPrograms { specs, perf, multi }), traced, warnings })
    }

    /// Traces process `pid` (or stops): the kernel programs report its threads from now on.
    /// Its children are followed by the kernel itself (with `follow`).
    pub fn trace_pid(&mut self, pid: u32, on: bool) -> Result<()> {
        let (word, mask) = (pid >> 6, 1u64 << (pid & 63));
        // Only this process writes TRACED_USER (the kernel keeps its children in FORKED),
        // so this read-modify-write loses nothing.
        let old = self.traced.get(&word, 0).with_context(|| format!("pid {pid} is beyond the kernel's pid_max"))?;
        let new = if on { old | mask } else { old & !mask };
        if new != old {
            self.traced.set(word, new, 0).with_context(|| format!("writing the traced bit of pid {pid}"))?;
        }
        Ok(())
    }

    /// Whether the USDT programs loaded for uprobe_multi links.
    pub fn has_uprobe_multi(&self) -> bool {
        self.usdt.as_ref().is_some_and(|u| u.multi.is_some())
    }

    /// Hands the USDT programs and their spec map to whoever attaches probe sites (once).
    pub fn take_usdt(&mut self) -> Option<UsdtPrograms> {
        self.usdt.take()
    }

    /// The children the kernel followed since the last call (forked by traced processes):
    /// each is traced from now on by its own bit, and leaves the kernel's FORKED map.
    /// The flag first, then the map: a fork that lands after the flag was cleared sets it
    /// again, so no child is left behind.
    pub fn take_forked(&mut self) -> Result<Vec<u32>> {
        let mut flag: Array<&mut MapData, u32> = Array::try_from(self.ebpf.map_mut(maps::ANY_FORKED).ok_or_else(|| anyhow!("no ANY_FORKED map"))?)?;
        if flag.get(&0, 0)? == 0 {
            return Ok(Vec::new());
        }
        flag.set(0, 0, 0)?;
        let pids: Vec<u32> = {
            let map = self.ebpf.map(maps::FORKED).ok_or_else(|| anyhow!("no FORKED map"))?;
            let forked: aya::maps::HashMap<&MapData, u32, u32> = aya::maps::HashMap::try_from(map)?;
            forked.keys().filter_map(|k| k.ok()).collect()
        };
        // Its own bit before it leaves the map: never a moment untraced.
        for pid in &pids {
            self.trace_pid(*pid, true)?;
        }
        let map = self.ebpf.map_mut(maps::FORKED).ok_or_else(|| anyhow!("no FORKED map"))?;
        let mut forked: aya::maps::HashMap<&mut MapData, u32, u32> = aya::maps::HashMap::try_from(map)?;
        for pid in &pids {
            let _ = forked.remove(pid);
        }
        Ok(pids)
    }

    /// Forgets the kernel's marks of exited processes whose TRACED_USER bit is clear now
    /// (`untraced`: userspace no longer traces that pid). Until then the mark keeps a new
    /// process given the same pid from being traced by the stale bit. The flag first, then
    /// the map: an exit that lands after the flag was cleared sets it again.
    pub fn sweep_exited(&mut self, untraced: impl Fn(u32) -> bool) -> Result<()> {
        let mut flag: Array<&mut MapData, u32> = Array::try_from(self.ebpf.map_mut(maps::ANY_EXITED).ok_or_else(|| anyhow!("no ANY_EXITED map"))?)?;
        if flag.get(&0, 0)? == 0 {
            return Ok(());
        }
        flag.set(0, 0, 0)?;
        let map = self.ebpf.map_mut(maps::EXITED).ok_or_else(|| anyhow!("no EXITED map"))?;
        let mut exited: aya::maps::HashMap<&mut MapData, u32, u32> = aya::maps::HashMap::try_from(map)?;
        let pids: Vec<u32> = exited.keys().filter_map(|k| k.ok()).collect();
        let mut left = false;
        for pid in pids {
            if untraced(pid) {
                let _ = exited.remove(&pid);
            } else {
                left = true;
            }
        }
        if left {
            let mut flag: Array<&mut MapData, u32> = Array::try_from(self.ebpf.map_mut(maps::ANY_EXITED).ok_or_else(|| anyhow!("no ANY_EXITED map"))?)?;
            flag.set(0, 1, 0)?;
        }
        Ok(())
    }

    /// Moves the EVENTS ring buffer out, for the session to drain.
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>> {
        let ring = self.ebpf.take_map(maps::EVENTS).ok_or_else(|| anyhow!("eBPF object has no {} ring buffer", maps::EVENTS))?;
        RingBuf::try_from(ring).with_context(|| format!("opening the {} ring buffer", maps::EVENTS))
    }

    /// Moves the STACKS map out, for the symbolizer.
    pub fn take_stacks(&mut self) -> Option<StackTraceMap<MapData>> {
        self.ebpf.take_map(maps::STACKS).and_then(|m| StackTraceMap::try_from(m).ok())
    }

    /// Everything the kernel counted, read once.
    pub fn counters(&self) -> Result<Counters> {
        Ok(Counters {
            drops: self.per_cpu_sums(maps::DROPS)?,
            anomalies: self.per_cpu_sums(maps::ANOMALIES)?,
            program_misses: self.program_misses(),
        })
    }

    /// A per-CPU array of counters, summed over CPUs.
    fn per_cpu_sums(&self, name: &str) -> Result<Vec<u64>> {
        let map = self.ebpf.map(name).ok_or_else(|| anyhow!("no {name} map"))?;
        let counts: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let mut out = Vec::new();
        for i in 0..counts.len() {
            out.push(counts.get(&i, 0).with_context(|| format!("reading {name}[{i}]"))?.iter().sum());
        }
        Ok(out)
    }

    fn program_misses(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (name, prog) in self.ebpf.programs() {
            let Ok(fd) = prog.fd() else { continue };
            if let Some(n) = recursion_misses(fd.as_fd()).filter(|n| *n > 0) {
                out.push((name.to_string(), n));
            }
        }
        out
    }

    /// Sums of short intervals the kernel still holds for tasks not left yet (a thread
    /// sends them when it leaves its task): at the end of a session, so that they are not
    /// lost. One (tid, state) per such thread.
    pub fn unsent_sums(&self) -> Result<Vec<(u32, ThreadState)>> {
        let map = self.ebpf.map(maps::THREADS).ok_or_else(|| anyhow!("no {} map", maps::THREADS))?;
        let threads: aya::maps::HashMap<&MapData, u32, ThreadState> = aya::maps::HashMap::try_from(map)?;
        let mut out = Vec::new();
        for entry in threads.iter() {
            let (tid, st) = entry.with_context(|| format!("reading the {} map", maps::THREADS))?;
            if st.depth > 0 && !st.agg.is_empty() {
                out.push((tid, st));
            }
        }
        Ok(out)
    }

    /// Prints the eBPF programs' pending diagnostics (with --debug-ebpf).
    pub fn flush_log(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }
}

/// The kernel's `pid_max`: pids are below it (4194304, the most it can be, if unreadable).
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1 << 22)
}

/// `recursion_misses` of a program, read with BPF_OBJ_GET_INFO_BY_FD (kernel >= 5.12).
fn recursion_misses(fd: BorrowedFd<'_>) -> Option<u64> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_prog_info, up to and including recursion_misses (u64 at offset 208).
    let mut info = [0u64; 28];
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&((info.len() * 8) as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: attr points the kernel at `info`, a buffer of the size it declares, which
    // outlives the call; the kernel writes at most that many bytes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, attr.as_ptr(), attr.len() as libc::c_uint) };
    (rc == 0).then_some(info[26])
}
