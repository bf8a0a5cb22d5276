//! Judged figures (a value against a goal, with by how much it is missed) and a small JSON
//! writer, for the kernel, end-to-end, throughput and soak benchmarks.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::util::{bench_dir, cpu_model, git_head, json_f64, json_str, read_trim};

/// A JSON value (xtask has no serde).
pub(crate) enum J {
    Null,
    Bool(bool),
    Num(f64),
    Int(i128),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub(crate) fn obj<const N: usize>(fields: [(&str, J); N]) -> J {
        J::Obj(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    pub(crate) fn s(v: impl Into<String>) -> J {
        J::Str(v.into())
    }

    pub(crate) fn u(v: u64) -> J {
        J::Int(v as i128)
    }

    pub(crate) fn opt_u(v: Option<u64>) -> J {
        v.map(J::u).unwrap_or(J::Null)
    }

    pub(crate) fn opt_f(v: Option<f64>) -> J {
        v.map(J::Num).unwrap_or(J::Null)
    }

    pub(crate) fn nums(v: &[f64]) -> J {
        J::Arr(v.iter().map(|x| J::Num(*x)).collect())
    }

    /// Adds a field to an object (no-op on anything else).
    pub(crate) fn push(&mut self, key: &str, v: J) {
        if let J::Obj(f) = self {
            f.push((key.to_string(), v));
        }
    }

    fn is_scalar(&self) -> bool {
        !matches!(self, J::Arr(_) | J::Obj(_))
    }

    /// Containers holding only scalars go on one line; others one entry per line.
    pub(crate) fn write(&self, out: &mut String, indent: usize) {
        let pad = |n: usize| " ".repeat(n);
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(v) => out.push_str(&json_f64(*v)),
            J::Int(v) => {
                let _ = write!(out, "{v}");
            }
            J::Str(s) => out.push_str(&json_str(s)),
            J::Arr(v) => {
                if v.iter().all(J::is_scalar) {
                    out.push('[');
                    for (i, x) in v.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        x.write(out, indent);
                    }
                    out.push(']');
                } else {
                    out.push_str("[\n");
                    for (i, x) in v.iter().enumerate() {
                        out.push_str(&pad(indent + 2));
                        x.write(out, indent + 2);
                        out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                    }
                    out.push_str(&pad(indent));
                    out.push(']');
                }
            }
            J::Obj(f) => {
                if f.iter().all(|(_, v)| v.is_scalar()) && f.len() <= 12 {
                    out.push('{');
                    for (i, (k, v)) in f.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        out.push_str(&json_str(k));
                        out.push_str(": ");
                        v.write(out, indent);
                    }
                    out.push('}');
                } else {
                    out.push_str("{\n");
                    for (i, (k, v)) in f.iter().enumerate() {
                        out.push_str(&pad(indent + 2));
                        out.push_str(&json_str(k));
                        out.push_str(": ");
                        v.write(out, indent + 2);
                        out.push_str(if i + 1 < f.len() { ",\n" } else { "\n" });
                    }
                    out.push_str(&pad(indent));
                    out.push('}');
                }
            }
        }
    }
}

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

    pub(crate) fn json(&self) -> J {
        let (kind, g) = match self.goal {
            None => (J::Null, J::Null),
            Some(Goal::AtMost(g)) => (J::s("at_most"), J::Num(g)),
            Some(Goal::AtLeast(g)) => (J::s("at_least"), J::Num(g)),
        };
        J::obj([
            ("name", J::s(&self.name)),
            ("unit", J::s(self.unit.name())),
            ("best", J::Num(self.best)),
            ("median", J::Num(self.median)),
            ("goal", kind),
            ("goal_value", g),
            ("met", self.met().map(J::Bool).unwrap_or(J::Null)),
            ("missed_by", J::opt_f(self.missed_by())),
            ("caveat", self.caveat.clone().map(J::Str).unwrap_or(J::Null)),
            ("detail", J::s(&self.detail)),
        ])
    }
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

/// The machine and run fields every JSON file starts with.
pub(crate) fn header(bench: &str, tprof: &std::path::Path, elapsed: Duration) -> Vec<(String, J)> {
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let cpus = read_trim("/proc/cpuinfo").lines().filter(|l| l.starts_with("processor")).count();
    vec![
        ("schema".into(), J::u(1)),
        ("bench".into(), J::s(bench)),
        ("unix_time".into(), J::u(unix)),
        ("elapsed_s".into(), J::Num(elapsed.as_secs_f64())),
        ("tprof".into(), J::s(tprof.display().to_string())),
        ("git_head".into(), git_head().map(J::Str).unwrap_or(J::Null)),
        (
            "machine".into(),
            J::obj([
                ("kernel", J::s(read_trim("/proc/sys/kernel/osrelease"))),
                ("cpu", J::s(cpu_model())),
                ("cpus", J::u(cpus as u64)),
            ]),
        ),
    ]
}

/// Writes `target/bench/<name>.json`; returns its path.
pub(crate) fn write_json(name: &str, v: &J) -> Result<PathBuf> {
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    let mut s = String::new();
    v.write(&mut s, 0);
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
