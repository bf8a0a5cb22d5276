//! Ledger arithmetic on hand-built record sequences whose truth is known.

use super::*;
use crate::model::event::{Meta, Record, StackIds, TaskKey, Waker, OTHER_SYSCALLS};

const KEY: TaskKey = TaskKey { trace_id: 0xabc, span_id: 0x1 };

fn meta(ts_ns: u64, tid: u32) -> Meta {
    Meta { cpu: 0, ts_ns, pid: 100, tid, task: KEY }
}

fn run(records: &[Record]) -> (Vec<TaskState>, usize) {
    let mut c = Correlator::new();
    let mut summaries = Vec::new();
    let mut events = 0;
    for r in records {
        c.push(r, &mut |o| match o {
            Output::Event(..) => events += 1,
            Output::Summary(t) => summaries.push(t.clone()),
        });
    }
    c.finish(&mut |o| {
        if let Output::Summary(t) = o {
            summaries.push(t.clone())
        }
    });
    (summaries, events)
}

#[test]
fn sleep_spin_and_wait_add_up_to_wall() {
    let ms = 1_000_000;
    let recs = [
        Record::TaskBegin { meta: meta(0, 7), parent_span_id: 0, name: "req".into(), name_flags: 0, untracked: false },
        Record::OnCpu { meta: meta(2 * ms, 7), start_ns: 0, steal_ns: 0 },
        // 20 ms asleep in nanosleep (35), woken by the kernel, 1 ms in the run queue.
        Record::OffCpu { meta: meta(23 * ms, 7), start_ns: 2 * ms, runnable_ns: Some(22 * ms), state: 1, syscall_nr: Some(35), waker: Waker::Kernel, stacks: Default::default(), end_inferred: false },
        Record::Syscall { meta: meta(23 * ms + 10, 7), nr: 35, start_ns: 2 * ms - 10, ret: 0 },
        Record::OnCpu { meta: meta(30 * ms, 7), start_ns: 23 * ms, steal_ns: 0 },
        // Preempted for 2 ms: all run queue.
        Record::OffCpu { meta: meta(32 * ms, 7), start_ns: 30 * ms, runnable_ns: Some(30 * ms), state: 0, syscall_nr: None, waker: Waker::Preempted, stacks: Default::default(), end_inferred: false },
        Record::OnCpu { meta: meta(33 * ms, 7), start_ns: 32 * ms, steal_ns: 0 },
        Record::TaskEnd { meta: meta(33 * ms, 7), dropped: 0 },
    ];
    let (s, events) = run(&recs);
    assert_eq!(events, recs.len());
    assert_eq!(s.len(), 1);
    let t = &s[0];
    assert_eq!(&*t.name, "req");
    assert_eq!(t.wall_ns(), Some(33 * ms));
    assert_eq!(t.on_cpu_ns, 10 * ms);
    assert_eq!(t.blocked_ns, 20 * ms);
    assert_eq!(t.runq_ns, 3 * ms);
    assert_eq!(t.unscheduled_ns(), Some(0));
    assert_eq!(t.blocked_in_syscall.get(&35), Some(&(20 * ms)));
    assert_eq!(t.syscalls.get(&35).map(|s| s.count), Some(1));
    assert_eq!(t.blocks.len(), 1);
    assert_eq!(t.blocks[0].waker, Waker::Kernel);
    assert!(t.incomplete().is_none());
}

#[test]
fn regions_nest_and_close_at_task_end() {
    let recs = [
        Record::TaskBegin { meta: meta(0, 7), parent_span_id: 0, name: "req".into(), name_flags: 0, untracked: false },
        Record::RegionBegin { meta: meta(10, 7), name: "a".into(), name_flags: 0 },
        Record::RegionBegin { meta: meta(20, 7), name: "b".into(), name_flags: 0 },
        Record::RegionEnd { meta: meta(30, 7), name: "b".into(), name_flags: 0 },
        Record::TaskEnd { meta: meta(50, 7), dropped: 2 },
    ];
    let (s, _) = run(&recs);
    let t = &s[0];
    assert_eq!(t.regions.len(), 2);
    assert_eq!((t.regions[0].depth, t.regions[0].end_ns), (0, Some(50)), "open region closes at task end");
    assert_eq!((t.regions[1].depth, t.regions[1].end_ns), (1, Some(30)));
    assert_eq!(t.incomplete().as_deref(), Some("2 kernel records lost (ring buffer full)"));
}

#[test]
fn task_seen_without_begin_or_end_is_incomplete() {
    let recs = [Record::OnCpu { meta: meta(100, 7), start_ns: 50, steal_ns: 0 }];
    let (s, _) = run(&recs);
    assert_eq!(s.len(), 1);
    let why = s[0].incomplete().unwrap_or_default();
    assert!(why.contains("began before attach") && why.contains("did not end"), "{why}");
}

#[test]
fn caps_bound_memory() {
    let mut recs = vec![Record::TaskBegin { meta: meta(0, 7), parent_span_id: 0, name: "req".into(), name_flags: 0, untracked: false }];
    for i in 0..(MAX_REGIONS + 10) as u64 {
        recs.push(Record::RegionBegin { meta: meta(i, 7), name: "r".into(), name_flags: 0 });
    }
    for i in 0..(MAX_LOGS + 5) as u64 {
        recs.push(Record::Log { meta: meta(i, 7), key: "k".into(), value: "v".into(), flags: 0 });
    }
    let (s, _) = run(&recs);
    assert_eq!(s[0].regions.len(), MAX_REGIONS);
    assert_eq!(s[0].logs.len(), MAX_LOGS);
    assert_eq!(s[0].truncated, 15);
}

#[test]
fn longest_blocks_are_kept_in_order() {
    let mut recs = vec![Record::TaskBegin { meta: meta(0, 7), parent_span_id: 0, name: "req".into(), name_flags: 0, untracked: false }];
    for (i, d) in [5u64, 50, 1, 20, 30].iter().enumerate() {
        let start = i as u64 * 1000;
        recs.push(Record::OffCpu { meta: meta(start + d, 7), start_ns: start, runnable_ns: None, state: 1, syscall_nr: None, waker: Waker::Unknown, stacks: Default::default(), end_inferred: false });
    }
    let (s, _) = run(&recs);
    let kept: Vec<u64> = s[0].blocks.iter().map(|b| b.blocked_ns).collect();
    assert_eq!(kept, [50, 30, 20]);
}

#[test]
fn wakeup_chain_follows_the_wakers_own_blocks() {
    // A waits 10 ms on a futex; B's thread wakes it at t=12. B itself had been blocked in
    // read (0) from t=3 to t=11, woken by a thread of task C. A's block names B, charges the
    // wait to B, and its chain shows B's read, woken by C.
    let ms = 1_000_000;
    let key = |span| TaskKey { trace_id: 0xabc, span_id: span };
    let m = |ts, tid, span| Meta { cpu: 0, ts_ns: ts, pid: 100, tid, task: key(span) };
    let thread = |tid, span| Waker::Thread { pid: 100, tid, comm: "w".into(), task: Some(key(span)), via_softirq: false };
    let recs = [
        Record::TaskBegin { meta: m(0, 7, 1), parent_span_id: 0, name: "A".into(), name_flags: 0, untracked: false },
        Record::TaskBegin { meta: m(0, 8, 2), parent_span_id: 0, name: "B".into(), name_flags: 0, untracked: false },
        Record::OffCpu { meta: m(11 * ms, 8, 2), start_ns: 3 * ms, runnable_ns: Some(11 * ms), state: 1, syscall_nr: Some(0), waker: thread(9, 3), stacks: Default::default(), end_inferred: false },
        Record::OffCpu { meta: m(12 * ms, 7, 1), start_ns: 2 * ms, runnable_ns: Some(12 * ms), state: 1, syscall_nr: Some(202), waker: thread(8, 2), stacks: Default::default(), end_inferred: false },
        Record::TaskEnd { meta: m(13 * ms, 7, 1), dropped: 0 },
    ];
    let (s, _) = run(&recs);
    let a = s.iter().find(|t| &*t.name == "A").expect("A ended");
    let b = &a.blocks[0];
    assert_eq!(b.waker_task_name.as_deref(), Some("B"));
    assert_eq!(a.waited_on, vec![(key(2), Some("B".to_string()), 10 * ms)]);
    assert_eq!(b.chain.len(), 1, "{:?}", b.chain);
    assert_eq!((b.chain[0].task, b.chain[0].blocked_ns, b.chain[0].syscall_nr), (key(2), 8 * ms, Some(0)));
    assert_eq!(b.chain[0].waker, thread(9, 3));
}

#[test]
fn unrelated_earlier_block_is_not_a_chain_link() {
    // B's last block ended before A started waiting: it is not why A waited.
    let ms = 1_000_000;
    let key = |span| TaskKey { trace_id: 0xabc, span_id: span };
    let m = |ts, tid, span| Meta { cpu: 0, ts_ns: ts, pid: 100, tid, task: key(span) };
    let thread = |tid, span| Waker::Thread { pid: 100, tid, comm: "w".into(), task: Some(key(span)), via_softirq: false };
    let recs = [
        Record::OffCpu { meta: m(2 * ms, 8, 2), start_ns: ms, runnable_ns: Some(2 * ms), state: 1, syscall_nr: Some(0), waker: Waker::Kernel, stacks: Default::default(), end_inferred: false },
        Record::OffCpu { meta: m(12 * ms, 7, 1), start_ns: 5 * ms, runnable_ns: Some(12 * ms), state: 1, syscall_nr: Some(202), waker: thread(8, 2), stacks: Default::default(), end_inferred: false },
    ];
    let (s, _) = run(&recs);
    let a = s.iter().find(|t| t.key == key(1)).expect("A");
    assert!(a.blocks[0].chain.is_empty(), "{:?}", a.blocks[0].chain);
}

fn sums(oncpu_ns: u64, blocked_ns: u64, runq_ns: u64, sys: &[(u32, u32, u64, u64)]) -> profiler_common::Agg {
    use profiler_common::{Agg, AggSyscall, AGG_OTHER_NR, AGG_SYSCALLS};
    let mut s = Agg { oncpu_ns, blocked_ns, runq_ns, slices: 3, offcpu: 2, ..Default::default() };
    s.sys = [AggSyscall { nr: -1, ..Default::default() }; AGG_SYSCALLS];
    for (i, (nr, count, total_ns, blocked)) in sys.iter().enumerate() {
        let nr = if *nr == OTHER_SYSCALLS { AGG_OTHER_NR } else { *nr as i32 };
        s.sys[i] = AggSyscall { nr, count: *count, errors: 1, total_ns: *total_ns, blocked_ns: *blocked, _pad: 0 };
        s.syscalls += count;
    }
    s
}

#[test]
fn kernel_sums_add_to_the_streamed_intervals() {
    let us = 1_000;
    let other = OTHER_SYSCALLS;
    let recs = [
        Record::TaskBegin { meta: meta(0, 7), parent_span_id: 0, name: "req".into(), name_flags: 0, untracked: false },
        // One long syscall streamed, then the kernel's sums of the short intervals of two
        // threads (each sends its own when it leaves the task).
        Record::Syscall { meta: meta(500 * us, 7), nr: 0, start_ns: 100 * us, ret: 10 },
        Record::Agg { meta: meta(900 * us, 8), sums: sums(40 * us, 30 * us, 5 * us, &[(0, 4, 20 * us, 10 * us), (other, 2, 6 * us, 0)]) },
        Record::Agg { meta: meta(1000 * us, 7), sums: sums(60 * us, 0, 7 * us, &[(0, 1, 3 * us, 0)]) },
        Record::TaskEnd { meta: meta(1000 * us, 7), dropped: 0 },
    ];
    let (s, events) = run(&recs);
    assert_eq!(events, recs.len(), "sums are events of the task");
    let t = &s[0];
    assert_eq!(t.on_cpu_ns, 100 * us);
    assert_eq!(t.blocked_ns, 30 * us);
    assert_eq!(t.runq_ns, 12 * us);
    assert_eq!(t.summed, 2 * 5 + 6 + 1, "slices + off-cpu intervals + syscalls of both records");
    let read = t.syscalls.get(&0).expect("read");
    assert_eq!((read.count, read.total_ns, read.errors), (1 + 4 + 1, 400 * us + 20 * us + 3 * us, 2));
    assert_eq!(t.syscalls.get(&other).map(|s| s.count), Some(2));
    assert_eq!(t.blocked_in_syscall.get(&0), Some(&(10 * us)));
    assert!(t.blocks.is_empty(), "summed intervals are not listed as blocks");
    assert_eq!(t.threads, vec![7, 8]);
}

#[test]
fn deferred_stacks_join_their_block() {
    let ms = 1_000_000;
    let pending = StackIds { kernel: None, user: None, user_pending: true };
    let recs = [
        Record::TaskBegin { meta: meta(0, 7), parent_span_id: 0, name: "req".into(), name_flags: 0, untracked: false },
        Record::OffCpu { meta: meta(12 * ms, 7), start_ns: ms, runnable_ns: Some(11 * ms), state: 1, syscall_nr: Some(202), waker: Waker::Kernel, stacks: pending, end_inferred: false },
        Record::KStack { meta: meta(12 * ms, 7), start_ns: ms, frames: vec![0xffff1, 0xffff2] },
        // A KSTACK of an interval not in the ledger, and stacks of a task never seen: ignored.
        Record::KStack { meta: meta(12 * ms, 7), start_ns: 5, frames: vec![0xdead] },
        Record::UStack { meta: Meta { task: TaskKey { trace_id: 9, span_id: 9 }, ..meta(12 * ms, 7) }, id: Some(1) },
        Record::UStack { meta: meta(12 * ms + 5, 7), id: Some(42) },
        Record::TaskEnd { meta: meta(13 * ms, 7), dropped: 0 },
    ];
    let (s, events) = run(&recs);
    assert_eq!(s.len(), 1, "stack records create no task");
    assert_eq!(events, 3, "stack records are not events");
    let b = &s[0].blocks[0];
    assert_eq!(b.kernel_addrs, vec![0xffff1, 0xffff2]);
    assert_eq!((b.stack_ids.user, b.stack_ids.user_pending), (Some(42), false));
}

#[test]
fn steal_is_apart_from_on_cpu() {
    // A 10 ms slice of which the hypervisor stole 3 ms, and summed slices with 1 ms stolen:
    // the task ran 7 + 4 ms, and its wall time still tiles.
    let ms = 1_000_000;
    let mut agg = sums(4 * ms, 0, 0, &[]);
    agg.steal_ns = ms;
    let recs = [
        Record::TaskBegin { meta: meta(0, 7), parent_span_id: 0, name: "t".into(), name_flags: 0, untracked: false },
        Record::OnCpu { meta: meta(10 * ms, 7), start_ns: 0, steal_ns: 3 * ms },
        Record::Agg { meta: meta(15 * ms, 7), sums: agg },
        Record::TaskEnd { meta: meta(15 * ms, 7), dropped: 0 },
    ];
    let (s, _) = run(&recs);
    let t = &s[0];
    assert_eq!((t.on_cpu_ns, t.steal_ns), (11 * ms, 4 * ms));
    assert_eq!(t.unscheduled_ns(), Some(0), "wall = on-cpu + steal + ...");
}

fn begin(span_id: u64, ts_ns: u64) -> Record {
    let m = Meta { cpu: 0, ts_ns, pid: 100, tid: 7, task: TaskKey { trace_id: 0xabc, span_id } };
    Record::TaskBegin { meta: m, parent_span_id: 0, name: "leak".into(), name_flags: 0, untracked: false }
}

#[test]
fn a_full_task_table_evicts_the_idlest_and_keeps_tracing_new_tasks() {
    let mut c = Correlator::with_limits(10, 3);
    let mut evicted = Vec::new();
    let mut collect = |o: Output<'_>| {
        if let Output::Summary(t) = o {
            evicted.push((t.key.span_id, t.evicted, t.incomplete()));
        }
    };
    for span in 1..=10 {
        c.push(&begin(span, span), &mut collect);
    }
    // Task 1 is busy again: task 2, 3 and 4 are now the idlest.
    c.push(&Record::OnCpu { meta: Meta { cpu: 0, ts_ns: 20, pid: 100, tid: 7, task: TaskKey { trace_id: 0xabc, span_id: 1 } }, start_ns: 11, steal_ns: 0 }, &mut collect);
    c.push(&begin(11, 21), &mut collect);
    assert_eq!(evicted.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3, 4], "idle longest first");
    assert!(evicted.iter().all(|e| e.1 && e.2.as_deref().is_some_and(|w| w.contains("evicted"))), "{evicted:?}");
    assert_eq!(c.stats.tasks_evicted, 3);
    assert_eq!(c.open_tasks(), 8, "the new task is traced");
    // A record of an evicted task opens a ledger that says so.
    let end = Record::TaskEnd { meta: Meta { cpu: 0, ts_ns: 30, pid: 100, tid: 7, task: TaskKey { trace_id: 0xabc, span_id: 3 } }, dropped: 0 };
    let mut back = Vec::new();
    c.push(&end, &mut |o| {
        if let Output::Summary(t) = o {
            back.push(t.incomplete().unwrap_or_default());
        }
    });
    assert!(back.len() == 1 && back[0].contains("evicted"), "{back:?}");
}

#[test]
fn a_task_nested_beyond_the_kernel_stack_is_flagged() {
    let recs = [
        Record::TaskBegin { meta: meta(0, 7), parent_span_id: 0, name: "deep".into(), name_flags: 0, untracked: true },
        Record::TaskEnd { meta: meta(10, 7), dropped: 0 },
    ];
    let (s, _) = run(&recs);
    assert!(s[0].untracked);
    assert!(s[0].incomplete().is_some_and(|w| w.contains("nested deeper than 4 tasks")), "{:?}", s[0].incomplete());
}

#[test]
fn an_all_zero_trace_id_is_flagged_and_counted() {
    let zero = |ts_ns| Meta { cpu: 0, ts_ns, pid: 100, tid: 7, task: TaskKey { trace_id: 0, span_id: 5 } };
    let mut c = Correlator::new();
    let mut why = Vec::new();
    for r in [Record::TaskBegin { meta: zero(0), parent_span_id: 0, name: "z".into(), name_flags: 0, untracked: false }, Record::TaskEnd { meta: zero(5), dropped: 0 }] {
        c.push(&r, &mut |o| {
            if let Output::Summary(t) = o {
                why.push(t.incomplete());
            }
        });
    }
    assert_eq!(c.stats.zero_trace_id_tasks, 1);
    assert!(why.len() == 1 && why[0].as_deref().is_some_and(|w| w.contains("all-zero trace-id")), "{why:?}");
}
