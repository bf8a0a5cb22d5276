//! `attach::drop_privs` on a real kernel: each case runs in a child process (this test
//! binary again, selected by `TPROF_DROP_CASE`), which starts two targets (`sleep` as root
//! and as nobody), drops, then checks what still works and what is refused. Dropping is
//! irreversible, hence the child. Needs root; as another user each test says so and passes.
//!
//! Besides checking `drop_after_attach`, the cases document the capability analysis
//! empirically: `broker` that the privileged helper's four capabilities (`Needs::broker`:
//! `CAP_SYS_ADMIN`, `CAP_SYS_PTRACE`, `CAP_DAC_READ_SEARCH`, `CAP_CHECKPOINT_RESTORE`) reach
//! every target and create uprobes; `tprof` that with no capability at all, as nobody, BPF objects created
//! before the drop still work (map updates and lookups, `BPF_LINK_CREATE` of a loaded program
//! on an existing uprobe perf event, `BPF_OBJ_GET_INFO_BY_FD`) while creating new ones does
//! not; `perfmon_not_enough` that a uprobe perf event needs CAP_SYS_ADMIN (CAP_PERFMON,
//! CAP_BPF and CAP_SYS_PTRACE are not enough); every case, that a uprobe_multi program fd
//! alone links into a root process at any offset (hence tprof hands those programs to the
//! helper and closes them); and `no_ptrace` that without CAP_SYS_PTRACE
//! even uid 0 can no longer reach a root target once its permitted set is smaller than the
//! target's.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};

use tprof::attach::drop_privs::*;

const NOBODY: u32 = 65534;
/// A third user, owner of `World::other_file`.
const OTHER: u32 = 4321;
const CASE_VAR: &str = "TPROF_DROP_CASE";

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn status_field(status: &str, name: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or_else(|_| panic!("not hex: {s:?}"))
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = hex(&status_field(&status, "CapEff:"));
    // SAFETY: getuid has no arguments and cannot fail.
    let uid = unsafe { libc::getuid() };
    uid == 0 && eff & (1 << CAP_SETUID) != 0 && eff & (1 << CAP_SYS_ADMIN) != 0
}

/// Runs `case` in a child; its panics fail the test with the child's output.
fn run_case(case: &str) {
    if !is_root() {
        eprintln!("skipped: dropping privileges can only be tested as root");
        return;
    }
    let me = std::env::current_exe().unwrap();
    let out = Command::new(me).args(["--exact", "child_entry", "--nocapture", "--test-threads=1"]).env(CASE_VAR, case).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The child's targets, if they outlived it (a child that left uid 0 cannot kill root's).
    // (libtest prints "test child_entry ... " before the first line, hence no line anchor.)
    for pid in text.split("TARGET ").skip(1).filter_map(|p| p.split_whitespace().next()?.parse::<i32>().ok()) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "sleep" {
            // SAFETY: kill with plain integers, of a process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    assert!(out.status.success() && text.contains("CASE OK"), "case {case} failed:\n{text}");
}

#[test]
fn the_helper_keeps_what_uprobes_need_and_nothing_else() {
    run_case("broker");
}

#[test]
fn tprof_without_any_capability_still_uses_its_bpf_objects() {
    run_case("tprof");
}

#[test]
fn without_cap_sys_admin_uprobes_are_refused() {
    run_case("perfmon_not_enough");
}

#[test]
fn dropping_everything_refuses_everything() {
    run_case("nothing");
}

#[test]
fn without_sys_ptrace_root_targets_are_out_of_reach() {
    run_case("no_ptrace");
}

/// The child side: does nothing unless `TPROF_DROP_CASE` is set.
#[test]
fn child_entry() {
    let Ok(case) = std::env::var(CASE_VAR) else { return };
    let mut world = World::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&case, &mut world)));
    world.cleanup();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    println!("CASE OK");
}

/// Targets and files made before the drop.
struct World {
    root_target: Child,
    nobody_target: Child,
    dir: PathBuf,
    /// Owned by a third user, mode 0600: readable to us only through CAP_DAC_READ_SEARCH
    /// (or CAP_DAC_OVERRIDE), writable only through CAP_DAC_OVERRIDE.
    other_file: PathBuf,
    /// Owned by root, mode 0644: writable to uid 0 as its owner, without capabilities.
    root_file: PathBuf,
}

impl World {
    fn new() -> World {
        let dir = std::env::temp_dir().join(format!("tprof-drop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let other_file = dir.join("other-0600");
        std::fs::write(&other_file, "secret").unwrap();
        std::fs::set_permissions(&other_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&other_file, Some(OTHER), Some(OTHER)).unwrap();
        let root_file = dir.join("root-0644");
        std::fs::write(&root_file, "root's").unwrap();
        std::fs::set_permissions(&root_file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let root_target = sleeper().spawn().unwrap();
        let nobody_target = sleeper().uid(NOBODY).gid(NOBODY).spawn().unwrap();
        println!("TARGET {}\nTARGET {}", root_target.id(), nobody_target.id());
        // Let both exec (their maps then show /usr/bin/sleep).
        for pid in [root_target.id(), nobody_target.id()] {
            for _ in 0..200 {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                if exe.ends_with("sleep") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        World { root_target, nobody_target, dir, other_file, root_file }
    }

    fn cleanup(&mut self) {
        // After a drop, killing a child of another uid needs CAP_KILL, which is gone: the
        // children also die with this thread (PR_SET_PDEATHSIG), so never wait on them.
        for c in [&mut self.root_target, &mut self.nobody_target] {
            let _ = c.kill();
            let _ = c.try_wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `sleep 10` that is killed when the thread that started it ends (when that thread still
/// may signal it), with no stdio (so the parent's `output()` does not wait for it), and
/// killed by the parent test by pid otherwise.
fn sleeper() -> Command {
    let mut c = Command::new("sleep");
    c.arg("10").stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Start and end of the target's first executable mapping of `sleep`, and its offset.
fn exec_mapping(pid: u32) -> Option<(u64, u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find(|l| l.contains(" r-xp ") && l.contains("sleep")).and_then(|l| {
        let mut f = l.split_whitespace();
        let (range, _, off) = (f.next()?, f.next()?, f.next()?);
        let (s, e) = range.split_once('-')?;
        Some((hex(s), hex(e), hex(off)))
    })
}

/// What the session does after attach, against one target: Ok(()) or the errno.
#[derive(Debug)]
struct Probe {
    maps: Result<(), i32>,
    exe_link: Result<(), i32>,
    root_walk: Result<(), i32>,
    map_files: Result<(), i32>,
    vm_read: Result<(), i32>,
    uprobe: Result<(), i32>,
}

fn io_err(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn probe_target(pid: u32) -> Probe {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map(|_| ()).map_err(io_err);
    let exe_link = std::fs::read_link(format!("/proc/{pid}/exe")).map(|_| ()).map_err(io_err);
    let root_walk = std::fs::metadata(format!("/proc/{pid}/root/usr/bin/sleep")).map(|_| ()).map_err(io_err);
    // Where the mapping is, learnt before any drop could hide it.
    let (start, end, off) = MAPPINGS.with(|m| m.borrow().iter().find(|(p, _)| *p == pid).map(|(_, r)| *r)).expect("mapping known");
    let map_files = std::fs::File::open(format!("/proc/{pid}/map_files/{start:x}-{end:x}")).map(|_| ()).map_err(io_err);
    let mut buf = [0u8; 16];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: start as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: `local` describes `buf`, alive for the call; the remote range is only read.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    let vm_read = if n == buf.len() as isize { Ok(()) } else { Err(errno()) };
    let uprobe = uprobe_open(pid, &format!("/proc/{pid}/root/usr/bin/sleep"), off);
    Probe { maps, exe_link, root_walk, map_files, vm_read, uprobe }
}

/// A mapping's start, end and file offset.
type Range = (u64, u64, u64);

thread_local! {
    /// Each target's `sleep` mapping, read before the drop.
    static MAPPINGS: std::cell::RefCell<Vec<(u32, Range)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `perf_event_open` of a uprobe at `offset` in `path` for `pid`, as attach/uprobe.rs
/// does it (then closed at once).
fn uprobe_open(pid: u32, path: &str, offset: u64) -> Result<(), i32> {
    let fd = uprobe_fd(pid, path, offset)?;
    // SAFETY: the fd was just returned by the kernel; nothing else owns it.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `perf_event_open` of a uprobe at `offset` in `path` for `pid`: the fd.
fn uprobe_fd(pid: u32, path: &str, offset: u64) -> Result<i32, i32> {
    let pmu: u32 = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type").unwrap().trim().parse().unwrap();
    let cpath = CString::new(path).unwrap();
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&pmu.to_ne_bytes());
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    attr[16..24].copy_from_slice(&1u64.to_ne_bytes());
    attr[56..64].copy_from_slice(&(cpath.as_ptr() as u64).to_ne_bytes());
    attr[64..72].copy_from_slice(&offset.to_ne_bytes());
    // SAFETY: attr is a zeroed perf_event_attr of the size it declares, pointing at a
    // NUL-terminated path that outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), pid as libc::c_int, -1, -1, 8u64) };
    if fd < 0 {
        return Err(errno());
    }
    Ok(fd as i32)
}

/// `bpf(BPF_MAP_CREATE)` of a one-entry array: what CAP_BPF allows when unprivileged BPF is
/// disabled.
fn bpf_map_create() -> Result<(), i32> {
    let mut attr = [0u8; 72];
    attr[0..4].copy_from_slice(&2u32.to_ne_bytes()); // BPF_MAP_TYPE_ARRAY
    attr[4..8].copy_from_slice(&4u32.to_ne_bytes()); // key_size
    attr[8..12].copy_from_slice(&8u32.to_ne_bytes()); // value_size
    attr[12..16].copy_from_slice(&1u32.to_ne_bytes()); // max_entries
    // SAFETY: a zero-padded bpf_attr for BPF_MAP_CREATE (cmd 0) of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), attr.len() as libc::c_uint) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// BPF objects made before the drop: an array map, a trivial kprobe-type program, and a
/// uprobe perf event (on the root target's `sleep`) to link it to.
struct BpfObjects {
    map: i32,
    prog: i32,
    perf: i32,
    /// The same program loaded for uprobe_multi links (expected_attach_type 48).
    multi_prog: i32,
    /// `/usr/bin/sleep` opened before the drop, and the root target's pid and file offset.
    sleep_file: std::fs::File,
    root_pid: u32,
    offset: u64,
}

fn bpf_call(cmd: i32, attr: &[u8]) -> Result<i32, i32> {
    // SAFETY: a zero-padded bpf_attr of the size passed, alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), attr.len() as libc::c_uint) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as i32)
    }
}

fn bpf_objects(root_pid: u32) -> BpfObjects {
    let mut map = [0u8; 72];
    map[0..4].copy_from_slice(&2u32.to_ne_bytes()); // BPF_MAP_TYPE_ARRAY
    map[4..8].copy_from_slice(&4u32.to_ne_bytes());
    map[8..12].copy_from_slice(&8u32.to_ne_bytes());
    map[12..16].copy_from_slice(&1u32.to_ne_bytes());
    let map = bpf_call(0, &map).expect("BPF_MAP_CREATE before the drop");
    // r0 = 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut prog = [0u8; 128];
    prog[0..4].copy_from_slice(&2u32.to_ne_bytes()); // BPF_PROG_TYPE_KPROBE
    prog[4..8].copy_from_slice(&2u32.to_ne_bytes()); // insn_cnt
    prog[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    prog[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    let prog_attr = prog;
    let prog = bpf_call(5, &prog_attr).expect("BPF_PROG_LOAD before the drop");
    let mut multi = prog_attr;
    multi[68..72].copy_from_slice(&48u32.to_ne_bytes()); // BPF_TRACE_UPROBE_MULTI
    let multi_prog = bpf_call(5, &multi).expect("BPF_PROG_LOAD (uprobe_multi) before the drop");
    let (_, _, off) = MAPPINGS.with(|m| m.borrow().iter().find(|(p, _)| *p == root_pid).map(|(_, r)| *r)).expect("mapping known");
    let perf = uprobe_fd(root_pid, &format!("/proc/{root_pid}/root/usr/bin/sleep"), off).expect("uprobe before the drop");
    let sleep_file = std::fs::File::open(format!("/proc/{root_pid}/root/usr/bin/sleep")).expect("open sleep before the drop");
    BpfObjects { map, prog, perf, multi_prog, sleep_file, root_pid, offset: off }
}

/// What reaching a target takes, besides creating a uprobe.
fn all_ok(p: &Probe) -> [(&'static str, &Result<(), i32>); 5] {
    [("maps", &p.maps), ("exe", &p.exe_link), ("root walk", &p.root_walk), ("map_files", &p.map_files), ("process_vm_readv", &p.vm_read)]
}

/// What tprof does with its BPF objects after the drop: (map update, map lookup, link
/// create, prog info), and what a holder of a uprobe_multi program can do: link it into
/// a root process (a breakpoint at any offset of any file it can name, in any process).
fn use_bpf_objects(o: &BpfObjects) -> [Result<(), i32>; 5] {
    let (key, mut value) = (0u32, 7u64);
    let mut elem = [0u8; 32];
    elem[0..4].copy_from_slice(&(o.map as u32).to_ne_bytes());
    elem[8..16].copy_from_slice(&(&key as *const u32 as u64).to_ne_bytes());
    elem[16..24].copy_from_slice(&(&mut value as *mut u64 as u64).to_ne_bytes());
    let update = bpf_call(2, &elem).map(drop);
    let lookup = bpf_call(1, &elem).map(drop);
    let mut link = [0u8; 64];
    link[0..4].copy_from_slice(&(o.prog as u32).to_ne_bytes());
    link[4..8].copy_from_slice(&(o.perf as u32).to_ne_bytes());
    link[8..12].copy_from_slice(&41u32.to_ne_bytes()); // BPF_PERF_EVENT
    let link = bpf_call(28, &link).map(drop);
    let mut info = [0u64; 32];
    let mut get = [0u8; 16];
    get[0..4].copy_from_slice(&(o.prog as u32).to_ne_bytes());
    get[4..8].copy_from_slice(&((info.len() * 8) as u32).to_ne_bytes());
    get[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    let info = bpf_call(15, &get).map(drop);
    let path = CString::new(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&o.sleep_file))).unwrap();
    let (offsets, refs, cookies) = ([o.offset], [0u64], [0u64]);
    let mut m = [0u8; 64];
    m[0..4].copy_from_slice(&(o.multi_prog as u32).to_ne_bytes());
    m[8..12].copy_from_slice(&48u32.to_ne_bytes()); // BPF_TRACE_UPROBE_MULTI
    m[16..24].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    m[24..32].copy_from_slice(&(offsets.as_ptr() as u64).to_ne_bytes());
    m[32..40].copy_from_slice(&(refs.as_ptr() as u64).to_ne_bytes());
    m[40..48].copy_from_slice(&(cookies.as_ptr() as u64).to_ne_bytes());
    m[48..52].copy_from_slice(&1u32.to_ne_bytes());
    m[56..60].copy_from_slice(&o.root_pid.to_ne_bytes());
    // SAFETY: closing the link fd the kernel just returned (removing the breakpoint).
    let multi = bpf_call(28, &m).map(|fd| unsafe { libc::close(fd) }).map(drop);
    [update, lookup, link, info, multi]
}

/// Whether /proc/kallsyms shows real addresses to this process now.
fn kallsyms_addresses() -> bool {
    let mut f = std::fs::File::open("/proc/kallsyms").unwrap();
    let mut head = [0u8; 4096];
    let n = f.read(&mut head).unwrap();
    String::from_utf8_lossy(&head[..n]).lines().take(20).any(|l| !l.starts_with("0000000000000000"))
}

fn perf_paranoid() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(2)
}
fn kptr_restrict() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/kptr_restrict").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1)
}
fn unprivileged_bpf_disabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").map(|s| s.trim() != "0").unwrap_or(true)
}

fn chown_refused(path: &PathBuf) -> bool {
    std::os::unix::fs::chown(path, Some(1234), Some(1234)).map_err(io_err) == Err(libc::EPERM)
}

fn open_write(path: &PathBuf) -> Result<(), i32> {
    std::fs::OpenOptions::new().append(true).open(path).map(|_| ()).map_err(io_err)
}

fn read(path: &PathBuf) -> Result<(), i32> {
    std::fs::read(path).map(|_| ()).map_err(io_err)
}

fn denied(r: &Result<(), i32>) -> bool {
    matches!(r, Err(e) if *e == libc::EPERM || *e == libc::EACCES)
}

fn run(case: &str, w: &mut World) {
    let (root_pid, nobody_pid) = (w.root_target.id(), w.nobody_target.id());
    for pid in [root_pid, nobody_pid] {
        let m = exec_mapping(pid).expect("sleep's executable mapping");
        MAPPINGS.with(|v| v.borrow_mut().push((pid, m)));
    }
    // Before: everything works (we are root with every capability).
    for pid in [root_pid, nobody_pid] {
        let p = probe_target(pid);
        for (what, r) in [("maps", p.maps), ("exe", p.exe_link), ("root", p.root_walk), ("map_files", p.map_files), ("vm_read", p.vm_read), ("uprobe", p.uprobe)] {
            assert_eq!(r, Ok(()), "before the drop, {what} of pid {pid}");
        }
    }
    // A thread that exists before the drop.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel::<i64>();
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid has no arguments.
        tid_tx.send(unsafe { libc::syscall(libc::SYS_gettid) }).unwrap();
        let _ = rx.recv();
    });
    let tid = tid_rx.recv().unwrap();

    let objects = bpf_objects(root_pid);
    let opts = match case {
        "broker" => DropOptions { needs: Needs::broker(), user: None },
        "tprof" => DropOptions { needs: Needs::nothing(), user: Some((NOBODY, NOBODY)) },
        "perfmon_not_enough" => DropOptions {
            needs: Needs { uprobes: false, any_target: true, target_files: true, map_files: true, bpf_load: true, kallsyms: true },
            user: None,
        },
        "nothing" => DropOptions { needs: Needs::nothing(), user: None },
        "no_ptrace" => DropOptions { needs: Needs { any_target: false, ..Needs::broker() }, user: None },
        other => panic!("unknown case {other}"),
    };
    let dropped = drop_after_attach(&opts).expect("drop_after_attach");
    println!("{dropped}");
    let expected = opts.needs.mask();
    assert_eq!(dropped.kept, expected, "kept {:?}", cap_names(dropped.kept));
    assert!(dropped.bounding_cleared);
    // libtest's main thread and the thread spawned above, at least.
    assert!(dropped.other_threads >= 1, "{dropped:?}");

    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert_eq!(hex(&status_field(&status, "CapEff:")), expected, "CapEff");
    assert_eq!(hex(&status_field(&status, "CapPrm:")), expected, "CapPrm");
    assert_eq!(hex(&status_field(&status, "CapInh:")), 0, "CapInh");
    assert_eq!(hex(&status_field(&status, "CapAmb:")), 0, "CapAmb");
    assert_eq!(hex(&status_field(&status, "CapBnd:")), expected, "CapBnd");
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1");

    // Never kept: chown, setuid, DAC_OVERRIDE writes.
    assert!(chown_refused(&w.other_file), "chown must be refused");
    // The raw syscall (this thread only): glibc's setuid() would run it on every thread
    // and abort the process when an older, still privileged thread succeeds where this
    // one fails.
    // SAFETY: plain integer argument.
    assert_eq!(unsafe { libc::syscall(libc::SYS_setuid, 1234) }, -1, "setuid must be refused");
    assert_eq!(errno(), libc::EPERM);
    assert!(denied(&open_write(&w.other_file)), "writing another user's 0600 file needs CAP_DAC_OVERRIDE");
    if expected & (1 << CAP_SYS_ADMIN) == 0 {
        // SAFETY: unshare with a flag only.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, -1, "unshare(CLONE_NEWNS) needs CAP_SYS_ADMIN");
    }

    // The thread that existed before the drop.
    let tstatus = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let teff = hex(&status_field(&tstatus, "CapEff:"));
    let tuid = status_field(&tstatus, "Uid:");
    tx.send(()).unwrap();
    thread.join().unwrap();

    let root = probe_target(root_pid);
    let nobody = probe_target(nobody_pid);
    let kallsyms = kallsyms_addresses();
    let bpf = bpf_map_create();
    println!("root target: {root:?}\nnobody target: {nobody:?}\nkallsyms {kallsyms} bpf {bpf:?}");
    let bpf_use = use_bpf_objects(&objects);
    println!("bpf objects after the drop (update, lookup, link, info, uprobe_multi link): {bpf_use:?}");
    // The last: why tprof hands its uprobe_multi programs to the helper and closes them.
    for (what, r) in ["map update", "map lookup", "BPF_LINK_CREATE", "BPF_OBJ_GET_INFO_BY_FD", "a uprobe_multi link into a root process"]
        .iter()
        .zip(&bpf_use)
    {
        assert_eq!(*r, Ok(()), "{what} on objects made before the drop needs no capability ({case})");
    }
    match case {
        "broker" => {
            for (who, p) in [("root", &root), ("nobody", &nobody)] {
                for (what, r) in all_ok(p) {
                    assert_eq!(*r, Ok(()), "after the drop, {what} of the {who} target");
                }
                assert_eq!(p.uprobe, Ok(()), "the helper creates uprobes for the {who} target");
            }
            // CAP_SYS_ADMIN still counts as CAP_BPF (bpf_capable()): the helper could create
            // BPF objects. It is given no program fd and never does.
            assert_eq!(bpf, Ok(()), "bpf_capable() with CAP_SYS_ADMIN");
            if kptr_restrict() >= 1 || perf_paranoid() > 1 {
                assert!(!kallsyms, "no CAP_SYSLOG: kallsyms shows no addresses");
            }
            assert_eq!(read(&w.other_file), Ok(()), "CAP_DAC_READ_SEARCH kept");
            assert_ne!(teff, 0, "without a uid switch, an older thread keeps its capabilities");
            assert!(tuid.starts_with("0\t"), "{tuid}");
        }
        "tprof" => {
            for (what, r) in [("maps", &root.maps), ("map_files", &root.map_files), ("process_vm_readv", &root.vm_read), ("uprobe perf_event_open", &root.uprobe)] {
                assert!(denied(r), "with nothing kept, {what} of the root target must be refused: {r:?}");
            }
            // The nobody target now has tprof's own uid: reachable like any process of one's
            // own uid (README: a plain-root tprof becomes nobody), but no uprobe, no map_files.
            assert_eq!(nobody.maps, Ok(()), "same uid");
            for (what, r) in [("map_files", &nobody.map_files), ("uprobe perf_event_open", &nobody.uprobe)] {
                assert!(denied(r), "with nothing kept, {what} of the nobody target must be refused: {r:?}");
            }
            if unprivileged_bpf_disabled() {
                assert!(denied(&bpf), "new BPF objects need CAP_BPF: {bpf:?}");
            }
            // SAFETY: no arguments.
            let (uid, euid, gid) = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid()) };
            assert_eq!((uid, euid, gid), (NOBODY, NOBODY, NOBODY));
            assert_eq!(teff, 0, "the older thread lost every capability with the uid switch");
            assert!(tuid.starts_with(&format!("{NOBODY}\t")), "{tuid}");
            assert!(denied(&open_write(&w.root_file)), "no longer uid 0: root's files are not writable");
            assert!(denied(&read(&w.other_file)), "no CAP_DAC_READ_SEARCH");
        }
        "perfmon_not_enough" => {
            for (who, p) in [("root", &root), ("nobody", &nobody)] {
                for (what, r) in all_ok(p) {
                    assert_eq!(*r, Ok(()), "after the drop, {what} of the {who} target");
                }
                // CAP_PERFMON, CAP_BPF and CAP_SYS_PTRACE are kept here, yet the uprobe PMU
                // says EACCES: it wants CAP_SYS_ADMIN.
                assert!(denied(&p.uprobe), "uprobe perf_event_open without CAP_SYS_ADMIN: {:?}", p.uprobe);
            }
            assert_eq!(bpf, Ok(()), "CAP_BPF kept");
            assert!(kallsyms, "CAP_SYSLOG kept");
        }
        "nothing" => {
            for (who, p) in [("root", &root), ("nobody", &nobody)] {
                for (what, r) in [("maps", &p.maps), ("process_vm_readv", &p.vm_read), ("uprobe perf_event_open", &p.uprobe)] {
                    assert!(denied(r), "with nothing kept, {what} of the {who} target must be refused: {r:?}");
                }
            }
            if unprivileged_bpf_disabled() {
                assert!(denied(&bpf), "bpf() without CAP_BPF: {bpf:?}");
            }
            if kptr_restrict() >= 1 || perf_paranoid() > 1 {
                assert!(!kallsyms, "kallsyms addresses without CAP_SYSLOG");
            }
            assert!(denied(&read(&w.other_file)), "no CAP_DAC_READ_SEARCH");
        }
        "no_ptrace" => {
            // The helper without CAP_SYS_PTRACE is still uid 0, like the root target, yet it
            // is refused: its permitted set is no longer a superset of the target's
            // (cap_ptrace_access_check). (/proc/PID/maps itself stays readable with
            // CAP_SYS_ADMIN here.)
            for (who, p) in [("root", &root), ("nobody", &nobody)] {
                for (what, r) in [("exe", &p.exe_link), ("map_files", &p.map_files), ("process_vm_readv", &p.vm_read), ("uprobe perf_event_open", &p.uprobe)] {
                    assert!(denied(r), "without CAP_SYS_PTRACE, {what} of the {who} target must be refused: {r:?}");
                }
            }
        }
        _ => unreachable!(),
    }
}
