//! `--folded FILE`: folded stacks, the input of flame graph tools (`flamegraph.pl`,
//! inferno, speedscope): one line per distinct stack, frames root first separated by `;`,
//! then a space and a count. The root frame is the task type (or `[no task] pid N` for a
//! traced process's samples outside any task, `[unknown task]` for tasks tprof never saw
//! begin); then the user frames, outermost first; then the kernel frames, suffixed `_[k]`
//! (the convention of Linux `perf` flame graphs). On-CPU samples go to FILE, blocked
//! nanoseconds by blocking stack (off-CPU) to `FILE.offcpu`.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};


use super::aggregate::{Profiler, StackTable};
use crate::model::stack::{Frame, Stack};

/// A frame's name as a folded line can hold it (no `;`, no line breaks).
fn clean(f: &Frame) -> String {
    f.name().replace([';', '\n', '\r'], ":")
}

/// One folded stack, root first, without its count.
pub fn fold(root: &str, s: &Stack) -> String {
    let mut out = root.replace([';', '\n', '\r'], ":");
    for f in s.user.iter().rev() {
        out.push(';');
        out.push_str(&clean(f));
    }
    for f in s.kernel.iter().rev() {
        out.push(';');
        out.push_str(&clean(f));
        out.push_str("_[k]");
    }
    out
}

/// Adds the folded stacks of `m` under `root` (stacks folding to the same line are summed).
pub fn add_lines(out: &mut BTreeMap<String, u64>, root: &str, m: &HashMap<u32, u64>, st: &StackTable) {
    for (i, c) in m {
        *out.entry(fold(root, st.get(*i))).or_default() += c;
    }
}

/// The on-CPU profile of every task type, process and unknown task, folded.
pub fn on_cpu(p: &Profiler) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (name, ty) in &p.types {
        add_lines(&mut out, name, &ty.cpu, &p.stacks);
    }
    for (pid, m) in &p.processes {
        add_lines(&mut out, &format!("[no task] pid {pid}"), m, &p.stacks);
    }
    add_lines(&mut out, "[unknown task]", &p.unknown, &p.stacks);
    out
}

/// Blocked time by blocking stack of every task type, folded (nanoseconds).
pub fn off_cpu(p: &Profiler) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (name, ty) in &p.types {
        add_lines(&mut out, name, &ty.off, &p.stacks);
    }
    out
}

pub fn render(lines: &BTreeMap<String, u64>) -> String {
    let mut s = String::new();
    for (stack, n) in lines.iter().filter(|(_, n)| **n > 0) {
        s.push_str(stack);
        s.push(' ');
        s.push_str(&n.to_string());
        s.push('\n');
    }
    s
}

/// Where the off-CPU lines of `--folded FILE` go.
pub fn off_cpu_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".offcpu");
    PathBuf::from(s)
}

/// Writes `--folded FILE` (and `FILE.offcpu`) into `on` and `off` (created beforehand).
pub fn write(p: &Profiler, path: &Path, on: &std::fs::File, off: &std::fs::File) -> io::Result<()> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("--folded {}: {e}", path.display()));
    let mut on = on;
    on.write_all(render(&on_cpu(p)).as_bytes()).map_err(named)?;
    let mut off = off;
    off.write_all(render(&off_cpu(p)).as_bytes()).map_err(named)?;
    Ok(())
}
