//! The on-CPU sampler's kernel side, attached: the `tprof_sample` perf_event program on a
//! software `cpu-clock` event of every online CPU (needs `CAP_PERFMON`: attached before
//! tprof drops its privileges), and the maps it counts samples in.
//!
//! The program counts into one of two maps at a time (`SAMPLE_SLOT`). [`Sampler::drain`]
//! reads and clears the map retired at the previous call, then retires the one being
//! written: a poll apart, no program can still be writing the map being cleared, so no
//! count is lost between its read and its delete.

use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, StackTraceMap};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::PerfEvent;
use aya::Ebpf;
use profiler_common::{maps, programs, sample_count, SampleKey};

/// The highest rate accepted (one sample per 100 us per CPU).
pub const MAX_HZ: u64 = 10_000;

/// What the sampler's counters say, summed over CPUs (see `profiler_common::sample_count`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleCounts {
    pub taken: u64,
    pub map_full: u64,
    pub ustack_lost: u64,
    pub kstack_lost: u64,
}

pub struct Sampler {
    counts_map: [HashMap<MapData, SampleKey, u64>; 2],
    slot: Array<MapData, u32>,
    stacks: StackTraceMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    /// The map the program writes now.
    active: u32,
    pub hz: u64,
    /// CPUs a perf event was opened on.
    pub cpus: usize,
    /// Stack ids that could not be read back.
    pub stacks_unreadable: u64,
}

fn take<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let m = ebpf.take_map(name).ok_or_else(|| anyhow!("eBPF object has no {name} map"))?;
    T::try_from(m).with_context(|| format!("opening the {name} map"))
}

impl Sampler {
    /// Loads the sampler's program and opens a `cpu-clock` event at `hz` on every online
    /// CPU. Call while tprof still has `CAP_PERFMON`.
    pub fn attach(ebpf: &mut Ebpf, hz: u64) -> Result<Sampler> {
        let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow!("{what}: {e}")).context("listing the online CPUs")?;
        let prog: &mut PerfEvent = ebpf
            .program_mut(programs::SAMPLE)
            .ok_or_else(|| anyhow!("eBPF object lacks program {}", programs::SAMPLE))?
            .try_into()
            .with_context(|| format!("{} is not a perf_event program", programs::SAMPLE))?;
        prog.load().with_context(|| format!("loading the sampler program {} (verifier output above)", programs::SAMPLE))?;
        for cpu in &cpus {
            prog.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu: *cpu },
                SamplePolicy::Frequency(hz),
                false,
            )
            .with_context(|| format!("opening the cpu-clock perf event of CPU {cpu} (--sample-hz 0 turns sampling off)"))?;
        }
        Ok(Sampler {
            counts_map: [take(ebpf, maps::SAMPLES_0)?, take(ebpf, maps::SAMPLES_1)?],
            slot: take(ebpf, maps::SAMPLE_SLOT)?,
            stacks: take(ebpf, maps::SAMPLE_STACKS)?,
            counters: take(ebpf, maps::SAMPLE_COUNTS)?,
            active: 0,
            hz,
            cpus: cpus.len(),
            stacks_unreadable: 0,
        })
    }

    /// The counts of the map retired at the previous call (read, then cleared), then retires
    /// the map being written. At the end of a session call it twice: the second call reads
    /// what the first retired (the programs are still attached, so a sample taken in the
    /// instant between a flip and a read may still land in the retired map: that count
    /// is lost only at the very end of a session).
    pub fn drain(&mut self) -> Result<Vec<(SampleKey, u64)>> {
        let retired = &mut self.counts_map[(1 - self.active) as usize];
        let mut out = Vec::new();
        for entry in retired.iter() {
            out.push(entry.context("reading a SAMPLES map")?);
        }
        for (k, _) in &out {
            let _ = retired.remove(k);
        }
        self.active = 1 - self.active;
        self.slot.set(0, self.active, 0).context("flipping SAMPLE_SLOT")?;
        Ok(out)
    }

    /// The addresses of stack `id` (innermost first); empty when it cannot be read (counted).
    pub fn stack(&mut self, id: i32) -> Vec<u64> {
        let Ok(id) = u32::try_from(id) else { return Vec::new() };
        match self.stacks.get(&id, 0) {
            Ok(st) => st.frames().iter().map(|f| f.ip).filter(|ip| *ip != 0).collect(),
            Err(e) => {
                self.stacks_unreadable += 1;
                log::debug!("sample stack {id}: {e}");
                Vec::new()
            }
        }
    }

    /// The sampler's counters, summed over CPUs.
    pub fn counts(&self) -> Result<SampleCounts> {
        let get = |i: u32| -> Result<u64> { Ok(self.counters.get(&i, 0).context("reading SAMPLE_COUNTS")?.iter().sum()) };
        Ok(SampleCounts {
            taken: get(sample_count::TAKEN)?,
            map_full: get(sample_count::MAP_FULL)?,
            ustack_lost: get(sample_count::USTACK_LOST)?,
            kstack_lost: get(sample_count::KSTACK_LOST)?,
        })
    }
}
