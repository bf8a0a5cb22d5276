//! `tprof list`: the USDT probes of a binary or a running process, like `bpftrace -l`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::discover::{self, NotesReport};
use crate::sink::escape;

fn print_file(out: &mut dyn Write, path: &Path, report: &NotesReport) -> std::io::Result<()> {
    for s in &report.sites {
        let sem = if s.semaphore_offset != 0 { format!(" semaphore@{:#x}", s.semaphore_offset) } else { String::new() };
        let args = match &s.args {
            Ok(_) => escape(&s.args_text),
            Err(e) => format!("{} (unsupported: {e})", escape(&s.args_text)),
        };
        writeln!(out, "usdt:{}:{}:{} +{:#x}{sem} [{args}]", path.display(), escape(&s.provider), escape(&s.name), s.file_offset)?;
    }
    for skipped in &report.skipped {
        writeln!(out, "# {}: skipped a malformed note: {}", path.display(), escape(skipped))?;
    }
    Ok(())
}

/// Lists the probes of `binary`, or of every executable file `pid` maps.
pub fn run(pid: Option<u32>, binary: Option<&Path>, out: &mut dyn Write) -> Result<usize> {
    let files: Vec<PathBuf> = match (pid, binary) {
        (_, Some(b)) => vec![b.to_path_buf()],
        (Some(pid), None) => {
            crate::attach::privileges::check_pid(pid)?;
            discover::executable_files(pid).with_context(|| format!("listing the files pid {pid} maps"))?
        }
        (None, None) => anyhow::bail!("give --pid or --binary"),
    };
    let mut total = 0;
    for f in &files {
        // A mapped path is the target's to choose: read it through the target's root, and
        // only if it is a regular file (never a device or FIFO it points us at).
        let path = match pid {
            Some(pid) if !f.starts_with(format!("/proc/{pid}/")) => PathBuf::from(format!("/proc/{pid}/root{}", f.display())),
            _ => f.clone(),
        };
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            writeln!(out, "# {}: not a regular file, skipped", escape(&f.display().to_string()))?;
            continue;
        }
        match discover::read_notes_from_path(&path) {
            Ok(report) => {
                total += report.sites.len();
                print_file(out, f, &report)?;
            }
            // One unreadable library does not hide the others' probes; a named binary must read.
            Err(e) if binary.is_none() => writeln!(out, "# {}: {e}", f.display())?,
            Err(e) => return Err(e).with_context(|| format!("reading probes of {}", f.display())),
        }
    }
    Ok(total)
}
