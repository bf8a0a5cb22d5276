//! The format-neutral span model both exporters render: a task's ledger turned into a task
//! span and its region spans, in Unix-epoch nanoseconds. See [`super`] for the mapping.

use std::collections::HashMap;

use super::region_span_id;

/// The id of the `tprof: kernel` span under task span `task_span` (child mode): distinct
/// from the task's and its regions' ids.
pub fn kernel_span_id(task_span: u64) -> u64 {
    region_span_id(task_span, usize::MAX)
}
use crate::clock::WallClock;
use crate::model::origin::Origin;
use crate::model::critical::StepKind;
use crate::model::event::{Record, TaskKey, Waker};
use crate::model::ledger::{TaskState, MAX_LOGS};
use crate::model::stack::Frame;
use crate::present::{describe_waker, ms, syscall_name, waker_kind};

/// Tasks (and pids) whose first-seen time and comm are remembered at once.
const MAX_TRACKED: usize = 100_000;

/// An attribute value, rendered per format (OTLP AnyValue, Zipkin string tag).
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(u64),
    Str(String),
    Bool(bool),
    Ints(Vec<u64>),
}

/// A point in a span's life: a block or a log.
#[derive(Clone, Debug, PartialEq)]
pub struct EventData {
    pub name: &'static str,
    pub unix_ns: u64,
    pub attrs: Vec<(String, Attr)>,
    /// One-line description, for formats without event attributes (Zipkin annotations).
    pub text: String,
}

/// `Span.SpanKind` in trace.proto.
pub const SPAN_KIND_INTERNAL: u32 = 1;
pub const SPAN_KIND_SERVER: u32 = 2;

/// The log keys by which a service's probes tell tprof about a task (usdt-probes/ABI.md):
/// hints, exported as span properties rather than as log events.
pub const HINT_KIND: &str = "tprof.span.kind";
pub const HINT_OTEL: &str = "tprof.otel";

/// Which span a task becomes (`--otlp-spans`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SpanMode {
    /// Tasks the service says it exports itself (their ids are its OpenTelemetry span's)
    /// become a child span; the others their own span.
    #[default]
    Auto,
    /// Every task is exported as a span with its own ids.
    Own,
    /// Every task becomes a child span `tprof: kernel` of its span, which the service
    /// exports.
    Child,
}

/// The child span's name in the `child` mode.
pub const KERNEL_SPAN: &str = "tprof: kernel";

/// One span, format-neutral, in Unix-epoch nanoseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanData {
    pub trace_id: u128,
    pub span_id: u64,
    /// 0: none.
    pub parent_span_id: u64,
    pub name: String,
    /// `SPAN_KIND_*`.
    pub kind: u32,
    pub pid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: Vec<(String, Attr)>,
    pub events: Vec<EventData>,
    /// Spans of other tasks this one is linked to (its wakers).
    pub links: Vec<TaskKey>,
}

#[derive(Default)]
struct TaskSeen {
    first_ns: u64,
    log_ns: Vec<u64>,
}

/// Turns task ledgers into [`SpanData`]: shared by the OTLP and Zipkin sinks.
pub struct SpanBuilder {
    clock: WallClock,
    pub host: Option<String>,
    services: HashMap<u32, String>,
    /// Where each process runs (container, pod), from its tasks' ledgers.
    pub processes: HashMap<u32, std::sync::Arc<crate::model::process::ProcessInfo>>,
    seen: HashMap<TaskKey, TaskSeen>,
    /// CLOCK_MONOTONIC now: the end of tasks still open at session end.
    pub now_mono: fn() -> u64,
    /// Tasks not exported: no time at all was seen for them.
    pub skipped: u64,
    /// Read process names from this machine's /proc (a live session; a report never does).
    pub live: bool,
    pub mode: SpanMode,
}

pub(crate) fn kv(k: &str, v: Attr) -> (String, Attr) {
    (k.to_string(), v)
}

impl SpanBuilder {
    /// A builder for a live session on this machine.
    pub fn new(clock: WallClock) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string());
        let origin = Origin { host_name: host.filter(|h| !h.is_empty()), boot_id: None, clock_offset_ns: None };
        let mut b = Self::with_origin(&origin, true);
        b.clock = clock;
        b
    }

    /// A builder with the host and clock of `origin`; `live`: names may be read from /proc.
    pub fn with_origin(origin: &Origin, live: bool) -> Self {
        SpanBuilder {
            clock: origin.clock(),
            host: origin.host_name.clone(),
            services: HashMap::new(),
            processes: HashMap::new(),
            seen: HashMap::new(),
            now_mono: crate::clock::monotonic_ns,
            skipped: 0,
            live,
            mode: SpanMode::default(),
        }
    }

    /// Notes what a summary does not carry: when the task was first seen, when it logged.
    pub fn event(&mut self, rec: &Record) {
        let m = rec.meta();
        self.service(m.pid);
        if !self.seen.contains_key(&m.task) && self.seen.len() >= MAX_TRACKED {
            return;
        }
        let s = self.seen.entry(m.task).or_insert(TaskSeen { first_ns: m.ts_ns, log_ns: Vec::new() });
        s.first_ns = s.first_ns.min(m.ts_ns);
        if matches!(rec, Record::Log { .. }) && s.log_ns.len() < MAX_LOGS {
            s.log_ns.push(m.ts_ns);
        }
    }

    /// Reads the comms of `pids` now, while they surely run (a summary may come after exit).
    pub fn preload(&mut self, pids: &[u32]) {
        for pid in pids {
            self.service(*pid);
        }
    }

    /// The process's `service.name`: what the session learnt of it
    /// ([`crate::model::process::ProcessInfo::service_name`]), else (live only) its comm read
    /// from /proc at first sight, else `pid-N`.
    pub fn service(&mut self, pid: u32) -> String {
        if let Some(n) = self.processes.get(&pid).and_then(|p| p.service_name()) {
            return n.to_string();
        }
        if let Some(s) = self.services.get(&pid) {
            return s.clone();
        }
        let comm = if self.live {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim_end_matches('\n').to_string()).filter(|c| !c.is_empty())
        } else {
            None
        };
        let name = comm.unwrap_or_else(|| format!("pid-{pid}"));
        if self.services.len() < MAX_TRACKED {
            self.services.insert(pid, name.clone());
        }
        name
    }

    /// The OTLP resource of process `pid`: what backends group by. `service.name`,
    /// `service.instance.id`, `host.name`, `process.pid`, `process.executable.name`,
    /// `process.command_line` (bounded), `container.id`, `k8s.pod.uid`, and tprof as the
    /// agent that made the spans (`telemetry.distro.*`).
    pub fn resource(&mut self, pid: u32) -> Vec<(String, Attr)> {
        let mut res = vec![kv("service.name", Attr::Str(self.service(pid)))];
        let p = self.processes.get(&pid).cloned();
        if let Some(id) = p.as_ref().and_then(|p| p.instance_id.clone()) {
            res.push(kv("service.instance.id", Attr::Str(id)));
        }
        if let Some(h) = &self.host {
            res.push(kv("host.name", Attr::Str(h.clone())));
        }
        res.push(kv("process.pid", Attr::Int(u64::from(pid))));
        if let Some(p) = p {
            let mut s = |k: &str, v: &Option<String>| {
                if let Some(v) = v {
                    res.push(kv(k, Attr::Str(v.clone())));
                }
            };
            s("process.executable.name", &p.exe_name);
            s("process.command_line", &p.command_line);
            s("container.id", &p.container_id);
            s("k8s.pod.uid", &p.pod_uid);
            if let Some(n) = p.ns_pid {
                res.push(kv("tprof.process.ns_pid", Attr::Int(u64::from(n))));
            }
        }
        res.push(kv("telemetry.distro.name", Attr::Str("tprof".into())));
        res.push(kv("telemetry.distro.version", Attr::Str(env!("CARGO_PKG_VERSION").into())));
        res
    }

    /// The task span and its region spans (task first), or None (counted in `skipped`) when
    /// no time at all is known for it.
    pub fn build(&mut self, t: &TaskState) -> Option<Vec<SpanData>> {
        let seen = self.seen.remove(&t.key);
        self.service(t.pid);
        if let Some(p) = &t.process {
            if self.processes.len() < MAX_TRACKED || self.processes.contains_key(&t.pid) {
                self.processes.insert(t.pid, std::sync::Arc::clone(p));
            }
        }
        let earliest = t.regions.iter().map(|r| r.start_ns).chain(t.blocks.iter().map(|b| b.start_ns)).min();
        let Some(begin) = t.begin_ns.or(seen.as_ref().map(|s| s.first_ns)).or(earliest) else {
            self.skipped += 1;
            return None;
        };
        let end = t.end_ns.unwrap_or_else(|| (self.now_mono)()).max(begin);
        let unix = |ns: u64| self.clock.unix_ns(ns);
        let i = |n: u64| Attr::Int(n);
        let mut attrs = vec![
            kv("tprof.on_cpu_ns", i(t.on_cpu_ns)),
            kv("tprof.runq_ns", i(t.runq_ns)),
            kv("tprof.blocked_ns", i(t.blocked_ns)),
        ];
        if let Some(u) = t.unscheduled_ns() {
            attrs.push(kv("tprof.unscheduled_ns", i(u)));
        }
        attrs.push(kv("tprof.syscall_ns", i(t.syscall_ns())));
        attrs.push(kv("tprof.pid", i(u64::from(t.pid))));
        attrs.push(kv("tprof.threads", Attr::Ints(t.threads.iter().map(|x| u64::from(*x)).collect())));
        let mut top: Vec<_> = t.syscalls.iter().collect();
        top.sort_by_key(|(_, s)| std::cmp::Reverse(s.total_ns));
        let top: Vec<String> =
            top.iter().take(5).map(|(nr, s)| format!("{} {}x {} ms", syscall_name(**nr), s.count, ms(s.total_ns))).collect();
        if !top.is_empty() {
            attrs.push(kv("tprof.top_syscalls", Attr::Str(top.join(", "))));
        }
        if let Some(why) = t.incomplete() {
            attrs.push(kv("tprof.incomplete", Attr::Str(why)));
        }
        attrs.push(kv("tprof.dropped_records", i(t.dropped)));
        if t.truncated > 0 {
            attrs.push(kv("tprof.truncated", i(t.truncated)));
        }
        let mut events = Vec::new();
        let mut links = Vec::new();
        for b in &t.blocks {
            let mut a = vec![kv("tprof.blocked_ns", i(b.blocked_ns)), kv("tprof.tid", i(u64::from(b.tid)))];
            let sys = b.syscall_nr.map(syscall_name);
            if let Some(s) = &sys {
                a.push(kv("tprof.syscall", Attr::Str(s.clone())));
            }
            if let Waker::Thread { pid, tid, comm, task, .. } = &b.waker {
                a.push(kv("tprof.waker.pid", i(u64::from(*pid))));
                a.push(kv("tprof.waker.tid", i(u64::from(*tid))));
                a.push(kv("tprof.waker.comm", Attr::Str(comm.clone())));
                if let Some(k) = task {
                    a.push(kv("tprof.waker.trace_id", Attr::Str(k.trace_hex())));
                    a.push(kv("tprof.waker.span_id", Attr::Str(k.span_hex())));
                    if k.span_id != 0 && k.trace_id != 0 && *k != t.key && !links.contains(k) {
                        links.push(*k);
                    }
                }
            }
            a.push(kv("tprof.waker.kind", Attr::Str(waker_kind(&b.waker).into())));
            if let Some(st) = &b.stack {
                let frames = |f: &[Frame]| f.iter().map(|x| x.display()).collect::<Vec<_>>().join("\n");
                if !st.user.is_empty() {
                    a.push(kv("tprof.stack.user", Attr::Str(frames(&st.user))));
                }
                if !st.kernel.is_empty() {
                    a.push(kv("tprof.stack.kernel", Attr::Str(frames(&st.kernel))));
                }
                if st.user_truncated {
                    a.push(kv("tprof.stack.user_truncated", Attr::Bool(true)));
                }
            }
            let who = describe_waker(&b.waker);
            let text = format!("blocked {} ms in {} (tid {}), {who}", ms(b.blocked_ns), sys.as_deref().unwrap_or("no syscall"), b.tid);
            events.push(EventData { name: "blocked", unix_ns: unix(b.start_ns.clamp(begin, end)), attrs: a, text });
        }
        // The critical path, when it runs through another task: one event per step.
        if t.critical_path.iter().any(|s| s.depth > 0) {
            let wall = t.wall_ns().unwrap_or(0).max(1) as f64;
            for st in &t.critical_path {
                let mut a = vec![
                    kv("tprof.critical_path.depth", i(u64::from(st.depth))),
                    kv("tprof.critical_path.kind", Attr::Str(st.kind.label().into())),
                    kv("tprof.critical_path.dur_ns", i(st.dur_ns())),
                    kv("tprof.critical_path.share", Attr::Str(format!("{:.3}", st.dur_ns() as f64 / wall))),
                    kv("tprof.tid", i(u64::from(st.tid))),
                    kv("tprof.critical_path.trace_id", Attr::Str(st.task.trace_hex())),
                    kv("tprof.critical_path.span_id", Attr::Str(st.task.span_hex())),
                ];
                if let Some(n) = &st.name {
                    a.push(kv("tprof.critical_path.task", Attr::Str(n.clone())));
                }
                if let StepKind::Blocked { syscall_nr: Some(nr), .. } = &st.kind {
                    a.push(kv("tprof.syscall", Attr::Str(syscall_name(*nr))));
                }
                let text = format!("critical path: {} {} ms (depth {})", st.kind.label(), ms(st.dur_ns()), st.depth);
                events.push(EventData { name: "critical_path", unix_ns: unix(st.start_ns.clamp(begin, end)), attrs: a, text });
            }
        }
        let log_ns = seen.map(|s| s.log_ns).unwrap_or_default();
        let mut kind = SPAN_KIND_INTERNAL;
        let mut service_exports = false;
        for (n, (k, v)) in t.logs.iter().enumerate() {
            match k.as_str() {
                HINT_KIND => {
                    if v.eq_ignore_ascii_case("server") {
                        kind = SPAN_KIND_SERVER;
                    }
                    continue;
                }
                HINT_OTEL => {
                    service_exports = true;
                    continue;
                }
                _ => {}
            }
            let key = if k.is_empty() { "tprof.log" } else { k.as_str() };
            let mut a = vec![kv(key, Attr::Str(v.clone()))];
            // Log times come from the events; in summary-only mode there are none.
            let at = log_ns.get(n).copied().unwrap_or_else(|| {
                a.push(kv("tprof.log_time_unknown", Attr::Bool(true)));
                begin
            });
            events.push(EventData { name: "log", unix_ns: unix(at.clamp(begin, end)), attrs: a, text: format!("{k}={v}") });
        }
        events.sort_by_key(|e| e.unix_ns);
        let task_name = if t.name.is_empty() { format!("task {}", t.key.span_hex()) } else { t.name.to_string() };
        let child = match self.mode {
            SpanMode::Own => false,
            SpanMode::Child => true,
            SpanMode::Auto => service_exports,
        };
        // In the child mode the service exports the task's span: tprof's span sits under it.
        let (top_id, top_parent, top_name) = if child {
            attrs.push(kv("tprof.task", Attr::Str(task_name)));
            (kernel_span_id(t.key.span_id), t.key.span_id, KERNEL_SPAN.to_string())
        } else {
            (t.key.span_id, t.parent_span_id, task_name)
        };
        if child {
            kind = SPAN_KIND_INTERNAL;
        }
        let mut spans = vec![SpanData {
            trace_id: t.key.trace_id,
            span_id: top_id,
            parent_span_id: top_parent,
            name: top_name,
            kind,
            pid: t.pid,
            start_ns: unix(begin),
            end_ns: unix(end),
            attrs,
            events,
            links,
        }];
        for (n, r) in t.regions.iter().enumerate() {
            // The enclosing region: the last one before it, one level up.
            let parent = match r.depth.checked_sub(1) {
                Some(d) => t.regions[..n].iter().rposition(|p| p.depth == d).map(|j| region_span_id(t.key.span_id, j)),
                None => None,
            };
            let mut attrs = vec![kv("tprof.region.depth", i(u64::from(r.depth)))];
            if r.end_ns.is_none() {
                attrs.push(kv("tprof.incomplete", Attr::Str("region did not end while traced".into())));
            }
            let start = r.start_ns.clamp(begin, end);
            spans.push(SpanData {
                trace_id: t.key.trace_id,
                span_id: region_span_id(t.key.span_id, n),
                parent_span_id: parent.unwrap_or(top_id),
                name: r.name.to_string(),
                kind: SPAN_KIND_INTERNAL,
                pid: t.pid,
                start_ns: unix(start),
                end_ns: unix(r.end_ns.unwrap_or(end).clamp(start, end)),
                attrs,
                events: Vec::new(),
                links: Vec::new(),
            });
        }
        Some(spans)
    }
}
