//! Hash-indexed directories (dir_index): a dx root in block 0, optionally one level of dx
//! nodes, and leaf blocks whose entries are sorted by the half-MD4 name hash.

use crate::bytes::{put_u8, put_u16, put_u32};
use crate::crc::crc32c_update;
use crate::dir::{self, Entry};
use crate::layout::BLOCK_SIZE;

const BS: usize = BLOCK_SIZE as usize;
const USABLE: usize = BS - 12;
/// dx entries in the root (after "." "..", the 8-byte root info) minus the 8-byte dx tail.
const ROOT_LIMIT: usize = (BS - 32 - 8) / 8;
/// dx entries in an interior node (after its 8-byte fake dirent) minus the dx tail.
const NODE_LIMIT: usize = (BS - 8 - 8) / 8;
pub const HASH_HALF_MD4: u8 = 1;

/// One leaf entry with its hash.
pub struct Hashed<'a> {
    pub hash: u32,
    pub entry: Entry<'a>,
}

fn str2hashbuf_signed(msg: &[u8], out: &mut [u32; 8]) {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut val = pad;
    let take = msg.len().min(32);
    let mut n = 0;
    for (i, &c) in msg[..take].iter().enumerate() {
        val = (c as i8 as i32 as u32).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[n] = val;
            n += 1;
            val = pad;
        }
    }
    if n < 8 {
        out[n] = val;
        n += 1;
    }
    while n < 8 {
        out[n] = pad;
        n += 1;
    }
}

fn half_md4(buf: &mut [u32; 4], x: &[u32; 8]) {
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    let [mut a, mut b, mut c, mut d] = *buf;
    macro_rules! round {
        ($fn:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a
                .wrapping_add($fn($b, $c, $d))
                .wrapping_add($x)
                .rotate_left($s);
        };
    }
    round!(f, a, b, c, d, x[0], 3);
    round!(f, d, a, b, c, x[1], 7);
    round!(f, c, d, a, b, x[2], 11);
    round!(f, b, c, d, a, x[3], 19);
    round!(f, a, b, c, d, x[4], 3);
    round!(f, d, a, b, c, x[5], 7);
    round!(f, c, d, a, b, x[6], 11);
    round!(f, b, c, d, a, x[7], 19);
    round!(g, a, b, c, d, x[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, x[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[6].wrapping_add(K2), 13);
    round!(h, a, b, c, d, x[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, x[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// The kernel's half-MD4 directory hash (signed-char variant), major hash only.
pub fn hash(name: &[u8], seed: &[u32; 4]) -> u32 {
    let mut buf = if seed.iter().any(|&s| s != 0) {
        *seed
    } else {
        [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476]
    };
    let mut p = name;
    let mut input = [0u32; 8];
    loop {
        str2hashbuf_signed(p, &mut input);
        half_md4(&mut buf, &input);
        if p.len() <= 32 {
            break;
        }
        p = &p[32..];
    }
    let h = buf[1] & !1;
    if h == 0x7FFF_FFFF << 1 {
        (0x7FFF_FFFF - 1) << 1
    } else {
        h
    }
}

/// Splits hash-sorted entries into leaves: returns the start index of each leaf.
fn leaves(lens: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut starts = vec![0];
    let mut off = 0;
    for (i, len) in lens.enumerate() {
        let r = dir::rec_len(len);
        if off + r > USABLE {
            starts.push(i);
            off = 0;
        }
        off += r;
    }
    starts
}

fn node_count(leaves: usize) -> Option<usize> {
    if leaves <= ROOT_LIMIT {
        Some(0)
    } else if leaves <= ROOT_LIMIT * NODE_LIMIT {
        Some(leaves.div_ceil(NODE_LIMIT))
    } else {
        None
    }
}

/// Blocks of an indexed directory with these (hash-sorted) name lengths, or `None` when
/// it would need more than two index levels.
pub fn count_blocks(lens: impl Iterator<Item = usize>) -> Option<usize> {
    let l = leaves(lens).len();
    Some(1 + l + node_count(l)?)
}

fn dx_seal(block: &mut [u8], count_offset: usize, count: usize, limit: usize, inode_seed: u32) {
    let tail = count_offset + limit * 8;
    put_u32(block, tail, 0);
    let mut c = crc32c_update(inode_seed, &block[..count_offset + count * 8]);
    c = crc32c_update(c, &block[tail..tail + 4]);
    c = crc32c_update(c, &[0; 4]);
    put_u32(block, tail + 4, c);
}

/// Writes dx entries: the first slot holds limit/count and the block of the lowest hashes.
fn dx_entries(block: &mut [u8], at: usize, limit: usize, entries: &[(u32, u32)]) {
    put_u16(block, at, limit as u16);
    put_u16(block, at + 2, entries.len() as u16);
    for (i, &(h, blk)) in entries.iter().enumerate() {
        if i > 0 {
            put_u32(block, at + i * 8, h);
        }
        put_u32(block, at + i * 8 + 4, blk);
    }
}

/// Builds the whole directory. `entries` must be sorted by hash.
pub fn build(self_ino: u32, parent_ino: u32, entries: &[Hashed<'_>], inode_seed: u32) -> Vec<u8> {
    let starts = leaves(entries.iter().map(|e| e.entry.name.len()));
    let nleaves = starts.len();
    let nodes = node_count(nleaves).unwrap_or(0);
    let mut out = vec![0u8; (1 + nleaves + nodes) * BS];
    // Leaf k is logical block 1 + k; its index hash is its first entry's hash, with the
    // low bit set when it continues a run of equal hashes from the previous leaf.
    let mut index: Vec<(u32, u32)> = Vec::with_capacity(nleaves);
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(entries.len());
        let block = &mut out[(1 + k) * BS..(2 + k) * BS];
        let mut off = 0;
        let mut last = 0;
        for e in &entries[s..end] {
            let r = dir::rec_len(e.entry.name.len());
            put_u32(block, off, e.entry.ino);
            put_u16(block, off + 4, r as u16);
            put_u8(block, off + 6, e.entry.name.len() as u8);
            put_u8(block, off + 7, e.entry.file_type);
            block[off + 8..off + 8 + e.entry.name.len()].copy_from_slice(e.entry.name);
            last = off;
            off += r;
        }
        put_u16(block, last + 4, (USABLE - last) as u16);
        dir::seal(block, inode_seed);
        let h = entries.get(s).map(|e| e.hash).unwrap_or(0);
        let cont = s > 0 && entries[s - 1].hash == h;
        index.push((h | cont as u32, (1 + k) as u32));
    }
    let levels = if nodes > 0 { 1u8 } else { 0 };
    let top: Vec<(u32, u32)> = if nodes == 0 {
        index
    } else {
        let mut top = Vec::with_capacity(nodes);
        for (n, chunk) in index.chunks(NODE_LIMIT).enumerate() {
            let blk = 1 + nleaves + n;
            let block = &mut out[blk * BS..(blk + 1) * BS];
            put_u32(block, 0, 0);
            put_u16(block, 4, BS as u16);
            dx_entries(block, 8, NODE_LIMIT, chunk);
            dx_seal(block, 8, chunk.len(), NODE_LIMIT, inode_seed);
            top.push((chunk[0].0, blk as u32));
        }
        top
    };
    let root = &mut out[..BS];
    put_u32(root, 0, self_ino);
    put_u16(root, 4, 12);
    put_u8(root, 6, 1);
    put_u8(root, 7, dir::FT_DIR);
    root[8] = b'.';
    put_u32(root, 12, parent_ino);
    put_u16(root, 16, (BS - 12) as u16);
    put_u8(root, 18, 2);
    put_u8(root, 19, dir::FT_DIR);
    root[20] = b'.';
    root[21] = b'.';
    put_u32(root, 24, 0);
    put_u8(root, 28, HASH_HALF_MD4);
    put_u8(root, 29, 8);
    put_u8(root, 30, levels);
    put_u8(root, 31, 0);
    dx_entries(root, 32, ROOT_LIMIT, &top);
    dx_seal(root, 32, top.len(), ROOT_LIMIT, inode_seed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(ROOT_LIMIT, 507);
        assert_eq!(NODE_LIMIT, 510);
        assert_eq!(count_blocks([4usize; 10].into_iter()), Some(2));
    }

    #[test]
    fn hash_low_bit_clear_and_seeded() {
        let s0 = [0u32; 4];
        let s1 = [1u32, 2, 3, 4];
        for name in [&b"a"[..], b"lost+found", &[0xFFu8; 300]] {
            assert_eq!(hash(name, &s0) & 1, 0);
            assert_ne!(hash(name, &s0), hash(name, &s1));
        }
    }
}
