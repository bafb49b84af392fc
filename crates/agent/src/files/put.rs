//! FILES_PUT: extracts a tar stream below a destination directory.
//!
//! Rules, entry by entry (the first failure stops the extraction; what was extracted
//! before stays, and [`PutResult::error`] says what failed):
//! - Paths are relative to `dest`. An absolute path or a `..` component is refused (not
//!   silently rewritten). `.` (the destination itself) is skipped: the destination's own
//!   mode and owner are not the archive's to change.
//! - Every directory between `dest` and the entry is walked with `lstat`: a missing one is
//!   created (0755, owned by the owner), a symlink is followed only when it resolves to a
//!   directory inside `dest`, so nothing is ever written through a link that leads out.
//! - The entry itself is never followed: a file or symlink already there is replaced (a new
//!   inode, created with `O_EXCL|O_NOFOLLOW`), an existing directory is kept for a
//!   directory entry (and is an error for anything else), a symlink to a directory inside
//!   `dest` is kept for a directory entry (as `--keep-directory-symlink`).
//! - Regular files, directories, symlinks, hard links (their source resolved by the same
//!   rules), fifos and device nodes are made; other entry types are skipped.
//! - Owner: every entry made is chowned to the owner (the archive's uid/gid are ignored),
//!   then given the archive's mode (all 12 bits: chown would clear set-id bits, so the mode
//!   comes after it) and mtime. Directories get their mode and mtime last, deepest first, so
//!   writing their contents neither changes the mtime nor trips over a read-only mode.

use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, fchown, lchown};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use banger_guest_proto::PutResult;
use tar::EntryType;

use crate::sys;

/// Who owns what an upload creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Creates `dest` (with parents; the directory itself is chowned to `owner` when this
/// made it) and extracts `archive` below it.
pub fn extract(dest: &Path, owner: Owner, archive: impl Read) -> PutResult {
    let mut result = PutResult::default();
    let mut x = match Extractor::new(dest, owner) {
        Ok(x) => x,
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };
    let failed = x.run(archive, &mut result).err();
    let dirs_failed = x.finish_dirs().err();
    result.error = failed.or(dirs_failed);
    result
}

struct Extractor {
    /// Canonical: every resolved parent is checked against it.
    dest: PathBuf,
    owner: Owner,
    /// Directory entries made or kept: (path, mode, mtime), in archive order.
    dirs: Vec<(PathBuf, u32, u64)>,
}

fn describe(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

fn mtime_of(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// An archive path as a path relative to the destination (empty: the destination itself).
fn relative(raw: &Path) -> Result<PathBuf, String> {
    let mut rel = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "entry {}: absolute paths are refused (archive paths are relative to the destination)",
                    raw.display()
                ));
            }
            Component::ParentDir => {
                return Err(format!(
                    "entry {}: `..` would leave the destination; refused",
                    raw.display()
                ));
            }
        }
    }
    Ok(rel)
}

/// Removes what is at `path` unless it is a directory (which is an error). Nothing there
/// is fine.
fn clear_for_non_dir(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(describe(
            path,
            "a directory is in the way (it is not replaced)",
        )),
        Ok(_) => fs::remove_file(path).map_err(|e| describe(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(describe(path, e)),
    }
}

impl Extractor {
    fn new(dest: &Path, owner: Owner) -> Result<Extractor, String> {
        let existed = fs::symlink_metadata(dest).is_ok();
        fs::create_dir_all(dest).map_err(|e| describe(dest, format!("creating it: {e}")))?;
        if !existed {
            lchown(dest, Some(owner.uid), Some(owner.gid)).map_err(|e| describe(dest, e))?;
        }
        let dest = fs::canonicalize(dest).map_err(|e| describe(dest, e))?;
        if !dest.is_dir() {
            return Err(describe(&dest, "not a directory"));
        }
        Ok(Extractor {
            dest,
            owner,
            dirs: Vec::new(),
        })
    }

    fn run(&mut self, archive: impl Read, result: &mut PutResult) -> Result<(), String> {
        let mut archive = tar::Archive::new(archive);
        let entries = archive
            .entries()
            .map_err(|e| format!("reading the archive: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
            let raw = entry
                .path()
                .map_err(|e| format!("an entry's path: {e}"))?
                .into_owned();
            let kind = entry.header().entry_type();
            if matches!(
                kind,
                EntryType::XGlobalHeader
                    | EntryType::XHeader
                    | EntryType::GNULongName
                    | EntryType::GNULongLink
            ) {
                continue;
            }
            let rel = relative(&raw)?;
            let Some(name) = rel.file_name().map(ToOwned::to_owned) else {
                continue; // `.`: the destination itself
            };
            let parent = self.parent_of(&rel, true)?;
            let target = parent.join(name);
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            let mtime = header.mtime().unwrap_or(0);
            let made = match kind {
                EntryType::Directory => self.directory(&target, mode, mtime)?,
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    result.bytes += self.file(&target, &mut entry, mode, mtime)?;
                    true
                }
                EntryType::Symlink => {
                    let link = entry
                        .link_name()
                        .map_err(|e| describe(&raw, e))?
                        .ok_or_else(|| describe(&raw, "a symlink without a target"))?
                        .into_owned();
                    clear_for_non_dir(&target)?;
                    std::os::unix::fs::symlink(&link, &target).map_err(|e| describe(&target, e))?;
                    self.own(&target)?;
                    sys::set_mtime_nofollow(&target, mtime).map_err(|e| describe(&target, e))?;
                    true
                }
                EntryType::Link => {
                    let link = entry
                        .link_name()
                        .map_err(|e| describe(&raw, e))?
                        .ok_or_else(|| describe(&raw, "a hard link without a target"))?
                        .into_owned();
                    let source = self.existing(&relative(&link)?)?;
                    clear_for_non_dir(&target)?;
                    fs::hard_link(&source, &target).map_err(|e| describe(&target, e))?;
                    true
                }
                EntryType::Fifo | EntryType::Char | EntryType::Block => {
                    let dev = match (header.device_major(), header.device_minor()) {
                        (Ok(Some(major)), Ok(Some(minor))) => libc::makedev(major, minor),
                        _ => 0,
                    };
                    let format = match kind {
                        EntryType::Fifo => libc::S_IFIFO,
                        EntryType::Char => libc::S_IFCHR,
                        _ => libc::S_IFBLK,
                    };
                    clear_for_non_dir(&target)?;
                    sys::mknod(&target, format | mode, dev).map_err(|e| describe(&target, e))?;
                    self.own(&target)?;
                    fs::set_permissions(&target, Permissions::from_mode(mode))
                        .map_err(|e| describe(&target, e))?;
                    sys::set_mtime_nofollow(&target, mtime).map_err(|e| describe(&target, e))?;
                    true
                }
                _ => false, // sockets and unknown types: nothing to make
            };
            if made {
                result.entries += 1;
            }
        }
        Ok(())
    }

    fn own(&self, path: &Path) -> Result<(), String> {
        lchown(path, Some(self.owner.uid), Some(self.owner.gid)).map_err(|e| describe(path, e))
    }

    /// The real directory that `rel`'s parent is, inside the destination. With `create`,
    /// missing directories are made; without, a missing one is an error.
    fn parent_of(&self, rel: &Path, create: bool) -> Result<PathBuf, String> {
        let mut dir = self.dest.clone();
        let Some(parent) = rel.parent() else {
            return Ok(dir);
        };
        for part in parent.components() {
            let next = dir.join(part);
            match fs::symlink_metadata(&next) {
                Ok(m) if m.is_dir() => dir = next,
                Ok(m) if m.file_type().is_symlink() => {
                    let real = fs::canonicalize(&next).map_err(|e| {
                        describe(&next, format!("a symlink that does not resolve: {e}"))
                    })?;
                    if !real.starts_with(&self.dest) {
                        return Err(format!(
                            "entry {}: {} is a symlink leading outside the destination; refused",
                            rel.display(),
                            next.display()
                        ));
                    }
                    if !real.is_dir() {
                        return Err(describe(&next, "not a directory"));
                    }
                    dir = real;
                }
                Ok(_) => return Err(describe(&next, "not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&next).map_err(|e| describe(&next, e))?;
                    self.own(&next)?;
                    dir = next;
                }
                Err(e) => return Err(describe(&next, e)),
            }
        }
        Ok(dir)
    }

    /// The existing entry `rel` (not followed when it is a symlink), e.g. a hard link's
    /// source.
    fn existing(&self, rel: &Path) -> Result<PathBuf, String> {
        let name = rel
            .file_name()
            .ok_or_else(|| describe(rel, "a hard link to the destination itself"))?;
        let path = self.parent_of(rel, false)?.join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => Err(describe(&path, "a hard link to a directory")),
            Ok(_) => Ok(path),
            Err(e) => Err(describe(&path, e)),
        }
    }

    /// Makes (or keeps) a directory; its mode and mtime are applied at the end.
    fn directory(&mut self, target: &Path, mode: u32, mtime: u64) -> Result<bool, String> {
        match fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                let inside = fs::canonicalize(target)
                    .map(|real| real.starts_with(&self.dest) && real.is_dir())
                    .unwrap_or(false);
                if !inside {
                    return Err(describe(
                        target,
                        "a symlink is in the way of a directory (not a directory inside the destination)",
                    ));
                }
                return Ok(true); // kept as it is: its target is not ours to change
            }
            Ok(_) => return Err(describe(target, "exists and is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(target).map_err(|e| describe(target, e))?;
            }
            Err(e) => return Err(describe(target, e)),
        }
        self.own(target)?;
        self.dirs.push((target.to_path_buf(), mode, mtime));
        Ok(true)
    }

    /// Writes a regular file; returns its size.
    fn file(
        &self,
        target: &Path,
        data: &mut impl Read,
        mode: u32,
        mtime: u64,
    ) -> Result<u64, String> {
        clear_for_non_dir(target)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(target)
            .map_err(|e| describe(target, e))?;
        let written = io::copy(data, &mut file).map_err(|e| describe(target, e))?;
        fchown(&file, Some(self.owner.uid), Some(self.owner.gid))
            .map_err(|e| describe(target, e))?;
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| describe(target, e))?;
        let t = mtime_of(mtime);
        file.set_times(FileTimes::new().set_accessed(t).set_modified(t))
            .map_err(|e| describe(target, e))?;
        Ok(written)
    }

    /// Modes and mtimes of the directory entries, deepest first.
    fn finish_dirs(&mut self) -> Result<(), String> {
        let mut first_error = None;
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, mode, mtime) in self.dirs.drain(..) {
            let applied = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&path)
                .and_then(|dir: File| {
                    dir.set_permissions(Permissions::from_mode(mode))?;
                    let t = mtime_of(mtime);
                    dir.set_times(FileTimes::new().set_accessed(t).set_modified(t))
                });
            if let Err(e) = applied {
                first_error.get_or_insert(describe(&path, e));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
