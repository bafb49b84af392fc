//! banger-ext4: writes a complete, bootable ext4 filesystem image into a file in one
//! pass — no mkfs, no mount, no root.
//!
//! File data is streamed to its final place as entries are added; inode tables, bitmaps,
//! directories, extent-tree blocks, xattr blocks and the journal are laid out at
//! [`Ext4Writer::finish`], when all counts are known. See `README.md` for the layout.

mod bytes;
mod crc;
mod dir;
mod error;
mod extent;
mod htree;
mod inode;
mod journal;
mod layout;
mod superblock;
mod tree;
mod writer;
mod xattr;

pub use error::Error;
pub use writer::Ext4Writer;

/// How large the filesystem (and the image file) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizePolicy {
    /// Exactly this many bytes (the filesystem uses whole 4 KiB blocks of it).
    Exact(u64),
    /// `max(used × headroom_percent / 100, min_bytes)`.
    Auto {
        min_bytes: u64,
        headroom_percent: u32,
    },
}

impl Default for SizePolicy {
    fn default() -> Self {
        SizePolicy::Auto {
            min_bytes: 1 << 30,
            headroom_percent: 125,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub size: SizePolicy,
    /// Everything random-looking (fs UUID, directory hash seed, journal UUID) is derived
    /// from this, so identical input gives byte-identical images.
    pub seed: [u8; 16],
    /// At most 16 bytes.
    pub volume_label: Option<String>,
    /// Journal size in 4 KiB blocks (minimum 1024); `None` picks mkfs.ext4's default for
    /// the filesystem size.
    pub journal_blocks: Option<u32>,
    /// Bytes of filesystem per inode (like `mkfs.ext4 -i`); more inodes are added when
    /// the content needs them.
    pub inode_ratio: u32,
    /// Superblock/mkfs timestamps (seconds since the epoch).
    pub fs_time: u32,
    /// With [`SizePolicy::Exact`], reserve GDT blocks (resize_inode) so the kernel can grow
    /// the filesystem 1024-fold online, as `mkfs.ext4` does. Those blocks are written, so
    /// they cost up to 4 MiB on disk; a VM's scratch disks, which never grow, turn it off.
    pub online_resize: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            size: SizePolicy::default(),
            seed: [0; 16],
            volume_label: None,
            journal_blocks: None,
            inode_ratio: 16384,
            fs_time: 0,
            online_resize: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Xattr {
    /// Full name, e.g. `b"security.capability"`.
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky (`0o7777`); the type comes from
    /// [`EntryKind`].
    pub mode: u16,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub xattrs: Vec<Xattr>,
}

pub enum EntryKind<'a> {
    Directory,
    /// Reads exactly `size` bytes; a short read is an error.
    File {
        size: u64,
        data: &'a mut dyn std::io::Read,
    },
    Symlink {
        target: &'a std::ffi::OsStr,
    },
    /// Another path, already added, that is not a directory. The link shares its inode
    /// (and so its metadata; the `Metadata` passed with a hardlink is ignored).
    Hardlink {
        target: &'a std::path::Path,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Apparent size of the image file.
    pub size_bytes: u64,
    /// Bytes of filesystem blocks in use (data + metadata + journal).
    pub used_bytes: u64,
    /// Inodes in use, including the reserved ones (1..=10) and lost+found.
    pub inodes: u64,
    pub blocks_used: u64,
    pub blocks_total: u64,
    pub inodes_total: u64,
    /// Bytes of file data actually written (all-zero blocks become holes).
    pub data_bytes_written: u64,
    pub uuid: [u8; 16],
}
