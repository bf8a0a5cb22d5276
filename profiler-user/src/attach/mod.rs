//! Loading tprof's eBPF programs and attaching them: tp_btf programs on the scheduler,
//! syscall and irq tracepoints, and the USDT handler on every tprof probe site of the
//! traced processes (their executables and the libraries they map, rescanned so that a
//! library dlopen'ed after attach is picked up).
//!
//! The probe sites are found, and their uprobe perf events created, by tprof's privileged
//! helper ([`broker`]); this process links its programs to the events it gets back, which
//! needs no privilege, so it drops all of its own ([`drop_privs`]) before the first attach.

pub mod broker;
pub mod broker_client;
pub mod broker_proto;
pub mod drop_privs;
pub mod multi;
pub mod privileges;
pub mod uprobe;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{BtfTracePoint, UProbe};
use aya::{Btf, Ebpf, EbpfLoader};
use profiler_common::{Config, UsdtSpec, MAX_USDT_ARGS};

use crate::discover::mapped::MappedFile;
use crate::discover::{self, Mapping, ProbeSite, TPROF_PROVIDER};
use broker_client::{BrokerClient, BrokerError};

/// The eBPF object built by build.rs (empty when the toolchain was missing).
static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler.bpf.o"));

/// The tp_btf programs and the tracepoints they attach to. Interrupt exits attach before
/// their entries, so that no entry is ever counted without its exit.
const TRACEPOINTS: [&str; 12] = [
    "irq_handler_exit",
    "softirq_exit",
    "hrtimer_expire_exit",
    "irq_handler_entry",
    "softirq_entry",
    "hrtimer_expire_entry",
    "sched_switch",
    "sched_waking",
    "sys_enter",
    "sys_exit",
    "sched_process_exit",
    "sched_process_exec",
];
/// The USDT programs: sleepable for the probes that pass strings, plain for the others.
const USDT_PROGRAM: &str = "tprof_usdt";
const USDT_FAST_PROGRAM: &str = "tprof_usdt_fast";

/// The uprobe_multi program slot of `probe`: 0 for [`USDT_PROGRAM`], 1 for the fast one.
fn usdt_slot(probe: u32) -> u32 {
    u32::from(usdt_program(probe) != USDT_PROGRAM)
}

/// The program that handles `probe` (see the eBPF side's docs for why there are two).
fn usdt_program(probe: u32) -> &'static str {
    use profiler_common::probe::*;
    match probe {
        TASK_BEGIN | REGION_BEGIN | REGION_END | LOG => USDT_PROGRAM,
        _ => USDT_FAST_PROGRAM,
    }
}
/// Size of the USDT_SPECS map: the most probe sites one session can attach.
pub const MAX_SITES: u32 = 4096;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    pub syscalls: bool,
    /// Take kernel and user stacks when a task's thread blocks at least `stack_ns`.
    pub stacks: bool,
    pub stack_ns: u64,
    /// Intervals shorter than this are summed in the kernel (0: stream every one).
    pub detail_ns: u64,
    /// A task worked for this long on a thread streams every interval from then on (0: never).
    pub slow_ns: u64,
    /// The traced processes (the kernel programs filter on them when there are at most
    /// `MAX_FILTER_PIDS`); empty: no filter.
    pub pids: Vec<u32>,
    /// Enable the eBPF programs' aya-log diagnostics (otherwise the verifier prunes them).
    pub debug_ebpf: bool,
    /// Try uprobe_multi links (else one perf event per probe site).
    pub uprobe_multi: bool,
}

/// A probe site tprof attached to.
#[derive(Clone, Debug)]
pub struct AttachedSite {
    pub pid: u32,
    pub path: PathBuf,
    pub site: ProbeSite,
}

/// The loaded programs and every live attachment; dropping it detaches everything.
pub struct Session {
    pub ebpf: Ebpf,
    /// aya-log reader, with --debug-ebpf.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    links: Vec<uprobe::UprobeLink>,
    /// The USDT programs loaded for uprobe_multi links (by [`usdt_slot`]), when the kernel
    /// has them, until they are handed to the helper. tprof does not keep them: creating a
    /// uprobe_multi link takes no privilege beyond the program fd, so whoever holds it can
    /// put a breakpoint at any offset of any file in any process; only the helper, which
    /// checks every offset, does.
    multi: Option<[std::os::fd::OwnedFd; 2]>,
    /// Sites are attached with uprobe_multi links (the helper holds the programs).
    uses_multi: bool,
    multi_links: Vec<std::os::fd::OwnedFd>,
    pub sites: Vec<AttachedSite>,
    /// Problems that did not stop the session (a bad note, an unsupported argument spec).
    pub warnings: Vec<String>,
    /// The privileged helper that finds probe sites and creates their uprobes (None: gone,
    /// or not started yet).
    broker: Option<BrokerClient>,
    /// The target files the helper passed, by its file id: it deduplicates them by (pid,
    /// device, inode), so a binary replaced or deleted while attached, seen under another
    /// path (`/proc/PID/exe`), is the same file and is not attached twice.
    files: HashMap<u64, Arc<File>>,
    /// Each traced process's executable mappings, with their files open (for the
    /// symbolizer), as of the last scan.
    mapped: HashMap<u32, Vec<MappedFile>>,
    next_cookie: u32,
}

pub fn ebpf_object() -> Result<&'static [u8]> {
    if EBPF_OBJ.is_empty() {
        let why = option_env!("TPROF_EBPF_MISSING").unwrap_or("unknown reason");
        bail!("this tprof was built without its eBPF programs ({why}); run `cargo xtask setup` and rebuild");
    }
    Ok(EBPF_OBJ)
}

impl Session {
    /// Loads the programs and attaches the kernel tracepoints.
    pub fn load(opts: &LoadOptions) -> Result<Session> {
        let obj = ebpf_object()?;
        let offsets = crate::btf::kernel_offsets().context("reading task_struct offsets from the kernel's BTF")?;
        let config = Config {
            offsets,
            syscalls: u32::from(opts.syscalls),
            stacks: u32::from(opts.stacks),
            detail_ns: opts.detail_ns,
            stack_ns: opts.stack_ns,
            slow_ns: opts.slow_ns,
            pids: [0; profiler_common::MAX_FILTER_PIDS],
            npids: 0,
            _pad: 0,
        };
        let mut config = config;
        if (1..=profiler_common::MAX_FILTER_PIDS).contains(&opts.pids.len()) {
            config.pids[..opts.pids.len()].copy_from_slice(&opts.pids);
            config.npids = opts.pids.len() as u32;
        }
        // aya-log level: 0 disables every log statement at load time; 4 is Debug.
        let log_level: u8 = if opts.debug_ebpf { 4 } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .override_global("AYA_LOG_LEVEL", &log_level, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .map_max_entries("USDT_SPECS", MAX_SITES)
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
        for name in [USDT_PROGRAM, USDT_FAST_PROGRAM] {
            let usdt: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("eBPF object lacks program {name}"))?
                .try_into()
                .with_context(|| format!("{name} is not a uprobe program"))?;
            usdt.load().with_context(|| format!("loading the USDT program {name}"))?;
        }
        // The same programs again, for uprobe_multi links (see multi.rs); without them (a
        // kernel before 6.6), one perf event per site.
        let mut warnings = Vec::new();
        let loaded = opts.uprobe_multi.then(|| multi::load(obj, &ebpf, &[(USDT_PROGRAM, true), (USDT_FAST_PROGRAM, false)]));
        let multi = match loaded.unwrap_or_else(|| Ok(Vec::new())) {
            // Empty: --probe-links perf-event asked for the older way.
            Ok(v) => <[std::os::fd::OwnedFd; 2]>::try_from(v).ok(),
            Err(e) => {
                warnings.push(format!(
                    "uprobe_multi links unavailable ({e:#}): one perf event per probe site instead (slower to detach; \
                     the target's main thread pays a perf context switch at each of its context switches)"
                ));
                None
            }
        };
        let logger = if opts.debug_ebpf {
            Some(aya_log::EbpfLogger::init(&mut ebpf).context("starting the eBPF logger (--debug-ebpf)")?)
        } else {
            None
        };
        Ok(Session {
            logger,
            ebpf,
            multi,
            uses_multi: false,
            multi_links: Vec::new(),
            links: Vec::new(),
            sites: Vec::new(),
            warnings,
            broker: None,
            files: HashMap::new(),
            mapped: HashMap::new(),
            next_cookie: 0,
        })
    }

    /// Hands the session its privileged helper (see [`broker`]).
    pub fn set_broker(&mut self, broker: BrokerClient) {
        self.broker = Some(broker);
        // The helper creates the uprobe_multi links (checking every offset): it needs the
        // programs.
        if let Some(progs) = self.multi.take() {
            let mut handed = Ok(());
            for (slot, p) in progs.iter().enumerate() {
                if handed.is_ok() {
                    handed = self.ask(|b| b.program(slot as u32, p.as_fd()));
                }
            }
            match handed {
                Ok(()) => self.uses_multi = true,
                Err(e) => self.warnings.push(format!("uprobe_multi links unavailable ({e:#}): one perf event per probe site instead")),
            }
            // `progs` closes here (see `multi`).
        }
    }

    /// The helper's pid, while it runs.
    pub fn broker_pid(&self) -> Option<u32> {
        self.broker.as_ref().filter(|b| b.is_alive()).map(BrokerClient::pid)
    }

    /// Records that the helper is gone (once): what was attached stays, nothing new can be.
    fn broker_gone(&mut self, why: &str) {
        if self.broker.take().is_some() {
            let msg = format!(
                "{why}: probe sites of libraries loaded or programs exec'ed from now on are not attached, and strings \
                 the kernel could not copy stay unread; what was attached is still traced"
            );
            eprintln!("tprof: warning: {msg}");
            self.warnings.push(msg);
        }
    }

    /// Asks the helper; a helper found gone is recorded as such.
    fn ask<T>(&mut self, f: impl FnOnce(&mut BrokerClient) -> Result<T, BrokerError>) -> Result<T> {
        let Some(b) = self.broker.as_mut() else { bail!("tprof's privileged helper is not running") };
        match f(b) {
            Ok(v) => Ok(v),
            Err(BrokerError::Refused(why)) => bail!("{why}"),
            Err(e @ BrokerError::Gone(_)) => {
                let why = e.to_string();
                self.broker_gone(&why);
                bail!("{why}")
            }
        }
    }

    /// Attaches to the tprof probes of every file `pid` maps that was not scanned before.
    /// Returns how many sites were newly attached.
    pub fn attach_pid(&mut self, pid: u32) -> Result<usize> {
        // The helper opens the files by what is mapped (map_files), never by the paths the
        // target names (discover::mapped), reads their notes, and creates a uprobe only at a
        // probe site it found itself.
        let scan = self.ask(|b| b.scan(pid)).with_context(|| format!("scanning the executable mappings of pid {pid}"))?;
        for w in &scan.warnings {
            self.warnings.push(format!("pid {pid}: {w}"));
        }
        for f in &scan.files {
            if let Some(file) = &f.file {
                self.files.insert(f.id, Arc::clone(file));
            }
        }
        let mapped: Vec<MappedFile> = scan
            .mappings
            .iter()
            .filter_map(|m| {
                let file = Arc::clone(self.files.get(&m.file)?);
                let mapping = Mapping { start: m.start, end: m.end, perms: m.perms.clone(), offset: m.offset, inode: m.inode, path: m.path.clone() };
                Some(MappedFile { mapping, file })
            })
            .collect();
        self.mapped.insert(pid, mapped);
        let mut attached = 0;
        for file in scan.files.into_iter().filter(|f| f.new) {
            let sites: Vec<ProbeSite> = file
                .sites
                .into_iter()
                .map(|d| ProbeSite {
                    provider: TPROF_PROVIDER.to_string(),
                    args: discover::parse_args(&d.args),
                    name: d.name,
                    pc: d.pc,
                    file_offset: d.file_offset,
                    semaphore: d.semaphore,
                    semaphore_offset: d.semaphore_offset,
                    args_text: d.args,
                })
                .collect();
            attached += if self.uses_multi {
                self.attach_file_multi(pid, file.id, &file.display, sites)
            } else {
                let mut n = 0;
                for site in sites {
                    match self.attach_site(pid, file.id, &site) {
                        Ok(()) => {
                            n += 1;
                            self.sites.push(AttachedSite { pid, path: PathBuf::from(&file.display), site });
                        }
                        Err(e) => self.warnings.push(format!("pid {pid}: tprof:{} at {}+{:#x}: {e:#}", site.name, file.display, site.file_offset)),
                    }
                }
                n
            };
        }
        Ok(attached)
    }

    /// Attaches the sites of one file with uprobe_multi links (one per program, and per
    /// [`broker_proto::MAX_MULTI_SITES`]); returns how many were attached.
    fn attach_file_multi(&mut self, pid: u32, file: u64, display: &str, sites: Vec<ProbeSite>) -> usize {
        let mut groups: [Vec<(ProbeSite, broker_proto::MultiSiteDesc)>; 2] = [Vec::new(), Vec::new()];
        for site in sites {
            match self.spec_for(&site) {
                Ok((probe, cookie)) => {
                    let d = broker_proto::MultiSiteDesc { offset: site.file_offset, semaphore: site.semaphore_offset, cookie: u64::from(cookie) };
                    groups[usdt_slot(probe) as usize].push((site, d));
                }
                Err(e) => self.warnings.push(format!("pid {pid}: tprof:{} at {display}+{:#x}: {e:#}", site.name, site.file_offset)),
            }
        }
        let mut attached = 0;
        for (slot, group) in groups.into_iter().enumerate() {
            let mut rest = group;
            while !rest.is_empty() {
                let tail = rest.split_off(rest.len().min(broker_proto::MAX_MULTI_SITES));
                let chunk = std::mem::replace(&mut rest, tail);
                let descs: Vec<_> = chunk.iter().map(|(_, d)| *d).collect();
                match self.ask(|b| b.attach_multi(pid, file, slot as u32, descs)) {
                    Ok(link) => {
                        attached += chunk.len();
                        self.multi_links.push(link);
                        for (site, _) in chunk {
                            self.sites.push(AttachedSite { pid, path: PathBuf::from(display), site });
                        }
                    }
                    Err(e) => {
                        let names: Vec<String> = chunk.iter().map(|(s, _)| format!("tprof:{} at +{:#x}", s.name, s.file_offset)).collect();
                        self.warnings.push(format!("pid {pid}: {display}: {}: {e:#}", names.join(", ")));
                    }
                }
            }
        }
        attached
    }

    /// Checks a site's probe and arguments and writes its spec under a new cookie:
    /// (probe id, cookie).
    fn spec_for(&mut self, site: &ProbeSite) -> Result<(u32, u32)> {
        let probe = discover::tprof_probe_id(&site.name).ok_or_else(|| anyhow!("unknown tprof probe name (newer ABI?)"))?;
        let args = site.args.as_ref().map_err(|e| anyhow!("unsupported argument spec {:?}: {e}", site.args_text))?;
        let want = discover::tprof_probe_args(probe);
        if args.len() < want || args.len() > MAX_USDT_ARGS {
            bail!("{} arguments where tprof:{} takes {want} (ABI v1)", args.len(), site.name);
        }
        if self.next_cookie >= MAX_SITES {
            bail!("more than {MAX_SITES} probe sites in one session");
        }
        let mut spec = UsdtSpec { probe, nargs: args.len() as u32, ..Default::default() };
        spec.args[..args.len()].copy_from_slice(args);
        let cookie = self.next_cookie;
        let mut specs: Array<&mut MapData, UsdtSpec> =
            Array::try_from(self.ebpf.map_mut("USDT_SPECS").ok_or_else(|| anyhow!("no USDT_SPECS map"))?)?;
        specs.set(cookie, spec, 0).context("writing the USDT spec map")?;
        self.next_cookie += 1;
        Ok((probe, cookie))
    }

    /// The executable mappings of `pid` with their open files, as of the last scan.
    pub fn mapped_files(&self, pid: u32) -> Vec<MappedFile> {
        self.mapped.get(&pid).cloned().unwrap_or_default()
    }

    /// Reads target memory through the helper (strings the kernel could not copy); None if
    /// it cannot be read.
    pub fn read_target(&mut self, pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
        match self.ask(|b| b.read(pid, addr, len)) {
            Ok(v) if !v.is_empty() => Some(v),
            Ok(_) => None,
            Err(e) => {
                log::debug!("late read of pid {pid} at {addr:#x}: {e:#}");
                None
            }
        }
    }

    fn attach_site(&mut self, pid: u32, file: u64, site: &ProbeSite) -> Result<()> {
        let (probe, cookie) = self.spec_for(site)?;
        let perf = self.ask(|b| b.attach(pid, file, site.file_offset, site.semaphore_offset))?;
        let name = usdt_program(probe);
        let prog: &UProbe = self.ebpf.program(name).ok_or_else(|| anyhow!("no {name} program"))?.try_into()?;
        let fd = prog.fd()?.as_fd();
        let link = uprobe::link(fd, perf, &format!("tprof:{} at +{:#x}", site.name, site.file_offset), u64::from(cookie))?;
        self.links.push(link);
        Ok(())
    }

    /// Records lost in the kernel, summed over CPUs, by record kind.
    pub fn kernel_drops(&self) -> Result<Vec<u64>> {
        let map = self.ebpf.map("DROPS").ok_or_else(|| anyhow!("no DROPS map"))?;
        let drops: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let mut out = Vec::new();
        for i in 0..drops.len() {
            let v = drops.get(&i, 0)?;
            out.push(v.iter().sum());
        }
        Ok(out)
    }

    /// Scheduler events the programs expected and did not see, summed over CPUs, by
    /// `profiler_common::anomaly` slot.
    pub fn kernel_anomalies(&self) -> Result<Vec<u64>> {
        let map = self.ebpf.map("ANOMALIES").ok_or_else(|| anyhow!("no ANOMALIES map"))?;
        let counts: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let mut out = Vec::new();
        for i in 0..counts.len() {
            out.push(counts.get(&i, 0)?.iter().sum());
        }
        Ok(out)
    }

    /// Runs of each program the kernel skipped because another BPF program was already
    /// running on that CPU (`recursion_misses` of `bpf_prog_info`): events lost silently by
    /// the kernel, reported so they are not silent here.
    pub fn program_misses(&self) -> Vec<(String, u64)> {
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
    pub fn unsent_sums(&self) -> Result<Vec<(u32, profiler_common::ThreadState)>> {
        let map = self.ebpf.map("THREADS").ok_or_else(|| anyhow!("no THREADS map"))?;
        let threads: aya::maps::HashMap<&MapData, u32, profiler_common::ThreadState> = aya::maps::HashMap::try_from(map)?;
        let mut out = Vec::new();
        for entry in threads.iter() {
            let (tid, st) = entry.context("reading the THREADS map")?;
            if st.depth > 0 && !st.agg.is_empty() {
                out.push((tid, st));
            }
        }
        Ok(out)
    }

    /// Moves the STACKS map out, for the symbolizer.
    pub fn take_stacks(&mut self) -> Option<aya::maps::StackTraceMap<MapData>> {
        self.ebpf.take_map("STACKS").and_then(|m| aya::maps::StackTraceMap::try_from(m).ok())
    }

    /// Prints the eBPF programs' pending diagnostics (with --debug-ebpf).
    pub fn flush_ebpf_log(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    /// Detaches every USDT site (disarming the semaphores as the links go). A uprobe_multi
    /// link goes with one wait for the kernel (per file and program); a perf-event uprobe
    /// (the fallback) each waits for an RCU grace period (~0.1 s here, under a global
    /// mutex, so the parallel threads here help little).
    pub fn detach_usdt(&mut self) {
        self.multi_links.clear();
        let links = std::mem::take(&mut self.links);
        let per_thread = links.len().div_ceil(64).max(1);
        let mut chunks: Vec<Vec<uprobe::UprobeLink>> = Vec::new();
        let mut it = links.into_iter().peekable();
        while it.peek().is_some() {
            chunks.push(it.by_ref().take(per_thread).collect());
        }
        std::thread::scope(|s| {
            for chunk in chunks {
                s.spawn(move || drop(chunk));
            }
        });
    }

    /// Whether the USDT programs loaded for uprobe_multi links (before they go to the
    /// helper: see [`Session::set_broker`]).
    pub fn has_uprobe_multi(&self) -> bool {
        self.multi.is_some() || self.uses_multi
    }

    /// How probe sites are attached in this session (see `SessionReport::probe_links`).
    pub fn probe_links(&self) -> &'static str {
        if self.uses_multi {
            "uprobe_multi"
        } else {
            "perf_event"
        }
    }

    pub fn attached_links(&self) -> usize {
        self.links.len() + self.multi_links.len()
    }
}

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

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

impl Drop for Session {
    fn drop(&mut self) {
        self.detach_usdt();
        // Then the helper goes (it exits when its socket closes).
        self.broker = None;
    }
}
