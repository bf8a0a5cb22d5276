//! The C header `include/tprof.h` emits the same probes as this crate.
//!
//! Compiles `examples/c/tprof_example.c` with gcc at -O0 and -O2 (warnings are errors), runs
//! it once, and decodes the `.note.stapsdt` notes of the binary: provider `tprof`, all seven
//! probe names, the argument counts of the Rust probes (read from this test's own binary, and
//! the probe table in `profiler-common` they are generated from), 8-byte arguments in operand
//! forms tprof decodes, semaphores inside `.probes`, and a `nop` at every probe site. Needs
//! gcc and `<sys/sdt.h>`; without them the test fails and says to run `cargo xtask setup`. No
//! root needed. The header's text and ABI.md's probe table are also checked against that
//! probe table (no compiler needed).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use object::elf::{FileHeader64, PF_X, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::LittleEndian;

use profiler_common::{probe, ArgKind, ProbeDef};

/// The tprof probes and their argument counts (ABI v1: `profiler_common::tprof_probes!`).
fn probes() -> Vec<(&'static str, usize)> {
    probe::ALL.iter().map(|p| (p.name, p.nargs())).collect()
}

/// A probe's note arguments by ABI.md's names (a string `name` is `name_ptr`, `name_len`).
fn abi_args(p: &ProbeDef) -> Vec<String> {
    p.args
        .iter()
        .flat_map(|a| match a.kind {
            ArgKind::U64 => vec![a.name.to_string()],
            ArgKind::Str => vec![format!("{}_ptr", a.name), format!("{}_len", a.name)],
        })
        .collect()
}

const SETUP_HINT: &str = "run `cargo xtask setup` (it installs gcc and systemtap-sdt-dev, which provides <sys/sdt.h>)";

/// One decoded SDT note.
#[derive(Debug, Clone)]
struct Note {
    pc: u64,
    base: u64,
    semaphore: u64,
    provider: String,
    name: String,
    args: Vec<String>,
}

/// The parts of an ELF file the checks need.
struct Elf {
    data: Vec<u8>,
    notes: Vec<Note>,
    /// (address, size) of `.probes`, if present.
    probes: Option<(u64, u64)>,
    /// Address of `.stapsdt.base`, if present.
    stapsdt_base: Option<u64>,
    /// Executable `PT_LOAD` segments: (p_vaddr, p_offset, p_filesz).
    exec_segments: Vec<(u64, u64, u64)>,
}

fn u32_at(d: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(d[off..off + 4].try_into().unwrap())
}

fn u64_at(d: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(d[off..off + 8].try_into().unwrap())
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Takes one NUL-terminated string off the front of `rest`.
fn take_cstr(rest: &mut &[u8], what: &str) -> String {
    let nul = rest.iter().position(|&b| b == 0).unwrap_or_else(|| panic!("SDT note: {what} is not NUL-terminated"));
    let s = std::str::from_utf8(&rest[..nul]).unwrap_or_else(|e| panic!("SDT note: {what} is not UTF-8: {e}")).to_string();
    *rest = &rest[nul + 1..];
    s
}

/// Decodes a `.note.stapsdt` section: notes of `namesz`, `descsz`, `type` (u32 each), the
/// name padded to 4 bytes, then the desc padded to 4 bytes. Notes named `stapsdt` of type 3
/// carry: pc u64, base u64, semaphore u64, provider\0, name\0, args\0.
fn decode_notes(sec: &[u8]) -> Vec<Note> {
    let mut notes = Vec::new();
    let mut off = 0;
    while off + 12 <= sec.len() {
        let namesz = u32_at(sec, off) as usize;
        let descsz = u32_at(sec, off + 4) as usize;
        let ntype = u32_at(sec, off + 8);
        let name_off = off + 12;
        let desc_off = name_off + align4(namesz);
        let next = desc_off + align4(descsz);
        assert!(desc_off + descsz <= sec.len(), "SDT note at {off:#x} runs past its section");
        let name = &sec[name_off..name_off + namesz];
        let desc = &sec[desc_off..desc_off + descsz];
        off = next;
        if name != b"stapsdt\0" || ntype != 3 {
            continue;
        }
        assert!(desc.len() >= 24, "SDT note desc too short: {} bytes", desc.len());
        let mut rest = &desc[24..];
        let provider = take_cstr(&mut rest, "provider");
        let probe = take_cstr(&mut rest, "probe name");
        let args = take_cstr(&mut rest, "argument spec");
        notes.push(Note {
            pc: u64_at(desc, 0),
            base: u64_at(desc, 8),
            semaphore: u64_at(desc, 16),
            provider,
            name: probe,
            args: args.split_ascii_whitespace().map(str::to_string).collect(),
        });
    }
    notes
}

fn read_elf(path: &Path) -> Elf {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let (notes, probes, stapsdt_base, exec_segments) = {
        let d = data.as_slice();
        let hdr = FileHeader64::<LittleEndian>::parse(d).unwrap_or_else(|e| panic!("{}: not a 64-bit little-endian ELF: {e}", path.display()));
        let endian = hdr.endian().unwrap();
        let sections = hdr.sections(endian, d).unwrap();
        let mut notes = None;
        let mut probes = None;
        let mut stapsdt_base = None;
        for s in sections.iter() {
            match sections.section_name(endian, s).unwrap_or(b"") {
                b".note.stapsdt" => notes = Some(decode_notes(s.data(endian, d).unwrap())),
                b".probes" => probes = Some((s.sh_addr(endian), s.sh_size(endian))),
                b".stapsdt.base" => stapsdt_base = Some(s.sh_addr(endian)),
                _ => {}
            }
        }
        let exec_segments = hdr
            .program_headers(endian, d)
            .unwrap()
            .iter()
            .filter(|p| p.p_type(endian) == PT_LOAD && p.p_flags(endian) & PF_X != 0)
            .map(|p| (p.p_vaddr(endian), p.p_offset(endian), p.p_filesz(endian)))
            .collect();
        let notes = notes.unwrap_or_else(|| panic!("{} has no .note.stapsdt section", path.display()));
        (notes, probes, stapsdt_base, exec_segments)
    };
    Elf { data, notes, probes, stapsdt_base, exec_segments }
}

impl Elf {
    /// File offset of a code address, through the executable segment holding it.
    fn file_offset(&self, addr: u64) -> Option<usize> {
        self.exec_segments
            .iter()
            .find(|&&(vaddr, _, filesz)| addr >= vaddr && addr - vaddr < filesz)
            .map(|&(vaddr, offset, _)| (addr - vaddr + offset) as usize)
    }

    fn tprof_notes(&self) -> Vec<&Note> {
        self.notes.iter().filter(|n| n.provider == "tprof").collect()
    }
}

fn is_reg(s: &str) -> bool {
    s.strip_prefix('%').is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn is_int(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    if let Some(hex) = s.strip_prefix("0x") {
        return !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// An operand tprof decodes: `%reg`, `$imm` or `[disp](%base[,%index[,scale]])` with a
/// numeric displacement. Symbolic operands (`sym(%rip)`, `$sym`) are what it cannot read.
fn decodable_operand(op: &str) -> bool {
    if is_reg(op) {
        return true;
    }
    if let Some(imm) = op.strip_prefix('$') {
        return is_int(imm);
    }
    let Some(open) = op.find('(') else { return false };
    let Some(inner) = op[open + 1..].strip_suffix(')') else { return false };
    let disp = &op[..open];
    let mut parts = inner.split(',');
    let base_ok = parts.next().is_some_and(|b| b.is_empty() || is_reg(b));
    let index_ok = parts.next().is_none_or(is_reg);
    let scale_ok = parts.next().is_none_or(|s| matches!(s, "1" | "2" | "4" | "8"));
    (disp.is_empty() || is_int(disp)) && base_ok && index_ok && scale_ok && parts.next().is_none()
}

fn unique_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "usdt-probes-c-header-{}-{}-{nanos}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Fails loudly, pointing at `cargo xtask setup`, unless gcc can include <sys/sdt.h>.
fn require_gcc_and_sdt_h() {
    let child = Command::new("gcc")
        .args(["-E", "-x", "c", "-o", "/dev/null", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("gcc is not installed, so the C header cannot be tested: {SETUP_HINT}")
        }
        Err(e) => panic!("running gcc: {e}"),
    };
    child.stdin.take().unwrap().write_all(b"#include <sys/sdt.h>\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "gcc cannot include <sys/sdt.h>, so the C header cannot be tested: {SETUP_HINT}\ngcc said:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles the C example with gcc at `opt`; fails loudly if gcc or <sys/sdt.h> is missing.
fn compile_example(opt: &str, dir: &Path) -> PathBuf {
    require_gcc_and_sdt_h();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("examples/c/tprof_example.c");
    let include = root.join("include");
    assert!(src.is_file(), "missing {}", src.display());
    assert!(include.join("tprof.h").is_file(), "missing {}/tprof.h", include.display());
    let out = dir.join(format!("tprof_example{opt}"));
    let result = Command::new("gcc")
        .args([opt, "-g", "-Wall", "-Wextra", "-Werror", "-fno-omit-frame-pointer", "-I"])
        .arg(&include)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output();
    let result = match result {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("gcc is not installed, so the C header cannot be tested: {SETUP_HINT}")
        }
        Err(e) => panic!("running gcc: {e}"),
    };
    let stderr = String::from_utf8_lossy(&result.stderr);
    if !result.status.success() && stderr.contains("sys/sdt.h") {
        panic!("<sys/sdt.h> is missing, so the C header cannot be tested: {SETUP_HINT}\ngcc said:\n{stderr}");
    }
    assert!(result.status.success(), "gcc {opt} failed on {}:\n{stderr}", src.display());
    assert!(stderr.trim().is_empty(), "gcc {opt} warned:\n{stderr}");
    out
}

/// Runs the example: it prints `ready <pid>`, waits for a newline, then serves 3 requests.
fn run_example(bin: &Path) {
    let mut child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    let child_pid = child.id();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{} failed: {stdout}{}", bin.display(), String::from_utf8_lossy(&out.stderr));
    let first = stdout.lines().next().unwrap_or("");
    let pid = first.strip_prefix("ready ").unwrap_or_else(|| panic!("first line is not `ready <pid>`: {first:?}"));
    assert_eq!(pid.parse::<u32>().ok(), Some(child_pid), "bad pid in {first:?}");
    assert_eq!(stdout.matches(" done\n").count(), 3, "expected 3 requests:\n{stdout}");
    assert!(stdout.ends_with("done\n"), "example did not finish:\n{stdout}");
}

/// Argument count per tprof probe name; all sites of one probe must agree.
fn arg_counts(notes: &[&Note], what: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for n in notes {
        let prev = counts.insert(n.name.clone(), n.args.len());
        assert!(prev.is_none_or(|p| p == n.args.len()), "{what}: sites of tprof:{} disagree on the argument count", n.name);
    }
    counts
}

fn check_binary(opt: &str) {
    let dir = unique_dir(opt.trim_start_matches('-'));
    let bin = compile_example(opt, &dir);
    let elf = read_elf(&bin);
    let what = format!("C example at {opt}");

    let notes = elf.tprof_notes();
    assert!(!notes.is_empty(), "{what}: no tprof notes (all notes: {:?})", elf.notes);
    let counts = arg_counts(&notes, &what);
    let probes = probes();
    for &(name, nargs) in &probes {
        assert_eq!(counts.get(name), Some(&nargs), "{what}: tprof:{name} missing or with the wrong argument count; notes: {notes:#?}");
    }
    assert_eq!(counts.len(), probes.len(), "{what}: unexpected tprof probes: {counts:?}");

    let (probes_addr, probes_size) = elf.probes.unwrap_or_else(|| panic!("{what}: no .probes section"));
    let base = elf.stapsdt_base.unwrap_or_else(|| panic!("{what}: no .stapsdt.base section"));
    let mut memory_operands = Vec::new();
    for n in &notes {
        assert_eq!(n.base, base, "{what}: tprof:{} base is not .stapsdt.base's address", n.name);
        assert!(
            n.semaphore != 0 && n.semaphore >= probes_addr && n.semaphore + 2 <= probes_addr + probes_size,
            "{what}: tprof:{} semaphore {:#x} is not inside .probes [{probes_addr:#x}, +{probes_size:#x})",
            n.name,
            n.semaphore
        );
        for a in &n.args {
            let op = a
                .strip_prefix("8@")
                .or_else(|| a.strip_prefix("-8@"))
                .unwrap_or_else(|| panic!("{what}: tprof:{} argument {a:?} is not 8 bytes (8@ or -8@)", n.name));
            assert!(decodable_operand(op), "{what}: tprof:{} argument {a:?} is not an operand tprof decodes", n.name);
            if op.contains("(%") {
                memory_operands.push(a.clone());
            }
        }
        let off = elf.file_offset(n.pc).unwrap_or_else(|| panic!("{what}: tprof:{} pc {:#x} is in no executable segment", n.name, n.pc));
        assert_eq!(elf.data.get(off), Some(&0x90), "{what}: tprof:{} site at pc {:#x} (file offset {off:#x}) is not a nop", n.name, n.pc);
    }
    // Distinct probes must have distinct semaphores.
    let mut sems: BTreeMap<u64, &str> = BTreeMap::new();
    for n in &notes {
        let owner = *sems.entry(n.semaphore).or_insert(&n.name);
        assert_eq!(owner, n.name, "{what}: tprof:{owner} and tprof:{} share a semaphore", n.name);
    }
    if opt == "-O0" {
        // Unoptimized code keeps values in the frame: gcc describes them as memory operands
        // (`8@-40(%rbp)`), which is why tprof decodes those and not only registers.
        assert!(!memory_operands.is_empty(), "{what}: expected memory-operand arguments at -O0; notes: {notes:#?}");
    }

    run_example(&bin);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn c_example_at_o0_emits_the_tprof_probes() {
    check_binary("-O0");
}

#[test]
fn c_example_at_o2_emits_the_tprof_probes() {
    check_binary("-O2");
}

/// Puts a site of every Rust probe into this test binary (they are `nop`s: calling them is
/// harmless), so the test below can compare the C header with the Rust emitter's notes.
#[inline(never)]
fn fire_rust_probes() {
    use usdt_probes::probe;
    probe::task_begin(1, 2, 3, 0, "rust");
    probe::task_attach(1, 2, 3, 0);
    probe::region_begin("r");
    probe::log("k", "v");
    probe::region_end("r");
    probe::task_detach(1, 2, 3);
    probe::task_end(1, 2, 3);
}

#[test]
fn c_header_matches_the_rust_probes() {
    fire_rust_probes();
    let me = std::env::current_exe().unwrap();
    let rust = read_elf(&me);
    let rust_counts = arg_counts(&rust.tprof_notes(), "Rust probes");
    let expected: BTreeMap<String, usize> = probes().into_iter().map(|(n, c)| (n.to_string(), c)).collect();
    assert_eq!(rust_counts, expected, "the Rust probes differ from ABI v1's table");

    let dir = unique_dir("match");
    let c = read_elf(&compile_example("-O2", &dir));
    let c_counts = arg_counts(&c.tprof_notes(), "C example");
    assert_eq!(c_counts, rust_counts, "tprof.h and the Rust crate emit different probes");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The text between `open` and the first `close` after it, for every occurrence of `open`.
fn all_between<'a>(text: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(open) {
        rest = &rest[at + open.len()..];
        let end = rest.find(close).unwrap_or(rest.len());
        out.push(&rest[..end]);
    }
    out
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(|a| a.trim().trim_matches('`').to_string()).filter(|a| !a.is_empty()).collect()
}

#[test]
fn c_header_text_declares_the_probe_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/tprof.h");
    let h = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let sites = all_between(&h, "STAP_PROBE", ")");
    assert_eq!(sites.len(), probe::ALL.len(), "tprof.h has {} STAP_PROBE sites, the probe table {} probes", sites.len(), probe::ALL.len());
    for p in probe::ALL {
        let abi = abi_args(p);
        // The probe site: STAP_PROBE<n>(tprof, <name>, <n arguments>).
        let site = format!("{}(tprof, {},", abi.len(), p.name);
        assert_eq!(sites.iter().filter(|s| s.starts_with(&site)).count(), 1, "tprof.h: no single STAP_PROBE{site} ...)");
        // The macro: TPROF_<NAME>(...), a string passed as `name, name_len`.
        let params = all_between(&h, &format!("#define TPROF_{}(", p.name.to_uppercase()), ")");
        assert_eq!(params.len(), 1, "tprof.h: no single #define TPROF_{}(...)", p.name.to_uppercase());
        let want: Vec<String> = p
            .args
            .iter()
            .flat_map(|a| match a.kind {
                ArgKind::U64 => vec![a.name.to_string()],
                ArgKind::Str => vec![a.name.to_string(), format!("{}_len", a.name)],
            })
            .collect();
        assert_eq!(split_list(params[0]), want, "tprof.h: the parameters of TPROF_{}", p.name.to_uppercase());
        // Its comment, in ABI.md's terms, and its semaphore.
        let doc = all_between(&h, &format!("/* tprof:{}(", p.name), ")");
        assert_eq!(doc.len(), 1, "tprof.h: no single `/* tprof:{}(...)` comment", p.name);
        assert_eq!(split_list(doc[0]), abi, "tprof.h: the comment of TPROF_{}", p.name.to_uppercase());
        let sem = format!("TPROF_SEMAPHORE_(tprof_{}_semaphore);", p.name);
        assert!(h.contains(&sem), "tprof.h: no {sem}");
    }
}

#[test]
fn abi_md_lists_the_probe_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ABI.md");
    let md = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let section = all_between(&md, "## 1. Probes", "\n### ");
    assert_eq!(section.len(), 1, "ABI.md: no single section `## 1. Probes`");
    // Rows `| # | `name` | `arg`, `arg`, ... |`.
    let mut listed = BTreeMap::new();
    for row in section[0].lines().filter(|l| l.starts_with("| ")) {
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        if let [_, _, name, args, ..] = cols[..] {
            if let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
                listed.insert(name.to_string(), split_list(args));
            }
        }
    }
    let table: BTreeMap<String, Vec<String>> = probe::ALL.iter().map(|p| (p.name.to_string(), abi_args(p))).collect();
    assert_eq!(listed, table, "ABI.md's probe table differs from profiler_common::tprof_probes!");
    assert!(section[0].contains(&format!("Provider: **`{}`**", probe::PROVIDER)), "ABI.md: the provider is not `{}`", probe::PROVIDER);
}
