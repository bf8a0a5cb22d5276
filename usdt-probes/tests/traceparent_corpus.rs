//! Replays the `traceparent` fuzz corpus (`profiler-user/fuzz/corpus/traceparent/`, read at
//! run time) without a fuzzing engine: no input panics, every accepted value round-trips,
//! every rejection has a message.
//!
//! These are the invariants of the cargo-fuzz target too
//! (`profiler-user/fuzz/src/traceparent_harness.rs`, in the fuzz crate's own workspace,
//! which this crate cannot depend on): a change to one belongs in the other.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use usdt_probes::TraceContext;

/// `TraceContext::parse_traceparent` on the input as text (lossy UTF-8, and as-is when it is
/// valid UTF-8).
fn traceparent(data: &[u8]) {
    let lossy = String::from_utf8_lossy(data);
    check(&lossy);
    if let Ok(s) = std::str::from_utf8(data) {
        // `FromStr` is the same parser.
        assert_eq!(s.parse::<TraceContext>(), TraceContext::parse_traceparent(s), "{s:?}");
    }
}

/// An accepted value round-trips through `to_traceparent`; a rejected one has a message.
fn check(s: &str) {
    match TraceContext::parse_traceparent(s) {
        Ok(ctx) => {
            assert_ne!(ctx.trace_id(), 0, "{s:?}");
            assert_ne!(ctx.span_id(), 0, "{s:?}");
            let out = ctx.to_traceparent();
            assert_eq!(out.len(), 55, "{s:?} -> {out:?}");
            assert_eq!(TraceContext::parse_traceparent(&out), Ok(ctx), "{s:?} -> {out:?}");
            // Version 00 is exact: what was accepted is what is printed (after OWS).
            let trimmed = s.trim_matches(|c| c == ' ' || c == '\t');
            if trimmed.starts_with("00") {
                assert_eq!(trimmed, out, "{s:?}");
            }
        }
        Err(e) => {
            let m = e.to_string();
            assert!(!m.trim().is_empty(), "{s:?}: error with an empty message");
        }
    }
}

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
        if catch_unwind(AssertUnwindSafe(|| traceparent(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{} of {} inputs panicked (messages above):\n{}", failed.len(), files.len(), failed.join("\n"));
}
