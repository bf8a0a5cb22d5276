//! `cargo xtask bench sampling`: what on-CPU sampling (`--sample-hz 99`)
//! costs the saturated example service: `GET /missing` closed loop (the e2e benchmark's
//! `fast-saturated` load: CPU 0 saturated), traced by tprof with sampling at the default
//! rate and with sampling off (`--sample-hz 0`), alternating, 5 pairs in the same run.
//! Figure: throughput sampled / not sampled (goal: at least 0.99, i.e. sampling costs at
//! most 1%). Not part of `all`.

use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use super::e2e::{start_service, traced_run_with, wrk, LOADS};
use super::procs::Bins;
use super::report::{figures_json, header, render_judged, stats, write_json, Goal, Header, Judged, JudgedJson, Unit};

const REPS: usize = 5;
const GOAL: f64 = 0.99;

#[derive(Serialize)]
struct Json<'a> {
    #[serde(flatten)]
    header: Header,
    sampled_rps: Vec<f64>,
    unsampled_rps: Vec<f64>,
    figures: Vec<JudgedJson<'a>>,
    notes: Vec<String>,
}

pub fn run(bins: &Bins, root_ok: bool) -> Result<Vec<Judged>> {
    if !root_ok {
        bail!("the sampling benchmark traces the service: it needs root");
    }
    let started = Instant::now();
    let mut notes = Vec::new();
    super::preamble(&mut notes, bins);
    let load = LOADS.iter().find(|l| l.key == "fast-saturated").ok_or_else(|| anyhow!("no fast-saturated load"))?;
    let svc = start_service(bins)?;
    let url = format!("http://{}{}", svc.addr, load.path);
    let _ = wrk(bins, &url, load, 1);
    // The sampled side runs with tprof's default rate (no flag), the other with 0.
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for rep in 0..REPS {
        let order: &[bool] = if rep % 2 == 0 { &[false, true] } else { &[true, false] };
        for &sampled in order {
            let (hz, flags): (&str, &[&str]) = if sampled { ("99", &["--sample-hz", "99"]) } else { ("0", &["--sample-hz", "0"]) };
            let (w, side) = traced_run_with(bins, &svc, &url, load, flags)?;
            eprintln!("bench sampling: rep {} --sample-hz {hz:<7} {:>8.0} req/s", rep + 1, w.rps);
            if let Some(e) = side.error {
                notes.push(format!("--sample-hz {hz}: {e}"));
            }
            if side.drops.unwrap_or(0) > 0 {
                notes.push(format!("--sample-hz {hz}: tprof dropped {} records", side.drops.unwrap_or(0)));
            }
            if sampled { &mut on } else { &mut off }.push(w.rps);
        }
    }
    drop(svc);
    let (_, on_med, on_max) = stats(&on);
    let (_, off_med, off_max) = stats(&off);
    let figs = vec![Judged {
        name: format!("{}: throughput sampled (default rate) / not", load.label),
        unit: Unit::Ratio,
        best: on_max / off_max,
        median: on_med / off_med,
        goal: Some(Goal::AtLeast(GOAL)),
        caveat: None,
        detail: format!("requests/s (median): not sampled {off_med:.0}, sampled {on_med:.0} ({:+.2}%)", (on_med / off_med - 1.0) * 100.0),
    }];
    let mut table = String::new();
    render_judged(&mut table, "on-CPU sampling", &figs);
    for n in &notes {
        table.push_str(&format!("  note: {n}\n"));
    }
    println!("{table}");
    let json = Json { header: header("sampling", &bins.tprof, started.elapsed()), sampled_rps: on, unsampled_rps: off, figures: figures_json(&figs), notes };
    let path = write_json("sampling", &json)?;
    println!("raw samples and figures: {} ({:.0} s)", path.display(), started.elapsed().as_secs_f64());
    Ok(figs)
}
