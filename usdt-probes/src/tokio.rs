//! tokio integration (feature `tokio`): the current task follows its work onto tokio's
//! blocking threads.
//!
//! `tokio::task::spawn_blocking` and `tokio::fs` run closures on the blocking pool, where no
//! task is current: tprof would charge that CPU and those syscalls (`openat`, `statx`,
//! `read`) to no request. The functions here are drop-in replacements that attach the
//! caller's current task ([`TaskHandle`]) around the closure on the blocking thread.
//!
//! `tokio::task::block_in_place` needs nothing: its closure runs on the calling thread,
//! where the task is already attached for the poll.
//!
//! ```no_run
//! # async fn handler() -> std::io::Result<()> {
//! let bytes = usdt_probes::tokio::fs::read("/etc/hostname").await?;
//! let sum = usdt_probes::tokio::spawn_blocking(move || bytes.iter().map(|b| u64::from(*b)).sum::<u64>()).await;
//! # let _ = sum; Ok(()) }
//! ```

use std::io;

use ::tokio::task::JoinHandle;

use crate::task::TaskHandle;

/// `tokio::task::spawn_blocking`, with `f` run for the caller's current task (if any).
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let task = TaskHandle::current();
    ::tokio::task::spawn_blocking(move || match task {
        Some(t) => t.run(f),
        None => f(),
    })
}

/// Runs `f` on the blocking pool for the caller's task and awaits it, as `tokio::fs` does.
async fn asyncify<F, T>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match spawn_blocking(f).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::other("background task failed")),
    }
}

/// The `tokio::fs` functions, each run on the blocking pool for the caller's task.
pub mod fs {
    use std::fs::Metadata;
    use std::io;
    use std::path::{Path, PathBuf};

    use super::asyncify;

    /// `tokio::fs::read`.
    pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        let path = path.as_ref().to_owned();
        asyncify(move || std::fs::read(path)).await
    }

    /// `tokio::fs::read_to_string`.
    pub async fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
        let path = path.as_ref().to_owned();
        asyncify(move || std::fs::read_to_string(path)).await
    }

    /// `tokio::fs::metadata`.
    pub async fn metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
        let path = path.as_ref().to_owned();
        asyncify(move || std::fs::metadata(path)).await
    }

    /// `tokio::fs::canonicalize`.
    pub async fn canonicalize(path: impl AsRef<Path>) -> io::Result<PathBuf> {
        let path = path.as_ref().to_owned();
        asyncify(move || std::fs::canonicalize(path)).await
    }

    /// `tokio::fs::write`.
    pub async fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
        let (path, contents) = (path.as_ref().to_owned(), contents.as_ref().to_owned());
        asyncify(move || std::fs::write(path, contents)).await
    }
}

#[cfg(test)]
mod tests {
    use crate::sdt::recorder;
    use crate::{TaskFutureExt, TraceContext};

    #[test]
    fn blocking_work_and_fs_calls_run_attached_to_the_callers_task() {
        let rt = ::tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        let (ctx, seen, len, outside) = rt.block_on(async {
            let job = async {
                let ctx = TraceContext::current().expect("in the task");
                let seen = super::spawn_blocking(|| (TraceContext::current(), std::thread::current().id()))
                    .await
                    .expect("joined");
                let len = super::fs::read("Cargo.toml").await.expect("read").len();
                (ctx, seen, len)
            }
            .in_task("GET /file");
            let (ctx, seen, len) = ::tokio::spawn(job).await.expect("joined");
            // No task current: the closure runs with none, and fires nothing.
            let outside = super::spawn_blocking(TraceContext::current).await.expect("joined");
            (ctx, seen, len, outside)
        });
        assert!(len > 0);
        assert_eq!(seen.0, Some(ctx), "the closure is the task's work");
        assert_eq!(outside, None);
        let fired = recorder::for_span(ctx.span_id());
        let on_blocking: Vec<&str> = fired.iter().filter(|f| f.1 == seen.1).map(|f| f.0).collect();
        // The pool reuses its thread for the fs call: one attach/detach pair per closure.
        assert!(!on_blocking.is_empty());
        assert!(
            on_blocking.chunks(2).all(|p| p == ["task_attach", "task_detach"]),
            "attached around each closure on the blocking thread: {on_blocking:?}"
        );
        let attaches = fired.iter().filter(|f| f.0 == "task_attach").count();
        let detaches = fired.iter().filter(|f| f.0 == "task_detach").count();
        assert_eq!(fired.first().map(|f| f.0), Some("task_begin"));
        assert_eq!(fired.last().map(|f| f.0), Some("task_end"));
        assert_eq!(attaches, detaches, "balanced on every thread");
    }
}
