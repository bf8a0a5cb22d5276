//! `tprof report FILE`: replays a recording through the same decoder, correlator and sinks
//! as a live session, so every output (text, JSON, Perfetto, OTLP, Zipkin) is available
//! offline, without the traced processes or root.

use std::path::Path;

use anyhow::{Context, Result};

use crate::pipeline::{Pipeline, Stacks};
use crate::record::{read_tables, tag, Frames};
use crate::model::report::SessionReport;
use crate::sink::{Filter, Sink};

/// Replays `path` into `sink`. Returns the final report (also written to the sink).
pub fn run<S: Sink>(path: &Path, sink: S, filter: Filter) -> Result<SessionReport> {
    let tables = read_tables(path)?;
    let mut p = Pipeline::new(sink, filter, Stacks::Recorded(tables.stacks), None);
    match tables.report {
        Some(live) => p.report = live.replayed(),
        None => p.report.stop_reason = "recording has no final report: tprof record was killed; records up to there are shown".into(),
    }
    if let Some(why) = &tables.truncated {
        p.report.warnings.push(format!("recording truncated: {why}"));
    }
    let late = tables.late;
    let mut frames = Frames::open(path)?;
    while let Ok(Some((t, bytes))) = frames.next_frame() {
        if t == tag::RAW {
            p.push(&bytes, &mut |pid, addr, len| late.get(&(pid, addr)).map(|b| b[..len.min(b.len())].to_vec()))
                .context("writing the report")?;
        }
    }
    p.finish().context("writing the report")?;
    Ok(p.report)
}
