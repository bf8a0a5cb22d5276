//! Loading tprof's eBPF programs and attaching them: tp_btf programs on the scheduler,
//! syscall and irq tracepoints ([`tracer`]), and the USDT handler on every tprof probe site
//! of the traced processes, their executables and the libraries they map, rescanned so
//! that a library dlopen'ed after attach is picked up ([`probes`]).
//!
//! The probe sites are found, and their uprobes created, by tprof's privileged helper
//! ([`broker`]); this process links its programs to what it gets back, which needs no
//! privilege, so it drops all of its own ([`drop_privs`]) before the first attach.
//! [`privileges`] says up front what is missing.

pub mod broker;
pub mod broker_client;
pub mod broker_proto;
pub mod drop_privs;
pub mod multi;
pub mod pidfd;
pub mod privileges;
pub mod probes;
pub mod sampler;
pub mod scope;
pub mod tracer;
pub mod uprobe;

pub use probes::{AttachedSite, Probes};
pub use scope::Scope;
pub use tracer::{ebpf_object, Counters, TraceOptions, Tracer};
