//! Judged figures (a value against a goal, with by how much it is missed), and the header
//! and writer of every benchmark's `target/bench/<name>.json` (serde; NaN and infinities,
//! figures that could not be measured, are written as `null`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::util::{bench_dir, cpu_model, git_head, read_trim};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

/// How a figure is shown.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Unit {
    /// A ratio, shown `x1.23`.
    Ratio,
    Ns,
    /// Events per second.
    Rate,
    Percent,
    Mib,
}

pub(crate) fn fmt_rate(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 1e6 {
        format!("{:.2} M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0} k/s", v / 1e3)
    } else {
        format!("{v:.0} /s")
    }
}

impl Unit {
    pub(crate) fn fmt(self, v: f64) -> String {
        if !v.is_finite() {
            return "n/a".into();
        }
        match self {
            Unit::Ratio => format!("x{v:.3}"),
            Unit::Ns => format!("{v:.0} ns"),
            Unit::Rate => fmt_rate(v),
            Unit::Percent => format!("{v:+.1}%"),
            Unit::Mib => format!("{v:.1} MiB"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Ratio => "x",
            Unit::Ns => "ns",
            Unit::Rate => "per_s",
            Unit::Percent => "percent",
            Unit::Mib => "MiB",
        }
    }
}

/// A figure of the run, judged on `median` when it has a goal. `best` is the same figure
/// from the best samples (minimum times, maximum rates).
pub(crate) struct Judged {
    pub(crate) name: String,
    pub(crate) unit: Unit,
    pub(crate) best: f64,
    pub(crate) median: f64,
    pub(crate) goal: Option<Goal>,
    /// Why a missed goal says nothing about tprof (e.g. the load could not reach it): the
    /// verdict then reads NOT DEMONSTRATED, with this reason and the shortfall.
    pub(crate) caveat: Option<String>,
    pub(crate) detail: String,
}

impl Judged {
    pub(crate) fn met(&self) -> Option<bool> {
        let v = self.median;
        match self.goal? {
            _ if !v.is_finite() => Some(false),
            Goal::AtMost(g) => Some(v <= g),
            Goal::AtLeast(g) => Some(v >= g),
        }
    }

    /// How far from the goal, in the figure's unit (positive: missed).
    pub(crate) fn missed_by(&self) -> Option<f64> {
        match (self.goal?, self.met()?) {
            (_, true) => None,
            (Goal::AtMost(g), false) => Some(self.median - g),
            (Goal::AtLeast(g), false) => Some(g - self.median),
        }
    }

    pub(crate) fn verdict(&self) -> String {
        let u = self.unit;
        let goal = match self.goal {
            None => return String::new(),
            Some(Goal::AtMost(g)) => format!("<= {}", u.fmt(g)),
            Some(Goal::AtLeast(g)) => format!(">= {}", u.fmt(g)),
        };
        match (self.met(), self.missed_by()) {
            (Some(true), _) => format!("ok (goal {goal})"),
            (Some(false), Some(by)) if by.is_finite() => {
                let g = match self.goal {
                    Some(Goal::AtMost(g) | Goal::AtLeast(g)) => g,
                    None => f64::NAN,
                };
                let pct = if g != 0.0 { by / g.abs() * 100.0 } else { f64::NAN };
                let by_s = match u {
                    Unit::Ratio => format!("{by:.2}x"),
                    Unit::Percent => format!("{by:.1} points"),
                    _ => u.fmt(by),
                };
                let side = if matches!(self.goal, Some(Goal::AtMost(_))) { "over" } else { "short of" };
                match &self.caveat {
                    Some(why) => format!("NOT DEMONSTRATED: {by_s} ({pct:.0}%) {side} the goal {goal}, {why}"),
                    None => format!("MISSED by {by_s} ({pct:.0}% {side} the goal {goal})"),
                }
            }
            _ => format!("MISSED: not measured (goal {goal})"),
        }
    }

    /// The figure as it is written to the JSON files.
    pub(crate) fn json(&self) -> JudgedJson<'_> {
        let (goal, goal_value) = match self.goal {
            None => (None, None),
            Some(Goal::AtMost(g)) => (Some("at_most"), Some(g)),
            Some(Goal::AtLeast(g)) => (Some("at_least"), Some(g)),
        };
        JudgedJson {
            name: &self.name,
            unit: self.unit.name(),
            best: self.best,
            median: self.median,
            goal,
            goal_value,
            met: self.met(),
            missed_by: self.missed_by(),
            caveat: self.caveat.as_deref(),
            detail: &self.detail,
        }
    }
}

/// A [`Judged`] figure in the JSON files.
#[derive(Serialize)]
pub(crate) struct JudgedJson<'a> {
    name: &'a str,
    unit: &'static str,
    best: f64,
    median: f64,
    /// `at_most` or `at_least`.
    goal: Option<&'static str>,
    goal_value: Option<f64>,
    met: Option<bool>,
    missed_by: Option<f64>,
    caveat: Option<&'a str>,
    detail: &'a str,
}

/// The figures of a run, for the JSON files.
pub(crate) fn figures_json(figs: &[Judged]) -> Vec<JudgedJson<'_>> {
    figs.iter().map(Judged::json).collect()
}

/// Renders judged figures as table lines.
pub(crate) fn render_judged(s: &mut String, title: &str, figs: &[Judged]) {
    if figs.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n{title} (best / median; goals judged on the median)");
    for f in figs {
        let v = format!("{} / {}", f.unit.fmt(f.best), f.unit.fmt(f.median));
        let _ = writeln!(s, "  {:<52} {:>22}  {}", f.name, v, f.verdict());
        if !f.detail.is_empty() {
            let _ = writeln!(s, "  {:<52} {:>22}  {}", "", "", f.detail);
        }
    }
}

/// The machine and run fields every JSON file starts with (`#[serde(flatten)]` it into the
/// file's top-level struct).
#[derive(Serialize)]
pub(crate) struct Header {
    schema: u32,
    bench: &'static str,
    unix_time: u64,
    elapsed_s: f64,
    tprof: String,
    git_head: Option<String>,
    machine: Machine,
}

#[derive(Serialize)]
struct Machine {
    kernel: String,
    cpu: String,
    cpus: usize,
}

pub(crate) fn header(bench: &'static str, tprof: &std::path::Path, elapsed: Duration) -> Header {
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let cpus = read_trim("/proc/cpuinfo").lines().filter(|l| l.starts_with("processor")).count();
    Header {
        schema: 1,
        bench,
        unix_time: unix,
        elapsed_s: elapsed.as_secs_f64(),
        tprof: tprof.display().to_string(),
        git_head: git_head(),
        machine: Machine { kernel: read_trim("/proc/sys/kernel/osrelease"), cpu: cpu_model(), cpus },
    }
}

/// A JSON object whose keys keep the order they are given in.
pub(crate) struct InOrder<K, V>(pub(crate) Vec<(K, V)>);

impl<K: Serialize, V: Serialize> Serialize for InOrder<K, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// Writes `target/bench/<name>.json` (pretty-printed); returns its path.
pub(crate) fn write_json(name: &str, v: &impl Serialize) -> Result<PathBuf> {
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    let mut s = serde_json::to_string_pretty(v).with_context(|| format!("serializing {name}.json"))?;
    s.push('\n');
    std::fs::write(&path, s).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Minimum, median and maximum of samples (NaN when empty).
pub(crate) fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let n = s.len();
    let med = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    (s[0], med, s[n - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_serialize_in_order_with_unmeasured_values_as_null() {
        let fig = Judged {
            name: "ratio".into(),
            unit: Unit::Ratio,
            best: 1.0,
            median: f64::NAN,
            goal: Some(Goal::AtMost(1.2)),
            caveat: None,
            detail: String::new(),
        };
        let runs = InOrder(vec![("tprof", fig.json()), ("bare", fig.json())]);
        let text = serde_json::to_string(&runs).unwrap();
        assert!(text.starts_with("{\"tprof\":{\"name\":\"ratio\",\"unit\":\"x\",\"best\":1.0,\"median\":null,"), "{text}");
        assert!(text.contains("\"goal\":\"at_most\",\"goal_value\":1.2,\"met\":false,\"missed_by\":null"), "{text}");
        assert!(text.find("\"tprof\"") < text.find("\"bare\""), "{text}");
    }
}
