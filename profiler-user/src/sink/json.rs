//! `--format json`: NDJSON, one object per event, per task summary and one for the session.
//! The schema is documented in `profiler-user/OUTPUT.md`; ids are lowercase hex strings,
//! times are CLOCK_MONOTONIC nanoseconds (integers).

use std::io::{self, Write};

use serde_json::{json, Map, Value};

use super::Sink;
use crate::model::critical::StepKind;
use crate::model::event::{agg_syscalls, Record, TaskKey, Waker, OTHER_SYSCALLS};
use crate::model::ledger::TaskState;
use crate::model::report::SessionReport;
use crate::model::stack::{Frame, Stack};
use crate::present::{syscall_name, waker_kind};

pub struct JsonSink<W: Write> {
    out: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        JsonSink { out }
    }

    fn line(&mut self, v: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")
    }
}

fn waker_json(w: &Waker) -> Value {
    match w {
        Waker::Thread { pid, tid, comm, task, via_softirq } => json!({
            "kind": waker_kind(w), "pid": pid, "tid": tid, "comm": comm, "via_softirq": via_softirq,
            "trace_id": task.map(|t| t.trace_hex()), "span_id": task.map(|t| t.span_hex()),
        }),
        _ => json!({"kind": waker_kind(w)}),
    }
}

fn ids(key: &TaskKey) -> (String, String) {
    (key.trace_hex(), key.span_hex())
}

pub fn event_json(rec: &Record) -> Value {
    let m = rec.meta();
    let (trace, span) = ids(&m.task);
    let mut o = Map::new();
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_string(), v);
    };
    put("trace_id", trace.into());
    put("span_id", span.into());
    put("pid", m.pid.into());
    put("tid", m.tid.into());
    put("cpu", m.cpu.into());
    put("ts_ns", m.ts_ns.into());
    let ty = match rec {
        Record::TaskBegin { parent_span_id, name, name_flags, .. } => {
            put("parent_span_id", format!("{parent_span_id:016x}").into());
            put("name", Value::from(&**name));
            put("name_flags", (*name_flags).into());
            "task_begin"
        }
        Record::TaskEnd { dropped, .. } => {
            put("dropped", (*dropped).into());
            "task_end"
        }
        Record::TaskAttach { .. } => "task_attach",
        Record::TaskDetach { .. } => "task_detach",
        Record::RegionBegin { name, .. } | Record::RegionEnd { name, .. } => {
            put("name", Value::from(&**name));
            if matches!(rec, Record::RegionBegin { .. }) {
                "region_begin"
            } else {
                "region_end"
            }
        }
        Record::Log { key, value, flags, .. } => {
            put("key", key.as_str().into());
            put("value", value.as_str().into());
            put("flags", (*flags).into());
            "log"
        }
        Record::OnCpu { start_ns, steal_ns, .. } => {
            put("start_ns", (*start_ns).into());
            put("dur_ns", m.ts_ns.saturating_sub(*start_ns).into());
            put("steal_ns", (*steal_ns).into());
            "on_cpu"
        }
        Record::OffCpu { start_ns, runnable_ns, state, syscall_nr, waker, end_inferred, .. } => {
            put("end_inferred", (*end_inferred).into());
            put("start_ns", (*start_ns).into());
            put("runnable_ns", (*runnable_ns).into());
            put("dur_ns", m.ts_ns.saturating_sub(*start_ns).into());
            put("state", (*state).into());
            put("syscall", syscall_nr.map(syscall_name).into());
            put("waker", waker_json(waker));
            "off_cpu"
        }
        Record::Syscall { nr, start_ns, ret, .. } => {
            put("nr", (*nr).into());
            put("name", syscall_name(*nr).into());
            put("start_ns", (*start_ns).into());
            put("dur_ns", m.ts_ns.saturating_sub(*start_ns).into());
            put("ret", (*ret).into());
            "syscall"
        }
        Record::Agg { sums, .. } => {
            put("on_cpu_ns", sums.oncpu_ns.into());
            put("slices", sums.slices.into());
            put("blocked_ns", sums.blocked_ns.into());
            put("runq_ns", sums.runq_ns.into());
            put("off_cpu_intervals", sums.offcpu.into());
            put("syscall_count", sums.syscalls.into());
            let sys: Vec<Value> = agg_syscalls(sums)
                .map(|(nr, s)| {
                    json!({"name": syscall_name(nr), "count": s.count, "errors": s.errors,
                           "total_ns": s.total_ns, "blocked_ns": s.blocked_ns})
                })
                .collect();
            put("syscalls", sys.into());
            "agg"
        }
        Record::KStack { start_ns, frames, .. } => {
            put("start_ns", (*start_ns).into());
            put("frames", frames.len().into());
            "kstack"
        }
        Record::UStack { id, .. } => {
            put("stack_id", (*id).into());
            "ustack"
        }
        Record::Proc { event, pid, parent, .. } => {
            put("event", (*event).into());
            put("process", (*pid).into());
            put("parent", (*parent).into());
            "proc"
        }
    };
    o.insert("type".into(), ty.into());
    Value::Object(o)
}

fn frames_json(frames: &[Frame]) -> Value {
    frames
        .iter()
        .map(|f| json!({"addr": format!("{:#x}", f.addr), "func": f.func, "file": f.file, "line": f.line}))
        .collect()
}

fn stack_json(s: &Stack) -> Value {
    json!({"kernel": frames_json(&s.kernel), "user": frames_json(&s.user), "user_truncated": s.user_truncated})
}

pub fn summary_json(t: &TaskState) -> Value {
    let (trace, span) = ids(&t.key);
    let syscalls: Vec<Value> = t
        .syscalls
        .iter()
        .map(|(nr, s)| {
            let nr_json = if *nr == OTHER_SYSCALLS { Value::Null } else { Value::from(*nr) };
            json!({"name": syscall_name(*nr), "nr": nr_json, "count": s.count, "total_ns": s.total_ns, "errors": s.errors})
        })
        .collect();
    let blocked_in: Map<String, Value> =
        t.blocked_in_syscall.iter().map(|(nr, ns)| (syscall_name(*nr), Value::from(*ns))).collect();
    let regions: Vec<Value> = t
        .regions
        .iter()
        .map(|r| json!({"name": &*r.name, "start_ns": r.start_ns, "end_ns": r.end_ns, "depth": r.depth}))
        .collect();
    let blocks: Vec<Value> = t
        .blocks
        .iter()
        .map(|b| json!({"tid": b.tid, "start_ns": b.start_ns, "blocked_ns": b.blocked_ns,
            "syscall": b.syscall_nr.map(syscall_name), "waker": waker_json(&b.waker),
            "stack": b.stack.as_ref().map(stack_json), "waker_task_name": b.waker_task_name,
            "chain": b.chain.iter().map(|l| json!({"trace_id": l.task.trace_hex(), "span_id": l.task.span_hex(),
                "name": l.name, "blocked_ns": l.blocked_ns, "syscall": l.syscall_nr.map(syscall_name),
                "waker": waker_json(&l.waker)})).collect::<Vec<_>>()}))
        .collect();
    let logs: Vec<Value> = t.logs.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    let mut v = json!({
        "type": "summary",
        "trace_id": trace, "span_id": span, "parent_span_id": format!("{:016x}", t.parent_span_id),
        "name": &*t.name, "pid": t.pid, "threads": t.threads,
        "begin_ns": t.begin_ns, "end_ns": t.end_ns, "wall_ns": t.wall_ns(),
        "on_cpu_ns": t.on_cpu_ns, "steal_ns": t.steal_ns, "runq_ns": t.runq_ns, "blocked_ns": t.blocked_ns,
        "unscheduled_ns": t.unscheduled_ns(), "syscall_ns": t.syscall_ns(),
        "blocked_in_syscall_ns": blocked_in, "syscalls": syscalls, "regions": regions,
        "blocks": blocks, "logs": logs,
        "waited_on": t.waited_on.iter().map(|(k, n, ns)| json!({"trace_id": k.trace_hex(), "span_id": k.span_hex(), "name": n, "blocked_ns": ns})).collect::<Vec<_>>(), "dropped": t.dropped, "truncated": t.truncated,
        "summed_intervals": t.summed,
        "cpu_samples": t.cpu_samples,
        "top_stacks": t.top_stacks.iter().map(|(st, n)| {
            let (frames, kernel_frames) = crate::profile::aggregate::frame_names(st);
            json!({"frames": frames, "kernel_frames": kernel_frames, "user_truncated": st.user_truncated, "samples": n})
        }).collect::<Vec<_>>(),
        "runtime_mismatches": t.runtime_mismatches,
        "incomplete": t.incomplete(),
        "critical_path": critical_path_json(t),
    });
    // Where the process runs, when it is not the host's own namespace.
    if let Some(p) = &t.process {
        for (k, val) in [("ns_pid", p.ns_pid.map(Value::from)), ("container_id", p.container_id.clone().map(Value::from)), ("pod_uid", p.pod_uid.clone().map(Value::from))] {
            if let Some(val) = val {
                v[k] = val;
            }
        }
    }
    v
}

/// The steps of a task's critical path, in time order, each with its share of the
/// task's wall time.
fn critical_path_json(t: &TaskState) -> Vec<Value> {
    let wall = t.wall_ns().unwrap_or(0).max(1) as f64;
    t.critical_path
        .iter()
        .map(|s| {
            let mut v = json!({"depth": s.depth, "trace_id": s.task.trace_hex(), "span_id": s.task.span_hex(), "name": s.name,
                "tid": s.tid, "kind": s.kind.label(), "start_ns": s.start_ns, "dur_ns": s.dur_ns(),
                "share": (s.dur_ns() as f64 / wall * 1000.0).round() / 1000.0});
            if let StepKind::Blocked { syscall_nr, waker } = &s.kind {
                v["syscall"] = syscall_nr.map(syscall_name).into();
                v["waker"] = waker_json(waker);
            }
            v
        })
        .collect()
}

/// The `session` line: the report as serde writes it, with the totals derived from it.
#[derive(serde::Serialize)]
struct SessionLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    report: &'a SessionReport,
    events: u64,
    summed_intervals: u64,
    kernel_drops_total: u64,
    tasks_ended: u64,
    tasks_evicted: u64,
    zero_trace_id_tasks: u64,
}

impl<'a> SessionLine<'a> {
    fn of(r: &'a SessionReport) -> Self {
        SessionLine {
            kind: "session",
            report: r,
            events: r.correlator.events(),
            summed_intervals: r.correlator.summed_intervals,
            kernel_drops_total: r.total_kernel_drops(),
            tasks_ended: r.correlator.tasks_ended,
            tasks_evicted: r.correlator.tasks_evicted,
            zero_trace_id_tasks: r.correlator.zero_trace_id_tasks,
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, rec: &Record, _task: &TaskState) -> io::Result<()> {
        self.line(&event_json(rec))
    }

    fn summary(&mut self, task: &TaskState) -> io::Result<()> {
        self.line(&summary_json(task))
    }

    fn finish(&mut self, r: &SessionReport) -> io::Result<()> {
        for (name, s) in &r.stats.by_name {
            let h = &s.wall;
            self.line(&json!({
                "type": "task_stats", "name": &**name, "count": h.count, "incomplete": s.incomplete,
                "p50_ns": h.quantile(0.5), "p90_ns": h.quantile(0.9), "p99_ns": h.quantile(0.99), "max_ns": h.max_ns,
                "mean_ns": h.mean(), "avg_on_cpu_ns": s.avg(s.on_cpu_ns), "avg_runq_ns": s.avg(s.runq_ns),
                "avg_blocked_ns": s.avg(s.blocked_ns), "avg_unscheduled_ns": s.avg(s.unscheduled_ns),
                "avg_syscall_ns": s.avg(s.syscall_ns),
            }))?;
        }
        self.line(&serde_json::to_value(SessionLine::of(r))?)?;
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
