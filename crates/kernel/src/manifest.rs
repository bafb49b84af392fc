//! `manifest.json` of a stored kernel: its schema, reading and writing it, and the
//! checksums it records.
//!
//! A stored kernel is a directory holding [`VMLINUZ`] and/or [`VMLINUX`], optionally
//! [`INITRD`] and a [`MODULES`] tree, and [`MANIFEST`]. Where that directory lives, when
//! it is published and who may delete it is the daemon's store policy, not this module's.
//! Callers write the manifest inside a staging directory before publishing it by rename,
//! so a reader never sees a kernel without its whole manifest.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST: &str = "manifest.json";
pub const VMLINUZ: &str = "vmlinuz";
pub const VMLINUX: &str = "vmlinux";
pub const INITRD: &str = "initrd.img";
pub const MODULES: &str = "modules";

/// A stored kernel's `manifest.json` (`schema` 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub name: String,
    pub version: Option<String>,
    /// The image's full version string.
    pub banner: Option<String>,
    pub arch: Option<String>,
    /// Where the kernel came from: `files:<path>`, `deb:<path>`, `host:<release>`, an
    /// OCI reference, ….
    pub source: String,
    /// RFC 3339.
    pub imported_at: String,
    pub files: Vec<FileRecord>,
}

/// One stored file (or the modules tree) and its checksum, as `manifest.json` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// [`VMLINUZ`], [`VMLINUX`], [`INITRD`] or [`MODULES`].
    pub name: String,
    /// `file` or `tree`.
    pub kind: String,
    /// `sha256:<hex>` of the file; for a tree, of [`tree_digest`]'s canonical listing.
    pub sha256: String,
    /// Bytes (for a tree: the sum of its regular files).
    pub size_bytes: u64,
    /// Regular files in a tree; `None` for a file.
    pub file_count: Option<u64>,
}

/// Why a manifest or a checksum could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// `reading`, `creating`, `opening`, …
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is corrupt: {source}", .path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding the manifest: {0}")]
    Encode(#[source] serde_json::Error),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ManifestError {
    let path = path.to_path_buf();
    move |source| ManifestError::Io {
        action,
        path,
        source,
    }
}

impl Manifest {
    /// Reads `dir`'s `manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST);
        let body = std::fs::read(&path).map_err(io("reading", &path))?;
        serde_json::from_slice(&body).map_err(|source| ManifestError::Corrupt { path, source })
    }

    /// Writes and fsyncs `manifest.json` in `dir` (a staging directory).
    pub fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join(MANIFEST);
        let body = serde_json::to_vec_pretty(self).map_err(ManifestError::Encode)?;
        let mut f = std::fs::File::create(&path).map_err(io("creating", &path))?;
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .map_err(io("writing", &path))
    }
}

/// `sha256:<hex>` of a finished hash.
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
pub fn file_digest(path: &Path) -> Result<(String, u64), ManifestError> {
    let mut f = std::fs::File::open(path).map_err(io("opening", path))?;
    let mut buf = vec![0u8; 1 << 20];
    digest_copying(&mut f, &mut std::io::sink(), &mut buf).map_err(io("reading", path))
}

/// sha256 (`sha256:<hex>`) and size of what `src` yields, each chunk also written to
/// `copy`: an import into a content-addressed store reads its source once, learning the
/// address as it copies. `buf` is the chunk buffer (reused across the files of a tree).
pub fn digest_copying(
    src: &mut impl Read,
    copy: &mut impl Write,
    buf: &mut [u8],
) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = match src.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        copy.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((hex_digest(h), total))
}

/// What a tree walk does at each entry besides listing it for [`tree_digest_with`]:
/// nothing but hashing files for [`tree_digest`], or copying the tree as it is hashed.
pub trait TreeVisitor {
    type Error: From<ManifestError>;
    /// A directory `rel` (at `path`), before any of its entries.
    fn dir(&mut self, rel: &str, path: &Path) -> Result<(), Self::Error> {
        let _ = (rel, path);
        Ok(())
    }
    /// A symlink `rel` pointing at `target`.
    fn link(&mut self, rel: &str, target: &Path) -> Result<(), Self::Error> {
        let _ = (rel, target);
        Ok(())
    }
    /// Any other entry `rel` (at `path`): its `sha256:<hex>` digest and size.
    fn file(&mut self, rel: &str, path: &Path) -> Result<(String, u64), Self::Error>;
}

/// Hashes each file and does nothing else.
struct Hashing(Vec<u8>);

impl TreeVisitor for Hashing {
    type Error = ManifestError;
    fn file(&mut self, _rel: &str, path: &Path) -> Result<(String, u64), ManifestError> {
        let mut f = std::fs::File::open(path).map_err(io("opening", path))?;
        digest_copying(&mut f, &mut std::io::sink(), &mut self.0).map_err(io("reading", path))
    }
}

/// A digest of a directory tree: sorted entries, each `path\0type\0content-digest|target\n`.
/// Identical trees give identical digests whatever their mtimes or inode order. Returns
/// the digest, the bytes and the number of regular files.
pub fn tree_digest(root: &Path) -> Result<(String, u64, u64), ManifestError> {
    tree_digest_with(root, &mut Hashing(vec![0u8; 1 << 20]))
}

/// [`tree_digest`], calling `visitor` at every entry of the walk (a directory before its
/// entries) and taking each file's digest from it.
pub fn tree_digest_with<V: TreeVisitor>(
    root: &Path,
    visitor: &mut V,
) -> Result<(String, u64, u64), V::Error> {
    let mut lines = Vec::new();
    let (mut bytes, mut files) = (0u64, 0u64);
    walk(root, "", visitor, &mut lines, &mut bytes, &mut files)?;
    lines.sort();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l);
    }
    Ok((hex_digest(h), bytes, files))
}

fn walk<V: TreeVisitor>(
    root: &Path,
    rel: &str,
    visitor: &mut V,
    out: &mut Vec<Vec<u8>>,
    bytes: &mut u64,
    files: &mut u64,
) -> Result<(), V::Error> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let entries = std::fs::read_dir(&dir).map_err(io("reading", &dir))?;
    for entry in entries {
        let entry = entry.map_err(io("reading", &dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let kind = entry.file_type().map_err(io("stat", &entry.path()))?;
        let line = if kind.is_dir() {
            visitor.dir(&path, &entry.path())?;
            walk(root, &path, visitor, out, bytes, files)?;
            format!("{path}\0dir\0\n")
        } else if kind.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(io("readlink", &entry.path()))?;
            visitor.link(&path, &target)?;
            format!("{path}\0link\0{}\n", target.display())
        } else {
            let (digest, size) = visitor.file(&path, &entry.path())?;
            *bytes += size;
            *files += 1;
            format!("{path}\0file\0{digest}\n")
        };
        out.push(line.into_bytes());
    }
    Ok(())
}

/// Checksums of whatever of the four artifacts `dir` holds, in a fixed order.
pub fn describe_files(dir: &Path) -> Result<Vec<FileRecord>, ManifestError> {
    let mut files = Vec::new();
    for name in [VMLINUZ, VMLINUX, INITRD] {
        let p = dir.join(name);
        if p.is_file() {
            let (sha256, size_bytes) = file_digest(&p)?;
            files.push(FileRecord {
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
        files.push(FileRecord {
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

    #[test]
    fn manifest_round_trips_in_the_stored_format() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join(VMLINUX), b"elf").expect("write");
        std::fs::create_dir(d.path().join(MODULES)).expect("mkdir");
        std::fs::write(d.path().join("modules/a.ko"), b"ko").expect("write");
        let m = Manifest {
            schema: 1,
            name: "k".into(),
            version: Some("6.1.0".into()),
            banner: None,
            arch: Some("x86_64".into()),
            source: "files:/k".into(),
            imported_at: "2026-01-01T00:00:00Z".into(),
            files: describe_files(d.path()).expect("describe"),
        };
        m.write(d.path()).expect("write");
        assert_eq!(Manifest::read(d.path()).expect("read"), m);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join(MANIFEST)).expect("read"))
                .expect("json");
        assert_eq!(json["files"][0]["name"], "vmlinux");
        assert_eq!(json["files"][0]["file_count"], serde_json::Value::Null);
        assert_eq!(json["files"][1]["kind"], "tree");
        assert_eq!(json["files"][1]["file_count"], 1);
        assert_eq!(json["files"][1]["size_bytes"], 2);
    }

    #[test]
    fn errors_name_the_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let missing = Manifest::read(d.path()).expect_err("missing");
        assert!(matches!(
            missing,
            ManifestError::Io {
                action: "reading",
                ..
            }
        ));
        std::fs::write(d.path().join(MANIFEST), b"{").expect("write");
        let corrupt = Manifest::read(d.path()).expect_err("corrupt").to_string();
        assert!(corrupt.contains("manifest.json is corrupt: "), "{corrupt}");
    }
}
