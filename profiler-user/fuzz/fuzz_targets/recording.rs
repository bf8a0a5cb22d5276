#![no_main]
//! Fuzz target: see `tprof_fuzz::harness::recording`. The input is written to a scratch
//! file per fuzzing process (in /dev/shm when it exists, to keep the disk out of the loop).

use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        dir.join(format!("tprof-fuzz-recording-{}", std::process::id()))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| tprof_fuzz::harness::recording(data, scratch()));
