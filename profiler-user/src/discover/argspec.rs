//! Parser for the argument specs of SystemTap SDT (USDT) probes on x86_64.
//!
//! A `.note.stapsdt` note carries its probe's arguments as one space-separated string of GNU
//! assembler operands, each with an optional `[-]N@` size prefix, e.g.
//! `-8@%rdi 8@%rsi -4@-20(%rbp) 8@16(%rax,%rbx,8) 8@$5`. See
//! <https://sourceware.org/systemtap/wiki/UserSpaceProbeImplementation> for the format, and
//! libbpf's `usdt.c` (`parse_usdt_arg`) for the known-good reference design this follows.
//!
//! Each operand becomes a [`UsdtArg`] telling the eBPF side how to fetch the value:
//!
//! * `%reg` -> [`arg::REG`], the register at `reg_off` in the kernel's `struct pt_regs`;
//! * `$imm` -> [`arg::CONST`], `value = imm` (no register: `reg_off = NO_REG`);
//! * `disp(%base[,%index[,scale]])` -> [`arg::MEM`], `value = disp`.
//!
//! The stated size wins over the register's width: the eBPF side reads the whole 64-bit
//! register and truncates (or sign-extends) it to `size`. Without a size prefix (SDT v1/v2
//! notes) a register operand takes its own width and anything else is 8 bytes; both are
//! unsigned. Memory base and index registers must be 64-bit (`%rip` is allowed as a base,
//! and, as in libbpf, as a plain register); the base may be absent (`(,%rax,8)`, or an
//! absolute address `0x601040`). High-byte registers (`%ah`...) and segment-relative (TLS)
//! operands (`%fs:0x28`) are rejected with an error rather than fetched wrongly.
//!
//! ## Symbols
//!
//! Operands naming a linker symbol (`-4@NBuffers(%rip)`, `-4@40+CheckpointStats(%rip)`,
//! `8@$table`, `4@counter`) need the file's symbol table and the site's link-time address
//! ([`Symbols`], given to [`parse_args_at`]; without them they are rejected as
//! [`ArgSpecError::Unsupported`]). The note holds link-time addresses, the eBPF side reads the
//! process at run time, and a position-independent file is loaded at a bias unknown here. At
//! the moment the handler runs, the kernel has set `regs->ip` to the probe's own address
//! (`handle_swbp` in `kernel/events/uprobes.c`: "change it in advance for ->handler()"),
//! which is the site's link-time address plus that same bias. So a symbolic address `S` is
//! encoded relative to the probed instruction: base `%rip`, displacement `S - pc`, and the
//! kernel's `ip + (S - pc)` is `S + bias`, right for PIE, shared libraries and fixed-address
//! executables alike. `$sym` (the address itself) is [`arg::REG`] `%rip` plus that
//! displacement. A symbol combined with another base or index register (`sym(,%rax,4)`) can
//! only be absolute, so it is accepted in fixed-address executables (`ET_EXEC`) only.

use std::fmt;

use profiler_common::{arg, UsdtArg, MAX_USDT_ARGS, NO_REG};

/// Why an argument spec was rejected. Every variant carrying `spec` names the offending text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgSpecError {
    /// An empty (or all-blank) single argument.
    Empty,
    /// More arguments than the eBPF side can decode.
    TooMany { count: usize, max: usize },
    /// The `N@` prefix is not one of 1, 2, 4, 8 (optionally negated).
    BadSize { spec: String },
    /// A `%name` that is not an x86_64 general-purpose register.
    UnknownRegister { spec: String, reg: String },
    /// A register that exists but cannot be used where it appears.
    BadRegister {
        spec: String,
        reg: String,
        why: &'static str,
    },
    /// A valid operand form that tprof does not fetch (high-byte registers, symbols).
    Unsupported { spec: String, what: &'static str },
    /// The index scale is not 1, 2, 4 or 8.
    BadScale { spec: String },
    /// A malformed number (displacement or immediate).
    BadNumber { spec: String },
    /// Anything else that is not an operand.
    Syntax { spec: String, what: &'static str },
    /// A symbol the file's symbol tables do not define.
    UnknownSymbol { spec: String, symbol: String },
}

/// Longest piece of spec text quoted in an error message (hostile notes may be huge).
const QUOTE_MAX: usize = 80;

struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(QUOTE_MAX) {
            Some((cut, _)) => write!(f, "`{}`...", self.0.get(..cut).unwrap_or("")),
            None => write!(f, "`{}`", self.0),
        }
    }
}

impl fmt::Display for ArgSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "empty USDT argument spec"),
            Self::TooMany { count, max } => {
                write!(
                    f,
                    "USDT probe has {count} arguments, tprof decodes at most {max}"
                )
            }
            Self::BadSize { spec } => {
                write!(
                    f,
                    "USDT argument {}: size must be [-]1, 2, 4 or 8",
                    Quoted(spec)
                )
            }
            Self::UnknownRegister { spec, reg } => {
                write!(
                    f,
                    "USDT argument {}: unknown register {}",
                    Quoted(spec),
                    Quoted(reg)
                )
            }
            Self::BadRegister { spec, reg, why } => {
                write!(
                    f,
                    "USDT argument {}: register {}: {why}",
                    Quoted(spec),
                    Quoted(reg)
                )
            }
            Self::Unsupported { spec, what } => {
                write!(f, "USDT argument {}: unsupported {what}", Quoted(spec))
            }
            Self::BadScale { spec } => {
                write!(
                    f,
                    "USDT argument {}: index scale must be 1, 2, 4 or 8",
                    Quoted(spec)
                )
            }
            Self::BadNumber { spec } => write!(f, "USDT argument {}: bad number", Quoted(spec)),
            Self::Syntax { spec, what } => write!(f, "USDT argument {}: {what}", Quoted(spec)),
            Self::UnknownSymbol { spec, symbol } => {
                write!(f, "USDT argument {}: symbol {} is not in the file's symbol tables (.symtab, .dynsym)", Quoted(spec), Quoted(symbol))
            }
        }
    }
}

impl std::error::Error for ArgSpecError {}

/// What symbolic operands need: the site's link-time address (after the prelink
/// adjustment), a symbol lookup, and whether the file is position-independent.
pub struct Symbols<'a> {
    /// The probe site's link-time address.
    pub pc: u64,
    /// Link-time address (`st_value`) of a defined symbol, by name.
    pub lookup: &'a dyn Fn(&str) -> Option<u64>,
    /// The file is loaded at a bias (`ET_DYN`: PIE or shared library).
    pub relocatable: bool,
}

/// Parses a whole note argument string (space-separated). An empty string is a probe
/// without arguments: `Ok(vec![])`. More than [`MAX_USDT_ARGS`] arguments is an error.
/// Symbolic operands are rejected (see [`parse_args_at`]).
pub fn parse_args(spec: &str) -> Result<Vec<UsdtArg>, ArgSpecError> {
    parse_args_at(spec, None)
}

/// [`parse_args`], resolving symbolic operands with `syms` (see the module docs).
pub fn parse_args_at(spec: &str, syms: Option<&Symbols<'_>>) -> Result<Vec<UsdtArg>, ArgSpecError> {
    let count = spec.split_whitespace().count();
    if count > MAX_USDT_ARGS {
        return Err(ArgSpecError::TooMany {
            count,
            max: MAX_USDT_ARGS,
        });
    }
    spec.split_whitespace().map(|a| parse_arg_at(a, syms)).collect()
}

/// Parses every argument of a note one by one, however many there are: foreign probes may
/// carry more than [`MAX_USDT_ARGS`] (a mapping then picks the ones it needs), and one bad
/// argument does not hide the others.
pub fn parse_each(spec: &str, syms: Option<&Symbols<'_>>) -> Vec<Result<UsdtArg, ArgSpecError>> {
    spec.split_whitespace().map(|a| parse_arg_at(a, syms)).collect()
}

/// Whether an argument spec names a linker symbol (and so needs [`Symbols`]).
pub fn is_symbolic(spec: &str) -> bool {
    spec.split_whitespace().any(|one| {
        let operand = one.split_once('@').map_or(one, |(_, o)| o);
        let disp = operand.strip_prefix('$').unwrap_or(operand);
        let disp = disp.split('(').next().unwrap_or("");
        disp.split(['+', '-']).any(|t| t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '.'))
    })
}

/// Parses one argument spec such as `-4@-20(%rbp)`.
pub fn parse_arg(one: &str) -> Result<UsdtArg, ArgSpecError> {
    parse_arg_at(one, None)
}

/// A displacement or immediate: a number, or `sym`, `sym+N`, `N+sym`, `sym-N` (at most one
/// symbol, added).
enum Disp<'s> {
    Num(i64),
    Sym { name: &'s str, plus: i64 },
}

fn parse_disp<'s>(spec: &str, text: &'s str, what: &'static str) -> Result<Disp<'s>, ArgSpecError> {
    if let Some(n) = parse_num(text) {
        return Ok(Disp::Num(n));
    }
    // Without a symbol, a number that did not parse is a bad number (`$--1`), not a sum.
    if !text.chars().any(|c| c.is_ascii_alphabetic() || c == '_' || c == '.') {
        return Err(number_error(spec, text, what));
    }
    let is_sym = |t: &str| t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '.') && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.$".contains(c));
    // Split into signed terms at each `+`/`-` that is not the first character.
    let mut terms: Vec<(bool, &str)> = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut neg = false;
    for (i, &b) in bytes.iter().enumerate() {
        if (b == b'+' || b == b'-') && i > start {
            terms.push((neg, &text[start..i]));
            neg = b == b'-';
            start = i + 1;
        } else if (b == b'+' || b == b'-') && i == start {
            neg ^= b == b'-';
            start = i + 1;
        }
    }
    terms.push((neg, text.get(start..).unwrap_or("")));
    let (mut sym, mut plus) = (None, 0i64);
    for (neg, t) in terms {
        if let Some(n) = parse_num(t) {
            plus = if neg { plus.wrapping_sub(n) } else { plus.wrapping_add(n) };
        } else if is_sym(t) && !neg && sym.is_none() {
            if t.contains('@') {
                return Err(ArgSpecError::Unsupported { spec: spec.to_string(), what: "relocation operator (`sym@GOTPCREL`...)" });
            }
            sym = Some(t);
        } else {
            return Err(number_error(spec, t, what));
        }
    }
    match sym {
        Some(name) => Ok(Disp::Sym { name, plus }),
        None => Ok(Disp::Num(plus)),
    }
}

/// The link-time address a symbolic displacement stands for.
fn resolve(spec: &str, name: &str, plus: i64, syms: Option<&Symbols<'_>>, what: &'static str) -> Result<u64, ArgSpecError> {
    let Some(syms) = syms else {
        return Err(ArgSpecError::Unsupported { spec: spec.to_string(), what });
    };
    let Some(addr) = (syms.lookup)(name) else {
        return Err(ArgSpecError::UnknownSymbol { spec: spec.to_string(), symbol: name.to_string() });
    };
    Ok(addr.wrapping_add(plus as u64))
}

/// Parses one argument spec, resolving symbolic operands with `syms`.
pub fn parse_arg_at(one: &str, syms: Option<&Symbols<'_>>) -> Result<UsdtArg, ArgSpecError> {
    let spec = one.trim();
    if spec.is_empty() {
        return Err(ArgSpecError::Empty);
    }
    let err_spec = || spec.to_string();
    let (size, operand) = match spec.split_once('@') {
        Some((prefix, operand)) => (
            Some(parse_size(prefix).ok_or_else(|| ArgSpecError::BadSize { spec: err_spec() })?),
            operand,
        ),
        None => (None, spec),
    };
    // (size in bytes, signed); `None` = no prefix, decided per operand kind below.
    let sized = |default: u8| size.unwrap_or((default, false));

    if operand.contains(':') {
        return Err(ArgSpecError::Unsupported { spec: err_spec(), what: "segment-relative (thread-local) operand" });
    }

    if let Some(name) = operand.strip_prefix('%') {
        let reg = lookup_reg(spec, name)?;
        // %rip (width 0 in the table) reads as 8 bytes.
        let (sz, signed) = sized(if reg.width == 0 { 8 } else { reg.width });
        return Ok(UsdtArg {
            value: 0,
            kind: arg::REG,
            size: sz,
            signed: u8::from(signed),
            scale: 0,
            reg_off: reg.off,
            index_reg_off: NO_REG,
        });
    }

    if let Some(imm) = operand.strip_prefix('$') {
        let (sz, signed) = sized(8);
        let (kind, value, reg_off) = match parse_disp(spec, imm, "immediate")? {
            Disp::Num(value) => (arg::CONST, value, NO_REG),
            // The symbol's run-time address: %rip (the site) plus its distance from the site.
            Disp::Sym { name, plus } => {
                let addr = resolve(spec, name, plus, syms, "symbolic immediate (needs the file's symbol table)")?;
                let pc = syms.map_or(0, |s| s.pc);
                (arg::REG, addr.wrapping_sub(pc) as i64, RIP_OFF)
            }
        };
        return Ok(UsdtArg {
            value,
            kind,
            size: sz,
            signed: u8::from(signed),
            scale: 0,
            reg_off,
            index_reg_off: NO_REG,
        });
    }

    // An absolute memory operand, `sym`, `sym+4` or `0x601040`: no base register.
    let (disp, rest) = match operand.split_once('(') {
        Some(split) => split,
        None if !operand.is_empty() && !operand.contains(')') && !operand.contains(',') => (operand, "%)"),
        None => {
            return Err(ArgSpecError::Syntax {
                spec: err_spec(),
                what: "expected %reg, $imm or disp(%base[,%index[,scale]])",
            })
        }
    };
    let Some(inner) = rest.strip_suffix(')') else {
        return Err(ArgSpecError::Syntax {
            spec: err_spec(),
            what: "missing `)`",
        });
    };
    let disp = if disp.is_empty() { Disp::Num(0) } else { parse_disp(spec, disp, "displacement")? };
    let mut parts = inner.split(',');
    let base = parts.next().unwrap_or("");
    let index = parts.next();
    let scale = parts.next();
    if parts.next().is_some() {
        return Err(ArgSpecError::Syntax {
            spec: err_spec(),
            what: "too many `,` in operand",
        });
    }
    // `%` alone: the absolute form above; empty: `(,%index,scale)`.
    let base = match base {
        "%" | "" => None,
        b => Some(b.strip_prefix('%').ok_or(ArgSpecError::Syntax {
            spec: err_spec(),
            what: "missing base register",
        })?),
    };
    if base.is_none() && index.is_none() && inner != "%" {
        return Err(ArgSpecError::Syntax { spec: err_spec(), what: "missing base register" });
    }
    let base = base.map(|b| lookup_reg(spec, b)).transpose()?;
    if let Some(base) = base {
        if base.width != 8 && base.width != 0 {
            return Err(bad_reg(spec, base.name, "base register must be 64-bit"));
        }
    }
    let (index_reg_off, scale) = match index {
        None => (NO_REG, 0),
        Some(index) => {
            let index = index.strip_prefix('%').ok_or(ArgSpecError::Syntax {
                spec: err_spec(),
                what: "missing index register",
            })?;
            let index = lookup_reg(spec, index)?;
            if index.name == "rip" || index.name == "rsp" {
                return Err(bad_reg(spec, index.name, "cannot be an index register"));
            }
            if index.width != 8 {
                return Err(bad_reg(spec, index.name, "index register must be 64-bit"));
            }
            let scale = match scale {
                None => 1,
                Some("1") => 1,
                Some("2") => 2,
                Some("4") => 4,
                Some("8") => 8,
                Some(_) => return Err(ArgSpecError::BadScale { spec: err_spec() }),
            };
            (index.off, scale)
        }
    };
    let absolute = base.is_none() && index_reg_off == NO_REG;
    let (value, reg_off) = match (disp, base) {
        // A bare number: an absolute address, meaningful only in a fixed-address executable.
        (Disp::Num(_), None) if absolute && syms.is_none_or(|s| s.relocatable) => {
            return Err(ArgSpecError::Unsupported {
                spec: err_spec(),
                what: "absolute memory address (only in fixed-address executables, with the file at hand)",
            })
        }
        (Disp::Num(n), base) => (n, base.map_or(NO_REG, |b| b.off)),
        // `sym` alone: its address, relative to the site as for `sym(%rip)`.
        (Disp::Sym { name, plus }, None) if absolute => {
            let addr = resolve(spec, name, plus, syms, "symbolic displacement (needs the file's symbol table)")?;
            (addr.wrapping_sub(syms.map_or(0, |s| s.pc)) as i64, RIP_OFF)
        }
        // `sym(%rip)`: the symbol's address, whatever the instruction (see the module docs).
        (Disp::Sym { name, plus }, Some(b)) if b.off == RIP_OFF && index_reg_off == NO_REG => {
            let addr = resolve(spec, name, plus, syms, "symbolic displacement (needs the file's symbol table)")?;
            (addr.wrapping_sub(syms.map_or(0, |s| s.pc)) as i64, RIP_OFF)
        }
        (Disp::Sym { name, plus }, base) => {
            let addr = resolve(spec, name, plus, syms, "symbolic displacement (needs the file's symbol table)")?;
            if syms.is_some_and(|s| s.relocatable) || base.is_some_and(|b| b.off == RIP_OFF) {
                return Err(ArgSpecError::Unsupported {
                    spec: err_spec(),
                    what: "absolute symbol address with a base or index register in a position-independent file",
                });
            }
            (addr as i64, base.map_or(NO_REG, |b| b.off))
        }
    };
    let (sz, signed) = sized(8);
    Ok(UsdtArg {
        value,
        kind: arg::MEM,
        size: sz,
        signed: u8::from(signed),
        scale,
        reg_off,
        index_reg_off,
    })
}

/// `N` or `-N` with N in {1, 2, 4, 8} -> (size, signed).
fn parse_size(prefix: &str) -> Option<(u8, bool)> {
    let (signed, digits) = match prefix.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, prefix),
    };
    let size = match digits {
        "1" => 1,
        "2" => 2,
        "4" => 4,
        "8" => 8,
        _ => return None,
    };
    Some((size, signed))
}

/// A signed decimal or `0x` hexadecimal integer. Positive values up to `u64::MAX` are taken
/// as their 64-bit pattern (`$0xffffffffffffffff` == `$-1`).
fn parse_num(text: &str) -> Option<i64> {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (radix, digits) = match rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
        Some(h) => (16, h),
        None => (10, rest),
    };
    // from_str_radix would accept a second sign: require digits only.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        i64::try_from(-i128::from(magnitude)).ok()
    } else {
        Some(magnitude as i64)
    }
}

fn number_error(spec: &str, text: &str, what: &'static str) -> ArgSpecError {
    // `counter(%rip)`, `sym+4(%rip)`, `$sym`: linker symbols cannot be resolved here.
    if text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '.') {
        let what = if what == "immediate" {
            "symbolic immediate"
        } else {
            "symbolic displacement"
        };
        return ArgSpecError::Unsupported {
            spec: spec.to_string(),
            what,
        };
    }
    ArgSpecError::BadNumber {
        spec: spec.to_string(),
    }
}

fn bad_reg(spec: &str, reg: &str, why: &'static str) -> ArgSpecError {
    ArgSpecError::BadRegister {
        spec: spec.to_string(),
        reg: reg.to_string(),
        why,
    }
}

/// One register name: its `struct pt_regs` offset and width in bytes (0 for `%rip`).
#[derive(Clone, Copy)]
struct Reg {
    name: &'static str,
    off: u16,
    width: u8,
}

/// x86_64 `struct pt_regs` offsets, each with the register's 8/4/2/1-byte names.
const REGS: &[(u16, [&str; 4])] = &[
    (0, ["r15", "r15d", "r15w", "r15b"]),
    (8, ["r14", "r14d", "r14w", "r14b"]),
    (16, ["r13", "r13d", "r13w", "r13b"]),
    (24, ["r12", "r12d", "r12w", "r12b"]),
    (32, ["rbp", "ebp", "bp", "bpl"]),
    (40, ["rbx", "ebx", "bx", "bl"]),
    (48, ["r11", "r11d", "r11w", "r11b"]),
    (56, ["r10", "r10d", "r10w", "r10b"]),
    (64, ["r9", "r9d", "r9w", "r9b"]),
    (72, ["r8", "r8d", "r8w", "r8b"]),
    (80, ["rax", "eax", "ax", "al"]),
    (88, ["rcx", "ecx", "cx", "cl"]),
    (96, ["rdx", "edx", "dx", "dl"]),
    (104, ["rsi", "esi", "si", "sil"]),
    (112, ["rdi", "edi", "di", "dil"]),
    (152, ["rsp", "esp", "sp", "spl"]),
];
/// Offset of `ip` in `struct pt_regs`.
const RIP_OFF: u16 = 128;

fn lookup_reg(spec: &str, name: &str) -> Result<Reg, ArgSpecError> {
    if name == "rip" {
        return Ok(Reg {
            name: "rip",
            off: RIP_OFF,
            width: 0,
        });
    }
    for (off, names) in REGS {
        for (name_ref, width) in names.iter().zip([8u8, 4, 2, 1]) {
            if *name_ref == name {
                return Ok(Reg {
                    name: name_ref,
                    off: *off,
                    width,
                });
            }
        }
    }
    if matches!(name, "ah" | "bh" | "ch" | "dh") {
        return Err(ArgSpecError::Unsupported {
            spec: spec.to_string(),
            what: "high-byte register (%ah, %bh, %ch, %dh)",
        });
    }
    Err(ArgSpecError::UnknownRegister {
        spec: spec.to_string(),
        reg: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: u16 = NO_REG;
    const S: bool = true;
    const U: bool = false;

    /// (spec, kind, size, signed, value, reg_off, index_reg_off, scale)
    type Case = (&'static str, u8, u8, bool, i64, u16, u16, u8);

    fn check(cases: &[Case]) {
        for &(spec, kind, size, signed, value, reg_off, index_reg_off, scale) in cases {
            let signed = u8::from(signed);
            let want = UsdtArg {
                value,
                kind,
                size,
                signed,
                scale,
                reg_off,
                index_reg_off,
            };
            assert_eq!(parse_arg(spec), Ok(want), "{spec}");
        }
    }

    #[test]
    fn registers() {
        check(&[
            ("-8@%rdi", arg::REG, 8, S, 0, 112, N, 0),
            ("8@%rsi", arg::REG, 8, U, 0, 104, N, 0),
            ("-1@%al", arg::REG, 1, S, 0, 80, N, 0),
            ("2@%r9w", arg::REG, 2, U, 0, 64, N, 0),
            ("4@%r10d", arg::REG, 4, U, 0, 56, N, 0),
            ("1@%r8b", arg::REG, 1, U, 0, 72, N, 0),
            ("-4@%eax", arg::REG, 4, S, 0, 80, N, 0),
            ("8@%rsp", arg::REG, 8, U, 0, 152, N, 0),
            ("8@%rip", arg::REG, 8, U, 0, 128, N, 0),
            // The stated size wins over the register's width.
            ("8@%eax", arg::REG, 8, U, 0, 80, N, 0),
            ("-2@%r15", arg::REG, 2, S, 0, 0, N, 0),
            ("1@%sil", arg::REG, 1, U, 0, 104, N, 0),
            ("1@%dil", arg::REG, 1, U, 0, 112, N, 0),
            ("1@%bpl", arg::REG, 1, U, 0, 32, N, 0),
            ("1@%spl", arg::REG, 1, U, 0, 152, N, 0),
            ("-1@%r13b", arg::REG, 1, S, 0, 16, N, 0),
            ("4@%r11d", arg::REG, 4, U, 0, 48, N, 0),
            ("8@%r14", arg::REG, 8, U, 0, 8, N, 0),
            ("2@%dx", arg::REG, 2, U, 0, 96, N, 0),
            (" 8@%rbx ", arg::REG, 8, U, 0, 40, N, 0),
        ]);
    }

    #[test]
    fn no_size_prefix() {
        check(&[
            ("%rdi", arg::REG, 8, U, 0, 112, N, 0),
            ("%eax", arg::REG, 4, U, 0, 80, N, 0),
            ("%r12w", arg::REG, 2, U, 0, 24, N, 0),
            ("%cl", arg::REG, 1, U, 0, 88, N, 0),
            ("$7", arg::CONST, 8, U, 7, N, N, 0),
            ("-8(%rbp)", arg::MEM, 8, U, -8, 32, N, 0),
        ]);
    }

    #[test]
    fn constants() {
        check(&[
            ("8@$5", arg::CONST, 8, U, 5, N, N, 0),
            ("4@$-3", arg::CONST, 4, U, -3, N, N, 0),
            ("-4@$0x10", arg::CONST, 4, S, 16, N, N, 0),
            ("8@$-0x10", arg::CONST, 8, U, -16, N, N, 0),
            ("8@$+3", arg::CONST, 8, U, 3, N, N, 0),
            ("8@$0xffffffffffffffff", arg::CONST, 8, U, -1, N, N, 0),
            (
                "-8@$-9223372036854775808",
                arg::CONST,
                8,
                S,
                i64::MIN,
                N,
                N,
                0,
            ),
        ]);
    }

    #[test]
    fn memory() {
        check(&[
            ("-4@-20(%rbp)", arg::MEM, 4, S, -20, 32, N, 0),
            ("8@16(%rax,%rbx,8)", arg::MEM, 8, U, 16, 80, 40, 8),
            ("8@(%rsp)", arg::MEM, 8, U, 0, 152, N, 0),
            ("-4@(%rsp)", arg::MEM, 4, S, 0, 152, N, 0),
            ("-8@-0x10(%rbp)", arg::MEM, 8, S, -16, 32, N, 0),
            ("2@(%rdi,%r8)", arg::MEM, 2, U, 0, 112, 72, 1),
            ("1@0x8(%r14,%rcx,2)", arg::MEM, 1, U, 8, 8, 88, 2),
            ("4@-4(%rsi,%rdx,4)", arg::MEM, 4, U, -4, 104, 96, 4),
            ("8@(%r15,%r9,1)", arg::MEM, 8, U, 0, 0, 64, 1),
            ("8@8(%rip)", arg::MEM, 8, U, 8, 128, N, 0),
        ]);
    }

    #[test]
    fn no_base() {
        check(&[
            ("8@(,%rax,8)", arg::MEM, 8, U, 0, N, 80, 8),
            ("-4@16(,%rbx,4)", arg::MEM, 4, S, 16, N, 40, 4),
        ]);
        assert_eq!(variant(&parse_arg("4@0x601040").unwrap_err()), "Unsupported", "absolute, file unknown");
    }

    /// The symbolic operands of Debian's PostgreSQL 15 (`checkpoint__done`,
    /// `buffer__sync__done`), with a symbol table of made-up link-time addresses.
    #[test]
    fn symbols() {
        let table = |name: &str| match name {
            "CheckpointStats" => Some(0x88_4000),
            "NBuffers" => Some(0x88_5010),
            "table" => Some(0x60_1000),
            _ => None,
        };
        let pc = 0x2e_1234u64;
        let pie = Symbols { pc, lookup: &table, relocatable: true };
        let args = parse_args_at(
            "-4@40+CheckpointStats(%rip) -4@NBuffers(%rip) -4@44+CheckpointStats(%rip) -4@48+CheckpointStats(%rip) -4@52+CheckpointStats(%rip)",
            Some(&pie),
        )
        .unwrap();
        let rel = |addr: u64| addr.wrapping_sub(pc) as i64;
        let want = [rel(0x88_4000 + 40), rel(0x88_5010), rel(0x88_4000 + 44), rel(0x88_4000 + 48), rel(0x88_4000 + 52)];
        for (a, w) in args.iter().zip(want) {
            // ip (= the site's run-time address) + value = the symbol's run-time address.
            assert_eq!((a.kind, a.size, a.signed, a.reg_off, a.index_reg_off, a.value), (arg::MEM, 4, 1, RIP_OFF, N, w));
        }
        // Any load bias: the site and the symbol move together.
        for bias in [0u64, 0x5555_5555_4000, 0x7f00_0000_0000] {
            let ip = pc + bias;
            assert_eq!(ip.wrapping_add(args[1].value as u64), 0x88_5010 + bias);
        }
        // sym+N, N+sym, sym-N; `$sym` is the address itself (%rip + distance, not read).
        assert_eq!(parse_arg_at("-4@CheckpointStats+40(%rip)", Some(&pie)).unwrap().value, rel(0x88_4000 + 40));
        assert_eq!(parse_arg_at("-4@CheckpointStats-8(%rip)", Some(&pie)).unwrap().value, rel(0x88_4000 - 8));
        let imm = parse_arg_at("8@$table", Some(&pie)).unwrap();
        assert_eq!((imm.kind, imm.reg_off, imm.value), (arg::REG, RIP_OFF, rel(0x60_1000)));
        // Fixed-address executables: absolute forms, with or without registers.
        let exec = Symbols { pc, lookup: &table, relocatable: false };
        check_one(parse_arg_at("4@table(,%rax,4)", Some(&exec)), (arg::MEM, 4, 0x60_1000, N, 80, 4));
        check_one(parse_arg_at("4@0x601040", Some(&exec)), (arg::MEM, 4, 0x60_1040, N, N, 0));
        // `sym` alone is site-relative in any file.
        check_one(parse_arg_at("-4@NBuffers", Some(&pie)), (arg::MEM, 4, rel(0x88_5010), RIP_OFF, N, 0));
        // ...which a position-independent file cannot have.
        let e = parse_arg_at("4@table(,%rax,4)", Some(&pie)).unwrap_err();
        assert_eq!(variant(&e), "Unsupported", "{e}");
        // Unknown symbols are named; without a symbol table the operand is unsupported.
        let e = parse_arg_at("-4@Nowhere(%rip)", Some(&pie)).unwrap_err();
        assert!(e.to_string().contains("symbol `Nowhere`"), "{e}");
        let e = parse_arg("-4@40+CheckpointStats(%rip)").unwrap_err();
        assert!(e.to_string().contains("symbol table"), "{e}");
        assert!(is_symbolic("-4@40+CheckpointStats(%rip) -4@%eax") && is_symbolic("8@$table"));
        assert!(!is_symbolic("-4@-20(%rbp) 8@$5 4@$-3 8@16(%rax,%rbx,8) %eax"));
    }

    fn check_one(got: Result<UsdtArg, ArgSpecError>, (kind, size, value, reg_off, index_reg_off, scale): (u8, u8, i64, u16, u16, u8)) {
        let a = got.unwrap();
        assert_eq!((a.kind, a.size, a.value, a.reg_off, a.index_reg_off, a.scale), (kind, size, value, reg_off, index_reg_off, scale));
    }

    /// Every argument string of Debian's PostgreSQL 15 notes (those without symbols).
    #[test]
    fn postgres_notes() {
        for spec in [
            "4@60(%rax)",
            "-4@12(%rbx) 4@16(%rbx) 4@(%r12) 4@4(%r12) 4@8(%r12)",
            "-4@%r15d 4@%ebx 4@0(%r13) 4@4(%r13) 4@8(%r13) -4@12(%r13) 1@%al",
            "-4@-136(%rbp) 4@-132(%rbp) 4@0(%r13) 4@4(%r13) 4@8(%r13) -4@12(%r13) 1@-149(%rbp) 1@-117(%rbp)",
            "4@(%r12) 4@4(%r12) 4@8(%r12) 2@12(%r12) 1@14(%r12) -4@%r13d",
            "-4@%r14d 4@%r13d 4@(%r12) 4@4(%r12) 4@8(%r12) -4@12(%r12) -4@%eax -4@$8192",
            "8@-144(%rbp)",
            "-4@$1 1@-57(%rbp) -4@%edx -4@%r12d -4@%r9d -4@%eax",
        ] {
            let each = parse_each(spec, None);
            assert_eq!(each.len(), spec.split_whitespace().count());
            assert!(each.iter().all(Result::is_ok), "{spec}: {each:?}");
        }
        let lock = parse_each("4@(%r12) 4@4(%r12) 4@8(%r12) 2@12(%r12) 1@14(%r12) -4@%r13d", None);
        check_one(lock[3].clone(), (arg::MEM, 2, 12, 24, N, 0));
        check_one(lock[5].clone(), (arg::REG, 4, 0, 16, N, 0));
    }

    #[test]
    fn whole_list() {
        let spec = "-8@%rdi 8@%rsi -4@-20(%rbp) 8@16(%rax,%rbx,8) 8@$5 4@$-3";
        let args = parse_args(spec).unwrap();
        assert_eq!(args.len(), 6);
        assert_eq!(args[2], parse_arg("-4@-20(%rbp)").unwrap());
        assert_eq!(args[4].value, 5);
        assert_eq!(parse_args("%eax -4@(%rsp)").unwrap().len(), 2);
        assert_eq!(parse_args("").unwrap(), vec![]);
        assert_eq!(parse_args("   ").unwrap(), vec![]);
        assert_eq!(parse_args("  8@%rdi   4@%esi ").unwrap().len(), 2);
    }

    fn variant(e: &ArgSpecError) -> &'static str {
        match e {
            ArgSpecError::Empty => "Empty",
            ArgSpecError::TooMany { .. } => "TooMany",
            ArgSpecError::BadSize { .. } => "BadSize",
            ArgSpecError::UnknownRegister { .. } => "UnknownRegister",
            ArgSpecError::BadRegister { .. } => "BadRegister",
            ArgSpecError::Unsupported { .. } => "Unsupported",
            ArgSpecError::BadScale { .. } => "BadScale",
            ArgSpecError::BadNumber { .. } => "BadNumber",
            ArgSpecError::Syntax { .. } => "Syntax",
            ArgSpecError::UnknownSymbol { .. } => "UnknownSymbol",
        }
    }

    #[test]
    fn rejections() {
        for (spec, want) in [
            ("", "Empty"),
            ("  ", "Empty"),
            ("3@%rdi", "BadSize"),
            ("16@%rdi", "BadSize"),
            ("@%rdi", "BadSize"),
            ("--4@%rdi", "BadSize"),
            ("+4@%rdi", "BadSize"),
            ("8@%xmm0", "UnknownRegister"),
            ("8@%eip", "UnknownRegister"),
            ("8@%", "UnknownRegister"),
            ("8@%rdi@", "UnknownRegister"),
            ("1@%ah", "Unsupported"),
            ("1@%bh", "Unsupported"),
            ("1@%ch", "Unsupported"),
            ("1@%dh", "Unsupported"),
            ("4@counter(%rip)", "Unsupported"),
            ("4@sym+4(%rip)", "Unsupported"),
            ("8@$sym", "Unsupported"),
            ("8@(%rax,%rbx,3)", "BadScale"),
            ("8@(%rax,%rbx,)", "BadScale"),
            ("8@(%rax,%rbx,16)", "BadScale"),
            ("8@(%rax,%rip,1)", "BadRegister"),
            ("8@(%rax,%rsp,1)", "BadRegister"),
            ("8@(%rax,%ebx,1)", "BadRegister"),
            ("8@(%eax)", "BadRegister"),
            ("8@(%rax,rbx)", "Syntax"),
            ("8@(%rax,%rbx,1,2)", "Syntax"),
            ("8@4(%rax", "Syntax"),
            ("8@rdi", "Unsupported"),
            ("garbage", "Unsupported"),
            ("8@%fs:0x28", "Unsupported"),
            ("8@sym@GOTPCREL(%rip)", "Unsupported"),
            ("8@()", "Syntax"),
            ("8@$", "BadNumber"),
            ("8@$--1", "BadNumber"),
            ("8@$0x", "BadNumber"),
            ("8@$99999999999999999999", "BadNumber"),
            ("8@$-9223372036854775809", "BadNumber"),
            ("8@1x(%rax)", "BadNumber"),
        ] {
            let e = parse_arg(spec).map(|_| ()).unwrap_err();
            assert_eq!(variant(&e), want, "{spec}: {e}");
            if !spec.trim().is_empty() {
                assert!(e.to_string().contains(spec.trim()), "{e} names {spec}");
            }
        }
        let e = parse_args(&"8@%rdi ".repeat(MAX_USDT_ARGS + 1)).unwrap_err();
        let count = MAX_USDT_ARGS + 1;
        assert_eq!(
            e,
            ArgSpecError::TooMany {
                count,
                max: MAX_USDT_ARGS
            }
        );
        assert!(e.to_string().contains(&count.to_string()), "{e}");
        assert!(parse_args("8@%rdi 3@%rsi").is_err());
    }

    #[test]
    fn error_messages() {
        let e = parse_arg("8@%xmm1").unwrap_err().to_string();
        assert!(e.contains("unknown register `xmm1`"), "{e}");
        let e = parse_arg("1@%bh").unwrap_err().to_string();
        assert!(e.contains("1@%bh") && e.contains("high-byte"), "{e}");
        let e = parse_arg("4@sym+4(%rip)").unwrap_err().to_string();
        assert!(e.contains("symbolic displacement"), "{e}");
        // Long (hostile) specs are quoted truncated, at a char boundary.
        let e = parse_arg(&format!("8@%{}", "é".repeat(500)))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 600 && e.contains("..."), "{e}");
    }

    #[test]
    fn never_panics() {
        let weird = "@ 8@ 8@( 8@% 8@$ 8@) 8@() 8@(%) 8@(,) 8@(,,) 8@-(%rax) 8@+(%rax) -@%rax -8@ \
                     8@@%rax @@ % $ ( ) 8@$- 8@$+ 8@$0x-1 8@0x(%rax) é@%rax 8@%é 8@$é 8@é(%rax) \
                     8@(%rax,%rbx,é) 8@\u{0} \u{feff}8@%rdi ８@%rdi 8@%ｒdi 🦀 8@🦀(%rax) 8@(%rax)) \
                     8@((%rax)) 8@(%rax,%rbx,8,) -1@%al,";
        let long = "8@".repeat(10_000);
        let huge = "x(".repeat(1 << 19);
        let cases = weird.split(' ').chain(["", weird, &long, &huge]);
        for w in cases {
            let _ = parse_args(w);
            match parse_arg(w) {
                Ok(a) => assert!(matches!(a.size, 1 | 2 | 4 | 8), "{w}"),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
}
