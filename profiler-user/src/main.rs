//! The `tprof` command.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use tprof::cli::{Cli, Command};
use tprof::session;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let mut logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    if matches!(&cli.command, Command::Attach(a) if a.debug_ebpf) {
        // aya-log records carry the eBPF crate's module paths as their target.
        logger.filter_module("profiler", log::LevelFilter::Debug);
    }
    logger.init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if e.chain().any(|c| c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(io::stderr(), "tprof: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Attach(args) => {
            let opts = args.to_options()?;
            let sinks = args.sinks(io::BufWriter::new(io::stdout()))?;
            let report = session::run(opts, sinks)?;
            for w in &report.warnings {
                log::info!("{w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List(args) => {
            let mut out = io::stdout().lock();
            let n = tprof::list::run(args.pid, args.binary.as_deref(), &mut out)?;
            if n == 0 {
                let _ = writeln!(io::stderr(), "tprof: no USDT probes found");
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
