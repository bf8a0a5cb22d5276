//! The target's life while attached: threads, fork, exec, a deleted binary.

use super::*;

// ---- process lifecycle: threads, fork, exec, deleted binary ---------------------------------

#[test]
fn thousands_of_threads_spawned_and_joined() {
    require_root();
    const N: usize = 2000;
    let dir = TempDir::new("threads");
    let exe = private_copy(&fault_target_bin(), &dir, "fault-target");
    let (out, ()) = clean_session(|| {
        let mut target = start_program_as(&exe, &[&format!("threads:{N}")], TARGET_USER);
        let tprof = attach(&[target.pid()], &[]);
        target.send_line("go");
        target_says(&target, &format!("threads {N} done"));
        target_says(&target, "done");
        assert!(target.wait().success());
        let (out, status) = collect(tprof);
        assert!(status.success(), "tprof survives {N} threads coming and going: {status}");
        (out, ())
    });
    let sess = session(&out);
    assert_eq!(sess["stop_reason"], "target exited");
    let thr = summaries_named(&out, "thr");
    assert_eq!(thr.len(), N, "one summary per thread's task: {sess}");
    let complete = thr.iter().filter(|s| s["incomplete"].is_null()).count();
    assert_eq!(complete, N, "every task has its full ledger: {sess}");
    assert!(thr.iter().all(|s| s["threads"].as_array().map(Vec::len) == Some(1)), "each task ran on its own thread");
    let tids: HashSet<u64> = thr.iter().filter_map(|s| s["threads"][0].as_u64()).collect();
    assert!(tids.len() > N / 2, "thread ids are distinct (some may be reused): {}", tids.len());
    assert_eq!(sess["kernel_drops_total"], 0, "{sess}");
    assert_eq!(sess["missed_switch_ins"], 0, "no switch-in of a traced thread went unseen: {sess}");
    let warnings = sess["warnings"].to_string();
    assert!(!warnings.contains("could not track"), "the kernel's thread map never filled: {sess}");
}

/// Runs the fault target's `fork` request traced with `extra` flags: (tprof's output, the
/// target's lines, the child's pid and span).
fn trace_a_fork(name: &str, extra: &[&str]) -> (Vec<serde_json::Value>, Vec<String>, u64, String) {
    let dir = TempDir::new(name);
    let mut target = start_program_as(&private_copy(&fault_target_bin(), &dir, "fault-target"), &["fork", "task:after", "enabled"], TARGET_USER);
    let pid = target.pid();
    let tprof = attach(&[pid], extra);
    target.send_line("go");
    let mut lines = Vec::new();
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    let child_pid: u64 = fact(&lines, "child pid", "pid").parse().expect("child pid");
    let child_span = fact(&lines, "child pid", "span");
    assert_ne!(child_pid, u64::from(pid));
    assert!(lines.iter().any(|l| l == "enabled true"), "the parent stays armed: {lines:?}");
    assert_eq!(summaries_named(&out, "parent").len(), 1);
    assert_eq!(summaries_named(&out, "after").len(), 1);
    assert_eq!(session(&out)["stop_reason"], "target exited");
    assert_eq!(session(&out)["probe_links"], "uprobe_multi");
    (out, lines, child_pid, child_span)
}

#[test]
fn target_forks_a_child() {
    // A forked child is traced from its first instruction (its breakpoints and armed
    // semaphores are inherited with its memory; the kernel marks it traced before it
    // runs): its task is reported under its own pid, and the session counts it.
    require_root();
    let (out, lines, child_pid, child_span) = trace_a_fork("fork", &[]);
    let child = out.iter().find(|v| v["type"] == "summary" && v["span_id"] == child_span.as_str()).unwrap_or_else(|| panic!("the child's task: {out:#?}"));
    assert_eq!(child["pid"].as_u64(), Some(child_pid), "reported under the child's own pid: {child}");
    assert_eq!(child["name"], "child");
    assert!(child["incomplete"].is_null(), "its whole task was seen, begin to end: {child}");
    let sess = session(&out);
    assert_eq!(sess["processes_followed"], 1, "{sess}");
    assert_eq!(sess["processes_gone"], 2, "the child and the parent exited: {sess}");
    let before = fact(&lines, "child enabled-before", "enabled-before");
    assert_eq!(before, "true", "the child's probes are armed before its first one fires: {lines:?}");
}

#[test]
fn target_forks_a_child_not_followed() {
    // --no-follow: tprof traces the pids it was given only, and nothing of the child leaks
    // into the parent's report.
    require_root();
    let (out, lines, child_pid, child_span) = trace_a_fork("nofollow", &["--no-follow"]);
    assert!(!out.iter().any(|v| v["span_id"] == child_span.as_str()), "the child's task is not reported: {out:#?}");
    assert!(!out.iter().any(|v| v["pid"].as_u64() == Some(child_pid)), "no event of the child's pid");
    assert_eq!(session(&out)["processes_followed"], 0);
    // The child inherits the parent's memory, armed semaphores and breakpoints included.
    // With uprobe_multi links tied to the parent's pid, the kernel drops the child's hits
    // before tprof's program runs: its probes read armed and cost a trap each until tprof
    // detaches (docs: known limitations).
    let before = fact(&lines, "child enabled-before", "enabled-before");
    let after = fact(&lines, "child enabled ", "enabled");
    assert_eq!((before.as_str(), after.as_str()), ("true", "true"), "the child inherits the armed semaphores: {lines:?}");
}

/// The target execs another program (same pid). tprof keeps watching the pid: its rescan
/// finds the new program's probes and attaches them (stderr says so), so requests of the
/// new image are traced; tasks of the old image still open are reported incomplete.
fn exec_case(open_at_exec: bool) {
    require_root();
    let dir = TempDir::new(if open_at_exec { "exec-open" } else { "exec" });
    let new_prog = private_copy(&target_bin(), &dir, "tprof-target");
    let first = if open_at_exec { "exec-open" } else { "exec" };
    let mut target = start_program_as(
        &private_copy(&fault_target_bin(), &dir, "fault-target"),
        &["task:before", first, "--", new_prog.to_str().expect("utf-8 path"), "sleep:20", "enabled"],
        TARGET_USER,
    );
    let pid = target.pid();
    let tprof = attach(&[pid], &[]);
    target.send_line("go");
    let mut lines = Vec::new();
    let again = target.expect_line("ready ", &mut lines);
    assert_eq!(again, format!("ready {pid}"), "exec keeps the pid");
    // tprof notices the new image at its next rescan (every 500 ms).
    let rx = tprof.stderr.as_ref().expect("stderr");
    let mut err = Vec::new();
    let t0 = Instant::now();
    let noticed = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains("more probe sites in pid") => break true,
            Ok(l) => err.push(l),
            Err(_) if t0.elapsed() > Duration::from_secs(5) => break false,
            Err(_) => {}
        }
    };
    assert!(noticed, "tprof attaches the exec'ed program's probes; stderr: {err:?}");
    target.send_line("go");
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    assert!(lines.iter().any(|l| l == "enabled true"), "the new image's semaphores are armed: {lines:?}");
    let sess = session(&out);
    assert_eq!(sess["stop_reason"], "target exited", "{sess}");
    assert_eq!(summaries_named(&out, "before").len(), 1, "the old image's finished task");
    let sleep = summaries_named(&out, "sleep");
    assert_eq!(sleep.len(), 1, "the new image's task is traced: {out:#?}");
    assert!(sleep[0]["incomplete"].is_null(), "{}", sleep[0]);
    let blocked = ms(sleep[0], "blocked_ns");
    assert!((19.9..30.0).contains(&blocked), "the new image's sleep is charged to its own task: {}", sleep[0]);
    if open_at_exec {
        let span = fact(&lines, "open-at-exec", "span");
        let open = out.iter().find(|v| v["type"] == "summary" && v["span_id"] == span.as_str()).expect("the open task is reported");
        assert!(!open["incomplete"].is_null(), "a task the exec cut off is incomplete: {open}");
        // The exec ended the program that owned the task: the new image's work is not its
        // own. (Before the exec it slept 1 ms; the new program then ran for 20+ ms, of which
        // the sleep task took 20 ms of blocked time.)
        let charged = ms(open, "on_cpu_ns") + ms(open, "steal_ns") + ms(open, "blocked_ns") + ms(open, "runq_ns");
        assert!(charged < 10.0, "the task cut off by exec is not charged for the new program's time ({charged} ms): {open}");
    }
}

#[test]
fn target_execs_another_program() {
    exec_case(false);
}

#[test]
fn target_execs_with_a_task_open() {
    exec_case(true);
}

#[test]
fn target_execs_itself() {
    // exec of the same file: the kernel re-applies the pid's uprobes to the new image (the
    // perf events follow the task), so tracing goes on at once, without a second attach.
    require_root();
    let dir = TempDir::new("exec-self");
    let me = private_copy(&fault_target_bin(), &dir, "fault-target");
    let mut target = start_program_as(&me, &["task:before", "exec", "--", me.to_str().expect("utf-8 path"), "task:after", "enabled"], TARGET_USER);
    let pid = target.pid();
    let tprof = attach(&[pid], &[]);
    target.send_line("go");
    let mut lines = Vec::new();
    assert_eq!(target.expect_line("ready ", &mut lines), format!("ready {pid}"));
    target.send_line("go");
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    assert!(lines.iter().any(|l| l == "enabled true"), "still armed after the exec: {lines:?}");
    for name in ["before", "after"] {
        let s = summary(&out, name);
        assert_eq!(s["span_id"], fact(&lines, &format!("task {name}"), "span").as_str());
        assert!(s["incomplete"].is_null(), "{s}");
    }
    let sess = session(&out);
    assert_eq!(out.iter().filter(|v| v["type"] == "task_begin").count(), 2, "no duplicate attach: {sess}");
    assert_eq!(sess["stop_reason"], "target exited");
}

#[test]
fn binary_deleted_before_attach() {
    require_root();
    let dir = TempDir::new("deleted-before");
    let victim = private_copy(&target_bin(), &dir, "victim");
    let mut target = start_program_as(&victim, &["sleep:5", "regions"], TARGET_USER);
    let sites = probe_sites(target.pid()).len();
    std::fs::remove_file(&victim).expect("delete the running binary");
    let tprof = attach(&[target.pid()], &[]);
    target.send_line("go");
    let mut lines = Vec::new();
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    let sess = session(&out);
    assert_eq!(sess["sites"], sites, "the probes are found through /proc/PID/exe: {sess}");
    for name in ["sleep", "regions"] {
        let s = summary(&out, name);
        assert_eq!(s["span_id"], fact(&lines, &format!("{name} task"), "span").as_str());
        assert!(s["incomplete"].is_null(), "{s}");
    }
    assert_eq!(out.iter().filter(|v| v["type"] == "task_begin").count(), 2, "each task begins once");
}

#[test]
fn binary_deleted_while_attached() {
    // A deploy replacing the binary of a traced service: the file goes while tprof is
    // attached. Its rescans (every 500 ms) must not attach the same probes a second time.
    require_root();
    let dir = TempDir::new("deleted-during");
    let victim = private_copy(&target_bin(), &dir, "victim");
    let mut target = start_program_as(&victim, &["sleep:5", "regions"], TARGET_USER);
    let sites = probe_sites(target.pid()).len() as u64;
    let tprof = attach(&[target.pid()], &[]);
    std::fs::remove_file(&victim).expect("delete the running binary");
    std::thread::sleep(Duration::from_millis(1300));
    target.send_line("go");
    let mut lines = Vec::new();
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let mut tprof = tprof;
    let status = tprof.wait();
    let err = stderr_text(&tprof);
    let (out, _) = collect(tprof);
    assert!(status.success(), "{status}");
    let sess = session(&out);
    let begins: Vec<&Value> = out.iter().filter(|v| v["type"] == "task_begin").collect();
    assert_eq!(
        (sess["sites"].as_u64(), begins.len()),
        (Some(sites), 2),
        "the deleted executable's probes are attached once, not again through /proc/PID/exe; stderr: {err}\nsession: {sess}"
    );
    assert_eq!(out.iter().filter(|v| v["type"] == "summary").count(), 2, "{out:#?}");
}

#[test]
fn sparse_huge_executable_is_read_in_bounded_pieces() {
    // A target whose executable is 2 GiB, mostly holes: the helper reads its headers and
    // notes, not the file (it used to read it whole: 2 GiB of helper memory, seconds per
    // scan, and a helper that stopped answering with several such files).
    require_root();
    let dir = TempDir::new("sparse-huge");
    let huge = private_copy(&target_bin(), &dir, "huge");
    std::fs::OpenOptions::new().write(true).open(&huge).and_then(|f| f.set_len(2 << 30)).expect("make the copy 2 GiB, sparse");
    let mut target = start_program(&huge, &["regions"]);
    let sites = probe_sites(target.pid()).len() as u64;
    let tprof = attach(&[target.pid()], &[]);
    let helper = helper_of(tprof.child.id());
    let peak_kb: u64 = status_field(&format!("/proc/{helper}/status"), "VmHWM:")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM in kB");
    assert!(peak_kb < 256 << 10, "the helper's peak memory after scanning a 2 GiB file: {peak_kb} kB");
    target.send_line("go");
    target.expect_line("done", &mut Vec::new());
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    let sess = session(&out);
    assert_eq!(sess["sites"].as_u64(), Some(sites), "{sess}");
    assert_eq!(summaries_named(&out, "regions").len(), 1, "the huge binary's request is traced");
}
