//! The host's one tar extractor: what a VM sends for `vm cp NAME:SRC DST`, confined by
//! construction. The archive comes from the guest, and the guest may be hostile.
//!
//! Rules (scp's, then `cp -a`'s):
//! - Every entry lies under the name that was asked for: its first path component must be
//!   `top` (the base name of SRC), which lands as `name` (DST's, or SRC's own). `..`,
//!   absolute paths and any other first component are refused. Nothing is written, removed
//!   or chmod'ed outside `DIR/name`.
//! - Nothing is followed: a parent that is a symlink (planted by an earlier entry, or
//!   already on the host) refuses the entry; symlinks are created as symlinks, whatever
//!   their target.
//! - Modes are kept but setuid and setgid (and the sticky bit on files) are dropped.
//!   Directories that existed before the copy are never chmod'ed, nor their mtimes set.
//! - Hard links may only point at a regular file this same copy created.
//! - Devices, fifos, sparse files and other entry types are refused (an error, not a
//!   silent skip: the user asked for a copy, and an incomplete one should say so).
//! - Limits, checked as the archive streams: entries ([`Limits::max_entries`]), file
//!   bytes ([`Limits::max_bytes`]) and the size of one tar extension header
//!   ([`Limits::max_extension`], enforced by [`TarGuard`] before the tar crate buffers it).
//!
//! An offending entry fails the copy with a message that names it (escaped for the
//! terminal). When `DIR/name` did not exist (or was not a directory), the archive is
//! extracted into a fresh hidden directory in DIR (`.banger-cp.*`) and renamed into place
//! at the end: a failed copy leaves nothing behind (a killed CLI may leave that hidden
//! directory). When `DIR/name` is an existing directory the archive is merged into it as
//! `cp -a` does; a failure leaves what was written so far, all of it inside `DIR/name`.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;
use banger_api::text::{cut, visible, visible_bytes};
use banger_oci::tar_guard::{DEFAULT_MAX_EXTENSION, TarGuard};

/// Bounds on one extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries in the archive.
    pub max_entries: u64,
    /// Bytes of file data, all files together.
    pub max_bytes: u64,
    /// Bytes of one GNU long-name/long-link or PAX header body.
    pub max_extension: u64,
}

impl Default for Limits {
    /// Far above any honest copy (the guest's disk is the real bound); low enough that a
    /// guest cannot make the CLI count forever.
    fn default() -> Self {
        Limits {
            max_entries: 10_000_000,
            max_bytes: 1 << 40,
            max_extension: DEFAULT_MAX_EXTENSION,
        }
    }
}

/// Where a download lands: `dir/name`, from an archive whose entries all lie under `top`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub dir: PathBuf,
    pub top: OsString,
    pub name: OsString,
}

/// What an extraction wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extracted {
    pub entries: u64,
    pub bytes: u64,
}

/// Extracts the tar stream `reader` to `dest` by the rules in the module docs.
pub fn extract<R: Read>(
    reader: R,
    dest: &Destination,
    limits: &Limits,
) -> anyhow::Result<Extracted> {
    check_name(&dest.top, "the name asked for")?;
    check_name(&dest.name, "the destination name")?;
    let target = dest.dir.join(&dest.name);
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => {
            let mut x = Extractor::new(&dest.dir, dest, limits);
            x.run(reader)?;
            x.finish_dirs(None)?;
            Ok(x.stats)
        }
        Ok(_) => extract_staged(reader, dest, limits, Replace::File),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            extract_staged(reader, dest, limits, Replace::Nothing)
        }
        Err(e) => Err(e).with_context(|| format!("cannot write {}", shown_path(&target))),
    }
}

fn check_name(name: &OsStr, what: &str) -> anyhow::Result<()> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) => Ok(()),
        _ => anyhow::bail!(
            "{what}, {:?}, is not a plain file name",
            visible(&name.to_string_lossy())
        ),
    }
}

/// What is at `dir/name` before a staged extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    Nothing,
    /// A file or symlink, replaced by a file or symlink (never by a directory).
    File,
}

/// Extracts into a fresh directory beside the target, then renames the result into place.
fn extract_staged<R: Read>(
    reader: R,
    dest: &Destination,
    limits: &Limits,
    replace: Replace,
) -> anyhow::Result<Extracted> {
    let staging = private_dir(&dest.dir, ".banger-cp")?;
    let result = (|| {
        let mut x = Extractor::new(&staging, dest, limits);
        x.run(reader)?;
        // The top directory's mode comes after the rename: moving a read-only directory
        // to another parent is refused (its `..` entry changes).
        x.finish_dirs(Some(Path::new(&dest.name)))?;
        let staged = staging.join(&dest.name);
        let meta = std::fs::symlink_metadata(&staged)
            .map_err(|_| anyhow::anyhow!("the archive from the guest held no entries"))?;
        let target = dest.dir.join(&dest.name);
        if meta.is_dir() && replace == Replace::File {
            anyhow::bail!(
                "cannot replace the file {} with a directory",
                shown_path(&target)
            );
        }
        rename_into_place(&staged, &target, replace).with_context(|| {
            format!(
                "moving {} into place as {}",
                shown_path(&staged),
                shown_path(&target)
            )
        })?;
        x.finish_top(&target)?;
        Ok(x.stats)
    })();
    remove_tree(&staging);
    result
}

/// A new directory `DIR/PREFIX.<pid>.<n>` only this user can enter.
pub(crate) fn private_dir(dir: &Path, prefix: &str) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut last = None;
    for attempt in 0..16u32 {
        let path = dir.join(format!(
            "{prefix}.{}.{}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating a directory in {}", dir.display()));
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free name")))
        .with_context(|| format!("creating a directory in {}", dir.display()))
}

/// `rename(2)`, refusing to replace anything that appeared meanwhile when nothing was
/// there at the start.
fn rename_into_place(from: &Path, to: &Path, replace: Replace) -> io::Result<()> {
    if replace == Replace::File {
        return std::fs::rename(from, to);
    }
    let from_c = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let to_c = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 reads them and nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes a staging tree, whatever modes its directories got (best effort: it is ours).
pub(crate) fn remove_tree(path: &Path) {
    fn writable(path: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if !meta.is_dir() {
            return;
        }
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        if let Ok(items) = std::fs::read_dir(path) {
            for item in items.flatten() {
                writable(&item.path());
            }
        }
    }
    writable(path);
    let _ = std::fs::remove_dir_all(path);
}

/// One extraction in progress: paths are relative to `root` and begin with `dest.name`.
struct Extractor<'a> {
    root: &'a Path,
    dest: &'a Destination,
    limits: &'a Limits,
    stats: Extracted,
    seen: u64,
    /// Directories this copy created (only those get a mode and mtime).
    created_dirs: HashSet<PathBuf>,
    /// Their modes and mtimes, applied at the end (a read-only directory would block its
    /// contents).
    dir_modes: Vec<(PathBuf, u32, u64)>,
    /// `(dev, ino)` of the regular files this copy created: the only hard-link targets.
    created_files: HashSet<(u64, u64)>,
}

impl<'a> Extractor<'a> {
    fn new(root: &'a Path, dest: &'a Destination, limits: &'a Limits) -> Self {
        Extractor {
            root,
            dest,
            limits,
            stats: Extracted::default(),
            seen: 0,
            created_dirs: HashSet::new(),
            dir_modes: Vec::new(),
            created_files: HashSet::new(),
        }
    }

    fn run<R: Read>(&mut self, reader: R) -> anyhow::Result<()> {
        let mut archive = tar::Archive::new(TarGuard::new(reader, self.limits.max_extension));
        for entry in archive.entries().context("reading the archive")? {
            let entry = entry.context("reading the archive")?;
            self.seen += 1;
            if self.seen > self.limits.max_entries {
                anyhow::bail!(
                    "the archive has more than {} entries; that is the limit",
                    self.limits.max_entries
                );
            }
            self.entry(entry)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> anyhow::Result<()> {
        let raw = entry.path_bytes().into_owned();
        let header = entry.header();
        let kind = header.entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(()); // metadata for other tools; nothing to write
        }
        let rel = self.confine(&raw)?;
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().unwrap_or(0);
        match kind {
            tar::EntryType::Directory => self.directory(&raw, rel, mode & 0o1777, mtime)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                if self.stats.bytes.saturating_add(size) > self.limits.max_bytes {
                    return Err(refusal(
                        &raw,
                        &format!(
                            "it would bring the copy over {} bytes, the limit",
                            self.limits.max_bytes
                        ),
                    ));
                }
                self.file(&raw, &rel, &mut entry, mode & 0o777, mtime)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| refusal(&raw, "a symlink without a target"))?
                    .into_owned();
                self.symlink(&raw, &rel, &link, mtime)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| refusal(&raw, "a hard link without a target"))?
                    .into_owned();
                self.hard_link(&raw, &rel, &link)?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refusal(&raw, "a device node (devices are not copied)"));
            }
            tar::EntryType::Fifo => {
                return Err(refusal(&raw, "a fifo (fifos are not copied)"));
            }
            other => {
                return Err(refusal(
                    &raw,
                    &format!("unsupported entry type {:?}", other.as_byte() as char),
                ));
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// The entry's path relative to the root: `top` at its start replaced by `name`, plain
    /// components only.
    fn confine(&self, raw: &[u8]) -> anyhow::Result<PathBuf> {
        self.confined(raw).map_err(|why| refusal(raw, &why))
    }

    /// [`Self::confine`] with the reason of a refusal.
    fn confined(&self, raw: &[u8]) -> Result<PathBuf, String> {
        let mut out = PathBuf::new();
        for c in Path::new(OsStr::from_bytes(raw)).components() {
            match c {
                Component::Normal(part) if out.as_os_str().is_empty() => {
                    if part != self.dest.top.as_os_str() {
                        return Err(format!(
                            "it is not under {:?}, the name asked for",
                            visible(&self.dest.top.to_string_lossy())
                        ));
                    }
                    out.push(&self.dest.name);
                }
                Component::Normal(part) => out.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err("it would land outside the destination".into());
                }
            }
        }
        if out.as_os_str().is_empty() {
            return Err("an empty path".into());
        }
        Ok(out)
    }

    /// Checks every parent of `rel` below the root, never following a symlink; creates the
    /// missing ones when `create`.
    fn parents(&mut self, raw: &[u8], rel: &Path, create: bool) -> anyhow::Result<()> {
        let mut at = PathBuf::new();
        let parts: Vec<_> = rel.components().collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at.push(part);
            let full = self.root.join(&at);
            match std::fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refusal(
                        raw,
                        &format!(
                            "it would be written through the symlink {}",
                            shown_path(&full)
                        ),
                    ));
                }
                Ok(_) => {
                    return Err(refusal(
                        raw,
                        &format!("{} is not a directory", shown_path(&full)),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    std::fs::create_dir(&full)
                        .with_context(|| format!("creating {}", shown_path(&full)))?;
                    self.created_dirs.insert(at.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(refusal(
                        raw,
                        &format!("{} does not exist", shown_path(&full)),
                    ));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("checking {}", shown_path(&full)));
                }
            }
        }
        Ok(())
    }

    fn directory(&mut self, raw: &[u8], rel: PathBuf, mode: u32, mtime: u64) -> anyhow::Result<()> {
        self.parents(raw, &rel, true)?;
        let full = self.root.join(&rel);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {
                // An existing host directory keeps its mode; one this copy made gets the
                // archive's.
                if self.created_dirs.contains(&rel) {
                    self.dir_modes.push((rel, mode, mtime));
                }
            }
            Ok(_) => {
                return Err(refusal(
                    raw,
                    &format!("{} is in the way and is not a directory", shown_path(&full)),
                ));
            }
            Err(_) => {
                std::fs::create_dir(&full)
                    .with_context(|| format!("creating {}", shown_path(&full)))?;
                self.created_dirs.insert(rel.clone());
                self.dir_modes.push((rel, mode, mtime));
            }
        }
        Ok(())
    }

    /// Makes room for a file or link at `rel` (a directory in the way is an error).
    fn clear(&mut self, raw: &[u8], rel: &Path) -> anyhow::Result<PathBuf> {
        self.parents(raw, rel, true)?;
        let full = self.root.join(rel);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => Err(refusal(
                raw,
                &format!("the directory {} is in the way", shown_path(&full)),
            )),
            Ok(_) => {
                std::fs::remove_file(&full)
                    .with_context(|| format!("replacing {}", shown_path(&full)))?;
                Ok(full)
            }
            Err(_) => Ok(full),
        }
    }

    fn file(
        &mut self,
        raw: &[u8],
        rel: &Path,
        data: &mut impl Read,
        mode: u32,
        mtime: u64,
    ) -> anyhow::Result<()> {
        let full = self.clear(raw, rel)?;
        let what = || format!("writing {}", shown_path(&full));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)
            .with_context(what)?;
        self.stats.bytes += io::copy(data, &mut file).with_context(what)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(what)?;
        file.set_modified(mtime_of(mtime)).with_context(what)?;
        let meta = file.metadata().with_context(what)?;
        self.created_files.insert((meta.dev(), meta.ino()));
        Ok(())
    }

    fn symlink(&mut self, raw: &[u8], rel: &Path, link: &[u8], mtime: u64) -> anyhow::Result<()> {
        let full = self.clear(raw, rel)?;
        std::os::unix::fs::symlink(OsStr::from_bytes(link), &full)
            .with_context(|| format!("creating the symlink {}", shown_path(&full)))?;
        set_symlink_mtime(&full, mtime);
        Ok(())
    }

    fn hard_link(&mut self, raw: &[u8], rel: &Path, link: &[u8]) -> anyhow::Result<()> {
        let link_rel = self.confined(link).map_err(|why| {
            refusal(
                raw,
                &format!("its link target {:?}: {why}", visible_bytes(link)),
            )
        })?;
        self.parents(raw, &link_rel, false)?;
        let source = self.root.join(&link_rel);
        let ours = std::fs::symlink_metadata(&source).is_ok_and(|m| {
            m.file_type().is_file() && self.created_files.contains(&(m.dev(), m.ino()))
        });
        if !ours {
            return Err(refusal(
                raw,
                &format!(
                    "a hard link to {:?}, which is not a file this copy wrote",
                    visible_bytes(link)
                ),
            ));
        }
        let full = self.clear(raw, rel)?;
        std::fs::hard_link(&source, &full)
            .with_context(|| format!("linking {}", shown_path(&full)))?;
        Ok(())
    }

    /// Applies the directories' modes and mtimes, deepest first (a parent's mtime after
    /// its children changed it); `skip` is left for [`Self::finish_top`].
    fn finish_dirs(&mut self, skip: Option<&Path>) -> anyhow::Result<()> {
        self.dir_modes.sort_by(|a, b| b.0.cmp(&a.0));
        for (rel, mode, mtime) in &self.dir_modes {
            if Some(rel.as_path()) == skip {
                continue;
            }
            set_dir_mode(&self.root.join(rel), *mode, *mtime)?;
        }
        Ok(())
    }

    /// The top directory's mode and mtime, once it is in place at `target`.
    fn finish_top(&self, target: &Path) -> anyhow::Result<()> {
        let top = Path::new(&self.dest.name);
        if let Some((_, mode, mtime)) = self.dir_modes.iter().rev().find(|d| d.0 == top) {
            set_dir_mode(target, *mode, *mtime)?;
        }
        Ok(())
    }
}

fn set_dir_mode(path: &Path, mode: u32, mtime: u64) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", shown_path(path)))?;
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.set_modified(mtime_of(mtime));
    }
    Ok(())
}

/// The error for a refused entry: its name (escaped and cut) and why.
fn refusal(raw: &[u8], why: &str) -> anyhow::Error {
    let name = visible_bytes(raw);
    let shown = cut(&name, 300);
    let more = if shown.len() < name.len() { "…" } else { "" };
    anyhow::anyhow!("refusing archive entry \"{shown}{more}\": {why}")
}

/// A host path that may hold guest-chosen names, ready for the terminal.
fn shown_path(path: &Path) -> String {
    visible(&path.to_string_lossy()).into_owned()
}

fn mtime_of(secs: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

fn set_symlink_mtime(path: &Path, mtime: u64) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: a valid NUL-terminated path and two timespecs; the result is advisory.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
}

/// A guest path without `.` and `..` (resolved by name, as the guest would see the
/// request) and without a trailing `/`: what is asked for, and its base name (`None`
/// for `/`).
pub fn guest_request(path: &str) -> (String, Option<OsString>) {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let top = parts
        .last()
        .map(|p| OsString::from_vec(p.as_bytes().to_vec()));
    (format!("/{}", parts.join("/")), top)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::symlink;

    use super::super::pack::{Tree, pack};
    use super::super::testing::{archive_names, mode_of, sample_tree, unlock};
    use super::*;

    fn dest(dir: &Path, top: &str, name: &str) -> Destination {
        Destination {
            dir: dir.to_path_buf(),
            top: top.into(),
            name: name.into(),
        }
    }

    fn run(ar: &[u8], dest: &Destination) -> anyhow::Result<Extracted> {
        extract(ar, dest, &Limits::default())
    }

    #[test]
    fn a_tree_round_trips_with_modes_and_symlinks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("proj");
        sample_tree(&src);
        let tree = Tree::of(&src, &std::fs::symlink_metadata(&src).expect("stat")).expect("tree");
        assert_eq!(
            tree.listing(),
            [
                "a.txt", "bin/", "bin/run", "empty/", "link", "ro/", "ro/file"
            ]
        );
        let mut bytes = Vec::new();
        let stats = pack(&tree, Path::new("proj"), &mut bytes).expect("pack");
        assert_eq!(stats.files, 3);
        assert_eq!(stats.entries, 8);
        let names = archive_names(&bytes);
        assert_eq!(names[0], "proj/");
        let listed: Vec<String> = names[1..]
            .iter()
            .map(|n| n.strip_prefix("proj/").expect("under proj/").to_string())
            .collect();
        assert_eq!(listed, tree.listing(), "the listing is what is packed");

        let out = tmp.path().join("out");
        std::fs::create_dir(&out).expect("mkdir");
        let got = run(&bytes, &dest(&out, "proj", "copy")).expect("extract");
        assert_eq!(got.entries, 8);
        let copy = out.join("copy");
        assert_eq!(
            std::fs::read_to_string(copy.join("a.txt")).expect("read"),
            "hello\n"
        );
        assert_eq!(mode_of(&copy.join("bin/run")).expect("mode"), 0o750);
        assert_eq!(mode_of(&copy.join("ro")).expect("mode"), 0o555);
        assert_eq!(
            std::fs::read_link(copy.join("link")).expect("link"),
            Path::new("a.txt")
        );
        assert!(copy.join("empty").is_dir());
        let mtime = |p: &Path| std::fs::metadata(p).expect("stat").mtime();
        assert_eq!(mtime(&copy.join("a.txt")), mtime(&src.join("a.txt")));
        assert_eq!(
            mtime(&copy),
            mtime(&src),
            "the top's mtime, set after the rename"
        );
        assert_eq!(leftovers(&out), 0, "no staging directory is left");
        // Again into the existing copy: merged, as `cp -a` does.
        unlock(&copy);
        std::fs::write(copy.join("a.txt"), "changed").expect("write");
        run(&bytes, &dest(&out, "proj", "copy")).expect("merge");
        assert_eq!(
            std::fs::read_to_string(copy.join("a.txt")).expect("read"),
            "hello\n"
        );
        unlock(&src);
        unlock(&copy);
    }

    /// Staging directories left in `dir`.
    fn leftovers(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .expect("ls")
            .filter(|e| {
                e.as_ref()
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".banger-cp")
            })
            .count()
    }

    /// One entry of a hand-made archive: raw name, type, mode, link target.
    struct Raw<'a>(&'a str, tar::EntryType, u32, Option<&'a str>);

    /// A hand-made archive (names written raw, so `..` and `/` get through); regular
    /// files hold `pwned`.
    fn archive(entries: &[Raw<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for Raw(name, kind, mode, link) in entries {
            let mut h = tar::Header::new_gnu();
            {
                let raw = h.as_old_mut();
                raw.name[..name.len()].copy_from_slice(name.as_bytes());
                if let Some(l) = link {
                    raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
                }
            }
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_mtime(1_000_000);
            let body: &[u8] = if *kind == tar::EntryType::Regular {
                b"pwned"
            } else {
                b""
            };
            h.set_size(body.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(body);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    use tar::EntryType::{Char, Directory as Dir, Link, Regular as File, Symlink};

    /// Everything under `dir` but `skip`: path → (mode, contents or link target).
    fn snapshot(dir: &Path, skip: &str) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
        fn walk(root: &Path, at: &Path, skip: &str, out: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
            for item in std::fs::read_dir(root.join(at)).expect("ls") {
                let name = item.expect("entry").file_name();
                let rel = at.join(&name);
                if rel == Path::new(skip) {
                    continue;
                }
                let full = root.join(&rel);
                let meta = std::fs::symlink_metadata(&full).expect("stat");
                let data = if meta.is_file() {
                    std::fs::read(&full).expect("read")
                } else if meta.file_type().is_symlink() {
                    std::fs::read_link(&full)
                        .expect("link")
                        .into_os_string()
                        .into_vec()
                } else {
                    Vec::new()
                };
                out.insert(rel.clone(), (meta.mode(), data));
                if meta.is_dir() {
                    walk(root, &rel, skip, out);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(dir, Path::new(""), skip, &mut out);
        out
    }

    fn setuid_files(dir: &Path) -> Vec<PathBuf> {
        snapshot(dir, "")
            .into_iter()
            .filter(|(_, (mode, _))| mode & 0o6000 != 0)
            .map(|(p, _)| p)
            .collect()
    }

    /// A fake home: `.bashrc` and `.ssh/` with a key, the user's own modes.
    fn home() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path();
        std::fs::write(d.join(".bashrc"), "mine\n").expect("write");
        std::fs::create_dir(d.join(".ssh")).expect("mkdir");
        std::fs::set_permissions(d.join(".ssh"), PermissionsExt::from_mode(0o700)).expect("chmod");
        std::fs::write(d.join(".ssh/authorized_keys"), "ssh-ed25519 mine\n").expect("write");
        tmp
    }

    fn hostile_entries() -> Vec<Raw<'static>> {
        vec![
            Raw("out/ok.txt", File, 0o644, None),
            Raw("out/suid", File, 0o4777, None),
            Raw(".bashrc", File, 0o644, None),
            Raw(".ssh/", Dir, 0o777, None),
            Raw(".ssh/authorized_keys", File, 0o600, None),
            Raw(".git/hooks/pre-commit", File, 0o755, None),
            Raw("out/dev", Char, 0o666, None),
            Raw("./", Dir, 0o777, None),
        ]
    }

    #[test]
    fn a_hostile_archive_changes_nothing_outside_the_name_asked_for() {
        let home = home();
        let dir = home.path();
        let before = snapshot(dir, "out");
        let out = dest(dir, "out", "out");

        // The whole archive: the first refused entry is named; DIR/out did not exist, so
        // the failed copy leaves nothing.
        let e = run(&archive(&hostile_entries()), &out).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "refusing archive entry \".bashrc\": it is not under \"out\", the name asked for"
        );
        assert!(!dir.join("out").exists());
        assert_eq!(snapshot(dir, "out"), before);
        assert_eq!(leftovers(dir), 0);

        // Each hostile entry after an honest one, into an existing DIR/out (0755): merged,
        // so what came before stays, inside DIR/out only.
        std::fs::create_dir(dir.join("out")).expect("mkdir");
        std::fs::set_permissions(dir.join("out"), PermissionsExt::from_mode(0o755)).expect("chmod");
        for bad in hostile_entries().into_iter().skip(2) {
            let shown = bad.0;
            let e = run(&archive(&[Raw("out/ok.txt", File, 0o644, None), bad]), &out)
                .expect_err(shown)
                .to_string();
            let name = shown.trim_end_matches('/');
            assert!(
                e.starts_with(&format!("refusing archive entry \"{name}")) || e.contains(shown),
                "{shown}: {e}"
            );
            assert_eq!(snapshot(dir, "out"), before, "after {shown}");
        }
        // A directory entry naming the existing DIR/out with 0777, and a setuid file.
        run(
            &archive(&[
                Raw("out", Dir, 0o777, None),
                Raw("out/suid", File, 0o4777, None),
                Raw("out/sgid", File, 0o2755, None),
                Raw("out/sub/", Dir, 0o3777, None),
            ]),
            &out,
        )
        .expect("honest enough");
        assert_eq!(
            mode_of(&dir.join("out")).expect("mode"),
            0o755,
            "never chmod'ed"
        );
        assert_eq!(mode_of(&dir.join("out/suid")).expect("mode"), 0o777);
        assert_eq!(mode_of(&dir.join("out/sgid")).expect("mode"), 0o755);
        assert_eq!(
            mode_of(&dir.join("out/sub")).expect("mode"),
            0o1777,
            "sticky kept"
        );
        assert_eq!(setuid_files(dir), Vec::<PathBuf>::new());
        assert_eq!(snapshot(dir, "out"), before);
        assert_eq!(
            std::fs::read_to_string(dir.join(".bashrc")).expect("read"),
            "mine\n"
        );
        assert_eq!(mode_of(&dir.join(".ssh")).expect("mode"), 0o700);
    }

    #[test]
    fn escaping_entries_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("dest");
        std::fs::create_dir(&dir).expect("mkdir");
        let to = dest(&dir, "a", "a");
        for name in [
            "../escape",
            "a/../../escape",
            "/abs/escape",
            "a/../escape",
            "b",
        ] {
            let e = run(&archive(&[Raw(name, File, 0o644, None)]), &to)
                .expect_err(name)
                .to_string();
            assert!(e.starts_with("refusing archive entry"), "{name}: {e}");
        }
        assert!(!tmp.path().join("escape").exists());
        assert_eq!(std::fs::read_dir(&dir).expect("ls").count(), 0);
        // A symlink planted to lead outside, then a file through it.
        let to = dest(&dir, "x", "x");
        let ar = archive(&[
            Raw("x", Symlink, 0o777, Some("..")),
            Raw("x/escape", File, 0o644, None),
        ]);
        let e = run(&ar, &to).expect_err("through a symlink").to_string();
        assert!(e.contains("symlink"), "{e}");
        assert!(!tmp.path().join("escape").exists());
        // A symlink already on the host where the name lands is not followed either.
        symlink(tmp.path(), dir.join("x")).expect("symlink");
        let ar = archive(&[
            Raw("x/", Dir, 0o755, None),
            Raw("x/escape", File, 0o644, None),
        ]);
        let e = run(&ar, &to).expect_err("host symlink").to_string();
        assert!(e.contains("cannot replace the file"), "{e}");
        assert!(!tmp.path().join("escape").exists());
        assert!(
            std::fs::symlink_metadata(dir.join("x"))
                .expect("kept")
                .is_symlink()
        );
    }

    #[test]
    fn hard_links_only_reach_files_of_this_copy() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let to = dest(dir, "t", "t");
        run(
            &archive(&[
                Raw("t/", Dir, 0o755, None),
                Raw("t/f", File, 0o644, None),
                Raw("t/h", Link, 0o644, Some("t/f")),
            ]),
            &to,
        )
        .expect("a link inside the copy");
        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        assert_eq!(ino(&dir.join("t/h")), ino(&dir.join("t/f")));
        // Into the existing t: its files predate this copy.
        for target in ["t/f", "../../etc/passwd", "/etc/passwd", "t/missing"] {
            let e = run(&archive(&[Raw("t/h2", Link, 0o644, Some(target))]), &to)
                .expect_err(target)
                .to_string();
            assert!(
                e.starts_with("refusing archive entry \"t/h2\""),
                "{target}: {e}"
            );
        }
        assert!(!dir.join("t/h2").exists());
    }

    #[test]
    fn devices_fifos_and_odd_names_are_refused_by_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let to = dest(tmp.path(), "t", "t");
        let e = run(
            &archive(&[Raw("t/p", tar::EntryType::Fifo, 0o644, None)]),
            &to,
        )
        .expect_err("fifo")
        .to_string();
        assert_eq!(
            e,
            "refusing archive entry \"t/p\": a fifo (fifos are not copied)"
        );
        let e = run(
            &archive(&[Raw("t/b", tar::EntryType::Block, 0o644, None)]),
            &to,
        )
        .expect_err("block")
        .to_string();
        assert!(e.contains("device"), "{e}");
        let e = run(
            &archive(&[Raw("\x1b]52;c;eA==\x07", File, 0o644, None)]),
            &to,
        )
        .expect_err("escape")
        .to_string();
        assert!(e.contains("\\x1b]52"), "{e}");
        assert!(!e.contains('\x1b') && !e.contains('\x07'), "{e:?}");
        assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 0);
    }

    #[test]
    fn a_file_replaces_a_file_but_not_with_a_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        std::fs::write(dir.join("copy"), "old").expect("write");
        run(
            &archive(&[Raw("f", File, 0o640, None)]),
            &dest(dir, "f", "copy"),
        )
        .expect("file");
        assert_eq!(std::fs::read(dir.join("copy")).expect("read"), b"pwned");
        assert_eq!(mode_of(&dir.join("copy")).expect("mode"), 0o640);
        let e = run(
            &archive(&[Raw("d/", Dir, 0o755, None), Raw("d/x", File, 0o644, None)]),
            &dest(dir, "d", "copy"),
        )
        .expect_err("dir over file")
        .to_string();
        assert!(e.contains("cannot replace the file"), "{e}");
        assert_eq!(std::fs::read(dir.join("copy")).expect("read"), b"pwned");
        assert_eq!(leftovers(dir), 0);
    }

    #[test]
    fn limits_are_checked_as_the_archive_streams() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let to = dest(tmp.path(), "t", "t");
        let entries: Vec<Raw<'_>> = (0..5).map(|_| Raw("t", File, 0o644, None)).collect();
        let few = Limits {
            max_entries: 4,
            ..Limits::default()
        };
        let e = extract(&archive(&entries)[..], &to, &few).expect_err("count");
        assert!(e.to_string().contains("more than 4 entries"), "{e}");
        let small = Limits {
            max_bytes: 12,
            ..Limits::default()
        };
        let e = extract(&archive(&entries)[..], &to, &small).expect_err("bytes");
        assert!(e.to_string().contains("over 12 bytes"), "{e}");
        assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 0);

        // A GNU long name declaring 1 GiB, then zeros forever: refused at its header.
        let mut h = tar::Header::new_gnu();
        h.set_path("././@LongLink").expect("name");
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 30);
        h.set_cksum();
        let endless = io::Cursor::new(h.as_bytes().to_vec()).chain(io::repeat(0));
        let e = extract(endless, &to, &Limits::default()).expect_err("long name");
        assert!(
            format!("{e:#}").contains(
                "tar extension header (GNU long name) declares 1073741824 bytes; limit is 65536"
            ),
            "{e:#}"
        );
    }
}
