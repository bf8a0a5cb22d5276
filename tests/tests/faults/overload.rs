//! Overload: more events than userspace drains.

use super::*;

// ---- overload ------------------------------------------------------------------------------

#[test]
fn ctrl_c_is_prompt_under_overload() {
    // 20M region pairs back to back into a 1 MiB ring: tprof is saturated (the ring
    // overflows continuously; traced, the flood lasts about a minute). Ctrl-C must still stop
    // it promptly - a liveness bound, not a performance figure - with the losses counted.
    require_root();
    let dir = TempDir::new("overload");
    let mut target = start_private_target(&dir, &["flood:20000000", "enabled"]);
    let pid = target.pid();
    let mut tprof = attach(&[pid], &["--ring-size", "1"]);
    target.send_line("go");
    target_says(&target, "flood task span");
    std::thread::sleep(Duration::from_secs(1));
    assert!(tprof.child.try_wait().expect("try_wait").is_none(), "tprof is still running under the flood");
    let t0 = Instant::now();
    tprof.signal(libc::SIGINT);
    // Consume the event stream while waiting (only the session line is kept).
    let mut last_session = None;
    let mut keep = |l: String| {
        if l.contains("\"type\":\"session\"") {
            last_session = Some(l);
        }
    };
    let status = loop {
        while let Ok(l) = tprof.stdout.try_recv() {
            keep(l);
        }
        if let Some(st) = tprof.child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = t0.elapsed();
    eprintln!("tprof stopped {took:?} after SIGINT under overload");
    let status = status.unwrap_or_else(|| panic!("tprof still running 30 s after SIGINT under overload"));
    // Liveness: the loop above fails if tprof is still running 30 s after SIGINT (a hang);
    // the time itself is reported, not asserted.
    eprintln!("Ctrl-C under overload took {took:?}");
    while let Ok(l) = tprof.stdout.recv_timeout(Duration::from_secs(5)) {
        keep(l);
    }
    assert!(status.success(), "{status}");
    let sess: Value = serde_json::from_str(&last_session.expect("a session line")).expect("session JSON");
    assert_eq!(sess["stop_reason"], "interrupted (SIGINT)", "{sess}");
    eprintln!("overload: {} records lost in the kernel, all counted", sess["kernel_drops_total"]);
    assert!(sess["kernel_drops_total"].as_u64().is_some_and(|n| n > 0), "the overflow is counted: {sess}");
    assert_eq!(target_says(&target, "enabled"), "enabled false");
    target_says(&target, "done");
    assert!(target.wait().success(), "the target is unharmed");
}

#[test]
fn many_probe_sites_attach_and_stop_promptly() {
    // A service with many probe sites (128 here; tprof takes up to 4096): attaching and
    // Ctrl-C must both stay prompt. Liveness bounds, not performance figures.
    require_root();
    let dir = TempDir::new("many");
    let exe = build_c(&dir, "many_sites");
    let mut target = start_program(&exe, &[]);
    let pid = target.pid();
    let sites = probe_sites(pid);
    assert_eq!(sites.len(), 130, "128 region sites, task_begin and task_end");
    let t0 = Instant::now();
    let mut tprof = attach(&[pid], &[]);
    let attach_took = t0.elapsed();
    target.send_line("go");
    target_says(&target, "done");
    assert!(site_bytes(pid, &sites).iter().all(|&b| b == 0xcc), "every site attached");
    let t0 = Instant::now();
    tprof.signal(libc::SIGINT);
    let status = wait_within(&mut tprof, Duration::from_secs(60));
    let stop_took = t0.elapsed();
    eprintln!("{} sites: attach {attach_took:?}, stop after SIGINT {stop_took:?}", sites.len());
    let status = status.unwrap_or_else(|| panic!("tprof still running 60 s after SIGINT with {} sites", sites.len()));
    // Liveness only (the 60 s hang guard above): how long attach and detach take per site is
    // a cost, measured and reported, not asserted. Detach is ~0.1 s per perf-event uprobe on
    // this kernel (each unregistration waits for an RCU grace period under a global mutex);
    // BPF uprobe_multi links would make it one wait per binary (not yet: aya 0.14 cannot load
    // uprobe.multi programs).
    let _ = (attach_took, stop_took);
    let (out, _) = collect(tprof);
    assert!(status.success(), "{status}");
    let s = summary(&out, "many");
    assert_eq!(s["regions"].as_array().map(Vec::len), Some(128), "every site fired into the task: {s}");
    assert_sites_restored(pid, &sites);
    target.send_line("exit");
    assert!(target.wait().success());
}
