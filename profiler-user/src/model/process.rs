//! What tprof knows of a traced process beyond its pid: its pid inside its own pid
//! namespace, and the container and pod it runs in, as far as its cgroup path says.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// The host's pid (what the kernel programs see, and every output's `pid`).
    pub pid: u32,
    /// Its pid in its own pid namespace, when that is not the host's (a container).
    pub ns_pid: Option<u32>,
    /// The container id its cgroup path carries (docker, containerd, cri-o, podman).
    pub container_id: Option<String>,
    /// The Kubernetes pod uid its cgroup path carries.
    pub pod_uid: Option<String>,
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
