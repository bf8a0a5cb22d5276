//! Symbol lookup for the symbolic operands of SDT notes (`-4@NBuffers(%rip)`): the link-time
//! addresses of the few names a file's notes use, from its `.symtab` and `.dynsym` (a
//! stripped binary such as Debian's PostgreSQL keeps the exported ones in `.dynsym`).
//!
//! Bounded like the rest of [`super::elf`]: a symbol or string table larger than
//! [`MAX_SYMTAB_BYTES`] is not read (the operands that need it are then reported as
//! unknown symbols), and only the wanted names are kept.

use std::collections::{HashMap, HashSet};

use super::elf::{Elf, Source};

/// Largest symbol table, and largest string table, read.
pub const MAX_SYMTAB_BYTES: u64 = 64 << 20;
const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const SYM_SIZE: usize = 24;
const SHN_UNDEF: u16 = 0;

/// The defined symbols among `wanted`, by name: their link-time `st_value`. A name defined in
/// both tables takes the `.symtab` value (they agree in well-formed files).
pub fn lookup<S: Source + ?Sized>(elf: &Elf<'_, S>, wanted: &HashSet<String>) -> HashMap<String, u64> {
    let mut found = HashMap::new();
    for kind in [SHT_SYMTAB, SHT_DYNSYM] {
        for table in elf.sections.iter().filter(|s| s.sh_type == kind) {
            if found.len() == wanted.len() {
                return found;
            }
            let Some(strtab) = elf.sections.get(table.link as usize) else { continue };
            let (Ok(syms), Ok(strs)) = (elf.section_data(table, MAX_SYMTAB_BYTES), elf.section_data(strtab, MAX_SYMTAB_BYTES)) else { continue };
            for sym in syms.chunks_exact(SYM_SIZE) {
                let name_off = u32::from_le_bytes([sym[0], sym[1], sym[2], sym[3]]) as usize;
                let shndx = u16::from_le_bytes([sym[6], sym[7]]);
                if shndx == SHN_UNDEF || name_off == 0 {
                    continue;
                }
                let Some(rest) = strs.get(name_off..) else { continue };
                let Some(nul) = rest.iter().position(|&b| b == 0) else { continue };
                let Ok(name) = std::str::from_utf8(&rest[..nul]) else { continue };
                if wanted.contains(name) && !found.contains_key(name) {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&sym[8..16]);
                    found.insert(name.to_string(), u64::from_le_bytes(v));
                }
            }
        }
    }
    found
}

/// The symbol names the argument spec `text` uses (`40+CheckpointStats(%rip)` ->
/// `CheckpointStats`).
pub fn names_in(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_whitespace().flat_map(|one| {
        let operand = one.split_once('@').map_or(one, |(_, o)| o);
        let operand = operand.strip_prefix('$').unwrap_or(operand);
        let disp = operand.split('(').next().unwrap_or("");
        disp.split(['+', '-'])
            .filter(|t| t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '.'))
            .map(str::to_string)
            .collect::<Vec<_>>()
    })
}
