//! The probe sites of the traced processes, attached: the privileged helper ([`super::broker`])
//! finds them in the files each process maps and creates their uprobes (or uprobe_multi
//! links); this side writes each site's argument spec and keeps the links. Rescans pick up
//! libraries dlopen'ed after attach. Dropping it detaches every site.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use profiler_common::{UsdtSpec, MAX_USDT_ARGS};

use super::broker_client::{BrokerClient, BrokerError};
use super::broker_proto;
use super::tracer::{usdt_slot, UsdtPrograms, MAX_SITES};
use super::uprobe;
use crate::discover::mapped::MappedFile;
use crate::discover::{self, Mapping, ProbeSite, TPROF_PROVIDER};

/// Whether the eBPF USDT programs run the actions of foreign sites (`UsdtSpec::nactions`).
/// Not yet: see docs/limitations.md.
const KERNEL_RUNS_FOREIGN_ACTIONS: bool = false;

/// A probe site tprof attached to.
#[derive(Clone, Debug)]
pub struct AttachedSite {
    pub pid: u32,
    pub path: PathBuf,
    pub site: ProbeSite,
}

pub struct Probes {
    usdt: UsdtPrograms,
    links: Vec<uprobe::UprobeLink>,
    /// Sites are attached with uprobe_multi links (the helper holds the programs: see
    /// [`Probes::new`]).
    uses_multi: bool,
    multi_links: Vec<OwnedFd>,
    pub sites: Vec<AttachedSite>,
    /// Problems that did not stop the session (a bad note, an unsupported argument spec).
    pub warnings: Vec<String>,
    /// The privileged helper that finds probe sites and creates their uprobes (None: gone).
    broker: Option<BrokerClient>,
    /// The target files the helper passed, by its file id: it deduplicates them by (pid,
    /// device, inode), so a binary replaced or deleted while attached, seen under another
    /// path (`/proc/PID/exe`), is the same file and is not attached twice.
    files: HashMap<u64, Arc<File>>,
    /// Each traced process's executable mappings, with their files open (for the
    /// symbolizer), as of the last scan.
    mapped: HashMap<u32, Vec<MappedFile>>,
    /// Sites attached per file id, and the file ids each traced process maps: with shared
    /// links a second process of the same binary adds no site, yet it has them.
    file_sites: HashMap<u64, usize>,
    pid_files: HashMap<u32, Vec<u64>>,
    next_cookie: u32,
    /// Foreign probes mapped onto tprof's events (`--preset`, `--probes`).
    pub mapping: Option<std::sync::Arc<crate::mapping::ProbeMapping>>,
    /// The mapped probes (`provider:name`) some site was attached for.
    pub mapped_seen: std::collections::HashSet<String>,
}

impl Probes {
    /// Probe sites attached through `broker`. The USDT programs loaded for uprobe_multi
    /// links go to the helper, and tprof closes its own copies: creating a uprobe_multi link
    /// takes no privilege beyond the program fd, so whoever holds it can put a breakpoint at
    /// any offset of any file in any process; only the helper, which checks every offset,
    /// may.
    pub fn new(broker: BrokerClient, mut usdt: UsdtPrograms) -> Probes {
        let multi = usdt.multi.take();
        let mut p = Probes {
            usdt,
            links: Vec::new(),
            uses_multi: false,
            multi_links: Vec::new(),
            sites: Vec::new(),
            warnings: Vec::new(),
            broker: Some(broker),
            files: HashMap::new(),
            mapped: HashMap::new(),
            file_sites: HashMap::new(),
            pid_files: HashMap::new(),
            next_cookie: 0,
            mapping: None,
            mapped_seen: std::collections::HashSet::new(),
        };
        if let Some(progs) = multi {
            let mut handed = Ok(());
            for (slot, prog) in progs.iter().enumerate() {
                if handed.is_ok() {
                    handed = p.ask(|b| b.program(slot as u32, prog.as_fd()));
                }
            }
            match handed {
                Ok(()) => p.uses_multi = true,
                Err(e) => p.warnings.push(format!("uprobe_multi links unavailable ({e:#}): one perf event per probe site instead")),
            }
            // `progs` closes here.
        }
        p
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
            eprintln!("tprof: warning: {}", crate::present::escape_lines(&msg));
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

    /// Asks the helper to serve `pid` too (it checks the session's scope itself).
    pub fn adopt(&mut self, pid: u32) -> Result<()> {
        self.ask(|b| b.adopt(pid))
    }

    /// The processes of the session's scope the helper found and serves from now on.
    pub fn discover(&mut self) -> Result<Vec<u32>> {
        self.ask(|b| b.discover())
    }

    /// Forgets what was kept for process `pid` (it exited).
    pub fn forget(&mut self, pid: u32) {
        self.mapped.remove(&pid);
        self.pid_files.remove(&pid);
    }

    /// Whether process `pid` maps a file with attached probe sites (as of its last scan).
    pub fn has_sites(&self, pid: u32) -> bool {
        self.pid_files.get(&pid).is_some_and(|ids| ids.iter().any(|id| self.file_sites.get(id).is_some_and(|n| *n > 0)))
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
        self.pid_files.insert(pid, scan.mappings.iter().map(|m| m.file).collect());
        let mut attached = 0;
        for file in scan.files.into_iter().filter(|f| f.new) {
            let mut sites: Vec<ProbeSite> = file
                .sites
                .into_iter()
                .map(|d| ProbeSite {
                    provider: d.provider,
                    args: discover::parse_args(&d.args),
                    each: discover::parse_each(&d.args, None),
                    name: d.name,
                    pc: d.pc,
                    file_offset: d.file_offset,
                    semaphore: d.semaphore,
                    semaphore_offset: d.semaphore_offset,
                    args_text: d.args,
                })
                .collect();
            let before = attached;
            // Symbolic operands (`-4@NBuffers(%rip)`) need the file's symbol tables.
            if let Some(f) = self.files.get(&file.id) {
                discover::resolve_symbols(f.as_ref(), &mut sites);
            }
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
                        Err(e) => self.warnings.push(format!("pid {pid}: {} at {}+{:#x}: {e:#}", site.full_name(), file.display, site.file_offset)),
                    }
                }
                n
            };
            *self.file_sites.entry(file.id).or_default() += attached - before;
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
                Err(e) => self.warnings.push(format!("pid {pid}: {} at {display}+{:#x}: {e:#}", site.full_name(), site.file_offset)),
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
                        let names: Vec<String> = chunk.iter().map(|(s, _)| format!("{} at +{:#x}", s.full_name(), s.file_offset)).collect();
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
        if site.provider != TPROF_PROVIDER {
            return self.foreign_spec_for(site);
        }
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
        self.usdt.specs.set(cookie, spec, 0).context("writing the USDT spec map")?;
        self.next_cookie += 1;
        Ok((probe, cookie))
    }

    /// The spec of a foreign site under the session's mapping (`crate::mapping`).
    fn foreign_spec_for(&mut self, site: &ProbeSite) -> Result<(u32, u32)> {
        let mapping = self.mapping.clone().ok_or_else(|| anyhow!("not a tprof probe, and no mapping names it"))?;
        let rule = mapping.rule(&site.provider, &site.name).ok_or_else(|| anyhow!("no rule of {} names this probe", mapping.source))?;
        let spec = crate::mapping::compile_site(rule, site).map_err(|e| anyhow!("{}: {e}", mapping.source))?;
        // The kernel programs do not run foreign actions yet (docs/limitations.md): a site
        // attached now would fire with a spec they read as a tprof probe. Refused, checked.
        if spec.nactions != 0 && !KERNEL_RUNS_FOREIGN_ACTIONS {
            self.mapped_seen.insert(site.full_name());
            bail!("mapped and checked, but not attached: tprof's kernel programs do not run foreign probes yet");
        }
        if self.next_cookie >= MAX_SITES {
            bail!("more than {MAX_SITES} probe sites in one session");
        }
        let cookie = self.next_cookie;
        self.usdt.specs.set(cookie, spec, 0).context("writing the USDT spec map")?;
        self.next_cookie += 1;
        self.mapped_seen.insert(site.full_name());
        Ok((spec.probe, cookie))
    }

    /// The mapped probes no attached site stands for yet: a mapping that names a probe the
    /// traced files do not have (a typo, another version), or a preset for another program.
    pub fn mapped_missing(&self) -> Vec<String> {
        let Some(m) = &self.mapping else { return Vec::new() };
        m.probe_names().into_iter().filter(|n| !self.mapped_seen.contains(n)).collect()
    }

    fn attach_site(&mut self, pid: u32, file: u64, site: &ProbeSite) -> Result<()> {
        let (probe, cookie) = self.spec_for(site)?;
        let perf = self.ask(|b| b.attach(pid, file, site.file_offset, site.semaphore_offset))?;
        let prog = self.usdt.perf[usdt_slot(probe) as usize].as_fd();
        let link = uprobe::link(prog, perf, &format!("{} at +{:#x}", site.full_name(), site.file_offset), u64::from(cookie))?;
        self.links.push(link);
        Ok(())
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

    /// Environment variable `name` of `pid` through the helper (a process tprof may no
    /// longer read itself); None if unset or unreadable.
    pub fn environ(&mut self, pid: u32, name: &str) -> Option<String> {
        match self.ask(|b| b.environ(pid, name)) {
            Ok(v) => v.map(|b| String::from_utf8_lossy(&b).into_owned()),
            Err(e) => {
                log::debug!("environment of pid {pid}: {e:#}");
                None
            }
        }
    }

    /// Reads many strings of target memory at once, through the helper (see
    /// [`BrokerClient::read_many`]): (pid, address, length) each, at most
    /// [`broker_proto::MAX_READ`] bytes; one answer per read, None when unreadable.
    pub fn read_targets(&mut self, reads: &[(u32, u64, usize)]) -> Vec<Option<Vec<u8>>> {
        let descs: Vec<broker_proto::ReadDesc> = reads
            .iter()
            .map(|&(pid, addr, len)| broker_proto::ReadDesc { pid, addr, len: u32::try_from(len).unwrap_or(u32::MAX).min(broker_proto::MAX_READ) })
            .collect();
        match self.ask(|b| b.read_many(&descs)) {
            Ok(v) => v.into_iter().map(|d| d.filter(|d| !d.is_empty())).collect(),
            Err(e) => {
                log::debug!("late reads of {} strings: {e:#}", reads.len());
                vec![None; reads.len()]
            }
        }
    }

    /// Detaches every USDT site (disarming the semaphores as the links go). A uprobe_multi
    /// link goes with one wait for the kernel (per file and program); a perf-event uprobe
    /// (the fallback) each waits for an RCU grace period (~0.1 s here, under a global
    /// mutex, so the parallel threads here help little).
    pub fn detach(&mut self) {
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

impl Drop for Probes {
    fn drop(&mut self) {
        self.detach();
        // Then the helper goes (it exits when its socket closes).
        self.broker = None;
    }
}
