//! The wire protocol between tprof and its privileged helper ([`super::broker`]): one JSON
//! message per `SOCK_SEQPACKET` packet over an inherited socketpair, a file descriptor
//! riding along as `SCM_RIGHTS` where a reply carries one (an opened target file, a uprobe
//! perf event).
//!
//! Every request gets replies up to a final one: `Done` after a scan's `File`, `Sites`,
//! `Mappings` and `Warning` messages; `Attached`, `Bytes` or `Refused` otherwise.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Largest target memory read the helper does for one request (tprof's late string reads).
pub const MAX_READ: u32 = 128;
/// Longest environment variable value the helper returns ([`Request::Environ`]), and
/// longest name it looks for.
pub const MAX_ENV_VALUE: usize = 256;
pub const MAX_ENV_NAME: usize = 64;
/// Longest probe name or argument spec the helper passes on (tprof's are short).
pub const MAX_SITE_TEXT: usize = 1024;

/// What tprof asks of the helper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Open the executable files `pid` maps, read their notes; reply with each file (its fd
    /// when it is new), the tprof sites of the new ones, every executable mapping, `Done`.
    Scan { pid: u32 },
    /// Create the uprobe at `offset` (semaphore at `semaphore`, 0: none) of file `file` of
    /// `pid`: only a tprof probe site the helper found in that file, once.
    Attach { pid: u32, file: u64, offset: u64, semaphore: u64 },
    /// Read at most [`MAX_READ`] bytes of `pid`'s memory at `addr`.
    Read { pid: u32, addr: u64, len: u32 },
    /// The value of one environment variable `name` of `pid` (at most [`MAX_ENV_VALUE`]
    /// bytes): `Bytes`, or `Refused` when it is not set (tprof's `OTEL_SERVICE_NAME`).
    Environ { pid: u32, name: String },
    /// Up to [`MAX_READS`] such reads at once (tprof's late strings of one drain, batched):
    /// `Many` with one answer per read, in order (None: unreadable).
    ReadMany { reads: Vec<ReadDesc> },
    /// Keep the USDT program whose fd rides along (loaded for uprobe_multi links) as
    /// program `slot` (0 or 1), for [`Request::AttachMulti`]; once per slot.
    Program { slot: u32 },
    /// Create one uprobe_multi link of program `slot` on sites of file `file` of `pid`:
    /// only tprof probe sites the helper found in that file, each once.
    AttachMulti { pid: u32, file: u64, slot: u32, sites: Vec<MultiSiteDesc> },
    /// Serve `pid` from now on, if it is in the session's scope (a descendant of a session
    /// process with `--follow`, a process of the `--cgroup`, a process mapping the
    /// `--binary`): the helper checks that itself. `Kept` when served.
    Adopt { pid: u32 },
    /// Find the processes in the scope the helper does not serve yet (in the `--cgroup`,
    /// mapping the `--binary`; with `--follow`, the first time, the descendants that
    /// existed before attach), serve them, and say which: `Pids` messages, then `Done`.
    Discover,
}

/// A site of a [`Request::AttachMulti`]: its offset, semaphore offset (0: none) and the
/// cookie the program will see there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiSiteDesc {
    pub offset: u64,
    pub semaphore: u64,
    pub cookie: u64,
}

/// One read of a [`Request::ReadMany`]: at most [`MAX_READ`] bytes of `pid`'s memory at
/// `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReadDesc {
    pub pid: u32,
    pub addr: u64,
    pub len: u32,
}

/// Most reads in one [`Request::ReadMany`] (their answers stay well under [`MAX_MESSAGE`]:
/// a byte is at most 4 characters of JSON).
pub const MAX_READS: usize = 64;

/// Most sites in one [`Request::AttachMulti`] (keeps the message well under
/// [`MAX_MESSAGE`]).
pub const MAX_MULTI_SITES: usize = 256;

/// A tprof probe site as the helper read it from a file's notes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteDesc {
    /// `tprof`, or the provider of a foreign probe the session maps.
    pub provider: String,
    pub name: String,
    pub pc: u64,
    pub file_offset: u64,
    pub semaphore: u64,
    pub semaphore_offset: u64,
    pub args: String,
}

/// An executable mapping of a scanned process and the helper's id of its file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapDesc {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub perms: String,
    pub inode: u64,
    pub path: Option<String>,
    pub file: u64,
}

/// What the helper answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// First message, once the helper has dropped what it does not keep: its pid and what
    /// it kept (one line, for `-v`).
    Ready { pid: u32, privileges: String },
    /// A file of the scanned process; `new`: first seen, its fd rides along.
    File { id: u64, display: String, new: bool },
    /// tprof probe sites of a new file (possibly in several messages).
    Sites { file: u64, sites: Vec<SiteDesc> },
    /// Executable mappings of the scanned process (possibly in several messages).
    Mappings { maps: Vec<MapDesc> },
    /// Something skipped during a scan (a file not opened, a malformed note).
    Warning { message: String },
    /// The end of a scan.
    Done,
    /// The uprobe perf event (or uprobe_multi link) fd rides along.
    Attached,
    /// A [`Request::Program`] was kept.
    Kept,
    /// Target memory.
    Bytes { data: Vec<u8> },
    /// Target memory for each read of a [`Request::ReadMany`], in order (None: unreadable).
    Many { data: Vec<Option<Vec<u8>>> },
    /// Processes now served (possibly in several messages).
    Pids { pids: Vec<u32> },
    /// The request was refused or failed; nothing was done.
    Refused { reason: String },
}

/// Why a message was not received.
#[derive(Debug)]
pub enum RecvError {
    /// The other side closed the socket (it exited).
    Closed,
    Timeout,
    Io(io::Error),
    /// A message that does not parse, is too long, or carries unexpected fds.
    Bad(String),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Closed => write!(f, "the other side closed the connection"),
            RecvError::Timeout => write!(f, "no answer in time"),
            RecvError::Io(e) => write!(f, "{e}"),
            RecvError::Bad(why) => write!(f, "bad message: {why}"),
        }
    }
}

/// One end of the socketpair.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// Control buffer for one `SCM_RIGHTS` message of up to 4 fds, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; 64]);

impl Channel {
    /// A connected `SOCK_SEQPACKET` pair, both ends close-on-exec.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: socketpair writes two fds into the array we own.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned these fds; nothing else owns them.
        Ok(unsafe { (Channel { fd: OwnedFd::from_raw_fd(fds[0]) }, Channel { fd: OwnedFd::from_raw_fd(fds[1]) }) })
    }

    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Sends `msg`, with `fd` attached if given.
    pub fn send<T: Serialize>(&self, msg: &T, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        if bytes.len() > MAX_MESSAGE {
            return Err(io::Error::other(format!("message of {} bytes, more than {MAX_MESSAGE}", bytes.len())));
        }
        let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
        let mut control = Control([0; 64]);
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        if let Some(fd) = fd {
            let raw = fd.as_raw_fd();
            // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
            let (space, len) = unsafe { (libc::CMSG_SPACE(4), libc::CMSG_LEN(4)) };
            hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_controllen = space as usize;
            // SAFETY: msg_control points at `control`, at least `space` bytes and aligned,
            // so CMSG_FIRSTHDR returns a header inside it with room for one int of data.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&hdr);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = len as usize;
                std::ptr::copy_nonoverlapping((&raw as *const libc::c_int).cast::<u8>(), libc::CMSG_DATA(c), 4);
            }
        }
        loop {
            // SAFETY: hdr points at `iov` (the serialized bytes) and `control`, all alive for
            // the call; MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE.
            let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Waits up to `timeout` (None: for ever) for a message; returns it and its fd, if any.
    pub fn recv<T: DeserializeOwned>(&self, timeout: Option<Duration>) -> Result<(T, Option<OwnedFd>), RecvError> {
        if let Some(t) = timeout {
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX);
            loop {
                // SAFETY: one pollfd we own, alive for the call.
                let n = unsafe { libc::poll(&mut pfd, 1, ms) };
                if n > 0 {
                    break;
                }
                if n == 0 {
                    return Err(RecvError::Timeout);
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(RecvError::Io(e));
                }
            }
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = Control([0; 64]);
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.0.as_mut_ptr().cast();
        hdr.msg_controllen = control.0.len();
        let n = loop {
            // SAFETY: hdr points at `buf` and `control`, owned and alive for the call; the
            // kernel writes at most their declared lengths. Received fds are close-on-exec.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(if e.raw_os_error() == Some(libc::ECONNRESET) { RecvError::Closed } else { RecvError::Io(e) });
            }
        };
        // Take ownership of every fd received first, so that none leaks whatever happens.
        let mut fds = Vec::new();
        // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel filled, within the
        // msg_controllen it set; each SCM_RIGHTS payload is an array of ints, fds now ours.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c);
                    let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                    for i in 0..count {
                        let mut raw: libc::c_int = -1;
                        std::ptr::copy_nonoverlapping(data.add(i * 4), (&mut raw as *mut libc::c_int).cast::<u8>(), 4);
                        fds.push(OwnedFd::from_raw_fd(raw));
                    }
                }
                c = libc::CMSG_NXTHDR(&hdr, c);
            }
        }
        if n == 0 && fds.is_empty() {
            return Err(RecvError::Closed);
        }
        if hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(RecvError::Bad(format!("truncated (more than {MAX_MESSAGE} bytes or too many fds)")));
        }
        if fds.len() > 1 {
            return Err(RecvError::Bad(format!("{} fds in one message", fds.len())));
        }
        let msg = serde_json::from_slice(&buf[..n]).map_err(|e| RecvError::Bad(e.to_string()))?;
        Ok((msg, fds.pop()))
    }
}

/// Splits `items` into runs whose JSON stays well under [`MAX_MESSAGE`].
pub fn chunks<T: Serialize>(items: Vec<T>) -> Vec<Vec<T>> {
    const BUDGET: usize = MAX_MESSAGE / 2;
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for item in items {
        let n = serde_json::to_vec(&item).map(|v| v.len()).unwrap_or(BUDGET) + 1;
        if !current.is_empty() && size + n > BUDGET {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += n;
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    #[test]
    fn messages_and_fds_cross() {
        let (a, b) = Channel::pair().unwrap();
        let req = Request::Attach { pid: 7, file: 3, offset: 0x1234, semaphore: 0x88 };
        a.send(&req, None).unwrap();
        let (got, fd): (Request, _) = b.recv(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(got, req);
        assert!(fd.is_none());
        let mut f = std::fs::File::open("/proc/self/cmdline").unwrap();
        use std::os::fd::AsFd;
        b.send(&Reply::Attached, Some(f.as_fd())).unwrap();
        let (got, fd): (Reply, _) = a.recv(None).unwrap();
        assert_eq!(got, Reply::Attached);
        let mut passed = std::fs::File::from(fd.expect("an fd"));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        passed.read_to_end(&mut x).unwrap();
        f.rewind().unwrap();
        f.read_to_end(&mut y).unwrap();
        assert_eq!(x, y, "the same file");
    }

    #[test]
    fn timeouts_closed_peers_and_garbage_are_errors() {
        let (a, b) = Channel::pair().unwrap();
        assert!(matches!(b.recv::<Reply>(Some(Duration::from_millis(10))), Err(RecvError::Timeout)));
        // SAFETY: sends raw bytes that are not JSON, from a buffer alive for the call.
        let n = unsafe { libc::send(a.fd().as_raw_fd(), b"{not json".as_ptr().cast(), 9, 0) };
        assert_eq!(n, 9);
        assert!(matches!(b.recv::<Reply>(None), Err(RecvError::Bad(_))));
        drop(a);
        assert!(matches!(b.recv::<Reply>(Some(Duration::from_secs(5))), Err(RecvError::Closed)));
        assert!(b.send(&Reply::Done, None).is_err(), "EPIPE, not SIGPIPE");
    }

    #[test]
    fn long_lists_are_chunked_under_the_limit() {
        let sites: Vec<SiteDesc> = (0..5000)
            .map(|i| SiteDesc { provider: "tprof".into(), name: "task_begin".into(), pc: i, file_offset: i, semaphore: 0, semaphore_offset: 0, args: "8@%rdi ".repeat(6) })
            .collect();
        let parts = chunks(sites);
        assert!(parts.len() > 1);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 5000);
        let (a, b) = Channel::pair().unwrap();
        for p in &parts {
            a.send(&Reply::Sites { file: 1, sites: p.clone() }, None).unwrap();
            let (got, _): (Reply, _) = b.recv(None).unwrap();
            assert_eq!(got, Reply::Sites { file: 1, sites: p.clone() });
        }
        assert!(a.send(&"x".repeat(MAX_MESSAGE), None).is_err(), "too long to send");
        // The largest answer to a batched read fits one message.
        let many = Reply::Many { data: vec![Some(vec![255u8; MAX_READ as usize]); MAX_READS] };
        a.send(&many, None).unwrap();
        assert_eq!(b.recv::<Reply>(None).unwrap().0, many);
    }
}
