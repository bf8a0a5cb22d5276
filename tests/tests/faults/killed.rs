//! tprof killed while attached, and two tprof instances on one pid.

use super::*;

// ---- tprof killed while attached -----------------------------------------------------------

/// SIGTERM or SIGKILL tprof mid-session: the kernel objects go, the sites are `nop`s again,
/// the semaphores are disarmed and the target runs on.
fn killed_while_attached(sig: libc::c_int) {
    require_root();
    let dir = TempDir::new(&format!("kill{sig}"));
    let mut target = start_private_target(&dir, &["sleep:5", "enabled", "wait", "enabled", "sleep:1"]);
    let pid = target.pid();
    let sites = probe_sites(pid);
    assert!(site_bytes(pid, &sites).iter().all(|&b| b == 0x90), "probes are nops before tprof attaches");
    let tprof = attach(&[pid], &[]);
    let helper = helper_of(tprof.pid());
    let fds = bpf_fds_of(tprof.pid());
    assert!(fds.progs.len() >= 2, "tp_btf programs and the USDT program are loaded: {fds:?}");
    assert_eq!(bpf_fds_of(helper).perf_events, 0, "the helper keeps no uprobe of its own");
    // This kernel has uprobe_multi links: one per file and USDT program (the fault target's
    // sites use both programs), beside one per tracepoint, and no perf event at all.
    assert_eq!(fds.perf_events, 0, "no uprobe perf events with uprobe_multi links: {fds:?}");
    assert_eq!(fds.links.len(), profiler_common::programs::TRACEPOINTS.len() + 2, "a link per tracepoint and per file and program: {fds:?} ({} sites)", sites.len());
    assert!(!fds.maps.is_empty(), "{fds:?}");
    target.send_line("go");
    assert_eq!(target_says(&target, "enabled"), "enabled true");
    assert!(site_bytes(pid, &sites).iter().all(|&b| b == 0xcc), "every site is a breakpoint while attached");

    tprof.signal(sig);
    let mut tprof = tprof;
    if sig == libc::SIGTERM {
        let (out, status) = collect(tprof);
        assert!(status.success(), "SIGTERM is a clean stop: {status}");
        let sess = session(&out);
        assert_eq!(sess["stop_reason"], "terminated (SIGTERM)", "{sess}");
        assert_eq!(summaries_named(&out, "sleep").len(), 1, "the finished request is reported: {out:#?}");
    } else {
        let status = wait_within(&mut tprof, Duration::from_secs(10)).expect("SIGKILL ends tprof");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }
    assert_released(&fds);
    assert_sites_restored(pid, &sites);
    assert_gone(helper, "the privileged helper");
    target.send_line("next");
    assert_eq!(target_says(&target, "enabled"), "enabled false", "the kernel disarmed the semaphores when tprof went");
    target_says(&target, "done");
    assert!(target.wait().success(), "the target runs on unharmed");
}

#[test]
fn sigterm_while_attached_leaves_nothing_behind() {
    killed_while_attached(libc::SIGTERM);
}

#[test]
fn sigkill_while_attached_leaves_nothing_behind() {
    killed_while_attached(libc::SIGKILL);
}

#[test]
fn after_attach_tprof_holds_no_privilege_and_its_helper_three() {
    require_root();
    let dir = TempDir::new("privs");
    let mut target = start_private_target(&dir, &["sleep:5"]);
    let tprof = spawn_tprof(&["-v", "attach", "--format", "json", "--pid", &target.pid().to_string()]);
    let mut early = Vec::new();
    wait_attached(&tprof, &mut early);
    let early = early.join("\n");
    let me = tprof.pid();
    let helper = helper_of(me);
    // tprof itself, every thread of it: no capability in any set, no longer uid 0.
    let uid = std::env::var("SUDO_UID").ok().and_then(|u| u.parse::<u32>().ok()).filter(|u| *u != 0).unwrap_or(65534);
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{me}/task")).expect("tasks").flatten().map(|e| e.path().join("status").display().to_string()).collect();
    assert!(!tasks.is_empty());
    for t in &tasks {
        for set in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:", "CapBnd:"] {
            assert_eq!(caps(t, set), 0, "{t}: {set} of tprof is empty");
        }
        assert_eq!(status_field(t, "Uid:"), format!("{uid}\t{uid}\t{uid}\t{uid}"), "{t}");
        assert_eq!(status_field(t, "NoNewPrivs:"), "1", "{t}");
    }
    // The helper: exactly CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE
    // once it holds the uprobe_multi programs (this kernel has them): CAP_SYS_ADMIN, kept
    // for the perf-event fallback, went then, from its effective and permitted sets (its
    // bounding set still names it; with no_new_privs no exec can bring it back). uid 0;
    // no_new_privs.
    let kept = (1u64 << 2) | (1 << 19) | (1 << 40);
    let hs = format!("/proc/{helper}/status");
    for set in ["CapEff:", "CapPrm:"] {
        assert_eq!(caps(&hs, set), kept, "{set} of the helper");
    }
    assert_eq!(caps(&hs, "CapBnd:"), kept | (1 << 21), "CapBnd of the helper");
    assert_eq!(caps(&hs, "CapInh:") | caps(&hs, "CapAmb:"), 0);
    assert_eq!(status_field(&hs, "NoNewPrivs:"), "1");
    assert!(status_field(&hs, "Uid:").starts_with("0\t"));
    assert_eq!(std::fs::read_dir(format!("/proc/{helper}/task")).expect("tasks").count(), 1, "the helper is single-threaded");
    target.send_line("go");
    target_says(&target, "done");
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    assert_eq!(summaries_named(&out, "sleep").len(), 1, "traced as before");
    // -v says what each side kept, one line each, before attaching.
    assert!(early.contains(&format!("tprof (pid {me}) privileges: kept none;")), "{early}");
    assert!(
        early.contains(&format!("privileged helper (pid {helper}): privileges: kept CAP_DAC_READ_SEARCH,CAP_SYS_PTRACE,CAP_SYS_ADMIN,CAP_CHECKPOINT_RESTORE;")),
        "{early}"
    );
    assert_gone(helper, "the privileged helper");
}

#[test]
fn tprof_runs_on_when_its_helper_dies() {
    // The helper killed mid-session: tprof says so, keeps tracing the probes attached, and
    // stops cleanly.
    require_root();
    let dir = TempDir::new("helper-dies");
    let mut target = start_private_target(&dir, &["sleep:5", "wait", "sleep:5", "enabled"]);
    let pid = target.pid();
    let sites = probe_sites(pid);
    let tprof = attach(&[pid], &[]);
    let helper = helper_of(tprof.pid());
    target.send_line("go");
    target_says(&target, "sleep task");
    // SAFETY: kill with a pid and a signal; the helper is tprof's child, root may signal it.
    assert_eq!(unsafe { libc::kill(helper as libc::pid_t, libc::SIGKILL) }, 0);
    // tprof notices at its next rescan (every 500 ms) and says so on stderr.
    let rx = tprof.stderr.as_ref().expect("stderr");
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(l) if l.contains("privileged helper is gone") => break,
            Ok(l) => seen.push(l),
            Err(_) => panic!("tprof never said its helper is gone: {seen:?}"),
        }
    }
    target.send_line("next");
    assert_eq!(target_says(&target, "enabled"), "enabled true", "the probes stay armed");
    target_says(&target, "done");
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success(), "{status}");
    assert_eq!(summaries_named(&out, "sleep").len(), 2, "both requests traced, the one after the helper died too: {out:#?}");
    let sess = session(&out);
    assert!(sess["warnings"].to_string().contains("what was attached is still traced"), "{sess}");
    assert_eq!(sess["sites"].as_u64(), Some(sites.len() as u64), "{sess}");
}

// ---- two tprof instances on one pid ---------------------------------------------------------

#[test]
fn two_instances_on_one_pid() {
    require_root();
    let dir = TempDir::new("two");
    let mut target = start_private_target(&dir, &["sleep:5", "regions", "enabled", "wait", "sleep:5", "enabled"]);
    let pid = target.pid();
    let a = attach(&[pid], &[]);
    let b = attach(&[pid], &[]);
    let a_fds = bpf_fds_of(a.pid());
    target.send_line("go");
    let mut lines = Vec::new();
    assert_eq!(target.expect_line("enabled", &mut lines), "enabled true");
    let first_sleep = fact(&lines, "sleep task", "span");
    let regions = fact(&lines, "regions task", "span");

    // Stop one: the other keeps the probes armed and keeps tracing.
    a.signal(libc::SIGINT);
    let (out_a, st_a) = collect(a);
    assert!(st_a.success(), "{st_a}");
    assert_released(&a_fds);
    target.send_line("next");
    assert_eq!(target.expect_line("enabled", &mut lines), "enabled true", "the semaphores stay armed while one tprof remains");
    target.expect_line("done", &mut lines);
    assert!(target.wait().success());
    let second_sleep = lines.iter().filter(|l| l.starts_with("sleep task")).nth(1).expect("second sleep").clone();
    let second_sleep = fact(&[second_sleep], "sleep task", "span");
    let (out_b, st_b) = collect(b);
    assert!(st_b.success(), "{st_b}");
    assert_eq!(session(&out_a)["stop_reason"], "interrupted (SIGINT)");
    assert_eq!(session(&out_b)["stop_reason"], "target exited");

    let spans = |out: &[Value]| -> Vec<(String, String)> {
        out.iter()
            .filter(|v| v["type"] == "summary")
            .map(|v| (v["name"].as_str().unwrap_or("").to_string(), v["span_id"].as_str().unwrap_or("").to_string()))
            .collect()
    };
    let want_a = vec![("sleep".to_string(), first_sleep.clone()), ("regions".to_string(), regions.clone())];
    assert_eq!(spans(&out_a), want_a, "instance A saw the tasks while it was attached");
    let mut want_b = want_a.clone();
    want_b.push(("sleep".to_string(), second_sleep));
    assert_eq!(spans(&out_b), want_b, "instance B saw the same tasks, and the one after A stopped");
    for out in [&out_a, &out_b] {
        let sess = session(out);
        assert_eq!(sess["kernel_drops_total"], 0, "{sess}");
        let s = out.iter().find(|v| v["type"] == "summary" && v["span_id"] == first_sleep.as_str()).expect("first sleep");
        // One instance attaching or detaching on the scheduler tracepoints can make the
        // other miss a sched_switch (README, known limitations): then it must say so.
        if sess["missed_switch_ins"] == 0 {
            assert!(s["incomplete"].is_null(), "{s}");
        } else {
            eprintln!("note: an instance missed a switch-in while the other attached/detached: {sess}");
            assert!(out.iter().any(|v| v["type"] == "summary" && v["incomplete"].as_str().is_some_and(|w| w.contains("inferred"))), "the miss is reported on a task");
        }
        assert!(ms(s, "blocked_ns") >= 4.9, "each instance charges the sleep on its own: {s}");
    }
}
