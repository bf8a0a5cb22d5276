//! What the HTML report keeps while the session runs, in bounded memory: the streamed
//! intervals of the tasks still open (at most [`MAX_PIECES_PER_TASK`] each, and
//! [`MAX_OPEN_PIECES`] across them), and, of the tasks that ended, only the slowest:
//! [`TOP_OVERALL`] overall and [`TOP_PER_TYPE`] of each of the first
//! [`MAX_TYPES_WITH_REQUESTS`] task types. Everything else is counted ([`Left`]) and the
//! page says so. The latency histograms and the task-type table come from the session's
//! statistics (`model::stats`), which are bucket counts already.

use std::collections::{BTreeMap, HashMap};

use crate::model::event::{agg_syscalls, Name, Record, TaskKey, Waker};
use crate::model::ledger::TaskState;

use super::CriticalStep;

/// Slowest requests drawn as waterfalls, all types together.
pub const TOP_OVERALL: usize = 20;
/// Slowest requests of each task type drawn as waterfalls (beyond those overall).
pub const TOP_PER_TYPE: usize = 3;
/// Task types that get their own slowest requests; requests of further types can still
/// be among the slowest overall.
pub const MAX_TYPES_WITH_REQUESTS: usize = 32;
/// Streamed intervals (and summed-interval markers) kept per request; the rest are counted.
pub const MAX_PIECES_PER_TASK: usize = 2048;
/// Streamed intervals held across the tasks still open (a few tens of MiB at most).
pub const MAX_OPEN_PIECES: usize = 262_144;

/// One streamed interval of one thread of a task (times: CLOCK_MONOTONIC ns).
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// On a CPU from `start` to `end`; `steal` of it the hypervisor ran another guest.
    OnCpu { tid: u32, start: u64, end: u64, steal: u64 },
    /// Off the CPU: blocked from `start` to `runnable`, then in the run queue until `end`.
    /// `inferred`: the switch-in was not seen, `end` is an upper bound.
    OffCpu { tid: u32, start: u64, runnable: u64, end: u64, syscall: Option<u32>, waker: Waker, inferred: bool },
    /// A syscall from `start` to `end` that returned `ret`.
    Syscall { tid: u32, start: u64, end: u64, nr: u32, ret: i64 },
    /// Short intervals the kernel summed instead of streaming, reported at `ts`: in the
    /// task's totals, not drawable one by one.
    Summed { tid: u32, ts: u64, oncpu_ns: u64, slices: u32, blocked_ns: u64, runq_ns: u64, offcpu: u32, syscalls: u32, syscall_ns: u64 },
}

impl Piece {
    /// The piece a record stands for (None: not an interval).
    pub fn of(rec: &Record) -> Option<Piece> {
        let m = rec.meta();
        let tid = m.tid;
        Some(match rec {
            Record::OnCpu { start_ns, steal_ns, .. } => Piece::OnCpu { tid, start: *start_ns, end: m.ts_ns.max(*start_ns), steal: *steal_ns },
            Record::OffCpu { start_ns, runnable_ns, syscall_nr, waker, end_inferred, .. } => {
                let (start, end) = (*start_ns, m.ts_ns.max(*start_ns));
                // The ledger's split: a preempted thread was runnable all along; one whose
                // wakeup was not seen was blocked until it ran again.
                let runnable = match waker {
                    Waker::Preempted => start,
                    _ => runnable_ns.map_or(end, |r| r.clamp(start, end)),
                };
                Piece::OffCpu { tid, start, runnable, end, syscall: *syscall_nr, waker: waker.clone(), inferred: *end_inferred }
            }
            Record::Syscall { nr, start_ns, ret, .. } => Piece::Syscall { tid, start: *start_ns, end: m.ts_ns.max(*start_ns), nr: *nr, ret: *ret },
            Record::Agg { sums, .. } => Piece::Summed {
                tid,
                ts: m.ts_ns,
                oncpu_ns: sums.oncpu_ns,
                slices: sums.slices,
                blocked_ns: sums.blocked_ns,
                runq_ns: sums.runq_ns,
                offcpu: sums.offcpu,
                syscalls: sums.syscalls,
                syscall_ns: agg_syscalls(sums).map(|(_, s)| s.total_ns).sum(),
            },
            _ => return None,
        })
    }

    pub fn tid(&self) -> u32 {
        match self {
            Piece::OnCpu { tid, .. } | Piece::OffCpu { tid, .. } | Piece::Syscall { tid, .. } | Piece::Summed { tid, .. } => *tid,
        }
    }
}

/// Each task type's slowest requests, slowest first.
pub type Slowest = BTreeMap<Name, Vec<TaskKey>>;

/// A slow request kept for the page.
#[derive(Clone, Debug)]
pub struct Kept {
    pub task: TaskState,
    pub pieces: Vec<Piece>,
    /// Streamed intervals of it not kept (over the per-task or the open-tasks bound).
    pub left_out: u64,
    pub critical: Vec<CriticalStep>,
    /// In how many of the lists (overall, its type's) it is.
    refs: u8,
}

/// What the page does not show, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Left {
    /// Task summaries seen (after the filters).
    pub requests: u64,
    /// Of them, without a known wall time (began before attach, never ended): not ranked.
    pub unranked: u64,
    /// Requests of task types beyond [`MAX_TYPES_WITH_REQUESTS`] (ranked overall only).
    pub over_types: u64,
    /// Streamed intervals of tasks whose summary never came (counted at the end).
    pub orphan_pieces: u64,
}

#[derive(Default)]
struct Open {
    pieces: Vec<Piece>,
    left_out: u64,
}

#[derive(Default)]
pub struct Collector {
    open: HashMap<TaskKey, Open, foldhash::fast::RandomState>,
    open_pieces: usize,
    kept: HashMap<u64, Kept>,
    /// (wall, seq) slowest first.
    overall: Vec<(u64, u64)>,
    by_type: BTreeMap<Name, Vec<(u64, u64)>>,
    next_seq: u64,
    pub left: Left,
}

/// Inserts (wall, seq) into `list` (slowest first, at most `cap`). Returns whether it went
/// in, and the entry pushed out, if any.
fn rank(list: &mut Vec<(u64, u64)>, cap: usize, wall: u64, seq: u64) -> (bool, Option<u64>) {
    if list.len() >= cap && list.last().is_some_and(|&(w, _)| w >= wall) {
        return (false, None);
    }
    let at = list.partition_point(|&(w, _)| w >= wall);
    list.insert(at, (wall, seq));
    let out = if list.len() > cap { list.pop().map(|(_, s)| s) } else { None };
    (true, out)
}

impl Collector {
    /// One record of an open task: kept if it is an interval, within the bounds.
    pub fn event(&mut self, rec: &Record) {
        let Some(piece) = Piece::of(rec) else { return };
        let key = rec.meta().task;
        let room = self.open_pieces < MAX_OPEN_PIECES;
        let open = match self.open.get_mut(&key) {
            Some(o) => o,
            None if room => self.open.entry(key).or_default(),
            None => return self.left.orphan_pieces += 1,
        };
        if open.pieces.len() >= MAX_PIECES_PER_TASK || !room {
            open.left_out += 1;
            return;
        }
        open.pieces.push(piece);
        self.open_pieces += 1;
    }

    /// A task ended: kept if it is among the slowest, with its intervals.
    pub fn summary(&mut self, t: &TaskState, critical: &mut dyn FnMut(&TaskState) -> Vec<CriticalStep>) {
        let open = self.open.remove(&t.key).unwrap_or_default();
        self.open_pieces -= open.pieces.len();
        self.left.requests += 1;
        let Some(wall) = t.wall_ns().filter(|_| t.begin_ns.is_some() && t.end_ns.is_some()) else {
            self.left.unranked += 1;
            return;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut refs = 0;
        let mut out = Vec::new();
        let (went, o) = rank(&mut self.overall, TOP_OVERALL, wall, seq);
        refs += u8::from(went);
        out.extend(o);
        let list = if self.by_type.contains_key(&*t.name) || self.by_type.len() < MAX_TYPES_WITH_REQUESTS {
            Some(self.by_type.entry(Name::clone(&t.name)).or_default())
        } else {
            self.left.over_types += 1;
            None
        };
        if let Some(list) = list {
            let (went, o) = rank(list, TOP_PER_TYPE, wall, seq);
            refs += u8::from(went);
            out.extend(o);
        }
        if refs > 0 {
            let critical = critical(t);
            self.kept.insert(seq, Kept { task: t.clone(), pieces: open.pieces, left_out: open.left_out, critical, refs });
        }
        for s in out {
            if let Some(k) = self.kept.get_mut(&s) {
                k.refs -= 1;
                if k.refs == 0 {
                    self.kept.remove(&s);
                }
            }
        }
    }

    /// The kept requests, slowest first; the slowest overall flagged, and each type's
    /// slowest requests (span ids), slowest first. Counts what was still open.
    pub fn finish(&mut self) -> (Vec<(bool, Kept)>, Slowest) {
        self.left.orphan_pieces += self.open.values().map(|o| o.pieces.len() as u64 + o.left_out).sum::<u64>();
        self.open.clear();
        self.open_pieces = 0;
        let top: Vec<u64> = self.overall.iter().map(|&(_, s)| s).collect();
        let types = self
            .by_type
            .iter()
            .map(|(n, l)| (Name::clone(n), l.iter().filter_map(|(_, s)| self.kept.get(s).map(|k| k.task.key)).collect()))
            .collect();
        let mut kept: Vec<(u64, Kept)> = self.kept.drain().collect();
        kept.sort_by_key(|(s, k)| (std::cmp::Reverse(k.task.wall_ns().unwrap_or(0)), *s));
        (kept.into_iter().map(|(s, k)| (top.contains(&s), k)).collect(), types)
    }

    /// Requests kept now (for tests of the bounds).
    #[cfg(test)]
    pub fn kept_len(&self) -> usize {
        self.kept.len()
    }

    /// Intervals held for open tasks now.
    #[cfg(test)]
    pub fn open_pieces(&self) -> usize {
        self.open_pieces
    }
}
