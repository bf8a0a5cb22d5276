//! Opening the files a traced process maps without following a path it controls.
//!
//! The paths in `/proc/PID/maps` are the target's to choose: it names its files, owns the
//! directories they are in, may rename them or swap a symlink in between tprof reading the
//! maps and opening the path, and in its own mount namespace may mount anything anywhere
//! (a path starting with `/proc/` included). tprof runs as root: opening such a path as is
//! can read any host file, block forever on a FIFO, grow without bound on `/dev/zero`, or
//! open a device whose `open` has side effects.
//!
//! So tprof opens target files by what is mapped, never by name:
//!
//! * [`open_mapped`] opens `/proc/PID/map_files/START-END`: the kernel's link to the very
//!   file of that mapping (deleted, in another mount namespace or chroot, whatever its
//!   path says), then checks it is a regular file with the mapping's inode (the range may
//!   have been unmapped and reused since the maps were read). Needs
//!   `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`, plus ptrace access to the target.
//! * [`open_in_root`] is the fallback without those: it resolves the path with `openat2`
//!   and `RESOLVE_IN_ROOT` under the target's root directory (so symlinks, even absolute
//!   ones, cannot leave it), refuses magic links and a symlink as the last component, opens
//!   with `O_NONBLOCK` (a FIFO cannot block) and `O_NOCTTY`, and checks the result like
//!   [`open_mapped`].
//! * [`fd_path`] gives `/proc/self/fd/N` for an opened file: the path to hand to code that
//!   only takes paths (`perf_event_open`'s uprobe path, blazesym's `Elf` source). It names
//!   the checked file itself as long as the `File` is open.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::maps::Mapping;

/// `struct open_how` of `openat2(2)` (libc's is `#[non_exhaustive]`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// The file behind `mapping` of process `pid`, through `/proc/PID/map_files`: a regular
/// file with the mapping's inode, or an error saying why not.
pub fn open_mapped(pid: u32, mapping: &Mapping) -> Result<File> {
    if !mapping.is_file() {
        bail!("mapping {:#x}-{:#x} of pid {pid} is not a file ({:?})", mapping.start, mapping.end, mapping.path);
    }
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", mapping.start, mapping.end);
    let file = open_nonblocking(Path::new(&link), true).with_context(|| format!("opening {link}"))?;
    check_file(&file, mapping.inode).with_context(|| format!("{link} ({})", mapping.path.as_deref().unwrap_or("")))?;
    Ok(file)
}

/// `path` as process `pid` sees it, resolved inside its root directory
/// (`/proc/PID/root`) and checked to be a regular file with inode `inode`.
pub fn open_in_root(pid: u32, path: &Path, inode: u64) -> Result<File> {
    let root_path = format!("/proc/{pid}/root");
    let root = open_dir(Path::new(&root_path)).with_context(|| format!("opening {root_path}"))?;
    let file = open_beneath(&root, path).with_context(|| format!("opening {} in the root of pid {pid}", path.display()))?;
    check_file(&file, inode).with_context(|| format!("{} of pid {pid}", path.display()))?;
    Ok(file)
}

/// `/proc/self/fd/N` of an open file: a path that names exactly this file while it stays
/// open (the kernel follows it to the open file, whatever its name now).
pub fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// A regular file with inode `inode`. Its size does not matter: nothing reads a target
/// file whole (notes are read with bounded reads, the symbolizer maps it).
fn check_file(file: &File, inode: u64) -> Result<()> {
    let ino = check_regular(file)?;
    if ino != inode {
        bail!("refused: inode {ino} is not the mapped inode {inode} (the file or the mapping changed)");
    }
    Ok(())
}

/// A regular file (of any size): returns its inode.
fn check_regular(file: &File) -> Result<u64> {
    let meta = file.metadata().context("fstat")?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        bail!("refused: {what}, not a regular file");
    }
    Ok(meta.ino())
}

/// A file the user named (`--binary`, `tprof list --binary`), opened with the checks of the
/// target's files: without blocking (a FIFO) or taking a terminal (a tty), and only if it is
/// a regular file (not `/dev/zero`). Its notes are then read in bounded pieces.
pub fn open_named_file(path: &Path) -> std::io::Result<std::fs::File> {
    let file = open_nonblocking(path, true).map_err(|e| match e.downcast::<std::io::Error>() {
        Ok(io) => io,
        Err(e) => std::io::Error::other(format!("{e:#}")),
    })?;
    check_regular(&file).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e:#}")))?;
    Ok(file)
}

fn cstr(path: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes()).with_context(|| format!("{} has a NUL byte", path.display()))
}

/// `open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)`, then back to blocking mode.
/// `follow`: false adds `O_NOFOLLOW`.
fn open_nonblocking(path: &Path, follow: bool) -> Result<File> {
    let c = cstr(path)?;
    let mut flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: a NUL-terminated path we own, alive for the call; flags are plain integers.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    clear_nonblock(&file)?;
    Ok(file)
}

fn clear_nonblock(file: &File) -> Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl F_GETFL/F_SETFL on an fd we own, integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error()).context("fcntl(O_NONBLOCK)");
    }
    Ok(())
}

/// A directory as an `O_PATH` fd, following the (magic) link that names it.
fn open_dir(path: &Path) -> Result<File> {
    let c = cstr(path)?;
    // SAFETY: a NUL-terminated path we own, alive for the call; flags are plain integers.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `path` (absolute or not) opened beneath the directory `root` as if `root` were `/`:
/// `..` and absolute symlinks stay inside it; magic links (`/proc/*/fd/*`) and a symlink
/// as the last component are refused.
fn open_beneath(root: &File, path: &Path) -> Result<File> {
    let c = cstr(path)?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a directory fd we own, a NUL-terminated path and an open_how of
    // the size passed, both alive for the call; the kernel only reads them.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, root.as_raw_fd(), c.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ELOOP) {
            bail!("refused: a symlink or magic link ({e})");
        }
        return Err(e.into());
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd as libc::c_int) };
    clear_nonblock(&file)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_named_file_must_be_regular() {
        let e = open_named_file(Path::new("/dev/zero")).expect_err("a device is refused");
        assert!(e.to_string().contains("character device"), "{e}");
        let d = tmp("named");
        let fifo = d.join("fifo");
        let c = cstr(&fifo).unwrap();
        // SAFETY: a NUL-terminated path we own, alive for the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would hang here.
        let e = open_named_file(&fifo).expect_err("a FIFO is refused");
        assert!(e.to_string().contains("FIFO"), "{e}");
        std::fs::write(d.join("f"), b"abc").unwrap();
        let mut text = String::new();
        open_named_file(&d.join("f")).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "abc");
        assert_eq!(open_named_file(&d.join("none")).unwrap_err().kind(), std::io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tprof-target-file-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// This test binary's own executable mapping.
    fn own_exec_mapping() -> Mapping {
        let me = std::env::current_exe().unwrap();
        let maps = super::super::maps::parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
        maps.into_iter().find(|m| m.is_exec() && m.path.as_deref() == me.to_str()).expect("own r-x mapping")
    }

    /// map_files needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN, even for one's own process.
    fn may_open_map_files() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(|h| u64::from_str_radix(h.trim(), 16).unwrap()).unwrap();
        eff & ((1 << 21) | (1 << 40)) != 0
    }

    #[test]
    fn opens_own_mapping_by_inode() {
        let m = own_exec_mapping();
        if !may_open_map_files() {
            let e = open_mapped(std::process::id(), &m).unwrap_err();
            assert!(format!("{e:#}").contains("map_files"), "{e:#}");
            eprintln!("skipped: no CAP_CHECKPOINT_RESTORE / CAP_SYS_ADMIN");
            return;
        }
        let f = open_mapped(std::process::id(), &m).unwrap();
        assert_eq!(f.metadata().unwrap().ino(), m.inode);
        let mut head = [0u8; 4];
        File::open(fd_path(&f)).unwrap().read_exact(&mut head).unwrap();
        assert_eq!(&head, b"\x7fELF", "fd_path names the same file");

        let wrong = Mapping { inode: m.inode + 1, ..m.clone() };
        let e = open_mapped(std::process::id(), &wrong).unwrap_err();
        assert!(format!("{e:#}").contains("not the mapped inode"), "{e:#}");
        let pseudo = Mapping { path: Some("[vdso]".into()), ..m.clone() };
        assert!(format!("{:#}", open_mapped(std::process::id(), &pseudo).unwrap_err()).contains("not a file"));
        let gone = Mapping { start: 0x1000, end: 0x2000, ..m };
        assert!(open_mapped(std::process::id(), &gone).is_err(), "no such mapping");
    }

    #[test]
    fn open_in_root_of_own_process() {
        let me = std::env::current_exe().unwrap();
        let ino = std::fs::metadata(&me).unwrap().ino();
        let f = open_in_root(std::process::id(), &me, ino).unwrap();
        assert_eq!(f.metadata().unwrap().ino(), ino);
        let e = open_in_root(std::process::id(), &me, ino + 1).unwrap_err();
        assert!(format!("{e:#}").contains("not the mapped inode"), "{e:#}");
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let d = tmp("root");
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("etc/lib.so"), b"inside").unwrap();
        // An absolute symlink: for a plain open it would leave `d` for the host's /etc.
        std::os::unix::fs::symlink("/etc", d.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/lib.so", d.join("etc/up.so")).unwrap();
        let root = open_dir(&d).unwrap();
        let mut s = String::new();
        open_beneath(&root, Path::new("/lib/lib.so")).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "inside", "/lib -> /etc resolved inside the root");
        // The last component a symlink: refused even though it would stay inside.
        let e = open_beneath(&root, Path::new("/etc/up.so")).unwrap_err();
        assert!(format!("{e:#}").contains("symlink"), "{e:#}");
        s.clear();
        open_beneath(&root, Path::new("/lib/../../../../etc/lib.so")).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "inside", ".. stops at the root");
        // Magic links are refused.
        let e = open_beneath(&open_dir(Path::new("/")).unwrap(), Path::new("/proc/self/exe")).unwrap_err();
        assert!(format!("{e:#}").contains("symlink or magic link"), "{e:#}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let d = tmp("fifo");
        let fifo = d.join("lib.so");
        let c = cstr(&fifo).unwrap();
        // SAFETY: a NUL-terminated path we own and a mode.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let ino = std::fs::metadata(&fifo).unwrap().ino();
        let root = open_dir(&d).unwrap();
        // Without O_NONBLOCK this open would wait for a writer forever.
        let f = open_beneath(&root, Path::new("/lib.so")).unwrap();
        let e = check_file(&f, ino).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let null = open_nonblocking(Path::new("/dev/null"), false).unwrap();
        let e = check_file(&null, null.metadata().unwrap().ino()).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let dir = File::open(&d).unwrap();
        assert!(check_file(&dir, dir.metadata().unwrap().ino()).unwrap_err().to_string().contains("directory"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
