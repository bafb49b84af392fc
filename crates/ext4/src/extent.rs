//! Extent lists and extent trees (root in `i_block`, deeper levels in 4 KiB blocks).

use crate::bytes::{put_u16, put_u32};
use crate::crc::crc32c_update;
use crate::layout::{BLOCK_SIZE, MAX_EXTENT_LEN};

const MAGIC: u16 = 0xF30A;
const HEADER: usize = 12;
const ENTRY: usize = 12;
/// Entries of the root node inside the inode's 60-byte `i_block`.
pub const ROOT_ENTRIES: usize = 4;
/// Entries of a 4 KiB node, leaving 4 bytes for the checksum tail.
pub const BLOCK_ENTRIES: usize = (BLOCK_SIZE as usize - HEADER - 4) / ENTRY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u32,
    pub len: u16,
    pub phys: u64,
}

/// Appends a mapping of blocks, merging with the previous extent when contiguous.
pub fn push(extents: &mut Vec<Extent>, logical: u32, phys: u64, mut len: u64) {
    let (mut logical, mut phys) = (logical, phys);
    if let Some(last) = extents.last_mut() {
        let end_l = last.logical as u64 + last.len as u64;
        if end_l == logical as u64 && last.phys + last.len as u64 == phys {
            let add = len.min(MAX_EXTENT_LEN - last.len as u64);
            last.len += add as u16;
            len -= add;
            logical += add as u32;
            phys += add;
        }
    }
    while len > 0 {
        let l = len.min(MAX_EXTENT_LEN);
        extents.push(Extent {
            logical,
            len: l as u16,
            phys,
        });
        len -= l;
        logical += l as u32;
        phys += l;
    }
}

/// Number of 4 KiB tree blocks needed to index `n` extents.
pub fn tree_blocks(n: usize) -> usize {
    let mut total = 0;
    let mut count = n;
    while count > ROOT_ENTRIES {
        count = count.div_ceil(BLOCK_ENTRIES);
        total += count;
    }
    total
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put_u16(buf, 0, MAGIC);
    put_u16(buf, 2, entries as u16);
    put_u16(buf, 4, max as u16);
    put_u16(buf, 6, depth);
    put_u32(buf, 8, 0);
}

fn leaf_entry(buf: &mut [u8], e: &Extent) {
    put_u32(buf, 0, e.logical);
    put_u16(buf, 4, e.len);
    put_u16(buf, 6, (e.phys >> 32) as u16);
    put_u32(buf, 8, e.phys as u32);
}

fn index_entry(buf: &mut [u8], logical: u32, child: u64) {
    put_u32(buf, 0, logical);
    put_u32(buf, 4, child as u32);
    put_u16(buf, 8, (child >> 32) as u16);
    put_u16(buf, 10, 0);
}

/// A built tree: the 60-byte root and the blocks to write.
pub struct Tree {
    pub root: [u8; 60],
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// Builds the tree for `extents` into the given pre-allocated block numbers
/// (`tree_blocks(extents.len())` of them). `inode_seed` is the per-inode checksum seed.
pub fn build(extents: &[Extent], block_nrs: &[u64], inode_seed: u32) -> Tree {
    let mut root = [0u8; 60];
    let mut blocks = Vec::new();
    if extents.len() <= ROOT_ENTRIES {
        header(&mut root, extents.len(), ROOT_ENTRIES, 0);
        for (i, e) in extents.iter().enumerate() {
            leaf_entry(&mut root[HEADER + i * ENTRY..], e);
        }
        return Tree { root, blocks };
    }
    let mut nrs = block_nrs.iter().copied();
    let seal = |buf: &mut Vec<u8>| {
        let tail = HEADER + BLOCK_ENTRIES * ENTRY;
        let csum = crc32c_update(inode_seed, &buf[..tail]);
        put_u32(buf, tail, csum);
    };
    // Leaves first, then index levels until the root can hold the top level.
    let mut level: Vec<(u32, u64)> = Vec::new();
    for chunk in extents.chunks(BLOCK_ENTRIES) {
        let nr = nrs.next().unwrap_or(0);
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        header(&mut buf, chunk.len(), BLOCK_ENTRIES, 0);
        for (i, e) in chunk.iter().enumerate() {
            leaf_entry(&mut buf[HEADER + i * ENTRY..], e);
        }
        seal(&mut buf);
        level.push((chunk[0].logical, nr));
        blocks.push((nr, buf));
    }
    let mut depth = 1u16;
    while level.len() > ROOT_ENTRIES {
        let mut next = Vec::new();
        for chunk in level.chunks(BLOCK_ENTRIES) {
            let nr = nrs.next().unwrap_or(0);
            let mut buf = vec![0u8; BLOCK_SIZE as usize];
            header(&mut buf, chunk.len(), BLOCK_ENTRIES, depth);
            for (i, (l, child)) in chunk.iter().enumerate() {
                index_entry(&mut buf[HEADER + i * ENTRY..], *l, *child);
            }
            seal(&mut buf);
            next.push((chunk[0].0, nr));
            blocks.push((nr, buf));
        }
        level = next;
        depth += 1;
    }
    header(&mut root, level.len(), ROOT_ENTRIES, depth);
    for (i, (l, child)) in level.iter().enumerate() {
        index_entry(&mut root[HEADER + i * ENTRY..], *l, *child);
    }
    Tree { root, blocks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::get_u16;

    #[test]
    fn push_merges_contiguous() {
        let mut v = Vec::new();
        push(&mut v, 0, 100, 2);
        push(&mut v, 2, 102, 3);
        push(&mut v, 6, 105, 1);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].len, 5);
        let mut w = Vec::new();
        push(&mut w, 0, 0, 70000);
        assert_eq!(
            w.iter().map(|e| e.len as u64).collect::<Vec<_>>(),
            vec![32768, 32768, 4464]
        );
    }

    #[test]
    fn tree_block_counts() {
        assert_eq!(BLOCK_ENTRIES, 340);
        assert_eq!(tree_blocks(4), 0);
        assert_eq!(tree_blocks(5), 1);
        assert_eq!(tree_blocks(1360), 4);
        assert_eq!(tree_blocks(1361), 5 + 1);
    }

    #[test]
    fn build_depth() {
        let ext: Vec<Extent> = (0..2000u32)
            .map(|i| Extent {
                logical: i * 2,
                len: 1,
                phys: 1000 + i as u64 * 2,
            })
            .collect();
        let n = tree_blocks(ext.len());
        let nrs: Vec<u64> = (0..n as u64).map(|i| 50 + i).collect();
        let t = build(&ext, &nrs, 0);
        assert_eq!(t.blocks.len(), n);
        assert_eq!(get_u16(&t.root, 6), 2);
        assert_eq!(get_u16(&t.root, 2), 1);
    }
}
