//! An empty, clean jbd2 journal: only its superblock is written; the log blocks stay zero
//! (holes in the image file).

use crate::bytes::put_be32;
use crate::layout::BLOCK_SIZE;

const JBD2_MAGIC: u32 = 0xC03B_3998;
const SUPERBLOCK_V2: u32 = 4;

/// Default journal size in blocks for a filesystem of `blocks` blocks (the usual
/// mkfs.ext4 steps: 4 MiB up to 128 MiB filesystems, growing to 1 GiB for huge ones).
pub fn default_blocks(blocks: u64) -> u64 {
    const STEPS: [(u64, u64); 8] = [
        (32 * 1024, 1024),
        (256 * 1024, 4096),
        (512 * 1024, 8192),
        (4096 * 1024, 16384),
        (8192 * 1024, 32768),
        (16384 * 1024, 65536),
        (32768 * 1024, 131072),
        (u64::MAX, 262144),
    ];
    STEPS
        .iter()
        .find(|(limit, _)| blocks < *limit)
        .map(|(_, j)| *j)
        .unwrap_or(262144)
}

pub fn superblock(journal_blocks: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    put_be32(&mut b, 0x00, JBD2_MAGIC);
    put_be32(&mut b, 0x04, SUPERBLOCK_V2);
    put_be32(&mut b, 0x08, 0);
    put_be32(&mut b, 0x0C, BLOCK_SIZE as u32);
    put_be32(&mut b, 0x10, journal_blocks);
    put_be32(&mut b, 0x14, 1); // first log block
    put_be32(&mut b, 0x18, 1); // next expected sequence
    put_be32(&mut b, 0x1C, 0); // s_start = 0: clean, nothing to replay
    b[0x30..0x40].copy_from_slice(uuid);
    put_be32(&mut b, 0x40, 1); // one user: this filesystem
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(default_blocks(16384), 1024);
        assert_eq!(default_blocks(262144), 8192);
        assert_eq!(default_blocks(1 << 40), 262144);
        let sb = superblock(1024, &[7; 16]);
        assert_eq!(&sb[0..4], &[0xC0, 0x3B, 0x39, 0x98]);
    }
}
