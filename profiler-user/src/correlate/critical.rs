//! The critical path of a request, from the streamed intervals of its threads and of the
//! tasks whose threads woke them: walking back from the request's end, each interval that
//! led up to it is a step; a block that another task's thread ended is explained by what
//! that task did during the block (its own steps, one level deeper), and so on up to
//! [`MAX_DEPTH`] levels. Time no streamed interval covers (the task was unscheduled, or its
//! intervals were short and summed in the kernel) is an `untraced` step.

use crate::model::critical::{Interval, Step, StepKind};
use crate::model::event::{TaskKey, Waker};

/// Steps of one path at most (adjacent intervals of one kind are merged first).
pub const MAX_STEPS: usize = 32;
/// Levels of wakers' tasks followed.
pub const MAX_DEPTH: u32 = 4;
/// Gaps between streamed intervals shorter than this (short intervals summed in the kernel,
/// the probes' own instructions) are not steps: the intervals on both sides merge.
pub const MIN_GAP_NS: u64 = 20_000;

/// What the walk can see of a task: its streamed intervals (in the order they came) and
/// its name.
#[derive(Clone, Copy)]
pub struct Timeline<'a> {
    pub intervals: &'a [Interval],
    pub name: Option<&'a str>,
}

/// The critical path of task `root`, which ran from `begin` to `end`, in time order.
/// `lookup` gives the timelines of other tasks (wakers), open or ended recently.
pub fn critical_path<'a>(root: TaskKey, tl: Timeline<'a>, begin: u64, end: u64, lookup: &dyn Fn(&TaskKey) -> Option<Timeline<'a>>) -> Vec<Step> {
    let mut w = Walk { lookup, budget: MAX_STEPS, stack: vec![root] };
    w.walk(root, None, tl.intervals, end, begin, 0)
}

struct Walk<'a, 'l> {
    lookup: &'l dyn Fn(&TaskKey) -> Option<Timeline<'a>>,
    budget: usize,
    /// Tasks being walked (a wake-up cycle is not followed twice).
    stack: Vec<TaskKey>,
}

impl<'a> Walk<'a, '_> {
    /// The steps of `key` from `to` to `from`, in time order.
    fn walk(&mut self, key: TaskKey, name: Option<&str>, ivs: &[Interval], from: u64, to: u64, depth: u32) -> Vec<Step> {
        // Latest first: intervals come ordered by their end (the record's time), nearly.
        let mut order: Vec<&Interval> = ivs.iter().filter(|iv| iv.end_ns > to && iv.start_ns < from).collect();
        order.sort_by_key(|iv| (iv.end_ns, iv.start_ns));
        let mut back: Vec<Vec<Step>> = Vec::new();
        let mut cursor = from;
        let step = |tid, start_ns, end_ns, kind| Step { depth, task: key, name: name.map(str::to_string), tid, start_ns, end_ns, kind };
        while cursor > to {
            // The interval reaching latest before the cursor: among those starting before
            // it, the one that ends last (skipped ones start later: they stay out of reach).
            while order.last().is_some_and(|iv| iv.start_ns >= cursor) {
                order.pop();
            }
            let Some(iv) = order.pop() else {
                self.push(&mut back, step(0, to, cursor, StepKind::Untraced));
                break;
            };
            let (s, e) = (iv.start_ns.max(to), iv.end_ns.min(cursor));
            if e < cursor {
                self.push(&mut back, step(iv.tid, e, cursor, StepKind::Untraced));
            }
            if self.budget == 0 {
                self.push_forced(&mut back, step(0, to, e, StepKind::Untraced));
                break;
            }
            let mut seg = vec![step(iv.tid, s, e, iv.kind.clone())];
            if let StepKind::Blocked { waker: Waker::Thread { task: Some(w), .. }, .. } = &iv.kind {
                self.budget -= 1;
                if depth + 1 < MAX_DEPTH && !self.stack.contains(w) {
                    if let Some(tl) = (self.lookup)(w) {
                        self.stack.push(*w);
                        seg.extend(self.walk(*w, tl.name, tl.intervals, e, s, depth + 1));
                        self.stack.pop();
                    }
                }
                back.push(seg);
            } else {
                let single = seg.remove(0);
                self.push(&mut back, single);
            }
            cursor = s;
        }
        back.into_iter().rev().flatten().collect()
    }

    /// Pushes `st` (earlier than everything in `back`), merged into the step after it when
    /// both are of one kind on one thread and at most [`MIN_GAP_NS`] apart; a short untraced
    /// gap is no step.
    fn push(&mut self, back: &mut Vec<Vec<Step>>, st: Step) {
        if st.kind == StepKind::Untraced && st.dur_ns() < MIN_GAP_NS {
            return;
        }
        if let Some([last]) = back.last_mut().map(Vec::as_mut_slice) {
            let mergeable = !matches!(st.kind, StepKind::Blocked { .. }) && last.kind == st.kind && (last.tid == st.tid || st.kind == StepKind::Untraced);
            if mergeable && st.end_ns + MIN_GAP_NS >= last.start_ns {
                last.start_ns = st.start_ns;
                return;
            }
        }
        if self.budget > 0 {
            self.budget -= 1;
            back.push(vec![st]);
        }
    }

    /// Pushes the step that closes a path out of budget.
    fn push_forced(&mut self, back: &mut Vec<Vec<Step>>, st: Step) {
        if st.dur_ns() > 0 {
            back.push(vec![st]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn key(n: u64) -> TaskKey {
        TaskKey { trace_id: 1, span_id: n }
    }

    fn iv(tid: u32, a: u64, b: u64, kind: StepKind) -> Interval {
        Interval { tid, start_ns: a * MS, end_ns: b * MS, kind }
    }

    fn woken_by(tid: u32, task: u64) -> StepKind {
        StepKind::Blocked { syscall_nr: Some(202), waker: Waker::Thread { pid: 1, tid, comm: "w".into(), task: Some(key(task)), via_softirq: false } }
    }

    fn summary(steps: &[Step]) -> Vec<(u32, u64, &'static str, u64, u64)> {
        steps.iter().map(|s| (s.depth, s.task.span_id, s.kind.label(), s.start_ns / MS, s.end_ns / MS)).collect()
    }

    #[test]
    fn a_lock_convoy_is_explained_holder_by_holder() {
        // C (task 3) waits 0..20 for the lock: B (2) releases it at 20. B had waited 0..10
        // for A (1), which held it 0..10 on the CPU. Then B held it 10..20, C 20..30.
        let a = vec![iv(11, 0, 10, StepKind::OnCpu)];
        let b = vec![iv(12, 0, 10, woken_by(11, 1)), iv(12, 10, 20, StepKind::OnCpu)];
        let c = vec![iv(13, 0, 20, woken_by(12, 2)), iv(13, 20, 30, StepKind::OnCpu)];
        let lookup = |k: &TaskKey| match k.span_id {
            1 => Some(Timeline { intervals: &a, name: Some("A") }),
            2 => Some(Timeline { intervals: &b, name: Some("B") }),
            _ => None,
        };
        let path = critical_path(key(3), Timeline { intervals: &c, name: None }, 0, 30 * MS, &lookup);
        assert_eq!(
            summary(&path),
            vec![(0, 3, "blocked", 0, 20), (1, 2, "blocked", 0, 10), (2, 1, "on_cpu", 0, 10), (1, 2, "on_cpu", 10, 20), (0, 3, "on_cpu", 20, 30)]
        );
        assert_eq!(path[1].name.as_deref(), Some("B"));
        assert_eq!(path[2].name.as_deref(), Some("A"));
    }

    #[test]
    fn gaps_are_untraced_short_ones_merge_and_cycles_stop() {
        // On CPU 0..5 and 5.01..9 (a 10 us gap: summed intervals): one step; nothing 9..12;
        // a block 12..15 woken by a task that was itself woken by this one (a cycle).
        let me = vec![
            Interval { tid: 1, start_ns: 0, end_ns: 5 * MS, kind: StepKind::OnCpu },
            Interval { tid: 1, start_ns: 5 * MS + 10_000, end_ns: 9 * MS, kind: StepKind::OnCpu },
            iv(1, 12, 15, woken_by(2, 2)),
        ];
        let other = vec![iv(2, 10, 14, woken_by(1, 1)), iv(2, 14, 15, StepKind::OnCpu)];
        let lookup = |k: &TaskKey| (k.span_id == 2).then_some(Timeline { intervals: &other, name: Some("o") });
        let path = critical_path(key(1), Timeline { intervals: &me, name: None }, 0, 15 * MS, &lookup);
        assert_eq!(
            summary(&path),
            vec![(0, 1, "on_cpu", 0, 9), (0, 1, "untraced", 9, 12), (0, 1, "blocked", 12, 15), (1, 2, "blocked", 12, 14), (1, 2, "on_cpu", 14, 15)]
        );
    }

    #[test]
    fn long_paths_are_bounded_and_end_with_what_was_left_out() {
        // 100 blocks woken by the kernel, each followed by 1 ms on CPU: far more than the
        // budget; the latest steps are kept and the rest is one untraced step.
        let mut me = Vec::new();
        for i in 0..100 {
            me.push(iv(1, 2 * i, 2 * i + 1, StepKind::Blocked { syscall_nr: None, waker: Waker::Kernel }));
            me.push(iv(1, 2 * i + 1, 2 * i + 2, StepKind::OnCpu));
        }
        let path = critical_path(key(1), Timeline { intervals: &me, name: None }, 0, 200 * MS, &|_| None);
        assert!(path.len() <= MAX_STEPS + 2, "{}", path.len());
        assert_eq!(path.last().map(|s| s.end_ns), Some(200 * MS));
        assert_eq!(path[0].kind, StepKind::Untraced);
        assert_eq!(path[0].start_ns, 0);
        // Steps tile the request's time.
        for w in path.windows(2).filter(|w| w[0].depth == 0 && w[1].depth == 0) {
            assert_eq!(w[0].end_ns, w[1].start_ns);
        }
    }
}
