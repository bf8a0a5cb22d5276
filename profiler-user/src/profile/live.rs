//! A live session's sample drain: the kernel's counts (`attach::sampler`) to symbolized
//! [`SampleEntry`]s, stacks symbolized once per stack id (ids are never reused: the
//! sampler's stack map is never cleared during a session).

use std::collections::HashMap;

use profiler_common::SampleKey;

use super::SampleEntry;
use crate::attach::sampler::Sampler;
use crate::model::event::TaskKey;
use crate::model::stack::{Frame, Stack};
use crate::stacks::{user_truncated, Symbolizer};

/// Symbolized stacks kept before the caches start over.
const MAX_CACHED: usize = 8192;

#[derive(Default)]
pub struct LiveSamples {
    user: HashMap<(u32, i32), Vec<Frame>>,
    kernel: HashMap<i32, Vec<Frame>>,
}

impl LiveSamples {
    /// Process `pid` is gone: its user stacks are forgotten (its pid may be reused).
    pub fn forget(&mut self, pid: u32) {
        self.user.retain(|(p, _), _| *p != pid);
    }

    /// The drained counts, symbolized.
    pub fn entries(&mut self, sampler: &mut Sampler, sym: Option<&mut Symbolizer>, raw: Vec<(SampleKey, u64)>) -> Vec<SampleEntry> {
        if self.user.len() > MAX_CACHED {
            self.user.clear();
        }
        if self.kernel.len() > MAX_CACHED {
            self.kernel.clear();
        }
        let mut sym = sym;
        raw.into_iter()
            .map(|(k, count)| {
                let user = if k.ustack_id < 0 {
                    Vec::new()
                } else if let Some(f) = self.user.get(&(k.pid, k.ustack_id)) {
                    f.clone()
                } else {
                    let addrs = sampler.stack(k.ustack_id);
                    let f = match sym.as_deref() {
                        Some(s) => s.user_frames_of(k.pid, &addrs),
                        None => unsymbolized(&addrs),
                    };
                    self.user.insert((k.pid, k.ustack_id), f.clone());
                    f
                };
                let kernel = if k.kstack_id < 0 {
                    Vec::new()
                } else if let Some(f) = self.kernel.get(&k.kstack_id) {
                    f.clone()
                } else {
                    let addrs = sampler.stack(k.kstack_id);
                    let f = match sym.as_deref_mut() {
                        Some(s) => s.kernel_frames_cached(addrs),
                        None => unsymbolized(&addrs),
                    };
                    self.kernel.insert(k.kstack_id, f.clone());
                    f
                };
                let task = TaskKey::from_raw(&k.task);
                let user_truncated = user_truncated(&user);
                SampleEntry { trace_id: task.trace_id, span_id: task.span_id, pid: k.pid, count, stack: Stack { kernel, user, user_truncated } }
            })
            .collect()
    }
}

fn unsymbolized(addrs: &[u64]) -> Vec<Frame> {
    addrs.iter().map(|a| Frame { addr: *a, func: None, file: None, line: None }).collect()
}
