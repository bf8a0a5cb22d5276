//! Cheap USDT probes that mark requests for the tprof profiler.
//!
//! A service marks each request as a [`Task`] (keyed by a W3C trace-id and span-id), its
//! phases as [`Region`]s and key/value [`log`]s. Each of these is a one-byte `nop` in the
//! code plus a SystemTap SDT note; nobody attached, that `nop` is the whole cost. When
//! `tprof attach --pid N` runs, it puts uprobes on those `nop`s and joins what the kernel
//! sees (on-CPU, run queue, blocking, syscalls) to each request. The probe ABI, which any
//! language can emit, is in `ABI.md`.
//!
//! ```
//! use usdt_probes::{Task, with_region, log};
//! let task = Task::new("GET /users");
//! with_region("db", || { /* query */ });
//! log("rows", "12");
//! let traceparent = task.context().to_traceparent(); // pass on to the services you call
//! assert!(traceparent.starts_with("00-"));
//! ```
mod context;
mod future;
mod naming;
mod sdt;
mod task;

pub use context::{ParseError, TraceContext};
pub use future::{InTask, TaskFutureExt};
pub use naming::normalize_path;
pub use sdt::{enabled, log_enabled};
pub use task::{log, region, with_region, Region, Task, TaskHandle};

/// The raw probes, for bindings and integrations that manage ids themselves. Argument order
/// and meaning are those of `ABI.md`.
pub mod probe {
    pub use crate::sdt::{log, region_begin, region_end, task_attach, task_begin, task_detach, task_end};
}

#[cfg(test)]
mod tests;

// Optional integrations, each behind its cargo feature (the default build has neither).
#[cfg(feature = "tracing")]
mod tracing_layer;
#[cfg(feature = "tracing")]
pub use tracing_layer::{SpanInfo, TprofLayer};

#[cfg(feature = "tokio")]
pub mod tokio;

#[cfg(feature = "tower")]
mod body;
#[cfg(feature = "tower")]
pub mod http;
#[cfg(feature = "tower")]
mod hint;

#[cfg(feature = "opentelemetry")]
mod otel;
#[cfg(feature = "opentelemetry")]
pub use otel::HINT_OTEL;
#[cfg(feature = "tower")]
pub use crate::http::{TprofClientLayer, TprofHttpLayer};
