//! Errors a newcomer hits get a clear, actionable message and a failing exit code.

use tprof_tests::*;

fn fails_with(args: &[&str], needle: &str) {
    let mut t = spawn_tprof(args);
    let status = t.wait();
    let err = stderr_text(&t);
    assert!(!status.success(), "tprof {args:?} should fail; stderr: {err}");
    assert!(err.contains(needle), "tprof {args:?}: expected {needle:?} in stderr: {err}");
}

#[test]
fn no_such_pid() {
    require_root();
    fails_with(&["attach", "--pid", "999999999"], "no process with pid 999999999");
}

#[test]
fn kernel_thread() {
    require_root();
    fails_with(&["attach", "--pid", "2"], "kernel thread");
}

#[test]
fn process_without_probes() {
    require_root();
    let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let pid = sleeper.id().to_string();
    fails_with(&["attach", "--pid", &pid], "has no tprof probes");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn bad_flags() {
    fails_with(&["attach", "--pid", "1", "--duration", "5 parsecs"], "bad duration");
    fails_with(&["attach", "--pid", "1", "--trace-id", "xyz"], "32 hex digits");
}

#[test]
fn list_probes_of_target_binary() {
    let mut t = spawn_tprof(&["list", "--binary", target_bin().to_str().expect("utf-8 path")]);
    assert!(t.wait().success());
    let mut lines = Vec::new();
    while let Ok(l) = t.stdout.recv_timeout(std::time::Duration::from_secs(5)) {
        lines.push(l);
    }
    for probe in ["task_begin", "task_end", "region_begin", "region_end", "log"] {
        assert!(lines.iter().any(|l| l.contains(&format!(":tprof:{probe} "))), "tprof:{probe} listed: {lines:#?}");
    }
}

#[test]
fn not_root_names_missing_capabilities() {
    require_root();
    // Drop to nobody with no capabilities, as an operator who forgot sudo would be.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(tprof_bin())
        .args(["attach", "--pid", "1"])
        .output()
        .expect("setpriv (util-linux) runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("CAP_BPF and CAP_PERFMON") && err.contains("sudo"), "{err}");
}
