//! `tprof report FILE`: replays a recording through the same decoder, correlator and sinks
//! as a live session, so every output (text, JSON, Perfetto, OTLP, Zipkin) is available
//! offline, without the traced processes or root.
//!
//! Nothing comes from the reporting machine: processes are named by the recording's
//! process frames and wall times come from its clock anchor (`record::Header::origin`),
//! which the caller gives the sinks ([`origin`]). A recording cut short or damaged is
//! reported up to the damage, then said as an error unless `allow_truncated`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::model::origin::Origin;

use crate::pipeline::{Pipeline, Stacks};
use crate::record::{read_tables, tag, Frames};
use crate::model::report::SessionReport;
use crate::sink::{Filter, Sink};

/// The recording machine's facts (defaults for a recording made by an older tprof).
pub fn origin(path: &Path) -> Result<Origin> {
    let mut frames = Frames::open(path)?;
    while let Ok(Some((t, bytes))) = frames.next_frame() {
        if t == tag::HEADER {
            let h: crate::record::Header = serde_json::from_slice(&bytes).context("the recording's header")?;
            return Ok(h.origin);
        }
    }
    Ok(Origin::default())
}

/// Replays `path` into `sink`. Returns the final report (also written to the sink), or,
/// after writing it, an error when the recording is incomplete and `allow_truncated` is
/// false.
pub fn run<S: Sink>(path: &Path, sink: S, filter: Filter, allow_truncated: bool) -> Result<SessionReport> {
    run_with(path, sink, filter, allow_truncated, crate::profile::ProfileOutputs::default())
}

/// [`run`], also writing the profile files `profile_out` asks for.
pub fn run_with<S: Sink>(
    path: &Path,
    sink: S,
    filter: Filter,
    allow_truncated: bool,
    profile_out: crate::profile::ProfileOutputs,
) -> Result<SessionReport> {
    let tables = read_tables(path)?;
    let mut p = Pipeline::new(sink, filter, Stacks::Recorded(tables.stacks), None);
    p.profile_out = profile_out;
    // Summaries wait for their samples as they did live (an older recording has none).
    let hz = tables.report.as_ref().map_or(0, |r| r.profile.sample_hz);
    p.profile = crate::profile::Profiler::new(if tables.sample_frames > 0 { hz.max(1) } else { hz });
    let has_report = tables.report.is_some();
    match tables.report {
        Some(live) => p.report = live.replayed(),
        None => p.report.stop_reason = "recording has no final report: tprof record was killed; records up to there are shown".into(),
    }
    if let Some(why) = &tables.truncated {
        p.report.warnings.push(format!("recording truncated: {why}"));
    }
    let incomplete = match &tables.truncated {
        Some(why) => Some(why.clone()),
        None if !has_report => Some("it has no final report (tprof record was killed)".to_string()),
        None => None,
    };
    let late = tables.late;
    let mut frames = Frames::open(path)?;
    while let Ok(Some((t, bytes))) = frames.next_frame() {
        match t {
            tag::RAW => p
                .push(&bytes, &mut |pid, addr, len| late.get(&(pid, addr)).map(|b| b[..len.min(b.len())].to_vec()))
                .context("writing the report")?,
            tag::PROCESS => {
                if let Ok(info) = serde_json::from_slice(&bytes) {
                    p.corr.set_process(Arc::new(info));
                }
            }
            tag::DRAINED => p.drained().context("writing the report")?,
            tag::SAMPLES => match serde_json::from_slice(&bytes) {
                Ok(entries) => p.samples(entries).context("writing the report")?,
                Err(e) => p.report.warnings.push(format!("a damaged frame of on-CPU samples was skipped: {e}")),
            },
            _ => {}
        }
    }
    p.finish().context("writing the report")?;
    if let Some(why) = incomplete.filter(|_| !allow_truncated) {
        bail!("the recording {} is incomplete: {why}; what it holds up to there is reported above (--allow-truncated accepts it)", path.display());
    }
    Ok(p.report)
}
