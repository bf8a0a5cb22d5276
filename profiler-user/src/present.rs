//! How tprof shows things to people, the same in every output: text from the traced
//! process made safe for a terminal, durations, syscall and record-kind names, and who
//! woke a blocked thread.

use crate::model::event::{Waker, OTHER_SYSCALLS};

/// Makes text from the traced process safe for a terminal: control characters (and so
/// terminal escape sequences) are shown as `\x1b`-style escapes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
    fn one_description_of_a_waker() {
        let w = Waker::Thread { pid: 1, tid: 2, comm: "pool\x1b".into(), task: None, via_softirq: false };
        assert_eq!(describe_waker(&w), "woken by pid 1 tid 2 (pool\\u{1b})");
        assert_eq!(waker_kind(&w), "thread");
        assert_eq!(waker_kind(&Waker::Kernel), "kernel");
    }
}
