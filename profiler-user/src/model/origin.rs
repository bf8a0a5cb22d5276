//! Where and when a session ran: the machine's name, its boot, and its wall clock's offset
//! from CLOCK_MONOTONIC (the eBPF clock). A live session measures them; a recording carries
//! them, so `tprof report` on another machine, another boot, or in another time namespace
//! gives the recording machine's wall times and names, never its own.

use serde::{Deserialize, Serialize};

use crate::clock::WallClock;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Origin {
    /// `host.name`: the UTS host name (`/proc/sys/kernel/hostname`).
    pub host_name: Option<String>,
    /// `/proc/sys/kernel/random/boot_id`: monotonic times only compare within one boot.
    pub boot_id: Option<String>,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC in ns when the session started (None: unknown,
    /// e.g. a recording made by an older tprof).
    pub clock_offset_ns: Option<i64>,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl Origin {
    /// This machine, now.
    pub fn here() -> Origin {
        let clock = WallClock::now();
        Origin {
            host_name: read_trimmed("/proc/sys/kernel/hostname"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            clock_offset_ns: i64::try_from(clock.offset_ns).ok(),
        }
    }

    /// The wall clock of that session (this machine's now when unknown).
    pub fn clock(&self) -> WallClock {
        match self.clock_offset_ns {
            Some(o) => WallClock { offset_ns: i128::from(o) },
            None => WallClock::now(),
        }
    }
}
