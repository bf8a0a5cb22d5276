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

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Profile files to write at the end of a session (or report).
#[derive(Clone, Debug, Default)]
pub struct ProfileOutputs {
    /// `--pprof FILE`: profile.proto, gzipped.
    pub pprof: Option<PathBuf>,
    /// `--folded FILE`: on-CPU samples as folded stacks; off-CPU time in `FILE.offcpu`.
    pub folded: Option<PathBuf>,
    /// `--flamegraph DIR`: SVG flame graphs per task type.
    pub flamegraph: Option<PathBuf>,
    /// The files, created by [`ProfileOutputs::open`] (before tprof gives up its privileges).
    files: Opened,
}

#[derive(Clone, Debug, Default)]
struct Opened {
    pprof: Option<Arc<File>>,
    folded: Option<(Arc<File>, Arc<File>)>,
}

fn create(path: &Path, flag: &str) -> io::Result<Arc<File>> {
    let f = File::create(path).map_err(|e| io::Error::new(e.kind(), format!("{flag} {}: {e}", path.display())))?;
    crate::attach::privileges::give_to_invoking_user(path);
    Ok(Arc::new(f))
}

impl ProfileOutputs {
    pub fn any(&self) -> bool {
        self.pprof.is_some() || self.folded.is_some() || self.flamegraph.is_some()
    }

    /// Creates the files now, and the flame graph directory, given to `dir_owner` (the
    /// user a live tprof becomes when it drops its privileges, which then writes in it):
    /// at the end of the session tprof may no longer be allowed to create them.
    pub fn open(&mut self, dir_owner: Option<(u32, u32)>) -> io::Result<()> {
        if let Some(p) = &self.pprof {
            self.files.pprof = Some(create(p, "--pprof")?);
        }
        if let Some(p) = &self.folded {
            self.files.folded = Some((create(p, "--folded")?, create(&folded::off_cpu_path(p), "--folded")?));
        }
        if let Some(d) = &self.flamegraph {
            let named = |e: io::Error| io::Error::new(e.kind(), format!("--flamegraph {}: {e}", d.display()));
            std::fs::create_dir_all(d).map_err(named)?;
            if let Some((uid, gid)) = dir_owner {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).map_err(named)?;
            }
        }
        Ok(())
    }

    /// The `--pprof` file, if created.
    pub fn pprof_file(&self) -> Option<&File> {
        self.files.pprof.as_deref()
    }

    /// The `--folded` files (on-CPU, off-CPU), if created.
    pub fn folded_files(&self) -> Option<(&File, &File)> {
        self.files.folded.as_ref().map(|(a, b)| (&**a, &**b))
    }
}
