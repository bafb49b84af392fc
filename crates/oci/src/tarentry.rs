//! One tar header (after the tar crate has folded in PAX and GNU long-name records) →
//! a normalised, validated description. No I/O on the host happens here.

use crate::entry::{Metadata, Timestamp};

/// What a tar member means for the merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RawKind {
    Dir,
    File {
        size: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    Hardlink {
        target: String,
    },
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// `.wh.NAME`: delete `path` from lower layers.
    Whiteout,
    /// `.wh..wh..opq`: hide lower-layer content of directory `path`.
    Opaque,
    /// Records with no filesystem meaning (PAX global headers, aufs `.wh..wh.*` internals).
    Ignore,
}

#[derive(Clone, Debug)]
pub(crate) struct RawEntry {
    /// Normalised path; empty for the root directory.
    pub path: String,
    pub kind: RawKind,
    pub meta: Metadata,
}

impl RawKind {
    pub fn is_dir(&self) -> bool {
        matches!(self, RawKind::Dir)
    }
}

/// Lexically normalises an archive path: drops leading `/`, `./`, empty and `.`
/// components; rejects `..` (never resolved, so nothing can point above the root) and
/// non-UTF-8 names.
pub(crate) fn normalize(raw: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "path is not valid UTF-8".to_string())?;
    if s.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let mut out = String::with_capacity(s.len());
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("path contains a '..' component".into()),
            c => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    Ok(out)
}

/// Splits `a/b/c` into (`a/b`, `c`); the parent of a top-level name is `""`.
pub(crate) fn split_parent(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

fn pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let sec: i64 = sec.parse().ok()?;
    let mut nsec: u32 = 0;
    for (i, d) in frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .enumerate()
    {
        if !d.is_ascii_digit() {
            return None;
        }
        let _ = i;
        nsec = nsec * 10 + u32::from(d - b'0');
    }
    // "-1.5" means -1 s and -0.5 s; keep nsec non-negative.
    if s.starts_with('-') && nsec > 0 {
        return Some(Timestamp {
            sec: sec - 1,
            nsec: 1_000_000_000 - nsec,
        });
    }
    Some(Timestamp { sec, nsec })
}

fn pax_id(v: &[u8]) -> Result<u32, String> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| "invalid PAX uid/gid".to_string())
        .and_then(|n| u32::try_from(n).map_err(|_| format!("uid/gid {n} does not fit in 32 bits")))
}

/// Decodes the current member of `e`.
pub(crate) fn read_entry<R: std::io::Read>(e: &mut tar::Entry<'_, R>) -> Result<RawEntry, String> {
    let h = e.header();
    let et = h.entry_type();
    let raw_path = e.path_bytes().into_owned();
    let mut meta = Metadata {
        mode: h.mode().map_err(|x| format!("bad mode: {x}"))? & 0o7777,
        ..Metadata::default()
    };
    let uid = h.uid().map_err(|x| format!("bad uid: {x}"))?;
    let gid = h.gid().map_err(|x| format!("bad gid: {x}"))?;
    meta.uid = u32::try_from(uid).map_err(|_| format!("uid {uid} does not fit in 32 bits"))?;
    meta.gid = u32::try_from(gid).map_err(|_| format!("gid {gid} does not fit in 32 bits"))?;
    let mtime = h.mtime().map_err(|x| format!("bad mtime: {x}"))?;
    meta.mtime = Timestamp {
        sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        nsec: 0,
    };
    let mut atime = None;
    let mut ctime = None;
    let dev = (h.device_major(), h.device_minor());
    let link = e.link_name_bytes().map(|c| c.into_owned());
    let size = e.size();
    if let Some(pax) = e
        .pax_extensions()
        .map_err(|x| format!("bad PAX header: {x}"))?
    {
        for ext in pax {
            let ext = ext.map_err(|x| format!("bad PAX record: {x}"))?;
            let key = ext.key_bytes();
            let val = ext.value_bytes();
            match key {
                b"uid" => meta.uid = pax_id(val)?,
                b"gid" => meta.gid = pax_id(val)?,
                b"mtime" => meta.mtime = pax_time(val).ok_or("invalid PAX mtime")?,
                b"atime" => atime = Some(pax_time(val).ok_or("invalid PAX atime")?),
                b"ctime" => ctime = Some(pax_time(val).ok_or("invalid PAX ctime")?),
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        if name.is_empty() {
                            return Err("empty xattr name".into());
                        }
                        meta.xattrs.retain(|(n, _)| n.as_slice() != name);
                        meta.xattrs.push((name.to_vec(), val.to_vec()));
                    }
                }
            }
        }
    }
    meta.atime = atime.unwrap_or(meta.mtime);
    meta.ctime = ctime.unwrap_or(meta.mtime);
    let path = normalize(&raw_path)?;
    let (_, base) = split_parent(&path);
    if let Some(rest) = base.strip_prefix(".wh.") {
        let (parent, _) = split_parent(&path);
        if rest == ".wh..opq" {
            return Ok(RawEntry {
                path: parent.to_string(),
                kind: RawKind::Opaque,
                meta,
            });
        }
        if rest.starts_with(".wh.") {
            return Ok(RawEntry {
                path,
                kind: RawKind::Ignore,
                meta,
            });
        }
        if rest.is_empty() || rest == "." || rest == ".." {
            return Err(format!("invalid whiteout name {base:?}"));
        }
        let target = if parent.is_empty() {
            rest.to_string()
        } else {
            format!("{parent}/{rest}")
        };
        return Ok(RawEntry {
            path: target,
            kind: RawKind::Whiteout,
            meta,
        });
    }
    let devnum = |d: std::io::Result<Option<u32>>| -> Result<u32, String> {
        d.map_err(|x| format!("bad device number: {x}"))
            .map(|v| v.unwrap_or(0))
    };
    let kind = match et {
        tar::EntryType::Regular | tar::EntryType::Continuous => RawKind::File { size },
        tar::EntryType::Directory => RawKind::Dir,
        tar::EntryType::Symlink => {
            let t = link.ok_or("symlink without target")?;
            if t.is_empty() || t.contains(&0) {
                return Err("symlink target is empty or contains NUL".into());
            }
            RawKind::Symlink { target: t }
        }
        tar::EntryType::Link => {
            let t = normalize(&link.ok_or("hardlink without target")?)
                .map_err(|x| format!("hardlink target: {x}"))?;
            if t.is_empty() {
                return Err("hardlink to the root directory".into());
            }
            RawKind::Hardlink { target: t }
        }
        tar::EntryType::Char => RawKind::Char {
            major: devnum(dev.0)?,
            minor: devnum(dev.1)?,
        },
        tar::EntryType::Block => RawKind::Block {
            major: devnum(dev.0)?,
            minor: devnum(dev.1)?,
        },
        tar::EntryType::Fifo => RawKind::Fifo,
        tar::EntryType::XGlobalHeader => RawKind::Ignore,
        other => {
            return Err(format!(
                "unsupported tar entry type {:?}",
                other.as_byte() as char
            ));
        }
    };
    Ok(RawEntry { path, kind, meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_paths() {
        assert_eq!(normalize(b"./a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(normalize(b"/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(normalize(b"./").unwrap(), "");
        assert_eq!(normalize(b".").unwrap(), "");
        assert!(normalize(b"../x").is_err());
        assert!(normalize(b"a/../../x").is_err());
        assert!(normalize(b"a/\xff").is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            pax_time(b"12.5"),
            Some(Timestamp {
                sec: 12,
                nsec: 500_000_000
            })
        );
        assert_eq!(pax_time(b"12"), Some(Timestamp { sec: 12, nsec: 0 }));
        assert_eq!(
            pax_time(b"-1.25"),
            Some(Timestamp {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert_eq!(pax_time(b"x"), None);
    }
}
