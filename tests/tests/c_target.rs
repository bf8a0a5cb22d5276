//! A C program using `<sys/sdt.h>` through `tprof.h`, built -O0 (every argument a memory
//! operand such as `8@-40(%rbp)`) and -O2 (registers, constants and spilled slots): tprof
//! must decode exactly the ids, names and logs the program passed.

use std::path::PathBuf;
use std::process::Command;

use tprof_tests::*;

fn build(opt: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("tprof-c-{}-{opt}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("tprof_example");
    let st = Command::new("gcc")
        .arg(opt)
        .args(["-g", "-fno-omit-frame-pointer", "-Wall", "-Werror", "-I"])
        .arg(root.join("usdt-probes/include"))
        .arg(root.join("usdt-probes/examples/c/tprof_example.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("gcc runs (cargo xtask setup installs it)");
    assert!(st.success(), "gcc {opt} failed");
    out
}

fn check(opt: &str) {
    require_root();
    let exe = build(opt);
    let (out, lines) = clean_session(|| {
        let mut target = start_program(&exe, &[]);
        let tprof = attach(&[target.pid()], &[]);
        target.send_line("go");
        let mut lines = Vec::new();
        target.expect_line("done", &mut lines);
        assert!(target.wait().success());
        let (out, status) = collect(tprof);
        assert!(status.success());
        (out, lines)
    });
    let sess = session(&out).clone();
    assert!(lines.iter().any(|l| l == "tprof probes armed"), "TPROF_ENABLED() is true while attached: {lines:?}");

    let requests: Vec<&String> = lines.iter().filter(|l| l.starts_with("request ")).collect();
    assert_eq!(requests.len(), 3, "{lines:?}");
    let summaries: Vec<&serde_json::Value> = out.iter().filter(|v| v["type"] == "summary" && v["name"] == "GET /users").collect();
    assert_eq!(summaries.len(), 3, "{opt}: three requests decoded: {out:#?}");
    for (i, (line, s)) in requests.iter().zip(&summaries).enumerate() {
        // "request 0: trace <32 hex> span <16 hex> done"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(s["trace_id"], words[3], "{opt}: trace-id decoded from memory operands: {s}");
        assert_eq!(s["span_id"], words[5], "{opt}: span-id: {s}");
        assert_eq!(s["parent_span_id"], "0000000000000000");
        let logs = s["logs"].as_array().expect("logs");
        let rows = (12 + i).to_string();
        assert!(logs.iter().any(|l| l["key"] == "rows" && l["value"] == rows.as_str()), "{opt}: rows={rows} logged: {s}");
        assert!(logs.iter().any(|l| l["key"] == "status" && l["value"] == "200"), "{s}");
        // The db region sleeps 20 + 10 i ms: it lasts at least that long.
        let r = &s["regions"][0];
        assert_eq!(r["name"], "db");
        let dur = (r["end_ns"].as_u64().unwrap_or(0) - r["start_ns"].as_u64().unwrap_or(0)) as f64 / 1e6;
        assert!(dur >= (20 + 10 * i) as f64, "{opt}: db region {dur} ms");
        assert!(ms(s, "blocked_ns") >= (20 + 10 * i) as f64 - 0.1, "{s}\nsession: {sess}");
    }
    let bg = summary(&out, "background");
    assert!(ms(bg, "blocked_ns") >= 4.9, "the attached slice (5 ms sleep) is charged to the background task: {bg}\nsession: {sess}");
    assert_eq!(session(&out)["missed_switch_ins"], 0, "{out:#?}");
    assert_eq!(session(&out)["warnings"].as_array().map(Vec::len), Some(0), "every C probe site attached: {out:#?}");
}

#[test]
fn c_sdt_probes_at_o0_decode_memory_operands() {
    check("-O0");
}

#[test]
fn c_sdt_probes_at_o2_decode() {
    check("-O2");
}
