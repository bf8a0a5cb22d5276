//! Bounded reading of the parts of an ELF64 little-endian file that SDT notes need: the
//! file header, the `PT_LOAD` program headers, the section headers, section names and the
//! note sections, each with a positional read of bounded size ([`Source`]).
//!
//! A target's file may be large (debug info), sparse, or hostile (a section header that
//! claims gigabytes): nothing here ever reads more than [`MAX_TABLE_BYTES`] for a header
//! table or [`MAX_NOTE_SECTION`] for a note section, whatever the file's size, and a file
//! is never read whole.

use std::fs::File;
use std::io;

use std::fmt;
use std::path::PathBuf;

/// Largest program or section header table read (65535 section headers fit).
pub const MAX_TABLE_BYTES: u64 = 4 << 20;
/// Largest note section read; a larger one is skipped with a message. `MAX_NOTES` SDT
/// notes of ordinary length fit.
pub const MAX_NOTE_SECTION: u64 = 16 << 20;
/// Longest section name looked at.
const MAX_NAME: usize = 64;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const SHDR_SIZE: usize = 64;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const SHT_NOTE: u32 = 7;
const PN_XNUM: u16 = 0xffff;
const SHN_XINDEX: u16 = 0xffff;

/// Where the bytes of an ELF file come from: positional reads, never of the whole file.
pub trait Source {
    /// Up to `len` bytes at `offset` (fewer only at the end of the file).
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
}

impl Source for [u8] {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len());
        let end = start.saturating_add(len).min(self.len());
        Ok(self[start..end].to_vec())
    }
}

impl Source for File {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        // Positional reads: the file offset may be shared with other users of this file.
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let at = offset.checked_add(got as u64).ok_or_else(|| io::Error::other("offset overflows"))?;
            match FileExt::read_at(self, &mut buf[got..], at) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }
}

/// A loadable segment: where its bytes are in memory and in the file.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub exec: bool,
}

/// A section header (the fields the notes need).
#[derive(Debug, Clone, Copy)]
pub struct Section {
    name: u32,
    pub sh_type: u32,
    pub addr: u64,
    offset: u64,
    size: u64,
    align: u64,
    /// `sh_link`: for a symbol table, the index of its string table.
    pub link: u32,
    /// `sh_entsize`.
    pub entsize: u64,
}

/// An ELF file's headers, read with bounded reads from `src`.
pub struct Elf<'a, S: Source + ?Sized> {
    src: &'a S,
    pub segments: Vec<Segment>,
    pub sections: Vec<Section>,
    /// (offset, size) of the section name table.
    names: Option<(u64, u64)>,
    /// `e_type`: 2 = `ET_EXEC` (fixed addresses), 3 = `ET_DYN` (PIE or shared library).
    pub e_type: u16,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).and_then(|s| <[u8; 2]>::try_from(s).ok()).map_or(0, u16::from_le_bytes)
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| <[u8; 4]>::try_from(s).ok()).map_or(0, u32::from_le_bytes)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()).map_or(0, u64::from_le_bytes)
}

fn io_err(e: io::Error) -> NotesError {
    NotesError::Malformed(format!("read error: {e}"))
}

/// `count` entries of `entsize` bytes at `offset`: exactly that many, and at most
/// [`MAX_TABLE_BYTES`].
fn read_table<S: Source + ?Sized>(src: &S, what: &str, offset: u64, count: u64, entsize: usize) -> Result<Vec<u8>, NotesError> {
    let bytes = count.checked_mul(entsize as u64).filter(|n| *n <= MAX_TABLE_BYTES).ok_or_else(|| {
        NotesError::Malformed(format!("{what}: {count} entries, more than the {MAX_TABLE_BYTES} bytes tprof reads"))
    })?;
    let data = src.read_at(offset, bytes as usize).map_err(io_err)?;
    if data.len() as u64 != bytes {
        return Err(NotesError::Malformed(format!("{what}: table at {offset:#x} ({bytes} bytes) is outside the file")));
    }
    Ok(data)
}

fn section_at(b: &[u8]) -> Section {
    Section {
        name: u32_at(b, 0),
        sh_type: u32_at(b, 4),
        addr: u64_at(b, 16),
        offset: u64_at(b, 24),
        size: u64_at(b, 32),
        link: u32_at(b, 40),
        align: u64_at(b, 48),
        entsize: u64_at(b, 56),
    }
}

impl<'a, S: Source + ?Sized> Elf<'a, S> {
    /// Reads the headers. The caller has checked the identification bytes.
    pub fn parse(src: &'a S) -> Result<Self, NotesError> {
        let h = src.read_at(0, EHDR_SIZE).map_err(io_err)?;
        if h.len() < EHDR_SIZE {
            return Err(NotesError::Malformed(format!("file header: {} bytes, need {EHDR_SIZE}", h.len())));
        }
        if h[6] != 1 {
            return Err(NotesError::Malformed("bad EI_VERSION".into()));
        }
        let (phoff, shoff) = (u64_at(&h, 32), u64_at(&h, 40));
        let (phentsize, phnum, shentsize, shnum, shstrndx) = (u16_at(&h, 54), u16_at(&h, 56), u16_at(&h, 58), u16_at(&h, 60), u16_at(&h, 62));

        // Section 0 holds the real counts when they do not fit the header's fields.
        let first = if shoff != 0 {
            if usize::from(shentsize) != SHDR_SIZE {
                return Err(NotesError::Malformed(format!("section headers: entry size {shentsize}")));
            }
            Some(read_table(src, "section headers", shoff, 1, SHDR_SIZE)?)
        } else {
            None
        };
        let zeroth = first.as_deref().map(|b| (u64_at(b, 32), u32_at(b, 40), u32_at(b, 44)));

        let mut segments = Vec::new();
        if phoff != 0 {
            let count = match (phnum, zeroth) {
                (PN_XNUM, Some((_, _, info))) => u64::from(info),
                _ => u64::from(phnum),
            };
            if count > 0 && usize::from(phentsize) != PHDR_SIZE {
                return Err(NotesError::Malformed(format!("program headers: entry size {phentsize}")));
            }
            let table = read_table(src, "program headers", phoff, count, PHDR_SIZE)?;
            for ph in table.chunks_exact(PHDR_SIZE).filter(|ph| u32_at(ph, 0) == PT_LOAD) {
                segments.push(Segment { vaddr: u64_at(ph, 16), memsz: u64_at(ph, 40), offset: u64_at(ph, 8), exec: u32_at(ph, 4) & PF_X != 0 });
            }
        }

        let mut sections = Vec::new();
        let mut names = None;
        if let Some((size0, link0, _)) = zeroth {
            let count = if shnum == 0 { size0 } else { u64::from(shnum) };
            let table = read_table(src, "section headers", shoff, count, SHDR_SIZE)?;
            sections = table.chunks_exact(SHDR_SIZE).map(section_at).collect();
            let index = if shstrndx == SHN_XINDEX { u64::from(link0) } else { u64::from(shstrndx) };
            if index != 0 {
                let s = usize::try_from(index)
                    .ok()
                    .and_then(|i| sections.get(i))
                    .ok_or_else(|| NotesError::Malformed(format!("section headers: name table index {index} out of range")))?;
                names = Some((s.offset, s.size));
            }
        }
        Ok(Elf { src, segments, sections, names, e_type: u16_at(&h, 16) })
    }

    /// A section's name (at most [`MAX_NAME`] bytes are looked at); None if unreadable.
    pub fn section_name(&self, s: &Section) -> Option<Vec<u8>> {
        let (off, size) = self.names?;
        let rel = u64::from(s.name);
        if rel >= size {
            return None;
        }
        let len = (size - rel).min(MAX_NAME as u64 + 1) as usize;
        let bytes = self.src.read_at(off.checked_add(rel)?, len).ok()?;
        let nul = bytes.iter().position(|&b| b == 0)?;
        Some(bytes[..nul].to_vec())
    }

    /// The first section named `name`.
    pub fn section_by_name(&self, name: &[u8]) -> Option<&Section> {
        self.sections.iter().find(|s| self.section_name(s).as_deref() == Some(name))
    }

    /// The bytes of a section of at most `cap` bytes; why not otherwise.
    pub fn section_data(&self, s: &Section, cap: u64) -> Result<Vec<u8>, String> {
        if s.size > cap {
            return Err(format!("{} bytes, more than the {cap} tprof reads", s.size));
        }
        let data = self.src.read_at(s.offset, s.size as usize).map_err(|e| format!("read error: {e}"))?;
        if data.len() as u64 != s.size {
            return Err(format!("{} bytes at {:#x}: outside the file", s.size, s.offset));
        }
        Ok(data)
    }

}

/// Alignment of the notes of note section `s` (4 or 8).
pub fn note_align(s: &Section) -> Result<usize, String> {
    match s.align {
        0..=4 => Ok(4),
        8 => Ok(8),
        other => Err(format!("note alignment {other}")),
    }
}

/// One ELF note.
pub struct Note<'d> {
    /// The owner name, without its trailing NULs.
    pub name: &'d [u8],
    pub n_type: u32,
    pub desc: &'d [u8],
}

/// The notes of a note section's bytes: each note, or why the rest cannot be read.
pub struct Notes<'d> {
    data: &'d [u8],
    align: usize,
}

impl<'d> Notes<'d> {
    pub fn new(data: &'d [u8], align: usize) -> Notes<'d> {
        Notes { data, align }
    }

    pub fn next_note(&mut self) -> Result<Option<Note<'d>>, String> {
        let data = self.data;
        if data.is_empty() {
            return Ok(None);
        }
        if data.len() < 12 {
            return Err("note header outside the section".into());
        }
        let (namesz, descsz, n_type) = (u32_at(data, 0) as usize, u32_at(data, 4) as usize, u32_at(data, 8));
        let align = |n: usize| n.checked_add(self.align - 1).map(|n| n & !(self.align - 1));
        let name = data.get(12..12usize.saturating_add(namesz)).ok_or("note namesz outside the section")?;
        let desc_at = align(12 + namesz).ok_or("note namesz outside the section")?;
        let desc = desc_at.checked_add(descsz).and_then(|end| data.get(desc_at..end)).ok_or("note descsz outside the section")?;
        let next = align(desc_at + descsz).unwrap_or(usize::MAX);
        self.data = data.get(next..).unwrap_or_default();
        let mut name = name;
        while let [rest @ .., 0] = name {
            name = rest;
        }
        Ok(Some(Note { name, n_type, desc }))
    }
}

/// Whether `s` is a note section.
pub fn is_note(s: &Section) -> bool {
    s.sh_type == SHT_NOTE
}

/// Why a file's notes could not be read at all.
#[derive(Debug)]
pub enum NotesError {
    /// The bytes do not start with the ELF magic.
    NotElf,
    /// An ELF file of a kind tprof does not read (32-bit, big-endian).
    Unsupported(String),
    /// The ELF headers themselves are malformed.
    Malformed(String),
    /// The file could not be read.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Any of the above, for the named file.
    InFile {
        path: PathBuf,
        source: Box<NotesError>,
    },
}

impl fmt::Display for NotesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotElf => write!(f, "not an ELF file"),
            Self::Unsupported(what) => write!(f, "unsupported ELF file: {what}"),
            Self::Malformed(what) => write!(f, "malformed ELF file: {what}"),
            Self::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::InFile { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for NotesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::InFile { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
