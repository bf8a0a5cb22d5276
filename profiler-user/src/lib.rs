//! tprof's userspace: probe discovery, loader, decoder, correlator and sinks.
//!
//! Data flows one way: probe -> eBPF -> ring buffer -> [`decode`] -> [`correlate`] ->
//! [`sink`]. [`session`] runs that pipeline; [`attach`] loads and attaches the programs.

pub mod attach;
pub mod btf;
pub mod cli;
pub mod clock;
pub mod correlate;
pub mod decode;
pub mod discover;
pub mod doctor;
pub mod export;
pub mod frame_pointers;
pub mod list;
pub mod mapping;
pub mod model;
pub mod pipeline;
pub mod present;
pub mod profile;
pub mod record;
pub mod report;
pub mod session;
pub mod sink;
pub mod stacks;
pub mod syscall_names;
