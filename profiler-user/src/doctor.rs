//! `tprof doctor`: what this host supports, checked before anything fails. One line per
//! check, `OK`, `WARN` or `FAIL`, with what was found and, when something is wrong, what to
//! do about it. The eBPF side is verified for real: tprof's own object is loaded (its ring
//! buffer created, every tp_btf program loaded and attached, the sleepable USDT program
//! loaded) and dropped at once, which detaches everything again.
//!
//! Essential checks (the run fails without them): kernel version, BTF, capabilities, the
//! uprobe PMU and the eBPF load. The others (tracefs, perf_event_paranoid, kptr_restrict,
//! /proc/kallsyms, lockdown) only explain degraded output such as unsymbolized kernel stacks.

use std::io::{BufRead, BufReader, Write};

use anyhow::Result;

use crate::attach::privileges::{effective_caps, missing_caps};
use crate::attach::{TraceOptions, Tracer};

/// Oldest kernel tprof supports (BPF ring buffer, tp_btf, uprobe attach cookies).
pub const MIN_KERNEL: (u32, u32) = (5, 15);
const CAP_SYSLOG: u32 = 34;
/// Longest error chain printed on the check's own line; longer ones follow, indented.
const MAX_INLINE_ERROR: usize = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do (for WARN and FAIL).
    pub hint: Option<String>,
    /// A FAIL here means tprof cannot attach on this host.
    pub essential: bool,
    /// Full text (e.g. a verifier log) printed indented under the line.
    pub more: Option<String>,
}

impl Check {
    fn new(name: &'static str, essential: bool, status: Status, detail: impl Into<String>) -> Check {
        Check { name, status, detail: detail.into(), hint: None, essential, more: None }
    }
    fn hint(mut self, hint: impl Into<String>) -> Check {
        self.hint = Some(hint.into());
        self
    }
}

/// The line printed for a check: `FAIL  BTF                   <detail> -> <hint>`.
pub fn format_line(c: &Check) -> String {
    let mut s = format!("{:<4}  {:<22}{}", c.status.label(), c.name, c.detail);
    if let Some(h) = &c.hint {
        s.push_str(" -> ");
        s.push_str(h);
    }
    s
}

/// Runs every check, printing one line each to `out` as it completes, then a verdict.
/// Ok(true) when every essential check passed.
pub fn run(out: &mut dyn Write, pid: Option<u32>) -> Result<bool> {
    writeln!(out, "tprof doctor: what this host supports (tprof {})", env!("CARGO_PKG_VERSION"))?;
    let mut all_ok = true;
    let mut emit = |out: &mut dyn Write, c: Check| -> Result<()> {
        if c.essential && c.status == Status::Fail {
            all_ok = false;
        }
        writeln!(out, "{}", format_line(&c))?;
        if let Some(more) = &c.more {
            for l in more.lines() {
                writeln!(out, "        {}", crate::present::escape(l))?;
            }
        }
        out.flush()?;
        Ok(())
    };
    emit(out, check_kernel())?;
    emit(out, check_btf())?;
    let caps = check_caps();
    let privileged = caps.status == Status::Ok;
    emit(out, caps)?;
    emit(out, check_uprobe_pmu())?;
    for c in check_ebpf_load(privileged) {
        emit(out, c)?;
    }
    emit(out, check_tracefs())?;
    emit(out, check_paranoid())?;
    let caps_now = effective_caps().unwrap_or(0);
    emit(out, check_kptr_restrict(caps_now))?;
    emit(out, check_kallsyms())?;
    emit(out, check_lockdown())?;
    if let Some(pid) = pid {
        emit(out, check_frame_pointers(pid))?;
    }
    if all_ok {
        writeln!(out, "tprof doctor: all essential checks passed: `tprof attach --pid PID` can run here")?;
    } else {
        writeln!(out, "tprof doctor: essential checks failed (FAIL above): tprof attach will not work until they are fixed")?;
    }
    out.flush()?;
    Ok(all_ok)
}

// ---- kernel version ------------------------------------------------------------------------

/// `uname -r`.
fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain old data; uname fills it and NUL-terminates its fields.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `6.18.44-fc-v595` -> (6, 18, 44); `6.1` -> (6, 1, 0); `5.15.0-91-generic` -> (5, 15, 0).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    // The patch level is optional (and absent in e.g. `6.1-rc1`: then `rc` splits as empty).
    let rest = &release[release.find('.').map_or(release.len(), |i| i + 1)..];
    let patch = rest.split_once('.').and_then(|(_, p)| p.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// Whether tprof supports a kernel of this version.
pub fn kernel_supported((major, minor, _): (u32, u32, u32)) -> bool {
    (major, minor) >= MIN_KERNEL
}

fn check_kernel() -> Check {
    let name = "kernel";
    let Some(rel) = kernel_release() else {
        return Check::new(name, true, Status::Fail, "uname failed").hint("cannot tell the kernel version");
    };
    match parse_kernel_version(&rel) {
        Some(v) if kernel_supported(v) => {
            Check::new(name, true, Status::Ok, format!("{rel} (tprof needs >= {}.{})", MIN_KERNEL.0, MIN_KERNEL.1))
        }
        Some(_) => Check::new(name, true, Status::Fail, format!("{rel} is older than {}.{}", MIN_KERNEL.0, MIN_KERNEL.1))
            .hint("tprof needs BPF ring buffers, tp_btf and uprobe attach cookies: upgrade the kernel"),
        None => Check::new(name, true, Status::Warn, format!("cannot parse kernel release {rel:?}"))
            .hint(format!("tprof needs Linux >= {}.{}; the eBPF check below is authoritative", MIN_KERNEL.0, MIN_KERNEL.1)),
    }
}

// ---- BTF, capabilities, uprobes ------------------------------------------------------------

fn check_btf() -> Check {
    let name = "BTF";
    match crate::btf::kernel_offsets() {
        Ok(o) => Check::new(
            name,
            true,
            Status::Ok,
            format!(
                "/sys/kernel/btf/vmlinux parsed (task_struct.pid at {}, tgid at {}, flags at {})",
                o.task_pid, o.task_tgid, o.task_flags
            ),
        ),
        Err(e) => Check::new(name, true, Status::Fail, format!("{e:#}"))
            .hint("tprof needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 2021)"),
    }
}

/// Names of the capabilities tprof uses that `caps` holds.
pub fn held_caps(caps: u64) -> Vec<&'static str> {
    [(21, "CAP_SYS_ADMIN"), (38, "CAP_PERFMON"), (39, "CAP_BPF"), (CAP_SYSLOG, "CAP_SYSLOG")]
        .into_iter()
        .filter(|(bit, _)| caps & (1u64 << bit) != 0)
        .map(|(_, n)| n)
        .collect()
}

fn check_caps() -> Check {
    let name = "capabilities";
    let caps = match effective_caps() {
        Ok(c) => c,
        Err(e) => return Check::new(name, true, Status::Fail, format!("{e:#}")).hint("cannot read this process's capabilities"),
    };
    let missing = missing_caps(caps);
    let held = held_caps(caps);
    let held = if held.is_empty() { "none".to_string() } else { held.join(", ") };
    if missing.is_empty() {
        Check::new(name, true, Status::Ok, format!("effective {caps:#x}: {held}"))
    } else {
        Check::new(name, true, Status::Fail, format!("missing {} (effective {caps:#x}: {held})", missing.join(" and ")))
            .hint("run tprof with sudo, or `sudo setcap cap_sys_admin,cap_bpf,cap_perfmon+ep $(which tprof)` (uprobes need CAP_SYS_ADMIN)")
    }
}

fn check_uprobe_pmu() -> Check {
    let name = "uprobe PMU";
    match crate::attach::uprobe::uprobe_pmu_type() {
        Ok(t) => {
            // For real: a uprobe on this binary's first byte (not code, so never hit),
            // for this process only, opened and closed at once.
            let exe = std::path::Path::new("/proc/self/exe");
            match crate::attach::uprobe::open_event(t, exe, 0, 0, std::process::id()) {
                Ok(_fd) => Check::new(name, true, Status::Ok, format!("type {t}; a uprobe perf event opened and closed")),
                Err(e) => Check::new(name, true, Status::Fail, format!("{e:#}")),
            }
        }
        Err(e) => Check::new(name, true, Status::Fail, format!("{e:#}"))
            .hint("tprof attaches USDT probes as uprobe perf events: needs CONFIG_UPROBE_EVENTS=y and sysfs mounted"),
    }
}

// ---- the real eBPF load --------------------------------------------------------------------

/// Which stage of [`Tracer::load`] an error chain comes from. The object load creates the
/// maps (the ring buffer among them), then each tp_btf program is loaded and attached, then
/// the sleepable USDT program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadStage {
    /// Before the object: the build has no eBPF programs, or BTF offsets are missing.
    Prerequisites,
    /// Loading the object: map creation (ring buffer) and relocation.
    Object,
    /// A tp_btf program failed to load or attach.
    TpBtf,
    /// The sleepable uprobe (USDT) program failed to load.
    Usdt,
    /// After the programs (the eBPF logger, the uprobe PMU).
    Other,
}

/// Classifies an error chain (outermost context first) of [`Tracer::load`].
pub fn classify_load_error(chain: &[String]) -> LoadStage {
    let any = |needle: &str| chain.iter().any(|c| c.contains(needle));
    if any("built without its eBPF programs") || any("task_struct offsets") {
        LoadStage::Prerequisites
    } else if any("tp_btf") || any("/sys/kernel/btf/vmlinux") {
        LoadStage::TpBtf
    } else if any("USDT program") || any(profiler_common::programs::USDT) {
        LoadStage::Usdt
    } else if any("loading tprof's eBPF object") {
        LoadStage::Object
    } else {
        LoadStage::Other
    }
}

/// Collapses a multi-line error into one line of at most `max` characters (plus an ellipsis).
pub fn one_line(s: &str, max: usize) -> (String, bool) {
    let flat = s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ");
    let flat = crate::present::escape(&flat);
    if flat.chars().count() <= max {
        (flat, false)
    } else {
        (format!("{}…", flat.chars().take(max).collect::<String>()), true)
    }
}

const RING: &str = "BPF ring buffer";
const TP_BTF: &str = "tp_btf programs";
const SLEEPABLE: &str = "sleepable uprobe";
const MULTI: &str = "uprobe_multi links";

fn check_ebpf_load(privileged: bool) -> Vec<Check> {
    if !privileged {
        let skip = |name| {
            Check::new(name, true, Status::Fail, "not checked: loading eBPF programs needs the capabilities above")
                .hint("run `sudo tprof doctor`")
        };
        return vec![skip(RING), skip(TP_BTF), skip(SLEEPABLE), skip(MULTI)];
    }
    let opts = TraceOptions { ring_bytes: 1 << 20, syscalls: true, stacks: true, stack_ns: 1_000_000, detail_ns: 100_000, slow_ns: 10_000_000, debug_ebpf: false, uprobe_multi: true, fault: (0, 0), sample_hz: 0 };
    match Tracer::load(&opts, true) {
        Ok(tracer) => {
            let tp = tracer.ebpf.programs().filter(|(_, p)| matches!(p, aya::programs::Program::BtfTracePoint(_))).count();
            let has_ring = tracer.ebpf.maps().any(|(name, m)| name == profiler_common::maps::EVENTS && matches!(m, aya::maps::Map::RingBuf(_)));
            let multi = if tracer.has_uprobe_multi() {
                Check::new(MULTI, false, Status::Ok, "the USDT programs loaded for uprobe_multi links (one link per file)")
            } else {
                let why = tracer.warnings.first().cloned().unwrap_or_default();
                Check::new(MULTI, false, Status::Warn, why).hint("Linux >= 6.6 has them; tprof falls back to one perf event per probe site")
            };
            // Dropping the tracer detaches and unloads everything at once.
            drop(tracer);
            vec![
                if has_ring {
                    Check::new(RING, true, Status::Ok, format!("created tprof's 1 MiB {} ring buffer", profiler_common::maps::EVENTS))
                } else {
                    Check::new(RING, true, Status::Fail, format!("tprof's object loaded but has no {} ring buffer", profiler_common::maps::EVENTS))
                        .hint("this tprof build is broken: rebuild it (`cargo xtask build`)")
                },
                Check::new(TP_BTF, true, Status::Ok, format!("{tp} loaded and attached (scheduler, syscalls, irq, exit), then detached")),
                Check::new(SLEEPABLE, true, Status::Ok, format!("{} (uprobe.s) accepted by the verifier", profiler_common::programs::USDT)),
                multi,
            ]
        }
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let stage = classify_load_error(&chain);
            let (text, long) = one_line(&format!("{e:#}"), MAX_INLINE_ERROR);
            let fail = |name: &'static str, hint: &str| {
                let mut c = Check::new(name, true, Status::Fail, text.clone()).hint(hint);
                if long {
                    c.more = Some(format!("{e:#}"));
                }
                c
            };
            let ok = |name: &'static str, what: &str| Check::new(name, true, Status::Ok, what.to_string());
            let unknown = |name: &'static str| {
                Check::new(name, true, Status::Warn, "not reached: an earlier stage of the load failed").hint("fix the FAIL above first")
            };
            let mut checks = match stage {
                LoadStage::Prerequisites => vec![
                    fail(RING, "tprof could not prepare its programs: fix the BTF line above, or rebuild tprof (`cargo xtask build`)"),
                    unknown(TP_BTF),
                    unknown(SLEEPABLE),
                ],
                LoadStage::Object => vec![
                    fail(RING, "the BPF ring buffer needs Linux >= 5.8; check the kernel and BTF lines above and `dmesg`"),
                    unknown(TP_BTF),
                    unknown(SLEEPABLE),
                ],
                LoadStage::TpBtf => vec![
                    ok(RING, "created"),
                    fail(TP_BTF, "tp_btf needs Linux >= 5.5 with BTF (CONFIG_DEBUG_INFO_BTF) and BPF trampolines (x86_64, arm64)"),
                    unknown(SLEEPABLE),
                ],
                LoadStage::Usdt => vec![
                    ok(RING, "created"),
                    ok(TP_BTF, "loaded and attached"),
                    fail(SLEEPABLE, "sleepable uprobe programs need Linux >= 5.10 (uprobe.s); see the verifier output"),
                ],
                LoadStage::Other => vec![
                    ok(RING, "created"),
                    ok(TP_BTF, "loaded and attached"),
                    fail(SLEEPABLE, "the programs loaded but the session could not start; see the error"),
                ],
            };
            checks.push(unknown(MULTI));
            checks
        }
    }
}

// ---- informational -------------------------------------------------------------------------

/// Where tracefs is mounted, from `/proc/mounts` text.
pub fn tracefs_mount(mounts: &str) -> Option<String> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "tracefs").then(|| dir.to_string())
    })
}

fn check_tracefs() -> Check {
    let name = "tracefs";
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    match tracefs_mount(&mounts) {
        Some(dir) => Check::new(name, false, Status::Ok, format!("mounted at {dir} (tprof does not need it: it attaches through perf_event_open and BPF links)")),
        None => Check::new(name, false, Status::Ok, "not mounted: fine, tprof does not need tracefs"),
    }
}

/// What a `perf_event_paranoid` value means for tprof.
pub fn paranoid_meaning(v: i32) -> &'static str {
    match v {
        i32::MIN..=-1 => "no restrictions",
        0..=1 => "unprivileged users may profile their own processes",
        2 => "unprivileged users may profile user space only",
        _ => "perf events restricted to privileged users",
    }
}

fn read_paranoid() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").ok().and_then(|t| t.trim().parse::<i32>().ok())
}

fn check_paranoid() -> Check {
    let name = "perf_event_paranoid";
    match read_paranoid() {
        Some(v) => Check::new(
            name,
            false,
            Status::Ok,
            format!("{v} ({}); does not affect tprof, which runs with CAP_PERFMON", paranoid_meaning(v)),
        ),
        None => Check::new(name, false, Status::Warn, "/proc/sys/kernel/perf_event_paranoid unreadable")
            .hint("informational only; perf events may be unavailable (CONFIG_PERF_EVENTS)"),
    }
}

/// Whether `/proc/kallsyms` shows real addresses to this process (the kernel's
/// `kallsyms_show_value`): with `kptr_restrict` 0, when `perf_event_paranoid` <= 1 or with
/// CAP_SYSLOG; with 1, only with CAP_SYSLOG; with 2, never.
pub fn kptr_visible(kptr_restrict: u32, perf_event_paranoid: Option<i32>, cap_syslog: bool) -> bool {
    match kptr_restrict {
        0 => cap_syslog || perf_event_paranoid.is_some_and(|p| p <= 1),
        1 => cap_syslog,
        _ => false,
    }
}

fn check_kptr_restrict(caps: u64) -> Check {
    let name = "kptr_restrict";
    let cap_syslog = caps & (1u64 << CAP_SYSLOG) != 0;
    let paranoid = read_paranoid();
    match std::fs::read_to_string("/proc/sys/kernel/kptr_restrict").ok().and_then(|t| t.trim().parse::<u32>().ok()) {
        Some(v) if kptr_visible(v, paranoid, cap_syslog) => Check::new(
            name,
            false,
            Status::Ok,
            format!("{v}{}: kernel addresses visible, kernel stacks get symbolized", if cap_syslog { " (this process has CAP_SYSLOG)" } else { "" }),
        ),
        Some(v) => Check::new(name, false, Status::Warn, format!("{v}: kernel addresses hidden from this process; kernel stacks stay unsymbolized"))
            .hint(if v <= 1 { "run tprof as root (CAP_SYSLOG)" } else { "`sysctl kernel.kptr_restrict=1` and run tprof as root" }),
        None => Check::new(name, false, Status::Warn, "/proc/sys/kernel/kptr_restrict unreadable").hint("kernel stack symbolization may fail"),
    }
}

/// What the first lines of `/proc/kallsyms` say: Some(symbols with non-zero addresses) out
/// of the lines read, or None when none could be read.
pub fn kallsyms_nonzero(lines: &[String]) -> Option<(usize, usize)> {
    if lines.is_empty() {
        return None;
    }
    let nonzero = lines
        .iter()
        .filter(|l| l.split_whitespace().next().and_then(|a| u64::from_str_radix(a, 16).ok()).is_some_and(|a| a != 0))
        .count();
    Some((nonzero, lines.len()))
}

fn check_kallsyms() -> Check {
    let name = "/proc/kallsyms";
    let file = match std::fs::File::open("/proc/kallsyms") {
        Ok(f) => f,
        Err(e) => {
            return Check::new(name, false, Status::Warn, format!("unreadable: {e}"))
                .hint("kernel stacks cannot be symbolized (CONFIG_KALLSYMS, or a restricted /proc)")
        }
    };
    let lines: Vec<String> = BufReader::new(file).lines().take(200).map_while(|l| l.ok()).collect();
    match kallsyms_nonzero(&lines) {
        Some((n, _)) if n > 0 => Check::new(name, false, Status::Ok, "readable with real addresses: kernel stacks get symbolized"),
        Some(_) => Check::new(name, false, Status::Warn, "readable but every address is 0 (hidden: see kptr_restrict above)")
            .hint("kernel stacks stay unsymbolized: run tprof as root with kernel.kptr_restrict <= 1"),
        None => Check::new(name, false, Status::Warn, "empty").hint("kernel stacks cannot be symbolized (CONFIG_KALLSYMS)"),
    }
}

/// The selected mode of `/sys/kernel/security/lockdown` (`none [integrity] confidentiality`).
pub fn lockdown_mode(text: &str) -> Option<&str> {
    let start = text.find('[')?;
    let end = text[start..].find(']')?;
    Some(&text[start + 1..start + end])
}

fn check_lockdown() -> Check {
    let name = "lockdown";
    let Ok(text) = std::fs::read_to_string("/sys/kernel/security/lockdown") else {
        return Check::new(name, false, Status::Ok, "no lockdown LSM (or securityfs not mounted)");
    };
    match lockdown_mode(&text) {
        Some("confidentiality") => Check::new(name, false, Status::Warn, "confidentiality: eBPF may not read kernel memory")
            .hint("tprof's programs read task_struct fields; boot with lockdown=integrity or none"),
        Some(m) => Check::new(name, false, Status::Ok, m.to_string()),
        None => Check::new(name, false, Status::Ok, format!("{:?}", text.trim())),
    }
}

// ---- the target's frame pointers -----------------------------------------------------

/// The advice for a program built without frame pointers (docs/usage.md says the same).
pub const FRAME_POINTER_HINT: &str = "rebuild it with RUSTFLAGS=\"-C force-frame-pointers=yes\" (C: -fno-omit-frame-pointer) \
     for whole user stacks; Rust's std comes prebuilt as the toolchain built it (the Rust std count above) unless \
     rebuilt with -Zbuild-std, so a stack may still stop inside it: tprof marks such stacks \"likely truncated\"";

/// Whether process `pid`'s executable keeps frame pointers (its functions' prologues).
fn check_frame_pointers(pid: u32) -> Check {
    const NAME: &str = "frame pointers";
    let exe = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
    let fp = match crate::frame_pointers::inspect(&exe) {
        Ok(fp) => fp,
        Err(e) => return Check::new(NAME, false, Status::Warn, format!("pid {pid}: {e:#}")).hint("is the pid right, and may tprof read its executable?"),
    };
    if fp.own == 0 {
        return Check::new(NAME, false, Status::Warn, format!("pid {pid}: its executable has no function symbols to inspect (stripped?)"));
    }
    frame_pointer_check(pid, &fp)
}

/// The check's line for what [`crate::frame_pointers::inspect`] found.
pub fn frame_pointer_check(pid: u32, fp: &crate::frame_pointers::FramePointers) -> Check {
    use crate::frame_pointers::Verdict;
    const NAME: &str = "frame pointers";
    let std = if fp.std > 0 { format!("; Rust std: {} of {}", fp.std_with, fp.std) } else { String::new() };
    let detail = format!("pid {pid}: {} of {} of its own functions set up a frame pointer{std}", fp.own_with, fp.own);
    match fp.verdict() {
        Verdict::Kept => Check::new(NAME, false, Status::Ok, detail),
        Verdict::Omitted => Check::new(NAME, false, Status::Warn, format!("{detail}: built without them, user stacks will stop after 1-2 frames"))
            .hint(FRAME_POINTER_HINT),
        Verdict::Unclear => Check::new(NAME, false, Status::Warn, format!("{detail}: partly, user stacks may stop early")).hint(FRAME_POINTER_HINT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v595"), Some((6, 18, 44)));
        assert_eq!(parse_kernel_version("5.15.0-91-generic"), Some((5, 15, 0)));
        assert_eq!(parse_kernel_version("6.1"), Some((6, 1, 0)));
        assert_eq!(parse_kernel_version("6.9-rc1"), Some((6, 9, 0)));
        assert_eq!(parse_kernel_version("4.19.0+"), Some((4, 19, 0)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert_eq!(parse_kernel_version(""), None);
        assert!(kernel_supported((5, 15, 0)) && kernel_supported((6, 0, 1)) && kernel_supported((6, 18, 44)));
        assert!(!kernel_supported((5, 14, 21)) && !kernel_supported((4, 19, 0)));
    }

    #[test]
    fn load_errors_name_their_stage() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(classify_load_error(&s(&["loading tprof's eBPF object into the kernel", "map EVENTS: EPERM"])), LoadStage::Object);
        assert_eq!(
            classify_load_error(&s(&["loading tp_btf program sched_switch (verifier output above)", "BPF_PROG_LOAD"])),
            LoadStage::TpBtf
        );
        assert_eq!(classify_load_error(&s(&["attaching tp_btf/sys_enter", "EINVAL"])), LoadStage::TpBtf);
        assert_eq!(classify_load_error(&s(&["loading the USDT program", "verifier: sleepable"])), LoadStage::Usdt);
        assert_eq!(
            classify_load_error(&s(&["this tprof was built without its eBPF programs (no bpf-linker); run `cargo xtask setup`"])),
            LoadStage::Prerequisites
        );
        assert_eq!(classify_load_error(&s(&["reading /sys/bus/event_source/devices/uprobe/type"])), LoadStage::Other);
    }

    #[test]
    fn one_line_flattens_and_bounds() {
        assert_eq!(one_line("a\n  b\n\nc", 100), ("a | b | c".to_string(), false));
        let (s, long) = one_line(&"x".repeat(50), 10);
        assert!(long && s == format!("{}…", "x".repeat(10)));
        // Verifier logs are kernel text, but escape anyway: a doctor line is terminal output.
        assert_eq!(one_line("a\x1b[2Jb", 100).0, "a\\u{1b}[2Jb");
    }

    #[test]
    fn tracefs_found_in_mounts() {
        let mounts = "sysfs /sys sysfs rw 0 0\ntracefs /sys/kernel/tracing tracefs rw,nosuid 0 0\n";
        assert_eq!(tracefs_mount(mounts).as_deref(), Some("/sys/kernel/tracing"));
        assert_eq!(tracefs_mount("proc /proc proc rw 0 0\n"), None);
        assert_eq!(tracefs_mount(""), None);
    }

    #[test]
    fn kptr_rules() {
        assert!(kptr_visible(0, Some(1), false));
        assert!(kptr_visible(0, Some(2), true));
        assert!(!kptr_visible(0, Some(2), false), "paranoid 2 hides addresses from the unprivileged");
        assert!(kptr_visible(1, Some(-1), true));
        assert!(!kptr_visible(1, Some(-1), false));
        assert!(!kptr_visible(2, Some(-1), true));
    }

    #[test]
    fn kallsyms_addresses() {
        let l = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(kallsyms_nonzero(&l(&["0000000000000000 A fixed_percpu_data", "ffffffff81000000 T _stext"])), Some((1, 2)));
        assert_eq!(kallsyms_nonzero(&l(&["0000000000000000 T _stext", "0000000000000000 T x"])), Some((0, 2)));
        assert_eq!(kallsyms_nonzero(&[]), None);
    }

    #[test]
    fn lockdown_modes() {
        assert_eq!(lockdown_mode("[none] integrity confidentiality\n"), Some("none"));
        assert_eq!(lockdown_mode("none integrity [confidentiality]\n"), Some("confidentiality"));
        assert_eq!(lockdown_mode(""), None);
    }

    #[test]
    fn caps_held_and_lines() {
        assert_eq!(held_caps(0), Vec::<&str>::new());
        assert_eq!(held_caps((1 << 38) | (1 << 39)), ["CAP_PERFMON", "CAP_BPF"]);
        let c = Check::new("BTF", true, Status::Fail, "missing").hint("rebuild");
        assert_eq!(format_line(&c), format!("FAIL  {:<22}missing -> rebuild", "BTF"));
        assert!(paranoid_meaning(2).contains("user space"));
        assert!(paranoid_meaning(-1).contains("no restrictions"));
    }

    /// The whole run works without privileges too: every line is labelled and the verdict
    /// follows what failed (as root on a supported kernel, everything essential passes).
    #[test]
    fn frame_pointer_lines() {
        use crate::frame_pointers::FramePointers;
        let kept = frame_pointer_check(7, &FramePointers { own: 35, own_with: 33, std: 10, std_with: 2 });
        assert_eq!((kept.status, kept.hint.is_none()), (Status::Ok, true), "{kept:?}");
        assert!(kept.detail.contains("33 of 35") && kept.detail.contains("Rust std: 2 of 10"), "{kept:?}");
        let omitted = frame_pointer_check(7, &FramePointers { own: 34, own_with: 9, std: 0, std_with: 0 });
        assert_eq!(omitted.status, Status::Warn);
        assert!(omitted.hint.as_deref().is_some_and(|h| h.contains("RUSTFLAGS=\"-C force-frame-pointers=yes\"") && h.contains("-Zbuild-std")));
    }

    #[test]
    fn run_prints_labelled_lines() {
        let mut out = Vec::new();
        let ok = run(&mut out, None).expect("doctor runs");
        let text = String::from_utf8(out).expect("utf-8");
        let checks: Vec<&str> = text.lines().filter(|l| !l.starts_with("tprof doctor") && !l.starts_with("        ")).collect();
        assert!(checks.len() >= 11, "{text}");
        for l in &checks {
            assert!(l.starts_with("OK  ") || l.starts_with("WARN") || l.starts_with("FAIL"), "{l:?} in {text}");
        }
        let essential_fail = ["kernel", "BTF", "capabilities", "uprobe PMU", RING, TP_BTF, SLEEPABLE]
            .iter()
            .any(|n| checks.iter().any(|l| l.starts_with("FAIL") && l[6..].starts_with(n)));
        assert_eq!(ok, !essential_fail, "{text}");
        assert!(!text.contains('\x1b'));
    }
}
