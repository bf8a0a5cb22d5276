//! "Not attributed": what the threads of a traced process do while they carry no task,
//! summed per process in the kernel (the `UNATTR_CPU` and `UNATTR_SYS` per-CPU hash maps).
//!
//! CPU: each on-CPU slice of a traced process's thread is measured with the kernel's own
//! accounting of the thread (`se.sum_exec_runtime`, exact at a context switch: the
//! scheduler updates it before `sched_switch` fires), read at the switch-in tprof saw and
//! at the switch-out. The on-CPU pieces tprof charged to tasks in that slice are taken
//! off; the rest is the slice's time outside any task. A slice whose switch-in tprof did
//! not see (it began before the attach, or the event was lost) is measured with
//! `se.sum_exec_runtime - se.prev_sum_exec_runtime` (`prev_sum_exec_runtime` is set when
//! the fair scheduler picks the thread, `set_next_entity`) and counted apart
//! ([`UnattrCpu::unseen_ns`]): part of it may precede the session, and its task pieces
//! were not followed.

/// Per process (key: tgid), per CPU: the process's slices.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnattrCpu {
    /// Kernel runtime of the slices whose switch-in and switch-out were both seen.
    pub cpu_ns: u64,
    /// Of those, the time outside any task.
    pub unattributed_ns: u64,
    /// Task pieces that exceeded their slice's kernel runtime (clock differences, lost
    /// switch events): taken as zero unattributed time and summed here.
    pub over_ns: u64,
    /// Kernel runtime of the slices whose switch-in was not seen (not split).
    pub unseen_ns: u64,
    /// Slices whose switch-in and switch-out were seen.
    pub slices: u32,
    /// Slices whose switch-in was not seen.
    pub unseen_slices: u32,
}

/// Per (process, syscall number) (key: [`sys_key`]), per CPU: syscalls made outside any
/// task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnattrSys {
    pub count: u64,
    pub errors: u64,
    /// From entry to exit, blocked time included.
    pub total_ns: u64,
}

/// The `UNATTR_SYS` key of syscall `nr` of process `tgid`.
pub const fn sys_key(tgid: u32, nr: u32) -> u64 {
    ((tgid as u64) << 32) | nr as u64
}

/// (tgid, nr) of an `UNATTR_SYS` key.
pub const fn sys_key_parts(key: u64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

/// Splits a slice of `runtime` ns (the kernel's accounting) in which tprof charged
/// `task_ns` to tasks: (outside any task, excess of the task pieces over the slice).
pub const fn split_slice(runtime: u64, task_ns: u64) -> (u64, u64) {
    if task_ns > runtime {
        (0, task_ns - runtime)
    } else {
        (runtime - task_ns, 0)
    }
}

impl UnattrCpu {
    /// Adds a slice whose switch-in was seen.
    pub fn add_slice(&mut self, runtime: u64, task_ns: u64) {
        let (free, over) = split_slice(runtime, task_ns);
        self.cpu_ns += runtime;
        self.unattributed_ns += free;
        self.over_ns += over;
        self.slices += 1;
    }

    /// Adds a slice whose switch-in was not seen.
    pub fn add_unseen(&mut self, runtime: u64) {
        self.unseen_ns += runtime;
        self.unseen_slices += 1;
    }

    /// Sums another CPU's (or another read's) figures into these.
    pub fn merge(&mut self, o: &UnattrCpu) {
        self.cpu_ns += o.cpu_ns;
        self.unattributed_ns += o.unattributed_ns;
        self.over_ns += o.over_ns;
        self.unseen_ns += o.unseen_ns;
        self.slices += o.slices;
        self.unseen_slices += o.unseen_slices;
    }
}

const _: () = assert!(core::mem::size_of::<UnattrCpu>() == 40);
const _: () = assert!(core::mem::size_of::<UnattrSys>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers only, no padding (sizes asserted above), valid for any
    // bit pattern.
    unsafe impl aya::Pod for super::UnattrCpu {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnattrSys {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_splits_into_task_time_and_the_rest() {
        let mut c = UnattrCpu::default();
        // A worker runs 1 ms: two task polls of 200 and 300 us, the rest its own.
        c.add_slice(1_000_000, 500_000);
        // A blocking-pool thread with no task at all.
        c.add_slice(250_000, 0);
        // Task pieces measured on another clock overshoot the kernel's slice by 2 us.
        c.add_slice(100_000, 102_000);
        c.add_unseen(40_000);
        assert_eq!((c.cpu_ns, c.unattributed_ns, c.over_ns), (1_350_000, 750_000, 2_000));
        assert_eq!((c.slices, c.unseen_slices, c.unseen_ns), (3, 1, 40_000));
        let mut sum = UnattrCpu::default();
        sum.merge(&c);
        sum.merge(&c);
        assert_eq!((sum.cpu_ns, sum.unattributed_ns, sum.slices, sum.unseen_ns), (2_700_000, 1_500_000, 6, 80_000));
    }

    #[test]
    fn syscall_keys_round_trip() {
        let k = sys_key(4_194_303, 435);
        assert_eq!(sys_key_parts(k), (4_194_303, 435));
        assert!(sys_key(2, 0) > sys_key(1, u32::MAX), "keys order by process first");
    }
}
