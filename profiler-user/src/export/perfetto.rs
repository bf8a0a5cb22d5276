//! A Perfetto trace (protobuf `Trace` of TrackEvent packets) that opens in ui.perfetto.dev.
//!
//! Layout: a track per traced process, holding one track per request (task) named
//! "<task name> <span id, 8 digits>" with the task slice (ledger as its arguments), its regions
//! nested inside and its logs as instants; and a track per thread with its on-CPU slices
//! ("on-cpu: <task>"), off-CPU slices ("blocked in <syscall>", "run queue") and, on a child
//! track "syscalls <tid>", its syscalls. A wakeup by a user thread is a flow arrow from an
//! instant on the waker's thread track at the wakeup time to the wakee's next on-CPU slice.
//!
//! Events are buffered (at most [`MAX_SLICES`]) and written at `finish`, nested per track and
//! sorted by time. Timestamps stay CLOCK_MONOTONIC (clock 3), declared the trace clock by a
//! ClockSnapshot, so they match `--format json`'s `ts_ns`.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::Context;

#[path = "perfetto_proto.rs"]
pub(crate) mod proto;
use proto::{field as f, put_varint, Msg};

use crate::clock::clock_ns;
use crate::model::critical::StepKind;
use crate::model::event::{Record, TaskKey, Waker};
use crate::model::ledger::TaskState;
use crate::model::report::SessionReport;
use crate::present::{describe_waker, syscall_name};
use crate::sink::Sink;

/// Slices and instants buffered; beyond this they are counted, dropped and reported.
pub const MAX_SLICES: usize = 1_000_000;
/// Tracks (processes, threads, tasks); beyond this, events needing a new track are dropped.
pub const MAX_TRACKS: usize = 100_000;
/// The one packet sequence this writer uses ("tp").
const SEQUENCE_ID: u64 = 0x7470;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TrackKey {
    Process(u32),
    Thread(u32, u32),
    Syscalls(u32, u32),
    Task(TaskKey),
    /// A request's critical path (when it runs through another task), one track per depth.
    Critical(TaskKey, u32),
    Session,
}

enum Kind {
    Process(u32),
    Thread(u32, u32),
    Custom,
}

struct Track {
    uuid: u64,
    parent: u64,
    name: String,
    kind: Kind,
}

/// A slice (`start..end`) or an instant, with its name, category and arguments already
/// encoded as TrackEvent fields.
struct Slice {
    track: u64,
    start: u64,
    end: u64,
    instant: bool,
    body: Vec<u8>,
    flow_out: u64,
    flow_in: u64,
}

#[derive(Default)]
struct TaskSpan {
    first: Option<u64>,
    last: Option<u64>,
    name: String,
    pid: u32,
    summarized: bool,
}

enum Arg<'a> {
    S(&'a str),
    U(u64),
    I(i64),
}
use Arg::{I, S, U};

/// TrackEvent name, category and debug annotations.
fn body(name: &str, cat: &str, args: &[(&str, Arg<'_>)]) -> Vec<u8> {
    let mut m = Msg::new();
    m.str(f::TE_NAME, name).str(f::TE_CATEGORIES, cat);
    for (k, v) in args {
        let mut a = Msg::new();
        a.str(f::DA_NAME, k);
        match v {
            S(s) => a.str(f::DA_STRING_VALUE, s),
            U(u) => a.varint(f::DA_UINT_VALUE, *u),
            I(i) => a.varint(f::DA_INT_VALUE, *i as u64),
        };
        m.msg(f::TE_DEBUG_ANNOTATIONS, &a);
    }
    m.0
}

fn comm(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    Some(s.trim_end().to_string()).filter(|s| !s.is_empty())
}

pub struct PerfettoSink {
    out: Option<BufWriter<File>>,
    /// (CLOCK_MONOTONIC, CLOCK_BOOTTIME) read together, for the ClockSnapshot.
    clocks: (u64, u64),
    tracks: HashMap<TrackKey, Track>,
    tasks: HashMap<TaskKey, TaskSpan>,
    slices: Vec<Slice>,
    /// Wakee tid -> (flow id, waker instant, earliest start of the slice ending the flow,
    /// fallback slice ending it if the wakee's next on-CPU slice never comes).
    pending: HashMap<u32, (u64, usize, u64, Option<usize>)>,
    next_flow: u64,
    dropped: u64,
    /// Track names from this machine's /proc (a live session) or only from what the
    /// session learnt of its processes (a report: [`PerfettoSink::offline`]).
    live: bool,
    /// What the tasks' `process` said: process and thread names, for a report.
    learnt: HashMap<u32, std::sync::Arc<crate::model::process::ProcessInfo>>,
}

impl PerfettoSink {
    /// Creates (truncates) `path` now; the trace is written into it at `finish`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("creating Perfetto trace {}", path.display()))?;
        let mut sink = PerfettoSink {
            out: Some(BufWriter::new(file)),
            clocks: (clock_ns(libc::CLOCK_MONOTONIC), clock_ns(libc::CLOCK_BOOTTIME)),
            tracks: HashMap::new(),
            tasks: HashMap::new(),
            slices: Vec::new(),
            pending: HashMap::new(),
            next_flow: 1,
            dropped: 0,
            live: true,
            learnt: HashMap::new(),
        };
        sink.track(TrackKey::Session, 0);
        Ok(sink)
    }

    /// A sink for a report: tracks are named from the recording (its processes' names, the
    /// threads they had when added), never from this machine's /proc.
    pub fn offline(mut self) -> Self {
        self.live = false;
        self
    }

    /// Remembers what the session learnt of `t`'s process (a report's names).
    fn learn(&mut self, t: &TaskState) {
        if let Some(p) = &t.process {
            if !self.learnt.contains_key(&t.pid) && self.learnt.len() < MAX_TRACKS {
                self.learnt.insert(t.pid, std::sync::Arc::clone(p));
            }
        }
    }

    fn process_name(&self, p: u32) -> Option<String> {
        if self.live {
            return comm(&format!("/proc/{p}/comm"));
        }
        let info = self.learnt.get(&p)?;
        info.comm.clone().or_else(|| info.exe_name.clone())
    }

    fn thread_name(&self, p: u32, t: u32) -> Option<String> {
        if self.live {
            return comm(&format!("/proc/{p}/task/{t}/comm"));
        }
        self.learnt.get(&p)?.thread_name(t).map(str::to_string)
    }

    /// The track's uuid, declaring it (and its parents) on first use.
    fn track(&mut self, key: TrackKey, pid: u32) -> Option<u64> {
        if let Some(t) = self.tracks.get(&key) {
            return Some(t.uuid);
        }
        if self.tracks.len() >= MAX_TRACKS || self.slices.len() >= MAX_SLICES {
            return None;
        }
        let (parent, kind, name) = match key {
            TrackKey::Process(p) => (0, Kind::Process(p), self.process_name(p).unwrap_or(format!("pid {p}"))),
            TrackKey::Thread(p, t) => {
                let name = self.thread_name(p, t).unwrap_or(format!("tid {t}"));
                (self.track(TrackKey::Process(p), p)?, Kind::Thread(p, t), name)
            }
            TrackKey::Syscalls(p, t) => (self.track(TrackKey::Thread(p, t), p)?, Kind::Custom, format!("syscalls {t}")),
            TrackKey::Task(_) => (self.track(TrackKey::Process(pid), pid)?, Kind::Custom, String::new()),
            TrackKey::Critical(k, 0) => (self.track(TrackKey::Process(pid), pid)?, Kind::Custom, format!("critical path {:.8}", k.span_hex())),
            TrackKey::Critical(k, d) => (self.track(TrackKey::Critical(k, d - 1), pid)?, Kind::Custom, format!("woken by (depth {d})")),
            TrackKey::Session => (0, Kind::Custom, "tprof session".into()),
        };
        let uuid = self.tracks.len() as u64 + 1;
        self.tracks.insert(key, Track { uuid, parent, name, kind });
        Some(uuid)
    }

    fn push(&mut self, track: Option<u64>, start: u64, end: u64, instant: bool, body: Vec<u8>) -> Option<usize> {
        let track = track.filter(|_| self.slices.len() < MAX_SLICES);
        let Some(track) = track else {
            if self.dropped == 0 {
                log::warn!("perfetto: over {MAX_SLICES} slices or {MAX_TRACKS} tracks; dropping further events");
            }
            self.dropped += 1;
            return None;
        };
        self.slices.push(Slice { track, start, end: end.max(start), instant, body, flow_out: 0, flow_in: 0 });
        Some(self.slices.len() - 1)
    }

    /// The task's track (None over the caps), noting its name and the times seen.
    fn note_task(&mut self, t: &TaskState, ts: Option<u64>) -> Option<u64> {
        let uuid = self.track(TrackKey::Task(t.key), t.pid)?;
        let span = self.tasks.entry(t.key).or_default();
        if let Some(ts) = ts {
            span.first = Some(span.first.map_or(ts, |x| x.min(ts)));
            span.last = Some(span.last.map_or(ts, |x| x.max(ts)));
        }
        if !t.name.is_empty() {
            span.name.clear();
            span.name.push_str(&t.name);
        }
        span.pid = t.pid;
        Some(uuid)
    }

    /// Ends a pending wakeup flow on its fallback slice (or withdraws it).
    fn settle(&mut self, (id, from, _, fallback): (u64, usize, u64, Option<usize>)) {
        match fallback.and_then(|i| self.slices.get_mut(i)).filter(|s| s.flow_in == 0) {
            Some(s) => s.flow_in = id,
            None => {
                if let Some(s) = self.slices.get_mut(from) {
                    s.flow_out = 0;
                }
            }
        }
    }

    fn off_cpu(&mut self, rec: &Record, thread: Option<u64>, tname: &str, span: &str) {
        let Record::OffCpu { meta: m, start_ns: start, runnable_ns, state, syscall_nr, waker, .. } = rec else { return };
        let (start, end) = (*start, m.ts_ns.max(*start));
        let r = match waker {
            Waker::Preempted => start,
            _ => runnable_ns.map_or(end, |r| r.clamp(start, end)),
        };
        let wd = describe_waker(waker);
        let args = [("task", S(tname)), ("span_id", S(span)), ("state", U(u64::from(*state))), ("waker", S(&wd))];
        let mut last = None;
        if r > start {
            let name = syscall_nr.map_or("blocked".to_string(), |nr| format!("blocked in {}", syscall_name(nr)));
            last = self.push(thread, start, r, false, body(&name, "off-cpu", &args));
        }
        if end > r || last.is_none() {
            let name = if matches!(waker, Waker::Preempted) { "run queue (preempted)" } else { "run queue" };
            last = self.push(thread, r, end, false, body(name, "off-cpu", &args)).or(last);
        }
        let (Waker::Thread { pid, tid, comm, task, .. }, Some(_)) = (waker, runnable_ns) else { return };
        let key = TrackKey::Thread(*pid, *tid);
        let wt = self.track(key, *pid);
        if let Some(t) = self.tracks.get_mut(&key).filter(|t| t.name.starts_with("tid ") && !comm.is_empty()) {
            t.name.clone_from(comm);
        }
        let wspan = task.map(|t| t.span_hex()).unwrap_or_default();
        let b = body(
            &format!("wakes tid {}", m.tid),
            "wakeup",
            &[("wakee_task", S(tname)), ("wakee_span_id", S(span)), ("waker_span_id", S(&wspan))],
        );
        if let Some(i) = self.push(wt, r, r, true, b) {
            let id = self.next_flow;
            self.next_flow += 1;
            self.slices[i].flow_out = id;
            if let Some(old) = self.pending.insert(m.tid, (id, i, end, last)) {
                self.settle(old);
            }
        }
    }

    /// The request's critical path on tracks of its own (named after the request, one
    /// child track per level of wakers' tasks), and a flow arrow at each hop from a waker's
    /// work back to the task it woke.
    fn critical_path(&mut self, t: &TaskState) {
        if !t.critical_path.iter().any(|s| s.depth > 0) {
            return;
        }
        let key = TrackKey::Critical(t.key, 0);
        self.track(key, t.pid);
        if let Some(tr) = self.tracks.get_mut(&key) {
            tr.name = format!("critical path: {} {:.8}", t.name, t.key.span_hex());
        }
        let wall = t.wall_ns().unwrap_or(0).max(1) as f64;
        let mut prev: Option<(usize, u32)> = None;
        for st in &t.critical_path {
            let track = self.track(TrackKey::Critical(t.key, st.depth), t.pid);
            let who = st.name.as_deref().unwrap_or(&t.name);
            let what = match &st.kind {
                StepKind::Blocked { syscall_nr: Some(nr), .. } => format!("blocked in {}", syscall_name(*nr)),
                k => k.label().replace('_', " "),
            };
            let waker = match &st.kind {
                StepKind::Blocked { waker, .. } => describe_waker(waker),
                _ => String::new(),
            };
            let span = st.task.span_hex();
            let share = format!("{:.1}%", st.dur_ns() as f64 / wall * 100.0);
            let args = [("task", S(who)), ("span_id", S(&span)), ("tid", U(u64::from(st.tid))), ("depth", U(u64::from(st.depth))), ("share", S(&share)), ("waker", S(&waker))];
            let Some(i) = self.push(track, st.start_ns, st.end_ns, false, body(&format!("{what} ({who})"), "critical-path", &args)) else { break };
            // A hop back up a level: the deeper task's work ended the block, and the path
            // goes on in the task it woke.
            if let Some((p, _)) = prev.filter(|(_, depth)| *depth > st.depth) {
                let id = self.next_flow;
                self.next_flow += 1;
                self.slices[p].flow_out = id;
                self.slices[i].flow_in = id;
            }
            prev = Some((i, st.depth));
        }
    }

    fn write(&mut self, out: &mut BufWriter<File>) -> io::Result<()> {
        let packet = |out: &mut BufWriter<File>, m: &mut Msg| -> io::Result<()> {
            m.varint(f::PKT_TRUSTED_SEQUENCE_ID, SEQUENCE_ID);
            let mut hdr = Vec::with_capacity(8);
            put_varint(&mut hdr, u64::from((f::TRACE_PACKET << 3) | 2));
            put_varint(&mut hdr, m.0.len() as u64);
            out.write_all(&hdr)?;
            out.write_all(&m.0)
        };
        // The trace clock is CLOCK_MONOTONIC; the snapshot relates it to BOOTTIME.
        let mut snap = Msg::new();
        for (id, ts) in [(f::BUILTIN_CLOCK_MONOTONIC, self.clocks.0), (f::BUILTIN_CLOCK_BOOTTIME, self.clocks.1)] {
            snap.msg(f::SNAP_CLOCKS, Msg::new().varint(f::CLOCK_ID, id).varint(f::CLOCK_TIMESTAMP, ts));
        }
        snap.varint(f::SNAP_PRIMARY_TRACE_CLOCK, f::BUILTIN_CLOCK_MONOTONIC);
        let mut p = Msg::new();
        p.varint(f::PKT_TIMESTAMP, self.clocks.1).msg(f::PKT_CLOCK_SNAPSHOT, &snap);
        p.varint(f::PKT_SEQUENCE_FLAGS, f::SEQ_INCREMENTAL_STATE_CLEARED).varint(f::PKT_FIRST_PACKET_ON_SEQUENCE, 1);
        packet(out, &mut p)?;

        let mut tracks: Vec<(&TrackKey, &Track)> = self.tracks.iter().collect();
        tracks.sort_by_key(|(_, t)| t.uuid);
        for (key, t) in tracks {
            let mut td = Msg::new();
            td.varint(f::TD_UUID, t.uuid);
            if t.parent != 0 {
                td.varint(f::TD_PARENT_UUID, t.parent);
            }
            match (&t.kind, key) {
                (Kind::Process(pid), _) => {
                    td.msg(f::TD_PROCESS, Msg::new().varint(f::PD_PID, u64::from(*pid)).str(f::PD_PROCESS_NAME, &t.name));
                    td.varint(f::TD_CHILD_ORDERING, f::CHILD_ORDERING_CHRONOLOGICAL);
                }
                (Kind::Thread(pid, tid), _) => {
                    let mut th = Msg::new();
                    th.varint(f::THD_PID, u64::from(*pid)).varint(f::THD_TID, u64::from(*tid));
                    td.msg(f::TD_THREAD, th.str(f::THD_THREAD_NAME, &t.name));
                }
                (Kind::Custom, TrackKey::Task(k)) => {
                    let name = self.tasks.get(k).map(|s| s.name.as_str()).filter(|n| !n.is_empty());
                    td.str(f::TD_NAME, &format!("{} {:.8}", name.unwrap_or("task"), k.span_hex()));
                    td.str(f::TD_DESCRIPTION, &format!("trace {} span {}", k.trace_hex(), k.span_hex()));
                }
                (Kind::Custom, _) => {
                    td.str(f::TD_NAME, &t.name);
                }
            }
            if matches!(t.kind, Kind::Custom) {
                td.varint(f::TD_SIBLING_MERGE_BEHAVIOR, f::SIBLING_MERGE_BEHAVIOR_NONE);
            }
            packet(out, Msg::new().msg(f::PKT_TRACK_DESCRIPTOR, &td))?;
        }

        for (ts, ty, i) in self.schedule() {
            let s = &self.slices[i];
            let mut te = Msg::new();
            te.varint(f::TE_TYPE, ty).varint(f::TE_TRACK_UUID, s.track);
            if ty != f::TYPE_SLICE_END {
                te.0.extend_from_slice(&s.body);
                if s.flow_out != 0 {
                    te.fixed64(f::TE_FLOW_IDS, s.flow_out);
                }
                if s.flow_in != 0 {
                    te.fixed64(f::TE_TERMINATING_FLOW_IDS, s.flow_in);
                }
            }
            let mut p = Msg::new();
            p.varint(f::PKT_TIMESTAMP, ts).varint(f::PKT_TIMESTAMP_CLOCK_ID, f::BUILTIN_CLOCK_MONOTONIC);
            packet(out, p.msg(f::PKT_TRACK_EVENT, &te))?;
        }
        out.flush()
    }

    /// (timestamp, TrackEvent type, slice) in time order, slices strictly nested per track: a
    /// slice overlapping the end of the one it starts in is cut at that end.
    fn schedule(&self) -> Vec<(u64, u64, usize)> {
        let mut order: Vec<usize> = (0..self.slices.len()).collect();
        order.sort_by_key(|&i| {
            let s = &self.slices[i];
            (s.track, s.start, Reverse(s.end), s.instant, i)
        });
        let mut out = Vec::with_capacity(order.len() * 2);
        let mut stack: Vec<(u64, usize)> = Vec::new();
        let mut track = None;
        for i in order {
            let s = &self.slices[i];
            if track != Some(s.track) {
                out.extend(stack.drain(..).rev().map(|(e, j)| (e, f::TYPE_SLICE_END, j)));
                track = Some(s.track);
            }
            while let Some(&(e, j)) = stack.last().filter(|(e, _)| *e <= s.start) {
                out.push((e, f::TYPE_SLICE_END, j));
                stack.pop();
            }
            if s.instant {
                out.push((s.start, f::TYPE_INSTANT, i));
            } else {
                out.push((s.start, f::TYPE_SLICE_BEGIN, i));
                stack.push((stack.last().map_or(s.end, |&(e, _)| s.end.min(e)), i));
            }
        }
        out.extend(stack.drain(..).rev().map(|(e, j)| (e, f::TYPE_SLICE_END, j)));
        out.sort_by_key(|e| e.0); // stable: keeps each track's order
        out
    }
}

impl Sink for PerfettoSink {
    fn event(&mut self, rec: &Record, task: &TaskState) -> io::Result<()> {
        let m = *rec.meta();
        self.learn(task);
        let task_track = self.note_task(task, Some(m.ts_ns));
        let tname = if task.name.is_empty() { "task" } else { &*task.name };
        let span = m.task.span_hex();
        let thread = self.track(TrackKey::Thread(m.pid, m.tid), m.pid);
        match rec {
            Record::TaskAttach { .. } | Record::TaskDetach { .. } => {
                let what = if matches!(rec, Record::TaskAttach { .. }) { "resumed on" } else { "left" };
                self.push(task_track, m.ts_ns, m.ts_ns, true, body(&format!("{what} tid {}", m.tid), "task", &[]));
            }
            Record::Log { key, value, .. } => {
                let b = body(&format!("log: {key}"), "log", &[("value", S(value)), ("tid", U(u64::from(m.tid)))]);
                self.push(task_track, m.ts_ns, m.ts_ns, true, b);
            }
            Record::OnCpu { start_ns, .. } => {
                let b = body(&format!("on-cpu: {tname}"), "on-cpu", &[("span_id", S(&span)), ("cpu", U(u64::from(m.cpu)))]);
                if let Some(i) = self.push(thread, *start_ns, m.ts_ns, false, b) {
                    if let Some(&(id, ..)) = self.pending.get(&m.tid).filter(|p| *start_ns >= p.2) {
                        self.slices[i].flow_in = id;
                        self.pending.remove(&m.tid);
                    }
                }
            }
            Record::OffCpu { .. } => self.off_cpu(rec, thread, tname, &span),
            Record::Syscall { nr, start_ns, ret, .. } => {
                let sys = self.track(TrackKey::Syscalls(m.pid, m.tid), m.pid);
                let b = body(
                    &format!("syscall {}", syscall_name(*nr)),
                    "syscall",
                    &[("nr", U(u64::from(*nr))), ("ret", I(*ret)), ("task", S(tname)), ("span_id", S(&span))],
                );
                self.push(sys, *start_ns, m.ts_ns, false, b);
            }
            // The task slice and its regions come with the summary, already paired and nested.
            _ => {}
        }
        Ok(())
    }

    fn summary(&mut self, t: &TaskState) -> io::Result<()> {
        self.learn(t);
        let track = self.note_task(t, None);
        let Some(span) = self.tasks.get_mut(&t.key) else { return Ok(()) };
        span.summarized = true;
        let (Some(begin), Some(end)) = (t.begin_ns.or(span.first), t.end_ns.or(span.last).or(t.begin_ns)) else {
            return Ok(());
        };
        let (trace, span_id, parent) = (t.key.trace_hex(), t.key.span_hex(), format!("{:016x}", t.parent_span_id));
        let threads = t.threads.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
        let incomplete = t.incomplete().unwrap_or_default();
        let mut args = vec![
            ("trace_id", S(&trace)),
            ("span_id", S(&span_id)),
            ("parent_span_id", S(&parent)),
            ("threads", S(&threads)),
            ("wall_ns", U(end.saturating_sub(begin))),
            ("on_cpu_ns", U(t.on_cpu_ns)),
            ("runq_ns", U(t.runq_ns)),
            ("blocked_ns", U(t.blocked_ns)),
            ("unscheduled_ns", U(t.unscheduled_ns().unwrap_or(0))),
            ("syscall_ns", U(t.syscall_ns())),
            ("dropped", U(t.dropped)),
            ("truncated", U(t.truncated)),
            ("incomplete", S(&incomplete)),
        ];
        let blocked: Vec<(String, u64)> =
            t.blocked_in_syscall.iter().map(|(nr, ns)| (format!("blocked_in.{}", syscall_name(*nr)), *ns)).collect();
        args.extend(blocked.iter().map(|(k, v)| (k.as_str(), U(*v))));
        args.extend(t.logs.iter().map(|(k, v)| (k.as_str(), S(v))));
        let name = if t.name.is_empty() { "task" } else { &*t.name };
        self.push(track, begin, end, false, body(name, "task", &args));
        self.critical_path(t);
        for r in &t.regions {
            let b = body(&r.name, "region", &[("depth", U(u64::from(r.depth)))]);
            self.push(track, r.start_ns, r.end_ns.unwrap_or(end), false, b);
        }
        Ok(())
    }

    fn finish(&mut self, r: &SessionReport) -> io::Result<()> {
        let Some(mut out) = self.out.take() else { return Ok(()) };
        let open: Vec<(TaskKey, u64, u64, u32)> = (self.tasks.iter())
            .filter(|(_, s)| !s.summarized)
            .filter_map(|(k, s)| Some((*k, s.first?, s.last?, s.pid)))
            .collect();
        for (k, first, last, pid) in open {
            let track = self.track(TrackKey::Task(k), pid);
            self.push(track, first, last, false, body("task (no summary)", "task", &[("span_id", S(&k.span_hex()))]));
        }
        for old in self.pending.drain().map(|(_, p)| p).collect::<Vec<_>>() {
            self.settle(old);
        }
        let at = self.slices.iter().map(|s| s.end).max().unwrap_or(self.clocks.0);
        let track = self.tracks.get(&TrackKey::Session).map_or(u64::MAX, |t| t.uuid);
        let (warnings, dropped) = (r.warnings.join("; "), self.dropped);
        let b = body("tprof session", "session", &[
            ("stop_reason", S(&r.stop_reason)),
            ("records", U(r.records)),
            ("undecodable", U(r.undecodable)),
            ("kernel_drops_total", U(r.total_kernel_drops())),
            ("missed_switch_ins", U(r.missed_switch_ins)),
            ("tasks_ended", U(r.correlator.tasks_ended)),
            ("filtered_events", U(r.filtered_events)),
            ("perfetto_dropped_events", U(dropped)),
            ("warnings", S(&warnings)),
        ]);
        if track != u64::MAX {
            // Always kept, past the cap too: it reports what was dropped.
            self.slices.push(Slice { track, start: at, end: at, instant: true, body: b, flow_out: 0, flow_in: 0 });
        }
        if dropped > 0 {
            log::warn!("perfetto: {dropped} events dropped (over {MAX_SLICES} slices or {MAX_TRACKS} tracks)");
        }
        self.write(&mut out)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::Correlator;
    use crate::model::event::Meta;
    use crate::model::ledger::Output;
    use std::process::Command;

    const A: TaskKey = TaskKey { trace_id: 0xaa, span_id: 0xa1a1_a1a1_0000_0001 };
    const B: TaskKey = TaskKey { trace_id: 0xbb, span_id: 0xb2b2_b2b2_0000_0002 };

    fn meta(tid: u32, task: TaskKey, ts_ns: u64) -> Meta {
        Meta { cpu: 1, ts_ns, pid: 4_000_000, tid, task }
    }

    /// Task A ("GET /a", tid 11) blocks in futex and is woken by tid 12 working for task B
    /// ("POST /b"), which is later preempted.
    fn records() -> Vec<Record> {
        let begin = |tid, task, ts, name: &str| Record::TaskBegin {
            meta: meta(tid, task, ts), parent_span_id: 0, name: name.into(), name_flags: 0, untracked: false,
        };
        let off = |tid, task, start_ns, runnable_ns, ts, syscall_nr, waker| Record::OffCpu {
            meta: meta(tid, task, ts), start_ns, runnable_ns, state: 1, syscall_nr, waker, stacks: Default::default(), end_inferred: false,
        };
        let waker = Waker::Thread { pid: 4_000_000, tid: 12, comm: "worker".into(), task: Some(B), via_softirq: false };
        vec![
            begin(12, B, 900, "POST /b"),
            begin(11, A, 1_000, "GET /a"),
            Record::RegionBegin { meta: meta(11, A, 1_100), name: "db".into(), name_flags: 0 },
            Record::OnCpu { meta: meta(11, A, 1_250), start_ns: 1_000, steal_ns: 0 },
            Record::Syscall { meta: meta(12, B, 5_010), nr: 1, start_ns: 4_990, ret: 8 },
            Record::OnCpu { meta: meta(12, B, 5_050), start_ns: 900, steal_ns: 0 },
            off(11, A, 1_250, Some(5_000), 5_100, Some(202), waker),
            Record::Log { meta: meta(11, A, 5_250), key: "rows".into(), value: "12".into(), flags: 0 },
            Record::RegionEnd { meta: meta(11, A, 5_280), name: "db".into(), name_flags: 0 },
            Record::Syscall { meta: meta(11, A, 5_200), nr: 202, start_ns: 1_200, ret: 0 },
            Record::OnCpu { meta: meta(11, A, 5_300), start_ns: 5_100, steal_ns: 0 },
            Record::TaskEnd { meta: meta(11, A, 5_400), dropped: 0 },
            off(12, B, 5_050, None, 5_600, None, Waker::Preempted),
            Record::OnCpu { meta: meta(12, B, 5_700), start_ns: 5_600, steal_ns: 0 },
            Record::TaskEnd { meta: meta(12, B, 5_700), dropped: 0 },
        ]
    }

    fn write_trace(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("tprof-{}-{name}.perfetto-trace", std::process::id()));
        let mut sink = PerfettoSink::create(&path).unwrap();
        let mut corr = Correlator::new();
        let mut out = |o: Output<'_>| match o {
            Output::Event(r, t) => sink.event(r, t).unwrap(),
            Output::Summary(t) => sink.summary(t).unwrap(),
        };
        for rec in records() {
            corr.push(&rec, &mut out);
        }
        corr.finish(&mut out);
        sink.finish(&SessionReport { stop_reason: "test".into(), ..Default::default() }).unwrap();
        path
    }

    #[test]
    fn nesting_cuts_overlaps_and_orders_ends_first() {
        let path = std::env::temp_dir().join(format!("tprof-{}-nest.perfetto-trace", std::process::id()));
        let mut s = PerfettoSink::create(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        s.push(Some(1), 10, 20, false, Vec::new()); // 0
        s.push(Some(1), 15, 30, false, Vec::new()); // 1: crosses 0's end, cut at 20
        s.push(Some(1), 20, 25, false, Vec::new()); // 2: starts where 0 ends
        s.push(Some(1), 25, 25, true, Vec::new()); // 3: instant at 2's end
        let ev: Vec<(u64, u64, usize)> = s.schedule();
        let (b, e, i) = (f::TYPE_SLICE_BEGIN, f::TYPE_SLICE_END, f::TYPE_INSTANT);
        assert_eq!(ev, [(10, b, 0), (15, b, 1), (20, e, 1), (20, e, 0), (20, b, 2), (25, e, 2), (25, i, 3)]);
    }

    #[test]
    fn trace_validates_against_published_protos() {
        let path = write_trace("validate");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/schema/validate_perfetto.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(&path).args(["--min-flows", "1"]);
        for n in [
            "GET /a", "POST /b", "db", "on-cpu: GET /a", "on-cpu: POST /b", "blocked in futex", "run queue",
            "run queue (preempted)", "syscall futex", "syscall write", "log: rows", "wakes tid 11", "tprof session",
        ] {
            cmd.args(["--expect-name", n]);
        }
        for t in ["GET /a a1a1a1a1", "POST /b b2b2b2b2", "syscalls 11", "worker"] {
            cmd.args(["--expect-track", t]);
        }
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): run `cargo xtask setup` to install python3 and the Perfetto protos")
        });
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::remove_file(&path);
        match out.status.code() {
            Some(0) => println!("{stdout}"),
            Some(2) => panic!("{stderr}\nthe Perfetto protos are missing: run `cargo xtask setup`"),
            _ => panic!("the Perfetto trace did not validate:\n{stdout}{stderr}"),
        }
        // The wakeup of the mutex waiter, and the critical path's hop back from the
        // waker's task (sample_tasks' first task).
        assert!(stdout.contains("2 flows"), "{stdout}");
    }
}
