//! `--html FILE`: the report page of a real session (live `tprof attach`, `tprof record`, and
//! `tprof report` of the recording), opened in a real headless browser (Debian's
//! `chromium`, which `cargo xtask setup` installs): it loads with no script or console
//! error and nothing refused by its no-network policy, shows the task types and requests
//! tprof saw, and a screenshot of it is kept under `target/test-output/html/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tprof_tests::*;

/// The target's user: uid 1000, binary in its own 0700 directory (as in attach.rs).
const USER: RunAs = RunAs::UID_1000.private();

/// Where the pages and screenshots stay for a person to look at.
fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    let dir = target.join("test-output").join("html");
    std::fs::create_dir_all(&dir).expect("test output directory");
    dir
}

/// Runs headless chromium on `page` with `args`; returns (stdout, stderr). Its profile
/// lives in a fresh directory; background networking is off (the page needs none, and the
/// test must not either).
fn chromium(page: &Path, args: &[&str]) -> (String, String) {
    let profile = std::env::temp_dir().join(format!("tprof-html-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let out = Command::new("timeout")
        .arg("120")
        .arg("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions"])
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium (installed by `cargo xtask setup`)");
    let _ = std::fs::remove_dir_all(&profile);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed ({}): {stderr}", out.status);
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// The page's DOM after its script ran, checked for errors: none caught by the page
/// (`window.onerror`, `console.error`: its body's `data-errors`), none in the browser's log
/// (uncaught exceptions, console messages, loads refused by the page's policy).
fn rendered(page: &Path) -> String {
    let (dom, log) = chromium(page, &["--dump-dom"]);
    assert!(dom.contains(r#"data-rendered="1""#), "the page's script did not finish: {}", head(&dom));
    assert!(dom.contains(r#"data-error-count="0""#) && dom.contains(r#"data-errors="""#), "script errors: {}", head(&dom));
    for bad in ["Uncaught", "CONSOLE", "Refused to"] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(bad)).collect();
        assert!(lines.is_empty(), "browser log has {bad:?}: {lines:#?}");
    }
    dom
}

fn head(s: &str) -> &str {
    &s[..s.len().min(2000)]
}

/// Takes a screenshot of `page` into `png` and checks it is a non-empty PNG.
fn screenshot(page: &Path, png: &Path) {
    let _ = std::fs::remove_file(png);
    chromium(page, &[&format!("--screenshot={}", png.display()), "--window-size=1400,2000", "--hide-scrollbars"]);
    let bytes = std::fs::read(png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", png.display());
    // Width and height from the IHDR chunk: the window asked for.
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!((dim(16), dim(20)), (1400, 2000), "screenshot size");
    assert!(bytes.len() > 10_000, "a page with tables and drawings is more than a blank PNG: {} bytes", bytes.len());
}

/// The HTML of the element whose opening tag contains `marker`, up to its `</section>`.
fn section<'a>(dom: &'a str, marker: &str) -> &'a str {
    let at = dom.find(marker).unwrap_or_else(|| panic!("no {marker:?} in the page"));
    let start = dom[..at].rfind('<').unwrap_or(at);
    let end = dom[at..].find("</section>").map_or(dom.len(), |e| at + e);
    &dom[start..end]
}

/// The summaries tprof printed, by name: (span id, object).
fn summaries(out: &[Value]) -> Vec<(String, &Value)> {
    out.iter().filter(|v| v["type"] == "summary").map(|v| (v["name"].as_str().unwrap_or("").to_string(), v)).collect()
}

/// What every page of these sessions must show: each task type in the table and its own
/// section with a histogram bar per request count, and each request (all are among the 20
/// slowest: there are 5) as a waterfall with its figures.
fn check_page(dom: &str, out: &[Value], lines: &[String]) {
    let sums = summaries(out);
    assert_eq!(sums.len(), 5, "sleep, spin, holder, mutex, regions: {sums:?}");
    for (name, s) in &sums {
        let span = s["span_id"].as_str().expect("span_id");
        assert!(dom.contains(&format!(r#"<tr data-type="{name}">"#)), "{name} in the task-type table");
        let ty = section(dom, &format!(r#"class="type" data-type="{name}""#));
        assert!(ty.contains(r#"class="bar""#), "{name}: a histogram bar: {ty}");
        assert!(ty.contains(&format!("#req-{span}")), "{name}: links to its slowest request: {ty}");
        let req = section(dom, &format!(r#"id="req-{span}""#));
        let wall = s["wall_ns"].as_u64().expect("wall_ns");
        assert!(req.contains(&format!(r#"data-wall-ns="{wall}""#)), "{name}: its wall time: {}", head(req));
        assert!(req.contains(&format!("<h3>\"{name}\" — ")), "{name}: its title: {}", head(req));
        assert!(req.contains(r#"class="waterfall""#), "{name}: a waterfall");
    }
    // The sleep blocks in its syscall, woken by the kernel's timer: a blocked interval on
    // its thread's lane and its longest block listed.
    let sleep = section(dom, &format!(r#"id="req-{}""#, summary(out, "sleep")["span_id"].as_str().expect("span")));
    assert!(sleep.contains(r#"class="blocked""#), "sleep: a blocked interval drawn: {}", head(sleep));
    assert!(sleep.contains("woken by the kernel"), "sleep: its waker: {}", head(sleep));
    // The spin runs: an on-CPU interval, and no block.
    let spin = section(dom, &format!(r#"id="req-{}""#, summary(out, "spin")["span_id"].as_str().expect("span")));
    assert!(spin.contains(r#"class="on""#), "spin: on-CPU intervals drawn: {}", head(spin));
    // The mutex request is woken by the holder thread, whose own task is named.
    let mutex = section(dom, &format!(r#"id="req-{}""#, summary(out, "mutex")["span_id"].as_str().expect("span")));
    let holder_tid = fact(lines, "mutex holder", "tid");
    assert!(mutex.contains(&format!("tid {holder_tid} (")), "mutex: woken by the holder tid {holder_tid}: {}", head(mutex));
    assert!(mutex.contains("futex"), "mutex: blocked in futex: {}", head(mutex));
    // Its long futex block has a stack: the type's off-CPU flame graph is on the page.
    assert!(dom.contains("mutex: off-CPU ("), "the mutex type's off-CPU flame graph");
    // Its critical path runs through the holder's task (the correlator's, drawn as a row).
    assert!(mutex.contains("critical path") && mutex.contains("› on cpu (holder)"), "mutex: critical path through the holder: {}", head(mutex));
    assert!(mutex.contains(r#"class="stack""#), "mutex: its long block's stack: {}", head(mutex));
    // The regions request draws its two regions.
    let regions = section(dom, &format!(r#"id="req-{}""#, summary(out, "regions")["span_id"].as_str().expect("span")));
    for r in ["outer", "inner"] {
        assert!(regions.contains(&format!(">{r}</text>")) || regions.contains(&format!("<title>{r}:")), "region {r}: {}", head(regions));
    }
}

const REQUESTS: [&str; 4] = ["sleep:20", "spin:15", "mutex:10", "regions"];

#[test]
fn a_live_sessions_page_loads_in_a_browser_and_shows_its_requests() {
    let dir = output_dir();
    let page = dir.join("attach.html");
    let page_arg = page.to_str().expect("utf-8 path");
    let (out, lines) = trace_requests(&REQUESTS, &["--html", page_arg], USER);
    assert_eq!(session(&out)["stop_reason"], "target exited");
    let dom = rendered(&page);
    check_page(&dom, &out, &lines);
    screenshot(&page, &dir.join("attach.png"));
}

#[test]
fn record_and_report_write_the_same_page() {
    require_root();
    let dir = output_dir();
    let file = dir.join("session.tprof");
    let live_page = dir.join("record.html");
    let mut target = start_target_as(&REQUESTS, USER);
    let pid = target.pid().to_string();
    let mut rec = spawn_tprof(&["record", "--pid", &pid, "-o", file.to_str().expect("utf-8"), "--html", live_page.to_str().expect("utf-8")]);
    let stderr = rec.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    tprof_tests::child::expect_line(&stderr, "tprof: attached", PATIENCE, &mut seen, "tprof record").expect("tprof record attached");
    target.send_line("go");
    let mut lines = Vec::new();
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    assert!(rec.wait().success(), "tprof record failed");

    // The report of the recording, as NDJSON (the truth the pages are checked against) and
    // as a page.
    let report_page = dir.join("report.html");
    let o = Command::new(tprof_bin())
        .arg("report")
        .arg(&file)
        .args(["--format", "json", "--html"])
        .arg(&report_page)
        .output()
        .expect("run tprof report");
    assert!(o.status.success(), "tprof report failed: {}", String::from_utf8_lossy(&o.stderr));
    let out: Vec<Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("NDJSON")).collect();
    let report_dom = rendered(&report_page);
    check_page(&report_dom, &out, &lines);
    let live_dom = rendered(&live_page);
    check_page(&live_dom, &out, &lines);
    screenshot(&report_page, &dir.join("report.png"));
}
