//! Command-line flags (raw, as clap parses them) and their validation into options.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::attach::{Scope, TraceOptions};
use crate::export::otlp::env as otlp_env;
use crate::export::otlp::{SpanMode, SpanOptions};
use crate::model::origin::Origin;
use crate::session::AttachOptions;
use crate::sink::tee::Tee;
use crate::sink::Filter;

/// tprof: per-request latency profiler. Joins what the kernel does (CPU, run queue,
/// blocking, syscalls) to each request marked with tprof's USDT probes.
#[derive(Parser, Debug)]
#[command(name = "tprof", version = env!("TPROF_VERSION"), long_version = env!("TPROF_LONG_VERSION"), about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More diagnostics on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach to running processes and stream each request's kernel story.
    Attach(AttachArgs),
    /// Attach and record the session compactly to a file, for `tprof report`.
    Record(RecordArgs),
    /// Produce the reports of a recording offline (no root, no running processes needed).
    Report(ReportArgs),
    /// List the USDT probes of a process or a binary (any provider).
    List(ListArgs),
    /// Check what this host supports (kernel, BTF, capabilities, uprobes, eBPF features),
    /// and with `--pid`, what a target's build allows (frame pointers for user stacks).
    Doctor(DoctorArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What to trace and how.
#[derive(Args, Debug)]
pub struct TargetArgs {
    /// Process to trace (repeatable), and the processes it forks (unless --no-follow).
    #[arg(short, long = "pid", required_unless_present_any = ["cgroup", "binary"])]
    pub pids: Vec<u32>,
    /// Trace every process of this cgroup v2 directory (a systemd unit, a container, a
    /// pod), those in it at attach and those that join or are born in it later: a path
    /// under the cgroup2 mount, or from the hierarchy's root (`/system.slice/x.service`).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Trace every process that maps this file (an executable or a library), started
    /// before or after attach.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Map the USDT probes of another provider onto tasks, regions and logs with a
    /// built-in mapping (repeatable): `postgres` (PostgreSQL 12+, one task per query).
    #[arg(long, value_name = "NAME")]
    pub preset: Vec<String>,
    /// Map foreign USDT probes with this mapping file (repeatable; the grammar is
    /// usdt-probes/MAPPING.md).
    #[arg(long = "probes", value_name = "FILE")]
    pub probe_files: Vec<PathBuf>,
    /// Stop after this long (e.g. 10s, 500ms, 2m); default: until Ctrl-C or the target exits.
    #[arg(short, long)]
    pub duration: Option<String>,
    /// Do not trace syscalls.
    #[arg(long)]
    pub no_syscalls: bool,
    /// Do not take kernel/user stacks when a request's thread blocks.
    #[arg(long)]
    pub no_stacks: bool,
    /// Show symbolized stacks for blocked intervals at least this long.
    #[arg(long, default_value = "1ms")]
    pub stack_threshold: String,
    /// Stream on-CPU slices, off-CPU intervals and syscalls at least this long one by one;
    /// shorter ones are summed per request and thread in the kernel (far cheaper) and show
    /// up in the totals only. 0 streams every one.
    #[arg(long, default_value = "100us")]
    pub detail_threshold: String,
    /// A request that has run this long streams every interval from then on, however
    /// short: the slow ones get their full story (every lock wait, waker and syscall).
    /// 0: never.
    #[arg(long, default_value = "10ms")]
    pub slow_request: String,
    /// Kernel ring buffer size in MiB (power of two).
    #[arg(long, default_value_t = 16)]
    pub ring_size: u32,
    /// Print the eBPF programs' own diagnostics (aya-log) on stderr.
    #[arg(long)]
    pub debug_ebpf: bool,
    /// How to attach probe sites: `auto` (uprobe_multi links where the kernel has them,
    /// Linux >= 6.6) or `perf-event` (one uprobe perf event per site, the older way).
    #[arg(long, value_enum, default_value_t = ProbeLinks::Auto)]
    pub probe_links: ProbeLinks,
    /// Trace only the given processes, not the processes they fork.
    #[arg(long)]
    pub no_follow: bool,
    /// On-CPU samples per second on each CPU (99 is a good rate), attributed to the request
    /// the sampled thread works for (each summary's `top_stacks`, each task type's on-CPU
    /// profile); 0, the default, turns sampling off.
    // 99, not 100: sampling then does not run in lockstep with the sampled code's timers.
    // Off by default: with it on, a traced thread's switch-in is now and then not seen
    // (counted, flagged `end_inferred`; cause not found yet, docs/limitations.md).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub sample_hz: u64,
    /// For tests only: drop scheduler events of task-carrying threads on purpose,
    /// `lose-switch-in:N` or `lose-switch-pair:N` (one in N per CPU), to prove that tprof
    /// detects and reports such losses (docs/reliability.md).
    #[arg(long, hide = true, value_name = "KIND:N")]
    pub inject_fault: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProbeLinks {
    Auto,
    PerfEvent,
}

/// What to show and where to export it.
#[derive(Args, Debug)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Only show requests at least this slow (e.g. 5ms).
    #[arg(long)]
    pub min_latency: Option<String>,
    /// Only show this trace (32 hex digits).
    #[arg(long)]
    pub trace_id: Option<String>,
    /// Only show tasks with this name.
    #[arg(long)]
    pub task: Option<String>,
    /// Print only per-request summaries, not every event.
    #[arg(long)]
    pub summary_only: bool,
    /// Write a Perfetto trace (open it in ui.perfetto.dev) at the end of the session.
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    /// Write a self-contained HTML report (task types, latency histograms, the slowest
    /// requests as waterfalls; no network needed to view it) at the end of the session.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write OTLP/JSON spans (one ExportTraceServiceRequest per line).
    #[arg(long, value_name = "FILE")]
    pub otlp_file: Option<PathBuf>,
    /// Send OTLP/HTTP spans to this collector: http://host:4318 or https://host (the path
    /// /v1/traces is added when none is given). Default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    /// (used as is), else $OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// A header sent with every OTLP request, e.g. `authorization=Bearer xyz` (repeatable;
    /// added to $OTEL_EXPORTER_OTLP_HEADERS, `k=v,k2=v2`).
    #[arg(long = "otlp-header", value_name = "K=V")]
    pub otlp_headers: Vec<String>,
    /// OTLP/HTTP body encoding: `http/protobuf` or `http/json`. Default:
    /// $OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, $OTEL_EXPORTER_OTLP_PROTOCOL, else http/json
    /// (every Collector takes both on port 4318). `--otlp-file` is always JSON.
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
    /// Compress OTLP requests: `gzip` or `none`. Default: $OTEL_EXPORTER_OTLP_COMPRESSION,
    /// else none.
    #[arg(long, value_name = "C")]
    pub otlp_compression: Option<String>,
    /// Which span a task becomes. `auto` (the default): a child span `tprof: kernel` under
    /// the task's span for the tasks whose ids are the service's own OpenTelemetry span
    /// (usdt-probes' `opentelemetry` feature says so), since the service exports that span
    /// itself and a second span with its id would be a duplicate; the task's own span for the
    /// others, which no one else exports. `own`: always the task's span. `child`: always the
    /// child span.
    #[arg(long, value_enum, default_value_t = SpanMode::Auto)]
    pub otlp_spans: SpanMode,
    /// Write Zipkin v2 JSON spans.
    #[arg(long, value_name = "FILE")]
    pub zipkin_file: Option<PathBuf>,
    /// Send Zipkin v2 JSON spans to this server (e.g. http://127.0.0.1:9411).
    #[arg(long, value_name = "URL")]
    pub zipkin_endpoint: Option<String>,
    /// Write the on-CPU and off-CPU profiles in pprof's format (profile.proto, gzipped), with
    /// trace_id, span_id and task labels: for `go tool pprof`, Pyroscope, Grafana.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
    /// Write the on-CPU profile as folded stacks (flame graph tools' input), and the off-CPU
    /// one to FILE.offcpu.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
    /// Write SVG flame graphs per task type into this directory: on-CPU, off-CPU, and the
    /// slowest requests against the typical ones.
    #[arg(long, value_name = "DIR")]
    pub flamegraph: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The recording to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Also write a self-contained HTML report of the session at its end (as `tprof
    /// report FILE --html` would).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

impl RecordArgs {
    /// What `tprof record` streams to: nothing, or the HTML report.
    pub fn sinks(&self) -> Result<Tee> {
        let mut tee = Tee::new(Box::new(crate::sink::NullSink), false);
        if let Some(p) = &self.html {
            tee.add(&format!("HTML report to {}", p.display()), Box::new(html_sink(p, true)?));
            crate::attach::privileges::give_to_invoking_user(p);
        }
        Ok(tee)
    }
}

/// The `--html` sink (`live`: thread names may be read from this machine's /proc).
fn html_sink(p: &std::path::Path, live: bool) -> Result<crate::export::html::HtmlSink> {
    use crate::export::html::CriticalStep;
    use crate::model::critical::StepKind;
    let s = crate::export::html::HtmlSink::create(p).with_context(|| format!("--html {}", p.display()))?;
    // The request's critical path, as computed by the correlator (model::critical).
    let s = s.with_critical_path(Box::new(|t: &crate::model::ledger::TaskState| {
        t.critical_path
            .iter()
            .map(|st| {
                let what = match &st.kind {
                    StepKind::Blocked { syscall_nr: Some(nr), .. } => format!("blocked in {}", crate::present::syscall_name(*nr)),
                    k => k.label().replace('_', " "),
                };
                let who = st.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
                CriticalStep { tid: st.tid, start_ns: st.start_ns, end_ns: st.end_ns, label: format!("{}{what}{who}", "› ".repeat(st.depth as usize)) }
            })
            .collect()
    }));
    // The flame graphs of the session's profiles (the report's top stacks per task type).
    let s = s.with_extras(Box::new(|r: &crate::model::report::SessionReport| {
        crate::profile::flamegraph::report_svgs(&r.profile)
            .into_iter()
            .map(|(task_type, title, svg)| crate::export::html::Extra { task_type: Some(task_type), title, svg })
            .collect()
    }));
    Ok(if live { s } else { s.offline() })
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A recording made by `tprof record -o FILE`.
    pub file: PathBuf,
    /// Report a recording cut short or damaged (up to the damage) with a zero exit status.
    #[arg(long)]
    pub allow_truncated: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Also check this process's executable (frame pointers, for whole user stacks).
    #[arg(short, long)]
    pub pid: Option<u32>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// A running process: its executable and loaded libraries.
    #[arg(short, long, conflicts_with = "binary", required_unless_present = "binary")]
    pub pid: Option<u32>,
    /// An ELF file.
    #[arg(short, long)]
    pub binary: Option<PathBuf>,
    /// Show which sites this built-in mapping covers (repeatable).
    #[arg(long, value_name = "NAME")]
    pub preset: Vec<String>,
    /// Show which sites this mapping file covers (repeatable).
    #[arg(long = "probes", value_name = "FILE")]
    pub probe_files: Vec<PathBuf>,
}

impl OutputArgs {
    fn exports(&self) -> bool {
        self.perfetto.is_some()
            || self.html.is_some()
            || self.otlp_file.is_some()
            || self.otlp_endpoint().is_some()
            || self.zipkin_file.is_some()
            || self.zipkin_endpoint.is_some()
    }

    pub fn filter(&self) -> Result<Filter> {
        Ok(Filter {
            min_latency_ns: self.min_latency.as_deref().map(parse_duration).transpose()?.map(|d| d.as_nanos() as u64),
            trace_id: self.trace_id.as_deref().map(parse_trace_id).transpose()?,
            task_name: self.task.clone(),
            // Exporters need every event even when the terminal shows summaries only.
            events: !self.summary_only || self.exports(),
        })
    }

    /// The profile files asked for, created now (`live`: the flame graph directory is given
    /// to the user tprof becomes when it drops its privileges).
    pub fn profile_outputs(&self, live: bool) -> Result<crate::profile::ProfileOutputs> {
        let mut o = crate::profile::ProfileOutputs::default();
        o.pprof = self.pprof.clone();
        o.folded = self.folded.clone();
        o.flamegraph = self.flamegraph.clone();
        let owner = if live { crate::attach::drop_privs::DropOptions::for_tprof().user } else { None };
        o.open(owner)?;
        Ok(o)
    }

    /// The OTLP endpoint: `--otlp-endpoint`, else the standard environment variables.
    pub fn otlp_endpoint(&self) -> Option<String> {
        otlp_env::endpoint(self.otlp_endpoint.as_deref(), &|k| std::env::var(k).ok())
    }

    /// The sinks these flags ask for: the terminal stream plus any exporters. Files are
    /// given to the user who ran sudo. `origin`: the machine and clock of the session (a
    /// report: the recording's); `live`: names may be read from this machine's /proc.
    pub fn sinks<W: std::io::Write + 'static>(&self, out: W, pids: &[u32], origin: &Origin, live: bool) -> Result<Tee> {
        use crate::attach::privileges::give_to_invoking_user;
        use crate::clock::WallClock;
        use crate::export::{otlp::OtlpSink, perfetto::PerfettoSink, zipkin::ZipkinSink};
        use crate::sink::{json::JsonSink, text::TextSink};
        let primary: Box<dyn crate::sink::Sink> = match self.format {
            // A report's times are the recording machine's: relative to its first event.
            Format::Text => Box::new(TextSink::new(out, if live { crate::clock::monotonic_ns() } else { 0 })),
            Format::Json => Box::new(JsonSink::new(out)),
        };
        let mut tee = Tee::new(primary, !self.summary_only);
        let clock = if live { WallClock::now() } else { origin.clock() };
        if let Some(p) = &self.perfetto {
            let name = format!("perfetto export to {}", p.display());
            let mut s = PerfettoSink::create(p).with_context(|| format!("--perfetto {}", p.display()))?;
            if !live {
                s = s.offline();
            }
            tee.add(&name, Box::new(s));
        }
        if let Some(p) = &self.html {
            tee.add(&format!("HTML report to {}", p.display()), Box::new(html_sink(p, live)?));
        }
        let otlp_endpoint = self.otlp_endpoint();
        if self.otlp_file.is_some() || otlp_endpoint.is_some() {
            let env = |k: &str| std::env::var(k).ok();
            let mut o = otlp_env::options(&self.otlp_headers, self.otlp_protocol.as_deref(), self.otlp_compression.as_deref(), &env)
                .context("OTLP export")?;
            o.spans = self.otlp_spans;
            o.origin = Origin { clock_offset_ns: i64::try_from(clock.offset_ns).ok(), ..origin.clone() };
            o.live = live;
            let mut s = OtlpSink::with_options(self.otlp_file.as_deref(), otlp_endpoint.as_deref(), o).context("OTLP export")?;
            if live {
                s = s.with_pids(pids);
            }
            let to = self.otlp_file.as_deref().map(|p| p.display().to_string()).or(otlp_endpoint).unwrap_or_default();
            tee.add(&format!("OTLP export to {to}"), Box::new(s));
        }
        if self.zipkin_file.is_some() || self.zipkin_endpoint.is_some() {
            let o = SpanOptions {
                spans: SpanMode::Own,
                origin: Origin { clock_offset_ns: i64::try_from(clock.offset_ns).ok(), ..origin.clone() },
                live,
                ..Default::default()
            };
            let mut s = ZipkinSink::with_options(self.zipkin_file.as_deref(), self.zipkin_endpoint.as_deref(), o).context("Zipkin export")?;
            if live {
                s = s.with_pids(pids);
            }
            let to = self.zipkin_file.as_deref().map(|p| p.display().to_string()).or(self.zipkin_endpoint.clone()).unwrap_or_default();
            tee.add(&format!("Zipkin export to {to}"), Box::new(s));
        }
        for p in [&self.perfetto, &self.html, &self.otlp_file, &self.zipkin_file].into_iter().flatten() {
            give_to_invoking_user(p);
        }
        Ok(tee)
    }
}

impl TargetArgs {
    pub fn to_options(&self, filter: Filter) -> Result<AttachOptions> {
        if !self.ring_size.is_power_of_two() || self.ring_size > 1024 {
            bail!("--ring-size must be a power of two between 1 and 1024 MiB");
        }
        if self.sample_hz > crate::attach::sampler::MAX_HZ {
            bail!("--sample-hz {} is above the most tprof takes, {} (0 turns sampling off)", self.sample_hz, crate::attach::sampler::MAX_HZ);
        }
        let mapping = crate::mapping::ProbeMapping::load(&self.preset, &self.probe_files)?.map(std::sync::Arc::new);
        let scope = Scope {
            follow: !self.no_follow,
            cgroup: self.cgroup.as_deref().map(cgroup_rel_path).transpose()?,
            binary: self.binary.as_deref().map(binary_id).transpose()?,
            foreign: mapping.as_ref().map(|m| m.probe_names()).unwrap_or_default(),
        };
        Ok(AttachOptions {
            pids: self.pids.clone(),
            scope,
            cgroup_path: self.cgroup.clone(),
            binary_path: self.binary.clone(),
            duration: self.duration.as_deref().map(parse_duration).transpose()?,
            trace: TraceOptions {
                ring_bytes: self.ring_size * 1024 * 1024,
                syscalls: !self.no_syscalls,
                stacks: !self.no_stacks,
                stack_ns: parse_duration(&self.stack_threshold)?.as_nanos() as u64,
                detail_ns: parse_duration(&self.detail_threshold)?.as_nanos() as u64,
                slow_ns: parse_duration(&self.slow_request)?.as_nanos() as u64,
                debug_ebpf: self.debug_ebpf,
                uprobe_multi: self.probe_links == ProbeLinks::Auto,
                fault: self.inject_fault.as_deref().map(parse_fault).transpose()?.unwrap_or((0, 0)),
                sample_hz: self.sample_hz,
            },
            filter,
            mapping,
            profile: Default::default(),
        })
    }
}

/// `--inject-fault KIND:N` as (`profiler_common::fault` kind, N).
fn parse_fault(s: &str) -> Result<(u32, u32)> {
    use profiler_common::fault;
    let (kind, every) = s.split_once(':').unwrap_or((s, "1"));
    let kind = match kind {
        "lose-switch-in" => fault::LOSE_SWITCH_IN,
        "lose-switch-pair" => fault::LOSE_SWITCH_PAIR,
        other => bail!("--inject-fault {other}: expected lose-switch-in:N or lose-switch-pair:N"),
    };
    let every: u32 = every.parse().ok().filter(|n| *n > 0).with_context(|| format!("--inject-fault {s}: N must be a positive integer"))?;
    Ok((kind, every))
}

/// A `--cgroup` as a path from the root of the cgroup v2 hierarchy (`/a/b`), checked to be
/// a cgroup v2 directory.
pub fn cgroup_rel_path(p: &std::path::Path) -> Result<String> {
    let mount = crate::attach::scope::cgroup2_mount().context("no cgroup v2 hierarchy is mounted (see /proc/self/mountinfo)")?;
    // A directory that exists is taken as it is (and must be in the v2 hierarchy); else the
    // path is read from the hierarchy's root.
    let abs = if p.starts_with(&mount) || p.is_dir() { p.to_path_buf() } else { mount.join(p.strip_prefix("/").unwrap_or(p)) };
    let meta = std::fs::metadata(&abs).with_context(|| format!("--cgroup {}: no such cgroup ({})", p.display(), abs.display()))?;
    if !meta.is_dir() || !abs.join("cgroup.procs").exists() || !is_cgroup2(&abs) || !abs.starts_with(&mount) {
        bail!("--cgroup {}: {} is not a cgroup v2 directory (the v2 hierarchy is mounted at {})", p.display(), abs.display(), mount.display());
    }
    let rel = abs.strip_prefix(&mount).map_err(|_| anyhow::anyhow!("--cgroup {}: outside {}", p.display(), mount.display()))?;
    let rel = format!("/{}", rel.display());
    if rel.split('/').any(|c| c == "..") {
        bail!("--cgroup {}: a path with `..`", p.display());
    }
    Ok(rel)
}

/// Whether `dir` is on a cgroup2 file system (statfs magic).
fn is_cgroup2(dir: &std::path::Path) -> bool {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: statfs of a NUL-terminated path into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the kernel writes at most sizeof(statfs).
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// A `--binary`: its `(st_dev, st_ino)`, once it is known to carry tprof probes.
pub fn binary_id(p: &std::path::Path) -> Result<(u64, u64)> {
    let meta = std::fs::metadata(p).with_context(|| format!("--binary {}", p.display()))?;
    if !meta.is_file() {
        bail!("--binary {}: not a regular file", p.display());
    }
    let report = crate::discover::read_notes_from_path(p).with_context(|| format!("--binary {}", p.display()))?;
    if !report.sites.iter().any(|s| s.provider == crate::discover::TPROF_PROVIDER) {
        bail!(
            "--binary {}: has no tprof probes (link the usdt-probes crate or include tprof.h; `tprof list --binary` shows its probes)",
            crate::present::escape(&p.display().to_string())
        );
    }
    crate::attach::scope::file_id(p).with_context(|| format!("--binary {}", p.display()))
}

/// Parses `500ms`, `2s`, `1.5s`, `3m`, `250us`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().with_context(|| format!("bad duration {s:?}: expected e.g. 500ms, 2s, 1m"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "ns" => v / 1e9,
        "m" => v * 60.0,
        _ => bail!("bad duration unit {unit:?} in {s:?}: use ns, us, ms, s or m"),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        bail!("duration {s:?} out of range");
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn parse_trace_id(s: &str) -> Result<u128> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("trace-id {s:?} must be 32 hex digits");
    }
    u128::from_str_radix(s, 16).with_context(|| format!("trace-id {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("3m").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        for bad in ["", "ms", "5x", "-1s", "1e999", "..s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn trace_ids() {
        assert_eq!(parse_trace_id("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert!(parse_trace_id("4bf9").is_err());
        assert!(parse_trace_id("zz f92f3577b34da6a3ce929d0e0e4736").is_err());
    }

    #[test]
    fn flags_validate() {
        let cli = Cli::try_parse_from(["tprof", "attach", "--pid", "1", "--min-latency", "5ms", "--format", "json"]).unwrap();
        let Command::Attach(a) = cli.command else { panic!("attach") };
        let o = a.target.to_options(a.output.filter().unwrap()).unwrap();
        assert_eq!(o.filter.min_latency_ns, Some(5_000_000));
        assert_eq!(a.output.format, Format::Json);
        assert!(Cli::try_parse_from(["tprof", "attach"]).is_err(), "--pid is required");
        let cli = Cli::try_parse_from(["tprof", "attach", "--pid", "1", "--ring-size", "3"]).unwrap();
        let Command::Attach(a) = cli.command else { panic!("attach") };
        assert!(a.target.to_options(Filter::default()).is_err());
        let cli = Cli::try_parse_from(["tprof", "record", "--pid", "1", "-o", "/tmp/x"]).unwrap();
        assert!(matches!(cli.command, Command::Record(_)));
        let cli = Cli::try_parse_from(["tprof", "report", "/tmp/x", "--summary-only", "--perfetto", "/tmp/y"]).unwrap();
        let Command::Report(r) = cli.command else { panic!("report") };
        assert!(r.output.filter().unwrap().events, "exports keep events flowing under --summary-only");
        let cli = Cli::try_parse_from(["tprof", "report", "/tmp/x", "--summary-only", "--html", "/tmp/y.html"]).unwrap();
        let Command::Report(r) = cli.command else { panic!("report") };
        assert!(r.output.filter().unwrap().events, "the HTML report's waterfalls need the events");
        let cli = Cli::try_parse_from(["tprof", "record", "--pid", "1", "-o", "/tmp/x", "--html", "/tmp/y.html"]).unwrap();
        let Command::Record(r) = cli.command else { panic!("record") };
        assert_eq!(r.html.as_deref(), Some(std::path::Path::new("/tmp/y.html")));
    }
}
