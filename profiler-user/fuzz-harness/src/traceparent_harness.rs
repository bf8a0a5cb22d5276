//! The `traceparent` fuzz target's checks (`profiler-user/fuzz/fuzz_targets/traceparent.rs`),
//! also run on the whole corpus by this crate's `tests/corpus.rs`. Depends on `usdt_probes`
//! and std only.

use usdt_probes::TraceContext;

/// `traceparent`: `TraceContext::parse_traceparent` on the input as text (lossy UTF-8, and
/// as-is when it is valid UTF-8). An accepted value round-trips through `to_traceparent`;
/// a rejected one has a non-empty message.
pub fn traceparent(data: &[u8]) {
    let lossy = String::from_utf8_lossy(data);
    check(&lossy);
    if let Ok(s) = std::str::from_utf8(data) {
        // `FromStr` is the same parser.
        assert_eq!(s.parse::<TraceContext>(), TraceContext::parse_traceparent(s), "{s:?}");
    }
}

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
