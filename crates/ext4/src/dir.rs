//! Linear directory blocks with metadata_csum tail entries.

use crate::bytes::{put_u8, put_u16, put_u32};
use crate::crc::crc32c_update;
use crate::layout::BLOCK_SIZE;

const BS: usize = BLOCK_SIZE as usize;
/// Space for real entries; the last 12 bytes hold the checksum tail.
const USABLE: usize = BS - 12;

pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHR: u8 = 3;
pub const FT_BLK: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;

pub fn rec_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// Blocks needed for a directory whose entries (besides "." and "..") have these name
/// lengths; mirrors the packing of [`build`].
pub fn count_blocks(name_lens: impl Iterator<Item = usize>, min_blocks: usize) -> usize {
    let mut blocks = 1;
    let mut off = 24;
    for len in name_lens {
        let r = rec_len(len);
        if off + r > USABLE {
            blocks += 1;
            off = 0;
        }
        off += r;
    }
    blocks.max(min_blocks)
}

pub struct Entry<'a> {
    pub ino: u32,
    pub name: &'a [u8],
    pub file_type: u8,
}

fn put_entry(buf: &mut [u8], off: usize, ino: u32, rec: usize, name: &[u8], ft: u8) {
    put_u32(buf, off, ino);
    put_u16(buf, off + 4, rec as u16);
    put_u8(buf, off + 6, name.len() as u8);
    put_u8(buf, off + 7, ft);
    buf[off + 8..off + 8 + name.len()].copy_from_slice(name);
}

/// Builds the directory's blocks (concatenated). `inode_seed` is the directory inode's
/// checksum seed.
pub fn build<'a>(
    self_ino: u32,
    parent_ino: u32,
    entries: impl Iterator<Item = Entry<'a>>,
    min_blocks: usize,
    inode_seed: u32,
) -> Vec<u8> {
    let mut out = vec![0u8; BS];
    put_entry(&mut out, 0, self_ino, 12, b".", FT_DIR);
    put_entry(&mut out, 12, parent_ino, 12, b"..", FT_DIR);
    let mut block_start = 0;
    let mut last = 12; // offset (within block) of the last entry, whose rec_len absorbs slack
    let mut off = 24;
    for e in entries {
        let r = rec_len(e.name.len());
        if off + r > USABLE {
            put_u16(&mut out, block_start + last + 4, (USABLE - last) as u16);
            block_start += BS;
            out.resize(block_start + BS, 0);
            off = 0;
        }
        put_entry(&mut out, block_start + off, e.ino, r, e.name, e.file_type);
        last = off;
        off += r;
    }
    put_u16(&mut out, block_start + last + 4, (USABLE - last) as u16);
    while out.len() < min_blocks * BS {
        let start = out.len();
        out.resize(start + BS, 0);
        put_u16(&mut out, start + 4, USABLE as u16);
    }
    for block in out.chunks_mut(BS) {
        seal(block, inode_seed);
    }
    out
}

pub fn seal(block: &mut [u8], inode_seed: u32) {
    put_u32(block, USABLE, 0);
    put_u16(block, USABLE + 4, 12);
    put_u8(block, USABLE + 6, 0);
    put_u8(block, USABLE + 7, 0xDE);
    let csum = crc32c_update(inode_seed, &block[..USABLE]);
    put_u32(block, USABLE + 8, csum);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::get_u16;

    #[test]
    fn count_matches_build() {
        for n in [0usize, 1, 100, 1000, 5000] {
            let names: Vec<Vec<u8>> = (0..n)
                .map(|i| format!("name-{i:0>w$}", w = i % 40).into_bytes())
                .collect();
            let count = count_blocks(names.iter().map(|n| n.len()), 1);
            let built = build(
                5,
                2,
                names.iter().map(|n| Entry {
                    ino: 12,
                    name: n,
                    file_type: FT_REG,
                }),
                1,
                0,
            );
            assert_eq!(built.len(), count * BS, "n={n}");
            // Every block's entries chain exactly to the tail.
            for block in built.chunks(BS) {
                let mut off = 0;
                while off < USABLE {
                    off += get_u16(block, off + 4) as usize;
                }
                assert_eq!(off, USABLE);
            }
        }
    }

    #[test]
    fn empty_padding_blocks() {
        let b = build(11, 2, std::iter::empty(), 4, 0);
        assert_eq!(b.len(), 4 * BS);
        assert_eq!(get_u16(&b, 12 + 4) as usize, USABLE - 12);
        assert_eq!(get_u16(&b, BS + 4) as usize, USABLE);
    }
}
