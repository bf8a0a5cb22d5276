//! `--flamegraph DIR`: SVG flame graphs made with the `inferno` crate, per task type:
//! `TYPE.on-cpu.svg` (on-CPU samples), `TYPE.off-cpu.svg` (blocked time by blocking stack)
//! and `TYPE.diff.svg`, the differential flame graph of the type's slowest requests (wall
//! time at or above the type's p90) against its typical ones (at or below its p50): frames
//! are sized by the slow requests' samples and coloured by how much more (red) or less
//! (blue) of the samples they take than in typical requests, both sides normalized to the
//! same total. Plus `no-task.on-cpu.svg` for the samples outside any task. A graph with
//! nothing to draw is not written (a type without samples, a diff without requests on both
//! sides); each file written is listed in the returned vector.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use super::aggregate::Profiler;
use super::folded::{add_lines, render};
use super::report::ProfileReport;
use crate::model::stats::Stats;

/// A task type's name as a file name: letters, digits, `.`, `-`, `_` kept, the rest `_`.
pub fn file_stem(name: &str) -> String {
    let s: String = name.chars().take(100).map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

fn svg(lines: &BTreeMap<String, u64>, title: &str, count_name: &str, path: &Path) -> io::Result<()> {
    let text = render(lines);
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    opts.count_name = count_name.to_string();
    let file = std::fs::File::create(path)?;
    inferno::flamegraph::from_lines(&mut opts, text.lines(), io::BufWriter::new(file)).map_err(io::Error::other)?;
    crate::attach::privileges::give_to_invoking_user(path);
    Ok(())
}

fn diff_svg(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, title: &str, path: &Path) -> io::Result<()> {
    let (b, a) = (render(before), render(after));
    let mut folded = Vec::new();
    let opts = inferno::differential::Options { normalize: true, ..Default::default() };
    inferno::differential::from_readers(opts, b.as_bytes(), a.as_bytes(), &mut folded).map_err(io::Error::other)?;
    let text = String::from_utf8_lossy(&folded).into_owned();
    let mut fo = inferno::flamegraph::Options::default();
    fo.title = title.to_string();
    fo.count_name = "samples".to_string();
    let file = std::fs::File::create(path)?;
    inferno::flamegraph::from_lines(&mut fo, text.lines(), io::BufWriter::new(file)).map_err(io::Error::other)?;
    crate::attach::privileges::give_to_invoking_user(path);
    Ok(())
}

/// An SVG of `lines`, in memory.
fn svg_string(lines: &BTreeMap<String, u64>, title: &str, count_name: &str) -> io::Result<String> {
    let text = render(lines);
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    opts.count_name = count_name.to_string();
    // A fixed width: a fluid one (the default) is measured by the SVG's script at load, and
    // reads 0 inside the page's frame (a negative width, an error in the console).
    opts.image_width = Some(1200);
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut out).map_err(io::Error::other)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// One report stack (innermost first, the kernel's `kernel` frames first) folded, root first.
fn fold_frames(frames: &[String], kernel: usize) -> String {
    let clean = |f: &str| f.replace([';', '\n', '\r'], ":");
    let mut parts: Vec<String> = frames.iter().skip(kernel).rev().map(|f| clean(f)).collect();
    parts.extend(frames.iter().take(kernel).rev().map(|f| format!("{}_[k]", clean(f))));
    parts.join(";")
}

/// Flame graphs of the report's profiles, for the HTML page: per task type, its on-CPU and
/// off-CPU profiles as the report keeps them (their most sampled / longest blocked stacks,
/// said in the title), as (task type, title, SVG). Nothing when sampling was off and no
/// block had a stack.
pub fn report_svgs(r: &ProfileReport) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (name, t) in &r.task_types {
        let on: BTreeMap<String, u64> = t.top_stacks.iter().map(|s| (fold_frames(&s.frames, s.kernel_frames), s.samples)).collect();
        if on.values().any(|n| *n > 0) {
            let title = format!("{name}: on-CPU ({} most sampled stacks of {} samples)", t.top_stacks.len(), t.cpu_samples);
            if let Ok(svg) = svg_string(&on, &title, "samples") {
                out.push((name.clone(), title, svg));
            }
        }
        let off: BTreeMap<String, u64> = t.off_cpu_top_stacks.iter().map(|s| (fold_frames(&s.frames, s.kernel_frames), s.blocked_ns)).collect();
        if off.values().any(|n| *n > 0) {
            let title = format!("{name}: off-CPU ({} longest blocking stacks)", t.off_cpu_top_stacks.len());
            if let Ok(svg) = svg_string(&off, &title, "ns") {
                out.push((name.clone(), title, svg));
            }
        }
    }
    out
}

/// Writes the flame graphs into `dir` (created if missing); returns the files written.
pub fn write(p: &Profiler, stats: &Stats, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let named = |e: io::Error, what: &Path| io::Error::new(e.kind(), format!("--flamegraph {}: {e}", what.display()));
    // Created (and given to the user tprof runs as) beforehand by ProfileOutputs::open.
    std::fs::create_dir_all(dir).map_err(|e| named(e, dir))?;
    let mut written = Vec::new();
    let mut stems = HashSet::new();
    let hz = p.sample_hz;
    for (name, ty) in &p.types {
        let mut stem = file_stem(name);
        let mut n = 1;
        while !stems.insert(stem.clone()) {
            n += 1;
            stem = format!("{}-{n}", file_stem(name));
        }
        let mut on = BTreeMap::new();
        add_lines(&mut on, name, &ty.cpu, &p.stacks);
        if !on.is_empty() {
            let to = dir.join(format!("{stem}.on-cpu.svg"));
            let total: u64 = on.values().sum();
            svg(&on, &format!("{name}: on-CPU ({total} samples at {hz} Hz)"), "samples", &to).map_err(|e| named(e, &to))?;
            written.push(to);
        }
        let mut off = BTreeMap::new();
        add_lines(&mut off, name, &ty.off, &p.stacks);
        if !off.is_empty() {
            let to = dir.join(format!("{stem}.off-cpu.svg"));
            svg(&off, &format!("{name}: off-CPU (blocked ns by blocking stack)"), "ns", &to).map_err(|e| named(e, &to))?;
            written.push(to);
        }
        if let Some((before, after)) = slow_vs_typical(p, stats, name) {
            let to = dir.join(format!("{stem}.diff.svg"));
            diff_svg(&before, &after, &format!("{name}: on-CPU of the slowest requests (>= p90) against typical ones (<= p50)"), &to)
                .map_err(|e| named(e, &to))?;
            written.push(to);
        }
    }
    let mut outside = BTreeMap::new();
    for (pid, m) in &p.processes {
        add_lines(&mut outside, &format!("[no task] pid {pid}"), m, &p.stacks);
    }
    if !outside.is_empty() {
        let to = dir.join("no-task.on-cpu.svg");
        svg(&outside, "on-CPU samples outside any task", "samples", &to).map_err(|e| named(e, &to))?;
        written.push(to);
    }
    Ok(written)
}

/// The folded on-CPU samples of type `name`'s typical requests (wall <= p50) and of its
/// slowest (wall >= p90), when both sides have samples.
pub fn slow_vs_typical(p: &Profiler, stats: &Stats, name: &str) -> Option<(BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    let h = &stats.by_name.get(name)?.wall;
    if h.count < 2 {
        return None;
    }
    let (p50, p90) = (h.quantile(0.5), h.quantile(0.9));
    let (mut typical, mut slow) = (HashMap::new(), HashMap::new());
    for r in p.requests.iter().filter(|r| &*r.name == name) {
        let Some(wall) = r.wall_ns else { continue };
        // The histogram's quantiles are upper bounds within 1/16: a request is slow at or
        // above p90 and typical at or below p50 (it can be both only if p90 == p50).
        let side = if wall >= p90 && wall > p50 {
            &mut slow
        } else if wall <= p50 {
            &mut typical
        } else {
            continue;
        };
        for (i, n) in &r.cpu {
            *side.entry(*i).or_default() += n;
        }
    }
    if typical.is_empty() || slow.is_empty() {
        return None;
    }
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    add_lines(&mut before, name, &typical, &p.stacks);
    add_lines(&mut after, name, &slow, &p.stacks);
    Some((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::report::{OffCpuStack, TopStack, TypeProfileReport};

    #[test]
    fn the_reports_profiles_become_flame_graphs_root_first() {
        let mut r = ProfileReport::default();
        let frames = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        r.task_types.insert(
            "GET /a".into(),
            TypeProfileReport {
                cpu_samples: 7,
                top_stacks: vec![TopStack { frames: frames(&["clear_page", "spin_a", "main"]), kernel_frames: 1, samples: 7 }],
                off_cpu_top_stacks: vec![OffCpuStack { frames: frames(&["futex_wait", "lock", "main"]), kernel_frames: 1, blocked_ns: 5 }],
                ..Default::default()
            },
        );
        r.task_types.insert("idle".into(), TypeProfileReport::default());
        assert_eq!(fold_frames(&frames(&["k1", "u1", "u2"]), 1), "u2;u1;k1_[k]");
        let svgs = report_svgs(&r);
        assert_eq!(svgs.len(), 2, "on- and off-CPU of the type with stacks, nothing for the other");
        assert!(svgs.iter().all(|(t, _, svg)| t == "GET /a" && svg.starts_with("<?xml") && svg.contains("main")));
        assert!(svgs[0].2.contains("spin_a") && svgs[1].2.contains("futex_wait"));
    }
}
