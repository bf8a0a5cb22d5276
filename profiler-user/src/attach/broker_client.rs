//! tprof's side of the privileged helper ([`super::broker`]): starting it, and its requests.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::broker::SUBCOMMAND;
use super::scope::Scope;
use super::broker_proto::{Channel, MapDesc, MultiSiteDesc, ReadDesc, RecvError, Reply, Request, SiteDesc, MAX_READ, MAX_READS};

/// Longest wait for the helper to start, and to answer a scan (it opens every mapped file
/// and reads its headers and notes).
const SLOW: Duration = Duration::from_secs(60);
/// Longest wait for a uprobe or a memory read.
const QUICK: Duration = Duration::from_secs(10);

/// Why a request failed.
#[derive(Debug)]
pub enum BrokerError {
    /// The helper refused or could not do it; it is still there.
    Refused(String),
    /// The helper is gone (exited, killed, or out of step): no further request can work.
    Gone(String),
}

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerError::Refused(why) => write!(f, "{why}"),
            BrokerError::Gone(why) => write!(f, "the privileged helper is gone ({why})"),
        }
    }
}

impl std::error::Error for BrokerError {}

/// A file of a scanned process.
#[derive(Debug)]
pub struct ScannedFile {
    pub id: u64,
    pub display: String,
    /// Seen for the first time: `file` is set and `sites` are its tprof probe sites.
    pub new: bool,
    pub file: Option<Arc<File>>,
    pub sites: Vec<SiteDesc>,
}

/// What a scan returned.
#[derive(Debug, Default)]
pub struct ScanReply {
    pub files: Vec<ScannedFile>,
    pub mappings: Vec<MapDesc>,
    pub warnings: Vec<String>,
}

/// The running helper. Dropping it closes the socket, on which the helper exits.
pub struct BrokerClient {
    chan: Option<Channel>,
    child: Child,
    /// What the helper kept, one line.
    pub privileges: String,
}

impl BrokerClient {
    /// Starts the helper for `pids`, each held by the pidfd tprof opened at its first look
    /// (the helper inherits them: a pid reused since is never taken for the process), by
    /// re-executing this binary, and waits until it has dropped what it does not keep. Call
    /// while tprof is still privileged: the helper inherits its privileges.
    pub fn spawn(pids: &[(u32, BorrowedFd<'_>)], scope: &Scope) -> Result<BrokerClient> {
        let (ours, theirs) = Channel::pair().context("creating the socketpair for tprof's privileged helper")?;
        let fd = theirs.fd().as_raw_fd();
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg(SUBCOMMAND).args(["--fd", &fd.to_string(), "--parent", &std::process::id().to_string()]);
        let mut inherited = vec![fd];
        for (p, pidfd) in pids {
            cmd.args(["--pid", &format!("{p}:{}", pidfd.as_raw_fd())]);
            inherited.push(pidfd.as_raw_fd());
        }
        cmd.args(scope.to_args());
        cmd.env_clear().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe calls (fcntl, prctl) on integers, reading a vector allocated
        // before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // The helper's end and the pidfds survive the exec; every other fd is
                // close-on-exec.
                for &keep in &inherited {
                    if libc::fcntl(keep, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting tprof's privileged helper (/proc/self/exe)")?;
        drop(theirs);
        let mut client = BrokerClient { chan: Some(ours), child, privileges: String::new() };
        match client.recv(SLOW) {
            Ok((Reply::Ready { privileges, .. }, _)) => client.privileges = privileges,
            Ok((other, _)) => bail!("tprof's privileged helper said {other:?} instead of starting"),
            Err(e) => bail!("tprof's privileged helper did not start: {e} (its error, if any, is above)"),
        }
        Ok(client)
    }

    /// The helper's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the helper can still be asked anything.
    pub fn is_alive(&self) -> bool {
        self.chan.is_some()
    }

    fn chan(&self) -> Result<&Channel, BrokerError> {
        self.chan.as_ref().ok_or_else(|| BrokerError::Gone("it stopped answering earlier".into()))
    }

    /// Marks the helper gone (closing our end, on which it exits) and says why.
    fn gone(&mut self, why: String) -> BrokerError {
        self.chan = None;
        let status = self.child.try_wait().ok().flatten().map(|s| format!(", {s}")).unwrap_or_default();
        BrokerError::Gone(format!("pid {}: {why}{status}", self.child.id()))
    }

    fn send(&mut self, req: &Request) -> Result<(), BrokerError> {
        let r = self.chan()?.send(req, None);
        r.map_err(|e| self.gone(format!("sending a request: {e}")))
    }

    fn recv(&mut self, timeout: Duration) -> Result<(Reply, Option<OwnedFd>), BrokerError> {
        let r = self.chan()?.recv::<Reply>(Some(timeout));
        r.map_err(|e| match e {
            RecvError::Closed => self.gone("it exited".into()),
            other => self.gone(other.to_string()),
        })
    }

    /// Scans `pid` (see [`Request::Scan`]).
    pub fn scan(&mut self, pid: u32) -> Result<ScanReply, BrokerError> {
        self.send(&Request::Scan { pid })?;
        let deadline = Instant::now() + SLOW;
        let mut out = ScanReply::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left)? {
                (Reply::Done, None) => return Ok(out),
                (Reply::Refused { reason }, None) => return Err(BrokerError::Refused(reason)),
                (Reply::Warning { message }, None) => out.warnings.push(message),
                (Reply::File { id, display, new: true }, Some(fd)) => {
                    out.files.push(ScannedFile { id, display, new: true, file: Some(Arc::new(File::from(fd))), sites: Vec::new() })
                }
                (Reply::File { id, display, new: false }, None) => out.files.push(ScannedFile { id, display, new: false, file: None, sites: Vec::new() }),
                (Reply::Sites { file, sites }, None) => match out.files.iter_mut().find(|f| f.id == file && f.new) {
                    Some(f) => f.sites.extend(sites),
                    None => return Err(self.gone(format!("sites of file {file}, which this scan did not pass"))),
                },
                (Reply::Mappings { maps }, None) => out.mappings.extend(maps),
                (other, fd) => return Err(self.gone(format!("unexpected answer to a scan: {other:?} (fd: {})", fd.is_some()))),
            }
        }
    }

    /// The uprobe perf event of a probe site (see [`Request::Attach`]).
    pub fn attach(&mut self, pid: u32, file: u64, offset: u64, semaphore: u64) -> Result<OwnedFd, BrokerError> {
        self.send(&Request::Attach { pid, file, offset, semaphore })?;
        match self.recv(QUICK)? {
            (Reply::Attached, Some(fd)) => Ok(fd),
            (Reply::Refused { reason }, None) => Err(BrokerError::Refused(reason)),
            (other, fd) => Err(self.gone(format!("unexpected answer to an attach: {other:?} (fd: {})", fd.is_some()))),
        }
    }

    /// Asks the helper to serve `pid` too (see [`Request::Adopt`]).
    pub fn adopt(&mut self, pid: u32) -> Result<(), BrokerError> {
        self.send(&Request::Adopt { pid })?;
        match self.recv(QUICK)? {
            (Reply::Kept, None) => Ok(()),
            (Reply::Refused { reason }, None) => Err(BrokerError::Refused(reason)),
            (other, fd) => Err(self.gone(format!("unexpected answer to an adopt: {other:?} (fd: {})", fd.is_some()))),
        }
    }

    /// The processes of the scope the helper found and serves from now on (see
    /// [`Request::Discover`]).
    pub fn discover(&mut self) -> Result<Vec<u32>, BrokerError> {
        self.send(&Request::Discover)?;
        let deadline = Instant::now() + SLOW;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left)? {
                (Reply::Done, None) => return Ok(out),
                (Reply::Pids { pids }, None) => out.extend(pids),
                (Reply::Refused { reason }, None) => return Err(BrokerError::Refused(reason)),
                (other, fd) => return Err(self.gone(format!("unexpected answer to a discover: {other:?} (fd: {})", fd.is_some()))),
            }
        }
    }

    /// Hands the helper a USDT program loaded for uprobe_multi links (see [`Request::Program`]).
    pub fn program(&mut self, slot: u32, prog: BorrowedFd<'_>) -> Result<(), BrokerError> {
        let r = self.chan()?.send(&Request::Program { slot }, Some(prog));
        r.map_err(|e| self.gone(format!("sending a request: {e}")))?;
        match self.recv(QUICK)? {
            (Reply::Kept, None) => Ok(()),
            (Reply::Refused { reason }, None) => Err(BrokerError::Refused(reason)),
            (other, fd) => Err(self.gone(format!("unexpected answer to a program: {other:?} (fd: {})", fd.is_some()))),
        }
    }

    /// A uprobe_multi link of program `slot` over `sites` of a scanned file (see
    /// [`Request::AttachMulti`]).
    pub fn attach_multi(&mut self, pid: u32, file: u64, slot: u32, sites: Vec<MultiSiteDesc>) -> Result<OwnedFd, BrokerError> {
        self.send(&Request::AttachMulti { pid, file, slot, sites })?;
        match self.recv(SLOW)? {
            (Reply::Attached, Some(fd)) => Ok(fd),
            (Reply::Refused { reason }, None) => Err(BrokerError::Refused(reason)),
            (other, fd) => Err(self.gone(format!("unexpected answer to an attach: {other:?} (fd: {})", fd.is_some()))),
        }
    }

    /// Up to [`MAX_READ`] bytes of `pid`'s memory at `addr` (see [`Request::Read`]).
    pub fn read(&mut self, pid: u32, addr: u64, len: usize) -> Result<Vec<u8>, BrokerError> {
        let len = u32::try_from(len).ok().filter(|l| *l <= MAX_READ).ok_or_else(|| BrokerError::Refused(format!("reads are at most {MAX_READ} bytes")))?;
        self.send(&Request::Read { pid, addr, len })?;
        match self.recv(QUICK)? {
            (Reply::Bytes { data }, None) if data.len() <= len as usize => Ok(data),
            (Reply::Refused { reason }, None) => Err(BrokerError::Refused(reason)),
            (other, fd) => Err(self.gone(format!("unexpected answer to a read: {other:?} (fd: {})", fd.is_some()))),
        }
    }
}

impl BrokerClient {
    /// The value of environment variable `name` of `pid`, None when it is not set (see
    /// [`Request::Environ`]).
    pub fn environ(&mut self, pid: u32, name: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        self.send(&Request::Environ { pid, name: name.to_string() })?;
        match self.recv(QUICK)? {
            (Reply::Bytes { data }, None) if data.len() <= super::broker_proto::MAX_ENV_VALUE => Ok(Some(data)),
            (Reply::Refused { .. }, None) => Ok(None),
            (other, fd) => Err(self.gone(format!("unexpected answer to an environment request: {other:?} (fd: {})", fd.is_some()))),
        }
    }

    /// Many reads of target memory (see [`Request::ReadMany`]), [`MAX_READS`] per request:
    /// one answer per read, in order (None: unreadable).
    pub fn read_many(&mut self, reads: &[ReadDesc]) -> Result<Vec<Option<Vec<u8>>>, BrokerError> {
        let mut out = Vec::with_capacity(reads.len());
        for part in reads.chunks(MAX_READS) {
            self.send(&Request::ReadMany { reads: part.to_vec() })?;
            match self.recv(QUICK)? {
                (Reply::Many { data }, None)
                    if data.len() == part.len() && data.iter().zip(part).all(|(d, r)| d.as_ref().is_none_or(|d| d.len() <= r.len as usize)) =>
                {
                    out.extend(data)
                }
                (Reply::Refused { reason }, None) => return Err(BrokerError::Refused(reason)),
                (other, fd) => return Err(self.gone(format!("unexpected answer to a batched read: {other:?} (fd: {})", fd.is_some()))),
            }
        }
        Ok(out)
    }
}

impl Drop for BrokerClient {
    fn drop(&mut self) {
        // The helper exits on EOF. Reap it, giving it a moment; if it is stuck, it is
        // killed when this thread exits (PR_SET_PDEATHSIG): tprof, no longer privileged,
        // may not signal it.
        self.chan = None;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
