//! Superblock and group descriptors.

use crate::bytes::{put_u8, put_u16, put_u32};
use crate::crc::crc32c_update;
use crate::layout::{BLOCKS_PER_GROUP, DESC_SIZE, INODE_SIZE};

pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub const COMPAT_EXT_ATTR: u32 = 0x8;
pub const COMPAT_RESIZE_INODE: u32 = 0x10;
pub const COMPAT_DIR_INDEX: u32 = 0x20;
pub const INCOMPAT_FILETYPE: u32 = 0x2;
pub const INCOMPAT_EXTENTS: u32 = 0x40;
pub const INCOMPAT_64BIT: u32 = 0x80;
pub const INCOMPAT_FLEX_BG: u32 = 0x200;
pub const RO_SPARSE_SUPER: u32 = 0x1;
pub const RO_LARGE_FILE: u32 = 0x2;
pub const RO_HUGE_FILE: u32 = 0x8;
pub const RO_DIR_NLINK: u32 = 0x20;
pub const RO_EXTRA_ISIZE: u32 = 0x40;
pub const RO_METADATA_CSUM: u32 = 0x400;

pub const RESIZE_INO: u32 = 7;
pub const JOURNAL_INO: u32 = 8;
pub const FIRST_INO: u32 = 11;

pub struct SuperParams {
    pub blocks: u64,
    pub reserved_blocks: u64,
    pub free_blocks: u64,
    pub inodes: u32,
    pub free_inodes: u32,
    pub inodes_per_group: u32,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    pub label: [u8; 16],
    /// Seconds since the epoch for mkfs/write/check times (deterministic, caller-chosen).
    pub time: u32,
    /// Backup of the journal inode's `i_block` + size, so e2fsck can rebuild it.
    pub jnl_blocks: [u32; 17],
    pub log_groups_per_flex: u8,
    /// GDT blocks reserved for online growth (resize_inode); 0 disables the feature.
    pub reserved_gdt_blocks: u16,
}

/// The 1024-byte superblock as stored in group `group` (its copy records its group).
pub fn build(p: &SuperParams, group: u16) -> [u8; 1024] {
    let mut b = [0u8; 1024];
    put_u32(&mut b, 0x00, p.inodes);
    put_u32(&mut b, 0x04, p.blocks as u32);
    put_u32(&mut b, 0x08, p.reserved_blocks as u32);
    put_u32(&mut b, 0x0C, p.free_blocks as u32);
    put_u32(&mut b, 0x10, p.free_inodes);
    put_u32(&mut b, 0x14, 0); // first data block (4 KiB blocks)
    put_u32(&mut b, 0x18, 2); // log2(4096) - 10
    put_u32(&mut b, 0x1C, 2);
    put_u32(&mut b, 0x20, BLOCKS_PER_GROUP as u32);
    put_u32(&mut b, 0x24, BLOCKS_PER_GROUP as u32);
    put_u32(&mut b, 0x28, p.inodes_per_group);
    put_u32(&mut b, 0x30, p.time); // wtime
    put_u16(&mut b, 0x36, 0xFFFF); // max mount count: never force a check
    put_u16(&mut b, 0x38, 0xEF53);
    put_u16(&mut b, 0x3A, 1); // clean
    put_u16(&mut b, 0x3C, 1); // errors=continue
    put_u32(&mut b, 0x40, p.time); // lastcheck
    put_u32(&mut b, 0x4C, 1); // dynamic rev
    put_u32(&mut b, 0x54, FIRST_INO);
    put_u16(&mut b, 0x58, INODE_SIZE as u16);
    put_u16(&mut b, 0x5A, group);
    put_u32(
        &mut b,
        0x5C,
        COMPAT_HAS_JOURNAL
            | COMPAT_EXT_ATTR
            | COMPAT_DIR_INDEX
            | if p.reserved_gdt_blocks > 0 {
                COMPAT_RESIZE_INODE
            } else {
                0
            },
    );
    put_u32(
        &mut b,
        0x60,
        INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG,
    );
    put_u32(
        &mut b,
        0x64,
        RO_SPARSE_SUPER
            | RO_LARGE_FILE
            | RO_HUGE_FILE
            | RO_DIR_NLINK
            | RO_EXTRA_ISIZE
            | RO_METADATA_CSUM,
    );
    b[0x68..0x78].copy_from_slice(&p.uuid);
    b[0x78..0x88].copy_from_slice(&p.label);
    put_u16(&mut b, 0xCE, p.reserved_gdt_blocks);
    put_u32(&mut b, 0xE0, JOURNAL_INO);
    b[0xEC..0xFC].copy_from_slice(&p.hash_seed);
    put_u8(&mut b, 0xFC, 1); // half_md4
    put_u8(&mut b, 0xFD, 1); // s_jnl_blocks holds a backup of the journal inode
    put_u16(&mut b, 0xFE, DESC_SIZE as u16);
    put_u32(&mut b, 0x100, 0x000C); // default mount options: user_xattr, acl
    put_u32(&mut b, 0x108, p.time); // mkfs time
    for (i, v) in p.jnl_blocks.iter().enumerate() {
        put_u32(&mut b, 0x10C + 4 * i, *v);
    }
    put_u32(&mut b, 0x150, (p.blocks >> 32) as u32);
    put_u32(&mut b, 0x154, (p.reserved_blocks >> 32) as u32);
    put_u32(&mut b, 0x158, (p.free_blocks >> 32) as u32);
    put_u16(&mut b, 0x15C, 32); // min extra isize
    put_u16(&mut b, 0x15E, 32); // want extra isize
    put_u32(&mut b, 0x160, 0x1); // signed directory hash
    put_u8(&mut b, 0x174, p.log_groups_per_flex);
    put_u8(&mut b, 0x175, 1); // crc32c
    let csum = crc32c_update(!0, &b[..0x3FC]);
    put_u32(&mut b, 0x3FC, csum);
    b
}

/// Checksum seed for everything but the superblock itself.
pub fn csum_seed(uuid: &[u8; 16]) -> u32 {
    crc32c_update(!0, uuid)
}

pub struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub used_dirs: u32,
    pub itable_unused: u32,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
}

const BG_INODE_ZEROED: u16 = 0x4;

pub fn build_desc(d: &GroupDesc, group: u32, csum_seed: u32) -> [u8; DESC_SIZE as usize] {
    let mut b = [0u8; DESC_SIZE as usize];
    put_u32(&mut b, 0x00, d.block_bitmap as u32);
    put_u32(&mut b, 0x04, d.inode_bitmap as u32);
    put_u32(&mut b, 0x08, d.inode_table as u32);
    put_u16(&mut b, 0x0C, d.free_blocks as u16);
    put_u16(&mut b, 0x0E, d.free_inodes as u16);
    put_u16(&mut b, 0x10, d.used_dirs as u16);
    put_u16(&mut b, 0x12, BG_INODE_ZEROED);
    put_u16(&mut b, 0x18, d.block_bitmap_csum as u16);
    put_u16(&mut b, 0x1A, d.inode_bitmap_csum as u16);
    put_u16(&mut b, 0x1C, d.itable_unused as u16);
    put_u32(&mut b, 0x20, (d.block_bitmap >> 32) as u32);
    put_u32(&mut b, 0x24, (d.inode_bitmap >> 32) as u32);
    put_u32(&mut b, 0x28, (d.inode_table >> 32) as u32);
    put_u16(&mut b, 0x2C, (d.free_blocks >> 16) as u16);
    put_u16(&mut b, 0x2E, (d.free_inodes >> 16) as u16);
    put_u16(&mut b, 0x30, (d.used_dirs >> 16) as u16);
    put_u16(&mut b, 0x32, (d.itable_unused >> 16) as u16);
    put_u16(&mut b, 0x38, (d.block_bitmap_csum >> 16) as u16);
    put_u16(&mut b, 0x3A, (d.inode_bitmap_csum >> 16) as u16);
    let mut crc = crc32c_update(csum_seed, &group.to_le_bytes());
    crc = crc32c_update(crc, &b[..0x1E]);
    crc = crc32c_update(crc, &[0, 0]);
    crc = crc32c_update(crc, &b[0x20..]);
    put_u16(&mut b, 0x1E, crc as u16);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::{get_u16, get_u32};

    #[test]
    fn superblock_checksum_and_magic() {
        let p = SuperParams {
            blocks: 1 << 33,
            reserved_blocks: 0,
            free_blocks: 5,
            inodes: 16,
            free_inodes: 5,
            inodes_per_group: 16,
            uuid: [1; 16],
            hash_seed: [2; 16],
            label: [0; 16],
            time: 0,
            jnl_blocks: [0; 17],
            log_groups_per_flex: 4,
            reserved_gdt_blocks: 0,
        };
        let b = build(&p, 3);
        assert_eq!(get_u16(&b, 0x38), 0xEF53);
        assert_eq!(get_u16(&b, 0x5A), 3);
        assert_eq!(get_u32(&b, 0x150), 2);
        assert_eq!(get_u32(&b, 0x3FC), crc32c_update(!0, &b[..0x3FC]));
    }
}
