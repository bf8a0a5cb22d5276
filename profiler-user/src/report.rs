//! `tprof report FILE`: replays a recording through the same decoder, correlator and sinks
//! as a live session, so every output (text, JSON, Perfetto, OTLP, Zipkin) is available
//! offline, without the traced processes or root.

use std::path::Path;

use anyhow::{Context, Result};

use crate::pipeline::{Pipeline, Stacks};
use crate::record::{read_tables, tag, Frames};
use crate::sink::{kind_by_name, Filter, SessionReport, Sink};

/// Replays `path` into `sink`. Returns the final report (also written to the sink).
pub fn run<S: Sink>(path: &Path, sink: S, filter: Filter) -> Result<SessionReport> {
    let tables = read_tables(path)?;
    let mut p = Pipeline::new(sink, filter, Stacks::Recorded(tables.stacks), None);
    if let Some(live) = &tables.report {
        let r = &mut p.report;
        r.pids = live["pids"].as_array().map(|a| a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect()).unwrap_or_default();
        r.sites = live["sites"].as_u64().unwrap_or(0) as usize;
        r.duration_ns = live["duration_ns"].as_u64().unwrap_or(0);
        r.missed_switch_ins = live["missed_switch_ins"].as_u64().unwrap_or(0);
        r.stacks_lost = live["stacks_lost"].as_u64().unwrap_or(0);
        r.kernel_drops = live["kernel_drops"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((kind_by_name(k)?, v.as_u64().unwrap_or(0)))).collect())
            .unwrap_or_default();
        r.warnings = live["warnings"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default();
        r.stop_reason = format!("recorded session ({})", live["stop_reason"].as_str().unwrap_or("unknown stop"));
    } else {
        p.report.stop_reason = "recording has no final report: tprof record was killed; records up to there are shown".into();
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
