//! OCI layer entries → ext4 image.
//!
//! [`Ext4Sink`] is the one place where a flattened [`banger_oci::Entry`] becomes a
//! [`banger_ext4::Ext4Writer`] call: permission bits, owners, timestamps and xattrs;
//! files, directories, symlinks, hardlinks, devices, FIFOs and sockets; and the removals
//! the merge asks for. The daemon's `image pull`, the `flatten_to_ext4` fuzz target and
//! the tests all write through it, so what is fuzzed is what users run.
//!
//! Policy stays with the caller: cancellation, progress reporting and how a full disk is
//! explained (the sink only says that the writer hit `ENOSPC`, see
//! [`Ext4Sink::hit_no_space`]).

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use banger_ext4 as ext4;
use banger_oci as oci;

/// Why an entry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A non-empty regular file came without its data reader (a merge bug, never a
    /// layer's fault: `banger-oci` hands data for every file).
    #[error("no data for {path}")]
    MissingData { path: String },
    /// The ext4 writer refused the entry; its message is kept as is.
    #[error(transparent)]
    Ext4(#[from] ext4::Error),
}

impl RootfsError {
    /// The writer's output file hit `ENOSPC`: the host filesystem is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, RootfsError::Ext4(e) if is_no_space(e))
    }
}

/// Whether an ext4 writer error is the host filesystem running out of space.
pub fn is_no_space(e: &ext4::Error) -> bool {
    matches!(e, ext4::Error::Io(io) if io.raw_os_error() == Some(libc::ENOSPC))
}

/// Writes flattened entries into an ext4 image, counting what it wrote.
pub struct Ext4Sink {
    writer: ext4::Ext4Writer,
    entries: u64,
    bytes: u64,
    no_space: bool,
}

impl Ext4Sink {
    pub fn new(writer: ext4::Ext4Writer) -> Ext4Sink {
        Ext4Sink {
            writer,
            entries: 0,
            bytes: 0,
            no_space: false,
        }
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// File bytes offered so far (counted before the write, so a failed write still
    /// tells how far the image got).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The writer hit `ENOSPC` on some entry. The merge wraps sink errors into its own
    /// ("sink rejected entry …"), so this is how a caller learns the disk is full.
    pub fn hit_no_space(&self) -> bool {
        self.no_space
    }

    /// Writes one entry; `data` yields a regular file's `size` bytes.
    pub fn add(
        &mut self,
        entry: &oci::Entry,
        data: Option<&mut dyn Read>,
    ) -> Result<(), RootfsError> {
        let meta = metadata(&entry.meta);
        let mut empty: &[u8] = &[];
        let kind = match &entry.kind {
            oci::EntryKind::Directory => ext4::EntryKind::Directory,
            oci::EntryKind::File { size } => {
                self.bytes += size;
                ext4::EntryKind::File {
                    size: *size,
                    data: match data {
                        Some(d) => d,
                        None if *size == 0 => &mut empty,
                        None => {
                            return Err(RootfsError::MissingData {
                                path: entry.path.clone(),
                            });
                        }
                    },
                }
            }
            oci::EntryKind::Symlink { target } => ext4::EntryKind::Symlink {
                target: OsStr::from_bytes(target),
            },
            oci::EntryKind::Hardlink { target } => ext4::EntryKind::Hardlink {
                target: Path::new(target),
            },
            oci::EntryKind::CharDevice { major, minor } => ext4::EntryKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            oci::EntryKind::BlockDevice { major, minor } => ext4::EntryKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            oci::EntryKind::Fifo => ext4::EntryKind::Fifo,
            oci::EntryKind::Socket => ext4::EntryKind::Socket,
        };
        if let Err(e) = self.writer.add(Path::new(&entry.path), &meta, kind) {
            self.no_space |= is_no_space(&e);
            return Err(e.into());
        }
        self.entries += 1;
        Ok(())
    }

    /// Removes a path written earlier (and, for a directory, everything below it).
    pub fn remove_path(&mut self, path: &str) -> Result<(), RootfsError> {
        self.writer.remove(Path::new(path))?;
        Ok(())
    }

    /// Lays out the metadata and publishes the image at its path.
    pub fn finish(self) -> Result<ext4::Summary, ext4::Error> {
        self.writer.finish()
    }
}

impl oci::EntrySink for Ext4Sink {
    fn entry(
        &mut self,
        entry: &oci::Entry,
        data: Option<&mut dyn Read>,
    ) -> Result<(), oci::SinkError> {
        Ok(self.add(entry, data)?)
    }

    fn remove(&mut self, path: &str) -> Result<(), oci::SinkError> {
        Ok(self.remove_path(path)?)
    }
}

/// An entry's inode metadata as the ext4 writer takes it. Only permission bits pass
/// (`0o7777`): the file type comes from the entry's kind.
pub fn metadata(m: &oci::Metadata) -> ext4::Metadata {
    let ts = |t: &oci::Timestamp| ext4::Timestamp {
        sec: t.sec,
        nsec: t.nsec,
    };
    ext4::Metadata {
        uid: m.uid,
        gid: m.gid,
        mode: (m.mode & 0o7777) as u16,
        mtime: ts(&m.mtime),
        atime: ts(&m.atime),
        ctime: ts(&m.ctime),
        xattrs: m
            .xattrs
            .iter()
            .map(|(name, value)| ext4::Xattr {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}
