//! tprof's kernel side: USDT handlers that keep a per-thread "current task" map, and BTF
//! tracepoint programs (sched_switch, sched_waking, sys_enter/sys_exit, irq entry/exit) that
//! charge what the kernel does to the task the thread works for.
//!
//! Needs kernel >= 5.15 (BPF ring buffer, tp_btf, uprobe attach cookies); tested on 6.18.
//! Built for `bpfel-unknown-none` by `profiler-user/build.rs`; on the host this crate is an
//! empty binary so that `cargo build --workspace` works.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod fault;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod sample;
#[cfg(target_arch = "bpf")]
mod sched;
#[cfg(target_arch = "bpf")]
mod syscalls;
#[cfg(target_arch = "bpf")]
mod thread;
#[cfg(target_arch = "bpf")]
mod unattr;
#[cfg(target_arch = "bpf")]
mod usdt;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: never reached in verified code: the verifier rejects programs that could get here.
    unsafe { core::hint::unreachable_unchecked() }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
