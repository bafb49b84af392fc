//! Extended attributes: in-inode (after `i_extra_isize`) or in one external block.

use crate::bytes::{put_u8, put_u16, put_u32, put_u64};
use crate::crc::crc32c_update;
use crate::layout::BLOCK_SIZE;

const MAGIC: u32 = 0xEA02_0000;
/// Bytes after the 160-byte inode core (128 + extra_isize 32) up to 256.
pub const IBODY_SIZE: usize = 96;
const BLOCK_HEADER: usize = 32;

/// One attribute split into the kernel's name index and suffix; `value` already in on-disk form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub index: u8,
    pub suffix: Vec<u8>,
    pub value: Vec<u8>,
}

/// Maps a full name to (index, suffix). POSIX ACLs are converted to ext4's own format.
pub fn encode(name: &[u8], value: &[u8]) -> Option<Attr> {
    let exact: &[(&[u8], u8)] = &[
        (b"system.posix_acl_access", 2),
        (b"system.posix_acl_default", 3),
    ];
    for (full, index) in exact {
        if name == *full {
            return Some(Attr {
                index: *index,
                suffix: Vec::new(),
                value: acl_to_disk(value)?,
            });
        }
    }
    let prefixes: &[(&[u8], u8)] = &[(b"user.", 1), (b"trusted.", 4), (b"security.", 6)];
    for (prefix, index) in prefixes {
        if let Some(suffix) = name.strip_prefix(*prefix) {
            if suffix.is_empty() || suffix.len() > 255 {
                return None;
            }
            return Some(Attr {
                index: *index,
                suffix: suffix.to_vec(),
                value: value.to_vec(),
            });
        }
    }
    None
}

/// Converts the VFS ACL xattr (version 2, 8-byte entries) to ext4's on-disk form
/// (version 1, 4-byte entries for the *_OBJ/MASK/OTHER tags).
fn acl_to_disk(value: &[u8]) -> Option<Vec<u8>> {
    if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) {
        return None;
    }
    if u32::from_le_bytes(value[0..4].try_into().ok()?) != 2 {
        return None;
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in value[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        out.extend_from_slice(&e[0..4]);
        match tag {
            0x02 | 0x08 => out.extend_from_slice(&e[4..8]),
            0x01 | 0x04 | 0x10 | 0x20 => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Kernel-compatible sort: by index, then name length, then name bytes.
pub fn sort(attrs: &mut [Attr]) {
    attrs.sort_by(|a, b| {
        (a.index, a.suffix.len(), &a.suffix).cmp(&(b.index, b.suffix.len(), &b.suffix))
    });
}

fn entry_len(a: &Attr) -> usize {
    (16 + a.suffix.len() + 3) & !3
}

fn value_len(a: &Attr) -> usize {
    (a.value.len() + 3) & !3
}

fn space(attrs: &[Attr]) -> usize {
    attrs
        .iter()
        .map(|a| entry_len(a) + value_len(a))
        .sum::<usize>()
        + 4
}

pub fn fits_ibody(attrs: &[Attr]) -> bool {
    space(attrs) <= IBODY_SIZE - 4
}

pub fn fits_block(attrs: &[Attr]) -> bool {
    space(attrs) <= BLOCK_SIZE as usize - BLOCK_HEADER
}

pub fn entry_hash(a: &Attr) -> u32 {
    let mut hash: u32 = 0;
    for &c in &a.suffix {
        hash = (hash << 5) ^ (hash >> 27) ^ (c as i8 as i32 as u32);
    }
    if !a.value.is_empty() {
        let mut padded = a.value.clone();
        padded.resize(value_len(a), 0);
        for w in padded.chunks(4) {
            let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            hash = (hash << 16) ^ (hash >> 16) ^ v;
        }
    }
    hash
}

/// Writes entries at `entries_at` and values growing down from `end`; value offsets are
/// relative to `base`. Returns the entry hashes.
fn lay_out(buf: &mut [u8], attrs: &[Attr], entries_at: usize, end: usize, base: usize) -> Vec<u32> {
    let mut off = entries_at;
    let mut vend = end;
    let mut hashes = Vec::with_capacity(attrs.len());
    for a in attrs {
        let voff = if a.value.is_empty() {
            0
        } else {
            vend -= value_len(a);
            buf[vend..vend + a.value.len()].copy_from_slice(&a.value);
            vend - base
        };
        let h = entry_hash(a);
        put_u8(buf, off, a.suffix.len() as u8);
        put_u8(buf, off + 1, a.index);
        put_u16(buf, off + 2, voff as u16);
        put_u32(buf, off + 4, 0);
        put_u32(buf, off + 8, a.value.len() as u32);
        put_u32(buf, off + 12, h);
        buf[off + 16..off + 16 + a.suffix.len()].copy_from_slice(&a.suffix);
        off += entry_len(a);
        hashes.push(h);
    }
    hashes
}

/// The 96 bytes following the inode core: magic, entries, values.
pub fn build_ibody(attrs: &[Attr]) -> [u8; IBODY_SIZE] {
    let mut buf = [0u8; IBODY_SIZE];
    put_u32(&mut buf, 0, MAGIC);
    lay_out(&mut buf, attrs, 4, IBODY_SIZE, 4);
    buf
}

/// A standalone xattr block at block number `nr`.
pub fn build_block(attrs: &[Attr], nr: u64, csum_seed: u32) -> Vec<u8> {
    let bs = BLOCK_SIZE as usize;
    let mut buf = vec![0u8; bs];
    put_u32(&mut buf, 0, MAGIC);
    put_u32(&mut buf, 4, 1); // refcount
    put_u32(&mut buf, 8, 1); // blocks
    let hashes = lay_out(&mut buf, attrs, BLOCK_HEADER, bs, 0);
    let mut h: u32 = 0;
    for eh in hashes {
        h = (h << 16) ^ (h >> 16) ^ eh;
    }
    put_u32(&mut buf, 12, h);
    let mut nrb = [0u8; 8];
    put_u64(&mut nrb, 0, nr);
    let csum = crc32c_update(crc32c_update(csum_seed, &nrb), &buf);
    put_u32(&mut buf, 16, csum);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sort() {
        let a = encode(b"security.capability", b"x").unwrap();
        assert_eq!((a.index, a.suffix.as_slice()), (6, &b"capability"[..]));
        assert!(encode(b"foo.bar", b"").is_none());
        assert!(encode(b"user.", b"").is_none());
        let mut v = vec![
            encode(b"user.bb", b"").unwrap(),
            encode(b"user.c", b"").unwrap(),
            encode(b"trusted.a", b"").unwrap(),
            encode(b"user.aa", b"").unwrap(),
        ];
        sort(&mut v);
        let names: Vec<_> = v.iter().map(|a| (a.index, a.suffix.clone())).collect();
        assert_eq!(
            names,
            vec![
                (1, b"c".to_vec()),
                (1, b"aa".to_vec()),
                (1, b"bb".to_vec()),
                (4, b"a".to_vec())
            ]
        );
    }

    #[test]
    fn acl_conversion() {
        let mut vfs = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 7u16, u32::MAX),
            (2, 5, 1000),
            (4, 5, u32::MAX),
            (0x10, 7, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            vfs.extend_from_slice(&tag.to_le_bytes());
            vfs.extend_from_slice(&perm.to_le_bytes());
            vfs.extend_from_slice(&id.to_le_bytes());
        }
        let a = encode(b"system.posix_acl_access", &vfs).unwrap();
        assert_eq!(a.value.len(), 4 + 4 * 4 + 8);
    }

    #[test]
    fn hash_of_name_only() {
        let a = Attr {
            index: 1,
            suffix: b"a".to_vec(),
            value: vec![],
        };
        assert_eq!(entry_hash(&a), b'a' as u32);
    }
}
