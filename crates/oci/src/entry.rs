//! The flattened filesystem stream handed to a consumer (the ext4 writer).
//!
//! Guarantees a sink can rely on (see `flatten`):
//! * paths are relative, `/`-separated, never empty, never contain `.`/`..` components;
//! * each non-directory path is emitted at most once; a directory may be emitted after
//!   its children (it then only supplies metadata for an implicit parent) and at most
//!   once more per duplicate directory entry of one layer (the last metadata wins);
//! * parents are not guaranteed to be emitted before children: create them implicitly;
//! * a `Hardlink { target }` always names a path already emitted as a non-directory;
//! * `remove` is only called for a path emitted earlier from the same layer when that
//!   layer lists the path again with a different kind (duplicate entries: last wins).

use std::io::Read;

/// Seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// Inode metadata, matching the ext4 writer's `meta`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits incl. setuid/setgid/sticky (`0o7777`), no file-type bits.
    pub mode: u32,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    /// Extended attributes (`security.capability`, `user.*`, …) as raw name/value bytes.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What an entry is. Sockets cannot be represented in tar; the variant exists so the
/// sink's shape matches the ext4 writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    /// Regular file; exactly `size` bytes follow in the data reader.
    File {
        size: u64,
    },
    /// Symbolic link; the target is stored verbatim and never resolved by this crate.
    Symlink {
        target: Vec<u8>,
    },
    /// Another name for an already-emitted non-directory path.
    Hardlink {
        target: String,
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

/// One filesystem entry of the merged image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative path without leading `/` (`etc/passwd`).
    pub path: String,
    pub kind: EntryKind,
    /// For `Hardlink`, the metadata of the link's inode is the target's; this copy is informative.
    pub meta: Metadata,
}

/// Error type a sink returns; flatten wraps it into [`crate::Error::Sink`].
pub type SinkError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Consumer of the flattened stream.
pub trait EntrySink {
    /// Adds one entry. `data` is `Some` exactly for `EntryKind::File` and yields `size` bytes.
    fn entry(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), SinkError>;
    /// Removes a previously emitted path (and, for a directory, everything below it).
    fn remove(&mut self, path: &str) -> Result<(), SinkError>;
}

/// A sink that records entries (and file contents) in memory: handy for tests and
/// for callers that only want the listing.
#[derive(Debug, Default)]
pub struct CollectSink {
    pub entries: Vec<(Entry, Option<Vec<u8>>)>,
    pub removed: Vec<String>,
}

impl EntrySink for CollectSink {
    fn entry(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), SinkError> {
        let body = match data {
            Some(r) => {
                let mut v = Vec::new();
                r.read_to_end(&mut v)?;
                Some(v)
            }
            None => None,
        };
        self.entries.push((entry.clone(), body));
        Ok(())
    }
    fn remove(&mut self, path: &str) -> Result<(), SinkError> {
        self.removed.push(path.to_string());
        let prefix = format!("{path}/");
        self.entries
            .retain(|(e, _)| e.path != path && !e.path.starts_with(&prefix));
        Ok(())
    }
}
