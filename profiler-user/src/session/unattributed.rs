//! Reads the kernel's per-process figures of what ran outside tasks (the `UNATTR_CPU`
//! and `UNATTR_SYS` per-CPU maps, `profiler_common::unattr`) at the end of a session.
//! Entries are not removed when a process exits: a process's last slice is accounted
//! at its last thread's final switch-out, which may come after userspace hears of the
//! exit; the maps hold 4096 processes and 32768 (process, syscall) pairs, and what does
//! not fit is counted (`anomaly::UNATTR_FULL`).

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use aya::maps::{MapData, PerCpuHashMap};
use aya::Ebpf;
use profiler_common::maps;
use profiler_common::unattr::{sys_key_parts, UnattrCpu, UnattrSys};

use crate::model::unattributed::ProcessCpu;

/// Every process's figures, summed over CPUs.
pub fn read(ebpf: &Ebpf) -> Result<Vec<ProcessCpu>> {
    let map = ebpf.map(maps::UNATTR_SYS).ok_or_else(|| anyhow!("no {} map", maps::UNATTR_SYS))?;
    let sys_map: PerCpuHashMap<&MapData, u64, UnattrSys> = PerCpuHashMap::try_from(map)?;
    let mut sys: BTreeMap<u32, BTreeMap<u32, UnattrSys>> = BTreeMap::new();
    for entry in sys_map.iter() {
        let (key, values) = entry.with_context(|| format!("reading the {} map", maps::UNATTR_SYS))?;
        let (pid, nr) = sys_key_parts(key);
        let s = sys.entry(pid).or_default().entry(nr).or_default();
        for v in values.iter() {
            s.count += v.count;
            s.errors += v.errors;
            s.total_ns += v.total_ns;
        }
    }
    let map = ebpf.map(maps::UNATTR_CPU).ok_or_else(|| anyhow!("no {} map", maps::UNATTR_CPU))?;
    let cpu_map: PerCpuHashMap<&MapData, u32, UnattrCpu> = PerCpuHashMap::try_from(map)?;
    let mut out = Vec::new();
    for entry in cpu_map.iter() {
        let (pid, values) = entry.with_context(|| format!("reading the {} map", maps::UNATTR_CPU))?;
        let s = sys.remove(&pid).unwrap_or_default();
        out.push(ProcessCpu::from_kernel(pid, values.iter(), &s));
    }
    // Syscalls of a process whose slices were not counted (its entry did not fit).
    for (pid, s) in sys {
        out.push(ProcessCpu::from_kernel(pid, [], &s));
    }
    Ok(out)
}
