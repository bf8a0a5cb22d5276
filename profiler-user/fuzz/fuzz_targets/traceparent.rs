#![no_main]
//! Fuzz target: see `tprof_fuzz::traceparent_harness::traceparent`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tprof_fuzz::traceparent_harness::traceparent(data));
