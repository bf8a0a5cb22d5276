//! How tprof shows things to people, the same in every output: text from the traced
//! process made safe for a terminal, durations, syscall and record-kind names, and who
//! woke a blocked thread.

use crate::model::event::{Waker, OTHER_SYSCALLS};

/// Makes text from the traced process safe for a terminal: control characters (and so
/// terminal escape sequences), and the invisible format characters that reorder or hide
/// text (bidi overrides and isolates such as U+202E and U+2066, zero-width characters,
/// U+FEFF; Unicode's general category Cf, and the line and paragraph separators), are shown
/// as `\u{1b}`-style escapes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// Like [`escape`], but keeps line breaks: for tprof's own multi-line messages (errors,
/// warnings, log lines on stderr) that may quote text from the traced process, which
/// [`escape`] has already made single-line where it is quoted.
pub fn escape_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\n' {
            out.push(c);
        } else {
            push_escaped(&mut out, c);
        }
    }
    out
}

/// One line of tprof's log on stderr, its message escaped as [`escape_lines`] does.
pub fn log_line(level: log::Level, target: &str, msg: &str) -> String {
    format!("[{level:<5} {target}] {}", escape_lines(msg))
}

fn push_escaped(out: &mut String, c: char) {
    if c.is_control() || is_format(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// Format characters (general category Cf) and the line/paragraph separators (Zl, Zp),
/// as of Unicode 15: invisible, and some reorder the text around them.
const FORMAT_CHARS: [(u32, u32); 21] = [
    (0xAD, 0xAD),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn is_format(c: char) -> bool {
    let c = u32::from(c);
    // Everything below U+00AD is ASCII or Latin-1 controls, handled by `is_control`.
    c >= 0xAD && FORMAT_CHARS.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Milliseconds with three decimals, for humans.
pub fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

pub fn syscall_name(nr: u32) -> String {
    if nr == OTHER_SYSCALLS {
        return "other syscalls".to_string();
    }
    crate::syscall_names::name(nr).map(str::to_string).unwrap_or_else(|| format!("syscall_{nr}"))
}

/// Record kind names, indexed by kind (for drop reports).
pub const KIND_NAMES: [&str; 15] = profiler_common::kind::NAMES;

pub fn kind_name(k: u32) -> &'static str {
    profiler_common::kind::name(k)
}

/// The kind of waker, as exports name it: `unknown`, `preempted`, `kernel` or `thread`.
pub fn waker_kind(w: &Waker) -> &'static str {
    match w {
        Waker::Unknown => "unknown",
        Waker::Preempted => "preempted",
        Waker::Kernel => "kernel",
        Waker::Thread { .. } => "thread",
    }
}

/// Who made a blocked thread runnable, in words (text, Perfetto, OTLP and Zipkin alike).
pub fn describe_waker(w: &Waker) -> String {
    match w {
        Waker::Unknown => "waker not seen".into(),
        Waker::Preempted => "preempted".into(),
        Waker::Kernel => "woken by the kernel (interrupt or kernel thread)".into(),
        Waker::Thread { pid, tid, comm, task, via_softirq } => {
            let how = if *via_softirq { "woken via a softirq during the syscall of" } else { "woken by" };
            let mut s = format!("{how} pid {pid} tid {tid} ({})", escape(comm));
            if let Some(t) = task {
                s.push_str(&format!(" [task span {:.8}]", t.span_hex()));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralizes_terminal_sequences() {
        assert_eq!(escape("ok"), "ok");
        assert_eq!(escape("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("line\nbreak\r"), "line\\nbreak\\r");
        assert_eq!(escape("ünï"), "ünï");
    }

    #[test]
    fn escape_neutralizes_bidi_and_invisible_format_characters() {
        // Right-to-left override, isolates, zero-width and byte-order marks, separators.
        for c in ['\u{202E}', '\u{202A}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{200B}', '\u{FEFF}', '\u{2028}', '\u{AD}', '\u{E0041}'] {
            let shown = escape(&format!("a{c}b"));
            assert_eq!(shown, format!("a\\u{{{:x}}}b", u32::from(c)), "{c:?}");
        }
        assert_eq!(escape("évil\u{202E}txt.exe"), "évil\\u{202e}txt.exe");
        // Visible letters of every script stay as they are.
        assert_eq!(escape("日本語 عربى ✓"), "日本語 عربى ✓");
    }

    #[test]
    fn log_lines_are_escaped() {
        let line = log_line(log::Level::Warn, "tprof::discover", "pid 7: skipping /tmp/\x1b]0;owned\x07\u{2066}x.so");
        assert_eq!(line, "[WARN  tprof::discover] pid 7: skipping /tmp/\\u{1b}]0;owned\\u{7}\\u{2066}x.so");
    }

    #[test]
    fn escape_lines_keeps_line_breaks_only() {
        assert_eq!(escape_lines("one\ntwo\x1b]0;t\x07\r\u{202E}"), "one\ntwo\\u{1b}]0;t\\u{7}\\r\\u{202e}");
    }

    #[test]
    fn one_description_of_a_waker() {
        let w = Waker::Thread { pid: 1, tid: 2, comm: "pool\x1b".into(), task: None, via_softirq: false };
        assert_eq!(describe_waker(&w), "woken by pid 1 tid 2 (pool\\u{1b})");
        assert_eq!(waker_kind(&w), "thread");
        assert_eq!(waker_kind(&Waker::Kernel), "kernel");
    }
}
