//! Typed errors of the writer.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested exact size cannot hold the content.
    #[error(
        "filesystem too small: {requested_bytes} bytes requested, at least {needed_bytes} needed"
    )]
    TooSmall {
        needed_bytes: u64,
        requested_bytes: u64,
    },
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    #[error("not found: {0:?}")]
    NotFound(PathBuf),
    #[error("a parent of {0:?} is not a directory")]
    NotADirectory(PathBuf),
    #[error("hardlink target {0:?} is a directory")]
    HardlinkToDirectory(PathBuf),
    #[error("the root directory can only be given directory metadata")]
    RootNotDirectory,
    #[error("short read for {path:?}: expected {expected} bytes, got {got}")]
    ShortRead {
        path: PathBuf,
        expected: u64,
        got: u64,
    },
    #[error("file {path:?} is too large for ext4 ({size} bytes)")]
    FileTooLarge { path: PathBuf, size: u64 },
    #[error("symlink target of {0:?} is longer than 4095 bytes")]
    SymlinkTooLong(PathBuf),
    #[error("unsupported xattr name {name:?} on {path:?}")]
    UnsupportedXattr { path: PathBuf, name: String },
    #[error("xattrs of {0:?} do not fit in the inode plus one 4 KiB block")]
    XattrTooLarge(PathBuf),
    #[error("too many hard links to {0:?} (ext4 allows 65000)")]
    TooManyLinks(PathBuf),
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("filesystem would exceed the limits of this writer: {0}")]
    Limit(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
