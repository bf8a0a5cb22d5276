//! Replays the fuzz corpus (`profiler-user/fuzz/corpus/<target>/`) through the same checks
//! the cargo-fuzz targets run (this crate's `harness` and `traceparent_harness`), without a
//! fuzzing engine, so every input a fuzzer ever kept stays a regression test of the normal
//! suite: no panic on any of them, and every rejection is an error with a message.

use tprof_fuzz_harness::{harness, seeds, traceparent_harness};

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

/// A scratch file of this test process, distinct per call (tests run in parallel).
fn scratch(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("tprof-fuzz-corpus-{}-{tag}-{n}", std::process::id()))
}

/// Runs `check` on every file of the target's corpus; fails naming each input that
/// panicked. Returns how many inputs ran.
fn replay(target: &str, min_files: usize, check: &dyn Fn(&[u8])) -> usize {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= min_files, "{}: {} inputs, expected at least {min_files}", dir.display(), files.len());
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: {} of {} corpus inputs panicked (messages above):\n{}", failed.len(), files.len(), failed.join("\n"));
    files.len()
}

#[test]
fn stapsdt_notes_corpus() {
    replay("stapsdt_notes", 5, &harness::stapsdt_notes);
}

#[test]
fn argspec_corpus() {
    replay("argspec", 5, &harness::argspec);
}

#[test]
fn btf_corpus() {
    replay("btf", 2, &harness::btf);
}

#[test]
fn decode_corpus() {
    replay("decode", 5, &harness::decode);
}

#[test]
fn traceparent_corpus() {
    replay("traceparent", 5, &traceparent_harness::traceparent);
}

#[test]
fn recording_corpus() {
    let path = scratch("recording");
    replay("recording", 2, &|data| harness::recording(data, &path));
    let _ = std::fs::remove_file(&path);
}

/// The hand-built seeds are what they claim to be: the ELF seeds give the probe sites
/// `readelf -n` would, the BTF seed the offsets it was built with, the recording seed a
/// report with its one task. (Otherwise the fuzzer would start from broken inputs.)
#[test]
fn seeds_are_valid_inputs() {
    let elf = seeds::tiny_elf(
        &[seeds::Note { pc: seeds::probe_pc(3), base: seeds::BASE_ADDR - 0x10, sema: seeds::sema_addr(1), provider: "tprof", name: "log", args: "8@%rdi 8@$1" }],
        true,
    );
    let r = tprof::discover::read_notes(&elf).expect("tiny ELF reads");
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    assert_eq!(r.sites.len(), 1);
    let s = &r.sites[0];
    assert_eq!((s.pc, s.semaphore), (seeds::probe_pc(3) + 0x10, seeds::sema_addr(1) + 0x10));
    assert_eq!(elf[s.file_offset as usize], 0x90, "the site is a nop of .text");
    assert_eq!(s.args.as_ref().map(Vec::len), Ok(2));

    let notes = &seeds::elf_seeds()[0].1;
    let r = tprof::discover::read_notes(notes).unwrap();
    assert_eq!((r.sites.len(), r.skipped.len()), (8, 0), "{r:?}");
    let odd = seeds::elf_seeds().into_iter().find(|s| s.0.contains("odd")).unwrap().1;
    let r = tprof::discover::read_notes(&odd).unwrap();
    assert_eq!((r.discarded, r.skipped.len()), (1, 3), "{r:?}");
    assert_eq!(r.sites.iter().filter(|s| s.args.is_err()).count(), 2, "{r:?}");

    let btf = tprof::btf::Btf::from_bytes(&seeds::btf_seeds()[0].1).expect("kernel-like BTF seed");
    let off = |f: &str| btf.member_offset("task_struct", f).unwrap();
    assert_eq!([off("pid"), off("tgid"), off("flags")], [152, 156, 4]);

    for (name, bytes) in seeds::decode_seeds() {
        tprof::decode::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    let path = scratch("seed-check");
    for (name, bytes) in seeds::recording_seeds(&scratch("seed-make")) {
        std::fs::write(&path, &bytes).unwrap();
        let t = tprof::record::read_tables(&path).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!((t.late.len(), t.stacks.len(), t.truncated), (1, 1, None), "{name}");
        assert_eq!(t.report.is_some(), name.contains("complete"), "{name}");
        let report = tprof::report::run(&path, tprof::sink::NullSink, tprof::sink::Filter::default(), true).unwrap();
        let get = report.stats.by_name.get("GET /users").map(|s| (s.wall.count, s.incomplete));
        assert_eq!(get, Some((1, 0)), "{name}: the one task, complete");
        assert_eq!(report.undecodable, 0, "{name}");
    }
    let _ = std::fs::remove_file(&path);
}
