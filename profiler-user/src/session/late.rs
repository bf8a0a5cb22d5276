//! Late reads, batched: the strings the kernel could not copy (a page not faulted in yet,
//! or a bad pointer) are read by the privileged helper, in one request per batch of
//! records rather than one round trip per string, and within a budget per process per
//! drain, so that a process passing thousands of unreadable strings cannot slow the
//! session: what is over its budget is shown unreadable (and counted) at once.
//!
//! Records go through in order. A record without unreadable strings goes straight on while
//! nothing is held; from the first one that has some, records are held (copied) until
//! [`LATE_BATCH`] are, or the drain ends; then the distinct strings they want are read in
//! one batch and the held records decoded with the answers. The recorder sees each late
//! read as before (`Pipeline::push` records what the reader returned).

use std::collections::HashMap;
use std::io;

use crate::decode::{late_wants, LateReader, LateWant};

/// Most records held for one batch of late reads.
pub const LATE_BATCH: usize = 1024;
/// Most distinct strings read late per process per drain.
pub const LATE_PER_PROCESS: usize = 256;
/// Most distinct strings read late per drain, all processes together.
pub const LATE_PER_DRAIN: usize = 2048;

/// The held records and what they want, and the budgets of the current drain.
#[derive(Default)]
pub struct LateReads {
    buf: Vec<u8>,
    ends: Vec<usize>,
    wants: Vec<LateWant>,
    /// Distinct strings read for each process this drain, and all together.
    used: HashMap<u32, usize>,
    used_total: usize,
    /// Strings left unread because a budget was spent, over the session.
    pub over_budget: u64,
}

/// Reads a batch: one answer per want, in order (None: unreadable).
pub type BatchReader<'a> = &'a mut dyn FnMut(&[LateWant]) -> Vec<Option<Vec<u8>>>;
/// Hands one record on (to `Pipeline::push`) with the late reader to decode it with.
pub type Push<'a> = &'a mut dyn FnMut(&[u8], LateReader<'_>) -> io::Result<()>;

impl LateReads {
    /// A new drain: budgets start over.
    pub fn start_drain(&mut self) {
        self.used.clear();
        self.used_total = 0;
    }

    /// One record of the ring, in order: handed on now, or held for the next batch.
    pub fn record(&mut self, bytes: &[u8], read: BatchReader<'_>, push: Push<'_>) -> io::Result<()> {
        let before = self.wants.len();
        late_wants(bytes, &mut self.wants);
        if self.ends.is_empty() && self.wants.len() == before {
            return push(bytes, &mut |_, _, _| None);
        }
        self.buf.extend_from_slice(bytes);
        self.ends.push(self.buf.len());
        if self.ends.len() >= LATE_BATCH {
            self.flush(read, push)?;
        }
        Ok(())
    }

    /// Reads what the held records want (within the budgets) in one batch and hands them on.
    pub fn flush(&mut self, read: BatchReader<'_>, push: Push<'_>) -> io::Result<()> {
        if self.ends.is_empty() {
            return Ok(());
        }
        let mut asked: Vec<LateWant> = Vec::new();
        let mut index: HashMap<LateWant, usize> = HashMap::new();
        for w in self.wants.drain(..) {
            if index.contains_key(&w) {
                continue;
            }
            let used = self.used.entry(w.0).or_default();
            if *used >= LATE_PER_PROCESS || self.used_total >= LATE_PER_DRAIN {
                self.over_budget += 1;
                continue;
            }
            *used += 1;
            self.used_total += 1;
            index.insert(w, asked.len());
            asked.push(w);
        }
        let got = if asked.is_empty() { Vec::new() } else { read(&asked) };
        let mut lookup = |pid: u32, addr: u64, len: usize| index.get(&(pid, addr, len)).and_then(|&i| got.get(i).cloned().flatten());
        let mut start = 0;
        let mut result = Ok(());
        for &end in &self.ends {
            if result.is_ok() {
                result = push(&self.buf[start..end], &mut lookup);
            }
            start = end;
        }
        self.buf.clear();
        self.ends.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::raw_bytes;
    use profiler_common::{kind, strflag, Header, OnCpuRecord, RegionRecord, StrRef, NAME_LEN};

    fn region(pid: u32, ptr: u64, flags: u32) -> Vec<u8> {
        let header = Header { kind: kind::REGION_BEGIN, pid, tid: pid, ..Default::default() };
        let mut name_buf = [0u8; NAME_LEN];
        name_buf[..4].copy_from_slice(b"kern");
        raw_bytes(&RegionRecord { header, name: StrRef { ptr, len: 4, flags }, name_buf })
    }

    fn on_cpu(ts: u64) -> Vec<u8> {
        raw_bytes(&OnCpuRecord { header: Header { kind: kind::ON_CPU, ts_ns: ts, ..Default::default() }, start_ns: 0, steal_ns: 0 })
    }

    /// Each record handed on, by its index, with what its late reads answered.
    type HandedOn = Vec<(usize, Vec<Option<Vec<u8>>>)>;

    /// Runs `records` through a drain; returns (batches asked, what each record decoded its
    /// strings to, in the order handed on).
    fn run(late: &mut LateReads, records: &[Vec<u8>]) -> (Vec<Vec<LateWant>>, HandedOn) {
        let mut batches = Vec::new();
        let mut out = Vec::new();
        let mut read = |w: &[LateWant]| {
            batches.push(w.to_vec());
            w.iter().map(|&(pid, addr, _)| (pid == 1).then(|| format!("{addr:x}").into_bytes())).collect()
        };
        let mut push = |bytes: &[u8], late: LateReader<'_>| {
            let pos = out.len();
            assert_eq!(records[pos], bytes, "record {pos} handed on in order");
            let mut wants = Vec::new();
            late_wants(bytes, &mut wants);
            out.push((pos, wants.iter().map(|&(p, a, l)| late(p, a, l)).collect()));
            Ok(())
        };
        late.start_drain();
        for r in records {
            late.record(r, &mut read, &mut push).unwrap();
        }
        late.flush(&mut read, &mut push).unwrap();
        (batches, out)
    }

    #[test]
    fn one_batch_per_drain_in_order_and_deduplicated() {
        let records = vec![on_cpu(1), region(1, 0xa0, strflag::UNREADABLE), on_cpu(2), region(1, 0xa0, strflag::UNREADABLE), region(2, 0xb0, strflag::UNREADABLE), region(1, 0xc0, 0)];
        let mut late = LateReads::default();
        let (batches, out) = run(&mut late, &records);
        assert_eq!(batches, [vec![(1, 0xa0, 4), (2, 0xb0, 4)]], "one request, each string once");
        let order: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5], "records keep their order");
        assert_eq!(out[1].1, [Some(b"a0".to_vec())]);
        assert_eq!(out[3].1, [Some(b"a0".to_vec())]);
        assert_eq!(out[4].1, [None], "pid 2's read failed");
        assert_eq!(late.over_budget, 0);
        let (batches, _) = run(&mut late, &[on_cpu(3)]);
        assert!(batches.is_empty(), "no request without unreadable strings");
    }

    #[test]
    fn a_hostile_process_spends_its_budget_not_the_sessions() {
        // 200 000 distinct unreadable strings from pid 2, a few from pid 1.
        let mut records: Vec<Vec<u8>> = (0..200_000u64).map(|i| region(2, 0x10_0000 + i * 8, strflag::UNREADABLE)).collect();
        records.insert(100_000, region(1, 0xa0, strflag::UNREADABLE));
        let mut late = LateReads::default();
        let (batches, out) = run(&mut late, &records);
        let asked: Vec<LateWant> = batches.concat();
        assert_eq!(asked.iter().filter(|w| w.0 == 2).count(), LATE_PER_PROCESS);
        assert!(asked.contains(&(1, 0xa0, 4)), "pid 1 still gets its late read");
        assert_eq!(late.over_budget, 200_000 - LATE_PER_PROCESS as u64);
        assert_eq!(out.len(), records.len(), "every record handed on");
        assert_eq!(out[100_000].1, [Some(b"a0".to_vec())]);
        assert_eq!(batches.len(), 2, "pid 2's budget in the first batch, pid 1's string in its own");
        // The next drain has a budget again.
        let (batches, _) = run(&mut late, &[region(2, 0x5, strflag::UNREADABLE)]);
        assert_eq!(batches, [vec![(2, 0x5, 4)]]);
    }
}
