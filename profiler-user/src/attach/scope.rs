//! Which processes a session traces beyond the pids it started on: their descendants
//! (`--pid` follows forks unless `--no-follow`), the processes of a cgroup v2 directory
//! (`--cgroup`), the processes that map a binary (`--binary`). The privileged helper holds
//! the scope it was started with and checks every process tprof asks it to serve against
//! it, from `/proc` itself; tprof cannot widen it.

use std::path::Path;

/// A session's scope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Children forked by a traced process are traced too.
    pub follow: bool,
    /// A cgroup v2 directory, as a path from the root of the v2 hierarchy (`/a/b`, as
    /// `/proc/PID/cgroup` names it): every process in it or below it.
    pub cgroup: Option<String>,
    /// `(st_dev, st_ino)` of a file: every process that maps it.
    pub binary: Option<(u64, u64)>,
    /// Foreign probes (`provider:name`) a mapping names: the helper attaches their sites
    /// too (`usdt-probes/MAPPING.md`), and no other foreign probe.
    pub foreign: Vec<String>,
}

impl Scope {
    /// Whether probe links serve more than the given pids: then they are not tied to a pid
    /// (the kernel programs drop hits from processes outside the session).
    pub fn wide(&self) -> bool {
        self.follow || self.cgroup.is_some() || self.binary.is_some()
    }

    /// The helper's command-line arguments for this scope.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.follow {
            a.extend(["--follow".to_string(), "1".to_string()]);
        }
        if let Some(c) = &self.cgroup {
            a.extend(["--cgroup".to_string(), c.clone()]);
        }
        if let Some((dev, ino)) = self.binary {
            a.extend(["--binary".to_string(), format!("{dev}:{ino}")]);
        }
        for f in &self.foreign {
            a.extend(["--foreign".to_string(), f.clone()]);
        }
        a
    }

    /// Takes one of [`Scope::to_args`]' flags; false for a flag that is not the scope's.
    pub fn parse_arg(&mut self, flag: &str, value: &str) -> Result<bool, String> {
        match flag {
            "--follow" => self.follow = value == "1",
            "--cgroup" => {
                if !value.starts_with('/') || value.split('/').any(|c| c == "..") {
                    return Err(format!("--cgroup {value}: not a path from the cgroup root"));
                }
                self.cgroup = Some(value.to_string());
            }
            "--binary" => {
                let (d, i) = value.split_once(':').ok_or_else(|| format!("--binary {value}: expected DEV:INO"))?;
                let num = |s: &str| s.parse::<u64>().map_err(|e| format!("--binary {value}: {e}"));
                self.binary = Some((num(d)?, num(i)?));
            }
            "--foreign" => {
                let ok = value.split_once(':').is_some_and(|(p, n)| !p.is_empty() && !n.is_empty() && !value.contains(char::is_whitespace));
                if !ok {
                    return Err(format!("--foreign {value}: expected PROVIDER:PROBE"));
                }
                self.foreign.push(value.to_string());
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Why `pid` is in the scope (`Err`: why not), `session` saying which pids the session
    /// serves already. Read from `/proc` now: the caller holds a pidfd of `pid` taken
    /// before, and checks afterwards that the process still runs, so a pid reused
    /// meanwhile is never taken for the one checked.
    pub fn admits(&self, pid: u32, session: impl Fn(u32) -> bool) -> Result<&'static str, String> {
        if self.follow && ancestors(pid).into_iter().any(&session) {
            return Ok("descendant of a traced process");
        }
        if let Some(c) = &self.cgroup {
            if cgroup_of(pid).is_some_and(|own| under(&own, c)) {
                return Ok("in the traced cgroup");
            }
        }
        if let Some((dev, ino)) = self.binary {
            if maps_file(pid, dev, ino) {
                return Ok("maps the traced binary");
            }
        }
        Err(format!("pid {pid} is not in this session's scope (not a descendant of a traced process, nor in its cgroup, nor mapping its binary)"))
    }
}

/// Every process's pid, from `/proc`.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// The processes of cgroup `rel` (a path from the v2 root) and of the cgroups below it.
pub fn cgroup_procs(rel: &str) -> Vec<u32> {
    let Some(mount) = cgroup2_mount() else { return Vec::new() };
    let mut out = Vec::new();
    let mut dirs = vec![mount.join(rel.trim_start_matches('/'))];
    while let Some(dir) = dirs.pop() {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(&dir) {
            dirs.extend(rd.filter_map(|e| e.ok()).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
    out
}

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo` (on a hybrid host
/// not `/sys/fs/cgroup` but, e.g., `/sys/fs/cgroup/unified`). Only a mount of the
/// hierarchy's root: a mount of a sub-tree would shift every path.
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_cgroup2_mount(&text)
}

/// The cgroup2 mount point of a mountinfo text.
pub fn parse_cgroup2_mount(text: &str) -> Option<std::path::PathBuf> {
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let f: Vec<&str> = pre.split_whitespace().collect();
        let point = f.get(4)?;
        (fstype == "cgroup2" && f.get(3) == Some(&"/")).then(|| std::path::PathBuf::from(unescape_mount(point)))
    })
}

/// Mountinfo escapes spaces and such as `\040`.
fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// `pid`'s parent, from `/proc/PID/stat` (None: gone, or pid 0).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the last ')': state, ppid, ... (comm may contain anything).
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok().filter(|p| *p != 0)
}

/// `pid`'s ancestors, nearest first (at most 64).
pub fn ancestors(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur = pid;
    while out.len() < 64 {
        match parent_of(cur) {
            Some(p) if p != cur => {
                out.push(p);
                cur = p;
            }
            _ => break,
        }
    }
    out
}

/// `pid`'s cgroup v2 path (`0::/a/b` in `/proc/PID/cgroup`).
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_cgroup_v2(&text)
}

/// The v2 line of a `/proc/PID/cgroup` text.
pub fn parse_cgroup_v2(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("0::")).map(|p| p.trim_end().to_string())
}

/// Whether cgroup path `own` is `dir` or below it.
pub fn under(own: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    dir.is_empty() || own == dir || own.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `pid` maps the file `(dev, ino)` (its `/proc/PID/maps`).
pub fn maps_file(pid: u32, dev: u64, ino: u64) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return false };
    text.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (Some(_), Some(_), Some(_), Some(d), Some(i)) = (f.next(), f.next(), f.next(), f.next(), f.next()) else { return false };
        i.parse::<u64>().ok() == Some(ino) && maps_dev(d) == Some(dev)
    })
}

/// A `/proc/PID/maps` device (`fd:01`, hex major:minor) as `st_dev`.
fn maps_dev(d: &str) -> Option<u64> {
    let (ma, mi) = d.split_once(':')?;
    let (ma, mi) = (u32::from_str_radix(ma, 16).ok()?, u32::from_str_radix(mi, 16).ok()?);
    Some(libc::makedev(ma, mi))
}

/// `(st_dev, st_ino)` of a file.
pub fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let s = Scope { follow: true, cgroup: Some("/a/b".into()), binary: Some((2049, 77)), foreign: vec!["postgresql:query__start".into()] };
        let args = s.to_args();
        let mut back = Scope::default();
        for pair in args.chunks(2) {
            assert!(back.parse_arg(&pair[0], &pair[1]).unwrap());
        }
        assert_eq!(back, s);
        assert!(!back.parse_arg("--pid", "1").unwrap(), "not a scope flag");
        assert!(back.parse_arg("--cgroup", "a/b").is_err(), "relative");
        assert!(back.parse_arg("--cgroup", "/a/../b").is_err(), "climbs");
        assert!(back.parse_arg("--binary", "1").is_err());
    }

    #[test]
    fn the_cgroup2_mount_of_a_hybrid_host() {
        let info = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_cgroup2_mount(info), Some("/sys/fs/cgroup/unified".into()));
        let sub = "41 31 0:38 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_cgroup2_mount(sub), None, "a mount of a sub-tree is not the root");
        let spaced = "41 31 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_cgroup2_mount(spaced), Some("/mnt/cg two".into()));
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(parse_cgroup_v2("12:pids:/x\n0::/system.slice/pg.service\n").as_deref(), Some("/system.slice/pg.service"));
        assert_eq!(parse_cgroup_v2("1:name=systemd:/x\n"), None);
        assert!(under("/a/b", "/a"));
        assert!(under("/a", "/a/"));
        assert!(!under("/ab", "/a"), "a sibling with a longer name is not below");
        assert!(under("/anything", "/"));
    }

    #[test]
    fn this_process_is_seen_as_what_it_is() {
        let me = std::process::id();
        let parent = parent_of(me).expect("a parent");
        assert!(ancestors(me).starts_with(&[parent]));
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let (dev, ino) = file_id(&exe).unwrap();
        assert!(maps_file(me, dev, ino), "this test binary maps itself");
        assert!(!maps_file(me, dev, ino + 1_000_000_007));
        let follow = Scope { follow: true, ..Default::default() };
        assert!(follow.admits(me, |p| p == parent).is_ok(), "a child of a session pid");
        assert!(follow.admits(me, |_| false).is_err());
        let bin = Scope { binary: Some((dev, ino)), ..Default::default() };
        assert!(bin.admits(me, |_| false).is_ok());
        if let Some(own) = cgroup_of(me) {
            let cg = Scope { cgroup: Some(own), ..Default::default() };
            assert!(cg.admits(me, |_| false).is_ok());
        }
    }
}
