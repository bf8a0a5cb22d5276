//! A small, bounds-checked reader of the kernel's BTF, used to find field offsets.
//!
//! tprof's eBPF programs read `task_struct`'s `pid`, `tgid` and `flags`, but aya's Rust eBPF
//! has no CO-RE (no compiler-emitted relocations fixed up by the loader), so the programs
//! cannot name those fields portably. Instead userspace reads their byte offsets from the
//! running kernel's BTF (`/sys/kernel/btf/vmlinux`) and passes them in as a global
//! ([`profiler_common::KernelOffsets`]). Format: <https://docs.kernel.org/bpf/btf.html>.
//!
//! Only what offset lookups need is kept; every read is bounds-checked and malformed input
//! yields an error, never a panic.

use anyhow::{anyhow, bail, ensure, Context, Result};

const MAGIC: u16 = 0xEB9F;
const HEADER_LEN: usize = 24;
const MAX_TYPES: usize = 2_000_000;
/// Depth cap for anonymous-member recursion and typedef/const/volatile chains.
const MAX_DEPTH: u32 = 32;
const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const KIND_INT: u8 = 1;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;

/// A struct/union member. `bitfield_size` is non-zero for bitfields of `kind_flag` structs.
#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Debug, Clone, Default)]
struct Type {
    kind: u8,
    name_off: u32,
    size_or_type: u32,
    /// INT only: the encoding word (bits 0-7 nr_bits, 16-23 bit offset).
    int_encoding: u32,
    members: Vec<Member>,
}

/// A member found by `Btf::find`, with its bit offset from the outermost struct.
type Hit = Option<(Member, u32)>;

/// A parsed BTF type table (index = type id; id 0 is `void`) and its string section.
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(buf: &[u8], off: usize) -> Result<u32> {
    let b = off.checked_add(4).and_then(|end| buf.get(off..end));
    let b = b.ok_or_else(|| anyhow!("BTF truncated at byte {off}"))?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// `data[start..start + len]`, or an error naming `what`.
fn slice<'a>(data: &'a [u8], start: usize, len: usize, what: &str) -> Result<&'a [u8]> {
    let end = start.checked_add(len);
    let s = end.and_then(|end| data.get(start..end));
    s.ok_or_else(|| anyhow!("{what} (at {start}, {len} bytes) is out of bounds"))
}

impl Btf {
    /// Parses a little-endian BTF blob.
    pub fn from_bytes(data: &[u8]) -> Result<Btf> {
        let head = slice(data, 0, HEADER_LEN, "BTF header")?;
        let magic = u16::from_le_bytes([head[0], head[1]]);
        ensure!(magic != MAGIC.swap_bytes(), "big-endian BTF is unsupported");
        ensure!(magic == MAGIC, "bad BTF magic {magic:#06x}");
        ensure!(head[2] == 1, "unsupported BTF version {}", head[2]);
        let [hdr_len, type_off, type_len, str_off, str_len] =
            [4, 8, 12, 16, 20].map(|o| u32_at(head, o).map_or(0, |v| v as usize));
        ensure!(hdr_len >= HEADER_LEN, "bad BTF hdr_len {hdr_len}");
        // Section offsets are relative to the end of the header.
        let type_sec = slice(
            data,
            hdr_len.saturating_add(type_off),
            type_len,
            "type section",
        )?;
        let strings = slice(
            data,
            hdr_len.saturating_add(str_off),
            str_len,
            "string section",
        )?;
        let strings = strings.to_vec();
        let terminated = strings.last().is_none_or(|&b| b == 0);
        ensure!(terminated, "BTF string section is not NUL-terminated");
        let name_ok = |off: u32| (off as usize) < strings.len() || off == 0;

        let mut types = vec![Type::default()]; // id 0: void
        let mut pos = 0usize;
        while pos < type_sec.len() {
            let id = types.len();
            ensure!(id <= MAX_TYPES, "BTF has more than {MAX_TYPES} types");
            let head = slice(type_sec, pos, 12, "BTF type")?;
            let [name_off, info, size_or_type] = [0, 4, 8].map(|o| u32_at(head, o).unwrap_or(0));
            ensure!(name_ok(name_off), "type {id}: bad name offset {name_off}");
            let vlen = (info & 0xffff) as usize;
            let kind = ((info >> 24) & 0x1f) as u8;
            let kind_flag = info >> 31 == 1;
            let extra = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF .. FUNC, FLOAT, TYPE_TAG
                _ => bail!("type {id}: unknown BTF kind {kind}"),
            };
            let body = slice(type_sec, pos + 12, extra, "BTF type data")?;
            let mut ty = Type {
                kind,
                name_off,
                size_or_type,
                ..Type::default()
            };
            if kind == KIND_INT {
                ty.int_encoding = u32_at(body, 0)?;
            } else if kind == KIND_STRUCT || kind == KIND_UNION {
                for m in body.chunks_exact(12) {
                    let [name_off, type_id, off] = [0, 4, 8].map(|o| u32_at(m, o).unwrap_or(0));
                    ensure!(name_ok(name_off), "type {id}: bad member name offset");
                    // With `kind_flag`: bitfield size in bits 24-31, bit offset below.
                    let bitfield_size = if kind_flag { off >> 24 } else { 0 };
                    let bit_offset = if kind_flag { off & 0xff_ffff } else { off };
                    ty.members.push(Member {
                        name_off,
                        type_id,
                        bit_offset,
                        bitfield_size,
                    });
                }
            }
            types.push(ty);
            pos += 12 + extra; // in bounds: `body` was
        }
        Ok(Btf { types, strings })
    }

    /// Reads the running kernel's BTF from `/sys/kernel/btf/vmlinux`.
    pub fn from_sys_fs() -> Result<Btf> {
        let data = std::fs::read(VMLINUX).with_context(|| {
            format!("cannot read {VMLINUX}: the kernel lacks BTF (needs CONFIG_DEBUG_INFO_BTF=y)")
        })?;
        Btf::from_bytes(&data).with_context(|| format!("parsing {VMLINUX}"))
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    /// Follows TYPEDEF (8), VOLATILE (9), CONST (10), RESTRICT (11) and TYPE_TAG (18) chains.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..MAX_DEPTH {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                8..=11 | 18 => id = ty.size_or_type,
                _ => return Some(ty),
            }
        }
        None
    }

    /// Searches `ty` and, recursively, its anonymous struct/union members for `field`,
    /// visiting at most `budget` members in all (a crafted blob of nested anonymous members
    /// would otherwise take exponential time: found by fuzzing).
    fn find(&self, ty: &Type, field: &[u8], base: u32, depth: u32, budget: &mut u32) -> Result<Hit> {
        ensure!(depth < MAX_DEPTH, "anonymous members nest too deep");
        for m in &ty.members {
            *budget = budget.checked_sub(1).context("too many anonymous members to search")?;
            let bits = base.checked_add(m.bit_offset).context("bad bit offset")?;
            let name = self.name(m.name_off);
            if !field.is_empty() && name == field {
                return Ok(Some((*m, bits)));
            }
            // Anonymous member: look inside (non-aggregates have no members).
            if let Some(inner) = self.resolve(m.type_id).filter(|_| name.is_empty()) {
                if let Some(hit) = self.find(inner, field, bits, depth + 1, budget)? {
                    return Ok(Some(hit));
                }
            }
        }
        Ok(None)
    }

    /// Byte offset of `field` inside `struct struct_name`, searching into anonymous
    /// struct/union members recursively (fields can be nested in anonymous unions/structs),
    /// following typedef/const/volatile to reach those anonymous aggregates. Errors if the
    /// struct or field is missing, or the field is a bitfield or not byte-aligned.
    pub fn member_offset(&self, struct_name: &str, field: &str) -> Result<u32> {
        let wanted =
            |t: &&Type| t.kind == KIND_STRUCT && self.name(t.name_off) == struct_name.as_bytes();
        let st = self.types.iter().find(wanted);
        let st = st.with_context(|| format!("struct {struct_name} not found in BTF"))?;
        let found = self.find(st, field.as_bytes(), 0, 0, &mut 100_000)?;
        let (m, bits) = found.with_context(|| format!("{struct_name} has no field {field}"))?;
        // Without `kind_flag`, a bitfield's width is in its INT type's encoding.
        let int_bitfield = self.resolve(m.type_id).is_some_and(|t| {
            let (nr_bits, bit_off) = (t.int_encoding & 0xff, (t.int_encoding >> 16) & 0xff);
            t.kind == KIND_INT
                && (bit_off != 0 || u64::from(nr_bits) != u64::from(t.size_or_type) * 8)
        });
        let what = format!("{struct_name}.{field}");
        ensure!(m.bitfield_size == 0 && !int_bitfield, "{what}: bitfield");
        ensure!(bits % 8 == 0, "{what} is not byte-aligned ({bits} bits)");
        Ok(bits / 8)
    }
}

/// Reads the offsets tprof needs: task_struct.pid, .tgid, .flags, .se.sum_exec_runtime and
/// .se.prev_sum_exec_runtime (the last two optional: without them, slices are not
/// cross-checked with the kernel's accounting, nor is the time outside tasks measured).
pub fn kernel_offsets() -> Result<profiler_common::KernelOffsets> {
    let btf = Btf::from_sys_fs()?;
    let se = btf.member_offset("task_struct", "se");
    let se_field = |f: &str| se.as_ref().ok().and_then(|se| Some(se + btf.member_offset("sched_entity", f).ok()?));
    let runtime = se_field("sum_exec_runtime");
    // Set by the fair scheduler when it picks the thread (`set_next_entity`): the runtime
    // of the current slice is `sum_exec_runtime - prev_sum_exec_runtime`.
    let prev_runtime = se_field("prev_sum_exec_runtime");
    // The steal chain needs all three (FAIR_GROUP_SCHED, PARAVIRT_TIME_ACCOUNTING kernels).
    let steal = (|| -> Result<(u32, u32, u32)> {
        let cfs_rq = se.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))? + btf.member_offset("sched_entity", "cfs_rq")?;
        Ok((cfs_rq, btf.member_offset("cfs_rq", "rq")?, btf.member_offset("rq", "prev_steal_time_rq")?))
    })();
    let (se_cfs_rq, cfs_rq_rq, rq_steal) = steal.unwrap_or((0, 0, 0));
    Ok(profiler_common::KernelOffsets {
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_flags: btf.member_offset("task_struct", "flags")?,
        task_runtime: runtime.unwrap_or(0),
        se_cfs_rq,
        cfs_rq_rq,
        rq_steal,
        task_prev_runtime: prev_runtime.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `ty`/`agg` append a type and return its id.
    struct Builder(Vec<u8>, Vec<u8>, u32);

    const fn info(kind: u32, vlen: u32) -> u32 {
        kind << 24 | vlen
    }

    impl Builder {
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.1.len() as u32;
            self.1.extend(name.bytes().chain([0]));
            off
        }
        fn ty(&mut self, name: &str, info: u32, size_or_type: u32, trail: &[u32]) -> u32 {
            let name_off = self.s(name);
            for w in [name_off, info, size_or_type].iter().chain(trail) {
                self.0.extend(w.to_le_bytes());
            }
            self.2 += 1;
            self.2
        }
        /// A struct/union; `ms` are (name, type id, offset word).
        fn agg(&mut self, name: &str, info: u32, size: u32, ms: &[(&str, u32, u32)]) -> u32 {
            let trail: Vec<u32> = ms.iter().flat_map(|&(n, t, o)| [self.s(n), t, o]).collect();
            self.ty(name, info | ms.len() as u32, size, &trail)
        }
        fn build(&self) -> Vec<u8> {
            let (tl, sl) = (self.0.len() as u32, self.1.len() as u32);
            let mut out = vec![0x9f, 0xeb, 1, 0];
            let header = [24u32, 0, tl, tl, sl];
            out.extend(header.iter().flat_map(|w| w.to_le_bytes()));
            out.extend(self.0.iter().chain(&self.1));
            out
        }
    }

    fn sample() -> Vec<u8> {
        let (st, un) = (info(4, 0), info(5, 0));
        let mut b = Builder(Vec::new(), vec![0], 0);
        let int = b.ty("int", info(1, 0), 4, &[32]);
        // One of every other kind first, so a wrong trailing size breaks later ids.
        b.ty("", info(3, 0), 0, &[int, int, 4]); // ARRAY
        b.ty("e", info(6, 2), 4, &[0, 1, 0, 2]); // ENUM
        b.ty("", info(13, 1), int, &[0, int]); // FUNC_PROTO
        b.ty("v", info(14, 0), int, &[1]); // VAR
        b.ty(".data", info(15, 1), 8, &[6, 0, 4]); // DATASEC
        b.ty("tag", info(17, 0), int, &[u32::MAX]); // DECL_TAG
        b.ty("e64", info(19, 1), 8, &[0, 1, 2]); // ENUM64
        for k in [2, 7, 9, 10, 11, 12, 16, 18] {
            b.ty("", info(k, 0), int, &[]);
        }
        let inner = b.agg("", st, 8, &[("d", int, 0), ("e", int, 32)]);
        let union = b.agg("", un, 8, &[("b", int, 0), ("", inner, 0)]);
        let anon = b.agg("", st, 4, &[("f", int, 0)]);
        let tdef = b.ty("inner_t", info(8, 0), anon, &[]);
        let cnst = b.ty("", info(10, 0), tdef, &[]);
        let int3 = b.ty("int3", info(1, 0), 4, &[3]);
        let (a, h) = (("a", int, 0), ("h", int, 172));
        let anons = [("", union, 64), ("", cnst, 128)];
        b.agg("foo", st, 32, &[a, anons[0], anons[1], ("g", int3, 160), h]);
        let (kflag, y) = (st | 1 << 31, ("y", int, 32 | 3 << 24));
        b.agg("bits", kflag, 8, &[("x", int, 0), y, ("z", int, 40)]);
        let cyc = b.2 + 1;
        b.agg("cyc", st, 4, &[("", cyc, 0)]);
        b.ty("task_struct", info(7, 0), 0, &[]); // FWD: ignored
        let (pid, tgid) = (("pid", int, 64), ("tgid", int, 96));
        b.agg("task_struct", st, 16, &[pid, tgid]);
        b.agg("task_struct", st, 16, &[("pid", int, 0)]); // only the first counts
        b.build()
    }

    #[test]
    fn offsets_in_hand_built_blob() {
        let btf = Btf::from_bytes(&sample()).unwrap();
        let off = |s: &str, f: &str| btf.member_offset(s, f).unwrap();
        let err = |s: &str, f: &str| btf.member_offset(s, f).unwrap_err().to_string();
        assert_eq!([off("foo", "a"), off("foo", "b")], [0, 8]);
        assert_eq!([off("foo", "d"), off("foo", "e")], [8, 12]);
        assert_eq!(off("foo", "f"), 16);
        assert!(err("foo", "g").contains("foo.g: bitfield"));
        assert!(err("foo", "h").contains("byte-aligned"));
        assert!(err("foo", "nope").contains("foo has no field nope"));
        assert!(err("foo", "").contains("no field"));
        assert!(err("nope", "a").contains("struct nope not found"));
        assert!(err("e", "a").contains("not found")); // an ENUM is not a struct
        assert_eq!([off("bits", "x"), off("bits", "z")], [0, 5]);
        assert!(err("bits", "y").contains("bitfield"));
        assert!(err("cyc", "x").contains("nest too deep"));
        let task = |f: &str| off("task_struct", f);
        assert_eq!([task("pid"), task("tgid")], [8, 12]);
    }

    #[test]
    fn bad_headers_are_errors() {
        let good = sample();
        let err = |i: usize, v: u8| {
            let mut d = good.clone();
            d[i] = v;
            Btf::from_bytes(&d).unwrap_err().to_string()
        };
        assert!(err(0, 0).contains("magic"));
        assert!(err(2, 2).contains("version"));
        assert!(err(4, 8).contains("hdr_len"));
        assert!(err(23, 0x80).contains("out of bounds")); // str_len
        assert!(err(24 + 7, 31).contains("unknown BTF kind")); // first type's kind
        let be = [&[0xeb, 0x9f][..], &good[2..]].concat();
        let be_err = Btf::from_bytes(&be).unwrap_err().to_string();
        assert!(be_err.contains("big-endian"), "{be_err}");
    }

    #[test]
    fn truncated_and_garbage_inputs_do_not_panic() {
        let good = sample();
        for len in 0..good.len() {
            assert!(Btf::from_bytes(&good[..len]).is_err(), "truncated to {len}");
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for i in 0..good.len() * 8 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut d = good.clone();
            d[i % good.len()] ^= (seed >> 33) as u8 | 1;
            if i % 3 == 0 {
                d.truncate((seed >> 40) as usize % (good.len() + 1));
            }
            if let Ok(btf) = Btf::from_bytes(&d) {
                for (s, f) in [("foo", "f"), ("foo", "e"), ("cyc", "x"), ("bits", "z")] {
                    let _ = btf.member_offset(s, f);
                }
            }
        }
    }

    /// `task_struct` [pid, tgid, flags] byte offsets per `bpftool btf dump ... format raw`;
    /// `None` (with a note) only if bpftool cannot be run at all.
    fn bpftool_offsets() -> Option<[u32; 3]> {
        let args = ["btf", "dump", "file", VMLINUX, "format", "raw"];
        let out = match std::process::Command::new("bpftool").args(args).output() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("note: bpftool not runnable ({e}); skipping the cross-check");
                return None;
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "bpftool failed: {stderr}");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text
            .lines()
            .skip_while(|l| !l.contains("] STRUCT 'task_struct' "));
        assert!(lines.next().is_some(), "bpftool shows no task_struct");
        let members: Vec<&str> = lines.take_while(|l| l.starts_with('\t')).collect();
        let get = |field: &str| {
            let want = format!("'{field}' ");
            let line = members.iter().find(|l| l.trim_start().starts_with(&want));
            let bits = line.and_then(|l| l.split("bits_offset=").nth(1)?.split(' ').next());
            let bits = bits.and_then(|b| b.parse::<u32>().ok());
            bits.unwrap_or_else(|| panic!("no bits_offset for task_struct.{field} in bpftool")) / 8
        };
        Some([get("pid"), get("tgid"), get("flags")])
    }

    #[test]
    fn running_kernel_task_struct() {
        let present = std::path::Path::new(VMLINUX).exists();
        assert!(
            present,
            "{VMLINUX} is missing: need a kernel with CONFIG_DEBUG_INFO_BTF"
        );
        let btf = Btf::from_sys_fs().unwrap();
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        assert!(pid > 0 && tgid > 0);
        assert_eq!(tgid, pid + 4, "pid and tgid are adjacent pid_t fields");
        let flags = btf.member_offset("task_struct", "flags").unwrap();
        assert!(flags > 0 && flags < pid);
        let k = kernel_offsets().unwrap();
        assert_eq!([k.task_pid, k.task_tgid, k.task_flags], [pid, tgid, flags]);
        // Both runtimes are u64 fields of the task's sched_entity, prev right after sum
        // since the CFS days (include/linux/sched.h).
        let se = btf.member_offset("task_struct", "se").unwrap();
        let sum = btf.member_offset("sched_entity", "sum_exec_runtime").unwrap();
        assert_eq!(k.task_runtime, se + sum);
        assert_eq!(k.task_prev_runtime, k.task_runtime + 8, "prev_sum_exec_runtime follows sum_exec_runtime");
        if let Some(expected) = bpftool_offsets() {
            assert_eq!(
                [pid, tgid, flags],
                expected,
                "bpftool disagrees on pid/tgid/flags"
            );
        }
    }
}
