//! What tprof knows of a traced process beyond its pid: its pid inside its own pid
//! namespace, the container and pod it runs in, as far as its cgroup path says, and its
//! names (what an OTLP resource is made of: `service.name`, `process.executable.name`, ...).
//! A recording keeps it, so a report names processes that have long exited.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessInfo {
    /// The host's pid (what the kernel programs see, and every output's `pid`).
    pub pid: u32,
    /// Its pid in its own pid namespace, when that is not the host's (a container).
    pub ns_pid: Option<u32>,
    /// The container id its cgroup path carries (docker, containerd, cri-o, podman).
    pub container_id: Option<String>,
    /// The Kubernetes pod uid its cgroup path carries.
    pub pod_uid: Option<String>,
    /// Its comm (at most 15 bytes).
    pub comm: Option<String>,
    /// The executable's file name (`/proc/PID/exe`, else the first argument's).
    pub exe_name: Option<String>,
    /// Its arguments joined by spaces, at most [`MAX_COMMAND_LINE`] bytes.
    pub command_line: Option<String>,
    /// `OTEL_SERVICE_NAME` in its environment.
    pub otel_service_name: Option<String>,
    /// `service.instance.id`: a UUID made from the boot id, the pid and the process's start
    /// time, so the same process instance gets the same id from every tprof session.
    pub instance_id: Option<String>,
    /// Its threads' names (tid, comm) when the session added it, at most [`MAX_THREADS`]:
    /// a report names thread tracks with them.
    pub threads: Vec<(u32, String)>,
}

/// Most thread names kept per process.
pub const MAX_THREADS: usize = 1024;

/// Longest `command_line` kept, in bytes.
pub const MAX_COMMAND_LINE: usize = 1024;

impl ProcessInfo {
    /// `service.name`: `OTEL_SERVICE_NAME`, else the executable's file name, else the comm.
    pub fn service_name(&self) -> Option<&str> {
        self.otel_service_name.as_deref().or(self.exe_name.as_deref()).or(self.comm.as_deref())
    }

    /// The name of thread `tid`, if it was known when the session added the process.
    pub fn thread_name(&self, tid: u32) -> Option<&str> {
        self.threads.iter().find(|(t, _)| *t == tid).map(|(_, n)| n.as_str())
    }
}

impl ProcessInfo {
    /// `pid 1234`, with the namespace pid and the container beside it when known.
    pub fn describe(&self) -> String {
        let mut s = format!("pid {}", self.pid);
        let mut extra = Vec::new();
        if let Some(n) = self.ns_pid {
            extra.push(format!("ns pid {n}"));
        }
        if let Some(c) = &self.container_id {
            extra.push(format!("container {:.12}", c));
        }
        if let Some(p) = &self.pod_uid {
            extra.push(format!("pod {p}"));
        }
        if !extra.is_empty() {
            s.push_str(&format!(" ({})", extra.join(", ")));
        }
        s
    }
}
