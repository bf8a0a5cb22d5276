//! `cargo xtask bench [WHICH] [options]`: builds and runs the benchmark driver, the
//! `tprof-bench` binary of the tests crate (`tests/src/bench/`), with the same arguments. The
//! driver lives beside the workloads it runs and shares the end-to-end tests' process helpers
//! (see its module doc); xtask stays a thin wrapper, with no dependencies of its own for it.

use std::process::Command;

use anyhow::Result;

use crate::{bin_dir, build, cargo, setup, status};

pub fn run(args: &[String]) -> Result<()> {
    let help = matches!(args.first().map(String::as_str), Some("-h" | "--help" | "help"))
        || args.iter().skip(1).any(|a| a == "-h" || a == "--help");
    if help {
        // The usage needs only the driver itself: no setup, no eBPF build.
        status(cargo().args(["build", "--quiet", "-p", "tprof-tests", "--bin", "tprof-bench"]))?;
    } else {
        // The driver runs target/debug/tprof (probes) and builds its release binaries itself.
        setup::ensure()?;
        build()?;
    }
    status(Command::new(bin_dir().join("tprof-bench")).args(args))
}
