//! The profiler without the kernel: attribution, holding summaries, the formats.

use super::*;
use crate::model::ledger::Block;
use crate::model::stack::Frame;
use crate::model::stats::Stats;
use crate::profile::{flamegraph, folded, pprof};

fn frame(name: &str) -> Frame {
    Frame { addr: name.len() as u64 * 16, func: Some(name.to_string()), file: Some("/src/x.rs".into()), line: Some(3) }
}

/// A stack with user frames `user` (innermost first) and kernel frames `kernel`.
fn stack(user: &[&str], kernel: &[&str]) -> Stack {
    Stack { kernel: kernel.iter().map(|n| frame(n)).collect(), user: user.iter().map(|n| frame(n)).collect(), user_truncated: false }
}

fn entry(span_id: u64, pid: u32, count: u64, s: Stack) -> SampleEntry {
    SampleEntry { trace_id: if span_id == 0 { 0 } else { 7 }, span_id, pid, count, stack: s }
}

fn task(span_id: u64, name: &str, wall: u64) -> TaskState {
    TaskState {
        key: TaskKey { trace_id: 7, span_id },
        name: name.into(),
        pid: 1,
        begin_ns: Some(1_000),
        end_ns: Some(1_000 + wall),
        ..Default::default()
    }
}

#[test]
fn a_summary_waits_two_drains_for_its_samples() {
    let mut p = Profiler::new(99);
    // Ended during the ring drain of poll N.
    p.defer(task(1, "a", 10));
    p.drained();
    // Poll N's sample drain read a map retired before the task may have ended.
    p.add_samples(vec![entry(1, 1, 2, stack(&["spin_a", "main"], &[]))]);
    assert!(p.ready().is_empty(), "held after one drain");
    // Poll N+1: the map retired after the task's end has been read.
    p.drained();
    p.add_samples(vec![entry(1, 1, 1, stack(&["spin_a", "main"], &[]))]);
    let mut ready = p.ready();
    assert_eq!(ready.len(), 1);
    p.attach(&mut ready[0]);
    assert_eq!(ready[0].cpu_samples, 3, "both drains' samples are its");
    assert_eq!(ready[0].top_stacks.len(), 1);
    assert_eq!(ready[0].top_stacks[0].1, 3);
}

#[test]
fn samples_at_two_addresses_of_one_function_are_one_stack() {
    let mut p = Profiler::new(99);
    let mut s1 = stack(&["spin_a", "main"], &[]);
    let mut s2 = s1.clone();
    s1.user[0].addr = 0x1000;
    s1.user[0].line = Some(10);
    s2.user[0].addr = 0x1008;
    s2.user[0].line = Some(11);
    let mut unknown = stack(&[], &[]);
    unknown.user.push(Frame { addr: 0x77, func: None, file: None, line: None });
    p.add_samples(vec![entry(1, 1, 1, s1), entry(1, 1, 2, s2), entry(1, 1, 1, unknown)]);
    let mut t = task(1, "a", 10);
    p.attach(&mut t);
    assert_eq!(t.top_stacks.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(t.top_stacks[1].0.user[0].name(), "0x77", "an unsymbolized frame keeps its address");
}

#[test]
fn samples_go_to_their_request_type_and_process() {
    let mut p = Profiler::new(1000);
    let a = stack(&["spin_a", "main"], &[]);
    let b = stack(&["spin_b", "main"], &["do_syscall_64"]);
    let idle = stack(&["epoll_wait", "main"], &["schedule"]);
    p.add_samples(vec![entry(1, 1, 5, a.clone()), entry(1, 1, 2, b.clone()), entry(2, 1, 4, b.clone()), entry(0, 9, 3, idle.clone()), entry(3, 1, 1, a.clone())]);
    let mut t1 = task(1, "A", 100);
    let mut t2 = task(2, "B", 100);
    // A block with a stack: the off-CPU profile of type A.
    t1.blocked_ns = 5_000;
    t1.blocks.push(Block {
        tid: 1,
        start_ns: 10,
        blocked_ns: 4_000,
        syscall_nr: None,
        waker: crate::model::event::Waker::Unknown,
        stack_ids: Default::default(),
        kernel_addrs: Vec::new(),
        stack: Some(stack(&["read_file", "main"], &["io_schedule"])),
        waker_task_name: None,
        chain: Vec::new(),
    });
    p.attach(&mut t1);
    p.attach(&mut t2);
    assert_eq!(t1.cpu_samples, 7);
    assert_eq!(t1.top_stacks.iter().map(|(s, n)| (s.clone(), *n)).collect::<Vec<_>>(), vec![(by_function(a.clone()), 5), (by_function(b.clone()), 2)], "most samples first");
    assert_eq!(t2.cpu_samples, 4);
    let mut r = ProfileReport::default();
    p.finish(&mut r);
    assert_eq!((r.samples, r.samples_in_tasks, r.samples_outside_tasks, r.samples_unknown_task), (15, 11, 3, 1));
    assert_eq!(r.task_types["A"].cpu_samples, 7);
    assert_eq!(r.task_types["A"].top_stacks[0].frames, ["spin_a (x.rs)", "main (x.rs)"], "grouped by function");
    assert_eq!((r.task_types["A"].blocked_ns, r.task_types["A"].off_cpu_stack_ns), (5_000, 4_000));
    assert_eq!(r.task_types["A"].off_cpu_top_stacks[0].kernel_frames, 1);
    assert_eq!(r.task_types["B"].top_stacks[0].frames[0], "do_syscall_64 (x.rs)", "kernel frames first");
    assert_eq!(r.processes[&9].samples, 3);
    assert_eq!(r.processes[&9].top_stacks[0].samples, 3);

    // Folded: type first, user frames outermost first, kernel frames last with _[k].
    let on = folded::on_cpu(&p);
    assert_eq!(on.get("A;main;spin_a"), Some(&5));
    assert_eq!(on.get("A;main;spin_b;do_syscall_64_[k]"), Some(&2));
    assert_eq!(on.get("[no task] pid 9;main;epoll_wait;schedule_[k]"), Some(&3));
    assert_eq!(on.get("[unknown task];main;spin_a"), Some(&1));
    assert_eq!(folded::off_cpu(&p).get("A;main;read_file;io_schedule_[k]"), Some(&4_000));
    assert_eq!(folded::render(&on).lines().count(), on.len());
}

#[test]
fn folded_frames_cannot_break_the_format() {
    let s = stack(&["a;b\nc"], &[]);
    assert_eq!(folded::fold("x;y", &s), "x:y;a:b:c");
}

/// A minimal protobuf reader for the test: (field, wire type, varint or bytes) of a message.
fn fields(mut b: &[u8]) -> Vec<(u32, u64, Vec<u8>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = varint(&mut b);
        let (field, wire) = ((tag >> 3) as u32, tag & 7);
        match wire {
            0 => out.push((field, varint(&mut b), Vec::new())),
            2 => {
                let n = varint(&mut b) as usize;
                out.push((field, 0, b[..n].to_vec()));
                b = &b[n..];
            }
            1 => {
                out.push((field, u64::from_le_bytes(b[..8].try_into().unwrap()), Vec::new()));
                b = &b[8..];
            }
            w => panic!("wire type {w}"),
        }
    }
    out
}

fn packed(b: &[u8]) -> Vec<u64> {
    let mut b = b;
    let mut out = Vec::new();
    while !b.is_empty() {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[0];
            b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
            shift += 7;
        }
        out.push(v);
    }
    out
}

#[test]
fn pprof_has_the_sample_types_labels_and_functions() {
    let mut p = Profiler::new(100);
    p.add_samples(vec![entry(1, 1, 5, stack(&["spin_a", "main"], &[])), entry(0, 4, 2, stack(&["idle"], &[]))]);
    let mut t = task(1, "A", 100);
    p.attach(&mut t);
    let mut r = ProfileReport::default();
    p.finish(&mut r);
    let bytes = pprof::encode(&p, 1_000_000, 0);
    let top = fields(&bytes);
    let strings: Vec<String> = top.iter().filter(|f| f.0 == 6).map(|f| String::from_utf8(f.2.clone()).unwrap()).collect();
    assert_eq!(strings[0], "", "string_table[0] is empty");
    let types: Vec<(String, String)> = top
        .iter()
        .filter(|f| f.0 == 1)
        .map(|f| {
            let vt = fields(&f.2);
            (strings[vt[0].1 as usize].clone(), strings[vt[1].1 as usize].clone())
        })
        .collect();
    assert_eq!(types, [("samples".into(), "count".into()), ("cpu".into(), "nanoseconds".into()), ("off_cpu".into(), "nanoseconds".into())]);
    let samples: Vec<Vec<(u32, u64, Vec<u8>)>> = top.iter().filter(|f| f.0 == 2).map(|f| fields(&f.2)).collect();
    assert_eq!(samples.len(), 2);
    // The request's sample: 5 samples, 5 x 10 ms of CPU, labelled with its ids and type.
    let s = &samples[0];
    assert_eq!(packed(&s.iter().find(|f| f.0 == 2).unwrap().2), [5, 50_000_000, 0]);
    let labels: Vec<(String, String)> = s
        .iter()
        .filter(|f| f.0 == 3)
        .map(|f| {
            let l = fields(&f.2);
            (strings[l[0].1 as usize].clone(), strings[l[1].1 as usize].clone())
        })
        .collect();
    assert_eq!(labels, [("trace_id".into(), format!("{:032x}", 7)), ("span_id".into(), format!("{:016x}", 1)), ("task".into(), "A".into())]);
    // Leaf first: its locations name spin_a, then main.
    let locs = packed(&s.iter().find(|f| f.0 == 1).unwrap().2);
    let functions: HashMap<u64, String> = top
        .iter()
        .filter(|f| f.0 == 5)
        .map(|f| {
            let fnf = fields(&f.2);
            (fnf[0].1, strings[fnf[1].1 as usize].clone())
        })
        .collect();
    let loc_fn: HashMap<u64, u64> = top
        .iter()
        .filter(|f| f.0 == 4)
        .map(|f| {
            let lf = fields(&f.2);
            let line = fields(&lf.iter().find(|x| x.0 == 4).unwrap().2);
            (lf[0].1, line[0].1)
        })
        .collect();
    let names: Vec<&str> = locs.iter().map(|l| functions[&loc_fn[l]].as_str()).collect();
    assert_eq!(names, ["spin_a", "main"]);
    // Outside any task: the pid label.
    let l = fields(&samples[1].iter().find(|f| f.0 == 3).unwrap().2);
    assert_eq!((strings[l[0].1 as usize].as_str(), l[1].1), ("pid", 4));
}

#[test]
fn flame_graphs_and_the_slow_against_typical_split() {
    let mut p = Profiler::new(100);
    let mut stats = Stats::default();
    // Ten requests of type "GET /x": nine fast ones spinning in `fast`, one slow one in `slow_path`.
    for i in 1..=10u64 {
        let slow = i == 10;
        let s = stack(&[if slow { "slow_path" } else { "fast" }, "main"], &[]);
        p.add_samples(vec![entry(i, 1, if slow { 50 } else { 5 }, s)]);
        let mut t = task(i, "GET /x", if slow { 50_000_000 } else { 5_000_000 + i * 1000 });
        stats.add(&t);
        p.attach(&mut t);
    }
    let (before, after) = flamegraph::slow_vs_typical(&p, &stats, "GET /x").expect("both sides");
    assert!(before.keys().all(|k| k.ends_with(";fast")), "{before:?}");
    assert_eq!(after.keys().collect::<Vec<_>>(), ["GET /x;main;slow_path"]);
    let dir = std::env::temp_dir().join(format!("tprof-flame-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let written = flamegraph::write(&p, &stats, &dir).expect("written");
    let names: Vec<String> = written.iter().map(|w| w.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["GET__x.on-cpu.svg", "GET__x.diff.svg"]);
    let svg = std::fs::read_to_string(dir.join("GET__x.on-cpu.svg")).expect("svg");
    assert!(svg.starts_with("<?xml") && svg.contains("slow_path") && svg.contains("fast"), "{}", &svg[..200.min(svg.len())]);
    let _ = std::fs::remove_dir_all(&dir);
}
