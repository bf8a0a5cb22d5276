//! tprof's privileged helper: privilege separation for the one thing the session keeps doing
//! that needs real privilege, creating uprobes.
//!
//! Creating a uprobe perf event needs `CAP_SYS_ADMIN` on kernels such as 6.18
//! (`CAP_PERFMON` is refused with EACCES), and a session creates uprobes until it ends: a
//! library dlopen'ed later, or a new image after exec, gets its probes attached by the next
//! rescan. Rather than keep `CAP_SYS_ADMIN` in the process that parses ring records, talks
//! HTTP to collectors and symbolizes stacks, tprof starts this helper before anything else
//! (`/proc/self/exe __broker`, re-executed: no fork of a multithreaded process runs Rust
//! code), over an inherited `SOCK_SEQPACKET` socketpair, then drops every capability of its
//! own ([`super::drop_privs`]).
//!
//! ## What the helper keeps, and why
//!
//! `CAP_SYS_ADMIN` (the uprobe PMU; given up once tprof hands it both uprobe_multi programs:
//! links take no capability), `CAP_CHECKPOINT_RESTORE` (opening `/proc/PID/map_files`),
//! `CAP_SYS_PTRACE` (reading the maps of, opening the mapped files of, creating a uprobe
//! event for, and reading the memory of a target that is root, of another uid, or
//! non-dumpable: without it the kernel refuses even uid 0 once its capabilities are fewer
//! than the target's), `CAP_DAC_READ_SEARCH` (a mapped file whose own mode would refuse
//! uid 0 without capabilities). Nothing else: its bounding set is cut to these four,
//! `no_new_privs` is set, it is not dumpable, stays uid 0, and dies with tprof (socket EOF,
//! and `PR_SET_PDEATHSIG`).
//!
//! ## What it does, and nothing else
//!
//! It serves the [`Request`]s of [`super::broker_proto`] for the pids given on its command
//! line when tprof started it (while tprof was still fully privileged), a list the other side
//! can never extend:
//!
//! * `Scan`: it reads the pid's maps itself, opens each executable file by what is mapped
//!   (`discover::mapped`), reads the notes itself, and returns each file (fd passed along the
//!   first time, for the symbolizer), the tprof probe sites of new files and the mappings.
//! * `Attach`: creates the uprobe perf event only at a tprof probe site it found in that
//!   very file of that pid, with that site's semaphore, once per site; the kernel is handed
//!   the helper's own open file (`/proc/self/fd/N`), never a path. The perf event fd goes back;
//!   tprof links its already loaded program to it (`BPF_LINK_CREATE` on an existing program
//!   and perf event needs no capability on 6.18: measured by `tests/drop_privs.rs`).
//! * `Program`, then `AttachMulti`: tprof hands over its two USDT programs loaded for
//!   uprobe_multi links (once per slot, and closes its own copies), then asks for links over
//!   sites of a scanned file: each one must be a tprof probe site the helper found in that
//!   file, not attached before, or nothing is created. The link fd goes back.
//! * `Read`: at most [`MAX_READ`] bytes of a session pid's memory (`process_vm_readv`, which
//!   honours the target's page protections): the strings the kernel could not copy.
//!   `ReadMany`: up to [`MAX_READS`] of them in one request (tprof batches a drain's).
//!
//! Every pid is held as a pidfd from tprof's first look at it (tprof opens it before it
//! checks the pid, and the helper inherits it), or from its adoption: a request for a process that has exited is
//! refused, and an operation is undone if the process exited while it ran, so a reused pid
//! never gets a probe or a read. A helper that dies takes nothing with it: what was attached
//! stays attached (the perf events live in tprof), and tprof says what it can no longer do.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::Arc;

use super::broker_proto::{
    chunks, Channel, MapDesc, MultiSiteDesc, ReadDesc, Reply, Request, SiteDesc, MAX_MULTI_SITES, MAX_READ, MAX_READS, MAX_SITE_TEXT,
};
use super::drop_privs::{drop_after_attach, DropOptions, Needs};
use super::scope::Scope;
use crate::discover::{self, ProbeSite, TPROF_PROVIDER};

/// The hidden subcommand that runs the helper.
pub const SUBCOMMAND: &str = "__broker";
/// Most probe sites the helper creates uprobes for, over the whole session.
const MAX_ATTACHED: usize = super::tracer::MAX_SITES as usize;
/// Most files it keeps open, over the whole session.
const MAX_FILES: usize = 4096;
/// Most live processes it serves at once.
const MAX_TARGETS: usize = 65536;

/// A reply and the fd that goes with it.
#[derive(Debug)]
pub struct Outgoing {
    pub reply: Reply,
    pub fd: Option<OwnedFd>,
}

impl Outgoing {
    fn plain(reply: Reply) -> Outgoing {
        Outgoing { reply, fd: None }
    }
    fn refused(reason: impl Into<String>) -> Outgoing {
        Outgoing::plain(Reply::Refused { reason: reason.into() })
    }
}

struct Target {
    pid: u32,
    /// None: the process was gone when the helper started.
    pidfd: Option<OwnedFd>,
}

struct BrokerFile {
    pid: u32,
    dev: u64,
    ino: u64,
    display: String,
    file: Arc<File>,
    /// The file's tprof probe sites, as the helper read them.
    sites: Vec<ProbeSite>,
    /// (offset, semaphore) of the sites attached already.
    attached: HashSet<(u64, u64)>,
}

/// The helper's state: the session's pids, and the files it opened for them (a file's id
/// is its index).
pub struct Broker {
    targets: Vec<Target>,
    pmu_type: u32,
    files: Vec<BrokerFile>,
    attached: usize,
    /// The USDT programs tprof handed over for uprobe_multi links, by slot.
    programs: [Option<OwnedFd>; 2],
    /// Give CAP_SYS_ADMIN up once both programs are here (off in unit tests, which run in
    /// the test process).
    give_up_sys_admin: bool,
    /// Which other processes the session may add ([`Request::Adopt`]).
    scope: Scope,
    /// A [`Request::Discover`] ran already.
    discovered: bool,
}

use super::pidfd::open as pidfd_open;

impl Broker {
    /// The helper for `pids` (pidfds opened now), creating uprobes on PMU `pmu_type`.
    pub fn new(pids: &[u32], pmu_type: u32, scope: Scope) -> Broker {
        Broker::with_pidfds(pids.iter().map(|&pid| (pid, pidfd_open(pid))).collect(), pmu_type, scope)
    }

    /// The helper for processes held by the pidfds tprof opened at its first look at them
    /// (None: gone already).
    pub fn with_pidfds(pids: Vec<(u32, Option<OwnedFd>)>, pmu_type: u32, scope: Scope) -> Broker {
        let targets = pids.into_iter().map(|(pid, pidfd)| Target { pid, pidfd }).collect();
        Broker { targets, pmu_type, files: Vec::new(), attached: 0, programs: [None, None], give_up_sys_admin: false, scope, discovered: false }
    }

    /// Whether links are shared by every process of the session: uprobe_multi links not
    /// tied to a pid, made once per file, for a scope wider than the given pids. The kernel
    /// then puts the breakpoints in every process that maps the file (a followed child has
    /// them from its first instruction); tprof's programs drop the hits of processes
    /// outside the session.
    fn shared(&self) -> bool {
        self.scope.wide() && self.programs.iter().all(Option::is_some)
    }

    /// Finds and serves the processes of the scope not served yet (see
    /// [`Request::Discover`]).
    fn discover(&mut self) -> Vec<Outgoing> {
        let mut found = Vec::new();
        let first = !self.discovered;
        self.discovered = true;
        let candidates: Vec<u32> = match &self.scope.cgroup {
            // A cgroup lists its processes itself: no walk of /proc.
            Some(c) if self.scope.binary.is_none() && !(first && self.scope.follow) => super::scope::cgroup_procs(c),
            _ if self.scope.cgroup.is_some() || self.scope.binary.is_some() || (first && self.scope.follow) => super::scope::all_pids(),
            _ => Vec::new(),
        };
        for pid in candidates {
            if pid == std::process::id() || self.targets.iter().any(|t| t.pid == pid && alive(t)) {
                continue;
            }
            if let Ok(Outgoing { reply: Reply::Kept, .. }) = self.adopt(pid) {
                found.push(pid);
            }
        }
        let mut out: Vec<Outgoing> = chunks(found).into_iter().map(|pids| Outgoing::plain(Reply::Pids { pids })).collect();
        out.push(Outgoing::plain(Reply::Done));
        out
    }

    /// Serves `pid` too, if the session's scope admits it (checked here, from /proc).
    fn adopt(&mut self, pid: u32) -> Result<Outgoing, String> {
        if self.targets.iter().any(|t| t.pid == pid && alive(t)) {
            return Ok(Outgoing::plain(Reply::Kept));
        }
        // The pidfd first: the checks below then cannot be fooled by a reused pid (the
        // process must still run once they are done).
        let t = Target { pid, pidfd: Some(pidfd_open(pid).ok_or_else(|| format!("pid {pid} has exited"))?) };
        let live: Vec<u32> = self.targets.iter().filter(|t| alive(t)).map(|t| t.pid).collect();
        self.scope.admits(pid, |p| live.contains(&p))?;
        if !alive(&t) {
            return Err(format!("pid {pid} has exited"));
        }
        // Processes that exited are forgotten (long sessions see many come and go).
        self.targets.retain(alive);
        if self.targets.len() >= MAX_TARGETS {
            return Err(format!("more than {MAX_TARGETS} live processes in this session"));
        }
        self.targets.push(t);
        Ok(Outgoing::plain(Reply::Kept))
    }

    /// Handles one request: the replies to send, the last one final.
    pub fn handle(&mut self, req: Request) -> Vec<Outgoing> {
        self.handle_with_fd(req, None)
    }

    /// Handles one request and the fd that came with it (only [`Request::Program`] takes
    /// one; any other is closed).
    pub fn handle_with_fd(&mut self, req: Request, fd: Option<OwnedFd>) -> Vec<Outgoing> {
        let result = match req {
            Request::Scan { pid } => self.scan(pid),
            Request::Attach { pid, file, offset, semaphore } => self.attach(pid, file, offset, semaphore).map(|o| vec![o]),
            Request::Read { pid, addr, len } => self.read(pid, addr, len).map(|o| vec![o]),
            Request::Environ { pid, name } => self.environ(pid, &name).map(|o| vec![o]),
            Request::ReadMany { reads } => self.read_many(&reads).map(|o| vec![o]),
            Request::Program { slot } => self.keep_program(slot, fd).map(|o| vec![o]),
            Request::AttachMulti { pid, file, slot, sites } => self.attach_multi(pid, file, slot, &sites).map(|o| vec![o]),
            Request::Adopt { pid } => self.adopt(pid).map(|o| vec![o]),
            Request::Discover => Ok(self.discover()),
        };
        result.unwrap_or_else(|why| vec![Outgoing::refused(why)])
    }

    fn keep_program(&mut self, slot: u32, fd: Option<OwnedFd>) -> Result<Outgoing, String> {
        let fd = fd.ok_or("a program request without its fd")?;
        let place = self.programs.get_mut(slot as usize).ok_or_else(|| format!("no program slot {slot}"))?;
        if place.is_some() {
            return Err(format!("program slot {slot} is set already"));
        }
        *place = Some(fd);
        // With both uprobe_multi programs, links are all the helper creates: they take no
        // capability, and map_files is opened with CAP_CHECKPOINT_RESTORE. CAP_SYS_ADMIN
        // (for the perf-event fallback) goes.
        if self.programs.iter().all(Option::is_some) && self.give_up_sys_admin {
            super::drop_privs::give_up(1 << super::drop_privs::CAP_SYS_ADMIN).map_err(|e| format!("giving up CAP_SYS_ADMIN: {e:#}"))?;
        }
        Ok(Outgoing::plain(Reply::Kept))
    }

    /// One uprobe_multi link over `sites` of a scanned file: every site must be a tprof
    /// probe site of that file not attached yet, or nothing is done.
    fn attach_multi(&mut self, pid: u32, file: u64, slot: u32, sites: &[MultiSiteDesc]) -> Result<Outgoing, String> {
        self.live_target(pid)?;
        let prog = self.programs.get(slot as usize).and_then(Option::as_ref).ok_or_else(|| format!("no program in slot {slot}"))?;
        if sites.is_empty() || sites.len() > MAX_MULTI_SITES {
            return Err(format!("1 to {MAX_MULTI_SITES} sites per link, not {}", sites.len()));
        }
        if self.attached + sites.len() > MAX_ATTACHED {
            return Err(format!("more than {MAX_ATTACHED} probe sites this session"));
        }
        let shared = self.shared();
        let f = usize::try_from(file)
            .ok()
            .and_then(|i| self.files.get_mut(i))
            .filter(|f| shared || f.pid == pid)
            .ok_or_else(|| format!("file {file} is not a file scanned in pid {pid}"))?;
        let mut seen = HashSet::new();
        for s in sites {
            if !f.sites.iter().any(|p| p.file_offset == s.offset && p.semaphore_offset == s.semaphore) {
                return Err(format!("{}+{:#x} (semaphore {:#x}) is not a tprof probe site of that file", f.display, s.offset, s.semaphore));
            }
            if f.attached.contains(&(s.offset, s.semaphore)) || !seen.insert((s.offset, s.semaphore)) {
                return Err(format!("{}+{:#x} is attached already", f.display, s.offset));
            }
        }
        let path = discover::target_file::fd_path(&f.file);
        let multi: Vec<super::multi::MultiSite> =
            sites.iter().map(|s| super::multi::MultiSite { offset: s.offset, ref_ctr_offset: s.semaphore, cookie: s.cookie }).collect();
        let link_pid = if shared { 0 } else { pid };
        let link = super::multi::link(prog.as_fd(), &path, link_pid, &multi).map_err(|e| format!("{}: {e:#}", f.display))?;
        f.attached.extend(seen);
        self.attached += sites.len();
        // As for a perf event: a pid reused meanwhile gets nothing (the link closes here).
        self.live_target(pid)?;
        Ok(Outgoing { reply: Reply::Attached, fd: Some(link) })
    }

    /// The session's target `pid`, still alive; refused otherwise.
    fn live_target(&self, pid: u32) -> Result<&Target, String> {
        let mut with_pid = self.targets.iter().filter(|t| t.pid == pid).peekable();
        if with_pid.peek().is_none() {
            return Err(format!("pid {pid} is not a process of this session"));
        }
        // An exited process and a new one adopted under its reused number: the live one.
        with_pid.find(|t| alive(t)).ok_or_else(|| format!("pid {pid} has exited"))
    }

    fn scan(&mut self, pid: u32) -> Result<Vec<Outgoing>, String> {
        self.live_target(pid)?;
        let scan = discover::mapped::exec_files(pid).map_err(|e| format!("{e:#}"))?;
        let mut out: Vec<Outgoing> = scan.warnings.into_iter().map(|message| Outgoing::plain(Reply::Warning { message })).collect();
        let mut ids = Vec::with_capacity(scan.files.len());
        // Shared links are made once per file, whichever process mapped it first.
        let shared = self.shared();
        for f in scan.files {
            if let Some(id) = self.files.iter().position(|b| (shared || b.pid == pid) && b.dev == f.dev && b.ino == f.ino) {
                out.push(Outgoing::plain(Reply::File { id: id as u64, display: f.display, new: false }));
                ids.push(Some(id as u64));
                continue;
            }
            if self.files.len() >= MAX_FILES {
                out.push(Outgoing::plain(Reply::Warning { message: format!("{}: not scanned: more than {MAX_FILES} files this session", f.display) }));
                ids.push(None);
                continue;
            }
            let (sites, warnings) = tprof_sites(&f.file, &f.display, &self.scope.foreign);
            let id = self.files.len() as u64;
            let fd = f.file.as_fd().try_clone_to_owned().map_err(|e| format!("dup of {}: {e}", f.display))?;
            out.extend(warnings.into_iter().map(|message| Outgoing::plain(Reply::Warning { message })));
            out.push(Outgoing { reply: Reply::File { id, display: f.display.clone(), new: true }, fd: Some(fd) });
            let descs: Vec<SiteDesc> = sites
                .iter()
                .map(|s| SiteDesc {
                    provider: s.provider.clone(),
                    name: s.name.clone(),
                    pc: s.pc,
                    file_offset: s.file_offset,
                    semaphore: s.semaphore,
                    semaphore_offset: s.semaphore_offset,
                    args: s.args_text.clone(),
                })
                .collect();
            for part in chunks(descs) {
                out.push(Outgoing::plain(Reply::Sites { file: id, sites: part }));
            }
            self.files.push(BrokerFile { pid, dev: f.dev, ino: f.ino, display: f.display, file: f.file, sites, attached: HashSet::new() });
            ids.push(Some(id));
        }
        let maps: Vec<MapDesc> = scan
            .mappings
            .into_iter()
            .filter_map(|(m, i)| {
                let file = ids.get(i).copied().flatten()?;
                Some(MapDesc { start: m.start, end: m.end, offset: m.offset, perms: m.perms, inode: m.inode, path: m.path, file })
            })
            .collect();
        for part in chunks(maps) {
            out.push(Outgoing::plain(Reply::Mappings { maps: part }));
        }
        out.push(Outgoing::plain(Reply::Done));
        Ok(out)
    }

    fn attach(&mut self, pid: u32, file: u64, offset: u64, semaphore: u64) -> Result<Outgoing, String> {
        self.live_target(pid)?;
        let pmu_type = self.pmu_type;
        let f = usize::try_from(file)
            .ok()
            .and_then(|i| self.files.get_mut(i))
            .filter(|f| f.pid == pid)
            .ok_or_else(|| format!("file {file} is not a file scanned in pid {pid}"))?;
        if !f.sites.iter().any(|s| s.file_offset == offset && s.semaphore_offset == semaphore) {
            return Err(format!("{}+{offset:#x} (semaphore {semaphore:#x}) is not a tprof probe site of that file", f.display));
        }
        if f.attached.contains(&(offset, semaphore)) {
            return Err(format!("{}+{offset:#x} is attached already", f.display));
        }
        if self.attached >= MAX_ATTACHED {
            return Err(format!("more than {MAX_ATTACHED} probe sites this session"));
        }
        let path = discover::target_file::fd_path(&f.file);
        let perf = super::uprobe::open_event(pmu_type, &path, offset, semaphore, pid).map_err(|e| format!("{}: {e:#}", f.display))?;
        f.attached.insert((offset, semaphore));
        self.attached += 1;
        // The process may have exited while the event was created, and its pid been reused:
        // then the event is dropped (closed) here, never handed out.
        self.live_target(pid)?;
        Ok(Outgoing { reply: Reply::Attached, fd: Some(perf) })
    }

    fn read(&self, pid: u32, addr: u64, len: u32) -> Result<Outgoing, String> {
        self.live_target(pid)?;
        if len == 0 || len > MAX_READ {
            return Err(format!("reads are 1 to {MAX_READ} bytes, not {len}"));
        }
        let buf = read_memory(pid, addr, len).map_err(|e| format!("reading {len} bytes at {addr:#x} of pid {pid}: {e}"))?;
        self.live_target(pid)?;
        Ok(Outgoing::plain(Reply::Bytes { data: buf }))
    }

    /// Up to [`MAX_READS`] reads of session processes: one answer each, None for a read
    /// that failed or of a process not served (or that exited meanwhile: its pid may be
    /// another process's by then).
    fn read_many(&self, reads: &[ReadDesc]) -> Result<Outgoing, String> {
        if reads.len() > MAX_READS {
            return Err(format!("at most {MAX_READS} reads at once, not {}", reads.len()));
        }
        if let Some(r) = reads.iter().find(|r| r.len == 0 || r.len > MAX_READ) {
            return Err(format!("reads are 1 to {MAX_READ} bytes, not {}", r.len));
        }
        let served = |pid: u32| self.live_target(pid).is_ok();
        let mut data: Vec<Option<Vec<u8>>> =
            reads.iter().map(|r| if served(r.pid) { read_memory(r.pid, r.addr, r.len).ok() } else { None }).collect();
        for (r, d) in reads.iter().zip(data.iter_mut()) {
            if d.is_some() && !served(r.pid) {
                *d = None;
            }
        }
        Ok(Outgoing::plain(Reply::Many { data }))
    }
}

impl Broker {
    /// One variable of a served process's environment, bounded (the initial environment, as
    /// `/proc/PID/environ` shows it).
    fn environ(&self, pid: u32, name: &str) -> Result<Outgoing, String> {
        use super::broker_proto::{MAX_ENV_NAME, MAX_ENV_VALUE};
        use std::io::Read as _;
        if name.is_empty() || name.len() > MAX_ENV_NAME || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("{name:?} is not an environment variable name tprof asks for"));
        }
        self.live_target(pid)?;
        let mut env = Vec::new();
        std::fs::File::open(format!("/proc/{pid}/environ"))
            .and_then(|f| f.take(1 << 20).read_to_end(&mut env))
            .map_err(|e| format!("reading the environment of pid {pid}: {e}"))?;
        self.live_target(pid)?;
        let value = env.split(|b| *b == 0).find_map(|kv| kv.strip_prefix(name.as_bytes())?.strip_prefix(b"="));
        match value {
            Some(v) => Ok(Outgoing::plain(Reply::Bytes { data: v[..v.len().min(MAX_ENV_VALUE)].to_vec() })),
            None => Err(format!("{name} is not set in pid {pid}")),
        }
    }
}

/// At most `len` bytes of `pid`'s memory at `addr` (`process_vm_readv`, which honours the
/// target's page protections); at least one.
fn read_memory(pid: u32, addr: u64, len: u32) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: `local` describes `buf`, owned and alive for the call; the remote range is
    // only read, by the kernel, with the target's page protections.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n <= 0 {
        return Err(if n == 0 { std::io::Error::other("nothing read") } else { std::io::Error::last_os_error() });
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Whether the process `t` names still runs (see [`super::pidfd::alive`]).
fn alive(t: &Target) -> bool {
    t.pidfd.as_ref().is_some_and(super::pidfd::alive)
}

/// The tprof probe sites of a file whose text fits the protocol, and warnings for the rest;
/// with them the sites of the foreign probes (`provider:name`) the session maps
/// ([`Scope::foreign`], fixed on the helper's command line).
fn tprof_sites(file: &File, display: &str, foreign: &[String]) -> (Vec<ProbeSite>, Vec<String>) {
    let report = match discover::mapped::read_file_notes(file, display) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), vec![format!("{e:#}")]),
    };
    let mut warnings: Vec<String> = report.skipped.iter().map(|s| format!("{display}: skipped a probe note: {s}")).collect();
    let mut sites = Vec::new();
    for s in report.sites.into_iter().filter(|s| s.provider == TPROF_PROVIDER || foreign.iter().any(|f| *f == s.full_name())) {
        if s.name.len() > MAX_SITE_TEXT || s.args_text.len() > MAX_SITE_TEXT {
            warnings.push(format!("{display}: skipped a tprof probe note with a name or argument spec over {MAX_SITE_TEXT} bytes"));
            continue;
        }
        sites.push(s);
    }
    (sites, warnings)
}

/// Command line of the helper: `__broker --fd N --parent PID [--pid PID:PIDFD]...`: each
/// session pid with the pidfd tprof opened at its first look, inherited (a pid without one
/// is opened by the helper).
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub fd: i32,
    pub parent: u32,
    pub pids: Vec<(u32, Option<i32>)>,
    pub scope: Scope,
}

fn parse_pid(value: &str) -> Result<(u32, Option<i32>), String> {
    let bad = |e: std::num::ParseIntError| format!("--pid {value}: {e}");
    match value.split_once(':') {
        Some((pid, fd)) => Ok((pid.parse().map_err(bad)?, Some(fd.parse().map_err(bad)?))),
        None => Ok((value.parse().map_err(bad)?, None)),
    }
}

pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let (mut fd, mut parent, mut pids, mut scope) = (None, None, Vec::new(), Scope::default());
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--fd" => fd = Some(value.parse::<i32>().map_err(|e| format!("--fd {value}: {e}"))?),
            "--parent" => parent = Some(value.parse::<u32>().map_err(|e| format!("--parent {value}: {e}"))?),
            "--pid" => pids.push(parse_pid(value)?),
            other => {
                if !scope.parse_arg(other, value)? {
                    return Err(format!("unknown argument {other}"));
                }
            }
        }
    }
    Ok(Args { fd: fd.ok_or("--fd is required")?, parent: parent.ok_or("--parent is required")?, pids, scope })
}

/// `tprof __broker ...`: `args` are the arguments after the subcommand. Not for people:
/// tprof starts it (see [`super::broker_client`]).
pub fn main(args: &[String]) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tprof: privileged helper: {e}");
            ExitCode::FAILURE
        }
    }
}

fn die_with_parent(parent: u32) -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(format!("PR_SET_PDEATHSIG: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: getppid has no arguments and cannot fail.
    let ppid = unsafe { libc::getppid() } as u32;
    if ppid != parent {
        return Err(format!("tprof (pid {parent}) is gone"));
    }
    Ok(())
}

/// The pidfd of `pid` tprof left open for us as `fd` (checked to be one, of that pid), or
/// one opened now when tprof passed none. None: the process is gone.
fn inherited_pidfd(pid: u32, fd: Option<i32>) -> Result<Option<OwnedFd>, String> {
    let Some(fd) = fd else { return Ok(pidfd_open(pid)) };
    if fd < 3 {
        return Err(format!("--pid {pid}:{fd}: a standard stream"));
    }
    // SAFETY: an fd tprof left open for us across exec, named on our command line, owned by
    // nobody else in this process (each is named once: checked by its pid below).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    match super::pidfd::pid_of(&owned) {
        Some(p) if p == i64::from(pid) => Ok(Some(owned)),
        // Exited and reaped since tprof's look: held, and refused as gone.
        Some(-1) => Ok(Some(owned)),
        other => Err(format!("--pid {pid}:{fd}: not a pidfd of pid {pid} ({other:?})")),
    }
}

/// The helper's process name (`ps`, `/proc/PID/comm`).
pub const COMM: &std::ffi::CStr = c"tprof-helper";

fn serve(args: &[String]) -> Result<(), String> {
    let args = parse_args(args)?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, ours.
    unsafe { libc::prctl(libc::PR_SET_NAME, COMM.as_ptr() as libc::c_ulong, 0, 0, 0) };
    die_with_parent(args.parent)?;
    if args.fd < 3 {
        return Err(format!("--fd {} is a standard stream", args.fd));
    }
    // SAFETY: the fd tprof passed on our command line: the socketpair end it left open for
    // us across exec, owned by nobody else in this process.
    let chan = Channel::from_fd(unsafe { OwnedFd::from_raw_fd(args.fd) });
    let pmu = super::uprobe::uprobe_pmu_type().map_err(|e| format!("{e:#}"))?;
    let mut pids = Vec::new();
    for (pid, fd) in args.pids {
        pids.push((pid, inherited_pidfd(pid, fd)?));
    }
    let mut broker = Broker::with_pidfds(pids, pmu, args.scope);
    broker.give_up_sys_admin = true;
    let dropped = drop_after_attach(&DropOptions { needs: Needs::broker(), user: None }).map_err(|e| format!("dropping privileges: {e:#}"))?;
    // SAFETY: prctl with integer arguments only. Not dumpable: no core file, and nothing of
    // this uid may ptrace it.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!("PR_SET_DUMPABLE: {}", std::io::Error::last_os_error()));
    }
    // Credential changes may clear the parent-death signal: set it again.
    die_with_parent(args.parent)?;
    let privileges = format!("privileged helper (pid {}): {dropped}", std::process::id());
    chan.send(&Reply::Ready { pid: std::process::id(), privileges }, None).map_err(|e| format!("sending to tprof: {e}"))?;
    loop {
        let replies = match chan.recv::<Request>(None) {
            Ok((req, fd)) => broker.handle_with_fd(req, fd),
            Err(super::broker_proto::RecvError::Closed) => return Ok(()),
            Err(super::broker_proto::RecvError::Bad(why)) => vec![Outgoing::refused(format!("unreadable request: {why}"))],
            Err(e) => return Err(format!("receiving from tprof: {e}")),
        };
        for o in replies {
            match chan.send(&o.reply, o.fd.as_ref().map(|f| f.as_fd())) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return Ok(()),
                Err(e) => return Err(format!("sending to tprof: {e}")),
            }
            // `o.fd` closes here: the helper keeps no perf event, so a dead tprof leaves none.
        }
    }
}

#[cfg(test)]
mod tests;
