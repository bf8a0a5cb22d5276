//! The `tprof` command.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use tprof::cli::{Cli, Command};
use tprof::session;

fn main() -> ExitCode {
    // tprof's privileged helper (started by tprof itself, see attach::broker): hidden, and
    // handled before anything else runs.
    if std::env::args_os().nth(1).is_some_and(|a| a == tprof::attach::broker::SUBCOMMAND) {
        let args: Vec<String> = std::env::args_os().skip(2).map(|a| a.to_string_lossy().into_owned()).collect();
        return tprof::attach::broker::main(&args);
    }
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let mut logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    if matches!(&cli.command, Command::Attach(a) if a.target.debug_ebpf) || matches!(&cli.command, Command::Record(r) if r.target.debug_ebpf) {
        // aya-log records carry the eBPF crate's module paths as their target.
        logger.filter_module("profiler", log::LevelFilter::Debug);
    }
    // Log lines quote target-controlled text (provider and probe names, mapped paths,
    // comms): every one is escaped for the terminal on its way to stderr.
    logger.format(|buf, record| writeln!(buf, "{}", tprof::present::log_line(record.level(), record.target(), &record.args().to_string())));
    logger.init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if e.chain().any(|c| c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)) {
                return ExitCode::SUCCESS;
            }
            // Errors quote paths and names the target chose: escaped, line breaks aside.
            let _ = writeln!(io::stderr(), "tprof: error: {}", tprof::present::escape_lines(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Attach(args) => {
            let mut opts = args.target.to_options(args.output.filter()?)?;
            opts.profile = args.output.profile_outputs(true)?;
            let origin = tprof::model::origin::Origin::here();
            let sinks = args.output.sinks(io::BufWriter::new(io::stdout()), &args.target.pids, &origin, true)?;
            let report = session::run(opts, sinks, None)?;
            for w in &report.warnings {
                log::info!("{w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Record(args) => {
            // Events flow only to an HTML report, if one is asked for.
            let opts = args.target.to_options(tprof::sink::Filter { events: args.html.is_some(), ..Default::default() })?;
            let origin = tprof::model::origin::Origin::here();
            let sinks = args.sinks()?;
            let recorder = tprof::record::Recorder::create(&args.output, &args.target.pids, &origin)?;
            let report = session::run(opts, sinks, Some(recorder))?;
            let _ = writeln!(
                io::stderr(),
                "tprof: recorded {} records, {} tasks, {} kernel records lost, to {} ({}); read it with `tprof report {}`",
                report.records,
                report.correlator.tasks_ended,
                report.total_kernel_drops(),
                args.output.display(),
                report.stop_reason,
                args.output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => {
            // The recording machine's host and clock, never this one's.
            let origin = tprof::report::origin(&args.file)?;
            let sinks = args.output.sinks(io::BufWriter::new(io::stdout()), &[], &origin, false)?;
            tprof::report::run_with(&args.file, sinks, args.output.filter()?, args.allow_truncated, args.output.profile_outputs(false)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(args) => {
            let ok = tprof::doctor::run(&mut io::stdout().lock(), args.pid)?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::List(args) => {
            let mut out = io::stdout().lock();
            let mapping = tprof::mapping::ProbeMapping::load(&args.preset, &args.probe_files)?;
            let n = tprof::list::run(args.pid, args.binary.as_deref(), mapping.as_ref(), &mut out)?;
            if n == 0 {
                let _ = writeln!(io::stderr(), "tprof: no USDT probes found");
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
