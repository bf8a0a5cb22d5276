//! Per task type (task name) statistics: a latency histogram with percentiles and the average
//! breakdown of where the time went, like the user-defined-tasks view of `go tool trace`.
//!
//! The histogram is log-linear (HDR style): 16 sub-buckets per power of two, so any
//! percentile it reports is within 1/16 (6.25%) above the true value, in bounded memory.

use std::collections::BTreeMap;

use super::event::Name;
use super::ledger::TaskState;

/// Sub-buckets per power of two.
const SUB: u32 = 16;
/// Powers of two covered (1 ns .. 2^40 ns ≈ 18 min); longer values land in the last bucket.
const POW: u32 = 40;
/// Task types tracked; more distinct names are counted under `other_types`.
pub const MAX_TYPES: usize = 1024;

#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    pub count: u64,
    pub sum_ns: u128,
    pub max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; (POW * SUB) as usize], count: 0, sum_ns: 0, max_ns: 0 }
    }
}

fn bucket(v: u64) -> usize {
    if v < u64::from(SUB) {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= 4
    let sub = ((v >> (exp - 4)) & u64::from(SUB - 1)) as u32;
    (((exp - 3) * SUB + sub) as usize).min((POW * SUB) as usize - 1)
}

/// Upper bound of the values in bucket `i`.
fn bucket_high(i: usize) -> u64 {
    let i = i as u32;
    if i < SUB {
        return u64::from(i);
    }
    let exp = i / SUB + 3;
    let sub = u64::from(i % SUB);
    ((u64::from(SUB) + sub + 1) << (exp - 4)) - 1
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(bucket(v)) {
            *c += 1;
        }
        self.count += 1;
        self.sum_ns += u128::from(v);
        self.max_ns = self.max_ns.max(v);
    }

    /// The value at quantile `q` (0..=1): an upper bound within 6.25% of the true value,
    /// never above the maximum seen.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(i).min(self.max_ns);
            }
        }
        self.max_ns
    }

    /// The non-empty buckets, lowest first: (lowest value, highest value, count). Each
    /// lies within one power of two (`[2^k, 2^(k+1))`, or a single value below 16).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| {
            let low = if i == 0 { 0 } else { bucket_high(i - 1) + 1 };
            (low, bucket_high(i), *c)
        })
    }

    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum_ns / u128::from(self.count)) as u64
        }
    }
}

/// One task type's figures.
#[derive(Clone, Debug, Default)]
pub struct TypeStats {
    pub wall: Histogram,
    pub on_cpu_ns: u128,
    pub runq_ns: u128,
    pub blocked_ns: u128,
    pub unscheduled_ns: u128,
    pub syscall_ns: u128,
    pub incomplete: u64,
}

impl TypeStats {
    /// Average of one of the sums over the tasks with a known wall time.
    pub fn avg(&self, sum: u128) -> u64 {
        if self.wall.count == 0 {
            0
        } else {
            (sum / u128::from(self.wall.count)) as u64
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub by_name: BTreeMap<Name, TypeStats>,
    pub other_types: u64,
}

impl Stats {
    pub fn add(&mut self, t: &TaskState) {
        if !self.by_name.contains_key(&*t.name) && self.by_name.len() >= MAX_TYPES {
            self.other_types += 1;
            return;
        }
        let s = self.by_name.entry(Name::clone(&t.name)).or_default();
        match t.wall_ns() {
            Some(wall) if t.incomplete().is_none() => {
                s.wall.record(wall);
                s.on_cpu_ns += u128::from(t.on_cpu_ns);
                s.runq_ns += u128::from(t.runq_ns);
                s.blocked_ns += u128::from(t.blocked_ns);
                s.unscheduled_ns += u128::from(t.unscheduled_ns().unwrap_or(0));
                s.syscall_ns += u128::from(t.syscall_ns());
            }
            // Incomplete ledgers would skew the averages: counted apart.
            _ => s.incomplete += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 20, 123_456_789, 1 << 39]) {
            let b = bucket(v);
            assert!(b >= last || v < 100_000, "bucket order");
            last = b;
            let hi = bucket_high(b);
            assert!(hi >= v, "{v} above its bucket's bound {hi}");
            assert!((hi - v) as f64 <= v as f64 / 16.0 + 1.0, "{v}: bound {hi} too loose");
        }
    }

    #[test]
    fn percentiles_of_known_distribution() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(ms * 1_000_000);
        }
        let within = |got: u64, want: u64| got >= want && got as f64 <= want as f64 * 1.0625;
        assert!(within(h.quantile(0.5), 50_000_000), "p50 {}", h.quantile(0.5));
        assert!(within(h.quantile(0.99), 99_000_000), "p99 {}", h.quantile(0.99));
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert_eq!(h.mean(), 50_500_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn buckets_cover_what_was_recorded() {
        let mut h = Histogram::default();
        for v in [3, 3, 17, 1_000, 1_000_000, 1 << 45] {
            h.record(v);
        }
        let b: Vec<_> = h.buckets().collect();
        assert_eq!(b.iter().map(|x| x.2).sum::<u64>(), 6);
        assert_eq!(b[0], (3, 3, 2));
        for v in [17, 1_000, 1_000_000] {
            assert!(b.iter().any(|&(lo, hi, _)| (lo..=hi).contains(&v)), "{v} in {b:?}");
        }
        for &(lo, hi, _) in &b[1..] {
            assert_eq!(63 - lo.leading_zeros(), 63 - hi.leading_zeros(), "[{lo}, {hi}] within one power of two");
        }
        assert_eq!(b.last().map(|x| x.1), Some(bucket_high((POW * SUB) as usize - 1)), "longer values in the last bucket");
    }

    #[test]
    fn types_are_bounded() {
        let mut s = Stats::default();
        for i in 0..(MAX_TYPES + 3) {
            let t = TaskState { name: format!("t{i}").into(), begin_ns: Some(0), end_ns: Some(10), ..Default::default() };
            s.add(&t);
        }
        assert_eq!(s.by_name.len(), MAX_TYPES);
        assert_eq!(s.other_types, 3);
        let t = TaskState { name: "t0".into(), begin_ns: None, end_ns: Some(10), ..Default::default() };
        s.add(&t);
        assert_eq!(s.by_name["t0"].incomplete, 1);
    }
}
