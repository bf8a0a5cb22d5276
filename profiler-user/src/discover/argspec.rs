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
//! and, as in libbpf, as a plain register). High-byte registers (`%ah`...) and symbolic
//! displacements (`sym+4(%rip)`) are rejected with an error rather than fetched wrongly.

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
        }
    }
}

impl std::error::Error for ArgSpecError {}

/// Parses a whole note argument string (space-separated). An empty string is a probe
/// without arguments: `Ok(vec![])`. More than [`MAX_USDT_ARGS`] arguments is an error.
pub fn parse_args(spec: &str) -> Result<Vec<UsdtArg>, ArgSpecError> {
    let count = spec.split_whitespace().count();
    if count > MAX_USDT_ARGS {
        return Err(ArgSpecError::TooMany {
            count,
            max: MAX_USDT_ARGS,
        });
    }
    spec.split_whitespace().map(parse_arg).collect()
}

/// Parses one argument spec such as `-4@-20(%rbp)`.
pub fn parse_arg(one: &str) -> Result<UsdtArg, ArgSpecError> {
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
        let value = parse_num(imm).ok_or_else(|| number_error(spec, imm, "immediate"))?;
        let (sz, signed) = sized(8);
        return Ok(UsdtArg {
            value,
            kind: arg::CONST,
            size: sz,
            signed: u8::from(signed),
            scale: 0,
            reg_off: NO_REG,
            index_reg_off: NO_REG,
        });
    }

    let Some((disp, rest)) = operand.split_once('(') else {
        return Err(ArgSpecError::Syntax {
            spec: err_spec(),
            what: "expected %reg, $imm or disp(%base[,%index[,scale]])",
        });
    };
    let Some(inner) = rest.strip_suffix(')') else {
        return Err(ArgSpecError::Syntax {
            spec: err_spec(),
            what: "missing `)`",
        });
    };
    let value = if disp.is_empty() {
        0
    } else {
        parse_num(disp).ok_or_else(|| number_error(spec, disp, "displacement"))?
    };
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
    let base = base.strip_prefix('%').ok_or(ArgSpecError::Syntax {
        spec: err_spec(),
        what: "missing base register",
    })?;
    let base = lookup_reg(spec, base)?;
    if base.width != 8 && base.width != 0 {
        return Err(bad_reg(spec, base.name, "base register must be 64-bit"));
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
    let (sz, signed) = sized(8);
    Ok(UsdtArg {
        value,
        kind: arg::MEM,
        size: sz,
        signed: u8::from(signed),
        scale,
        reg_off: base.off,
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
            ("8@(,%rax,8)", "Syntax"),
            ("8@(%rax,rbx)", "Syntax"),
            ("8@(%rax,%rbx,1,2)", "Syntax"),
            ("8@4(%rax", "Syntax"),
            ("8@rdi", "Syntax"),
            ("garbage", "Syntax"),
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
