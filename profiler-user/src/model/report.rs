//! The session's report: the figures of a whole session that the sinks print at its end
//! and a recording keeps. One type, written and read by serde: `tprof record` stores it
//! as is, `tprof report` reads it back, and the NDJSON sink writes it as its `session`
//! line (`profiler-user/OUTPUT.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ledger::CorrelatorStats;
use super::stats::Stats;
use super::unattributed::{self, ProcessCpu};

/// Session-wide figures for the final report. Fields a recording made by an older tprof
/// lacks read as their defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionReport {
    /// The `--pid`s.
    pub pids: Vec<u32>,
    /// Processes traced from the start or found later (in the cgroup, mapping the binary).
    pub processes_attached: u64,
    /// Children forked by traced processes and followed.
    pub processes_followed: u64,
    /// Traced processes that exited.
    pub processes_gone: u64,
    pub sites: usize,
    /// How the probe sites were attached: `uprobe_multi` (one link per file and program)
    /// or `perf_event` (one uprobe perf event per site, on kernels before 6.6).
    pub probe_links: String,
    pub duration_ns: u64,
    pub records: u64,
    /// Records the decoder rejected (short or unknown kind).
    pub undecodable: u64,
    /// Records lost in the kernel (ring buffer full), by kind name.
    pub kernel_drops: BTreeMap<String, u64>,
    /// Switch-ins of task-carrying threads the scheduler programs did not see (those
    /// off-CPU intervals end at the thread's next sign of life, flagged `end_inferred`).
    pub missed_switch_ins: u64,
    /// Blocking stacks that could not be stored or read back.
    pub stacks_lost: u64,
    /// Records still queued in the kernel when the final drain ran out of time.
    pub undrained: u64,
    /// Per task type latency percentiles and average breakdown (all tasks seen): made
    /// again from the records when a recording is replayed, so not stored.
    #[serde(skip)]
    pub stats: Stats,
    /// What the correlator counted: made again on replay, like `stats`.
    #[serde(skip)]
    pub correlator: CorrelatorStats,
    /// Events held back by --min-latency and discarded (task was fast, or buffer full).
    pub filtered_events: u64,
    /// Tasks whose events held by --min-latency were discarded to stay within its memory
    /// budget (`ledger::MAX_HELD_BYTES`), longest held first.
    pub held_tasks_evicted: u64,
    /// On-CPU samples and off-CPU time by stack, per task type and process
    /// (`crate::profile`): made again when a recording is replayed, except the kernel's
    /// counts of the sampler, which only the live session knew.
    pub profile: crate::profile::ProfileReport,
    pub warnings: Vec<String>,
    /// Why the session stopped.
    pub stop_reason: String,
    /// Per traced process: its CPU, the share its tasks got, and what ran outside any task
    /// ([`unattributed::build`] of the two fields below, at the end).
    pub process_cpu: Vec<ProcessCpu>,
    /// The kernel's per-process figures, read when a process exits and at the end (a
    /// replay takes them from `process_cpu`).
    #[serde(skip)]
    pub kernel_cpu: BTreeMap<u32, ProcessCpu>,
    /// On-CPU time of the tasks by pid, from their summaries (counted again on replay).
    #[serde(skip)]
    pub tasks_cpu: BTreeMap<u32, u64>,
}

impl SessionReport {
    /// Warnings made from the figures the pipeline counts (so made again, not stored, when a
    /// recording is replayed).
    pub fn counted_warnings(&self) -> Vec<String> {
        let c = &self.correlator;
        let mut w = Vec::new();
        if c.tasks_evicted > 0 {
            w.push(format!(
                "{} open tasks evicted, idle longest first, to keep tracing new ones (over {} open at once: does the service miss task_end on some path?); they are reported incomplete",
                c.tasks_evicted,
                super::ledger::MAX_OPEN_TASKS
            ));
        }
        if c.zero_trace_id_tasks > 0 {
            w.push(format!("{} tasks have an all-zero trace-id, which the probes' ABI forbids (flagged incomplete)", c.zero_trace_id_tasks));
        }
        if self.held_tasks_evicted > 0 {
            w.push(format!(
                "--min-latency: the held events of {} tasks were discarded to stay within {} MiB (their summaries are still reported)",
                self.held_tasks_evicted,
                super::ledger::MAX_HELD_BYTES >> 20
            ));
        }
        w
    }

    /// Adds the kernel's figures of a process read now (since the last read of it).
    pub fn add_kernel_cpu(&mut self, p: ProcessCpu) {
        match self.kernel_cpu.get_mut(&p.pid) {
            Some(old) => old.merge(&p),
            None => {
                self.kernel_cpu.insert(p.pid, p);
            }
        }
    }

    /// Builds `process_cpu` from the kernel's figures and the tasks' (at the end, after
    /// the last summary).
    pub fn build_process_cpu(&mut self) {
        self.process_cpu = unattributed::build(&self.kernel_cpu, &self.tasks_cpu);
    }

    pub fn total_kernel_drops(&self) -> u64 {
        self.kernel_drops.values().sum::<u64>() + self.undrained
    }

    /// The report a replay of a recording starts from: what only the live session knew
    /// (targets, probe sites, the kernel's counters, warnings, why it stopped), without the
    /// figures the replay counts again.
    pub fn replayed(self) -> SessionReport {
        let kernel_cpu = self.process_cpu.iter().map(|p| (p.pid, p.clone().kernel_only())).collect();
        SessionReport {
            process_cpu: Vec::new(),
            kernel_cpu,
            tasks_cpu: BTreeMap::new(),
            records: 0,
            undecodable: 0,
            filtered_events: 0,
            held_tasks_evicted: 0,
            stats: Stats::default(),
            correlator: CorrelatorStats::default(),
            stop_reason: format!("recorded session ({})", self.stop_reason),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_report_reads_back_and_replays_what_only_the_live_session_knew() {
        let live = SessionReport {
            pids: vec![7, 8],
            sites: 12,
            probe_links: "uprobe_multi".into(),
            duration_ns: 5,
            records: 99,
            kernel_drops: [("off_cpu".to_string(), 3)].into(),
            missed_switch_ins: 1,
            stacks_lost: 2,
            undrained: 4,
            filtered_events: 6,
            warnings: vec!["w".into()],
            stop_reason: "interrupted (SIGINT)".into(),
            ..Default::default()
        };
        let text = serde_json::to_string(&live).expect("serializes");
        let back: SessionReport = serde_json::from_str(&text).expect("reads back");
        let r = back.replayed();
        assert_eq!((r.pids, r.sites, r.probe_links.as_str()), (vec![7, 8], 12, "uprobe_multi"));
        assert_eq!((r.duration_ns, r.missed_switch_ins, r.stacks_lost, r.undrained), (5, 1, 2, 4));
        assert_eq!(r.kernel_drops.get("off_cpu"), Some(&3));
        assert_eq!((r.records, r.filtered_events), (0, 0), "counted again by the replay");
        assert_eq!(r.stop_reason, "recorded session (interrupted (SIGINT))");
        assert_eq!(r.warnings, ["w"]);
    }

    #[test]
    fn an_older_recordings_report_reads_with_defaults() {
        let old = r#"{"pids":[1],"sites":2,"duration_ns":3,"kernel_drops":{"log":1},"missed_switch_ins":0,
                      "stacks_lost":0,"warnings":[],"stop_reason":"duration elapsed"}"#;
        let r: SessionReport = serde_json::from_str(old).expect("reads");
        assert_eq!((r.sites, r.total_kernel_drops(), r.probe_links.as_str()), (2, 1, ""));
    }
}
