//! The page: the collected figures as one JSON document, embedded in a
//! `<script type="application/json">` block ([`script_json`]), and the page's own CSS and
//! JavaScript (`page.css`, `page.js`), which draws everything from that document with DOM
//! calls (`textContent`, never `innerHTML`). Strings from targets are made visible with
//! `present::escape` first (control and bidi characters shown as `\u{..}`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::collect::{Kept, Left, Piece, Slowest, MAX_PIECES_PER_TASK, MAX_TYPES_WITH_REQUESTS, TOP_OVERALL, TOP_PER_TYPE};
use super::{Extra, MAX_CRITICAL_STEPS, MAX_EXTRA_BYTES};
use crate::model::event::{TaskKey, Waker};
use crate::model::ledger::TaskState;
use crate::model::process::ProcessInfo;
use crate::model::report::SessionReport;
use crate::model::stack::{Frame, Stack};
use crate::model::stats::Histogram;
use crate::present::{describe_waker, escape, syscall_name, waker_kind};

const TEMPLATE: &str = include_str!("page.html");
const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// Top syscalls listed per request.
const TOP_SYSCALLS: usize = 8;

pub struct Input<'a> {
    pub report: &'a SessionReport,
    pub left: &'a Left,
    /// Kept requests, slowest first, flagged when among the slowest overall.
    pub requests: &'a [(bool, Kept)],
    pub slowest: &'a Slowest,
    pub extras: &'a [Extra],
    pub processes: &'a BTreeMap<u32, Arc<ProcessInfo>>,
    pub more_processes: u64,
    pub live: bool,
}

/// Text for an HTML text node or a quoted attribute value.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON that can sit inside `<script type="application/json">`: `<`, `>` and `&` (which
/// could close the element or start a comment) and U+2028/U+2029 are written as `\uXXXX`
/// escapes. They can only occur inside JSON strings, where the escape means the same.
pub fn script_json(v: &Value) -> String {
    let text = v.to_string();
    let mut out = String::with_capacity(text.len() + 64);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// A histogram in power-of-two bins (log-scale): `[low, high, count]`, lowest first.
/// Exact: each of the model's buckets lies within one power of two.
pub fn log_bins(h: &Histogram) -> Vec<[u64; 3]> {
    let mut bins: Vec<[u64; 3]> = Vec::new();
    for (low, _, count) in h.buckets() {
        let (lo, hi) = match low {
            0 => (0, 0),
            v => {
                let k = 63 - v.leading_zeros();
                (1u64 << k, (1u64 << k).saturating_mul(2) - 1)
            }
        };
        match bins.last_mut() {
            Some(b) if b[0] == lo => b[2] += count,
            _ => bins.push([lo, hi, count]),
        }
    }
    bins
}

/// The page for `input`.
pub fn page(input: &Input<'_>) -> String {
    let data = script_json(&data(input));
    let title = format!("tprof report: pids {:?}", input.report.pids);
    fill(TEMPLATE, &[("TITLE", &html_escape(&title)), ("CSS", CSS), ("DATA", &data), ("JS", JS)])
}

/// Replaces `{{NAME}}` markers of `template` in one pass (what is put in is never scanned).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find("}}").map(|end| (&after[..end], end)).and_then(|(k, end)| values.iter().find(|(n, _)| *n == k).map(|(_, v)| (v, end))) {
            Some((v, end)) => {
                out.push_str(v);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The JSON document the page draws.
pub fn data(input: &Input<'_>) -> Value {
    let r = input.report;
    let (extras, extras_left_out) = extras(input.extras);
    let types: Vec<Value> = r
        .stats
        .by_name
        .iter()
        .map(|(name, s)| {
            let h = &s.wall;
            let slowest: Vec<String> = input.slowest.get(name).map(|l| l.iter().map(TaskKey::span_hex).collect()).unwrap_or_default();
            json!({
                "name": escape(name), "count": h.count, "incomplete": s.incomplete,
                "p50": h.quantile(0.5), "p90": h.quantile(0.9), "p99": h.quantile(0.99), "max": h.max_ns,
                "avg_on_cpu": s.avg(s.on_cpu_ns), "avg_runq": s.avg(s.runq_ns), "avg_blocked": s.avg(s.blocked_ns),
                "avg_unscheduled": s.avg(s.unscheduled_ns), "avg_syscalls": s.avg(s.syscall_ns),
                "hist": log_bins(h), "slowest": slowest,
            })
        })
        .collect();
    let processes: Vec<Value> = input
        .processes
        .values()
        .map(|p| {
            json!({"pid": p.pid, "describe": escape(&p.describe()), "service": p.service_name().map(escape),
                   "command": p.command_line.as_deref().map(escape)})
        })
        .collect();
    let shown = input.requests.len() as u64;
    json!({
        "version": env!("TPROF_VERSION"),
        "header": {
            "pids": r.pids, "processes": processes, "more_processes": input.more_processes,
            "duration_ns": r.duration_ns, "stop_reason": escape(&r.stop_reason),
            "records": r.records, "events": r.correlator.events(), "summed": r.correlator.summed_intervals,
            "tasks_ended": r.correlator.tasks_ended, "sites": r.sites, "probe_links": escape(&r.probe_links),
            "kernel_drops": r.kernel_drops.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "kernel_drops_total": r.total_kernel_drops(), "missed_switch_ins": r.missed_switch_ins,
            "stacks_lost": r.stacks_lost, "undecodable": r.undecodable, "filtered_events": r.filtered_events,
            "other_types": r.stats.other_types,
            "warnings": r.warnings.iter().map(|w| escape(w)).collect::<Vec<_>>(),
        },
        "left": {
            "requests": input.left.requests, "shown": shown, "unranked": input.left.unranked,
            "over_types": input.left.over_types, "orphan_pieces": input.left.orphan_pieces,
            "top_overall": TOP_OVERALL, "top_per_type": TOP_PER_TYPE, "max_types": MAX_TYPES_WITH_REQUESTS,
            "pieces_per_task": MAX_PIECES_PER_TASK, "extras_left_out": extras_left_out,
        },
        "types": types,
        "requests": input.requests.iter().map(|(top, k)| request(k, *top, input.live)).collect::<Vec<_>>(),
        "extras": extras,
    })
}

/// The extra items within [`MAX_EXTRA_BYTES`], and how many were left out.
fn extras(items: &[Extra]) -> (Vec<Value>, u64) {
    let mut bytes = 0;
    let mut out = Vec::new();
    let mut left = 0;
    for e in items {
        bytes += e.svg.len();
        if bytes > MAX_EXTRA_BYTES {
            left += 1;
            continue;
        }
        out.push(json!({"task_type": e.task_type.as_deref().map(escape), "title": escape(&e.title), "svg": e.svg}));
    }
    (out, left)
}

/// `ts` relative to the request's begin (may be negative: an interval that began before).
fn rel(ts: u64, begin: u64) -> i64 {
    (i128::from(ts) - i128::from(begin)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn frames(f: &[Frame]) -> Vec<String> {
    f.iter().map(|f| escape(&f.display())).collect()
}

fn stack(s: &Stack) -> Value {
    json!({"kernel": frames(&s.kernel), "user": frames(&s.user), "user_truncated": s.user_truncated})
}

fn waker(w: &Waker) -> Value {
    let mut v = json!({"kind": waker_kind(w), "describe": describe_waker(w)});
    if let Waker::Thread { pid, tid, comm, task, .. } = w {
        v["pid"] = json!(pid);
        v["tid"] = json!(tid);
        v["comm"] = json!(escape(comm));
        v["span_id"] = json!(task.map(|t| t.span_hex()));
    }
    v
}

fn thread_name(t: &TaskState, tid: u32, live: bool) -> Option<String> {
    if let Some(n) = t.process.as_ref().and_then(|p| p.thread_name(tid)) {
        return Some(escape(n));
    }
    if !live {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", t.pid)).ok()?;
    Some(escape(s.trim_end())).filter(|s| !s.is_empty())
}

/// A piece as drawn: `[kind, start, end, detail]` relative to `begin` (an off-CPU interval
/// gives a blocked and a run-queue piece).
fn pieces(p: &Piece, begin: u64, out: &mut Vec<Value>) {
    match p {
        Piece::OnCpu { start, end, steal, .. } => {
            let d = if *steal > 0 { format!("on CPU (of which {} ns stolen by the hypervisor)", steal) } else { "on CPU".into() };
            out.push(json!(["on", rel(*start, begin), rel(*end, begin), d]));
        }
        Piece::OffCpu { start, runnable, end, syscall, waker: w, inferred, .. } => {
            let inside = syscall.map(|n| format!(" in {}", syscall_name(n))).unwrap_or_default();
            let inferred = if *inferred { " (switch-in not seen: ends at an upper bound)" } else { "" };
            if runnable > start {
                out.push(json!(["blocked", rel(*start, begin), rel(*runnable, begin), format!("blocked{inside}, {}{inferred}", describe_waker(w))]));
            }
            if end > runnable || runnable <= start {
                let what = if matches!(w, Waker::Preempted) { "run queue (preempted)" } else { "run queue" };
                out.push(json!(["runq", rel(*runnable, begin), rel(*end, begin), format!("{what}{inferred}")]));
            }
        }
        Piece::Syscall { start, end, nr, ret, .. } => {
            out.push(json!(["sys", rel(*start, begin), rel(*end, begin), format!("syscall {} = {ret}", syscall_name(*nr))]));
        }
        Piece::Summed { ts, oncpu_ns, slices, blocked_ns, runq_ns, offcpu, syscalls, syscall_ns, .. } => {
            let d = format!(
                "summed in the kernel (not drawn one by one): on CPU {oncpu_ns} ns in {slices} slices, blocked {blocked_ns} ns and run queue {runq_ns} ns in {offcpu} off-CPU intervals, {syscalls} syscalls {syscall_ns} ns"
            );
            out.push(json!(["summed", rel(*ts, begin), rel(*ts, begin), d]));
        }
    }
}

fn request(k: &Kept, top: bool, live: bool) -> Value {
    let t = &k.task;
    let begin = t.begin_ns.unwrap_or(0);
    let mut by_tid: BTreeMap<u32, Vec<Value>> = t.threads.iter().map(|&tid| (tid, Vec::new())).collect();
    for p in &k.pieces {
        pieces(p, begin, by_tid.entry(p.tid()).or_default());
    }
    let threads: Vec<Value> =
        by_tid.into_iter().map(|(tid, pieces)| json!({"tid": tid, "name": thread_name(t, tid, live), "pieces": pieces})).collect();
    let regions: Vec<Value> = t
        .regions
        .iter()
        .map(|r| json!({"name": escape(&r.name), "start": rel(r.start_ns, begin), "end": r.end_ns.map(|e| rel(e, begin)), "depth": r.depth}))
        .collect();
    let blocks: Vec<Value> = t
        .blocks
        .iter()
        .map(|b| {
            let chain: Vec<Value> = b
                .chain
                .iter()
                .map(|c| {
                    json!({"span_id": c.task.span_hex(), "name": c.name.as_deref().map(escape), "blocked_ns": c.blocked_ns,
                           "syscall": c.syscall_nr.map(syscall_name), "waker": waker(&c.waker)})
                })
                .collect();
            json!({
                "tid": b.tid, "start": rel(b.start_ns, begin), "blocked_ns": b.blocked_ns, "syscall": b.syscall_nr.map(syscall_name),
                "waker": waker(&b.waker), "waker_task": b.waker_task_name.as_deref().map(escape), "chain": chain,
                "stack": b.stack.as_ref().map(stack),
            })
        })
        .collect();
    let mut sys: Vec<_> = t.syscalls.iter().collect();
    sys.sort_by_key(|(_, s)| std::cmp::Reverse(s.total_ns));
    let sys: Vec<Value> = sys
        .iter()
        .take(TOP_SYSCALLS)
        .map(|(nr, s)| json!({"name": syscall_name(**nr), "count": s.count, "total_ns": s.total_ns, "errors": s.errors}))
        .collect();
    let critical: Vec<Value> = k
        .critical
        .iter()
        .take(MAX_CRITICAL_STEPS)
        .map(|c| json!({"tid": c.tid, "start": rel(c.start_ns, begin), "end": rel(c.end_ns.max(c.start_ns), begin), "label": escape(&c.label)}))
        .collect();
    json!({
        "name": escape(&t.name), "trace_id": t.key.trace_hex(), "span_id": t.key.span_hex(),
        "parent_span_id": format!("{:016x}", t.parent_span_id), "pid": t.pid,
        "process": t.process.as_ref().map(|p| escape(&p.describe())), "top": top,
        "wall_ns": t.wall_ns(), "on_cpu_ns": t.on_cpu_ns, "steal_ns": t.steal_ns, "runq_ns": t.runq_ns,
        "blocked_ns": t.blocked_ns, "unscheduled_ns": t.unscheduled_ns(), "syscall_ns": t.syscall_ns(),
        "summed": t.summed, "left_out": k.left_out, "incomplete": t.incomplete().map(|w| escape(&w)),
        "regions": regions, "threads": threads, "blocks": blocks, "syscalls": sys,
        "waited_on": t.waited_on.iter().map(|(k, n, ns)| json!({"span_id": k.span_hex(), "name": n.as_deref().map(escape), "ns": ns})).collect::<Vec<_>>(),
        "logs": t.logs.iter().map(|(k, v)| json!([escape(k), escape(v)])).collect::<Vec<_>>(),
        "critical": critical, "critical_left_out": k.critical.len().saturating_sub(MAX_CRITICAL_STEPS),
    })
}
