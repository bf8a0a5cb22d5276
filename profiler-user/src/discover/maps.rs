//! Parser for `/proc/PID/maps`: which files a running process has mapped executable, i.e.
//! which binaries and shared libraries may carry USDT notes (see [`super::notes`]).
//!
//! Format (proc(5)): `start-end perms offset dev inode [path]`, addresses and offset in hex,
//! the path running to the end of the line (it may contain spaces). Pseudo paths are in
//! brackets (`[vdso]`, `[stack]`, `[anon:name]`); a file unlinked since it was mapped ends in
//! ` (deleted)`. libbpf's `usdt.c` follows the same approach to find a process's libraries.
//!
//! [`executable_files`] returns plain paths as the process names them: for display only.
//! They are the target's to choose, so tprof never opens them: it opens what is mapped
//! ([`super::mapped`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `rwxp`-style permissions, e.g. `r-xp`.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    pub inode: u64,
    /// The path or pseudo path (`[vdso]`), `None` for an anonymous mapping. Kept verbatim,
    /// including a ` (deleted)` suffix.
    pub path: Option<String>,
}

/// Suffix the kernel appends to the path of an unlinked file.
const DELETED: &str = " (deleted)";

impl Mapping {
    /// The mapping can execute code.
    pub fn is_exec(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }

    /// The backing file was unlinked after being mapped.
    pub fn is_deleted(&self) -> bool {
        self.path.as_deref().is_some_and(|p| p.ends_with(DELETED))
    }

    /// A real file path: absolute and not a `[pseudo]` path.
    pub fn is_file(&self) -> bool {
        self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }
}

/// Parses the text of `/proc/PID/maps`, skipping lines that do not parse.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_line).collect()
}

/// Splits off the next space-separated field; returns it and the rest after the spaces.
fn field(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    let end = s.find(' ').unwrap_or(s.len());
    let (f, rest) = s.split_at(end);
    (!f.is_empty()).then_some((f, rest))
}

fn parse_line(line: &str) -> Option<Mapping> {
    let (range, rest) = field(line)?;
    let (perms, rest) = field(rest)?;
    let (offset, rest) = field(rest)?;
    let (dev, rest) = field(rest)?;
    let (inode, rest) = field(rest)?;
    let (start, end) = range.split_once('-')?;
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    let (start, end) = (hex(start)?, hex(end)?);
    if end < start || perms.len() != 4 || !dev.contains(':') {
        return None;
    }
    // The path follows the padding spaces; only a leading space is ambiguous, and the kernel
    // never writes one for real paths.
    let path = rest.trim_start_matches(' ');
    Some(Mapping {
        start,
        end,
        perms: perms.to_string(),
        offset: hex(offset)?,
        inode: inode.parse().ok()?,
        path: (!path.is_empty()).then(|| path.to_string()),
    })
}

/// Each distinct file with an executable mapping in process `pid`, in order of first
/// appearance. Anonymous and `[pseudo]` mappings are left out. A deleted file is returned as
/// `/proc/PID/exe` when it is the main executable (the kernel keeps it reachable there) and
/// otherwise skipped with a warning.
pub fn executable_files(pid: u32) -> anyhow::Result<Vec<PathBuf>> {
    let maps_path = format!("/proc/{pid}/maps");
    let text =
        std::fs::read_to_string(&maps_path).with_context(|| format!("reading {maps_path}"))?;
    // Unreadable (e.g. a kernel thread, or no permission): no main executable to substitute.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    Ok(executable_paths(&parse_maps(&text), pid, exe.as_deref()))
}

/// The pure part of [`executable_files`]: `exe_link` is the target of `/proc/PID/exe`.
pub fn executable_paths(maps: &[Mapping], pid: u32, exe_link: Option<&Path>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut warned: Vec<&str> = Vec::new();
    for m in maps.iter().filter(|m| m.is_exec() && m.is_file()) {
        let Some(path) = m.path.as_deref() else {
            continue;
        };
        let chosen = if m.is_deleted() {
            if exe_link == Some(Path::new(path)) {
                PathBuf::from(format!("/proc/{pid}/exe"))
            } else {
                if !warned.contains(&path) {
                    log::warn!("pid {pid}: skipping deleted executable mapping {path}");
                    warned.push(path);
                }
                continue;
            }
        } else {
            PathBuf::from(path)
        };
        if !out.contains(&chosen) {
            out.push(chosen);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c4a00000-55d0c4a02000 r--p 00000000 fd:01 1311 /usr/bin/my server
55d0c4a02000-55d0c4a07000 r-xp 00002000 fd:01 1311 /usr/bin/my server
55d0c4a07000-55d0c4a09000 r--p 00007000 fd:01 1311 /usr/bin/my server
55d0c5b1c000-55d0c5b3d000 rw-p 00000000 00:00 0                          [heap]
7f1e2c000000-7f1e2c021000 rw-p 00000000 00:00 0 
7f1e30000000-7f1e30028000 r--p 00000000 fd:01 2048                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e30028000-7f1e301bd000 r-xp 00028000 fd:01 2048                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e301bd000-7f1e30215000 r--p 001bd000 fd:01 2048                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e30300000-7f1e30301000 r-xp 00001000 fd:01 4096                       /tmp/libplugin.so (deleted)
7f1e30400000-7f1e30401000 r-xp 00000000 00:00 0                          [anon:jit code]
7f1e30500000-7f1e30501000 rwxp 00000000 00:00 0 
7f1e30600000-7f1e30601000 r-xp 00001000 fd:01 2049                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e30700000-7f1e30701000 r-xp 00001000 00:05 77                         /memfd:jit (deleted)
7ffd1a3f0000-7ffd1a411000 rw-p 00000000 00:00 0                          [stack]
7ffd1a5e8000-7ffd1a5ec000 r--p 00000000 00:00 0                          [vvar]
7ffd1a5ec000-7ffd1a5ee000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
this line is garbage
zzzz-0000 r-xp 00000000 00:00 0 /bad/start
2000-1000 r-xp 00000000 00:00 0 /bad/range

7f1e30800000-7f1e30801000 r-xp 00001000 fd:01 99
";

    #[test]
    fn parses_sample() {
        let maps = parse_maps(SAMPLE);
        assert_eq!(maps.len(), 18);
        assert_eq!(
            maps[1],
            Mapping {
                start: 0x55d0c4a02000,
                end: 0x55d0c4a07000,
                perms: "r-xp".into(),
                offset: 0x2000,
                inode: 1311,
                path: Some("/usr/bin/my server".into()),
            }
        );
        assert!(maps[1].is_exec() && maps[1].is_file() && !maps[1].is_deleted());
        assert_eq!(maps[3].path.as_deref(), Some("[heap]"));
        assert_eq!(maps[4].path, None, "anonymous with trailing space");
        assert!(maps[8].is_deleted() && maps[8].is_exec());
        assert_eq!(maps[8].path.as_deref(), Some("/tmp/libplugin.so (deleted)"));
        assert!(!maps[15].is_file() && maps[15].is_exec());
        assert_eq!(maps[16].start, 0xffffffffff600000);
        assert_eq!(maps[17].path, None);
    }

    #[test]
    fn executable_paths_filters_and_dedups() {
        let maps = parse_maps(SAMPLE);
        let got = executable_paths(&maps, 42, Some(Path::new("/usr/bin/my server")));
        let want: Vec<PathBuf> = ["/usr/bin/my server", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn deleted_main_executable_becomes_proc_exe() {
        let text = "\
1000-2000 r-xp 00000000 fd:01 7 /opt/app (deleted)
3000-4000 r-xp 00000000 fd:01 8 /opt/lib.so (deleted)
5000-6000 r-xp 00001000 fd:01 7 /opt/app (deleted)
";
        let maps = parse_maps(text);
        let got = executable_paths(&maps, 7, Some(Path::new("/opt/app (deleted)")));
        assert_eq!(got, vec![PathBuf::from("/proc/7/exe")]);
        assert!(executable_paths(&maps, 7, None).is_empty());
    }

    #[test]
    fn own_process() {
        let files = executable_files(std::process::id()).unwrap();
        let me = std::env::current_exe().unwrap();
        assert!(files.contains(&me), "{me:?} not in {files:?}");
        assert!(files.iter().all(|p| p.is_absolute()));
        assert!(executable_files(u32::MAX).is_err());
    }

    #[test]
    fn never_panics() {
        for line in [
            "",
            " ",
            "-",
            "1-",
            "-1",
            "1-2 r",
            "1-2 r-xp 0 0:0",
            "1-2 r-xp 0 0:0 x /p",
            "é-é é é é é",
        ] {
            let _ = parse_maps(line);
        }
    }
}
