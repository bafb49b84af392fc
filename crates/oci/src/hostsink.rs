//! Debug/test sink: materialises the stream into a host directory (as root: owners,
//! device nodes, xattrs), so tests can diff the result against `umoci unpack`.
//! It never follows symlinks: every parent component is checked with `lstat`, and all
//! metadata calls use the no-follow variants. Point it only at a fresh temp directory.

use crate::entry::{Entry, EntryKind, EntrySink, Metadata, SinkError};
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub struct HostDirSink {
    root: PathBuf,
    /// Directory metadata is applied at `finish`, deepest first, because adding children
    /// would otherwise change the directories' mtimes again.
    dirs: Vec<(PathBuf, Metadata)>,
}

fn cstr(p: &Path) -> Result<CString, SinkError> {
    Ok(CString::new(p.as_os_str().as_bytes())?)
}

fn check(r: libc::c_int, what: &str, p: &Path) -> Result<(), SinkError> {
    if r != 0 {
        return Err(format!(
            "{what} {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(())
}

impl HostDirSink {
    pub fn new(root: impl Into<PathBuf>) -> HostDirSink {
        HostDirSink {
            root: root.into(),
            dirs: Vec::new(),
        }
    }

    /// Creates missing parents (mode 0755) without following symlinks; returns the full path.
    fn prepare(&self, rel: &str) -> Result<PathBuf, SinkError> {
        let mut cur = self.root.clone();
        let comps: Vec<&str> = rel.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(format!("parent {} is not a directory", cur.display()).into()),
                Err(_) => std::fs::create_dir(&cur)?,
            }
        }
        cur.push(comps[comps.len() - 1]);
        Ok(cur)
    }

    fn apply_meta(p: &Path, m: &Metadata, is_link: bool) -> Result<(), SinkError> {
        let c = cstr(p)?;
        // SAFETY: `c` is a valid NUL-terminated path; the calls take no other pointers we own.
        unsafe {
            check(libc::lchown(c.as_ptr(), m.uid, m.gid), "lchown", p)?;
            if !is_link {
                check(libc::chmod(c.as_ptr(), m.mode as libc::mode_t), "chmod", p)?;
            }
        }
        for (name, value) in &m.xattrs {
            let n = CString::new(name.clone())?;
            // SAFETY: valid C strings and a value slice that outlives the call.
            let r = unsafe {
                libc::lsetxattr(
                    c.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            check(r, "lsetxattr", p)?;
        }
        let ts = |t: crate::entry::Timestamp| libc::timespec {
            tv_sec: t.sec as libc::time_t,
            tv_nsec: t.nsec as _,
        };
        let times = [ts(m.atime), ts(m.mtime)];
        // SAFETY: `times` has the two elements utimensat reads.
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        check(r, "utimensat", p)
    }

    /// Applies directory metadata; call once after flattening.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        self.dirs
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (p, m) in std::mem::take(&mut self.dirs) {
            HostDirSink::apply_meta(&p, &m, false)?;
        }
        Ok(())
    }
}

impl EntrySink for HostDirSink {
    fn entry(&mut self, e: &Entry, data: Option<&mut dyn Read>) -> Result<(), SinkError> {
        let p = self.prepare(&e.path)?;
        let c = cstr(&p)?;
        let mknod = |mode: libc::mode_t, dev: libc::dev_t| -> Result<(), SinkError> {
            // SAFETY: valid C string.
            check(unsafe { libc::mknod(c.as_ptr(), mode, dev) }, "mknod", &p)
        };
        match &e.kind {
            EntryKind::Directory => {
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(format!("{} exists and is not a directory", p.display()).into());
                    }
                    Err(_) => std::fs::create_dir(&p)?,
                }
                self.dirs.retain(|(d, _)| *d != p);
                self.dirs.push((p, e.meta.clone()));
                return Ok(());
            }
            EntryKind::File { size } => {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&p)?;
                let r = data.ok_or("file without data")?;
                let n = std::io::copy(&mut r.take(*size), &mut f)?;
                if n != *size {
                    return Err(format!("short data for {}: {n} of {size}", p.display()).into());
                }
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &p)?;
                return HostDirSink::apply_meta(&p, &e.meta, true);
            }
            EntryKind::Hardlink { target } => {
                let t = cstr(&self.root.join(target))?;
                // SAFETY: valid C strings; flags 0 = do not follow a symlink target.
                let rc = unsafe {
                    libc::linkat(libc::AT_FDCWD, t.as_ptr(), libc::AT_FDCWD, c.as_ptr(), 0)
                };
                check(rc, "link", &p)?;
                return Ok(());
            }
            EntryKind::CharDevice { major, minor } => {
                mknod(libc::S_IFCHR, libc::makedev(*major, *minor))?
            }
            EntryKind::BlockDevice { major, minor } => {
                mknod(libc::S_IFBLK, libc::makedev(*major, *minor))?
            }
            EntryKind::Fifo => mknod(libc::S_IFIFO, 0)?,
            EntryKind::Socket => mknod(libc::S_IFSOCK, 0)?,
        }
        HostDirSink::apply_meta(&p, &e.meta, false)
    }

    fn remove(&mut self, path: &str) -> Result<(), SinkError> {
        let p = self.root.join(path);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p)?,
            Ok(_) => std::fs::remove_file(&p)?,
            Err(_) => {}
        }
        let prefix = p.clone();
        self.dirs.retain(|(d, _)| !d.starts_with(&prefix));
        Ok(())
    }
}
