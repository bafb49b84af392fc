//! Whether an x86-64 ELF `vmlinux` can be booted by PVH: its `XEN_ELFNOTE_PHYS32_ENTRY`
//! note (a kernel built with `CONFIG_PVH`, as Debian's are) gives the 32-bit entry point
//! QEMU jumps to after loading the ELF as it is. That skips the bzImage's decompressor,
//! which under software emulation takes most of a second of every boot.
//!
//! Only the ELF header, the program headers and the note segments are read (a vmlinux
//! is tens of MiB), each bounded.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// `XEN_ELFNOTE_PHYS32_ENTRY` (xen/include/public/elfnote.h).
const PHYS32_ENTRY: u32 = 18;
const PT_NOTE: u32 = 4;
/// More program headers or note bytes than this is not a kernel we boot this way.
const MAX_PHDRS: u16 = 64;
const MAX_NOTES: u64 = 1 << 20;

/// Whether the ELF file at `path` is a 64-bit little-endian x86-64 kernel with a PVH entry.
pub fn has_pvh_entry(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    let mut header = [0u8; 64];
    if file.read_at(&mut header, 0)? < header.len() {
        return Ok(false);
    }
    // ELF magic, ELFCLASS64, ELFDATA2LSB, EM_X86_64.
    if &header[..4] != b"\x7fELF"
        || header[4] != 2
        || header[5] != 1
        || le16(&header, 0x12) != Some(0x3e)
    {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (
        le64(&header, 0x20),
        le16(&header, 0x36),
        le16(&header, 0x38),
    ) else {
        return Ok(false);
    };
    if phnum > MAX_PHDRS || usize::from(phentsize) < 56 {
        return Ok(false);
    }
    let mut phdrs = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
    file.read_exact_at(&mut phdrs, phoff)?;
    for ph in phdrs.chunks_exact(usize::from(phentsize)) {
        if le32(ph, 0) != Some(PT_NOTE) {
            continue;
        }
        let (Some(offset), Some(size)) = (le64(ph, 0x08), le64(ph, 0x20)) else {
            continue;
        };
        if size > MAX_NOTES {
            continue;
        }
        let mut notes = vec![0u8; usize::try_from(size).unwrap_or(0)];
        file.read_exact_at(&mut notes, offset)?;
        if notes_have(&notes, b"Xen\0", PHYS32_ENTRY) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether the ELF note bytes hold a note of `name` (with its NUL) and type `kind`.
fn notes_have(mut notes: &[u8], name: &[u8], kind: u32) -> bool {
    // namesz, descsz, type; then the name and the descriptor, each padded to 4 bytes.
    while let (Some(namesz), Some(descsz), Some(ty)) =
        (le32(notes, 0), le32(notes, 4), le32(notes, 8))
    {
        let (Ok(namesz), Ok(descsz)) = (usize::try_from(namesz), usize::try_from(descsz)) else {
            return false;
        };
        let name_end = 12usize.saturating_add(namesz);
        if notes.get(12..name_end) == Some(name) && ty == kind {
            return true;
        }
        let next = 12usize
            .saturating_add(namesz.div_ceil(4) * 4)
            .saturating_add(descsz.div_ceil(4) * 4);
        match notes.get(next..) {
            Some(rest) => notes = rest,
            None => return false,
        }
    }
    false
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend((name.len() as u32).to_le_bytes());
        n.extend((desc.len() as u32).to_le_bytes());
        n.extend(ty.to_le_bytes());
        n.extend(name);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n.extend(desc);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n
    }

    /// A minimal ELF64 x86-64 file with one PT_NOTE segment holding `notes`.
    fn elf(notes: &[u8], machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = &mut b[64..120];
        ph[0..4].copy_from_slice(&PT_NOTE.to_le_bytes());
        ph[0x08..0x10].copy_from_slice(&120u64.to_le_bytes());
        ph[0x20..0x28].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        b.extend(notes);
        b
    }

    fn check(bytes: &[u8]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, bytes).unwrap();
        has_pvh_entry(&path).unwrap_or(false)
    }

    #[test]
    fn the_pvh_note_is_found_among_others() {
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4, 5]);
        notes.extend(note(b"Xen\0", 6, b"linux\0"));
        notes.extend(note(b"Xen\0", PHYS32_ENTRY, &0x0100_0850u64.to_le_bytes()));
        assert!(check(&elf(&notes, 0x3e)));
    }

    #[test]
    fn kernels_without_it_or_not_x86_64_are_not_pvh() {
        let notes = note(b"Xen\0", 6, b"linux\0");
        assert!(!check(&elf(&notes, 0x3e)));
        let pvh = note(b"Xen\0", PHYS32_ENTRY, &[0; 8]);
        assert!(!check(&elf(&pvh, 0xb7)), "arm64");
        assert!(!check(b"MZ not an elf"));
        assert!(!check(&[]));
    }

    #[test]
    fn damaged_notes_end_the_search_without_panicking() {
        // A note claiming a huge name, then truncated bytes.
        let mut notes = vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 18, 0, 0, 0];
        notes.extend(b"Xen");
        assert!(!check(&elf(&notes, 0x3e)));
        // A program header pointing past the end of the file is an error, not a panic.
        let mut bytes = elf(&note(b"Xen\0", PHYS32_ENTRY, &[0; 8]), 0x3e);
        bytes[64 + 0x08..64 + 0x10].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(!check(&bytes));
    }
}
