//! The fuzz targets' shared checks; see `harness.rs` and `traceparent_harness.rs`.

#[path = "harness.rs"]
pub mod harness;
#[path = "traceparent_harness.rs"]
pub mod traceparent_harness;
