//! A traced process's names, read from /proc when the session adds it: what the OTLP
//! resource and a recording need (`service.name`, `process.executable.name`,
//! `process.command_line`, `service.instance.id`). Everything is optional: a process of
//! another user hides its executable link and environment from tprof once it has dropped
//! its privileges, and a process may exit meanwhile.

use crate::model::process::{ProcessInfo, MAX_COMMAND_LINE, MAX_THREADS};

/// Longest `OTEL_SERVICE_NAME` kept, in bytes.
const MAX_SERVICE_NAME: usize = 256;

/// `s` cut to at most `max` bytes, on a character boundary.
fn bounded(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The value of `name` in an environment block (`KEY=value\0...`).
pub fn env_value(environ: &[u8], name: &str) -> Option<String> {
    environ.split(|b| *b == 0).find_map(|kv| {
        let v = kv.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(bounded(String::from_utf8_lossy(v).into_owned(), MAX_SERVICE_NAME))
    })
}

/// The last path component, without the kernel's ` (deleted)` mark.
fn file_name(path: &str) -> Option<String> {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.rsplit('/').next().filter(|n| !n.is_empty()).map(str::to_string)
}

/// Field 22 of `/proc/PID/stat`: the start time in clock ticks since boot.
fn start_ticks(stat: &str) -> Option<u64> {
    // Fields after the comm (which may contain anything) start at field 3.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// A UUID (version 8, RFC 9562's custom layout) from what names one process instance.
pub fn instance_id(boot_id: &str, pid: u32, start_ticks: u64) -> String {
    fn fnv(seed: u64, bytes: &[u8]) -> u64 {
        let mut h = seed;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
    let key = format!("{boot_id}/{pid}/{start_ticks}");
    let hi = fnv(0xcbf2_9ce4_8422_2325, key.as_bytes());
    let lo = fnv(0x8422_2325_cbf2_9ce4, key.as_bytes());
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Fills in `info`'s names. `environ`: the process's environment when tprof could read it
/// (its `--pid`s' before it dropped its privileges, its own user's processes after; the
/// caller asks the helper for the others).
pub fn complete(info: &mut ProcessInfo, environ: Option<&[u8]>, boot_id: Option<&str>) {
    let dir = format!("/proc/{}", info.pid);
    info.comm = std::fs::read_to_string(format!("{dir}/comm")).ok().map(|c| c.trim_end_matches('\n').to_string()).filter(|c| !c.is_empty());
    let args: Vec<String> = std::fs::read(format!("{dir}/cmdline"))
        .map(|b| b.split(|c| *c == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
        .unwrap_or_default();
    info.exe_name = std::fs::read_link(format!("{dir}/exe"))
        .ok()
        .and_then(|p| file_name(&p.to_string_lossy()))
        .or_else(|| args.first().and_then(|a| file_name(a)));
    if !args.is_empty() {
        info.command_line = Some(bounded(args.join(" "), MAX_COMMAND_LINE));
    }
    info.otel_service_name = environ.and_then(|e| env_value(e, "OTEL_SERVICE_NAME")).filter(|s| !s.is_empty());
    if let Ok(tasks) = std::fs::read_dir(format!("{dir}/task")) {
        for e in tasks.flatten().take(MAX_THREADS) {
            let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            if let Ok(c) = std::fs::read_to_string(e.path().join("comm")) {
                info.threads.push((tid, c.trim_end_matches('\n').to_string()));
            }
        }
        info.threads.sort();
    }
    let ticks = std::fs::read_to_string(format!("{dir}/stat")).ok().and_then(|s| start_ticks(&s));
    if let (Some(b), Some(t)) = (boot_id, ticks) {
        info.instance_id = Some(instance_id(b, info.pid, t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_values_and_bounds() {
        let env = b"A=1\0OTEL_SERVICE_NAME=checkout\0OTEL_SERVICE_NAMEX=no\0";
        assert_eq!(env_value(env, "OTEL_SERVICE_NAME").as_deref(), Some("checkout"));
        assert_eq!(env_value(env, "B"), None);
        assert_eq!(bounded("héllo".into(), 2), "h");
        assert_eq!(file_name("/usr/bin/my-server (deleted)").as_deref(), Some("my-server"));
    }

    #[test]
    fn instance_ids_are_uuids_stable_per_process_instance() {
        let a = instance_id("b00t", 7, 100);
        assert_eq!(a, instance_id("b00t", 7, 100));
        assert_ne!(a, instance_id("b00t", 7, 101));
        assert_ne!(a, instance_id("other", 7, 100));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version 8");
    }

    #[test]
    fn this_process_is_named() {
        let mut info = ProcessInfo { pid: std::process::id(), ..Default::default() };
        complete(&mut info, Some(b"OTEL_SERVICE_NAME=me\0"), Some("boot"));
        assert_eq!(info.otel_service_name.as_deref(), Some("me"));
        assert!(info.thread_name(info.pid).is_some(), "{info:?}");
        assert!(info.exe_name.is_some() && info.comm.is_some() && info.command_line.is_some() && info.instance_id.is_some(), "{info:?}");
        let stat = "1 (a) b) S 1 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4242 0";
        assert_eq!(start_ticks(stat), Some(4242));
    }
}
