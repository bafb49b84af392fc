//! Kernel files shared by content: `<state>/kernel-files/` holds one immutable copy of each
//! kernel, vmlinux and initrd (`blobs/<sha256>`) and of each modules tree
//! (`trees/<tree digest>/`). The kernel store and every image hardlink to them, so the
//! twentieth image of a kernel costs a directory entry, not 120 MB.
//!
//! References are counted by the filesystem and the records: a blob is in use while some
//! hardlink to it exists (`st_nlink > 1`); a tree while an image record names it as its
//! `modules_dir`, the kernel store links its files, or a pull in flight pins it.
//! [`SharedFiles::gc`] removes the rest (at daemon start and after every delete).
//!
//! Hashing 120 MB on every pull would cost more than the pull itself, so identities are
//! remembered by `(device, inode, size, mtime)` in `index.json` (trees by a fingerprint of
//! those of all their entries). `link(2)` changes a file's ctime but never its mtime, which
//! is why the ctime is not part of the key.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use banger_kernel::manifest::{TreeVisitor, digest_copying, tree_digest_with};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::choice::KernelInputs;
use crate::error::OpError;
use crate::fsutil;
use crate::ids;
use crate::store::Store;

use super::manifest::{self, INITRD, MODULES, VMLINUX, VMLINUZ};

/// The shared store's directory in the state dir.
pub const DIR: &str = "kernel-files";
const INDEX: &str = "index.json";
const TMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// `dev:ino:size:mtime_ns` → blob hex digest.
    files: HashMap<String, String>,
    /// Fingerprint of a tree's entries → tree hex digest.
    trees: HashMap<String, String>,
}

#[derive(Default)]
struct Inner {
    index: Index,
    /// Trees a pull is staging (not yet named by a record), with their pin counts.
    pins: HashMap<String, usize>,
}

pub struct SharedFiles {
    root: PathBuf,
    inner: Mutex<Inner>,
}

/// Keeps a tree from being collected until the image that uses it is recorded.
pub struct TreePin {
    shared: Arc<SharedFiles>,
    hex: String,
}

impl Drop for TreePin {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if let Some(n) = inner.pins.get_mut(&self.hex) {
            *n -= 1;
            if *n == 0 {
                inner.pins.remove(&self.hex);
            }
        }
    }
}

/// What [`SharedFiles::stage`] put in an image directory.
pub struct StagedKernel {
    /// The shared modules tree the image's record names.
    pub modules_dir: Option<PathBuf>,
    pub pin: Option<TreePin>,
}

/// Bytes an image keeps to itself and bytes it shares with other images or kernels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub own_bytes: u64,
    pub shared_bytes: u64,
}

impl SharedFiles {
    /// Opens the store of `state_dir`. Open it once per daemon and hand the one instance to
    /// images, pulls and the kernel store: they must share its lock and pins.
    pub fn open(state_dir: &Path) -> Arc<SharedFiles> {
        let root = state_dir.join(DIR);
        let index = std::fs::read(root.join(INDEX))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Arc::new(SharedFiles {
            root,
            inner: Mutex::new(Inner {
                index,
                pins: HashMap::new(),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    fn trees(&self) -> PathBuf {
        self.root.join("trees")
    }

    /// Recreated on every use: a user may `rm -rf` anything under the state dir.
    fn ensure_dirs(&self) -> Result<(), OpError> {
        for d in [self.blobs(), self.trees()] {
            std::fs::create_dir_all(&d)
                .map_err(|e| OpError::io(format!("creating {}", d.display()), e))?;
        }
        Ok(())
    }

    /// Puts the kernel triple into an image directory: `kernel`, `vmlinux` and
    /// `initrd.img` as hardlinks to shared blobs, `modules` as a symlink to the shared tree
    /// (which the record names directly). Files from the kernel store are ours and already
    /// shared; a user's `--kernel/--initrd/--modules` are copied into the store once.
    pub fn stage(
        self: &Arc<Self>,
        kernel: &KernelInputs,
        dir: &Path,
    ) -> Result<StagedKernel, OpError> {
        let mut inner = self.lock();
        self.ensure_dirs()?;
        let owned = kernel.kernel_ref.is_some();
        let files = [
            (Some(&kernel.kernel), "kernel"),
            (kernel.vmlinux.as_ref(), VMLINUX),
            (kernel.initrd.as_ref(), INITRD),
        ];
        for (src, name) in files {
            if let Some(src) = src {
                let hex = self.intern_file(&mut inner, src, owned)?;
                link_or_copy(&self.blobs().join(&hex), &dir.join(name))?;
            }
        }
        let mut staged = StagedKernel {
            modules_dir: None,
            pin: None,
        };
        if let Some(modules) = &kernel.modules {
            let hex = self.intern_tree(&mut inner, modules, owned)?;
            *inner.pins.entry(hex.clone()).or_default() += 1;
            let tree = self.trees().join(&hex);
            // For people and scripts browsing the image dir; the record names the tree.
            std::os::unix::fs::symlink(&tree, dir.join(MODULES))
                .map_err(|e| OpError::io(format!("linking {}", dir.join(MODULES).display()), e))?;
            staged.modules_dir = Some(tree);
            staged.pin = Some(TreePin {
                shared: self.clone(),
                hex,
            });
        }
        self.save(&inner);
        Ok(staged)
    }

    /// Turns the files of a kernel-store staging directory into hardlinks of shared copies
    /// (moving them into the store when they are new).
    pub fn adopt(&self, dir: &Path) -> Result<(), OpError> {
        let mut inner = self.lock();
        self.ensure_dirs()?;
        for name in [VMLINUZ, VMLINUX, INITRD] {
            let p = dir.join(name);
            if p.is_file() {
                self.intern_file(&mut inner, &p, true)?;
            }
        }
        let m = dir.join(MODULES);
        if m.is_dir() {
            self.intern_tree(&mut inner, &m, true)?;
        }
        self.save(&inner);
        Ok(())
    }

    /// The blob holding `src`'s bytes, made if needed. An `owned` source (ours, immutable)
    /// becomes a hardlink of the blob; a user's file is copied and left alone.
    fn intern_file(&self, inner: &mut Inner, src: &Path, owned: bool) -> Result<String, OpError> {
        let meta = stat(src)?;
        let key = file_key(&meta);
        let known = inner
            .index
            .files
            .get(&key)
            .filter(|hex| self.blobs().join(hex).is_file())
            .cloned();
        let hex = match known {
            Some(hex) => hex,
            None => {
                let hex = if owned {
                    let hex = hex_of(&manifest::file_digest(src)?.0);
                    let blob = self.blobs().join(&hex);
                    if !blob.is_file() {
                        link_or_copy(src, &blob)?;
                        fsutil::fsync_dir(&self.blobs())?;
                    }
                    hex
                } else {
                    self.import_file(src)?
                };
                inner.index.files.insert(key, hex.clone());
                hex
            }
        };
        let blob = self.blobs().join(&hex);
        if owned && !same_inode(src, &blob) {
            replace_with_link(&blob, src)?;
        }
        inner
            .index
            .files
            .insert(file_key(&stat(&blob)?), hex.clone());
        Ok(hex)
    }

    /// The shared tree equal to `src`, made if needed; an `owned` `src` is rebuilt from
    /// hardlinks of the tree's files.
    fn intern_tree(&self, inner: &mut Inner, src: &Path, owned: bool) -> Result<String, OpError> {
        let fp = fingerprint(src)?;
        let known = inner
            .index
            .trees
            .get(&fp)
            .filter(|hex| self.trees().join(hex).is_dir())
            .cloned();
        let hex = match known {
            Some(hex) => hex,
            None => {
                let hex = if owned {
                    let hex = hex_of(&manifest::tree_digest(src)?.0);
                    let tree = self.trees().join(&hex);
                    if !tree.is_dir() {
                        let tmp = self.tmp_path();
                        link_tree(src, &tmp)?;
                        rename(&tmp, &tree)?;
                        fsutil::fsync_dir(&self.trees())?;
                    }
                    hex
                } else {
                    self.import_tree(src)?
                };
                inner.index.trees.insert(fp.clone(), hex.clone());
                hex
            }
        };
        let tree = self.trees().join(&hex);
        let tree_fp = fingerprint(&tree)?;
        if owned && fp != tree_fp {
            let tmp = src.with_file_name(format!("{TMP_PREFIX}{}", ids::new_id()));
            link_tree(&tree, &tmp)?;
            std::fs::remove_dir_all(src)
                .map_err(|e| OpError::io(format!("removing {}", src.display()), e))?;
            rename(&tmp, src)?;
        }
        inner.index.trees.insert(tree_fp, hex.clone());
        Ok(hex)
    }

    /// Copies a user's file into the blobs, hashing it on the way (one read): the copy is
    /// made durable and only then renamed to its digest, or dropped if that blob exists.
    fn import_file(&self, src: &Path) -> Result<String, OpError> {
        let tmp = Tmp(self.tmp_path());
        let (digest, _, copy) = copy_hashed(src, &tmp.0, &mut vec![0u8; COPY_CHUNK])?;
        let hex = hex_of(&digest);
        let blob = self.blobs().join(&hex);
        if !blob.is_file() {
            copy.sync_all()
                .map_err(|e| OpError::io(format!("fsync {}", tmp.0.display()), e))?;
            tmp.rename_to(&blob)?;
            fsutil::fsync_dir(&self.blobs())?;
        }
        Ok(hex)
    }

    /// [`Self::import_file`] for a modules tree: each file hashed as it is copied, the
    /// tree digest made of theirs exactly as [`manifest::tree_digest`] makes it.
    fn import_tree(&self, src: &Path) -> Result<String, OpError> {
        let tmp = Tmp(self.tmp_path());
        std::fs::create_dir(&tmp.0)
            .map_err(|e| OpError::io(format!("creating {}", tmp.0.display()), e))?;
        let mut copying = CopyingTree {
            to: &tmp.0,
            buf: vec![0u8; COPY_CHUNK],
        };
        let hex = hex_of(&tree_digest_with(src, &mut copying)?.0);
        let tree = self.trees().join(&hex);
        if !tree.is_dir() {
            // Durable before it takes its content address, with one `syncfs`: an fsync per
            // file costs seconds, and waiting for each file's writeback and then one commit
            // relies on a journal's commit order (measured slower, too). It also flushes
            // the rootfs being written beside it, which that file's own fsync does later.
            fsutil::syncfs(&tmp.0)?;
            tmp.rename_to(&tree)?;
            fsutil::fsync_dir(&self.trees())?;
        }
        Ok(hex)
    }

    fn tmp_path(&self) -> PathBuf {
        self.root.join(format!("{TMP_PREFIX}{}", ids::new_id()))
    }

    /// Best effort: a lost index only costs a re-hash.
    fn save(&self, inner: &Inner) {
        let Ok(body) = serde_json::to_vec(&inner.index) else {
            return;
        };
        let tmp = self.tmp_path();
        let result =
            std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, self.root.join(INDEX)));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(error = %e, "could not save the kernel-files index");
        }
    }

    /// Removes blobs nothing links to, trees nothing names, and temp leftovers. Returns
    /// the names removed.
    pub fn gc(&self, store: &Store) -> Result<Vec<String>, OpError> {
        let mut inner = self.lock();
        let named: HashSet<PathBuf> = store
            .list_images()?
            .into_iter()
            .filter_map(|i| i.modules_dir.map(PathBuf::from))
            .collect();
        let mut removed = Vec::new();
        let mut gone = HashSet::new();
        for entry in read_dir_or_empty(&self.root)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) {
                remove_any(&entry.path());
                removed.push(name);
            }
        }
        for entry in read_dir_or_empty(&self.blobs())? {
            let path = entry.path();
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.nlink() <= 1) {
                remove_any(&path);
                let hex = entry.file_name().to_string_lossy().into_owned();
                removed.push(format!("blobs/{hex}"));
                gone.insert(hex);
            }
        }
        for entry in read_dir_or_empty(&self.trees())? {
            let path = entry.path();
            let hex = entry.file_name().to_string_lossy().into_owned();
            if named.contains(&path) || inner.pins.contains_key(&hex) || any_linked(&path) {
                continue;
            }
            remove_any(&path);
            removed.push(format!("trees/{hex}"));
            gone.insert(hex);
        }
        if !gone.is_empty() {
            inner.index.files.retain(|_, hex| !gone.contains(hex));
            inner.index.trees.retain(|_, hex| !gone.contains(hex));
            self.save(&inner);
            tracing::info!(
                count = gone.len(),
                "removed kernel files no image or kernel uses"
            );
        }
        Ok(removed)
    }

    /// What an image's files occupy on disk: files it alone links are its own; files with
    /// other links, and the shared modules tree, are shared.
    pub fn usage(&self, image: &banger_api::image::Image) -> Usage {
        let mut usage = Usage::default();
        let mut files: Vec<PathBuf> = vec![
            image.rootfs_path.clone().into(),
            image.kernel_path.clone().into(),
        ];
        files.extend(image.initrd_path.clone().map(PathBuf::from));
        if let Some(dir) = &image.artifact_dir {
            files.push(Path::new(dir).join(VMLINUX));
        }
        let mut seen = HashSet::new();
        for f in files {
            if let Ok(m) = std::fs::symlink_metadata(&f)
                && m.is_file()
                && seen.insert((m.dev(), m.ino()))
            {
                let bytes = m.blocks() * 512;
                if m.nlink() > 1 {
                    usage.shared_bytes += bytes;
                } else {
                    usage.own_bytes += bytes;
                }
            }
        }
        if let Some(modules) = &image.modules_dir {
            let bytes = allocated(Path::new(modules));
            if Path::new(modules).starts_with(&self.root) {
                usage.shared_bytes += bytes;
            } else {
                usage.own_bytes += bytes;
            }
        }
        usage
    }
}

const COPY_CHUNK: usize = 1 << 20;

fn hex_of(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

/// A temp file or tree in the shared store, removed when dropped unless renamed.
struct Tmp(PathBuf);

impl Tmp {
    fn rename_to(mut self, to: &Path) -> Result<(), OpError> {
        rename(&self.0, to)?;
        self.0 = PathBuf::new();
        Ok(())
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            remove_any(&self.0);
        }
    }
}

/// Copies `src` to the new file `dst` (with `src`'s permissions, as `std::fs::copy`),
/// hashing the bytes on their way; returns the digest, the size and the open copy.
fn copy_hashed(
    src: &Path,
    dst: &Path,
    buf: &mut [u8],
) -> Result<(String, u64, std::fs::File), OpError> {
    let io = |e| OpError::io(format!("copying {} to {}", src.display(), dst.display()), e);
    let mut from = std::fs::File::open(src).map_err(io)?;
    let perms = from.metadata().map_err(io)?.permissions();
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io)?;
    let (digest, size) = digest_copying(&mut from, &mut to, buf).map_err(io)?;
    to.set_permissions(perms).map_err(io)?;
    Ok((digest, size, to))
}

/// Copies a tree into `to` as [`tree_digest_with`] walks it: directories before their
/// entries, symlinks as links, files hashed as they are copied.
struct CopyingTree<'a> {
    to: &'a Path,
    buf: Vec<u8>,
}

impl TreeVisitor for CopyingTree<'_> {
    type Error = OpError;

    fn dir(&mut self, rel: &str, _path: &Path) -> Result<(), OpError> {
        let dst = self.to.join(rel);
        std::fs::create_dir(&dst).map_err(|e| OpError::io(format!("creating {}", dst.display()), e))
    }

    fn link(&mut self, rel: &str, target: &Path) -> Result<(), OpError> {
        let dst = self.to.join(rel);
        std::os::unix::fs::symlink(target, &dst)
            .map_err(|e| OpError::io(format!("symlink {}", dst.display()), e))
    }

    fn file(&mut self, rel: &str, path: &Path) -> Result<(String, u64), OpError> {
        // A FIFO or a device has no place in a modules tree (and opening one could block).
        if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
            return Err(OpError::BadRequest(format!(
                "{} is not a regular file, a directory or a symlink; a modules tree holds only those",
                path.display()
            )));
        }
        let (digest, size, _) = copy_hashed(path, &self.to.join(rel), &mut self.buf)?;
        Ok((digest, size))
    }
}

fn stat(p: &Path) -> Result<std::fs::Metadata, OpError> {
    std::fs::metadata(p).map_err(|e| OpError::io(format!("stat {}", p.display()), e))
}

fn file_key(m: &std::fs::Metadata) -> String {
    format!(
        "{}:{}:{}:{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
    )
}

fn same_inode(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), OpError> {
    std::fs::rename(from, to).map_err(|e| {
        let _ = std::fs::remove_dir_all(from).or_else(|_| std::fs::remove_file(from));
        OpError::io(
            format!("renaming {} to {}", from.display(), to.display()),
            e,
        )
    })
}

/// A hardlink, or a copy when `to` is on another filesystem.
pub fn link_or_copy(from: &Path, to: &Path) -> Result<(), OpError> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::EXDEV) || e.raw_os_error() == Some(libc::EMLINK) =>
        {
            fsutil::copy_file(from, to)
        }
        Err(e) => Err(OpError::io(
            format!("linking {} to {}", from.display(), to.display()),
            e,
        )),
    }
}

/// Replaces `path` atomically by a hardlink of `blob` (same bytes, shared inode).
fn replace_with_link(blob: &Path, path: &Path) -> Result<(), OpError> {
    let tmp = path.with_file_name(format!("{TMP_PREFIX}{}", ids::new_id()));
    link_or_copy(blob, &tmp)?;
    rename(&tmp, path)
}

/// `to` as a copy of the tree `from` whose files are hardlinks of `from`'s.
fn link_tree(from: &Path, to: &Path) -> Result<(), OpError> {
    link_tree_unsynced(from, to)?;
    fsutil::syncfs(to)
}

fn link_tree_unsynced(from: &Path, to: &Path) -> Result<(), OpError> {
    let io = |what: &str, p: &Path, e| OpError::io(format!("{what} {}", p.display()), e);
    std::fs::create_dir(to).map_err(|e| io("creating", to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| io("reading", from, e))? {
        let entry = entry.map_err(|e| io("reading", from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| io("stat", &src, e))?;
        if kind.is_dir() {
            link_tree_unsynced(&src, &dst)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| io("readlink", &src, e))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| io("symlink", &dst, e))?;
        } else if kind.is_file() {
            link_or_copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Identity of a tree without reading its files: every file's path, type, inode, size
/// and mtime (directories by name only). Equal fingerprints mean the same inodes, hence (for our immutable trees and a
/// user's untouched ones) the same content.
fn fingerprint(root: &Path) -> Result<String, OpError> {
    let mut lines = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| OpError::io(format!("reading {}", dir.display()), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| OpError::io(format!("reading {}", dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{rel}/{name}");
            let m = std::fs::symlink_metadata(entry.path())
                .map_err(|e| OpError::io(format!("stat {}", entry.path().display()), e))?;
            if m.is_dir() {
                // A directory's inode and mtime are its own in every copy of a tree: only
                // its name counts.
                lines.push(format!("{path}\0dir\n"));
                stack.push((entry.path(), path));
                continue;
            }
            lines.push(format!(
                "{path}\0{:o}\0{}\0{}\0{}.{}\n",
                m.mode(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec()
            ));
        }
    }
    lines.sort();
    let mut h = Sha256::new();
    h.update(format!(
        "{}\n",
        std::fs::metadata(root).map(|m| m.dev()).unwrap_or(0)
    ));
    for l in &lines {
        h.update(l.as_bytes());
    }
    Ok(manifest::hex_digest(h))
}

fn read_dir_or_empty(dir: &Path) -> Result<Vec<std::fs::DirEntry>, OpError> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Ok(rd.flatten().collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(OpError::io(format!("reading {}", dir.display()), e)),
    }
}

fn remove_any(path: &Path) {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "could not remove unused kernel files");
    }
}

/// Whether any file of the tree has another link (the kernel store's copy of it).
fn any_linked(root: &Path) -> bool {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            match std::fs::symlink_metadata(entry.path()) {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) if m.is_file() && m.nlink() > 1 => return true,
                _ => {}
            }
        }
    }
    false
}

/// Allocated bytes of the files in a tree.
fn allocated(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            match std::fs::symlink_metadata(entry.path()) {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn tree(root: &Path) {
        std::fs::create_dir_all(root.join("kernel/fs/ext4")).expect("mkdir");
        std::fs::write(root.join("kernel/fs/ext4/ext4.ko"), vec![7u8; 3 << 20]).expect("write");
        std::fs::write(root.join("modules.order"), b"kernel/fs/ext4/ext4.ko\n").expect("write");
        std::fs::set_permissions(
            root.join("modules.order"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::fs::create_dir(root.join("empty")).expect("mkdir");
        std::os::unix::fs::symlink("kernel/fs", root.join("fs")).expect("symlink");
    }

    fn leftovers(shared: &SharedFiles) -> Vec<String> {
        std::fs::read_dir(shared.root())
            .expect("read")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TMP_PREFIX))
            .collect()
    }

    #[test]
    fn imports_hash_as_they_copy_with_the_stored_digests() {
        let d = tempfile::tempdir().expect("tempdir");
        let shared = SharedFiles::open(&d.path().join("state"));
        shared.ensure_dirs().expect("dirs");
        let src = d.path().join("modules");
        tree(&src);
        let hex = shared.import_tree(&src).expect("import");
        let copy = shared.trees().join(&hex);
        assert_eq!(hex_of(&manifest::tree_digest(&src).expect("digest").0), hex);
        assert_eq!(
            manifest::tree_digest(&copy).expect("digest"),
            manifest::tree_digest(&src).expect("digest")
        );
        let mode = std::fs::metadata(copy.join("modules.order"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_link(copy.join("fs")).expect("readlink"),
            PathBuf::from("kernel/fs")
        );
        assert!(copy.join("empty").is_dir());
        // Known content: the copy is dropped, the tree stays as it was.
        assert_eq!(shared.import_tree(&src).expect("again"), hex);

        let file = src.join("kernel/fs/ext4/ext4.ko");
        let blob = shared.import_file(&file).expect("import");
        assert_eq!(
            hex_of(&manifest::file_digest(&file).expect("digest").0),
            blob
        );
        assert_eq!(
            std::fs::read(shared.blobs().join(&blob)).expect("read"),
            std::fs::read(&file).expect("read")
        );
        assert_eq!(shared.import_file(&file).expect("again"), blob);
        assert!(leftovers(&shared).is_empty());
    }

    #[test]
    fn a_failed_import_leaves_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let shared = SharedFiles::open(&d.path().join("state"));
        shared.ensure_dirs().expect("dirs");
        let src = d.path().join("modules");
        tree(&src);
        let fifo = std::ffi::CString::new(
            src.join("kernel/pipe")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("path");
        // SAFETY: `fifo` is a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let err = shared.import_tree(&src).expect_err("a fifo");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(shared.import_file(&d.path().join("missing")).is_err());
        assert!(leftovers(&shared).is_empty());
        assert_eq!(std::fs::read_dir(shared.trees()).expect("read").count(), 0);
        assert_eq!(std::fs::read_dir(shared.blobs()).expect("read").count(), 0);
    }
}
