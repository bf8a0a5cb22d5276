use std::sync::Arc;

use serde_json::Value;

use super::collect::{Collector, Piece};
use super::render::{html_escape, log_bins, script_json};
use super::*;
use crate::model::event::{Meta, Record, TaskKey, Waker};
use crate::model::ledger::{Block, RegionSpan, TaskState};
use crate::model::stack::{Frame, Stack};
use crate::model::stats::Stats;

const HOSTILE: &str = "</script><img src=x onerror=alert(1)>";
const TERMINAL: &str = "\x1b[2J\x1b]0;owned\x07\u{202E}gpj.exe";

fn key(span_id: u64) -> TaskKey {
    TaskKey { trace_id: 0xabc, span_id }
}

fn meta(span_id: u64, tid: u32, ts_ns: u64) -> Meta {
    Meta { cpu: 0, ts_ns, pid: 7, tid, task: key(span_id) }
}

fn task(name: &str, span_id: u64, wall: u64) -> TaskState {
    TaskState { key: key(span_id), name: name.into(), pid: 7, begin_ns: Some(1_000), end_ns: Some(1_000 + wall), threads: vec![11], ..Default::default() }
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tprof-html-{}-{name}.html", std::process::id()))
}

/// The JSON document embedded in `page`.
fn embedded(page: &str) -> Value {
    let open = r#"<script type="application/json" id="tprof-data">"#;
    let start = page.find(open).expect("data block") + open.len();
    let end = start + page[start..].find("</script>").expect("end of the data block");
    serde_json::from_str(&page[start..end]).expect("the data block is JSON")
}

/// A page made by the sink from `tasks` (with a few events each) and the session's stats.
fn page_of(tasks: &[TaskState], sink: HtmlSink) -> String {
    let mut sink = sink;
    let mut report = SessionReport { pids: vec![7], duration_ns: 5_000_000, stop_reason: "target exited".into(), ..Default::default() };
    for t in tasks {
        let on = Record::OnCpu { meta: meta(t.key.span_id, 11, 1_500), start_ns: 1_000, steal_ns: 0 };
        sink.event(&on, t).expect("event");
        report.stats.add(t);
        sink.summary(t).expect("summary");
    }
    sink.page(&report)
}

#[test]
fn hostile_strings_from_a_target_are_text_never_markup() {
    let mut t = task(HOSTILE, 1, 5_000_000);
    t.regions.push(RegionSpan { name: format!("{HOSTILE}{TERMINAL}").into(), start_ns: 1_100, end_ns: Some(2_000), depth: 0 });
    t.logs.push((HOSTILE.into(), TERMINAL.into()));
    let comm = format!("<b>{TERMINAL}");
    let frame = Frame { addr: 1, func: Some(format!("{HOSTILE}::f")), file: Some("/x/<a>.rs".into()), line: Some(3) };
    t.blocks.push(Block {
        tid: 11,
        start_ns: 1_200,
        blocked_ns: 500,
        syscall_nr: Some(202),
        waker: Waker::Thread { pid: 8, tid: 9, comm: comm.clone(), task: Some(key(2)), via_softirq: false },
        stack_ids: Default::default(),
        kernel_addrs: Vec::new(),
        stack: Some(Stack { kernel: vec![frame.clone()], user: vec![frame], user_truncated: false }),
        waker_task_name: Some(HOSTILE.into()),
        chain: Vec::new(),
    });
    t.process = Some(Arc::new(ProcessInfo { pid: 7, comm: Some(HOSTILE.into()), command_line: Some(TERMINAL.into()), threads: vec![(11, HOSTILE.into())], ..Default::default() }));
    let path = temp("hostile");
    let sink = HtmlSink::create(&path).expect("create").offline().with_critical_path(Box::new(|t: &TaskState| {
        vec![CriticalStep { tid: 11, start_ns: t.begin_ns.unwrap_or(0), end_ns: t.begin_ns.unwrap_or(0) + 10, label: HOSTILE.into() }]
    }));
    let extras = Box::new(|_: &SessionReport| vec![Extra { task_type: Some(HOSTILE.into()), title: HOSTILE.into(), svg: format!("<svg><text>{HOSTILE}</text></svg>") }]);
    let page = page_of(&[t], sink.with_extras(extras));
    let _ = std::fs::remove_file(&path);

    // The page's own two script elements end, and nothing else does; no element of the
    // target's making exists.
    assert_eq!(page.to_ascii_lowercase().matches("</script").count(), 2, "only the page's own script elements end");
    assert!(!page.contains("<img"), "no element from a target string");
    assert!(!page.contains("<b>"), "no element from a target string");
    assert!(!page.contains('\x1b') && !page.contains('\x07') && !page.contains('\u{202E}'), "no raw terminal or bidi control");
    assert!(page.contains(r"\u003c/script\u003e\u003cimg src=x onerror=alert(1)\u003e"), "the name is in the data, escaped");
    // What the page's script will show, as text: the string, its controls made visible.
    let d = embedded(&page);
    assert_eq!(d["types"][0]["name"], HOSTILE);
    let r = &d["requests"][0];
    assert_eq!(r["name"], HOSTILE);
    assert_eq!(r["regions"][0]["name"], format!("{HOSTILE}\\u{{1b}}[2J\\u{{1b}}]0;owned\\u{{7}}\\u{{202e}}gpj.exe"));
    assert_eq!(r["logs"][0][1], "\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{202e}gpj.exe");
    assert_eq!(r["blocks"][0]["waker"]["comm"], "<b>\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{202e}gpj.exe");
    assert!(r["blocks"][0]["stack"]["user"][0].as_str().is_some_and(|f| f.starts_with(HOSTILE)), "{r}");
    assert_eq!(r["threads"][0]["name"], HOSTILE);
    assert_eq!(r["critical"][0]["label"], HOSTILE);
    assert_eq!(d["extras"][0]["title"], HOSTILE);
    // The page's script puts data into the document only as text.
    let js = include_str!("page.js");
    assert!(!js.contains("innerHTML") && !js.contains("outerHTML") && !js.contains("insertAdjacentHTML") && !js.contains("document.write"));
}

#[test]
fn the_page_needs_no_network() {
    let page = page_of(&[task("a", 1, 1_000)], HtmlSink::create(&temp("offline")).expect("create"));
    let _ = std::fs::remove_file(temp("offline"));
    // The only URL is the SVG namespace (an identifier, never fetched); the page's policy
    // forbids loading anything (`default-src 'none'`).
    assert_eq!(page.matches("://").count(), page.matches("http://www.w3.org/2000/svg").count(), "no URL but the SVG namespace");
    assert!(page.contains("default-src 'none'"));
    for css_or_js in [include_str!("page.css"), include_str!("page.js")] {
        assert!(!css_or_js.contains("</"), "the inline CSS and JS cannot close their element");
        assert!(!css_or_js.contains("@import") && !css_or_js.contains("url("), "no fetch from CSS");
    }
}

#[test]
fn script_json_escapes_what_could_end_the_block() {
    let v = serde_json::json!({"s": "a</script>&<!--\u{2028}\u{2029}"});
    let s = script_json(&v);
    assert_eq!(s, r#"{"s":"a\u003c/script\u003e\u0026\u003c!--\u2028\u2029"}"#);
    assert_eq!(serde_json::from_str::<Value>(&s).expect("still JSON"), v, "the same value");
    assert_eq!(html_escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
}

#[test]
fn table_and_histograms_are_the_session_statistics() {
    // Known latencies: type "a" 1..=100 ms, type "b" 3 x 40 us.
    let mut tasks: Vec<TaskState> = (1..=100u64).map(|i| task("a", i, i * 1_000_000)).collect();
    tasks.extend((0..3u64).map(|i| task("b", 1_000 + i, 40_000)));
    let mut incomplete = task("a", 2_000, 0);
    incomplete.end_ns = None;
    tasks.push(incomplete);
    let page = page_of(&tasks, HtmlSink::create(&temp("stats")).expect("create"));
    let _ = std::fs::remove_file(temp("stats"));
    let d = embedded(&page);
    let types = d["types"].as_array().expect("types");
    assert_eq!(types.iter().map(|t| t["name"].as_str().unwrap_or("")).collect::<Vec<_>>(), ["a", "b"]);
    let a = &types[0];
    assert_eq!((a["count"].as_u64(), a["incomplete"].as_u64(), a["max"].as_u64()), (Some(100), Some(1), Some(100_000_000)));
    // Percentiles are the model's: upper bounds within 1/16.
    for (q, want) in [("p50", 50_000_000u64), ("p90", 90_000_000), ("p99", 99_000_000)] {
        let got = a[q].as_u64().expect(q);
        assert!(got >= want && got as f64 <= want as f64 * 1.0625, "{q} {got}");
    }
    // Every task in exactly the power-of-two bin that holds its latency.
    let bins: Vec<[u64; 3]> = serde_json::from_value(a["hist"].clone()).expect("bins");
    for &[lo, hi, n] in &bins {
        assert!(lo.is_power_of_two() && hi == 2 * lo - 1, "[{lo}, {hi}]");
        let want = (1..=100u64).filter(|i| (lo..=hi).contains(&(i * 1_000_000))).count() as u64;
        assert_eq!(n, want, "bin [{lo}, {hi}]");
    }
    assert_eq!(bins.iter().map(|b| b[2]).sum::<u64>(), 100);
    let b = &types[1];
    assert_eq!(b["hist"], serde_json::json!([[32768, 65535, 3]]));
    assert_eq!(b["avg_on_cpu"].as_u64(), Some(0));
    // The slowest requests: the 20 slowest overall (all "a"), and b's 3.
    let reqs = d["requests"].as_array().expect("requests");
    let top: Vec<u64> = reqs.iter().filter(|r| r["top"] == true).filter_map(|r| r["wall_ns"].as_u64()).collect();
    assert_eq!(top, (81..=100u64).rev().map(|i| i * 1_000_000).collect::<Vec<_>>());
    assert_eq!(b["slowest"].as_array().map(Vec::len), Some(3));
    assert_eq!(reqs.len(), 23, "20 overall + b's 3 (a's 3 slowest are among the 20)");
    assert_eq!(d["left"]["requests"], 104);
    assert_eq!(d["left"]["unranked"], 1);
    // Its on-CPU interval, relative to the request's begin, on its thread's lane.
    assert_eq!(reqs[0]["threads"][0]["pieces"][0], serde_json::json!(["on", 0, 500, "on CPU"]));
}

#[test]
fn a_histogram_of_values_below_sixteen_bins_by_power_of_two() {
    let mut s = Stats::default();
    for wall in [0u64, 1, 5, 6, 7, 8] {
        s.add(&task("x", wall + 1, wall));
    }
    let bins = log_bins(&s.by_name["x"].wall);
    assert_eq!(bins, vec![[0, 0, 1], [1, 1, 1], [4, 7, 3], [8, 15, 1]]);
}

#[test]
fn memory_is_bounded_and_what_is_left_out_is_counted() {
    let mut c = Collector::default();
    let mut none = |_: &TaskState| Vec::new();
    // 40 types x 50 requests, each with more intervals than a request keeps.
    let mut n = 0u64;
    for round in 0..50u64 {
        for ty in 0..40u64 {
            n += 1;
            let t = task(&format!("t{ty}"), n, (n * 7919) % 100_003 * 1_000);
            for i in 0..(MAX_PIECES_PER_TASK as u64 + 10) {
                let rec = Record::OnCpu { meta: meta(n, 11, 1_000 + i * 2 + 1), start_ns: 1_000 + i * 2, steal_ns: 0 };
                c.event(&rec);
            }
            assert!(c.open_pieces() <= MAX_OPEN_PIECES);
            c.summary(&t, &mut none);
            assert!(c.kept_len() <= TOP_OVERALL + TOP_PER_TYPE * MAX_TYPES_WITH_REQUESTS, "round {round}");
        }
    }
    assert_eq!(c.open_pieces(), 0, "an ended task's intervals are released");
    assert_eq!(c.left.over_types, 8 * 50, "types beyond the first {MAX_TYPES_WITH_REQUESTS} rank overall only");
    let (kept, slowest) = c.finish();
    assert_eq!(slowest.len(), MAX_TYPES_WITH_REQUESTS);
    for (_, k) in &kept {
        assert_eq!(k.pieces.len(), MAX_PIECES_PER_TASK);
        assert_eq!(k.left_out, 10, "the intervals over the bound are counted");
        assert!(matches!(k.pieces[0], Piece::OnCpu { .. }));
    }
    // The slowest overall are the slowest of all: known truth from the walls given.
    let mut walls: Vec<u64> = (1..=n).map(|i| (i * 7919) % 100_003 * 1_000).collect();
    walls.sort_unstable_by(|a, b| b.cmp(a));
    let top: Vec<u64> = kept.iter().filter(|(top, _)| *top).filter_map(|(_, k)| k.task.wall_ns()).collect();
    assert_eq!(top, walls[..TOP_OVERALL]);
}

#[test]
fn intervals_open_at_the_end_are_counted() {
    let mut c = Collector::default();
    c.event(&Record::OnCpu { meta: meta(5, 11, 10), start_ns: 5, steal_ns: 0 });
    let (kept, _) = c.finish();
    assert!(kept.is_empty());
    assert_eq!(c.left.orphan_pieces, 1);
}
