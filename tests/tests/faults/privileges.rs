//! Privileges, the helper, and what the host supports.

use super::*;

// ---- privileges and host support -----------------------------------------------------------

/// Runs tprof with `args` as user nobody holding only `caps` (e.g. `+bpf,+perfmon`; empty:
/// none).
fn tprof_as_nobody(caps: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if caps.is_empty() {
        cmd.arg("--inh-caps=-all");
    } else {
        cmd.arg(format!("--inh-caps=-all,{caps}")).arg(format!("--ambient-caps=-all,{caps}"));
    }
    let out = cmd.arg(tprof_bin()).args(args).output().expect("setpriv (util-linux) runs");
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn missing_capability_is_named() {
    require_root();
    for (caps, missing, held) in [("+bpf", "CAP_PERFMON", "CAP_BPF"), ("+perfmon", "CAP_BPF", "CAP_PERFMON")] {
        let (status, _, err) = tprof_as_nobody(caps, &["attach", "--pid", "1"]);
        assert!(!status.success(), "{err}");
        assert!(err.contains(&format!("needs {missing} (or CAP_SYS_ADMIN)")), "names the one missing capability: {err}");
        assert!(!err.contains(&format!("{held} and")) && !err.contains(&format!("and {held}")), "not the one it has: {err}");
    }
    // CAP_BPF and CAP_PERFMON are enough: the next check (the pid) is what fails here.
    let (status, _, err) = tprof_as_nobody("+bpf,+perfmon", &["attach", "--pid", "999999999"]);
    assert!(!status.success());
    assert!(err.contains("no process with pid 999999999"), "{err}");
}

/// The check lines of `tprof doctor` output, by check name: (status, rest of the line).
fn doctor_lines(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| ["OK ", "WARN", "FAIL"].iter().any(|p| l.starts_with(p)))
        .map(|l| (l[..4].trim().to_string(), l[6..].to_string()))
        .collect()
}

#[test]
fn doctor_reports_what_the_host_supports() {
    require_root();
    let essential = ["kernel", "BTF", "capabilities", "uprobe PMU", "BPF ring buffer", "tp_btf programs", "sleepable uprobe"];
    let informational = ["tracefs", "perf_event_paranoid", "kptr_restrict", "/proc/kallsyms"];
    let out = Command::new(tprof_bin()).arg("doctor").output().expect("tprof doctor runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "this host (root, BTF, 6.18) supports tprof:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    let lines = doctor_lines(&text);
    for name in essential.iter().chain(&informational) {
        let found = lines.iter().find(|(_, rest)| rest.starts_with(name)).unwrap_or_else(|| panic!("no {name} line:\n{text}"));
        if essential.contains(name) {
            assert_eq!(found.0, "OK", "{name}:\n{text}");
        }
    }
    assert!(text.contains("tracefs") && text.contains("does not need"), "tracefs is informational:\n{text}");

    // Without privileges: the missing capabilities are named, the host checks still run,
    // eBPF is not attempted, and the exit status says it will not work.
    let (status, text, err) = tprof_as_nobody("", &["doctor"]);
    assert!(!status.success(), "{text}{err}");
    let lines = doctor_lines(&text);
    let caps = lines.iter().find(|(_, r)| r.starts_with("capabilities")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(caps.0, "FAIL", "{text}");
    assert!(caps.1.contains("CAP_BPF and CAP_PERFMON") && caps.1.contains("sudo"), "{text}");
    assert!(lines.iter().any(|(st, r)| st == "OK" && r.starts_with("BTF")), "host checks run without privileges:\n{text}");
    assert!(lines.iter().any(|(st, r)| st == "FAIL" && r.starts_with("tp_btf programs") && r.contains("not checked")), "{text}");

    // CAP_BPF and CAP_PERFMON without root load the eBPF programs, but perf-event uprobes
    // need CAP_SYS_ADMIN on this kernel: doctor tries one for real and says so.
    let (status, text, err) = tprof_as_nobody("+bpf,+perfmon", &["doctor"]);
    assert!(!status.success(), "uprobes need CAP_SYS_ADMIN here:\n{text}{err}");
    let lines = doctor_lines(&text);
    let uprobe = lines.iter().find(|(_, r)| r.starts_with("uprobe PMU")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(uprobe.0, "FAIL", "{text}");
    assert!(uprobe.1.contains("CAP_SYS_ADMIN"), "names what is missing: {text}");
    assert!(lines.iter().any(|(st, r)| st == "OK" && r.starts_with("tp_btf programs")), "eBPF itself loads:\n{text}");
}
