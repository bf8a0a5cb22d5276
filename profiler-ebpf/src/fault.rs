//! Fault injection for tests (`Config::fault`, set by the hidden `--inject-fault` option):
//! scheduler events of task-carrying threads dropped on purpose, as the kernel drops a
//! program run when another BPF program is running on the CPU. The checks that catch lost
//! events (missed switch-ins, the runtime cross-check) are proven against these. With
//! `fault` 0, as in every real session, each hook is one read of the config.

use profiler_common::fault;

use crate::maps::{FAULT_PENDING, FAULT_TICK};

/// Whether this event is the one in `fault_every` to drop (counted per CPU).
#[inline(always)]
fn tick() -> bool {
    let every = crate::cfg!(fault_every).max(1);
    let Some(p) = FAULT_TICK.get_ptr_mut(0) else { return false };
    // SAFETY: this CPU's slot; programs on one CPU do not race (no preemption in BPF).
    unsafe {
        *p = (*p + 1) % every;
        *p == 0
    }
}

/// At the switch-out of task-carrying thread `tid`: true when it is to be dropped (with
/// the thread's next switch-in).
#[inline(always)]
pub fn lose_switch_out(tid: u32) -> bool {
    if crate::cfg!(fault) != fault::LOSE_SWITCH_PAIR || !tick() {
        return false;
    }
    FAULT_PENDING.insert(&tid, &1, 0).is_ok()
}

/// At the switch-in of task-carrying thread `tid`: true when it is to be dropped.
#[inline(always)]
pub fn lose_switch_in(tid: u32) -> bool {
    match crate::cfg!(fault) {
        fault::LOSE_SWITCH_IN => tick(),
        fault::LOSE_SWITCH_PAIR => FAULT_PENDING.remove(&tid).is_ok(),
        _ => false,
    }
}
