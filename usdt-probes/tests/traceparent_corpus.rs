//! Replays the `traceparent` fuzz corpus (`profiler-user/fuzz/corpus/traceparent/`) through
//! the same checks as the cargo-fuzz target (`profiler-user/fuzz/src/traceparent_harness.rs`),
//! without a fuzzing engine: no input panics, every accepted value round-trips, every
//! rejection has a message.

#[path = "../../profiler-user/fuzz/src/traceparent_harness.rs"]
mod traceparent_harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[test]
fn traceparent_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiler-user/fuzz/corpus/traceparent");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{}: only {} inputs", dir.display(), files.len());
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| traceparent_harness::traceparent(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{} of {} inputs panicked (messages above):\n{}", failed.len(), files.len(), failed.join("\n"));
}
