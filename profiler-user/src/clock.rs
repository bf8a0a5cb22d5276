//! Clocks. The eBPF programs stamp every record with `bpf_ktime_get_ns()`, i.e.
//! CLOCK_MONOTONIC; exports that need wall time convert once, through [`WallClock`].

/// `clock_gettime(id)` in ns (0 if the clock cannot be read).
pub fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// CLOCK_MONOTONIC now, in ns: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Converts CLOCK_MONOTONIC nanoseconds (the eBPF clock) to Unix-epoch nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// realtime - monotonic, measured once at session start.
    pub offset_ns: i128,
}

impl WallClock {
    /// Measures the offset now.
    pub fn now() -> Self {
        let mono = monotonic_ns() as i128;
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        WallClock { offset_ns: real - mono }
    }

    /// Unix-epoch ns for a monotonic timestamp (0 if it would be negative).
    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        u64::try_from(mono_ns as i128 + self.offset_ns).unwrap_or(0)
    }
}
