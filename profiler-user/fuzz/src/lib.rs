//! The fuzz targets' shared checks, from the `tprof-fuzz-harness` crate
//! (`profiler-user/fuzz-harness/`), which the corpus replay tests of the normal suite call too.

pub use tprof_fuzz_harness::{harness, seeds, traceparent_harness};
