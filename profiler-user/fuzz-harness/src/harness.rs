//! What each fuzz target does with one input, shared by the cargo-fuzz targets
//! (`profiler-user/fuzz/fuzz_targets/*.rs`, through the `tprof_fuzz` lib) and by the
//! engine-free corpus replay in `tests/corpus.rs` of this crate, so both check exactly the
//! same things.
//!
//! Every function panics (which the fuzzer reports as a crash) when the code under test
//! panics, or when an invariant the rest of tprof relies on does not hold: an error without
//! a message, an argument spec that would make the eBPF side read outside `struct pt_regs`,
//! a probe site whose offsets do not lie in the file.
//!
//! Depends on the `tprof` lib and std only (the traceparent harness, which needs
//! `usdt_probes`, is in `traceparent_harness.rs`).

use std::path::Path;

use profiler_common::{arg, UsdtArg, MAX_USDT_ARGS, NO_REG};

/// Size of x86_64 `struct pt_regs` (21 registers of 8 bytes): every register offset of a
/// parsed argument must be inside it.
const PT_REGS_SIZE: u16 = 21 * 8;

/// An error's message: never empty.
fn message(e: &dyn std::fmt::Display, what: &str) -> String {
    let m = e.to_string();
    assert!(!m.trim().is_empty(), "{what}: error with an empty message");
    m
}

fn check_arg(a: &UsdtArg, spec: &str) {
    assert!(matches!(a.size, 1 | 2 | 4 | 8), "{spec:?}: size {}", a.size);
    assert!(a.signed <= 1, "{spec:?}: signed {}", a.signed);
    let reg_ok = |off: u16| off == NO_REG || (off < PT_REGS_SIZE && off.is_multiple_of(8));
    assert!(reg_ok(a.reg_off), "{spec:?}: reg_off {}", a.reg_off);
    assert!(reg_ok(a.index_reg_off), "{spec:?}: index_reg_off {}", a.index_reg_off);
    match a.kind {
        arg::REG => assert!(a.reg_off != NO_REG && a.index_reg_off == NO_REG && a.scale == 0, "{spec:?}: {a:?}"),
        arg::CONST => assert!(a.reg_off == NO_REG && a.index_reg_off == NO_REG && a.scale == 0, "{spec:?}: {a:?}"),
        arg::MEM => {
            // No base: `(,%index,scale)` (absolute addresses need the file: not parsed here).
            assert!(a.reg_off != NO_REG || a.index_reg_off != NO_REG, "{spec:?}: memory operand without base nor index: {a:?}");
            if a.index_reg_off == NO_REG {
                assert_eq!(a.scale, 0, "{spec:?}: {a:?}");
            } else {
                assert!(matches!(a.scale, 1 | 2 | 4 | 8), "{spec:?}: {a:?}");
            }
        }
        k => panic!("{spec:?}: unknown argument kind {k}"),
    }
}

/// Checks a parsed argument spec string (as found in a note, or fuzzed directly).
fn check_args(spec: &str, parsed: &Result<Vec<UsdtArg>, tprof::discover::ArgSpecError>) {
    match parsed {
        Ok(args) => {
            assert!(args.len() <= MAX_USDT_ARGS, "{spec:?}: {} arguments", args.len());
            assert_eq!(args.len(), spec.split_whitespace().count(), "{spec:?}");
            for a in args {
                check_arg(a, spec);
            }
        }
        Err(e) => {
            let m = message(e, "parse_args");
            // Hostile notes may carry megabytes of spec: messages quote a bounded amount.
            assert!(m.len() <= 4 * 1024, "{spec:?}: message of {} bytes", m.len());
        }
    }
}

/// `argspec`: `tprof::discover::parse_args` (and `parse_arg` on each word) on any text.
pub fn argspec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = tprof::discover::parse_args(&text);
    check_args(&text, &parsed);
    if let Ok(args) = &parsed {
        // parse_args is parse_arg over the words.
        let again: Vec<UsdtArg> = text.split_whitespace().map(|w| tprof::discover::parse_arg(w).expect("word of an accepted spec")).collect();
        assert_eq!(&again, args, "{text:?}");
    }
    for word in text.split_whitespace().take(64) {
        match tprof::discover::parse_arg(word) {
            Ok(a) => check_arg(&a, word),
            Err(e) => {
                message(&e, "parse_arg");
            }
        }
    }
}

/// `stapsdt_notes`: `tprof::discover::read_notes` on any bytes (an ELF file, usually).
pub fn stapsdt_notes(data: &[u8]) {
    match tprof::discover::read_notes(data) {
        Ok(report) => {
            for s in &report.skipped {
                assert!(!s.trim().is_empty(), "a skipped note without a reason");
            }
            for site in &report.sites {
                assert!(!site.provider.is_empty() && !site.name.is_empty(), "{site:?}");
                // Offsets are file offsets: a uprobe at an offset past the end of the file
                // fails to attach, but must never be produced from a well-formed segment.
                // (The segment's p_offset itself is not checked against the file size here:
                // the kernel refuses such a uprobe with an error.)
                if site.semaphore == 0 {
                    assert_eq!(site.semaphore_offset, 0, "{site:?}");
                }
                check_args(&site.args_text, &site.args);
            }
        }
        Err(e) => {
            message(&e, "read_notes");
        }
    }
}

/// `btf`: `tprof::btf::Btf::from_bytes`, then the lookups tprof does (and a fuzzed one).
pub fn btf(data: &[u8]) {
    let btf = match tprof::btf::Btf::from_bytes(data) {
        Ok(b) => b,
        Err(e) => {
            message(&format!("{e:#}"), "Btf::from_bytes");
            return;
        }
    };
    let mut lookups: Vec<(String, String)> = [("task_struct", "pid"), ("task_struct", "tgid"), ("task_struct", "flags")]
        .iter()
        .map(|(s, f)| (s.to_string(), f.to_string()))
        .collect();
    // Names taken from the blob itself, so the fuzzer reaches the hits: the first two
    // NUL-terminated strings of the input's tail.
    let mut words = data.rsplit(|&b| b == 0).filter(|w| !w.is_empty() && w.len() < 64);
    if let (Some(f), Some(s)) = (words.next(), words.next()) {
        lookups.push((String::from_utf8_lossy(s).into_owned(), String::from_utf8_lossy(f).into_owned()));
    }
    for (s, f) in lookups {
        match btf.member_offset(&s, &f) {
            Ok(off) => assert!(off < u32::MAX / 8 + 1, "{s}.{f} at {off}"),
            Err(e) => {
                message(&format!("{e:#}"), "member_offset");
            }
        }
    }
}

/// `decode`: `tprof::decode::decode` on any bytes, and `decode_with` with a late reader
/// that returns fewer or more bytes than asked.
pub fn decode(data: &[u8]) {
    let plain = tprof::decode::decode(data);
    match &plain {
        Ok(rec) => {
            let _ = rec.meta();
        }
        Err(e) => {
            message(e, "decode");
        }
    }
    let tail = data.last().copied().unwrap_or(0) as usize;
    let mut late = |_pid: u32, _addr: u64, len: usize| -> Option<Vec<u8>> {
        match tail % 3 {
            0 => None,
            1 => Some(vec![b'L'; len / 2]),
            _ => Some(vec![0xff; len + 7]),
        }
    };
    let with = tprof::decode::decode_with(data, &mut late);
    // The late reader only fills strings: it never changes whether a record decodes.
    assert_eq!(plain.is_ok(), with.is_ok(), "decode and decode_with disagree");
}

/// `recording`: the bytes as a `tprof record` file at `scratch`: `read_tables`, every
/// frame through the decoder, then the whole `tprof report` pipeline (correlator, text and
/// NDJSON sinks, the Perfetto, OTLP and Zipkin exporters writing to /dev/null).
pub fn recording(data: &[u8], scratch: &Path) {
    std::fs::write(scratch, data).expect("writing the scratch recording");
    match tprof::record::read_tables(scratch) {
        Ok(t) => {
            if let Some(why) = &t.truncated {
                assert!(!why.trim().is_empty(), "truncated without a reason");
            }
        }
        Err(e) => {
            message(&format!("{e:#}"), "read_tables");
        }
    }
    if let Ok(mut frames) = tprof::record::Frames::open(scratch) {
        loop {
            match frames.next_frame() {
                Ok(Some((tag, bytes))) => {
                    if tag == tprof::record::tag::RAW {
                        let _ = tprof::decode::decode(&bytes);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    message(&format!("{e:#}"), "next_frame");
                    break;
                }
            }
        }
    }
    let _ = report(scratch);
    let _ = std::fs::remove_file(scratch);
}

fn report(path: &Path) -> anyhow::Result<()> {
    use tprof::clock::WallClock;
    use tprof::export::{otlp::OtlpSink, perfetto::PerfettoSink, zipkin::ZipkinSink};
    use tprof::sink::{json::JsonSink, tee::Tee, text::TextSink, Filter};
    let null = Path::new("/dev/null");
    let clock = WallClock { offset_ns: 1_700_000_000_000_000_000 };
    let mut tee = Tee::new(Box::new(TextSink::new(std::io::sink(), 0)), true);
    tee.add("json", Box::new(JsonSink::new(std::io::sink())));
    tee.add("perfetto", Box::new(PerfettoSink::create(null)?));
    tee.add("otlp", Box::new(OtlpSink::new(Some(null), None, clock)?));
    tee.add("zipkin", Box::new(ZipkinSink::new(Some(null), None, clock)?));
    let filter = Filter { events: true, ..Filter::default() };
    match tprof::report::run(path, tee, filter, true) {
        Ok(_) => Ok(()),
        Err(e) => {
            message(&format!("{e:#}"), "report::run");
            Err(e)
        }
    }
}
