//! `manifest.json` of a stored kernel, and the checksums it records.
//!
//! The manifest is written inside the staging directory before the directory is
//! published by rename, so a reader never sees a kernel without its whole manifest.

use std::io::{Read, Write};
use std::path::Path;

use banger_api::kernel::KernelFile;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::OpError;

pub const MANIFEST: &str = "manifest.json";
pub const VMLINUZ: &str = "vmlinuz";
pub const VMLINUX: &str = "vmlinux";
pub const INITRD: &str = "initrd.img";
pub const MODULES: &str = "modules";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub name: String,
    pub version: Option<String>,
    /// The image's full version string.
    pub banner: Option<String>,
    pub arch: Option<String>,
    pub source: String,
    pub imported_at: String,
    pub files: Vec<KernelFile>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, OpError> {
        let path = dir.join(MANIFEST);
        let body = std::fs::read(&path)
            .map_err(|e| OpError::io(format!("reading {}", path.display()), e))?;
        serde_json::from_slice(&body)
            .map_err(|e| OpError::Failed(format!("{} is corrupt: {e}", path.display())))
    }

    /// Writes and fsyncs `manifest.json` in `dir` (a staging directory).
    pub fn write(&self, dir: &Path) -> Result<(), OpError> {
        let path = dir.join(MANIFEST);
        let body = serde_json::to_vec_pretty(self)
            .map_err(|e| OpError::Failed(format!("encoding the manifest: {e}")))?;
        let mut f = std::fs::File::create(&path)
            .map_err(|e| OpError::io(format!("creating {}", path.display()), e))?;
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .map_err(|e| OpError::io(format!("writing {}", path.display()), e))
    }
}

pub fn hex_digest(h: Sha256) -> String {
    let d = h.finalize();
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// sha256 and size of one file, streamed.
pub fn file_digest(path: &Path) -> Result<(String, u64), OpError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| OpError::io(format!("opening {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| OpError::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex_digest(h), total))
}

/// A digest of a directory tree: sorted entries, each `path\0type\0content-digest|target\n`.
/// Identical trees give identical digests whatever their mtimes or inode order.
pub fn tree_digest(root: &Path) -> Result<(String, u64, u64), OpError> {
    let mut lines = Vec::new();
    let (mut bytes, mut files) = (0u64, 0u64);
    walk(root, "", &mut lines, &mut bytes, &mut files)?;
    lines.sort();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l);
    }
    Ok((hex_digest(h), bytes, files))
}

fn walk(
    root: &Path,
    rel: &str,
    out: &mut Vec<Vec<u8>>,
    bytes: &mut u64,
    files: &mut u64,
) -> Result<(), OpError> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| OpError::io(format!("reading {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| OpError::io(format!("reading {}", dir.display()), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let kind = entry
            .file_type()
            .map_err(|e| OpError::io(format!("stat {}", entry.path().display()), e))?;
        let line = if kind.is_dir() {
            walk(root, &path, out, bytes, files)?;
            format!("{path}\0dir\0\n")
        } else if kind.is_symlink() {
            let target = std::fs::read_link(entry.path())
                .map_err(|e| OpError::io(format!("readlink {}", entry.path().display()), e))?;
            format!("{path}\0link\0{}\n", target.display())
        } else {
            let (digest, size) = file_digest(&entry.path())?;
            *bytes += size;
            *files += 1;
            format!("{path}\0file\0{digest}\n")
        };
        out.push(line.into_bytes());
    }
    Ok(())
}

/// Checksums of whatever of the four artifacts `dir` holds, in a fixed order.
pub fn describe_files(dir: &Path) -> Result<Vec<KernelFile>, OpError> {
    let mut files = Vec::new();
    for name in [VMLINUZ, VMLINUX, INITRD] {
        let p = dir.join(name);
        if p.is_file() {
            let (sha256, size_bytes) = file_digest(&p)?;
            files.push(KernelFile {
                name: name.into(),
                kind: "file".into(),
                sha256,
                size_bytes,
                file_count: None,
            });
        }
    }
    let m = dir.join(MODULES);
    if m.is_dir() {
        let (sha256, size_bytes, count) = tree_digest(&m)?;
        files.push(KernelFile {
            name: MODULES.into(),
            kind: "tree".into(),
            sha256,
            size_bytes,
            file_count: Some(count),
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_digest_ignores_order_and_sees_content() {
        let d = tempfile::tempdir().expect("tempdir");
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        for (root, order) in [(&a, ["x", "y"]), (&b, ["y", "x"])] {
            std::fs::create_dir_all(root.join("k")).expect("mkdir");
            for n in order {
                std::fs::write(root.join("k").join(n), n).expect("write");
            }
        }
        let da = tree_digest(&a).expect("a");
        assert_eq!(da, tree_digest(&b).expect("b"));
        assert_eq!((da.1, da.2), (2, 2));
        std::fs::write(b.join("k/x"), "changed").expect("write");
        assert_ne!(da.0, tree_digest(&b).expect("b").0);
    }
}
