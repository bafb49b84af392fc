//! Seeding the work disk from the image's `/root` on first boot.
//!
//! Entries already on the work disk win (the host may have put the user's files there
//! before the first boot): an existing file or link is left alone, an existing directory
//! is merged into without touching its metadata. Only the top directory takes the image's
//! `/root` owner, mode and times (a fresh ext4 root is `0755 root`, `/root` usually
//! `0700`). Copies keep mode (set after chown, which clears set-id bits), owner, times
//! and symlinks; device nodes and FIFOs are recreated. Hard links become separate files;
//! extended attributes are not copied.
//!
//! A failing entry is reported and skipped: one odd file must not stop every boot.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::sys;

/// Copies the tree at `src` into the directory `dst`; returns one message per entry that
/// could not be copied.
pub fn copy_tree(src: &Path, dst: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    match fs::symlink_metadata(src) {
        Ok(m) if m.is_dir() => {
            copy_children(src, dst, &mut problems);
            if let Err(e) = apply_metadata(dst, &m) {
                problems.push(format!("{}: {e}", dst.display()));
            }
        }
        Ok(_) => problems.push(format!("{}: not a directory, not copied", src.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => problems.push(format!("{}: {e}", src.display())),
    }
    problems
}

fn copy_children(src: &Path, dst: &Path, problems: &mut Vec<String>) {
    let entries = match fs::read_dir(src) {
        Ok(e) => e,
        Err(e) => return problems.push(format!("{}: {e}", src.display())),
    };
    for entry in entries {
        match entry {
            Ok(entry) => {
                let (from, to) = (entry.path(), dst.join(entry.file_name()));
                if let Err(e) = copy_entry(&from, &to, problems) {
                    problems.push(format!("{}: {e}", from.display()));
                }
            }
            Err(e) => problems.push(format!("{}: {e}", src.display())),
        }
    }
}

fn copy_entry(src: &Path, dst: &Path, problems: &mut Vec<String>) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let exists = fs::symlink_metadata(dst).ok();
    let ft = meta.file_type();
    if ft.is_dir() {
        match exists {
            Some(d) if d.is_dir() => {
                copy_children(src, dst, problems);
                return Ok(());
            }
            Some(_) => return Ok(()), // a non-directory of the user's: it wins
            None => {
                fs::create_dir(dst)?;
                copy_children(src, dst, problems);
            }
        }
    } else if exists.is_some() {
        return Ok(());
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else if ft.is_file() {
        copy_file(src, dst)?;
    } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() || ft.is_socket() {
        let p = sys::cpath(dst)?;
        // SAFETY: `p` is a valid C string; mode and dev come from the source's metadata.
        sys::cvt(unsafe { libc::mknod(p.as_ptr(), meta.mode(), meta.rdev()) })?;
    }
    apply_metadata(dst, &meta)
}

fn copy_file(src: &Path, dst: &Path) -> io::Result<()> {
    let mut from = fs::File::open(src)?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    io::copy(&mut from, &mut to)?;
    Ok(())
}

/// Owner, then mode (not for symlinks), then times, never following a symlink.
fn apply_metadata(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let p: CString = sys::cpath(path)?;
    // SAFETY: `p` is a valid C string.
    sys::cvt(unsafe { libc::lchown(p.as_ptr(), meta.uid(), meta.gid()) })?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: `p` is a valid C string and `times` an array of two timespecs.
    sys::cvt(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_a_tree_and_keeps_what_exists() {
        let src = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        let s = src.path();
        fs::create_dir_all(s.join("a/b")).expect("mkdir");
        fs::write(s.join("a/b/f"), b"hello").expect("write");
        fs::set_permissions(s.join("a/b/f"), fs::Permissions::from_mode(0o640)).expect("chmod");
        std::os::unix::fs::symlink("a/b/f", s.join("link")).expect("symlink");
        fs::write(s.join("mine"), b"image").expect("write");
        fs::write(dst.path().join("mine"), b"user").expect("write");
        fs::set_permissions(s, fs::Permissions::from_mode(0o700)).expect("chmod");

        let problems = copy_tree(s, dst.path());
        assert!(problems.is_empty(), "{problems:?}");
        let d = dst.path();
        assert_eq!(fs::read(d.join("a/b/f")).expect("read"), b"hello");
        let m = fs::metadata(d.join("a/b/f")).expect("stat");
        assert_eq!(m.mode() & 0o777, 0o640);
        assert_eq!(
            m.mtime(),
            fs::metadata(s.join("a/b/f")).expect("stat").mtime()
        );
        assert_eq!(
            fs::read_link(d.join("link")).expect("readlink"),
            Path::new("a/b/f")
        );
        assert_eq!(fs::read(d.join("mine")).expect("read"), b"user");
        assert_eq!(fs::metadata(d).expect("stat").mode() & 0o777, 0o700);
    }

    #[test]
    fn a_missing_source_copies_nothing() {
        let dst = tempfile::tempdir().expect("tempdir");
        assert!(copy_tree(&dst.path().join("nope"), dst.path()).is_empty());
    }
}
