//! Filesystem helpers for staging and publishing artifacts durably.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::OpError;

/// Removes a directory tree when dropped, unless [`DirGuard::disarm`]ed: every early return
/// of a half-done operation cleans up without a line of code at the return site.
pub struct DirGuard {
    path: Option<PathBuf>,
}

impl DirGuard {
    pub fn new(path: PathBuf) -> Self {
        DirGuard { path: Some(path) }
    }

    /// Points the guard at the directory's new name after a rename.
    pub fn moved_to(&mut self, path: PathBuf) {
        self.path = Some(path);
    }

    pub fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take()
            && let Err(e) = std::fs::remove_dir_all(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "cleanup failed; the next daemon start sweeps it");
        }
    }
}

/// fsyncs a directory so a rename or a new entry in it survives a crash.
pub fn fsync_dir(dir: &Path) -> Result<(), OpError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| OpError::io(format!("fsync {}", dir.display()), e))
}

/// The one publication step of images and kernels: fsync the staged directory, then under
/// `lock` re-check that the name is free (`recheck`), remove a directory at `dest` that no
/// record owns (a crash's leftover), rename `staging` → `dest`, fsync the parent, and insert
/// the record (`insert`). `guard` follows the directory, so a failure at any step removes
/// it; on success it is disarmed. The long work happens before, outside the lock.
pub fn publish_dir(
    mut guard: DirGuard,
    staging: &Path,
    dest: &Path,
    lock: &std::sync::Mutex<()>,
    recheck: impl FnOnce() -> Result<(), OpError>,
    insert: impl FnOnce() -> Result<(), OpError>,
) -> Result<(), OpError> {
    fsync_dir(staging)?;
    let parent = dest.parent().unwrap_or(Path::new("/"));
    {
        let _publishing = lock.lock().unwrap_or_else(|e| e.into_inner());
        recheck()?;
        if dest.exists() {
            std::fs::remove_dir_all(dest)
                .map_err(|e| OpError::io(format!("removing stale {}", dest.display()), e))?;
        }
        std::fs::rename(staging, dest)
            .map_err(|e| OpError::io(format!("publishing {}", dest.display()), e))?;
        guard.moved_to(dest.to_path_buf());
        fsync_dir(parent)?;
        insert()?;
    }
    guard.disarm();
    Ok(())
}

/// Copies a file and fsyncs the copy.
pub fn copy_file(from: &Path, to: &Path) -> Result<(), OpError> {
    std::fs::copy(from, to)
        .map_err(|e| OpError::io(format!("copying {} to {}", from.display(), to.display()), e))?;
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| OpError::io(format!("fsync {}", to.display()), e))
}

/// Copies a directory tree (files, directories, symlinks as links), then makes it durable
/// with one `syncfs`: a modules tree has over a thousand files, and an fsync each costs
/// seconds.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), OpError> {
    copy_tree_unsynced(from, to)?;
    syncfs(to)
}

/// Flushes the whole filesystem holding `path` (one call for a tree of new files).
pub fn syncfs(path: &Path) -> Result<(), OpError> {
    let f = File::open(path).map_err(|e| OpError::io(format!("opening {}", path.display()), e))?;
    // SAFETY: syncfs takes any open descriptor of the filesystem; `f` outlives the call.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) } != 0 {
        return Err(OpError::io(
            format!("syncfs {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn copy_tree_unsynced(from: &Path, to: &Path) -> Result<(), OpError> {
    let io = |what: &str, p: &Path, e| OpError::io(format!("{what} {}", p.display()), e);
    std::fs::create_dir(to).map_err(|e| io("creating", to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| io("reading", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("reading", from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| io("stat", &src, e))?;
        if kind.is_dir() {
            copy_tree_unsynced(&src, &dst)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| io("readlink", &src, e))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| io("symlink", &dst, e))?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).map_err(|e| {
                OpError::io(format!("copying {} to {}", src.display(), dst.display()), e)
            })?;
        }
        // Sockets, FIFOs and devices have no place in a modules tree: skipped.
    }
    Ok(())
}

/// Bytes an unprivileged writer can still use on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is a valid out-pointer for statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Copies `from` to a new file `to` keeping its holes (see [`banger_vmm::copy_sparse`]).
pub fn copy_sparse(from: &Path, to: &Path) -> Result<(), OpError> {
    banger_vmm::copy_sparse(from, to)
        .map_err(|e| OpError::io(format!("copying {} to {}", from.display(), to.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_bytes_reads_the_filesystem() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(free_bytes(dir.path()).is_some_and(|b| b > 0));
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }

    #[test]
    fn guard_removes_unless_disarmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        std::fs::create_dir(&a).expect("mkdir");
        drop(DirGuard::new(a.clone()));
        assert!(!a.exists());
        std::fs::create_dir(&a).expect("mkdir");
        DirGuard::new(a.clone()).disarm();
        assert!(a.exists());
    }

    #[test]
    fn copy_tree_keeps_structure_and_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("kernel/fs")).expect("mkdir");
        std::fs::write(src.join("kernel/fs/ext4.ko"), b"ko").expect("write");
        std::os::unix::fs::symlink("kernel/fs/ext4.ko", src.join("link")).expect("symlink");
        let dst = dir.path().join("dst");
        copy_tree(&src, &dst).expect("copy");
        assert_eq!(
            std::fs::read(dst.join("kernel/fs/ext4.ko")).expect("read"),
            b"ko"
        );
        assert_eq!(
            std::fs::read_link(dst.join("link")).expect("readlink"),
            PathBuf::from("kernel/fs/ext4.ko")
        );
    }

    #[test]
    fn sparse_copies_keep_data_and_holes() {
        use std::io::{Seek, SeekFrom, Write};
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut f = File::create(&a).unwrap();
        f.set_len(1 << 30).unwrap();
        for at in [0u64, 5 << 20, (1 << 30) - 4096] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&[0xab; 4096]).unwrap();
        }
        drop(f);
        copy_sparse(&a, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let m = std::fs::metadata(&b).unwrap();
        assert_eq!(m.len(), 1 << 30);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "holes kept: {} bytes",
            m.blocks() * 512
        );
        assert!(copy_sparse(&a, &b).is_err(), "never overwrites");
    }
}
