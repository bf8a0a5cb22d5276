//! The executable files a process maps, opened by what is mapped and never by the names
//! in `/proc/PID/maps` (those are the target's to choose: see [`super::target_file`]).
//!
//! [`exec_files`] reads the maps once, opens each distinct file with an executable mapping
//! through `/proc/PID/map_files` (falling back to a `RESOLVE_IN_ROOT` open of the path when
//! this process may not open map_files), checks it is a regular file with the mapping's
//! inode, and returns the open files with the mappings that use them. Whoever reads a
//! file's notes, hands it to `perf_event_open` or symbolizes from it then uses the open
//! file (or its `/proc/self/fd/N` path), so a path swapped for a symlink, a FIFO or a
//! device after the maps were read is never followed. A deleted file (a binary replaced by
//! a deploy) is still reachable through map_files.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::maps::{parse_maps, Mapping};
use super::notes::{read_notes_from, NotesReport};
use super::target_file::{open_in_root, open_mapped};

/// One executable file of a process, open.
#[derive(Clone, Debug)]
pub struct ExecFile {
    /// Device and inode of the open file (what the kernel's uprobes key on).
    pub dev: u64,
    pub ino: u64,
    /// The path to show: the mapped path, or `/proc/PID/exe` for a deleted main executable.
    /// For display only: never opened.
    pub display: String,
    pub file: Arc<File>,
}

/// An executable mapping and the open file behind it.
#[derive(Clone, Debug)]
pub struct MappedFile {
    pub mapping: Mapping,
    pub file: Arc<File>,
}

/// What [`exec_files`] found.
#[derive(Debug, Default)]
pub struct ExecScan {
    /// Each distinct file (by device and inode), in order of first mapping.
    pub files: Vec<ExecFile>,
    /// Every executable file mapping, with the index of its file in `files`.
    pub mappings: Vec<(Mapping, usize)>,
    /// Mappings that could not be opened safely, one line each.
    pub warnings: Vec<String>,
}

impl ExecScan {
    /// The mappings with their open files (for the symbolizer).
    pub fn mapped_files(&self) -> Vec<MappedFile> {
        self.mappings
            .iter()
            .filter_map(|(m, i)| self.files.get(*i).map(|f| MappedFile { mapping: m.clone(), file: Arc::clone(&f.file) }))
            .collect()
    }
}

/// Opens the file behind an executable `mapping` of `pid`: through map_files, or, when this
/// process lacks the capability map_files needs, by its path resolved inside the target's
/// root (never for a deleted file, whose path names something else).
pub fn open_mapping(pid: u32, mapping: &Mapping) -> Result<File> {
    match open_mapped(pid, mapping) {
        Ok(f) => Ok(f),
        Err(e) if permission_denied(&e) && !mapping.is_deleted() => {
            let path = mapping.path.as_deref().unwrap_or_default();
            open_in_root(pid, Path::new(path), mapping.inode)
                .with_context(|| format!("{e:#}; and by path inside the target's root"))
        }
        Err(e) => Err(e),
    }
}

fn permission_denied(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error).is_some_and(|n| n == libc::EPERM || n == libc::EACCES)
    })
}

/// The executable files `pid` maps, opened safely (see the module docs).
pub fn exec_files(pid: u32) -> Result<ExecScan> {
    let maps_path = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&maps_path).with_context(|| format!("reading {maps_path}"))?;
    let exe_link = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let mut scan = ExecScan::default();
    // (path, inode) of mappings already opened in this scan -> file index; failed ones.
    let mut seen: Vec<(String, u64, usize)> = Vec::new();
    let mut failed: Vec<(String, u64)> = Vec::new();
    for m in parse_maps(&text).into_iter().filter(|m| m.is_exec() && m.is_file()) {
        let path = m.path.clone().unwrap_or_default();
        if let Some((_, _, i)) = seen.iter().find(|(p, ino, _)| *p == path && *ino == m.inode) {
            let i = *i;
            scan.mappings.push((m, i));
            continue;
        }
        if failed.iter().any(|(p, ino)| *p == path && *ino == m.inode) {
            continue;
        }
        let file = match open_mapping(pid, &m) {
            Ok(f) => f,
            Err(e) => {
                scan.warnings.push(format!("{}: not opened: {e:#}", crate::present::escape(&path)));
                failed.push((path, m.inode));
                continue;
            }
        };
        let meta = file.metadata().with_context(|| format!("fstat of {path}"))?;
        let i = match scan.files.iter().position(|f| f.dev == meta.dev() && f.ino == meta.ino()) {
            Some(i) => i,
            None => {
                let display = if m.is_deleted() && exe_link.as_deref() == Some(Path::new(&path)) {
                    format!("/proc/{pid}/exe")
                } else {
                    path.clone()
                };
                scan.files.push(ExecFile { dev: meta.dev(), ino: meta.ino(), display, file: Arc::new(file) });
                scan.files.len() - 1
            }
        };
        seen.push((path, m.inode, i));
        scan.mappings.push((m, i));
    }
    Ok(scan)
}

/// The SDT notes of an open file: its headers and note sections only, with positional
/// reads of bounded size (see [`super::elf`]), whatever the file's size.
pub fn read_file_notes(file: &File, display: &str) -> Result<NotesReport> {
    read_notes_from(file).with_context(|| display.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_files_are_open_and_deduplicated() {
        let me = std::env::current_exe().unwrap();
        let ino = std::fs::metadata(&me).unwrap().ino();
        let scan = exec_files(std::process::id()).unwrap();
        assert!(scan.warnings.is_empty(), "{:?}", scan.warnings);
        let mine: Vec<&ExecFile> = scan.files.iter().filter(|f| f.ino == ino).collect();
        assert_eq!(mine.len(), 1, "this test binary, once: {:?}", scan.files);
        assert_eq!(mine[0].display, me.to_str().unwrap());
        assert_eq!(mine[0].file.metadata().unwrap().ino(), ino);
        for (m, i) in &scan.mappings {
            assert!(m.is_exec());
            assert_eq!(scan.files[*i].file.metadata().unwrap().ino(), m.inode, "{m:?}");
        }
        let notes = read_file_notes(&mine[0].file, &mine[0].display).unwrap();
        assert!(notes.skipped.is_empty(), "{notes:?}");
        assert_eq!(scan.mapped_files().len(), scan.mappings.len());
    }

    #[test]
    fn no_such_process() {
        let e = exec_files(u32::MAX / 2).unwrap_err();
        assert!(format!("{e:#}").contains("/maps"), "{e:#}");
    }

    #[test]
    fn notes_of_a_non_elf_file_say_so() {
        let f = File::open("/proc/self/cmdline").unwrap();
        let e = read_file_notes(&f, "cmdline").unwrap_err();
        assert!(format!("{e:#}").contains("cmdline"), "{e:#}");
    }
}
