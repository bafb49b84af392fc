//! Reading a Debian/Ubuntu `linux-image-*` package without installing it.
//!
//! A `.deb` is an `ar` archive (read here: a 60-byte header per member) whose
//! `data.tar{,.xz,.zst,.gz}` holds `boot/vmlinuz-<release>` and `lib/modules/<release>/`
//! (or `usr/lib/modules/…` on merged-/usr releases). Only those are extracted, and only
//! below the destinations given: `..`, hardlinks out of the modules, writes through
//! symlinks and directories replaced by files are refused; device nodes and FIFOs are
//! skipped.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::decompress::{self, Compression, DecompressError};

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
/// Where modules are unpacked (beside the modules destination) before the release of the
/// kernel is known.
const MODULES_SCRATCH: &str = ".deb-modules";

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("not a Debian package (.deb): {0}")]
    NotADeb(String),
    #[error(
        "the package holds no kernel (no boot/vmlinuz-* or boot/vmlinux-*); is it a linux-image-* package? (Ubuntu's linux-modules-* packages hold only modules)"
    )]
    NoKernel,
    #[error("the package holds more than one kernel image")]
    TwoKernels,
    #[error("unsupported data member {0:?} (banger reads data.tar, .xz, .gz and .zst)")]
    UnsupportedMember(String),
    #[error("{member}: {source}")]
    Decompress {
        member: String,
        #[source]
        source: DecompressError,
    },
    #[error("unsafe path {path:?} in the package: {reason}")]
    UnsafePath { path: String, reason: String },
    #[error("the package's data archive is damaged: {0}")]
    Corrupt(String),
    /// Reading the package or writing what it holds failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// `reading`, `creating`, `removing`, …
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DebError {
    let path = path.to_path_buf();
    move |source| DebError::Io {
        action,
        path,
        source,
    }
}

/// What [`unpack`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebKernel {
    /// The kernel's release, from its file name (`boot/vmlinuz-<release>`).
    pub release: String,
    /// The package had `lib/modules/<release>/`, now at the modules destination.
    pub modules: bool,
}

/// Unpacks the kernel image of `deb` to `kernel_out` and its `lib/modules/<release>/`
/// tree (if any) to `modules_out`. Modules of other releases are dropped. Scratch space
/// is `.deb-modules` beside `modules_out`, removed on success; unpack into a staging
/// directory that is removed on failure.
pub fn unpack(deb: &Path, kernel_out: &Path, modules_out: &Path) -> Result<DebKernel, DebError> {
    let mut file = File::open(deb).map_err(io("opening", deb))?;
    let len = file.metadata().map_err(io("reading", deb))?.len();
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| DebError::NotADeb(format!("{} is too short", deb.display())))?;
    if &magic != AR_MAGIC {
        return Err(DebError::NotADeb(format!(
            "{} has no ar archive header",
            deb.display()
        )));
    }
    let scratch = modules_out
        .parent()
        .unwrap_or(Path::new("."))
        .join(MODULES_SCRATCH);
    let mut offset = 8u64;
    let mut found = None;
    while offset + 60 <= len {
        let mut header = [0u8; 60];
        file.seek(SeekFrom::Start(offset))
            .map_err(io("reading", deb))?;
        file.read_exact(&mut header).map_err(io("reading", deb))?;
        if &header[58..60] != b"`\n" {
            return Err(DebError::NotADeb("damaged ar member header".into()));
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
            let mut member = File::open(deb).map_err(io("reading", deb))?;
            member
                .seek(SeekFrom::Start(offset + 60))
                .map_err(io("reading", deb))?;
            let data = BufReader::new(member).take(size);
            found = Some(unpack_data(&name, data, kernel_out, &scratch)?);
            break;
        }
        offset += 60 + size + (size % 2);
    }
    let release = found
        .ok_or_else(|| DebError::NotADeb("no data.tar member".into()))?
        .ok_or(DebError::NoKernel)?;
    let chosen = scratch.join(&release);
    let modules = chosen.is_dir();
    if modules {
        std::fs::rename(&chosen, modules_out).map_err(io("moving", &chosen))?;
    }
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(io("removing", &scratch))?;
    }
    Ok(DebKernel { release, modules })
}

/// Extracts the kernel to `kernel_out` and modules under `scratch/<release>/`. Returns
/// the kernel's release (from its file name), or `None` when there is no kernel.
fn unpack_data<R: Read + Send + 'static>(
    member: &str,
    r: R,
    kernel_out: &Path,
    scratch: &Path,
) -> Result<Option<String>, DebError> {
    let compression = match member.rsplit('.').next() {
        Some("xz") => Compression::Xz,
        Some("gz") => Compression::Gzip,
        Some("zst") => Compression::Zstd,
        Some("tar") => Compression::None,
        _ => return Err(DebError::UnsupportedMember(member.to_string())),
    };
    let stream = decompress::reader(compression, r).map_err(|source| DebError::Decompress {
        member: member.to_string(),
        source,
    })?;
    let mut archive = tar::Archive::new(stream);
    let entries = archive
        .entries()
        .map_err(|e| DebError::Corrupt(e.to_string()))?;
    let mut release = None;
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
                        return Err(DebError::TwoKernels);
                    }
                    write_file(&mut entry, kernel_out, 0o644)?;
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
                let dest = scratch.join(rest.join("/"));
                ensure_parents(scratch, &dest, &mut created)?;
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
                            });
                        }
                    };
                    let source = scratch.join(trest.join("/"));
                    let meta = std::fs::symlink_metadata(&source).map_err(|_| {
                        DebError::Corrupt(format!("hardlink {path:?} to missing {target:?}"))
                    })?;
                    if !meta.is_file() {
                        return Err(DebError::UnsafePath {
                            path: path.clone(),
                            reason: "hardlink to a non-file".into(),
                        });
                    }
                    replace_with(&dest, |d| std::fs::hard_link(&source, d))?;
                }
                // Devices and FIFOs have no business in a kernel package: skipped.
            }
            _ => {}
        }
    }
    Ok(release)
}

/// Normalised path components; `..` is an error.
fn components(path: &str) -> Result<Vec<String>, DebError> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(DebError::UnsafePath {
                    path: path.to_string(),
                    reason: "contains '..'".into(),
                });
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
) -> Result<(), DebError> {
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

fn make_dir(dir: &Path, created: &mut BTreeSet<PathBuf>) -> Result<(), DebError> {
    if created.contains(dir) {
        return Ok(());
    }
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(DebError::UnsafePath {
                path: dir.display().to_string(),
                reason: "a directory is also a file or symlink in the package".into(),
            });
        }
        Err(_) => std::fs::create_dir(dir).map_err(io("creating", dir))?,
    }
    created.insert(dir.to_path_buf());
    Ok(())
}

/// Removes a non-directory at `dest` (a duplicate entry), then creates it with `make`.
fn replace_with(
    dest: &Path,
    make: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), DebError> {
    if let Ok(m) = std::fs::symlink_metadata(dest) {
        if m.is_dir() {
            return Err(DebError::UnsafePath {
                path: dest.display().to_string(),
                reason: "a file replaces a directory".into(),
            });
        }
        std::fs::remove_file(dest).map_err(io("removing", dest))?;
    }
    make(dest).map_err(io("creating", dest))
}

fn write_file(r: &mut dyn Read, dest: &Path, mode: u32) -> Result<(), DebError> {
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
