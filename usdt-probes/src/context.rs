//! W3C Trace Context: the `traceparent` header value.
//!
//! Implements the `traceparent` format of the W3C Trace Context recommendation
//! (<https://www.w3.org/TR/trace-context/>), version `00`:
//!
//! ```text
//! 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//! ^^ ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ ^^^^^^^^^^^^^^^^ ^^
//! |  trace-id (32 lowercase hex)      parent-id/span-id trace-flags
//! version (2 lowercase hex)           (16 lowercase hex) (2 lowercase hex)
//! ```
//!
//! Parsing follows the spec's rules:
//!
//! * every hex digit must be lowercase (`0-9a-f`); uppercase is rejected;
//! * an all-zero trace-id or span-id is invalid;
//! * version `ff` is invalid;
//! * version `00` must be exactly 55 characters: trailing data is invalid;
//! * a higher (future) version is parsed as version `00` over its first 55
//!   characters; if the value is longer, the 56th character must be `-`, and
//!   everything after it is ignored;
//! * the flags byte is kept exactly as received (all 8 bits), for every
//!   version; bit 0 is the `sampled` flag.
//!
//! As an HTTP field value may carry optional whitespace (OWS) around it, ASCII
//! spaces and horizontal tabs at both ends are trimmed before parsing. No other
//! whitespace is accepted.
//!
//! Formatting always emits version `00` with lowercase hex.
//!
//! All checks work on bytes, so arbitrary (including non-ASCII) input is
//! rejected with an error and never panics.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Length in bytes of a version-00 `traceparent` value.
const TRACEPARENT_LEN: usize = 55;
/// Byte offsets of the three `-` delimiters of a version-00 value.
const DELIMITERS: [usize; 3] = [2, 35, 52];
/// Byte ranges of each field: (start, length, name).
const VERSION: (usize, usize, &str) = (0, 2, "version");
const TRACE_ID: (usize, usize, &str) = (3, 32, "trace-id");
const SPAN_ID: (usize, usize, &str) = (36, 16, "parent-id");
const FLAGS: (usize, usize, &str) = (53, 2, "trace-flags");

/// A W3C trace context: trace-id, span-id (the spec's `parent-id`) and
/// trace-flags.
///
/// Both ids are always non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceContext {
    /// The `sampled` trace flag (bit 0 of trace-flags).
    pub const FLAG_SAMPLED: u8 = 0x01;

    /// Builds a context from its parts. Returns `None` if either id is zero,
    /// which the spec forbids.
    pub fn new(trace_id: u128, span_id: u64, flags: u8) -> Option<Self> {
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace: random non-zero trace-id and span-id, flags
    /// [`FLAG_SAMPLED`](Self::FLAG_SAMPLED).
    pub fn new_root() -> Self {
        Self {
            trace_id: random_nonzero_u128(),
            span_id: random_nonzero_u64(),
            flags: Self::FLAG_SAMPLED,
        }
    }

    /// A child span: same trace-id and flags, a fresh random non-zero
    /// span-id.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: random_nonzero_u64(),
            flags: self.flags,
        }
    }

    /// The 128-bit trace-id (big-endian reading of its 32 hex digits).
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The 64-bit span-id (the spec's `parent-id`).
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// The trace-flags byte, as received or set.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the `sampled` flag (bit 0) is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::FLAG_SAMPLED != 0
    }

    /// The trace-id split into `(high, low)` 64-bit halves: `high` is the
    /// first 16 hex digits (first 8 bytes, big-endian) and `low` the last 16.
    pub fn trace_id_halves(&self) -> (u64, u64) {
        ((self.trace_id >> 64) as u64, self.trace_id as u64)
    }

    /// Parses a `traceparent` header value.
    ///
    /// ASCII spaces and tabs at both ends are trimmed first (HTTP OWS). See
    /// the module-level documentation for the rules applied.
    pub fn parse_traceparent(s: &str) -> Result<Self, ParseError> {
        let s = s.trim_matches(|c| c == ' ' || c == '\t');
        let b = s.as_bytes();

        if b.len() < TRACEPARENT_LEN {
            return Err(ParseError::TooShort { len: b.len() });
        }
        for &index in &DELIMITERS {
            if b[index] != b'-' {
                return Err(ParseError::Delimiter {
                    index,
                    found: b[index],
                });
            }
        }

        let version = parse_hex(b, VERSION)? as u8;
        if version == 0xff {
            return Err(ParseError::VersionFf);
        }
        if version == 0 {
            if b.len() != TRACEPARENT_LEN {
                return Err(ParseError::TrailingData { len: b.len() });
            }
        } else if b.len() > TRACEPARENT_LEN && b[TRACEPARENT_LEN] != b'-' {
            return Err(ParseError::Delimiter {
                index: TRACEPARENT_LEN,
                found: b[TRACEPARENT_LEN],
            });
        }

        let trace_id = parse_hex(b, TRACE_ID)?;
        let span_id = parse_hex(b, SPAN_ID)? as u64;
        let flags = parse_hex(b, FLAGS)? as u8;

        if trace_id == 0 {
            return Err(ParseError::ZeroTraceId);
        }
        if span_id == 0 {
            return Err(ParseError::ZeroSpanId);
        }
        Ok(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Formats as a version-00 `traceparent` value:
    /// `00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>`.
    pub fn to_traceparent(&self) -> String {
        format!("{self}")
    }
}

impl fmt::Display for TraceContext {
    /// Same as [`TraceContext::to_traceparent`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

impl FromStr for TraceContext {
    type Err = ParseError;

    /// Same as [`TraceContext::parse_traceparent`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_traceparent(s)
    }
}

/// Why a `traceparent` value was rejected.
///
/// Byte indexes are 0-based offsets into the value after trimming surrounding
/// spaces/tabs. `found` is the offending byte (which, for non-ASCII input, may
/// be one byte of a multi-byte character).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Fewer than the 55 bytes every version requires.
    TooShort {
        /// Length in bytes of the (trimmed) value.
        len: usize,
    },
    /// Version `00` with data after the trace-flags (it must be exactly 55
    /// bytes).
    TrailingData {
        /// Length in bytes of the (trimmed) value.
        len: usize,
    },
    /// A `-` delimiter was expected at `index` (2, 35, 52, or for a future
    /// version longer than 55 bytes, 55).
    Delimiter {
        /// Byte index where `-` was expected.
        index: usize,
        /// The byte found there.
        found: u8,
    },
    /// An uppercase hex digit; the spec allows lowercase only.
    UppercaseHex {
        /// Field name: `version`, `trace-id`, `parent-id` or `trace-flags`.
        field: &'static str,
        /// Byte index of the digit.
        index: usize,
    },
    /// A byte that is not a hex digit.
    NonHex {
        /// Field name: `version`, `trace-id`, `parent-id` or `trace-flags`.
        field: &'static str,
        /// Byte index of the offending byte.
        index: usize,
        /// The offending byte.
        found: u8,
    },
    /// Version `ff`, which the spec declares invalid.
    VersionFf,
    /// An all-zero trace-id, which the spec declares invalid.
    ZeroTraceId,
    /// An all-zero parent-id (span-id), which the spec declares invalid.
    ZeroSpanId,
}

/// Writes a byte for a message: printable ASCII as `'c'`, anything else as
/// `byte 0xNN`.
struct ShowByte(u8);

impl fmt::Display for ShowByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() || self.0 == b' ' {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "byte 0x{:02x}", self.0)
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => write!(
                f,
                "traceparent too short: {len} bytes, at least {TRACEPARENT_LEN} required"
            ),
            Self::TrailingData { len } => write!(
                f,
                "traceparent version 00 must be exactly {TRACEPARENT_LEN} bytes, got {len} (trailing data)"
            ),
            Self::Delimiter { index, found } => write!(
                f,
                "traceparent: expected '-' at byte {index}, found {}",
                ShowByte(*found)
            ),
            Self::UppercaseHex { field, index } => write!(
                f,
                "traceparent {field}: uppercase hex digit at byte {index} (only lowercase is allowed)"
            ),
            Self::NonHex {
                field,
                index,
                found,
            } => write!(
                f,
                "traceparent {field}: {} at byte {index} is not a hex digit",
                ShowByte(*found)
            ),
            Self::VersionFf => f.write_str("traceparent: version ff is invalid"),
            Self::ZeroTraceId => f.write_str("traceparent: all-zero trace-id is invalid"),
            Self::ZeroSpanId => f.write_str("traceparent: all-zero parent-id is invalid"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses the lowercase hex field `(start, len, name)` of `b` (`len` <= 32).
/// The caller has checked that `b` is long enough.
fn parse_hex(
    b: &[u8],
    (start, len, field): (usize, usize, &'static str),
) -> Result<u128, ParseError> {
    let mut value: u128 = 0;
    for (index, &c) in b.iter().enumerate().skip(start).take(len) {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => return Err(ParseError::UppercaseHex { field, index }),
            _ => {
                return Err(ParseError::NonHex {
                    field,
                    index,
                    found: c,
                })
            }
        };
        value = (value << 4) | u128::from(digit);
    }
    Ok(value)
}

/// How many times to ask the OS for a non-zero value before falling back.
/// A zero from a working RNG has probability 2^-64 per try; the bound only
/// guards against a broken source that keeps returning zeros.
const RANDOM_TRIES: usize = 8;

/// A random non-zero `u64`, from the OS RNG, or from [`fallback_nonzero_u64`]
/// if that fails. Never zero, never panics.
fn random_nonzero_u64() -> u64 {
    for _ in 0..RANDOM_TRIES {
        let mut buf = [0u8; 8];
        if getrandom::fill(&mut buf).is_err() {
            break;
        }
        let v = u64::from_ne_bytes(buf);
        if v != 0 {
            return v;
        }
    }
    fallback_nonzero_u64()
}

/// A random non-zero `u128`; see [`random_nonzero_u64`].
fn random_nonzero_u128() -> u128 {
    for _ in 0..RANDOM_TRIES {
        let mut buf = [0u8; 16];
        if getrandom::fill(&mut buf).is_err() {
            break;
        }
        let v = u128::from_ne_bytes(buf);
        if v != 0 {
            return v;
        }
    }
    // The low half is non-zero, so the whole is.
    (u128::from(fallback_nonzero_u64()) << 64) | u128::from(fallback_nonzero_u64())
}

/// Counter mixed into fallback ids so that calls never repeat an input.
static FALLBACK_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One splitmix64 output step: a bijection on `u64` with good mixing.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A non-zero pseudo-random `u64` when the OS RNG is unavailable: the wall
/// clock's nanoseconds, a hash of the current thread's id and a global
/// counter, mixed by splitmix64. Not cryptographic, but distinct across calls
/// and threads in practice.
fn fallback_nonzero_u64() -> u64 {
    let nanos = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as u64,
        Err(e) => e.duration().as_nanos() as u64,
    };
    let mut hasher = DefaultHasher::new();
    std::thread::current().id().hash(&mut hasher);
    let seed = nanos ^ hasher.finish().rotate_left(32);
    loop {
        let count = FALLBACK_COUNTER.fetch_add(1, Ordering::Relaxed);
        // With `seed` fixed, distinct counts give distinct inputs (the
        // multiplier is odd) and splitmix64 is a bijection, so at most one
        // input maps to zero: this loop runs at most twice.
        let v = splitmix64(seed ^ count.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(s: &str) -> Result<TraceContext, ParseError> {
        TraceContext::parse_traceparent(s)
    }

    /// `EXAMPLE` with the byte at `index` replaced by `c` (ASCII).
    fn with_byte(index: usize, c: u8) -> String {
        let mut b = EXAMPLE.as_bytes().to_vec();
        b[index] = c;
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn parses_known_example() {
        let tc = parse(EXAMPLE).unwrap();
        assert_eq!(tc.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tc.span_id(), 0x00f067aa0ba902b7);
        assert_eq!(tc.flags(), 0x01);
        assert!(tc.is_sampled());
    }

    #[test]
    fn round_trip_known_example() {
        let tc = parse(EXAMPLE).unwrap();
        assert_eq!(tc.to_traceparent(), EXAMPLE);
        assert_eq!(parse(&tc.to_traceparent()).unwrap(), tc);
    }

    #[test]
    fn trace_id_halves() {
        let tc = parse(EXAMPLE).unwrap();
        assert_eq!(
            tc.trace_id_halves(),
            (0x4bf92f3577b34da6, 0xa3ce929d0e0e4736)
        );
        let (hi, lo) = tc.trace_id_halves();
        assert_eq!((u128::from(hi) << 64) | u128::from(lo), tc.trace_id());
        // Halves are the first and last 16 hex digits.
        assert_eq!(format!("{hi:016x}{lo:016x}"), &EXAMPLE[3..35]);

        let small = TraceContext::new(1, 1, 0).unwrap();
        assert_eq!(small.trace_id_halves(), (0, 1));
        let big = TraceContext::new(1u128 << 64, 1, 0).unwrap();
        assert_eq!(big.trace_id_halves(), (1, 0));
    }

    #[test]
    fn new_rejects_zero_ids() {
        assert!(TraceContext::new(0, 1, 1).is_none());
        assert!(TraceContext::new(1, 0, 1).is_none());
        assert!(TraceContext::new(0, 0, 1).is_none());
        let tc = TraceContext::new(7, 9, 0xab).unwrap();
        assert_eq!((tc.trace_id(), tc.span_id(), tc.flags()), (7, 9, 0xab));
        assert!(tc.is_sampled());
        assert!(!TraceContext::new(7, 9, 0xfe).unwrap().is_sampled());
    }

    #[test]
    fn formats_with_zero_padding_and_lowercase() {
        let tc = TraceContext::new(0xab, 0xcd, 0).unwrap();
        assert_eq!(
            tc.to_traceparent(),
            "00-000000000000000000000000000000ab-00000000000000cd-00"
        );
        let tc = TraceContext::new(u128::MAX, u64::MAX, 0xff).unwrap();
        assert_eq!(
            tc.to_traceparent(),
            "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-ff"
        );
        assert_eq!(parse(&tc.to_traceparent()).unwrap(), tc);
    }

    #[test]
    fn display_and_from_str_agree() {
        let tc: TraceContext = EXAMPLE.parse().unwrap();
        assert_eq!(tc.to_string(), EXAMPLE);
        assert_eq!(tc.to_string(), tc.to_traceparent());
        assert_eq!(EXAMPLE.parse::<TraceContext>(), parse(EXAMPLE));
        let root = TraceContext::new_root();
        assert_eq!(root.to_string().parse::<TraceContext>().unwrap(), root);
        assert_eq!("garbage".parse::<TraceContext>(), parse("garbage"));
    }

    #[test]
    fn keeps_all_flag_bits() {
        for flags in [0x00u8, 0x01, 0x02, 0x03, 0x80, 0xfe, 0xff] {
            let s = format!("{}{:02x}", &EXAMPLE[..53], flags);
            let tc = parse(&s).unwrap();
            assert_eq!(tc.flags(), flags);
            assert_eq!(tc.is_sampled(), flags & 1 == 1);
            assert_eq!(tc.to_traceparent(), s);
        }
    }

    #[test]
    fn trims_spaces_and_tabs() {
        let want = parse(EXAMPLE).unwrap();
        for s in [
            format!(" {EXAMPLE}"),
            format!("{EXAMPLE} "),
            format!("\t {EXAMPLE} \t"),
            format!("  \t\t{EXAMPLE}\t"),
        ] {
            assert_eq!(parse(&s), Ok(want), "{s:?}");
        }
        // Other whitespace is not OWS and is not trimmed.
        assert_eq!(
            parse(&format!("{EXAMPLE}\n")),
            Err(ParseError::TrailingData { len: 56 })
        );
        assert!(parse(&format!("\n{EXAMPLE}")).is_err());
        // Whitespace inside is not removed.
        assert!(parse(&EXAMPLE.replacen('-', " -", 1)).is_err());
    }

    #[test]
    fn too_short() {
        assert_eq!(parse(""), Err(ParseError::TooShort { len: 0 }));
        assert_eq!(parse("   "), Err(ParseError::TooShort { len: 0 }));
        assert_eq!(parse("00"), Err(ParseError::TooShort { len: 2 }));
        for n in 0..55 {
            assert_eq!(
                parse(&EXAMPLE[..n]),
                Err(ParseError::TooShort { len: n }),
                "prefix of {n}"
            );
        }
        // A future version needs the full 55 too.
        assert_eq!(
            parse(&format!("01{}", &EXAMPLE[2..54])),
            Err(ParseError::TooShort { len: 54 })
        );
    }

    #[test]
    fn version_00_trailing_data_is_invalid() {
        assert_eq!(
            parse(&format!("{EXAMPLE}-")),
            Err(ParseError::TrailingData { len: 56 })
        );
        assert_eq!(
            parse(&format!("{EXAMPLE}-what-the-future-will-be-like")),
            Err(ParseError::TrailingData { len: 84 })
        );
        assert_eq!(
            parse(&format!("{EXAMPLE}0")),
            Err(ParseError::TrailingData { len: 56 })
        );
    }

    #[test]
    fn wrong_delimiters() {
        for index in DELIMITERS {
            for c in [b'_', b'0', b'a', b' ', b'+'] {
                assert_eq!(
                    parse(&with_byte(index, c)),
                    Err(ParseError::Delimiter { index, found: c }),
                    "index {index} byte {c}"
                );
            }
        }
        // Shifted fields: the delimiter lands in the wrong place.
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01"),
            Err(ParseError::Delimiter {
                index: 35,
                found: b'6'
            })
        );
    }

    #[test]
    fn uppercase_hex_is_invalid() {
        let upper = EXAMPLE.to_ascii_uppercase();
        assert_eq!(
            parse(&upper),
            Err(ParseError::UppercaseHex {
                field: "trace-id",
                index: 4
            })
        );
        assert_eq!(
            parse(&with_byte(10, b'A')),
            Err(ParseError::UppercaseHex {
                field: "trace-id",
                index: 10
            })
        );
        assert_eq!(
            parse(&with_byte(40, b'F')),
            Err(ParseError::UppercaseHex {
                field: "parent-id",
                index: 40
            })
        );
        assert_eq!(
            parse(&with_byte(53, b'B')),
            Err(ParseError::UppercaseHex {
                field: "trace-flags",
                index: 53
            })
        );
        assert_eq!(
            parse(&format!("0A{}", &EXAMPLE[2..])),
            Err(ParseError::UppercaseHex {
                field: "version",
                index: 1
            })
        );
        // Uppercase FF is an uppercase error, not a version-ff one.
        assert_eq!(
            parse(&format!("FF{}", &EXAMPLE[2..])),
            Err(ParseError::UppercaseHex {
                field: "version",
                index: 0
            })
        );
    }

    #[test]
    fn non_hex_is_invalid() {
        let cases: [(usize, &str); 5] = [
            (0, "version"),
            (3, "trace-id"),
            (34, "trace-id"),
            (36, "parent-id"),
            (54, "trace-flags"),
        ];
        for (index, field) in cases {
            for c in [b'g', b'z', b'G', b'x', b'-', b'.', 0u8, 0x7f] {
                assert_eq!(
                    parse(&with_byte(index, c)),
                    Err(ParseError::NonHex {
                        field,
                        index,
                        found: c
                    }),
                    "index {index} byte {c}"
                );
            }
        }
        // Spaces are only trimmed at the ends.
        assert_eq!(
            parse(&with_byte(20, b' ')),
            Err(ParseError::NonHex {
                field: "trace-id",
                index: 20,
                found: b' '
            })
        );
    }

    #[test]
    fn version_ff_is_invalid() {
        assert_eq!(
            parse(&format!("ff{}", &EXAMPLE[2..])),
            Err(ParseError::VersionFf)
        );
        assert_eq!(
            parse(&format!("ff{}-extra", &EXAMPLE[2..])),
            Err(ParseError::VersionFf)
        );
    }

    #[test]
    fn zero_trace_id_is_invalid() {
        assert_eq!(
            parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Err(ParseError::ZeroTraceId)
        );
        assert_eq!(
            parse("cc-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Err(ParseError::ZeroTraceId)
        );
    }

    #[test]
    fn zero_span_id_is_invalid() {
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Err(ParseError::ZeroSpanId)
        );
        assert_eq!(
            parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01-x"),
            Err(ParseError::ZeroSpanId)
        );
        // Both zero: the trace-id is reported.
        assert_eq!(
            parse("00-00000000000000000000000000000000-0000000000000000-01"),
            Err(ParseError::ZeroTraceId)
        );
    }

    #[test]
    fn future_version_exactly_55() {
        let want = parse(EXAMPLE).unwrap();
        for v in ["01", "02", "10", "cc", "fe"] {
            let s = format!("{v}{}", &EXAMPLE[2..]);
            assert_eq!(parse(&s), Ok(want), "{s}");
            // Formatting always emits version 00.
            assert_eq!(parse(&s).unwrap().to_traceparent(), EXAMPLE);
        }
    }

    #[test]
    fn future_version_with_extra_fields() {
        let want = parse(EXAMPLE).unwrap();
        for tail in ["-", "-extra", "-what-the-future-will-be-like", "-é☃", "--"] {
            let s = format!("cc{}{tail}", &EXAMPLE[2..]);
            assert_eq!(parse(&s), Ok(want), "{s}");
        }
        // Flags are kept as given for future versions too.
        let s = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02-ab";
        let tc = parse(s).unwrap();
        assert_eq!(tc.flags(), 0x02);
        assert!(!tc.is_sampled());
    }

    #[test]
    fn future_version_without_dash_after_55_is_invalid() {
        for c in [b'0', b'a', b'_', b' ', b'X'] {
            let mut s = format!("cc{}", &EXAMPLE[2..]);
            s.push(c as char);
            s.push_str("abc");
            assert_eq!(
                parse(&s),
                Err(ParseError::Delimiter {
                    index: 55,
                    found: c
                }),
                "{s}"
            );
        }
        // Flags of three hex digits: the third is where '-' should be.
        assert_eq!(
            parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-012"),
            Err(ParseError::Delimiter {
                index: 55,
                found: b'2'
            })
        );
        // Non-ASCII right after the flags.
        assert_eq!(
            parse(&format!("cc{}é", &EXAMPLE[2..])),
            Err(ParseError::Delimiter {
                index: 55,
                found: 0xc3
            })
        );
    }

    #[test]
    fn non_ascii_input_does_not_panic() {
        // Put multi-byte characters at every position so that byte 2, 35,
        // 52, 55 etc. fall inside a character.
        for ch in ['é', '☃', '𝄞', '\u{80}'] {
            let chars: Vec<char> = EXAMPLE.chars().collect();
            for i in 0..chars.len() {
                let mut replaced = chars.clone();
                replaced[i] = ch;
                let s: String = replaced.iter().collect();
                assert!(parse(&s).is_err(), "{s:?}");
                let inserted: String = chars[..i]
                    .iter()
                    .chain(std::iter::once(&ch))
                    .chain(chars[i..].iter())
                    .collect();
                assert!(parse(&inserted).is_err(), "{inserted:?}");
                if i < 2 {
                    continue; // the version is overwritten below
                }
                // Same with a future version, where data after 55 matters.
                let future: String = std::iter::once('c')
                    .chain(std::iter::once('c'))
                    .chain(replaced[2..].iter().copied())
                    .collect();
                assert!(parse(&future).is_err(), "{future:?}");
            }
        }
        // Entirely non-ASCII strings of various byte lengths around 55.
        for n in 10..40 {
            let s: String = std::iter::repeat_n('é', n).collect();
            assert!(parse(&s).is_err());
            let s: String = std::iter::repeat_n('☃', n).collect();
            assert!(parse(&s).is_err());
        }
        // Non-ASCII in a field is reported as a non-hex byte.
        let s = format!("{}é{}", &EXAMPLE[..3], &EXAMPLE[4..]);
        assert_eq!(
            parse(&s),
            Err(ParseError::Delimiter {
                index: 35,
                found: b'6'
            })
        );
        let s = format!("{}é{}", &EXAMPLE[..3], &EXAMPLE[5..]);
        assert_eq!(
            parse(&s),
            Err(ParseError::NonHex {
                field: "trace-id",
                index: 3,
                found: 0xc3
            })
        );
    }

    #[test]
    fn pseudo_random_inputs_do_not_panic() {
        let alphabet: Vec<char> = "0123456789abcdefABCDEF-xz \té☃𝄞".chars().collect();
        let mut state = 0x1234_5678_u64;
        for _ in 0..20_000 {
            state = splitmix64(state);
            let len = (state % 70) as usize;
            let mut s = String::new();
            for _ in 0..len {
                state = splitmix64(state);
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            if let Ok(tc) = parse(&s) {
                assert_ne!(tc.trace_id(), 0);
                assert_ne!(tc.span_id(), 0);
                assert_eq!(parse(&tc.to_traceparent()), Ok(tc));
            }
        }
        // Mutate the valid example one byte at a time with random ASCII.
        for _ in 0..20_000 {
            state = splitmix64(state);
            let index = (state % 55) as usize;
            let c = ((state >> 8) % 128) as u8;
            let s = with_byte(index, c);
            if let Ok(tc) = parse(&s) {
                assert_eq!(tc.to_traceparent().len(), 55);
            }
        }
    }

    #[test]
    fn new_root_is_sampled_with_nonzero_distinct_ids() {
        let mut traces = HashSet::new();
        let mut spans = HashSet::new();
        for _ in 0..1000 {
            let tc = TraceContext::new_root();
            assert_ne!(tc.trace_id(), 0);
            assert_ne!(tc.span_id(), 0);
            assert_eq!(tc.flags(), TraceContext::FLAG_SAMPLED);
            assert!(tc.is_sampled());
            assert!(traces.insert(tc.trace_id()));
            assert!(spans.insert(tc.span_id()));
            assert_eq!(parse(&tc.to_traceparent()), Ok(tc));
        }
    }

    #[test]
    fn child_keeps_trace_id_and_flags() {
        let parent = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap();
        let mut spans = HashSet::new();
        spans.insert(parent.span_id());
        for _ in 0..1000 {
            let child = parent.child();
            assert_eq!(child.trace_id(), parent.trace_id());
            assert_eq!(child.flags(), parent.flags());
            assert_ne!(child.span_id(), 0);
            assert!(spans.insert(child.span_id()), "span-id repeated");
        }
        let unsampled = TraceContext::new(5, 6, 0).unwrap();
        let child = unsampled.child();
        assert!(!child.is_sampled());
        assert_eq!(child.trace_id(), 5);
        let grandchild = child.child();
        assert_eq!(grandchild.trace_id(), 5);
        assert_ne!(grandchild.span_id(), child.span_id());
    }

    #[test]
    fn fallback_ids_are_nonzero_and_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let v = fallback_nonzero_u64();
            assert_ne!(v, 0);
            assert!(seen.insert(v));
        }
        let from_threads: Vec<u64> = (0..8)
            .map(|_| std::thread::spawn(fallback_nonzero_u64))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        for v in from_threads {
            assert_ne!(v, 0);
            assert!(seen.insert(v));
        }
    }

    #[test]
    fn splitmix64_known_values() {
        // Reference outputs of splitmix64 seeded with 0 (state advanced by
        // the golden gamma before mixing).
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn error_messages_are_clear() {
        let cases: Vec<(ParseError, &str)> = vec![
            (ParseError::TooShort { len: 3 }, "too short: 3 bytes"),
            (ParseError::TrailingData { len: 60 }, "trailing data"),
            (
                ParseError::Delimiter {
                    index: 35,
                    found: b'x',
                },
                "expected '-' at byte 35, found 'x'",
            ),
            (
                ParseError::Delimiter {
                    index: 55,
                    found: 0xc3,
                },
                "found byte 0xc3",
            ),
            (
                ParseError::UppercaseHex {
                    field: "trace-id",
                    index: 4,
                },
                "trace-id: uppercase hex digit at byte 4",
            ),
            (
                ParseError::NonHex {
                    field: "parent-id",
                    index: 40,
                    found: b'g',
                },
                "parent-id: 'g' at byte 40 is not a hex digit",
            ),
            (ParseError::VersionFf, "version ff is invalid"),
            (ParseError::ZeroTraceId, "all-zero trace-id"),
            (ParseError::ZeroSpanId, "all-zero parent-id"),
        ];
        for (err, needle) in cases {
            let msg = err.to_string();
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
            let dyn_err: &dyn std::error::Error = &err;
            assert!(dyn_err.source().is_none());
        }
    }
}
