//! Shared helpers for the integration tests: layouts from crafted layers, flattening
//! into a host dir, and a tree snapshot to compare with `umoci unpack`.
#![allow(dead_code)]

use banger_oci::hostsink::HostDirSink;
use banger_oci::{CollectSink, Digest, LayerInput, Limits, flatten};
use banger_testkit::oci_image::{self, Compression, Layer};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub fn layer(tar: Vec<u8>) -> Layer {
    Layer {
        tar,
        compression: Compression::Gzip,
    }
}

/// Writes the layers to an OCI layout and returns flatten inputs pointing into it.
pub fn inputs(dir: &Path, layers: &[Layer]) -> Vec<LayerInput> {
    let w = oci_image::single(dir, "t", layers);
    w.layer_digests
        .iter()
        .zip(&w.diff_ids)
        .map(|(d, id)| LayerInput {
            path: dir.join("blobs/sha256").join(&d[7..]),
            digest: Digest::parse(d).unwrap(),
            diff_id: Some(Digest::parse(id).unwrap()),
            verified: false,
        })
        .collect()
}

pub fn collect(layers: Vec<Vec<u8>>) -> Result<CollectSink, banger_oci::Error> {
    let tmp = tempfile::tempdir().unwrap();
    let ls: Vec<Layer> = layers.into_iter().map(layer).collect();
    let ins = inputs(tmp.path(), &ls);
    let mut sink = CollectSink::default();
    flatten(&ins, &mut sink, &Limits::default())?;
    Ok(sink)
}

#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Option<i64>,
    pub detail: String,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: `c` is a valid C string; `buf` is writable for `buf.len()` bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let cn = std::ffi::CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: `c` and `cn` are valid C strings; `v` is writable for `v.len()` bytes.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        v.truncate(m.max(0) as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), v));
    }
    out.sort();
    out
}

/// path → node, plus hardlink groups (sets of paths sharing an inode).
pub fn snapshot(root: &Path) -> (BTreeMap<String, Node>, Vec<Vec<String>>) {
    let mut map = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let p = root.join(&r);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let rs = r.to_string_lossy().into_owned();
            let (kind, detail) = if ft.is_dir() {
                stack.push(r.clone());
                ("dir", String::new())
            } else if ft.is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&p)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                )
            } else if ft.is_file() {
                (
                    "file",
                    banger_testkit::oci_image::sha256(&std::fs::read(&p).unwrap()),
                )
            } else if ft.is_char_device() {
                ("char", format!("{:x}", m.rdev()))
            } else if ft.is_block_device() {
                ("block", format!("{:x}", m.rdev()))
            } else if ft.is_fifo() {
                ("fifo", String::new())
            } else {
                ("other", String::new())
            };
            if !ft.is_dir() && m.nlink() > 1 {
                inodes.entry(m.ino()).or_default().push(rs.clone());
            }
            map.insert(
                rs,
                Node {
                    kind: kind.into(),
                    mode: if ft.is_symlink() {
                        0
                    } else {
                        m.mode() & 0o7777
                    },
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime: if ft.is_dir() { None } else { Some(m.mtime()) },
                    detail,
                    xattrs: xattrs(&p),
                },
            );
        }
    }
    let mut groups: Vec<Vec<String>> = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    groups.sort();
    (map, groups)
}

/// Flattens `layers` into a host dir and asserts the tree equals `umoci unpack`'s.
pub fn assert_same_as_umoci(layers: Vec<Layer>) -> (BTreeMap<String, Node>, Vec<Vec<String>>) {
    assert!(
        banger_testkit::tools::is_root(),
        "umoci comparisons must run as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let ins = inputs(&layout, &layers);
    let reference = oci_image::umoci_unpack(&layout, "t", tmp.path());
    let ours = tmp.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    let mut sink = HostDirSink::new(&ours);
    flatten(&ins, &mut sink, &Limits::default()).unwrap();
    sink.finish().unwrap();
    let a = snapshot(&ours);
    let b = snapshot(&reference);
    for (k, v) in &a.0 {
        assert!(
            !k.rsplit('/').next().unwrap_or("").starts_with(".wh."),
            "whiteout leaked: {k}"
        );
        assert_eq!(Some(v), b.0.get(k), "path {k} differs from umoci");
    }
    for k in b.0.keys() {
        assert!(a.0.contains_key(k), "umoci has {k}, we don't");
    }
    assert_eq!(a.1, b.1, "hardlink groups differ");
    a
}

/// The request line's path and the (lower-cased) headers of one HTTP/1.1 request head read
/// from `s`, for the in-process fake registries; `None` when the client went away first.
pub async fn read_request_head(
    s: &mut tokio::net::TcpStream,
) -> Option<(String, std::collections::HashMap<String, String>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((path, headers))
}
