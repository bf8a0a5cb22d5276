//! The names userspace looks up in tprof's eBPF object (`profiler_common::{maps, globals,
//! programs}`) are those of the object `build.rs` built: aya-ebpf's `#[map]` and program
//! macros take the statics' and functions' own names, so nothing else ties the two sides.
//! Reads the object (no root needed); skipped when tprof was built without its eBPF programs.
#![cfg(not(tprof_ebpf_missing))]

use std::collections::BTreeSet;

use object::{Object, ObjectSymbol};
use profiler_common::{globals, maps, programs};

static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler.bpf.o"));

fn parse() -> aya_obj::Object {
    aya_obj::Object::parse(EBPF_OBJ).unwrap_or_else(|e| panic!("parsing the eBPF object ({} bytes): {e}", EBPF_OBJ.len()))
}

#[test]
fn every_map_name_is_a_map_of_the_object() {
    let obj = parse();
    let in_object: BTreeSet<&str> = obj.maps.keys().map(String::as_str).collect();
    for name in maps::ALL {
        assert!(in_object.contains(name), "map {name} is not in the eBPF object (its maps: {in_object:?})");
    }
    // And the other way: every map of ours is named in profiler_common::maps (the globals'
    // sections and aya-log's own maps aside).
    let named: BTreeSet<&str> = maps::ALL.into_iter().collect();
    let unnamed: Vec<&&str> = in_object.iter().filter(|m| !m.starts_with('.') && !m.starts_with("AYA_") && !named.contains(*m)).collect();
    assert!(unnamed.is_empty(), "maps of the eBPF object missing from profiler_common::maps: {unnamed:?}");
}

#[test]
fn every_program_name_is_a_program_of_the_object() {
    let obj = parse();
    let in_object: BTreeSet<&str> = obj.programs.keys().map(String::as_str).collect();
    let mut expected: BTreeSet<&str> = programs::TRACEPOINTS.into_iter().collect();
    expected.extend([programs::USDT, programs::USDT_FAST, programs::SAMPLE]);
    assert_eq!(in_object, expected, "the eBPF object's programs differ from profiler_common::programs");
}

#[test]
fn every_global_name_is_a_symbol_of_the_object() {
    let file = object::File::parse(EBPF_OBJ).expect("the eBPF object is an ELF file");
    let symbols: BTreeSet<&str> = file.symbols().filter_map(|s| s.name().ok()).collect();
    for name in globals::ALL {
        assert!(symbols.contains(name), "global {name} is not a symbol of the eBPF object");
    }
}
