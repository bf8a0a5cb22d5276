//! `tprof record` files, and reading them back for `tprof report`.
//!
//! Format v2: the magic `TPROFREC`, a little-endian `u32` format version, the `u32` record
//! ABI version of profiler-common, then frames `tag: u8, len: u32, crc: u32, bytes`, where
//! `crc` is the CRC-32 (IEEE) of the tag, the length and the bytes (v1, still read, had no
//! crc): 1 = a raw ring-buffer record (exactly as the kernel wrote it: compact, and decoded
//! by the same decoder), 2 = a string userspace read late from `/proc/PID/mem` (`pid u32,
//! addr u64, bytes`), 3 = a symbolized blocking stack (JSON `{span_id, start_ns, stack}`),
//! 4 = the live session's report (JSON), 5 = the header (JSON: pids, tprof version, and the
//! recording machine's [`Origin`]: host name, boot id, wall-clock anchor), 6 = a traced
//! process's [`ProcessInfo`] (JSON: names, command line, `OTEL_SERVICE_NAME`, container),
//! written when the session adds the process, before its records; 7 = on-CPU samples
//! drained from the kernel, symbolized (JSON array of `profile::SampleEntry`), 8 = the end of
//! a ring-buffer drain (empty), so that a replay attributes samples to requests exactly as
//! the live session did.
//!
//! A recording therefore carries all a report needs: stacks and late strings are resolved
//! while recording, processes are named, and wall times come from the recording machine's
//! clock anchor; a report reads neither the processes, their binaries, /proc, nor the
//! reporting machine's clock.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::origin::Origin;
use crate::model::process::ProcessInfo;
use crate::model::report::SessionReport;
use crate::model::stack::Stack;

const MAGIC: &[u8; 8] = b"TPROFREC";
const FORMAT: u32 = 2;
/// The last format without frame checksums, still read.
const FORMAT_V1: u32 = 1;
/// Largest frame accepted when reading (a raw record is a few hundred bytes).
const MAX_FRAME: u32 = 16 << 20;

pub mod tag {
    pub const RAW: u8 = 1;
    pub const LATE: u8 = 2;
    pub const STACK: u8 = 3;
    pub const REPORT: u8 = 4;
    pub const HEADER: u8 = 5;
    pub const PROCESS: u8 = 6;
    /// On-CPU samples drained from the kernel (JSON array of `profile::SampleEntry`).
    pub const SAMPLES: u8 = 7;
    /// A ring-buffer drain ended (empty): summaries wait for the samples of the drain after
    /// the next one (`profile::Profiler::drained`), on replay as live.
    pub const DRAINED: u8 = 8;
}

/// The first frame of a recording.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Header {
    pub pids: Vec<u32>,
    pub tprof_version: String,
    /// The recording machine (defaults for a recording made by an older tprof).
    pub origin: Origin,
}

/// A symbolized blocking stack, by the task's span-id and the block's start.
#[derive(Debug, Serialize, Deserialize)]
struct StackFrame {
    span_id: u64,
    start_ns: u64,
    stack: Stack,
}

pub struct Recorder {
    out: BufWriter<File>,
    path: std::path::PathBuf,
    pub bytes: u64,
    pub raw_records: u64,
}

impl Recorder {
    pub fn create(path: &Path, pids: &[u32], origin: &Origin) -> Result<Recorder> {
        let file = File::create(path).with_context(|| format!("creating the recording {}", path.display()))?;
        crate::attach::privileges::give_to_invoking_user(path);
        let mut r = Recorder { out: BufWriter::new(file), path: path.to_path_buf(), bytes: 0, raw_records: 0 };
        r.out.write_all(MAGIC)?;
        r.out.write_all(&FORMAT.to_le_bytes())?;
        r.out.write_all(&profiler_common::RECORD_ABI_VERSION.to_le_bytes())?;
        let header = Header { pids: pids.to_vec(), tprof_version: env!("CARGO_PKG_VERSION").to_string(), origin: origin.clone() };
        r.frame(tag::HEADER, &serde_json::to_vec(&header)?)?;
        Ok(r)
    }

    fn frame(&mut self, tag: u8, bytes: &[u8]) -> io::Result<()> {
        let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("frame too large"))?;
        let crc = frame_crc(tag, len, bytes);
        let write = |out: &mut BufWriter<File>| -> io::Result<()> {
            out.write_all(&[tag])?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(&crc.to_le_bytes())?;
            out.write_all(bytes)
        };
        write(&mut self.out).map_err(|e| self.named(e))?;
        self.bytes += 9 + u64::from(len);
        Ok(())
    }

    /// The error, naming the recording (e.g. a full disk).
    fn named(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("writing the recording {}: {e}", self.path.display()))
    }

    pub fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.raw_records += 1;
        self.frame(tag::RAW, bytes)
    }

    pub fn late(&mut self, pid: u32, addr: u64, bytes: &[u8]) -> io::Result<()> {
        let mut b = Vec::with_capacity(12 + bytes.len());
        b.extend_from_slice(&pid.to_le_bytes());
        b.extend_from_slice(&addr.to_le_bytes());
        b.extend_from_slice(bytes);
        self.frame(tag::LATE, &b)
    }

    /// What the session learnt of a process it added.
    pub fn process(&mut self, info: &ProcessInfo) -> io::Result<()> {
        let bytes = serde_json::to_vec(info).map_err(io::Error::other)?;
        self.frame(tag::PROCESS, &bytes)
    }

    /// Samples drained from the kernel, symbolized.
    pub fn samples(&mut self, entries: &[crate::profile::SampleEntry]) -> io::Result<()> {
        let bytes = serde_json::to_vec(entries).map_err(io::Error::other)?;
        self.frame(tag::SAMPLES, &bytes)
    }

    /// The end of a ring-buffer drain.
    pub fn drained(&mut self) -> io::Result<()> {
        self.frame(tag::DRAINED, &[])
    }

    pub fn stack(&mut self, span_id: u64, start_ns: u64, stack: &Stack) -> io::Result<()> {
        let bytes = serde_json::to_vec(&StackFrame { span_id, start_ns, stack: stack.clone() }).map_err(io::Error::other)?;
        self.frame(tag::STACK, &bytes)
    }

    pub fn trailer(&mut self, r: &SessionReport) -> io::Result<()> {
        let bytes = serde_json::to_vec(r).map_err(io::Error::other)?;
        self.frame(tag::REPORT, &bytes)?;
        self.out.flush().map_err(|e| self.named(e))
    }
}

fn frame_crc(tag: u8, len: u32, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[tag]);
    h.update(&len.to_le_bytes());
    h.update(bytes);
    h.finalize()
}

/// Iterates the frames of a recording.
pub struct Frames {
    input: BufReader<File>,
    format: u32,
    /// Offset of the next frame in the file.
    offset: u64,
}

impl Frames {
    pub fn open(path: &Path) -> Result<Frames> {
        let file = File::open(path).with_context(|| format!("opening the recording {}", path.display()))?;
        let mut input = BufReader::new(file);
        let mut head = [0u8; 16];
        input.read_exact(&mut head).with_context(|| format!("{} is too short to be a tprof recording", path.display()))?;
        if &head[..8] != MAGIC {
            bail!("{} is not a tprof recording (made by `tprof record -o FILE`)", path.display());
        }
        let format = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        let abi = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
        if !(format == FORMAT || format == FORMAT_V1) || abi != profiler_common::RECORD_ABI_VERSION {
            bail!("{}: recording format {format} / record ABI {abi}; this tprof reads format {FORMAT} / ABI {}", path.display(), profiler_common::RECORD_ABI_VERSION);
        }
        Ok(Frames { input, format, offset: 16 })
    }

    /// The next frame; Ok(None) at the end. A truncated last frame (tprof killed while
    /// recording) or a damaged one (its checksum does not match) ends the iteration with an
    /// error naming its offset, which the caller reports.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let at = self.offset;
        let head = if self.format == FORMAT_V1 { 5 } else { 9 };
        let mut hdr = [0u8; 9];
        match self.input.read(&mut hdr[..1])? {
            0 => return Ok(None),
            _ => self.input.read_exact(&mut hdr[1..head]).with_context(|| format!("truncated frame header at offset {at}"))?,
        }
        let len = u32::from_le_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]);
        if len > MAX_FRAME {
            bail!("damaged frame at offset {at}: a length of {len} bytes");
        }
        let mut buf = vec![0u8; len as usize];
        self.input.read_exact(&mut buf).with_context(|| format!("truncated frame at offset {at} ({len} bytes announced)"))?;
        if self.format != FORMAT_V1 {
            let crc = u32::from_le_bytes([hdr[5], hdr[6], hdr[7], hdr[8]]);
            if crc != frame_crc(hdr[0], len, &buf) {
                bail!("damaged frame at offset {at}: its checksum does not match");
            }
        }
        self.offset += head as u64 + u64::from(len);
        Ok(Some((hdr[0], buf)))
    }
}

/// What a report needs before replaying records: late strings, stacks, the live report.
#[derive(Default)]
pub struct Tables {
    pub late: HashMap<(u32, u64), Vec<u8>>,
    pub stacks: HashMap<(u64, u64), Stack>,
    /// The live session's report (None: `tprof record` was killed before writing it).
    pub report: Option<SessionReport>,
    pub header: Option<Header>,
    /// The processes, in the order the session added them.
    pub processes: Vec<ProcessInfo>,
    /// Why the first pass stopped early, if it did.
    pub truncated: Option<String>,
    /// Frames of on-CPU samples.
    pub sample_frames: u64,
}

/// First pass over a recording.
pub fn read_tables(path: &Path) -> Result<Tables> {
    let mut frames = Frames::open(path)?;
    let mut t = Tables::default();
    loop {
        let (tag, bytes) = match frames.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                t.truncated = Some(format!("{e:#}"));
                break;
            }
        };
        match tag {
            tag::LATE if bytes.len() >= 12 => {
                let pid = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let mut a = [0u8; 8];
                a.copy_from_slice(&bytes[4..12]);
                t.late.insert((pid, u64::from_le_bytes(a)), bytes[12..].to_vec());
            }
            tag::STACK => {
                let f: StackFrame = serde_json::from_slice(&bytes).context("stack frame")?;
                t.stacks.insert((f.span_id, f.start_ns), f.stack);
            }
            tag::REPORT => t.report = serde_json::from_slice(&bytes).ok(),
            tag::HEADER => t.header = serde_json::from_slice(&bytes).ok(),
            tag::PROCESS => t.processes.extend(serde_json::from_slice::<ProcessInfo>(&bytes).ok()),
            tag::SAMPLES => t.sample_frames += 1,
            _ => {}
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(path: &Path) -> Vec<u8> {
        let origin = Origin { host_name: Some("h1".into()), boot_id: Some("b1".into()), clock_offset_ns: Some(42) };
        let mut r = Recorder::create(path, &[7], &origin).expect("create");
        r.process(&ProcessInfo { pid: 7, exe_name: Some("svc".into()), ..Default::default() }).expect("process");
        r.raw(&[1, 2, 3, 4]).expect("raw");
        r.trailer(&SessionReport::default()).expect("trailer");
        drop(r);
        std::fs::read(path).expect("read back")
    }

    #[test]
    fn a_recording_carries_its_origin_and_processes_and_says_where_it_is_damaged() {
        let dir = std::env::temp_dir().join(format!("tprof-record-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("r.tprof");
        let bytes = recording(&path);
        let t = read_tables(&path).expect("tables");
        assert_eq!(t.truncated, None);
        let h = t.header.expect("header");
        assert_eq!((h.origin.host_name.as_deref(), h.origin.clock_offset_ns), (Some("h1"), Some(42)));
        assert_eq!(t.processes.iter().map(|p| p.exe_name.as_deref()).collect::<Vec<_>>(), [Some("svc")]);
        assert!(t.report.is_some());

        // A flipped byte in the raw record's payload: its frame, by offset.
        let raw_at = bytes.windows(4).position(|w| w == [1, 2, 3, 4]).expect("the raw payload");
        let mut bad = bytes.clone();
        bad[raw_at + 1] ^= 0xff;
        std::fs::write(&path, &bad).expect("write");
        let why = read_tables(&path).expect("tables").truncated.expect("damage found");
        assert_eq!(why, format!("damaged frame at offset {}: its checksum does not match", raw_at - 9));
        // Cut in the middle of that frame.
        std::fs::write(&path, &bytes[..raw_at + 2]).expect("write");
        let why = read_tables(&path).expect("tables").truncated.expect("cut found");
        assert!(why.starts_with(&format!("truncated frame at offset {}", raw_at - 9)), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
