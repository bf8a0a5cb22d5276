//! The helper's request validation, without a kernel uprobe: what it refuses never reaches
//! a syscall. (Creating real uprobes through it is end-to-end tested in tests/.)

use super::*;

fn me() -> u32 {
    std::process::id()
}

/// A helper for this process, with this test binary as file 0 carrying one fake tprof site
/// at offset 0x1000, semaphore 0x20.
fn broker_with_a_site() -> Broker {
    let mut b = Broker::new(&[me()], 0, Scope::default());
    let exe = std::env::current_exe().unwrap();
    let file = Arc::new(File::open(&exe).unwrap());
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().unwrap();
    let site = ProbeSite {
        provider: TPROF_PROVIDER.into(),
        name: "task_end".into(),
        pc: 0x1000,
        file_offset: 0x1000,
        semaphore: 0x20,
        semaphore_offset: 0x20,
        args_text: "8@%rdi 8@%rsi 8@%rdx".into(),
        args: Ok(Vec::new()),
        each: Vec::new(),
    };
    b.files.push(BrokerFile { pid: me(), dev: meta.dev(), ino: meta.ino(), display: exe.display().to_string(), file, sites: vec![site], attached: HashSet::new() });
    b
}

fn refusal(out: Vec<Outgoing>) -> String {
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].fd.is_none(), "a refusal carries no fd");
    match &out[0].reply {
        Reply::Refused { reason } => reason.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn pids_outside_the_session_are_refused() {
    let mut b = broker_with_a_site();
    let other = 1;
    for req in [
        Request::Scan { pid: other },
        Request::Attach { pid: other, file: 0, offset: 0x1000, semaphore: 0x20 },
        Request::Read { pid: other, addr: 0x1000, len: 8 },
    ] {
        let why = refusal(b.handle(req.clone()));
        assert!(why.contains("pid 1 is not a process of this session"), "{req:?}: {why}");
    }
}

#[test]
fn offsets_that_are_not_probe_sites_are_refused() {
    let mut b = broker_with_a_site();
    for (offset, semaphore) in [(0x1001, 0x20), (0xfff, 0x20), (0x1000, 0), (0x1000, 0x21), (0, 0)] {
        let why = refusal(b.handle(Request::Attach { pid: me(), file: 0, offset, semaphore }));
        assert!(why.contains("is not a tprof probe site of that file"), "{offset:#x}/{semaphore:#x}: {why}");
    }
    let why = refusal(b.handle(Request::Attach { pid: me(), file: 1, offset: 0x1000, semaphore: 0x20 }));
    assert!(why.contains("file 1 is not a file scanned in pid"), "{why}");
    let why = refusal(b.handle(Request::Attach { pid: me(), file: u64::MAX, offset: 0x1000, semaphore: 0x20 }));
    assert!(why.contains("is not a file scanned"), "{why}");
    assert_eq!(b.attached, 0, "nothing was created");
}

#[test]
fn a_file_of_another_session_pid_is_refused() {
    // Two session pids: a file scanned in one cannot be attached in the other.
    let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
    let mut b = broker_with_a_site();
    b.targets.push(Target { pid: child.id(), pidfd: pidfd_open(child.id()) });
    let why = refusal(b.handle(Request::Attach { pid: child.id(), file: 0, offset: 0x1000, semaphore: 0x20 }));
    assert!(why.contains("is not a file scanned in pid"), "{why}");
    child.kill().unwrap();
    child.wait().unwrap();
    let why = refusal(b.handle(Request::Scan { pid: child.id() }));
    assert!(why.contains("has exited"), "a pid whose process exited is refused (its number may be reused): {why}");
}

#[test]
fn reads_are_bounded() {
    let mut b = broker_with_a_site();
    let data = *b"tprof helper read";
    let addr = data.as_ptr() as u64;
    for len in [0, MAX_READ + 1, u32::MAX] {
        let why = refusal(b.handle(Request::Read { pid: me(), addr, len }));
        assert!(why.contains("reads are 1 to 128 bytes"), "{len}: {why}");
    }
    let out = b.handle(Request::Read { pid: me(), addr, len: data.len() as u32 });
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].reply, Reply::Bytes { data: data.to_vec() });
    let why = refusal(b.handle(Request::Read { pid: me(), addr: 8, len: 8 }));
    assert!(why.contains("Bad address"), "an unmapped address: {why}");
}

#[test]
fn scans_pass_each_file_once_and_end_with_done() {
    let mut b = Broker::new(&[me()], 0, Scope::default());
    let first = b.handle(Request::Scan { pid: me() });
    assert_eq!(first.last().map(|o| &o.reply), Some(&Reply::Done), "{first:?}");
    let files: Vec<&Outgoing> = first.iter().filter(|o| matches!(o.reply, Reply::File { .. })).collect();
    assert!(!files.is_empty());
    assert!(files.iter().all(|o| matches!(o.reply, Reply::File { new: true, .. }) && o.fd.is_some()), "new files come with their fd");
    let maps = first.iter().filter_map(|o| if let Reply::Mappings { maps } = &o.reply { Some(maps.len()) } else { None }).sum::<usize>();
    assert!(maps >= files.len(), "every file has an executable mapping");
    let again = b.handle(Request::Scan { pid: me() });
    assert!(again.iter().all(|o| o.fd.is_none()), "known files are not passed again");
    assert!(again.iter().any(|o| matches!(o.reply, Reply::File { new: false, .. })));
}

#[test]
fn command_line() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(parse_args(&s(&["--fd", "5", "--parent", "9", "--pid", "1", "--pid", "2"])), Ok(Args { fd: 5, parent: 9, pids: vec![(1, None), (2, None)], scope: Scope::default() }));
    assert_eq!(parse_args(&s(&["--fd", "5", "--parent", "9", "--pid", "7:12"])).unwrap().pids, [(7, Some(12))]);
    assert!(parse_args(&s(&["--fd", "5", "--parent", "9", "--pid", "7:x"])).is_err());
    let a = parse_args(&s(&["--fd", "5", "--parent", "9", "--pid", "1", "--follow", "1", "--cgroup", "/x"])).unwrap();
    assert_eq!(a.scope, Scope { follow: true, cgroup: Some("/x".into()), binary: None, foreign: Vec::new() });
    assert!(parse_args(&s(&["--fd", "5"])).is_err(), "--parent is required");
    assert!(parse_args(&s(&["--fd", "x", "--parent", "1"])).is_err());
    assert!(parse_args(&s(&["--pid"])).is_err());
    assert!(parse_args(&s(&["--what", "1"])).is_err());
}

fn multi(offset: u64, semaphore: u64) -> MultiSiteDesc {
    MultiSiteDesc { offset, semaphore, cookie: 7 }
}

#[test]
fn uprobe_multi_requests_are_checked_site_by_site() {
    let mut b = broker_with_a_site();
    let req = |sites: Vec<MultiSiteDesc>| Request::AttachMulti { pid: me(), file: 0, slot: 0, sites };
    // No program handed over yet.
    let why = refusal(b.handle(req(vec![multi(0x1000, 0x20)])));
    assert!(why.contains("no program in slot 0"), "{why}");
    // A program request must carry its fd, and a slot is set once.
    let why = refusal(b.handle(Request::Program { slot: 0 }));
    assert!(why.contains("without its fd"), "{why}");
    let fd = || Some(OwnedFd::from(File::open("/dev/null").unwrap()));
    assert!(matches!(b.handle_with_fd(Request::Program { slot: 0 }, fd())[0].reply, Reply::Kept));
    let why = refusal(b.handle_with_fd(Request::Program { slot: 0 }, fd()));
    assert!(why.contains("set already"), "{why}");
    let why = refusal(b.handle_with_fd(Request::Program { slot: 2 }, fd()));
    assert!(why.contains("no program slot 2"), "{why}");
    // One bad site refuses the whole link; so do duplicates, empty and oversized requests.
    let why = refusal(b.handle(req(vec![multi(0x1000, 0x20), multi(0x1001, 0x20)])));
    assert!(why.contains("+0x1001 (semaphore 0x20) is not a tprof probe site"), "{why}");
    let why = refusal(b.handle(req(vec![multi(0x1000, 0x20), multi(0x1000, 0x20)])));
    assert!(why.contains("attached already"), "{why}");
    let why = refusal(b.handle(req(Vec::new())));
    assert!(why.contains("sites per link"), "{why}");
    let why = refusal(b.handle(req(vec![multi(0x1000, 0x20); MAX_MULTI_SITES + 1])));
    assert!(why.contains("sites per link"), "{why}");
    let why = refusal(b.handle(Request::AttachMulti { pid: 1, file: 0, slot: 0, sites: vec![multi(0x1000, 0x20)] }));
    assert!(why.contains("pid 1 is not a process of this session"), "{why}");
    // A site passing every check reaches the kernel, which refuses /dev/null as a program.
    let why = refusal(b.handle(req(vec![multi(0x1000, 0x20)])));
    assert!(why.contains("BPF_LINK_CREATE"), "{why}");
    assert_eq!(b.attached, 0, "nothing was created");
}

#[test]
fn a_process_of_another_uid_is_alive_until_it_exits() {
    // The liveness check needs no right to signal the target: a process running as
    // `nobody` is alive to a helper that could not signal it, and gone once it exits.
    // (Starting it as another uid needs root, like the rest of this module's tests.)
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("sleep").arg("5").uid(65534).gid(65534).spawn().unwrap();
    let t = Target { pid: child.id(), pidfd: pidfd_open(child.id()) };
    assert!(alive(&t), "a running process of uid 65534 is alive");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!alive(&t), "an exited process is not");
}

#[test]
fn adoption_is_checked_against_the_scope() {
    // A child of this process: refused without --follow, served with it (the helper checks
    // the parent chain itself), and refused once it exited.
    let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
    let pid = child.id();
    let mut narrow = Broker::new(&[me()], 0, Scope::default());
    let why = refusal(narrow.handle(Request::Adopt { pid }));
    assert!(why.contains("not in this session's scope"), "{why}");
    let mut b = Broker::new(&[me()], 0, Scope { follow: true, ..Default::default() });
    assert_eq!(b.handle(Request::Adopt { pid })[0].reply, Reply::Kept);
    assert!(b.live_target(pid).is_ok(), "served from now on");
    let why = refusal(b.handle(Request::Adopt { pid: 1 }));
    assert!(why.contains("not in this session's scope"), "init is no descendant: {why}");
    child.kill().unwrap();
    child.wait().unwrap();
    let why = refusal(b.handle(Request::Scan { pid }));
    assert!(why.contains("has exited"), "{why}");
    let why = refusal(b.handle(Request::Adopt { pid }));
    assert!(why.contains("has exited"), "{why}");
}

#[test]
fn batched_reads_answer_each_read() {
    let b = Broker::new(&[me()], 0, Scope::default());
    let text = b"a string of this process".to_vec();
    let good = ReadDesc { pid: me(), addr: text.as_ptr() as u64, len: text.len() as u32 };
    let bad = ReadDesc { pid: me(), addr: 8, len: 16 };
    let stranger = ReadDesc { pid: 1, ..good };
    let out = b.read_many(&[good, bad, stranger, good]).unwrap();
    assert_eq!(out.reply, Reply::Many { data: vec![Some(text.clone()), None, None, Some(text.clone())] });
    assert!(b.read_many(&vec![good; MAX_READS + 1]).unwrap_err().contains("at most"));
    assert!(b.read_many(&[ReadDesc { len: MAX_READ + 1, ..good }]).unwrap_err().contains("1 to"));
    assert_eq!(b.read_many(&[]).unwrap().reply, Reply::Many { data: vec![] });
}
