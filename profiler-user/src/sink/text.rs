//! The human stream: events indented under their request, one summary block per request,
//! and a session footer with what was lost.

use std::io::{self, Write};

use super::Sink;
use crate::model::event::{agg_syscalls, Record, Waker};
use crate::model::ledger::TaskState;
use crate::model::report::SessionReport;
use crate::present::{describe_waker, escape, ms, syscall_name};

pub struct TextSink<W: Write> {
    out: W,
    /// Timestamps print relative to this (CLOCK_MONOTONIC ns).
    base_ns: u64,
}

impl<W: Write> TextSink<W> {
    /// Times are shown in ms since `base_ns` (CLOCK_MONOTONIC); 0: since the first event
    /// shown (a report, whose clock is the recording machine's).
    pub fn new(out: W, base_ns: u64) -> Self {
        TextSink { out, base_ns }
    }

    fn rel(&self, ts: u64) -> String {
        format!("{:>10}", ms(ts.saturating_sub(self.base_ns)))
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
        Record::OnCpu { meta, start_ns } => format!("on-cpu {} ms", ms(meta.ts_ns.saturating_sub(*start_ns))),
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
        let m = rec.meta();
        if self.base_ns == 0 {
            self.base_ns = m.ts_ns;
        }
        writeln!(self.out, "{} {} {:>7}/{:<7} {}", self.rel(m.ts_ns), short(task), m.pid, m.tid, describe(rec))
    }

    fn summary(&mut self, t: &TaskState) -> io::Result<()> {
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
        if t.summed > 0 {
            writeln!(self.out, "   {} short intervals summed in the kernel (in the totals, not listed)", t.summed)?;
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
        for (k, n) in r.kernel_drops.iter().filter(|(_, n)| **n > 0) {
            writeln!(self.out, "   lost {n} {k} records (ring buffer full: try a larger --ring-size)")?;
        }
        if r.missed_switch_ins > 0 {
            writeln!(self.out, "   {} switch-ins of traced threads were not seen (another BPF tracer attaching?): those off-CPU intervals end at the next sign of life", r.missed_switch_ins)?;
        }
        if r.stacks_lost > 0 {
            writeln!(self.out, "   {} blocking stacks lost (stack map full or collision)", r.stacks_lost)?;
        }
        if r.correlator.tasks_over_limit > 0 {
            writeln!(self.out, "   {} records of tasks over the open-task limit ignored", r.correlator.tasks_over_limit)?;
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
