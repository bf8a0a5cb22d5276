//! The fuzz targets' shared checks and seed builders. The cargo-fuzz targets
//! (`profiler-user/fuzz/fuzz_targets/*.rs`, through the fuzz crate's `tprof_fuzz` lib) and
//! the engine-free corpus replay of the normal suite (`tests/corpus.rs` of this crate) both
//! call these functions, so they check exactly the same things.
//!
//! This is its own small crate, not a module of profiler-user: the fuzz crate is a workspace
//! of its own (it needs libfuzzer-sys, which the root workspace does not lock), and a lib
//! crate both workspaces can depend on by path is the one place both can reach without
//! `#[path]` includes. It depends on path crates of this repository and anyhow only.

pub mod harness;
pub mod seeds;
pub mod traceparent_harness;
