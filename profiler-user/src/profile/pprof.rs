//! `--pprof FILE`: the profile in pprof's `profile.proto` (google/pprof `proto/profile.proto`,
//! package `perftools.profiles`), gzipped, as `go tool pprof`, Pyroscope and Grafana read it.
//!
//! Sample types, in this order: `samples/count` and `cpu/nanoseconds` (on-CPU samples, and
//! them times the sampling period), `off_cpu/nanoseconds` (blocked time in the blocking
//! stacks tprof took). Every sample has all three values (on-CPU samples have 0 off-CPU
//! time and the other way round). Labels: `trace_id` and `span_id` (hex) and `task` (the
//! task type) for the requests kept one by one; `task` alone for the rest of a type; `pid`
//! for samples outside any task. Protobuf encoding reuses the exporters' writer.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use super::aggregate::{Profiler, StackTable};
use crate::export::perfetto::proto::{put_varint, Msg};
use crate::model::stack::Stack;

/// Field numbers of profile.proto.
mod f {
    pub const SAMPLE_TYPE: u32 = 1;
    pub const SAMPLE: u32 = 2;
    pub const MAPPING: u32 = 3;
    pub const LOCATION: u32 = 4;
    pub const FUNCTION: u32 = 5;
    pub const STRING_TABLE: u32 = 6;
    pub const TIME_NANOS: u32 = 9;
    pub const DURATION_NANOS: u32 = 10;
    pub const PERIOD_TYPE: u32 = 11;
    pub const PERIOD: u32 = 12;
    pub const COMMENT: u32 = 13;
    pub const DEFAULT_SAMPLE_TYPE: u32 = 14;
    // ValueType
    pub const VT_TYPE: u32 = 1;
    pub const VT_UNIT: u32 = 2;
    // Sample
    pub const S_LOCATION_ID: u32 = 1;
    pub const S_VALUE: u32 = 2;
    pub const S_LABEL: u32 = 3;
    // Label
    pub const L_KEY: u32 = 1;
    pub const L_STR: u32 = 2;
    pub const L_NUM: u32 = 3;
    // Mapping
    pub const M_ID: u32 = 1;
    pub const M_MEMORY_LIMIT: u32 = 3;
    pub const M_FILENAME: u32 = 5;
    pub const M_HAS_FUNCTIONS: u32 = 7;
    pub const M_HAS_FILENAMES: u32 = 8;
    pub const M_HAS_LINE_NUMBERS: u32 = 9;
    // Location
    pub const LOC_ID: u32 = 1;
    pub const LOC_MAPPING_ID: u32 = 2;
    pub const LOC_ADDRESS: u32 = 3;
    pub const LOC_LINE: u32 = 4;
    // Line
    pub const LINE_FUNCTION_ID: u32 = 1;
    pub const LINE_LINE: u32 = 2;
    // Function
    pub const FN_ID: u32 = 1;
    pub const FN_NAME: u32 = 2;
    pub const FN_SYSTEM_NAME: u32 = 3;
    pub const FN_FILENAME: u32 = 4;
}

/// A label of a sample: a string or a number.
pub enum Label {
    Str(&'static str, String),
    Num(&'static str, i64),
}

/// Builds a profile: interned strings, functions and locations (one per distinct frame).
struct Builder<'a> {
    table: &'a StackTable,
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: HashMap<(i64, i64), u64>,
    function_msgs: Vec<Msg>,
    locations: HashMap<(u64, u64, u32), u64>,
    location_msgs: Vec<Msg>,
    /// Stack index -> its location ids, leaf first.
    stack_locs: HashMap<u32, Vec<u64>>,
    samples: Vec<Msg>,
}

impl<'a> Builder<'a> {
    fn new(table: &'a StackTable) -> Self {
        let mut b = Builder {
            table,
            strings: Vec::new(),
            string_ids: HashMap::new(),
            functions: HashMap::new(),
            function_msgs: Vec::new(),
            locations: HashMap::new(),
            location_msgs: Vec::new(),
            stack_locs: HashMap::new(),
            samples: Vec::new(),
        };
        b.s(""); // string_table[0] must be "".
        b
    }

    fn s(&mut self, v: &str) -> i64 {
        if let Some(i) = self.string_ids.get(v) {
            return *i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(v.to_string());
        self.string_ids.insert(v.to_string(), i);
        i
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (self.s(name), self.s(file));
        if let Some(id) = self.functions.get(&key) {
            return *id;
        }
        let id = self.function_msgs.len() as u64 + 1;
        let mut m = Msg::new();
        m.varint(f::FN_ID, id).varint(f::FN_NAME, key.0 as u64).varint(f::FN_SYSTEM_NAME, key.0 as u64);
        if key.1 != 0 {
            m.varint(f::FN_FILENAME, key.1 as u64);
        }
        self.function_msgs.push(m);
        self.functions.insert(key, id);
        id
    }

    fn locations_of(&mut self, idx: u32) -> Vec<u64> {
        if let Some(v) = self.stack_locs.get(&idx) {
            return v.clone();
        }
        let stack: &Stack = self.table.get(idx);
        let frames: Vec<_> = stack.kernel.iter().map(|f| (f, true)).chain(stack.user.iter().map(|f| (f, false))).collect();
        let mut ids = Vec::with_capacity(frames.len());
        for (fr, kernel) in frames {
            let name = if kernel { format!("{} [kernel]", fr.name()) } else { fr.name() };
            let func = self.function(&name, fr.file.as_deref().unwrap_or(""));
            let line = fr.line.unwrap_or(0);
            let key = (fr.addr, func, line);
            let id = match self.locations.get(&key) {
                Some(id) => *id,
                None => {
                    let id = self.location_msgs.len() as u64 + 1;
                    let mut ln = Msg::new();
                    ln.varint(f::LINE_FUNCTION_ID, func);
                    if line > 0 {
                        ln.varint(f::LINE_LINE, u64::from(line));
                    }
                    let mut m = Msg::new();
                    m.varint(f::LOC_ID, id).varint(f::LOC_MAPPING_ID, 1).varint(f::LOC_ADDRESS, fr.addr).msg(f::LOC_LINE, &ln);
                    self.location_msgs.push(m);
                    self.locations.insert(key, id);
                    id
                }
            };
            ids.push(id);
        }
        self.stack_locs.insert(idx, ids.clone());
        ids
    }

    fn sample(&mut self, idx: u32, values: [i64; 3], labels: &[Label]) {
        let locs = self.locations_of(idx);
        let mut m = Msg::new();
        let mut packed = Vec::new();
        for l in &locs {
            put_varint(&mut packed, *l);
        }
        m.bytes(f::S_LOCATION_ID, &packed);
        let mut packed = Vec::new();
        for v in values {
            put_varint(&mut packed, v as u64);
        }
        m.bytes(f::S_VALUE, &packed);
        for l in labels {
            let mut lm = Msg::new();
            match l {
                Label::Str(k, v) => {
                    let (k, v) = (self.s(k), self.s(v));
                    lm.varint(f::L_KEY, k as u64).varint(f::L_STR, v as u64);
                }
                Label::Num(k, v) => {
                    let k = self.s(k);
                    lm.varint(f::L_KEY, k as u64).varint(f::L_NUM, *v as u64);
                }
            }
            m.msg(f::S_LABEL, &lm);
        }
        self.samples.push(m);
    }
}

fn value_type(b: &mut Builder<'_>, ty: &str, unit: &str) -> Msg {
    let mut m = Msg::new();
    let (t, u) = (b.s(ty), b.s(unit));
    m.varint(f::VT_TYPE, t as u64).varint(f::VT_UNIT, u as u64);
    m
}

/// The profile, encoded (not compressed). `duration_ns`: the session's length; `time_ns`:
/// its start, in Unix nanoseconds (0: unknown).
pub fn encode(p: &Profiler, duration_ns: u64, time_ns: u64) -> Vec<u8> {
    let period_ns = if p.sample_hz > 0 { 1_000_000_000 / p.sample_hz as i64 } else { 0 };
    let cpu = |n: u64| [n as i64, n as i64 * period_ns, 0];
    let off = |ns: u64| [0, 0, ns as i64];
    let mut b = Builder::new(&p.stacks);
    let types = [value_type(&mut b, "samples", "count"), value_type(&mut b, "cpu", "nanoseconds"), value_type(&mut b, "off_cpu", "nanoseconds")];
    // What the kept requests account for, per type: the rest of a type goes unlabelled.
    let mut kept: HashMap<&str, (Counts, Counts)> = HashMap::new();
    for r in &p.requests {
        let labels = [
            Label::Str("trace_id", format!("{:032x}", r.key.trace_id)),
            Label::Str("span_id", format!("{:016x}", r.key.span_id)),
            Label::Str("task", r.name.to_string()),
        ];
        let k = kept.entry(&r.name).or_default();
        for (i, n) in &r.cpu {
            b.sample(*i, cpu(*n), &labels);
            *k.0.entry(*i).or_default() += n;
        }
        for (i, ns) in &r.off {
            b.sample(*i, off(*ns), &labels);
            *k.1.entry(*i).or_default() += ns;
        }
    }
    let none = (HashMap::new(), HashMap::new());
    for (name, ty) in &p.types {
        let k = kept.get(&**name).unwrap_or(&none);
        let labels = [Label::Str("task", name.to_string())];
        for (i, n) in sorted(&ty.cpu) {
            let rest = n.saturating_sub(k.0.get(&i).copied().unwrap_or(0));
            if rest > 0 {
                b.sample(i, cpu(rest), &labels);
            }
        }
        for (i, ns) in sorted(&ty.off) {
            let rest = ns.saturating_sub(k.1.get(&i).copied().unwrap_or(0));
            if rest > 0 {
                b.sample(i, off(rest), &labels);
            }
        }
    }
    for (pid, m) in &p.processes {
        for (i, n) in sorted(m) {
            b.sample(i, cpu(n), &[Label::Num("pid", i64::from(*pid))]);
        }
    }
    for (i, n) in sorted(&p.unknown) {
        b.sample(i, cpu(n), &[Label::Str("task", "[unknown task]".into())]);
    }
    let mut out = Msg::new();
    for t in &types {
        out.msg(f::SAMPLE_TYPE, t);
    }
    let samples = std::mem::take(&mut b.samples);
    for s in &samples {
        out.msg(f::SAMPLE, s);
    }
    let mut mapping = Msg::new();
    let tprof = b.s("tprof");
    mapping
        .varint(f::M_ID, 1)
        .varint(f::M_MEMORY_LIMIT, u64::MAX)
        .varint(f::M_FILENAME, tprof as u64)
        .varint(f::M_HAS_FUNCTIONS, 1)
        .varint(f::M_HAS_FILENAMES, 1)
        .varint(f::M_HAS_LINE_NUMBERS, 1);
    out.msg(f::MAPPING, &mapping);
    for l in &b.location_msgs {
        out.msg(f::LOCATION, l);
    }
    for m in &b.function_msgs {
        out.msg(f::FUNCTION, m);
    }
    let period_type = value_type(&mut b, "cpu", "nanoseconds");
    let comment = b.s(&format!("tprof {}: on-CPU samples at {} Hz per CPU, off-CPU time of blocks with stacks", env!("CARGO_PKG_VERSION"), p.sample_hz));
    let default_type = b.s("cpu");
    for s in &b.strings {
        out.str(f::STRING_TABLE, s);
    }
    if time_ns > 0 {
        out.varint(f::TIME_NANOS, time_ns);
    }
    out.varint(f::DURATION_NANOS, duration_ns)
        .msg(f::PERIOD_TYPE, &period_type)
        .varint(f::PERIOD, period_ns as u64)
        .varint(f::COMMENT, comment as u64)
        .varint(f::DEFAULT_SAMPLE_TYPE, default_type as u64);
    out.0
}

/// Stack index -> samples or nanoseconds.
type Counts = HashMap<u32, u64>;

fn sorted(m: &HashMap<u32, u64>) -> Vec<(u32, u64)> {
    let mut v: Vec<(u32, u64)> = m.iter().map(|(k, v)| (*k, *v)).collect();
    v.sort_unstable();
    v
}

/// Writes `--pprof FILE` into `file` (created beforehand): the encoded profile, gzipped.
pub fn write(p: &Profiler, path: &Path, file: &std::fs::File, duration_ns: u64, time_ns: u64) -> io::Result<()> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("--pprof {}: {e}", path.display()));
    let mut gz = flate2::write::GzEncoder::new(io::BufWriter::new(file), flate2::Compression::default());
    gz.write_all(&encode(p, duration_ns, time_ns)).map_err(named)?;
    gz.finish().and_then(|mut w| w.flush()).map_err(named)?;
    Ok(())
}
