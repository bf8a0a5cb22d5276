//! Per traced process: its CPU time as the kernel accounted it, the share its tasks got,
//! and what its threads did outside any task ("not attributed": CPU time and syscalls,
//! summed in the kernel; see `profiler_common::unattr` for how a slice is split).
//!
//! The kernel's figures are read at the end of a session (and when a process exits)
//! into [`ProcessCpu`] entries without their task figures; the tasks' CPU is counted from
//! the task summaries as they pass; [`build`] puts both together for the report.

use std::collections::BTreeMap;

use profiler_common::unattr::{UnattrCpu, UnattrSys};
use serde::{Deserialize, Serialize};


/// One process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessCpu {
    pub pid: u32,
    /// The kernel's runtime of the process's on-CPU slices tprof saw begin and end (every
    /// thread, with or without a task).
    pub cpu_ns: u64,
    /// Those slices.
    pub slices: u64,
    /// Slices whose switch-in tprof did not see (they began before the session, or the
    /// event was lost), and their runtime: not split between tasks and the rest, and not
    /// in `cpu_ns` (part of it may precede the session).
    pub unseen_start_slices: u64,
    pub unseen_start_ns: u64,
    /// On-CPU time of the process's tasks, summed from their summaries.
    pub tasks_cpu_ns: u64,
    /// `tasks_cpu_ns / cpu_ns` (absent when `cpu_ns` is 0).
    pub tasks_share: Option<f64>,
    pub not_attributed: NotAttributed,
}

/// What the process's threads did while they carried no task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotAttributed {
    /// CPU time outside any task: each slice's kernel runtime less what tprof charged to
    /// tasks in it.
    pub cpu_ns: u64,
    /// Task pieces longer than their slice's kernel runtime, summed (clock differences or
    /// lost switch events: those slices count zero here).
    pub excess_task_ns: u64,
    /// Syscalls made outside any task (all numbers together).
    pub syscall_count: u64,
    /// By syscall, the longest total first.
    pub syscalls: Vec<SyscallSum>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyscallSum {
    pub name: String,
    pub nr: u32,
    pub count: u64,
    pub errors: u64,
    /// Entry to exit, blocked time included.
    pub total_ns: u64,
}

impl ProcessCpu {
    /// The kernel's figures of `pid`: its slices summed over CPUs, its syscalls by number.
    pub fn from_kernel<'a>(pid: u32, cpus: impl IntoIterator<Item = &'a UnattrCpu>, sys: &BTreeMap<u32, UnattrSys>) -> ProcessCpu {
        let mut c = UnattrCpu::default();
        for v in cpus {
            c.merge(v);
        }
        let mut syscalls: Vec<SyscallSum> = sys
            .iter()
            .map(|(nr, s)| SyscallSum {
                name: crate::syscall_names::name(*nr).map(str::to_string).unwrap_or_else(|| format!("syscall_{nr}")),
                nr: *nr,
                count: s.count,
                errors: s.errors,
                total_ns: s.total_ns,
            })
            .collect();
        syscalls.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.nr.cmp(&b.nr)));
        ProcessCpu {
            pid,
            cpu_ns: c.cpu_ns,
            slices: u64::from(c.slices),
            unseen_start_slices: u64::from(c.unseen_slices),
            unseen_start_ns: c.unseen_ns,
            not_attributed: NotAttributed {
                cpu_ns: c.unattributed_ns,
                excess_task_ns: c.over_ns,
                syscall_count: syscalls.iter().map(|s| s.count).sum(),
                syscalls,
            },
            ..ProcessCpu::default()
        }
    }

    /// Adds a later read of the same process (its figures since the last read).
    pub fn merge(&mut self, o: &ProcessCpu) {
        self.cpu_ns += o.cpu_ns;
        self.slices += o.slices;
        self.unseen_start_slices += o.unseen_start_slices;
        self.unseen_start_ns += o.unseen_start_ns;
        let (n, m) = (&mut self.not_attributed, &o.not_attributed);
        n.cpu_ns += m.cpu_ns;
        n.excess_task_ns += m.excess_task_ns;
        n.syscall_count += m.syscall_count;
        for s in &m.syscalls {
            match n.syscalls.iter_mut().find(|t| t.nr == s.nr) {
                Some(t) => {
                    t.count += s.count;
                    t.errors += s.errors;
                    t.total_ns += s.total_ns;
                }
                None => n.syscalls.push(s.clone()),
            }
        }
        n.syscalls.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.nr.cmp(&b.nr)));
    }

    /// The kernel's figures only (what a replay starts from: it counts the tasks again).
    pub fn kernel_only(mut self) -> ProcessCpu {
        self.tasks_cpu_ns = 0;
        self.tasks_share = None;
        self
    }
}

/// The report's per-process list: the kernel's figures with the tasks' CPU beside them,
/// by pid. A process with tasks but no kernel figures (the kernel side could not count
/// it) is listed with its tasks only.
pub fn build(kernel: &BTreeMap<u32, ProcessCpu>, tasks_cpu: &BTreeMap<u32, u64>) -> Vec<ProcessCpu> {
    let mut out: BTreeMap<u32, ProcessCpu> = kernel.clone();
    for (pid, ns) in tasks_cpu {
        out.entry(*pid).or_insert_with(|| ProcessCpu { pid: *pid, ..ProcessCpu::default() }).tasks_cpu_ns = *ns;
    }
    for p in out.values_mut() {
        p.tasks_share = (p.cpu_ns > 0).then(|| p.tasks_cpu_ns as f64 / p.cpu_ns as f64);
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(count: u64, total_ns: u64) -> UnattrSys {
        UnattrSys { count, errors: count / 2, total_ns }
    }

    #[test]
    fn kernel_figures_sum_over_cpus_and_reads_and_meet_the_tasks() {
        // Two CPUs: a worker's slice of 1 ms with 600 us of task polls, a blocking-pool
        // thread's 400 us without a task, one slice begun before the session.
        let mut cpu0 = UnattrCpu::default();
        cpu0.add_slice(1_000_000, 600_000);
        let mut cpu1 = UnattrCpu::default();
        cpu1.add_slice(400_000, 0);
        cpu1.add_unseen(70_000);
        let s = BTreeMap::from([(0, sys(3, 900)), (232, sys(10, 50_000)), (9999, sys(1, 5))]);
        let first = ProcessCpu::from_kernel(7, [&cpu0, &cpu1], &s);
        assert_eq!((first.cpu_ns, first.slices, first.not_attributed.cpu_ns), (1_400_000, 2, 800_000));
        assert_eq!((first.unseen_start_slices, first.unseen_start_ns), (1, 70_000));
        let names: Vec<&str> = first.not_attributed.syscalls.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["epoll_wait", "read", "syscall_9999"], "longest total first");
        assert_eq!(first.not_attributed.syscall_count, 14);

        // A second read (the process exited; then the end of the session).
        let mut later = UnattrCpu::default();
        later.add_slice(100_000, 100_000);
        let second = ProcessCpu::from_kernel(7, [&later], &BTreeMap::from([(0, sys(1, 100))]));
        let mut both = first.clone();
        both.merge(&second);
        assert_eq!((both.cpu_ns, both.slices, both.not_attributed.cpu_ns), (1_500_000, 3, 800_000));
        let read = both.not_attributed.syscalls.iter().find(|s| s.nr == 0).expect("read");
        assert_eq!((read.count, read.total_ns, both.not_attributed.syscall_count), (4, 1_000, 15));

        // The tasks' summaries charged 700 us to pid 7; pid 8 had tasks but no kernel figures.
        let kernel = BTreeMap::from([(7, both.kernel_only())]);
        let list = build(&kernel, &BTreeMap::from([(7, 700_000), (8, 5)]));
        assert_eq!(list.iter().map(|p| p.pid).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(list[0].tasks_cpu_ns, 700_000);
        assert_eq!(list[0].tasks_share, Some(700_000.0 / 1_500_000.0));
        // Tasks plus the rest make the process's CPU: 700 + 800 = 1500 us.
        assert_eq!(list[0].tasks_cpu_ns + list[0].not_attributed.cpu_ns, list[0].cpu_ns);
        assert_eq!((list[1].tasks_share, list[1].tasks_cpu_ns), (None, 5));
    }

    #[test]
    fn a_recorded_entry_reads_back() {
        let mut c = UnattrCpu::default();
        c.add_slice(10, 4);
        let mut p = ProcessCpu::from_kernel(1, [&c], &BTreeMap::from([(1, sys(2, 3))]));
        p.tasks_cpu_ns = 4;
        p.tasks_share = Some(0.4);
        let back: ProcessCpu = serde_json::from_str(&serde_json::to_string(&p).expect("serializes")).expect("reads");
        assert_eq!(back, p);
        assert_eq!(back.kernel_only().tasks_share, None);
    }
}
