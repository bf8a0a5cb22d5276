//! The data model every stage after the decoder shares, with no logic beyond accessors:
//!
//! * [`event`]: decoded ring-buffer records (what the decoder makes of the kernel's bytes);
//! * [`critical`]: a request's critical path (steps across the tasks that woke it);
//! * [`ledger`]: each task's ledger, as the correlator keeps it and the sinks read it;
//! * [`process`]: what is known of a traced process (names, namespace pid, container, pod);
//! * [`origin`]: the machine and clock a session ran on (what a recording carries);
//! * [`stack`]: symbolized stacks;
//! * [`stats`]: per task type latency histograms and average breakdowns;
//! * [`report`]: the session's report;
//! * [`unattributed`]: per process, its CPU, the share its tasks got, and what ran outside them.
//!
//! The algorithms that fill these in (`decode`, `correlate`, `stacks`) and the formats that
//! print them (`sink`, `export`) import this module, never each other's types.

pub mod critical;
pub mod event;
pub mod ledger;
pub mod origin;
pub mod process;
pub mod report;
pub mod stack;
pub mod stats;
pub mod unattributed;
