//! Streams a tar archive into an ext4 image with banger-ext4, in one pass.
//!
//! Usage: `tar2ext4 [--size BYTES] <input.tar | -> <output.img>`
//!
//! Handles regular files, directories, symlinks, hardlinks, character and block
//! devices, FIFOs, numeric owners, and PAX records (`SCHILY.xattr.*` xattrs and
//! sub-second `mtime`/`atime`/`ctime`). Used by `scripts/bench-ext4.sh`.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::error::Error;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use banger_ext4::{
    EntryKind, Ext4Writer, Metadata, Options, SizePolicy, Summary, Timestamp, Xattr,
};
use tar::EntryType;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tar2ext4: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> Box<dyn Error> {
    "usage: tar2ext4 [--size BYTES] <input.tar | -> <output.img>".into()
}

fn run() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let mut size = None;
    let mut positional = Vec::new();
    while let Some(a) = args.next() {
        if a == "--size" {
            let v = args.next().ok_or_else(usage)?;
            let v = v.to_str().ok_or_else(usage)?;
            size = Some(v.parse::<u64>().map_err(|e| format!("--size {v}: {e}"))?);
        } else if a == "-h" || a == "--help" {
            return Err(usage());
        } else {
            positional.push(PathBuf::from(a));
        }
    }
    let [input, output] = <[PathBuf; 2]>::try_from(positional).map_err(|_| usage())?;

    // Large buffered reads: the tar is consumed strictly sequentially.
    let reader: Box<dyn Read> = if input.as_os_str() == "-" {
        Box::new(BufReader::with_capacity(1 << 20, std::io::stdin().lock()))
    } else {
        let f = File::open(&input).map_err(|e| format!("open {}: {e}", input.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    let size = match size {
        Some(bytes) => SizePolicy::Exact(bytes),
        None => SizePolicy::Auto {
            min_bytes: 0,
            headroom_percent: 125,
        },
    };
    let summary = convert(reader, &output, size)?;
    println!("{summary:?}");
    Ok(())
}

/// Streams the tar in `reader` into a new image at `output`. Also used by the ext4
/// crate's QEMU test (included there with `#[path]`).
pub fn convert(reader: impl Read, output: &Path, size: SizePolicy) -> Result<Summary> {
    let options = Options {
        size,
        ..Default::default()
    };
    let mut writer = Ext4Writer::create(output, options)
        .map_err(|e| format!("create {}: {e}", output.display()))?;

    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_path = entry.path()?.into_owned();
        let Some(path) = clean_path(&raw_path) else {
            return Err(format!("refusing unsafe path {}", raw_path.display()).into());
        };
        let header = entry.header();
        let etype = header.entry_type();
        let link = entry.link_name()?.map(|l| l.into_owned());
        // Only device entries carry numbers; other headers may leave the fields blank.
        let (major, minor) = if matches!(etype, EntryType::Char | EntryType::Block) {
            (
                header.device_major()?.unwrap_or(0),
                header.device_minor()?.unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        let meta = metadata(&mut entry)?;
        let size = entry.size();

        if path.as_os_str().is_empty() {
            // `./` itself: the root directory's metadata.
            if etype.is_dir() {
                writer.add(&path, &meta, EntryKind::Directory)?;
            }
            continue;
        }
        // Missing parents are created by the writer; a later directory entry for them
        // just updates their metadata.
        let target: PathBuf;
        let kind = match etype {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => EntryKind::File {
                size,
                data: &mut entry,
            },
            EntryType::Directory => EntryKind::Directory,
            EntryType::Symlink => {
                target = link.ok_or("symlink without target")?;
                EntryKind::Symlink {
                    target: target.as_os_str(),
                }
            }
            EntryType::Link => {
                let raw = link.ok_or("hardlink without target")?;
                target = clean_path(&raw)
                    .ok_or_else(|| format!("unsafe hardlink target {}", raw.display()))?;
                EntryKind::Hardlink { target: &target }
            }
            EntryType::Char => EntryKind::CharDevice { major, minor },
            EntryType::Block => EntryKind::BlockDevice { major, minor },
            EntryType::Fifo => EntryKind::Fifo,
            other => {
                eprintln!(
                    "tar2ext4: skipping {} (entry type {other:?})",
                    path.display()
                );
                continue;
            }
        };
        writer
            .add(&path, &meta, kind)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(writer.finish()?)
}

/// Relative, normalized path (`./a/b` → `a/b`); `None` if it escapes with `..`.
fn clean_path(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Owner, permissions, times and xattrs of an entry (header plus PAX records).
fn metadata<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Metadata> {
    let header = entry.header();
    let mtime = Timestamp {
        sec: i64::try_from(header.mtime()?).unwrap_or(i64::MAX),
        nsec: 0,
    };
    let mut meta = Metadata {
        uid: u32::try_from(header.uid()?).map_err(|_| "uid out of range")?,
        gid: u32::try_from(header.gid()?).map_err(|_| "gid out of range")?,
        // Permission bits only; the file type comes from the entry type.
        mode: u16::try_from(header.mode()? & 0o7777).unwrap_or(0),
        mtime,
        atime: mtime,
        ctime: mtime,
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key()?;
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                meta.xattrs.push(Xattr {
                    name: name.as_bytes().to_vec(),
                    value: ext.value_bytes().to_vec(),
                });
            } else if let Some(slot) = match key {
                "mtime" => Some(&mut meta.mtime),
                "atime" => Some(&mut meta.atime),
                "ctime" => Some(&mut meta.ctime),
                _ => None,
            } && let Some(t) = std::str::from_utf8(ext.value_bytes())
                .ok()
                .and_then(parse_pax_time)
            {
                *slot = t;
            }
        }
    }
    Ok(meta)
}

/// PAX decimal seconds, e.g. `1700000000.123456789` or `-1.5`.
fn parse_pax_time(s: &str) -> Option<Timestamp> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = int.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut nsec: u32 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    // Negative times count the fraction towards the past.
    let sec = if int.starts_with('-') && nsec > 0 {
        nsec = 1_000_000_000 - nsec;
        sec - 1
    } else {
        sec
    };
    Some(Timestamp { sec, nsec })
}
