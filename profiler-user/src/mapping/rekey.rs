//! The pipeline stage for foreign tasks (those whose ids the kernel generated, see
//! `profiler_common::foreign`): between the decoder and the correlator it renames SQL tasks
//! by their normalized text ([`super::sql::normalize`]) and, when their SQL carries a
//! sqlcommenter `traceparent`, gives the task that trace-id with the comment's span as its
//! parent, in every record from its begin on (so every output and export agrees). The
//! kernel's generated ids stay internal; the span-id is kept.
//!
//! The traceparent is looked for in the task's name (the first bytes of the SQL) and in the
//! log the kernel emits right after the begin in the same probe hit (the `query` text,
//! longer): the begin record waits for that next record of its thread, and no other.

use std::collections::HashMap;
use std::sync::Arc;

use profiler_common::foreign;

use super::sql;
use crate::model::event::{Record, TaskKey, Waker};

/// Most tasks re-keyed at once (their ends forget them); beyond, the oldest are forgotten.
const MAX_KEYS: usize = 65536;

#[derive(Default)]
pub struct Rekey {
    /// span-id -> (trace-id, parent span-id) of re-keyed tasks still open.
    keys: HashMap<u64, (u128, u64)>,
    /// A generated task's begin waiting for the next record of its thread, by tid.
    pending: HashMap<u32, Record>,
    /// Tasks given an application's trace-id.
    pub rekeyed: u64,
}

fn generated_flags(task: &TaskKey) -> Option<u8> {
    let hi = (task.trace_id >> 64) as u64;
    foreign::is_generated(hi).then(|| foreign::flags(hi))
}

impl Rekey {
    /// Passes `rec` on through `out`, re-keyed (possibly after a held begin, or not yet).
    pub fn push(&mut self, rec: Record, out: &mut dyn FnMut(Record)) {
        if self.pending.is_empty() && self.keys.is_empty() && generated_flags(&rec.meta().task).is_none() {
            return out(rec);
        }
        if let Some(begin) = self.pending.remove(&rec.meta().tid) {
            if let (Record::Log { meta, value, .. }, Record::TaskBegin { meta: bm, .. }) = (&rec, &begin) {
                if meta.task == bm.task {
                    if let Some(tp) = sql::traceparent(value) {
                        self.learn(bm.task.span_id, tp);
                    }
                }
            }
            out(self.rewrite(begin));
        }
        let rec = match rec {
            Record::TaskBegin { meta, parent_span_id, name, name_flags, untracked } if generated_flags(&meta.task).is_some() => {
                let flags = generated_flags(&meta.task).unwrap_or(0);
                let raw = name.clone();
                let name = if flags & foreign::TASK_SQL != 0 { Arc::from(sql::normalize(&name)) } else { name };
                let rec = Record::TaskBegin { meta, parent_span_id, name, name_flags, untracked };
                if flags & foreign::TASK_SQLCOMMENTER != 0 {
                    match sql::traceparent(&raw) {
                        Some(tp) => self.learn(meta.task.span_id, tp),
                        None => {
                            self.pending.insert(meta.tid, rec);
                            return;
                        }
                    }
                }
                rec
            }
            other => other,
        };
        let ended = matches!(rec, Record::TaskEnd { .. }).then(|| rec.meta().task.span_id);
        out(self.rewrite(rec));
        if let Some(span) = ended {
            self.keys.remove(&span);
        }
    }

    /// Begins still held at the end of a session.
    pub fn flush(&mut self, out: &mut dyn FnMut(Record)) {
        let held: Vec<Record> = self.pending.drain().map(|(_, r)| r).collect();
        for r in held {
            out(self.rewrite(r));
        }
    }

    fn learn(&mut self, span: u64, tp: (u128, u64)) {
        if self.keys.len() >= MAX_KEYS {
            self.keys.clear();
        }
        self.keys.insert(span, tp);
        self.rekeyed += 1;
    }

    fn rewrite(&self, mut rec: Record) -> Record {
        if self.keys.is_empty() {
            return rec;
        }
        let fix = |k: &mut TaskKey| {
            if let Some((trace, _)) = self.keys.get(&k.span_id) {
                if generated_flags(k).is_some() {
                    k.trace_id = *trace;
                }
            }
        };
        match &mut rec {
            Record::TaskBegin { meta, parent_span_id, .. } => {
                if let Some((_, parent)) = self.keys.get(&meta.task.span_id) {
                    if generated_flags(&meta.task).is_some() {
                        *parent_span_id = *parent;
                    }
                }
                fix(&mut meta.task);
            }
            Record::OffCpu { meta, waker, .. } => {
                fix(&mut meta.task);
                if let Waker::Thread { task: Some(t), .. } = waker {
                    fix(t);
                }
            }
            other => fix(&mut other.meta_mut().task),
        }
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::Meta;

    fn meta(tid: u32, trace_id: u128, span_id: u64) -> Meta {
        Meta { cpu: 0, ts_ns: 1, pid: 1, tid, task: TaskKey { trace_id, span_id } }
    }

    #[test]
    fn sql_tasks_take_the_comment_trace() {
        let generated = (u128::from(foreign::GENERATED_TRACE_HI | u64::from(foreign::TASK_SQL | foreign::TASK_SQLCOMMENTER)) << 64) | 0x1234;
        let q = "UPDATE t SET v = 2 WHERE id = 1 /*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'*/";
        let mut r = Rekey::default();
        let mut got = Vec::new();
        let begin = Record::TaskBegin { meta: meta(5, generated, 77), parent_span_id: 0, name: Arc::from(&q[..40]), name_flags: 1, untracked: false };
        r.push(begin, &mut |x| got.push(x));
        assert!(got.is_empty(), "held for its query log");
        // Another thread's record passes; the begin still waits.
        r.push(Record::TaskEnd { meta: meta(6, 9, 9), dropped: 0 }, &mut |x| got.push(x));
        assert_eq!(got.len(), 1);
        r.push(Record::Log { meta: meta(5, generated, 77), key: "query".into(), value: q.into(), flags: 0 }, &mut |x| got.push(x));
        r.push(Record::TaskEnd { meta: meta(5, generated, 77), dropped: 0 }, &mut |x| got.push(x));
        let want = TaskKey { trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736, span_id: 77 };
        match &got[1] {
            Record::TaskBegin { meta, parent_span_id, name, .. } => {
                assert_eq!((meta.task, *parent_span_id), (want, 0x00f067aa0ba902b7));
                // The name is the SQL normalized (the cut comment dropped).
                assert_eq!(&**name, "UPDATE t SET v = $1 WHERE id = $2");
            }
            other => panic!("{other:?}"),
        }
        assert!(got[2..].iter().all(|x| x.meta().task == want), "{got:?}");
        assert_eq!(r.rekeyed, 1);
        assert!(r.keys.is_empty(), "forgotten at its end");
    }

    #[test]
    fn other_tasks_pass_untouched() {
        let mut r = Rekey::default();
        let plain = Record::Log { meta: meta(1, 42, 7), key: "k".into(), value: "traceparent='x'".into(), flags: 0 };
        let mut got = Vec::new();
        r.push(plain.clone(), &mut |x| got.push(x));
        assert_eq!(got, vec![plain]);
        // A generated SQL task without sqlcommenter: renamed only, not held.
        let gen = (u128::from(foreign::GENERATED_TRACE_HI | u64::from(foreign::TASK_SQL)) << 64) | 1;
        r.push(Record::TaskBegin { meta: meta(2, gen, 8), parent_span_id: 0, name: Arc::from("SELECT 1"), name_flags: 0, untracked: false }, &mut |x| got.push(x));
        assert!(matches!(&got[1], Record::TaskBegin { name, meta, .. } if &**name == "SELECT $1" && meta.task.trace_id == gen));
    }
}
