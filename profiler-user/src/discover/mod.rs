//! Probe discovery: which files of a process carry USDT probes, where those probes are, and
//! how to fetch their arguments.
//!
//! * [`maps`] lists a process's executable files from `/proc/PID/maps`;
//! * [`notes`] reads each file's SystemTap SDT notes (`.note.stapsdt`) into [`ProbeSite`]s,
//!   with uprobe-ready file offsets, from the bounded reads of [`elf`];
//! * [`mapped`] opens those files by what is mapped (`/proc/PID/map_files`), never by a
//!   path the target controls ([`target_file`]);
//! * [`argspec`] turns a note's argument spec into [`profiler_common::UsdtArg`]s.
//!
//! Format: <https://sourceware.org/systemtap/wiki/UserSpaceProbeImplementation>; libbpf's
//! `usdt.c` is the known-good reference design.

pub mod argspec;
pub mod elf;
pub mod mapped;
pub mod maps;
pub mod notes;
pub mod process;
pub mod symbols;
pub mod target_file;

pub use argspec::{parse_arg, parse_args, parse_args_at, parse_each, ArgSpecError, Symbols};
pub use maps::{executable_files, parse_maps, Mapping};
pub use notes::{read_notes, read_notes_from, read_notes_from_path, resolve_symbols, NotesError, NotesReport, ProbeSite};

use profiler_common::{probe, ProbeDef};

/// USDT provider name of tprof's own probes.
pub const TPROF_PROVIDER: &str = probe::PROVIDER;

/// The [`profiler_common::probe`] id of a probe of provider [`TPROF_PROVIDER`], by name.
pub fn tprof_probe_id(name: &str) -> Option<u32> {
    ProbeDef::by_name(name).map(|p| p.id)
}

/// How many arguments each tprof probe takes (ABI v1; 0 for an unknown id). A site with
/// fewer would read garbage for the missing ones, so it is refused.
pub fn tprof_probe_args(probe_id: u32) -> usize {
    ProbeDef::by_id(probe_id).map_or(0, ProbeDef::nargs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_ids() {
        let names = [
            "task_begin",
            "task_end",
            "region_begin",
            "region_end",
            "log",
            "task_attach",
            "task_detach",
        ];
        let ids: Vec<u32> = names.iter().map(|n| tprof_probe_id(n).unwrap()).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(tprof_probe_id("Task_Begin"), None);
        assert_eq!(tprof_probe_id(""), None);
        let nargs: Vec<usize> = ids.iter().map(|&id| tprof_probe_args(id)).collect();
        assert_eq!(nargs, vec![6, 3, 2, 2, 4, 4, 3]);
        assert_eq!(tprof_probe_args(0), 0);
        assert_eq!(tprof_probe_args(profiler_common::kind::ON_CPU), 0);
    }
}
