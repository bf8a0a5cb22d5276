//! The benchmark driver (`tprof_tests::bench`), run by `cargo xtask bench [WHICH] [options]`
//! with the same arguments; `tprof-bench --help` lists them.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match tprof_tests::bench::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
