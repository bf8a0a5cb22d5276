//! Facts of a running process read from `/proc` (world-readable files only, so tprof reads
//! them after it dropped its privileges): its pid in its own namespace (`NSpid` of
//! `/proc/PID/status`) and its container and pod, from its cgroup v2 path.

use crate::model::process::ProcessInfo;

/// What `/proc` says of `pid` now (fields it cannot read stay unknown).
pub fn read(pid: u32) -> ProcessInfo {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let cgroup = crate::attach::scope::cgroup_of(pid).unwrap_or_default();
    ProcessInfo { pid, ns_pid: ns_pid(&status), container_id: container_id(&cgroup), pod_uid: pod_uid(&cgroup), ..Default::default() }
}

/// The innermost pid of `NSpid:` (host first), when the process is in a child namespace.
pub fn ns_pid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let ids: Vec<u32> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    (ids.len() > 1).then(|| ids.last().copied()).flatten()
}

/// A container id in a cgroup path: a 64-hex-digit component, bare (`/docker/<id>`,
/// `/kubepods/.../<id>`) or in a systemd scope (`docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`), innermost first.
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup.split('/').rev().find_map(|c| {
        let c = c.strip_suffix(".scope").unwrap_or(c);
        let id = c.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
    })
}

/// A pod uid in a cgroup path: `pod<uid>` (cgroupfs driver) or `...-pod<uid_with_underscores>.slice`
/// (systemd driver).
pub fn pod_uid(cgroup: &str) -> Option<String> {
    cgroup.split('/').find_map(|c| {
        let c = c.strip_suffix(".slice").unwrap_or(c);
        let at = c.rfind("pod")?;
        let uid = c[at + 3..].replace('_', "-");
        let hex_and_dashes = uid.len() == 36 && uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()) && uid.matches('-').count() == 4;
        hex_and_dashes.then_some(uid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3c1a7e9b2d8c6f0e1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70";

    #[test]
    fn namespace_pids() {
        assert_eq!(ns_pid("Name:\tx\nNSpid:\t4242\t1\n"), Some(1));
        assert_eq!(ns_pid("NSpid:\t4242\t17\t3\n"), Some(3), "the innermost namespace");
        assert_eq!(ns_pid("NSpid:\t4242\n"), None, "the host's own namespace");
        assert_eq!(ns_pid(""), None);
    }

    #[test]
    fn container_ids_of_each_runtime() {
        for path in [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods/besteffort/pod0a1b2c3d-0000-4000-8000-000000000001/{ID}"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_0000_4000_8000_000000000001.slice/cri-containerd-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/kubepods.slice/crio-{ID}.scope"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
        assert_eq!(container_id("/user.slice/user-1000.slice/session-2.scope"), None);
        assert_eq!(container_id("/"), None);
    }

    #[test]
    fn pod_uids_of_both_drivers() {
        let uid = "0a1b2c3d-0000-4000-8000-000000000001";
        assert_eq!(pod_uid(&format!("/kubepods/besteffort/pod{uid}/{ID}")).as_deref(), Some(uid));
        let systemd = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_0000_4000_8000_000000000001.slice/x.scope";
        assert_eq!(pod_uid(systemd).as_deref(), Some(uid));
        assert_eq!(pod_uid("/system.slice/podman.service"), None);
    }

    #[test]
    fn this_process() {
        let me = read(std::process::id());
        assert_eq!(me.pid, std::process::id());
    }
}
