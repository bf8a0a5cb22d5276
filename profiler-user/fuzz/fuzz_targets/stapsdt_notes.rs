#![no_main]
//! Fuzz target: see `tprof_fuzz::harness::stapsdt_notes`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tprof_fuzz::harness::stapsdt_notes(data));
