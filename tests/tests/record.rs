//! `tprof record` writes a session compactly; `tprof report` produces the same reports
//! offline, even after the target is gone, and from a recording cut short.

use std::process::Command;

use serde_json::Value;
use tprof_tests::*;

fn report(file: &std::path::Path, extra: &[&str]) -> Vec<Value> {
    let out = Command::new(tprof_bin()).arg("report").arg(file).args(["--format", "json"]).args(extra).output().expect("run tprof report");
    assert!(out.status.success(), "tprof report failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("non-JSON {l:?}: {e}")))
        .collect()
}

#[test]
fn record_then_report_offline() {
    require_root();
    let dir = std::env::temp_dir().join(format!("tprof-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("session.tprof");
    // The target runs as uid 1000 from its own 0700 directory; tprof records it as root.
    let mut target = start_target_as(&["mutex:10", "regions", "sleep:5"], RunAs::UID_1000.private());
    let pid = target.pid().to_string();
    let mut rec = spawn_tprof(&["record", "--pid", &pid, "-o", file.to_str().expect("utf-8")]);
    await_stderr(&rec, "tprof: attached", "tprof record did not attach");
    target.send_line("go");
    target.expect_line("done", &mut Vec::new());
    assert!(target.wait().success());
    assert!(rec.wait().success(), "tprof record failed");
    let mut tail = Vec::new();
    while let Ok(l) = rec.stderr.as_ref().expect("stderr").recv_timeout(std::time::Duration::from_secs(5)) {
        tail.push(l);
    }
    assert!(tail.iter().any(|l| l.contains("recorded") && l.contains("records")), "{tail:?}");

    // The target is gone: the report comes from the file alone.
    let out = report(&file, &[]);
    let s = summary(&out, "mutex");
    assert!(ms(s, "blocked_ns") >= 5.0, "{s}");
    let kernel = s["blocks"][0]["stack"]["kernel"].as_array().cloned().unwrap_or_default();
    assert!(kernel.iter().any(|f| f["func"].as_str().is_some_and(|n| n.contains("futex"))), "recorded stack: {s}");
    assert_eq!(summary(&out, "regions")["regions"].as_array().map(Vec::len), Some(2));
    assert!(ms(summary(&out, "sleep"), "blocked_ns") >= 4.9);
    let sess = session(&out);
    assert!(sess["stop_reason"].as_str().is_some_and(|r| r.starts_with("recorded session")), "{sess}");
    assert_eq!(sess["tasks_ended"], 4);
    // Filters work offline too.
    let only = report(&file, &["--task", "sleep", "--summary-only"]);
    let names: Vec<&str> = only.iter().filter(|v| v["type"] == "summary").filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["sleep"]);

    // A recording cut short (tprof killed mid-write) still reports what it holds, and says so.
    let bytes = std::fs::read(&file).expect("read recording");
    let cut = dir.join("cut.tprof");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("write cut recording");
    let out = report(&cut, &["--allow-truncated"]);
    let sess = session(&out);
    assert!(sess["stop_reason"].as_str().is_some_and(|r| r.contains("no final report")), "{sess}");
    assert!(sess["records"].as_u64().unwrap_or(0) > 0, "{sess}");

    // Not a recording: a clear error.
    let junk = dir.join("junk");
    std::fs::write(&junk, b"hello").expect("write junk");
    let out = Command::new(tprof_bin()).arg("report").arg(&junk).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too short to be a tprof recording"));
    let _ = std::fs::remove_dir_all(&dir);
}
