//! Foreign probes mapped onto tprof's events: which USDT probes of other providers
//! (`postgresql:query__start`...) stand for a task begin or end, a region, or a log, and
//! how the kernel reads their values. The grammar is `usdt-probes/MAPPING.md`.
//!
//! * [`parse`] reads a mapping file (`--probes FILE`), every error naming its line;
//! * [`presets`] holds the built-in mappings (`--preset NAME`), written in that grammar;
//! * [`compile`] turns a rule and a probe site into the site's kernel spec (the argument
//!   remap, the actions), refusing what would be fetched wrongly;
//! * [`sql`] normalizes SQL task names and reads sqlcommenter `traceparent`s;
//! * [`rekey`] is the pipeline stage that applies both to generated tasks.

pub mod compile;
pub mod parse;
pub mod presets;
pub mod rekey;
pub mod sql;

use std::fmt;

pub use compile::{compile_site, Coverage};
pub use parse::parse_mapping;

/// The integers of a foreign log value as the kernel copies them (`strflag::INTS`: per
/// value one byte, 1 for signed, then 64 bits little-endian), in decimal joined by `/`.
pub fn format_ints(bytes: &[u8]) -> String {
    let mut parts = Vec::new();
    for v in bytes.chunks_exact(9) {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&v[1..9]);
        let x = u64::from_le_bytes(raw);
        parts.push(if v[0] != 0 { (x as i64).to_string() } else { x.to_string() });
    }
    parts.join("/")
}

/// What a foreign probe stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    TaskBegin,
    TaskEnd,
    RegionBegin,
    RegionEnd,
    Log,
}

impl Event {
    pub fn keyword(self) -> &'static str {
        match self {
            Event::TaskBegin => "task-begin",
            Event::TaskEnd => "task-end",
            Event::RegionBegin => "region-begin",
            Event::RegionEnd => "region-end",
            Event::Log => "log",
        }
    }
}

/// Where a value comes from: note argument indices, from 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    None,
    /// `cstr(argN)`: a NUL-terminated string at the address argument N holds.
    CStr(usize),
    /// `str(argN, argM)`: address in argument N, length in argument M.
    Str(usize, usize),
    /// `int(argN, ...)`: integers, in decimal, joined by `/`.
    Ints(Vec<usize>),
}

/// One event of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    pub event: Event,
    /// Region name or log key.
    pub text: String,
    pub value: Value,
    /// Task begin: `profiler_common::foreign::TASK_SQL`...
    pub flags: u8,
    /// Line of the mapping it came from.
    pub line: usize,
}

/// The actions of one foreign probe, in the mapping's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub provider: String,
    pub name: String,
    pub actions: Vec<Action>,
    pub line: usize,
}

impl Rule {
    pub fn full_name(&self) -> String {
        format!("{}:{}", self.provider, self.name)
    }
}

/// A whole mapping: a file or a preset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeMapping {
    /// Where it came from (a path, or `preset NAME`), for messages.
    pub source: String,
    pub rules: Vec<Rule>,
}

impl ProbeMapping {
    /// The rule for probe `provider:name`.
    pub fn rule(&self, provider: &str, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.provider == provider && r.name == name)
    }

    /// `provider:name` of every mapped probe (what the privileged helper may attach).
    pub fn probe_names(&self) -> Vec<String> {
        self.rules.iter().map(Rule::full_name).collect()
    }

    /// Merges `other` in (`--preset` and `--probes` together); a probe mapped by both is
    /// an error.
    pub fn merge(&mut self, other: ProbeMapping) -> Result<(), String> {
        for r in other.rules {
            if self.rule(&r.provider, &r.name).is_some() {
                return Err(format!("{}: probe {} is mapped by {} too", other.source, r.full_name(), self.source));
            }
            self.rules.push(r);
        }
        self.source = if self.source.is_empty() { other.source } else { format!("{} and {}", self.source, other.source) };
        Ok(())
    }

    /// The mapping of `--preset` names and `--probes` files, merged (None: neither given).
    pub fn load(presets: &[String], files: &[std::path::PathBuf]) -> Result<Option<ProbeMapping>, MappingError> {
        let mut all: Option<ProbeMapping> = None;
        let mut add = |m: ProbeMapping| -> Result<(), MappingError> {
            match &mut all {
                None => all = Some(m),
                Some(a) => a.merge(m).map_err(|e| MappingError { source: String::new(), line: 0, message: e })?,
            }
            Ok(())
        };
        for p in presets {
            add(presets::preset(p)?)?;
        }
        for f in files {
            let text = std::fs::read_to_string(f)
                .map_err(|e| MappingError { source: f.display().to_string(), line: 0, message: format!("cannot read: {e}") })?;
            add(parse_mapping(&text, &f.display().to_string())?)?;
        }
        Ok(all)
    }
}

/// A mapping that cannot be used: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingError {
    pub source: String,
    /// 1-based; 0 when the error is not about one line.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.source.is_empty(), self.line) {
            (true, _) => write!(f, "{}", self.message),
            (false, 0) => write!(f, "{}: {}", self.source, self.message),
            (false, l) => write!(f, "{}:{l}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for MappingError {}

#[cfg(test)]
mod tests {
    #[test]
    fn ints_as_the_kernel_copies_them() {
        let mut b = vec![0u8];
        b.extend(1663u64.to_le_bytes());
        b.push(1);
        b.extend((-5i64 as u64).to_le_bytes());
        b.push(0);
        b.extend(u64::MAX.to_le_bytes());
        assert_eq!(super::format_ints(&b), format!("1663/-5/{}", u64::MAX));
        assert_eq!(super::format_ints(&b[..12]), "1663", "a cut value is left out");
    }
}
