//! `tprof list`: the USDT probes of a binary or a running process, like `bpftrace -l`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::discover::{self, NotesReport};
use crate::present::escape;

fn print_file(out: &mut dyn Write, path: &str, report: &NotesReport) -> std::io::Result<()> {
    let path = escape(path);
    for s in &report.sites {
        let sem = if s.semaphore_offset != 0 { format!(" semaphore@{:#x}", s.semaphore_offset) } else { String::new() };
        let args = match &s.args {
            Ok(_) => escape(&s.args_text),
            Err(e) => format!("{} (unsupported: {e})", escape(&s.args_text)),
        };
        writeln!(out, "usdt:{path}:{}:{} +{:#x}{sem} [{args}]", escape(&s.provider), escape(&s.name), s.file_offset)?;
    }
    for skipped in &report.skipped {
        writeln!(out, "# {path}: skipped a malformed note: {}", escape(skipped))?;
    }
    Ok(())
}

/// Lists the probes of `binary`, or of every executable file `pid` maps.
pub fn run(pid: Option<u32>, binary: Option<&Path>, out: &mut dyn Write) -> Result<usize> {
    match (pid, binary) {
        (_, Some(b)) => {
            let report = discover::read_notes_from_path(b).with_context(|| format!("reading probes of {}", b.display()))?;
            print_file(out, &b.display().to_string(), &report)?;
            Ok(report.sites.len())
        }
        (Some(pid), None) => {
            crate::attach::privileges::check_pid(pid)?;
            // The mapped files, opened by what is mapped: a path the target swapped for a
            // symlink, a FIFO or a device since it mapped the file is never followed.
            let scan = discover::mapped::exec_files(pid).with_context(|| format!("listing the files pid {pid} maps"))?;
            for w in &scan.warnings {
                writeln!(out, "# {}", escape(w))?;
            }
            let mut total = 0;
            for f in &scan.files {
                match discover::mapped::read_file_notes(&f.file, &f.display) {
                    Ok(report) => {
                        total += report.sites.len();
                        print_file(out, &f.display, &report)?;
                    }
                    // One unreadable library does not hide the others' probes.
                    Err(e) => writeln!(out, "# {}", escape(&format!("{e:#}")))?,
                }
            }
            Ok(total)
        }
        (None, None) => anyhow::bail!("give --pid or --binary"),
    }
}
