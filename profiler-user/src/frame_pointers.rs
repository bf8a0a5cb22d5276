//! Does a program keep frame pointers? User stacks are walked with them; a release build
//! without them shows 1-2 frame stacks. `tprof doctor --pid N` asks it of the target's
//! executable.
//!
//! The signal: the prologue of its functions. With frame pointers (`-C
//! force-frame-pointers=yes`, gcc's `-fno-omit-frame-pointer`) every function starts with
//! `push %rbp; mov %rsp,%rbp` (after an `endbr64` under CET); without them, only the few
//! that need a frame pointer for other reasons do. Rust's standard library comes prebuilt
//! without them (or with, depending on the toolchain), so its functions and those of the
//! crates it links in are counted apart: some of them are generic code compiled with the
//! program, most are not.

use std::path::Path;

use anyhow::{Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// Most functions inspected per binary (spread evenly over its symbol table).
const MAX_INSPECTED: usize = 4000;

/// Of the program's functions: how many were inspected, and how many set up a frame pointer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FramePointers {
    pub own: usize,
    pub own_with: usize,
    /// Functions of Rust's prebuilt standard library and its dependencies.
    pub std: usize,
    pub std_with: usize,
}

/// Fewer functions than this tell nothing.
pub const MIN_FUNCTIONS: usize = 8;

/// The verdict on a program's own code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// At least 80% of its functions set up a frame pointer.
    Kept,
    /// Under half do (a Rust release build without them keeps about a quarter: functions
    /// that need one anyway, and generic std code counted as the program's).
    Omitted,
    /// In between, or too few functions to tell.
    Unclear,
}

impl FramePointers {
    pub fn verdict(&self) -> Verdict {
        if self.own < MIN_FUNCTIONS {
            return Verdict::Unclear;
        }
        let share = self.own_with as f64 / self.own as f64;
        if share >= 0.8 {
            Verdict::Kept
        } else if share < 0.5 {
            Verdict::Omitted
        } else {
            Verdict::Unclear
        }
    }
}

/// How far from the entry the `mov %rsp,%rbp` may come: compilers schedule other
/// instructions between it and the `push %rbp` (gcc at -O2 does).
const PROLOGUE_WINDOW: usize = 32;

/// Whether machine code starting at a function's entry sets up a frame pointer: `[endbr64]
/// push %rbp` first, then `mov %rsp,%rbp` (either encoding) within [`PROLOGUE_WINDOW`]
/// bytes, before the stack pointer moves again (another push of a callee-saved register,
/// a `sub $n,%rsp`): only then does `%rbp` hold the frame's base. Without frame pointers
/// `%rbp` is an ordinary register, pushed perhaps first and perhaps loaded from `%rsp` to
/// address a local buffer, but after the frame was made. Bytes are matched, not decoded:
/// the same bytes inside another instruction's operands can mislead it, rarely.
pub fn sets_frame_pointer(code: &[u8]) -> bool {
    let code = code.strip_prefix(&[0xf3, 0x0f, 0x1e, 0xfa]).unwrap_or(code);
    let Some(rest) = code.strip_prefix(&[0x55]) else { return false };
    let window = &rest[..rest.len().min(PROLOGUE_WINDOW)];
    let Some(mov) = window.windows(3).position(|w| w == [0x48, 0x89, 0xe5] || w == [0x48, 0x8b, 0xec]) else { return false };
    let before = &window[..mov];
    let pushes = before.contains(&0x53) || before.windows(2).any(|w| w[0] == 0x41 && (0x54..=0x57).contains(&w[1]));
    let sub_rsp = before.windows(3).any(|w| w == [0x48, 0x83, 0xec] || w == [0x48, 0x81, 0xec]);
    !pushes && !sub_rsp
}

/// The crates of Rust's prebuilt sysroot: std and what it links in.
const SYSROOT_CRATES: [&str; 17] = [
    "std", "core", "alloc", "hashbrown", "std_detect", "rustc_demangle", "addr2line", "gimli", "object", "miniz_oxide",
    "adler2", "adler", "memchr", "compiler_builtins", "panic_unwind", "unwind", "libc",
];

/// Whether a (mangled) symbol is a function of Rust's prebuilt sysroot (std and its
/// dependencies: legacy `_ZN<len><crate>` or v0 `_R...<len><crate>` mangling), or one of
/// its C or assembly helpers (`__rust_*`, `rust_*`).
fn is_std(name: &str) -> bool {
    SYSROOT_CRATES.iter().any(|c| {
        let tag = format!("{}{c}", c.len());
        name.starts_with(&format!("_ZN{tag}")) || (name.starts_with("_R") && name.contains(&format!("_{tag}")))
    }) || name.starts_with("__rust") || name.starts_with("rust_")
}

/// Start-up code the C runtime links into every program, built as the toolchain's, not
/// the program's.
fn is_runtime(name: &str) -> bool {
    name.starts_with('_')
        && !name.starts_with("_ZN")
        && !name.starts_with("_R")
        || ["deregister_tm_clones", "register_tm_clones", "frame_dummy"].contains(&name)
}

/// Inspects the functions of the ELF file at `path`.
pub fn inspect(path: &Path) -> Result<FramePointers> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    inspect_bytes(&data).with_context(|| format!("inspecting {}", path.display()))
}

pub fn inspect_bytes(data: &[u8]) -> Result<FramePointers> {
    let file = object::File::parse(data).context("not an ELF file tprof can read")?;
    let mut funcs: Vec<(u64, bool)> = Vec::new();
    let symbols = if file.symbols().next().is_some() { file.symbols() } else { file.dynamic_symbols() };
    for sym in symbols {
        if sym.kind() != SymbolKind::Text || sym.size() < 4 || !sym.is_definition() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if is_runtime(name) {
            continue;
        }
        funcs.push((sym.address(), is_std(name)));
    }
    funcs.sort_unstable();
    funcs.dedup_by_key(|f| f.0);
    let step = funcs.len().div_ceil(MAX_INSPECTED).max(1);
    let mut out = FramePointers::default();
    let sections: Vec<_> = file.sections().filter(|s| s.kind() == object::SectionKind::Text).collect();
    for &(addr, std) in funcs.iter().step_by(step) {
        let Some(sec) = sections.iter().find(|s| addr >= s.address() && addr < s.address() + s.size()) else { continue };
        let Ok(bytes) = sec.data() else { continue };
        let Some(code) = bytes.get((addr - sec.address()) as usize..) else { continue };
        let with = sets_frame_pointer(code);
        if std {
            out.std += 1;
            out.std_with += usize::from(with);
        } else {
            out.own += 1;
            out.own_with += usize::from(with);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prologues() {
        assert!(sets_frame_pointer(&[0x55, 0x48, 0x89, 0xe5, 0x90]));
        assert!(sets_frame_pointer(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5]));
        assert!(sets_frame_pointer(&[0x55, 0x48, 0x8b, 0xec]));
        assert!(!sets_frame_pointer(&[0x48, 0x83, 0xec, 0x08])); // sub $8,%rsp
        assert!(!sets_frame_pointer(&[0x55, 0x53])); // push %rbp; push %rbx: rbp as a register
        // gcc -O2: push %rbp; mov %edi,%ecx; xor %eax,%eax; mov %rsp,%rbp
        assert!(sets_frame_pointer(&[0x55, 0x89, 0xf9, 0x31, 0xc0, 0x48, 0x89, 0xe5]));
        let far = [&[0x55][..], &[0x90; PROLOGUE_WINDOW], &[0x48, 0x89, 0xe5]].concat();
        assert!(!sets_frame_pointer(&far));
        // gcc -O2 -fomit-frame-pointer: push %rbp; push %rbx; sub $0x28,%rsp; mov %rsp,%rbp
        // (%rbp addresses a local buffer).
        assert!(!sets_frame_pointer(&[0x55, 0x53, 0x48, 0x83, 0xec, 0x28, 0x48, 0x89, 0xe5]));
        assert!(!sets_frame_pointer(&[]));
    }

    #[test]
    fn std_and_runtime_symbols() {
        assert!(is_std("_ZN3std2io5stdio6_print17h0123456789abcdefE"));
        assert!(is_std("_ZN4core3fmt5write17h0123456789abcdefE"));
        assert!(!is_std("_ZN11file_server4main17h0123456789abcdefE"));
        assert!(is_runtime("_start") && is_runtime("frame_dummy") && is_runtime("__libc_csu_init"));
        assert!(!is_runtime("main") && !is_runtime("_ZN11file_server4main17hE"));
    }

    /// Compiles the same C program with and without frame pointers (at -O2, where gcc
    /// omits them by default) and inspects both.
    #[test]
    fn a_program_built_with_and_one_without() {
        let dir = std::env::temp_dir().join(format!("tprof-fp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("p.c");
        // Sixteen non-leaf functions that cannot be inlined away.
        let mut c = String::from("#include <stdio.h>\n");
        for i in 0..16 {
            c.push_str(&format!(
                "__attribute__((noinline)) int f{i}(int x) {{ char b[32]; snprintf(b, sizeof b, \"%d\", x + {i}); return b[0] + puts(b); }}\n"
            ));
        }
        c.push_str("int main(int argc, char **argv) { int s = 0;\n");
        for i in 0..16 {
            c.push_str(&format!("s += f{i}(argc);\n"));
        }
        c.push_str("return s & (argv != 0); }\n");
        std::fs::write(&src, c).unwrap();
        let build = |name: &str, flag: &str| {
            let out = dir.join(name);
            let st = std::process::Command::new("cc").args(["-O2", flag, "-o"]).arg(&out).arg(&src).status();
            assert!(st.expect("cc runs").success(), "cc {flag}");
            inspect(&out).unwrap()
        };
        let with = build("with", "-fno-omit-frame-pointer");
        let without = build("without", "-fomit-frame-pointer");
        let _ = std::fs::remove_dir_all(&dir);
        // f0..f15 and main.
        assert_eq!((with.own, without.own), (17, 17), "{with:?} {without:?}");
        assert_eq!(with.own_with, 17, "{with:?}");
        assert_eq!(without.own_with, 0, "{without:?}");
        assert_eq!((with.verdict(), without.verdict()), (Verdict::Kept, Verdict::Omitted));
    }

    /// The same with rustc (a release build), where std's functions are counted apart.
    #[test]
    fn a_rust_program_built_with_and_one_without() {
        let dir = std::env::temp_dir().join(format!("tprof-fp-rust-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("p.rs");
        let mut code = String::from("use std::collections::HashMap;\n");
        for i in 0..16 {
            code.push_str(&format!(
                "#[inline(never)] fn f{i}(n: u64) -> u64 {{ let mut m = HashMap::new(); for k in 0..n {{ m.insert(k, k + {i}); }} m.values().sum() }}\n"
            ));
        }
        code.push_str("fn main() { let n = std::env::args().count() as u64; let mut s = 0;\n");
        for i in 0..16 {
            code.push_str(&format!("s += f{i}(n);\n"));
        }
        code.push_str("println!(\"{s}\"); }\n");
        std::fs::write(&src, code).unwrap();
        let build = |name: &str, fp: &str| {
            let out = dir.join(name);
            let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
            let st = std::process::Command::new(rustc)
                .args(["-O", "-C", &format!("force-frame-pointers={fp}"), "-o"])
                .arg(&out)
                .arg(&src)
                .env_remove("RUSTFLAGS")
                .status();
            assert!(st.expect("rustc runs").success(), "rustc force-frame-pointers={fp}");
            inspect(&out).unwrap()
        };
        let with = build("with", "yes");
        let without = build("without", "no");
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("with: {with:?}\nwithout: {without:?}");
        assert_eq!((with.verdict(), without.verdict()), (Verdict::Kept, Verdict::Omitted), "{with:?} {without:?}");
        // f0..f15 at least (main, closures and monomorphized generics add more).
        assert!(with.own >= 16 && without.own >= 16, "{with:?} {without:?}");
    }
}
