//! Where a request's time went, as profiles: on-CPU samples per request and per task type
//! (`--sample-hz`), blocked time by blocking stack per task type, and the formats people
//! read them in.
//!
//! * [`aggregate`]: the [`Profiler`], which attributes drained samples to their requests
//!   (a request's summary waits until every sample taken before its end has been drained),
//!   keeps per task type on-CPU and off-CPU profiles and per process the samples outside
//!   any task, and fills the session report's `profile`;
//! * [`live`]: drained kernel counts to symbolized [`SampleEntry`]s;
//! * [`folded`], [`pprof`], [`flamegraph`]: `--folded`, `--pprof`, `--flamegraph`.

pub mod aggregate;
pub mod flamegraph;
pub mod folded;
pub mod live;
pub mod pprof;
mod report;

pub use aggregate::{Profiler, RequestProfile, SampleEntry, StackTable, TypeProfile};
pub use report::{OffCpuStack, ProcessProfile, ProfileReport, TopStack, TypeProfileReport};

use std::path::PathBuf;

/// Profile files to write at the end of a session (or report).
#[derive(Clone, Debug, Default)]
pub struct ProfileOutputs {
    /// `--pprof FILE`: profile.proto, gzipped.
    pub pprof: Option<PathBuf>,
    /// `--folded FILE`: on-CPU samples as folded stacks; off-CPU time in `FILE.offcpu`.
    pub folded: Option<PathBuf>,
    /// `--flamegraph DIR`: SVG flame graphs per task type.
    pub flamegraph: Option<PathBuf>,
}

impl ProfileOutputs {
    pub fn any(&self) -> bool {
        self.pprof.is_some() || self.folded.is_some() || self.flamegraph.is_some()
    }
}
