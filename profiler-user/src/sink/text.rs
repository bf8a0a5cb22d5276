//! The human stream: events indented under their request, one summary block per request,
//! and a session footer with what was lost.

use std::collections::HashMap;
use std::io::{self, Write};

use super::Sink;
use crate::model::critical::StepKind;
use crate::model::event::{agg_syscalls, Record, TaskKey, Waker};
use crate::model::ledger::TaskState;
use crate::model::report::SessionReport;
use crate::model::unattributed::ProcessCpu;
use crate::present::{describe_waker, escape, ms, syscall_name};

/// Most threads a churn line counts by tid (beyond: counted as "more").
const CHURN_TIDS: usize = 16;

/// A run of a task's attach/detach records and summed short intervals, printed as one line
/// when the task's next other record (or its summary) comes: a streamed response attaches
/// its task around every chunk, three lines a chunk otherwise.
#[derive(Default)]
struct Churn {
    first_ns: u64,
    pid: u32,
    tids: Vec<u32>,
    attaches: u64,
    detaches: u64,
    aggs: u64,
    slices: u64,
    oncpu_ns: u64,
    offcpu: u64,
    blocked_ns: u64,
    runq_ns: u64,
    syscalls: u64,
    syscall_ns: u64,
}

impl Churn {
    fn add(&mut self, rec: &Record) {
        let m = rec.meta();
        if self.attaches + self.detaches + self.aggs == 0 {
            self.first_ns = m.ts_ns;
            self.pid = m.pid;
        }
        if !self.tids.contains(&m.tid) && self.tids.len() < CHURN_TIDS {
            self.tids.push(m.tid);
        }
        match rec {
            Record::TaskAttach { .. } => self.attaches += 1,
            Record::TaskDetach { .. } => self.detaches += 1,
            Record::Agg { sums, .. } => {
                self.aggs += 1;
                self.slices += u64::from(sums.slices);
                self.oncpu_ns += sums.oncpu_ns;
                self.offcpu += u64::from(sums.offcpu);
                self.blocked_ns += sums.blocked_ns;
                self.runq_ns += sums.runq_ns;
                self.syscalls += u64::from(sums.syscalls);
                self.syscall_ns += agg_syscalls(sums).map(|(_, s)| s.total_ns).sum::<u64>();
            }
            _ => {}
        }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        match (self.attaches, self.detaches) {
            (0, 1) => parts.push("detach (thread leaves the task)".to_string()),
            (1, 0) => parts.push("attach (thread resumes the task)".to_string()),
            (0, 0) => {}
            (a, d) => parts.push(format!("{a} attaches, {d} detaches (threads resume and leave the task)")),
        }
        if self.aggs > 0 {
            let mut sums = Vec::new();
            if self.slices > 0 {
                sums.push(format!("on-cpu {} ms in {} slices", ms(self.oncpu_ns), self.slices));
            }
            if self.offcpu > 0 {
                sums.push(format!(
                    "blocked {} ms, run queue {} ms in {} off-cpu intervals",
                    ms(self.blocked_ns),
                    ms(self.runq_ns),
                    self.offcpu
                ));
            }
            if self.syscalls > 0 {
                sums.push(format!("{} syscalls {} ms", self.syscalls, ms(self.syscall_ns)));
            }
            parts.push(format!("summed short intervals: {}", sums.join(", ")));
        }
        parts.join("; ")
    }

    fn tid_column(&self) -> String {
        match self.tids.as_slice() {
            [one] => one.to_string(),
            many => format!("{} tids", many.len()),
        }
    }
}

/// What the text sink remembers of an open task.
#[derive(Default)]
struct Pending {
    churn: Option<Churn>,
    /// A "summed short intervals" line was printed for it.
    summed_listed: bool,
}

pub struct TextSink<W: Write> {
    out: W,
    /// Timestamps print relative to this (CLOCK_MONOTONIC ns).
    base_ns: u64,
    /// Per open task with events printed: the churn not printed yet.
    pending: HashMap<TaskKey, Pending, foldhash::fast::RandomState>,
}

impl<W: Write> TextSink<W> {
    /// Times are shown in ms since `base_ns` (CLOCK_MONOTONIC); 0: since the first event
    /// shown (a report, whose clock is the recording machine's).
    pub fn new(out: W, base_ns: u64) -> Self {
        TextSink { out, base_ns, pending: HashMap::default() }
    }

    fn rel(&self, ts: u64) -> String {
        format!("{:>10}", ms(ts.saturating_sub(self.base_ns)))
    }

    /// Prints the task's churn run, if any, as one line.
    /// The critical path, when it runs through another task (otherwise the ledger above
    /// says it all): one line per step, indented by depth (a deeper step explains the block
    /// above it), with its share of the request's wall time.
    fn critical_path(&mut self, t: &TaskState) -> io::Result<()> {
        if !t.critical_path.iter().any(|s| s.depth > 0) {
            return Ok(());
        }
        let wall = t.wall_ns().unwrap_or(0).max(1) as f64;
        writeln!(self.out, "   critical path:")?;
        for s in &t.critical_path {
            let who = match &s.name {
                Some(n) if s.depth > 0 => format!("\"{}\" span {:.8} ", escape(n), s.task.span_hex()),
                _ => String::new(),
            };
            let what = match &s.kind {
                StepKind::OnCpu => format!("on CPU (tid {})", s.tid),
                StepKind::RunQueue => format!("in the run queue (tid {})", s.tid),
                StepKind::Blocked { syscall_nr, waker } => {
                    let inside = syscall_nr.map(|nr| format!(" in {}", syscall_name(nr))).unwrap_or_default();
                    format!("blocked{inside} (tid {}), {}", s.tid, describe_waker(waker))
                }
                StepKind::Untraced => "no streamed interval (unscheduled, or short intervals summed)".to_string(),
            };
            let pad = "  ".repeat(s.depth as usize);
            writeln!(self.out, "     {pad}{:>8} ms {:>3.0}%  {who}{what}", ms(s.dur_ns()), s.dur_ns() as f64 / wall * 100.0)?;
        }
        Ok(())
    }

    fn flush_churn(&mut self, key: &TaskKey, short_id: &str) -> io::Result<()> {
        let Some(c) = self.pending.get_mut(key).and_then(|p| p.churn.take()) else { return Ok(()) };
        let line = c.describe();
        let rel = self.rel(c.first_ns);
        writeln!(self.out, "{rel} {short_id} {:>7}/{:<7} {line}", c.pid, c.tid_column())
    }
}

fn short(task: &TaskState) -> String {
    format!("{:.8}/{:.8}", task.key.trace_hex(), task.key.span_hex())
}

fn describe(rec: &Record) -> String {
    match rec {
        Record::TaskBegin { name, parent_span_id, .. } => {
            format!("task begin \"{}\" parent {parent_span_id:016x}", escape(name))
        }
        Record::TaskEnd { dropped, .. } => {
            if *dropped > 0 {
                format!("task end ({dropped} records lost)")
            } else {
                "task end".into()
            }
        }
        Record::TaskAttach { .. } => "attach (thread resumes the task)".into(),
        Record::TaskDetach { .. } => "detach (thread leaves the task)".into(),
        Record::RegionBegin { name, .. } => format!("region begin \"{}\"", escape(name)),
        Record::RegionEnd { name, .. } => format!("region end \"{}\"", escape(name)),
        Record::Log { key, value, .. } => format!("log {}={}", escape(key), escape(value)),
        Record::OnCpu { meta, start_ns, steal_ns } => {
            let slice = meta.ts_ns.saturating_sub(*start_ns);
            if *steal_ns > 0 {
                format!("on-cpu {} ms (of which {} ms stolen by the hypervisor)", ms(slice.saturating_sub(*steal_ns)), ms(*steal_ns))
            } else {
                format!("on-cpu {} ms", ms(slice))
            }
        }
        Record::OffCpu { meta, start_ns, runnable_ns, syscall_nr, waker, .. } => {
            let end = meta.ts_ns;
            let (blocked, runq) = match (waker, runnable_ns) {
                (Waker::Preempted, _) => (0, end.saturating_sub(*start_ns)),
                (_, Some(r)) => (r.saturating_sub(*start_ns), end.saturating_sub(*r)),
                (_, None) => (end.saturating_sub(*start_ns), 0),
            };
            let inside = syscall_nr.map(|n| format!(" in {}", syscall_name(n))).unwrap_or_default();
            format!("off-cpu: blocked {} ms{inside}, run queue {} ms, {}", ms(blocked), ms(runq), describe_waker(waker))
        }
        Record::Syscall { meta, nr, start_ns, ret } => {
            format!("syscall {} {} ms = {ret}", syscall_name(*nr), ms(meta.ts_ns.saturating_sub(*start_ns)))
        }
        Record::Agg { sums, .. } => {
            let mut parts = Vec::new();
            if sums.slices > 0 {
                parts.push(format!("on-cpu {} ms in {} slices", ms(sums.oncpu_ns), sums.slices));
            }
            if sums.offcpu > 0 {
                parts.push(format!("blocked {} ms, run queue {} ms in {} off-cpu intervals", ms(sums.blocked_ns), ms(sums.runq_ns), sums.offcpu));
            }
            if sums.syscalls > 0 {
                parts.push(format!("{} syscalls {} ms", sums.syscalls, ms(agg_syscalls(sums).map(|(_, s)| s.total_ns).sum())));
            }
            format!("summed short intervals: {}", parts.join(", "))
        }
        Record::KStack { frames, .. } => format!("kernel stack of a long block ({} frames)", frames.len()),
        Record::UStack { .. } => "user stack of a long block".into(),
        Record::Proc { event, pid, .. } => format!("process {pid} event {event}"),
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn event(&mut self, rec: &Record, task: &TaskState) -> io::Result<()> {
        if self.base_ns == 0 {
            self.base_ns = rec.meta().ts_ns;
        }
        let id = short(task);
        if matches!(rec, Record::TaskAttach { .. } | Record::TaskDetach { .. } | Record::Agg { .. }) {
            let p = self.pending.entry(task.key).or_default();
            p.summed_listed |= matches!(rec, Record::Agg { .. });
            p.churn.get_or_insert_with(Churn::default).add(rec);
            return Ok(());
        }
        self.flush_churn(&task.key, &id)?;
        let m = rec.meta();
        writeln!(self.out, "{} {id} {:>7}/{:<7} {}", self.rel(m.ts_ns), m.pid, m.tid, describe(rec))
    }

    fn summary(&mut self, t: &TaskState) -> io::Result<()> {
        self.flush_churn(&t.key, &short(t))?;
        let summed_listed = self.pending.remove(&t.key).is_some_and(|p| p.summed_listed);
        let wall = t.wall_ns().map(ms).unwrap_or_else(|| "?".into());
        writeln!(
            self.out,
            "== \"{}\" trace {} span {} {}: wall {wall} ms | on-cpu {} | run-queue {} | blocked {} | unscheduled {} | syscalls {} ms",
            escape(&t.name),
            t.key.trace_hex(),
            t.key.span_hex(),
            t.process.as_ref().map(|p| escape(&p.describe())).unwrap_or_else(|| format!("pid {}", t.pid)),
            ms(t.on_cpu_ns),
            ms(t.runq_ns),
            ms(t.blocked_ns),
            t.unscheduled_ns().map(ms).unwrap_or_else(|| "?".into()),
            ms(t.syscall_ns()),
        )?;
        let mut top: Vec<_> = t.syscalls.iter().collect();
        top.sort_by_key(|s| std::cmp::Reverse(s.1.total_ns));
        if !top.is_empty() {
            let list: Vec<String> =
                top.iter().take(5).map(|(nr, s)| format!("{} {}x {} ms", syscall_name(**nr), s.count, ms(s.total_ns))).collect();
            writeln!(self.out, "   top syscalls: {}", list.join(", "))?;
        }
        if t.cpu_samples > 0 {
            // Each top stack by its innermost user frame (the code that ran), else kernel.
            let list: Vec<String> = t
                .top_stacks
                .iter()
                .take(3)
                .map(|(st, n)| {
                    let leaf = st.user.first().or(st.kernel.first()).map(|f| escape(&f.name())).unwrap_or_else(|| "?".into());
                    format!("{leaf} {}%", n * 100 / t.cpu_samples)
                })
                .collect();
            writeln!(self.out, "   on-cpu samples: {} ({})", t.cpu_samples, list.join(", "))?;
        }
        if t.summed > 0 {
            let where_ = if summed_listed { "in the totals and the \"summed short intervals\" lines above" } else { "in the totals, not listed" };
            writeln!(self.out, "   {} short intervals summed in the kernel ({where_})", t.summed)?;
        }
        if !t.regions.is_empty() {
            let list: Vec<String> = t
                .regions
                .iter()
                .take(10)
                .map(|r| {
                    let d = r.end_ns.map(|e| ms(e.saturating_sub(r.start_ns))).unwrap_or_else(|| "open".into());
                    format!("{}{} {d} ms", "  ".repeat(r.depth as usize), escape(&r.name))
                })
                .collect();
            writeln!(self.out, "   regions: {}", list.join(", "))?;
        }
        for b in &t.blocks {
            let inside = b.syscall_nr.map(|n| format!(" in {}", syscall_name(n))).unwrap_or_default();
            let named = b.waker_task_name.as_deref().map(|n| format!(" \"{}\"", escape(n))).unwrap_or_default();
            writeln!(self.out, "   blocked {} ms{inside} (tid {}), {}{named}", ms(b.blocked_ns), b.tid, describe_waker(&b.waker))?;
            for link in &b.chain {
                let inside = link.syscall_nr.map(|n| format!(" in {}", syscall_name(n))).unwrap_or_default();
                let name = link.name.as_deref().map(escape).unwrap_or_else(|| "?".into());
                writeln!(
                    self.out,
                    "      <- which was itself blocked {} ms{inside} in task \"{name}\" span {:.8}, {}",
                    ms(link.blocked_ns),
                    link.task.span_hex(),
                    describe_waker(&link.waker)
                )?;
            }
            if let Some(s) = &b.stack {
                for (i, f) in s.kernel.iter().take(8).enumerate() {
                    writeln!(self.out, "      {} {}", if i == 0 { "kernel:" } else { "       " }, escape(&f.display()))?;
                }
                for (i, f) in s.user.iter().take(12).enumerate() {
                    writeln!(self.out, "      {} {}", if i == 0 { "user:  " } else { "       " }, escape(&f.display()))?;
                }
                if s.user_truncated {
                    writeln!(self.out, "      (user stack likely truncated: code without frame pointers)")?;
                }
            }
        }
        self.critical_path(t)?;
        if !t.waited_on.is_empty() {
            let list: Vec<String> = t
                .waited_on
                .iter()
                .map(|(k, n, ns)| format!("\"{}\" span {:.8} {} ms", escape(n.as_deref().unwrap_or("?")), k.span_hex(), ms(*ns)))
                .collect();
            writeln!(self.out, "   waited on tasks: {}", list.join(", "))?;
        }
        if !t.logs.is_empty() {
            let list: Vec<String> = t.logs.iter().map(|(k, v)| format!("{}={}", escape(k), escape(v))).collect();
            writeln!(self.out, "   logs: {}", list.join(" "))?;
        }
        if let Some(why) = t.incomplete() {
            writeln!(self.out, "   INCOMPLETE: {why}")?;
        }
        Ok(())
    }

    fn finish(&mut self, r: &SessionReport) -> io::Result<()> {
        // Tasks with churn left and no summary (cannot happen: every open task gets one at the
        // session's end; kept so that nothing is lost silently).
        let left: Vec<TaskKey> = self.pending.keys().copied().collect();
        for key in left {
            let id = format!("{:.8}/{:.8}", key.trace_hex(), key.span_hex());
            self.flush_churn(&key, &id)?;
        }
        self.pending.clear();
        if !r.stats.by_name.is_empty() {
            writeln!(self.out, "-- per task type (ms): count   p50   p90   p99   max | avg on-cpu run-queue blocked unscheduled syscalls")?;
            for (name, s) in &r.stats.by_name {
                let h = &s.wall;
                writeln!(
                    self.out,
                    "   {:<24} {:>6} {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} {:>7} {:>7}{}",
                    escape(name),
                    h.count,
                    ms(h.quantile(0.5)),
                    ms(h.quantile(0.9)),
                    ms(h.quantile(0.99)),
                    ms(h.max_ns),
                    ms(s.avg(s.on_cpu_ns)),
                    ms(s.avg(s.runq_ns)),
                    ms(s.avg(s.blocked_ns)),
                    ms(s.avg(s.unscheduled_ns)),
                    ms(s.avg(s.syscall_ns)),
                    if s.incomplete > 0 { format!("  (+{} incomplete)", s.incomplete) } else { String::new() },
                )?;
            }
        }
        writeln!(
            self.out,
            "-- tprof: {} ms, pids {:?}, {} probe sites ({}), {} records ({} kernel events, {} summed in the kernel), {} tasks ended, {} kernel records lost{}",
            ms(r.duration_ns),
            r.pids,
            r.sites,
            r.probe_links,
            r.records,
            r.correlator.events(),
            r.correlator.summed_intervals,
            r.correlator.tasks_ended,
            r.total_kernel_drops(),
            if r.undecodable > 0 { format!(", {} undecodable", r.undecodable) } else { String::new() },
        )?;
        if r.processes_followed + r.processes_gone > 0 || r.processes_attached > r.pids.len() as u64 {
            writeln!(
                self.out,
                "   processes: {} attached, {} followed (forked by traced processes), {} gone",
                r.processes_attached, r.processes_followed, r.processes_gone
            )?;
        }
        for p in &r.process_cpu {
            writeln!(self.out, "{}", process_cpu_line(p))?;
        }
        for (k, n) in r.kernel_drops.iter().filter(|(_, n)| **n > 0) {
            writeln!(self.out, "   lost {n} {k} records (ring buffer full: try a larger --ring-size)")?;
        }
        if r.missed_switch_ins > 0 {
            writeln!(self.out, "   {} switch-ins of traced threads were not seen (another BPF tracer attaching?): those off-CPU intervals end at the next sign of life", r.missed_switch_ins)?;
        }
        if r.stacks_lost > 0 {
            writeln!(self.out, "   {} blocking stacks lost (stack map full or collision)", r.stacks_lost)?;
        }
        for w in &r.warnings {
            writeln!(self.out, "   warning: {}", escape(w))?;
        }
        writeln!(self.out, "-- stopped: {}", r.stop_reason)?;
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Syscalls listed by name in a process's line; the rest are summed.
const SYSCALLS_LISTED: usize = 4;

/// `   pid N: cpu 12.3 ms in 456 slices, tasks 4.1 ms (33%), not attributed 8.2 ms; outside tasks 120 syscalls: ...`
fn process_cpu_line(p: &ProcessCpu) -> String {
    let n = &p.not_attributed;
    let share = p.tasks_share.map(|s| format!(" ({:.0}%)", s * 100.0)).unwrap_or_default();
    let mut line = format!(
        "   pid {}: cpu {} ms in {} slices, tasks {} ms{share}, not attributed {} ms",
        p.pid,
        ms(p.cpu_ns),
        p.slices,
        ms(p.tasks_cpu_ns),
        ms(n.cpu_ns)
    );
    if p.unseen_start_slices > 0 {
        line.push_str(&format!(" (+{} ms in {} slices begun before tprof saw them)", ms(p.unseen_start_ns), p.unseen_start_slices));
    }
    if n.syscall_count > 0 {
        let listed: Vec<String> = n
            .syscalls
            .iter()
            .take(SYSCALLS_LISTED)
            .map(|s| format!("{} {}x {} ms", escape(&s.name), s.count, ms(s.total_ns)))
            .collect();
        let more = n.syscalls.len().saturating_sub(SYSCALLS_LISTED);
        let more = if more > 0 { format!(", {more} more") } else { String::new() };
        line.push_str(&format!("; outside tasks {} syscalls: {}{more}", n.syscall_count, listed.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use profiler_common::Agg;

    use super::{Sink, TextSink};
    use crate::model::event::{Meta, Record, TaskKey};
    use crate::model::ledger::TaskState;

    fn meta(task: TaskKey, ts_ns: u64, tid: u32) -> Meta {
        Meta { cpu: 0, ts_ns, pid: 7, tid, task }
    }

    #[test]
    fn a_streamed_responses_attach_detach_churn_prints_as_one_line() {
        let key = TaskKey { trace_id: 1, span_id: 2 };
        let mut t = TaskState { key, name: "GET /files/{name}".into(), pid: 7, ..Default::default() };
        let mut out = Vec::new();
        let mut sink = TextSink::new(&mut out, 0);
        let begin = Record::TaskBegin { meta: meta(key, 1, 10), parent_span_id: 0, name: t.name.clone(), name_flags: 0, untracked: false };
        sink.event(&begin, &t).expect("write");
        // A 1 MiB download in 4 KiB chunks: the body attaches its task around every chunk,
        // and the kernel sums each visit's short intervals (an AGG record at each detach).
        let sums = Agg { oncpu_ns: 2_000, slices: 1, syscalls: 1, ..Default::default() };
        for chunk in 0..256u64 {
            let ts = 100 + chunk * 10;
            let tid = 10 + (chunk % 2) as u32;
            sink.event(&Record::TaskAttach { meta: meta(key, ts, tid), parent_span_id: 0, untracked: false }, &t).expect("write");
            sink.event(&Record::Agg { meta: meta(key, ts + 5, tid), sums }, &t).expect("write");
            sink.event(&Record::TaskDetach { meta: meta(key, ts + 6, tid) }, &t).expect("write");
        }
        // A long syscall breaks the run; then more churn and the end.
        let long = Record::Syscall { meta: meta(key, 5_000, 10), nr: 1, start_ns: 4_000, ret: 4096 };
        sink.event(&long, &t).expect("write");
        sink.event(&Record::TaskAttach { meta: meta(key, 6_000, 11), parent_span_id: 0, untracked: false }, &t).expect("write");
        sink.event(&Record::TaskEnd { meta: meta(key, 6_100, 11), dropped: 0 }, &t).expect("write");
        (t.begin_ns, t.end_ns, t.summed) = (Some(1), Some(6_100), 512);
        sink.summary(&t).expect("write");
        drop(sink);
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() <= 8, "{text}");
        assert!(lines[1].contains("256 attaches, 256 detaches") && lines[1].contains("on-cpu 0.512 ms in 256 slices"), "{text}");
        assert!(lines[1].contains("7/2 tids"), "two threads: {text}");
        assert!(lines[3].ends_with("attach (thread resumes the task)"), "{text}");
        assert!(lines[4].ends_with("task end"), "{text}");
        assert!(text.contains("512 short intervals summed in the kernel (in the totals and the \"summed short intervals\" lines above)"), "{text}");
    }

    #[test]
    fn summed_intervals_not_streamed_are_said_to_be_not_listed() {
        let key = TaskKey { trace_id: 1, span_id: 3 };
        let t = TaskState { key, name: "x".into(), begin_ns: Some(1), end_ns: Some(2), summed: 3, ..Default::default() };
        let mut out = Vec::new();
        TextSink::new(&mut out, 0).summary(&t).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("3 short intervals summed in the kernel (in the totals, not listed)"), "{text}");
    }
}
