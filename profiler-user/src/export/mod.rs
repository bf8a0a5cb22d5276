//! Exporters: sinks that turn finished tasks into the formats people already look at.
//! Each is a [`crate::sink::Sink`]; the session can run several at once.

pub mod http;
pub mod otlp;
pub mod perfetto;
pub mod zipkin;

/// Converts CLOCK_MONOTONIC nanoseconds (the eBPF clock) to Unix-epoch nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// realtime - monotonic, measured once at session start.
    pub offset_ns: i128,
}

impl WallClock {
    /// Measures the offset now.
    pub fn now() -> Self {
        let mono = crate::session::monotonic_ns() as i128;
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
