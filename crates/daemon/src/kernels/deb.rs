//! `kernel import --deb`: a Debian/Ubuntu `linux-image-*` package, unpacked without
//! installing it. A `.deb` is an `ar` archive (read here: it is a 60-byte header per
//! member) whose `data.tar.{xz,zst,gz}` holds `boot/vmlinuz-<release>` and
//! `lib/modules/<release>/` (or `usr/lib/modules/…` on merged-/usr releases). Only those
//! are extracted, and only below the staging directory: `..`, absolute targets through
//! symlinks, and device nodes are refused or skipped.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::OpError;

use super::decompress::{self, Compression};
use super::manifest::{MODULES, VMLINUX, VMLINUZ};
use super::{Staged, stage_kernel_file};

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
/// Where modules are unpacked before the right release is chosen.
const MODULES_TMP: &str = ".deb-modules";
const KERNEL_TMP: &str = ".deb-kernel";

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("not a Debian package (.deb): {0}")]
    NotADeb(String),
    #[error(
        "the package holds no kernel (no boot/vmlinuz-* or boot/vmlinux-*); is it a linux-image-* package? (Ubuntu's linux-modules-* packages hold only modules)"
    )]
    NoKernel,
    #[error("unsafe path {path:?} in the package: {reason}")]
    UnsafePath { path: String, reason: String },
    #[error("the package's data archive is damaged: {0}")]
    Corrupt(String),
}

impl From<DebError> for OpError {
    fn from(e: DebError) -> Self {
        OpError::BadRequest(e.to_string())
    }
}

/// Unpacks the kernel (and its modules) from `deb` into `staging`.
pub fn import(deb: &Path, staging: &Path) -> Result<Staged, OpError> {
    let io = |e| OpError::io(format!("reading {}", deb.display()), e);
    let mut file =
        File::open(deb).map_err(|e| OpError::io(format!("opening {}", deb.display()), e))?;
    let len = file.metadata().map_err(io)?.len();
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| DebError::NotADeb(format!("{} is too short", deb.display())))?;
    if &magic != AR_MAGIC {
        return Err(
            DebError::NotADeb(format!("{} has no ar archive header", deb.display())).into(),
        );
    }
    let mut offset = 8u64;
    let mut found = None;
    while offset + 60 <= len {
        let mut header = [0u8; 60];
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        file.read_exact(&mut header).map_err(io)?;
        if &header[58..60] != b"`\n" {
            return Err(DebError::NotADeb("damaged ar member header".into()).into());
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| DebError::NotADeb(format!("bad size of member {name:?}")))?;
        if name.starts_with("data.tar") {
            let mut member = File::open(deb).map_err(io)?;
            member.seek(SeekFrom::Start(offset + 60)).map_err(io)?;
            found = Some(unpack_data(
                &name,
                BufReader::new(member).take(size),
                staging,
            )?);
            break;
        }
        offset += 60 + size + (size % 2);
    }
    let release = found.ok_or_else(|| DebError::NotADeb("no data.tar member".into()))??;
    let kernel_tmp = staging.join(KERNEL_TMP);
    stage_kernel_file(&kernel_tmp, staging)?;
    std::fs::remove_file(&kernel_tmp)
        .map_err(|e| OpError::io(format!("removing {}", kernel_tmp.display()), e))?;
    let modules_tmp = staging.join(MODULES_TMP);
    let chosen = modules_tmp.join(&release);
    if chosen.is_dir() {
        std::fs::rename(&chosen, staging.join(MODULES))
            .map_err(|e| OpError::io(format!("moving {}", chosen.display()), e))?;
    }
    if modules_tmp.exists() {
        std::fs::remove_dir_all(&modules_tmp)
            .map_err(|e| OpError::io(format!("removing {}", modules_tmp.display()), e))?;
    }
    // stage_kernel_file wrote vmlinuz or vmlinux; nothing else to do here.
    debug_assert!(staging.join(VMLINUZ).exists() || staging.join(VMLINUX).exists());
    Ok(Staged {
        source: format!("deb:{}", deb.display()),
    })
}

/// Extracts the kernel to `KERNEL_TMP` and modules under `MODULES_TMP/<release>/`.
/// Returns the kernel's release (from its file name), or `NoKernel`.
fn unpack_data<R: Read + Send + 'static>(
    member: &str,
    r: R,
    staging: &Path,
) -> Result<Result<String, OpError>, OpError> {
    let compression = match member.rsplit('.').next() {
        Some("xz") => Compression::Xz,
        Some("gz") => Compression::Gzip,
        Some("zst") => Compression::Zstd,
        Some("tar") => Compression::None,
        _ => {
            return Err(OpError::BadRequest(format!(
                "unsupported data member {member:?} (banger reads data.tar, .xz, .gz and .zst)"
            )));
        }
    };
    let stream = decompress::reader(compression, r)
        .map_err(|e| OpError::BadRequest(format!("{member}: {e}")))?;
    let mut archive = tar::Archive::new(stream);
    let entries = archive
        .entries()
        .map_err(|e| DebError::Corrupt(e.to_string()))?;
    let mut release = None;
    let modules_root = staging.join(MODULES_TMP);
    let mut created: BTreeSet<PathBuf> = BTreeSet::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| DebError::Corrupt(e.to_string()))?;
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw).into_owned();
        let parts = components(&path)?;
        let kind = entry.header().entry_type();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        match parts.as_slice() {
            ["boot", file] if kind.is_file() => {
                let rel = file
                    .strip_prefix("vmlinuz-")
                    .or_else(|| file.strip_prefix("vmlinux-"));
                if let Some(rel) = rel {
                    if release.is_some() {
                        return Err(OpError::BadRequest(
                            "the package holds more than one kernel image".into(),
                        ));
                    }
                    let dest = staging.join(KERNEL_TMP);
                    write_file(&mut entry, &dest, 0o644)?;
                    release = Some(rel.to_string());
                }
            }
            ["lib" | "usr", ..] => {
                let rest: &[&str] = match parts.as_slice() {
                    ["lib", "modules", rest @ ..] => rest,
                    ["usr", "lib", "modules", rest @ ..] => rest,
                    _ => continue,
                };
                if rest.is_empty() {
                    continue;
                }
                let dest = modules_root.join(rest.join("/"));
                ensure_parents(&modules_root, &dest, &mut created)?;
                if kind.is_dir() {
                    make_dir(&dest, &mut created)?;
                } else if kind.is_file() {
                    let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
                    write_file(&mut entry, &dest, mode)?;
                } else if kind.is_symlink() {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    replace_with(&dest, |d| std::os::unix::fs::symlink(&target, d))?;
                } else if kind.is_hard_link() {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    let tparts = components(&target)?;
                    let tparts: Vec<&str> = tparts.iter().map(String::as_str).collect();
                    let trest: &[&str] = match tparts.as_slice() {
                        ["lib", "modules", rest @ ..] => rest,
                        ["usr", "lib", "modules", rest @ ..] => rest,
                        _ => {
                            return Err(DebError::UnsafePath {
                                path: path.clone(),
                                reason: format!("hardlink to {target:?} outside the modules"),
                            }
                            .into());
                        }
                    };
                    let source = modules_root.join(trest.join("/"));
                    let meta = std::fs::symlink_metadata(&source).map_err(|_| {
                        DebError::Corrupt(format!("hardlink {path:?} to missing {target:?}"))
                    })?;
                    if !meta.is_file() {
                        return Err(DebError::UnsafePath {
                            path: path.clone(),
                            reason: "hardlink to a non-file".into(),
                        }
                        .into());
                    }
                    replace_with(&dest, |d| std::fs::hard_link(&source, d))?;
                }
                // Devices and FIFOs have no business in a kernel package: skipped.
            }
            _ => {}
        }
    }
    Ok(release.ok_or_else(|| DebError::NoKernel.into()))
}

/// Normalised path components; `..` is an error.
fn components(path: &str) -> Result<Vec<String>, OpError> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(DebError::UnsafePath {
                    path: path.to_string(),
                    reason: "contains '..'".into(),
                }
                .into());
            }
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// Creates the parents of `dest` below `root`, refusing to pass through anything but
/// directories this unpack created (so no write can follow a symlink out).
fn ensure_parents(
    root: &Path,
    dest: &Path,
    created: &mut BTreeSet<PathBuf>,
) -> Result<(), OpError> {
    make_dir(root, created)?;
    let rel = dest.strip_prefix(root).unwrap_or(dest);
    let mut at = root.to_path_buf();
    let n = rel.components().count();
    for c in rel.components().take(n.saturating_sub(1)) {
        at.push(c);
        make_dir(&at, created)?;
    }
    Ok(())
}

fn make_dir(dir: &Path, created: &mut BTreeSet<PathBuf>) -> Result<(), OpError> {
    if created.contains(dir) {
        return Ok(());
    }
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(DebError::UnsafePath {
                path: dir.display().to_string(),
                reason: "a directory is also a file or symlink in the package".into(),
            }
            .into());
        }
        Err(_) => std::fs::create_dir(dir)
            .map_err(|e| OpError::io(format!("creating {}", dir.display()), e))?,
    }
    created.insert(dir.to_path_buf());
    Ok(())
}

/// Removes a non-directory at `dest` (a duplicate entry), then creates it with `make`.
fn replace_with(
    dest: &Path,
    make: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), OpError> {
    if let Ok(m) = std::fs::symlink_metadata(dest) {
        if m.is_dir() {
            return Err(DebError::UnsafePath {
                path: dest.display().to_string(),
                reason: "a file replaces a directory".into(),
            }
            .into());
        }
        std::fs::remove_file(dest)
            .map_err(|e| OpError::io(format!("removing {}", dest.display()), e))?;
    }
    make(dest).map_err(|e| OpError::io(format!("creating {}", dest.display()), e))
}

fn write_file(r: &mut dyn Read, dest: &Path, mode: u32) -> Result<(), OpError> {
    use std::os::unix::fs::OpenOptionsExt;
    replace_with(dest, |d| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(d)?;
        std::io::copy(r, &mut f)?;
        f.sync_all()
    })
}
