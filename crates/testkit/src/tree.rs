//! Snapshots of a directory tree with everything an image must preserve — type, mode
//! (setuid/setgid/sticky), owner, size, content, link target, device numbers, xattrs,
//! hardlink grouping — so two trees (say, a loop-mounted `rootfs.ext4` and `umoci
//! unpack`'s rootfs) can be compared with one `assert_eq!`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// One entry, rendered as a line so diffs of failing comparisons are readable.
pub type Snapshot = BTreeMap<String, String>;

/// Walks `root` without following symlinks. Paths in `skip` (relative) are left out with
/// their subtrees (e.g. `lost+found`, which only filesystems have).
pub fn snapshot(root: &Path, skip: &[&str]) -> Snapshot {
    let mut out = Snapshot::new();
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    walk(root, root, skip, &mut out, &mut links);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    skip: &[&str],
    out: &mut Snapshot,
    links: &mut HashMap<(u64, u64), String>,
) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let rel = path
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        if skip.contains(&rel.as_str()) {
            continue;
        }
        let m = std::fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let ft = m.file_type();
        let perms = m.mode() & 0o7777;
        let mut line = String::new();
        let kind = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!(
                "symlink -> {}",
                std::fs::read_link(&path).expect("readlink").display()
            )
        } else if ft.is_file() {
            let data =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let hash: String = Sha256::digest(&data)
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("file size={} sha={hash} mtime={}", m.len(), m.mtime())
        } else if ft.is_char_device() {
            format!("char {}:{}", major(m.rdev()), minor(m.rdev()))
        } else if ft.is_block_device() {
            format!("block {}:{}", major(m.rdev()), minor(m.rdev()))
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else if ft.is_socket() {
            "socket".to_string()
        } else {
            "unknown".to_string()
        };
        line.push_str(&kind);
        if !ft.is_symlink() {
            line.push_str(&format!(" mode={perms:04o}"));
        }
        line.push_str(&format!(" owner={}:{}", m.uid(), m.gid()));
        let xattrs = xattrs(&path);
        if !xattrs.is_empty() {
            line.push_str(&format!(" xattrs={xattrs:?}"));
        }
        if !ft.is_dir() && m.nlink() > 1 {
            let first = links
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| rel.clone());
            line.push_str(&format!(" link-group={first}"));
        }
        out.insert(rel.clone(), line);
        if ft.is_dir() {
            walk(root, &path, skip, out, links);
        }
    }
}

fn major(rdev: u64) -> u64 {
    ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)
}

fn minor(rdev: u64) -> u64 {
    (rdev & 0xff) | ((rdev >> 12) & !0xff)
}

/// Extended attributes of a path (not following symlinks), sorted, values lossily shown.
pub fn xattrs(path: &Path) -> BTreeMap<String, String> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: `c` is NUL-terminated and `names` is a writable buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let mut out = BTreeMap::new();
    if n <= 0 {
        return out;
    }
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let cname = CString::new(name).expect("xattr name");
        let mut value = vec![0u8; 64 * 1024];
        // SAFETY: both strings are NUL-terminated; `value` is writable for its length.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len >= 0 {
            value.truncate(len as usize);
            out.insert(
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            );
        }
    }
    out
}

/// Loop-mounts an ext4 image read-only for the lifetime of the guard (root only): the
/// host kernel itself then reads what we wrote.
pub struct LoopMount {
    dir: tempfile::TempDir,
}

impl LoopMount {
    pub fn new(image: &Path) -> LoopMount {
        assert!(
            crate::tools::is_root(),
            "loop-mounting needs root (CI runs as root)"
        );
        let dir = tempfile::Builder::new()
            .prefix("banger-mnt-")
            .tempdir()
            .expect("tempdir");
        crate::tools::run(
            std::process::Command::new("mount")
                .args(["-t", "ext4", "-o", "loop,ro"])
                .arg(image)
                .arg(dir.path()),
        );
        LoopMount { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Asserts two snapshots are equal, printing only the differing paths.
pub fn assert_same(left_name: &str, left: &Snapshot, right_name: &str, right: &Snapshot) {
    let mut diffs = Vec::new();
    for (path, l) in left {
        match right.get(path) {
            Some(r) if r == l => {}
            Some(r) => diffs.push(format!(
                "  {path}\n    {left_name}: {l}\n    {right_name}: {r}"
            )),
            None => diffs.push(format!("  {path}: only in {left_name}: {l}")),
        }
    }
    for (path, r) in right {
        if !left.contains_key(path) {
            diffs.push(format!("  {path}: only in {right_name}: {r}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "trees differ ({} paths):\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
