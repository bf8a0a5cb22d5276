//! `tprof list`: the USDT probes of a binary or a running process, like `bpftrace -l`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::discover::{self, NotesReport};
use crate::mapping::{compile_site, Coverage, ProbeMapping};
use crate::present::escape;

/// One mapped event, for the listing: `region-begin "parse"`.
fn describe(a: &crate::mapping::Action) -> String {
    if a.text.is_empty() {
        a.event.keyword().to_string()
    } else {
        format!("{} {:?}", a.event.keyword(), a.text)
    }
}

/// The mapping's probes no listed file has.
fn print_missing(out: &mut dyn Write, mapping: Option<&ProbeMapping>, reports: &[&NotesReport]) -> std::io::Result<()> {
    if let Some(m) = mapping {
        let c = Coverage::of(m, reports.iter().flat_map(|r| r.sites.iter()));
        writeln!(out, "# {}: {} site(s) mapped", escape(&m.source), c.usable())?;
        for p in &c.missing {
            writeln!(out, "# {}: probe {} is in none of these files", escape(&m.source), escape(p))?;
        }
    }
    Ok(())
}

fn print_file(out: &mut dyn Write, path: &str, report: &NotesReport, mapping: Option<&ProbeMapping>) -> std::io::Result<()> {
    let path = escape(path);
    for s in &report.sites {
        let sem = if s.semaphore_offset != 0 { format!(" semaphore@{:#x}", s.semaphore_offset) } else { String::new() };
        // Each argument on its own: a foreign probe may have more than tprof's six, of
        // which a mapping uses a few.
        let bad: Vec<String> = s.each.iter().filter_map(|a| a.as_ref().err()).map(|e| e.to_string()).collect();
        let args = if bad.is_empty() { escape(&s.args_text) } else { format!("{} (unsupported: {})", escape(&s.args_text), escape(&bad.join("; "))) };
        let mapped = match mapping.and_then(|m| m.rule(&s.provider, &s.name)) {
            Some(rule) => match compile_site(rule, s) {
                Ok(_) => format!(" -> {}", rule.actions.iter().map(describe).collect::<Vec<_>>().join(", ")),
                Err(e) => format!(" -> not mapped: {}", escape(&e)),
            },
            None => String::new(),
        };
        writeln!(out, "usdt:{path}:{}:{} +{:#x}{sem} [{args}]{mapped}", escape(&s.provider), escape(&s.name), s.file_offset)?;
    }
    for skipped in &report.skipped {
        writeln!(out, "# {path}: skipped a malformed note: {}", escape(skipped))?;
    }
    Ok(())
}

/// Lists the probes of `binary`, or of every executable file `pid` maps.
pub fn run(pid: Option<u32>, binary: Option<&Path>, mapping: Option<&ProbeMapping>, out: &mut dyn Write) -> Result<usize> {
    match (pid, binary) {
        (_, Some(b)) => {
            let report = discover::read_notes_from_path(b).with_context(|| format!("reading probes of {}", b.display()))?;
            print_file(out, &b.display().to_string(), &report, mapping)?;
            print_missing(out, mapping, &[&report])?;
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
            let mut reports = Vec::new();
            for f in &scan.files {
                match discover::mapped::read_file_notes(&f.file, &f.display) {
                    Ok(report) => {
                        total += report.sites.len();
                        print_file(out, &f.display, &report, mapping)?;
                        reports.push(report);
                    }
                    // One unreadable library does not hide the others' probes.
                    Err(e) => writeln!(out, "# {}", escape(&format!("{e:#}")))?,
                }
            }
            print_missing(out, mapping, &reports.iter().collect::<Vec<_>>())?;
            Ok(total)
        }
        (None, None) => anyhow::bail!("give --pid or --binary"),
    }
}
