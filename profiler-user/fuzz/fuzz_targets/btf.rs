#![no_main]
//! Fuzz target: see `tprof_fuzz::harness::btf`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tprof_fuzz::harness::btf(data));
