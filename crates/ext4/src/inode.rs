//! 256-byte inode records (extra_isize 32, nanosecond timestamps, crc32c).

use crate::Timestamp;
use crate::bytes::{put_u16, put_u32};
use crate::crc::crc32c_update;
use crate::layout::INODE_SIZE;
use crate::xattr::IBODY_SIZE;

pub const S_IFIFO: u16 = 0o010000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFSOCK: u16 = 0o140000;

pub const EXTENTS_FL: u32 = 0x0008_0000;
/// Directory has a hash index (htree).
pub const INDEX_FL: u32 = 0x0000_1000;
pub const EXTRA_ISIZE: u16 = 32;

/// Everything the on-disk inode needs, already resolved.
pub struct InodeRec {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub mtime: Timestamp,
    pub crtime: Timestamp,
    pub links: u16,
    /// In 512-byte sectors.
    pub sectors: u64,
    pub flags: u32,
    pub i_block: [u8; 60],
    pub file_acl: u64,
    pub ibody_xattrs: Option<[u8; IBODY_SIZE]>,
}

/// (seconds low 32 bits, extra field: epoch bits + nanoseconds << 2)
fn encode_time(t: Timestamp) -> (u32, u32) {
    let lo = t.sec as i32;
    let epoch = ((t.sec - lo as i64) >> 32) as u32 & 3;
    (lo as u32, epoch | (t.nsec.min(999_999_999) << 2))
}

/// Per-inode checksum seed (also used for extent and directory blocks).
pub fn inode_seed(csum_seed: u32, ino: u32, generation: u32) -> u32 {
    let s = crc32c_update(csum_seed, &ino.to_le_bytes());
    crc32c_update(s, &generation.to_le_bytes())
}

pub fn encode(ino: u32, rec: &InodeRec, csum_seed: u32) -> [u8; INODE_SIZE as usize] {
    let mut b = [0u8; INODE_SIZE as usize];
    put_u16(&mut b, 0x00, rec.mode);
    put_u16(&mut b, 0x02, rec.uid as u16);
    put_u32(&mut b, 0x04, rec.size as u32);
    let (a, ax) = encode_time(rec.atime);
    let (c, cx) = encode_time(rec.ctime);
    let (m, mx) = encode_time(rec.mtime);
    let (cr, crx) = encode_time(rec.crtime);
    put_u32(&mut b, 0x08, a);
    put_u32(&mut b, 0x0C, c);
    put_u32(&mut b, 0x10, m);
    put_u16(&mut b, 0x18, rec.gid as u16);
    put_u16(&mut b, 0x1A, rec.links);
    put_u32(&mut b, 0x1C, rec.sectors as u32);
    put_u32(&mut b, 0x20, rec.flags);
    b[0x28..0x28 + 60].copy_from_slice(&rec.i_block);
    put_u32(&mut b, 0x68, rec.file_acl as u32);
    put_u32(&mut b, 0x6C, (rec.size >> 32) as u32);
    put_u16(&mut b, 0x74, (rec.sectors >> 32) as u16);
    put_u16(&mut b, 0x76, (rec.file_acl >> 32) as u16);
    put_u16(&mut b, 0x78, (rec.uid >> 16) as u16);
    put_u16(&mut b, 0x7A, (rec.gid >> 16) as u16);
    put_u16(&mut b, 0x80, EXTRA_ISIZE);
    put_u32(&mut b, 0x84, cx);
    put_u32(&mut b, 0x88, mx);
    put_u32(&mut b, 0x8C, ax);
    put_u32(&mut b, 0x90, cr);
    put_u32(&mut b, 0x94, crx);
    if let Some(x) = &rec.ibody_xattrs {
        b[160..].copy_from_slice(x);
    }
    set_checksum(&mut b, ino, csum_seed);
    b
}

/// Checksum over the whole inode with both checksum fields zero.
pub fn set_checksum(b: &mut [u8; INODE_SIZE as usize], ino: u32, csum_seed: u32) {
    put_u16(b, 0x7C, 0);
    put_u16(b, 0x82, 0);
    let generation = u32::from_le_bytes([b[0x64], b[0x65], b[0x66], b[0x67]]);
    let csum = crc32c_update(inode_seed(csum_seed, ino, generation), &b[..]);
    put_u16(b, 0x7C, csum as u16);
    put_u16(b, 0x82, (csum >> 16) as u16);
}

/// `i_block` for a device node (old encoding when it fits, like the kernel).
pub fn device_block(major: u32, minor: u32) -> [u8; 60] {
    let mut ib = [0u8; 60];
    if major < 256 && minor < 256 {
        put_u32(&mut ib, 0, (major << 8) | minor);
    } else {
        let new = (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & !0xFF) << 12);
        put_u32(&mut ib, 4, new);
    }
    ib
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_encoding() {
        assert_eq!(encode_time(Timestamp { sec: 0, nsec: 1 }), (0, 4));
        assert_eq!(encode_time(Timestamp { sec: -1, nsec: 0 }), (u32::MAX, 0));
        // 2038+ uses the epoch bits.
        assert_eq!(
            encode_time(Timestamp {
                sec: 1 << 31,
                nsec: 0
            }),
            (1 << 31, 1)
        );
    }

    #[test]
    fn device_encoding() {
        assert_eq!(
            u32::from_le_bytes(device_block(1, 3)[0..4].try_into().unwrap()),
            0x103
        );
        let b = device_block(259, 300);
        assert_eq!(u32::from_le_bytes(b[0..4].try_into().unwrap()), 0);
        assert_eq!(
            u32::from_le_bytes(b[4..8].try_into().unwrap()),
            (300 & 0xFF) | (259 << 8) | ((300 & !0xFF) << 12)
        );
    }
}
