//! tprof's userspace: probe discovery, loader, decoder, correlator and sinks.
//!
//! Data flows one way: probe -> eBPF -> ring buffer -> [`decode`] -> [`correlate`] -> [`sink`].

pub mod btf;
pub mod discover;
