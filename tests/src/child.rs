//! Child processes, as both the end-to-end tests ([`crate::Proc`]) and the benchmarks
//! ([`crate::bench`]) hold them: killed and reaped on every path out ([`Guard`]), their
//! output read line by line on a thread so that a wait can time out ([`line_reader`],
//! [`expect_line`]), signalled ([`signal`]) and waited for with a limit ([`wait_exit`]).
//!
//! These return errors rather than panic: the benchmarks report a failed step and go on;
//! the tests turn an error into a panic at the call.

use std::io::{BufRead, BufReader, Read};
use std::ops::{Deref, DerefMut};
use std::process::Child;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// A child killed (SIGKILL) and reaped on drop, whatever path we leave by. It derefs to the
/// [`Child`], so `guard.id()`, `guard.try_wait()` and `guard.stdout` work as on the child.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Deref for Guard {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Reads a pipe's lines on a thread, so that we can wait for them with a timeout. The
/// channel closes when the pipe does (the writer exited) or a line is not UTF-8.
pub fn line_reader(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits up to `timeout` for a line starting with `prefix` and returns it; other lines are
/// appended to `seen`. `who` names the process in the error, which ends with what it said.
pub fn expect_line(
    rx: &Receiver<String>,
    prefix: &str,
    timeout: Duration,
    seen: &mut Vec<String>,
    who: &str,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with(prefix) => return Ok(l),
            Ok(l) => seen.push(l),
            Err(RecvTimeoutError::Timeout) => {
                bail!("{who}: no {prefix:?} line after {timeout:?}; it said: {}", tail(seen))
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!("{who} exited before printing {prefix:?}; it said: {}", tail(seen))
            }
        }
    }
}

/// The last 8 non-blank lines, joined with ` | ` (`(nothing)` if there are none).
pub fn tail(lines: &[String]) -> String {
    let keep: Vec<&String> = lines.iter().filter(|l| !l.trim().is_empty()).collect();
    let start = keep.len().saturating_sub(8);
    let t: Vec<&str> = keep[start..].iter().map(|s| s.as_str()).collect();
    if t.is_empty() {
        "(nothing)".into()
    } else {
        t.join(" | ")
    }
}

/// Keeps reading a channel on a thread (and drops what it reads), so its writer never blocks.
pub fn drain_in_background(rx: Receiver<String>) {
    std::thread::spawn(move || while rx.recv().is_ok() {});
}

/// Sends `sig` to `pid`. The caller holds the process (a [`Guard`] or a `Child` not yet
/// reaped), so the pid is not reused under it.
pub fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill takes a pid and a signal number and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits for a child to exit, up to `timeout`; false if it is still running.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_line_skips_other_lines_and_keeps_them() {
        let rx = line_reader(&b"one\ntwo\nready 42\nafter\n"[..]);
        let mut seen = Vec::new();
        let got = expect_line(&rx, "ready ", Duration::from_secs(10), &mut seen, "t").unwrap();
        assert_eq!(got, "ready 42");
        assert_eq!(seen, ["one", "two"]);
    }

    #[test]
    fn expect_line_says_what_the_process_printed_when_it_ends_first() {
        let rx = line_reader(&b"\nwarming up\nbye\n"[..]);
        let e = expect_line(&rx, "ready ", Duration::from_secs(10), &mut Vec::new(), "t").unwrap_err();
        assert_eq!(e.to_string(), "t exited before printing \"ready \"; it said: warming up | bye");
    }

    #[test]
    fn tail_keeps_the_last_eight_lines() {
        let lines: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(tail(&lines), "2 | 3 | 4 | 5 | 6 | 7 | 8 | 9");
        assert_eq!(tail(&[]), "(nothing)");
    }
}
