//! The modules disk: every module of a kernel's modules tree, decompressed, on a small
//! read-only ext4 image that every VM of that kernel shares (attached as
//! [`banger_guest_proto::disks::MODULES`]). The guest agent mounts it at
//! `/lib/modules/<release>` and registers its own copy on the disk as the kernel's
//! `modprobe`, so the modules a workload asks for at run time (overlay, bridge, veth,
//! netfilter for Docker; anything the kernel requests by alias) load in any image,
//! with or without kmod, and cost nothing at boot.
//!
//! Layout:
//!
//! | path | what |
//! |---|---|
//! | `kernel/…/<name>.ko` | each module at its tree path, decompressed (`.ko`) |
//! | `modules.banger` | the index ([`banger_guest_proto::modindex`]) |
//! | `modules.builtin`, `modules.order` | copied from the tree when present |
//! | `banger-modprobe` | the agent binary (`0755`), run as `modprobe` |

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use banger_ext4::{EntryKind, Ext4Writer, Metadata, Options, SizePolicy};
use banger_guest_proto::modindex::{self, Entry, ModIndex};

use crate::error::KernelError;
use crate::modules::{ModuleIndex, modinfo};

/// What [`build_modules_disk`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulesDiskInfo {
    /// Modules on the disk.
    pub modules: usize,
    /// Aliases in its index.
    pub aliases: usize,
    /// Bytes of filesystem in use.
    pub used_bytes: u64,
}

/// Writes the modules disk of the tree `modules_dir` (`…/lib/modules/<release>`) to
/// `out`, with `agent` as its `modprobe`. `out` appears only once complete.
pub fn build_modules_disk(
    modules_dir: &Path,
    agent: &Path,
    out: &Path,
) -> Result<ModulesDiskInfo, KernelError> {
    let tree = ModuleIndex::load(modules_dir)?;
    let ext4 = |e: banger_ext4::Error| {
        KernelError::io("writing modules disk", out, std::io::Error::other(e))
    };
    let mut disk = Ext4Writer::create(
        out,
        Options {
            size: SizePolicy::Auto {
                min_bytes: 16 << 20,
                headroom_percent: 110,
            },
            seed: *b"banger-modules-1",
            volume_label: Some("banger-modules".into()),
            journal_blocks: Some(1024),
            ..Options::default()
        },
    )
    .map_err(ext4)?;
    let file_meta = |mode| Metadata {
        mode,
        ..Metadata::default()
    };
    let mut index = ModIndex::default();
    for (name, rel) in tree.modules() {
        let path = modules_dir.join(rel);
        let bytes = crate::modules::read_module(&path)?;
        let info = modinfo(&bytes).map_err(|reason| KernelError::NotAModule {
            path: path.clone(),
            reason,
        })?;
        let mut deps = Vec::new();
        for (key, value) in &info {
            match key.as_str() {
                "depends" => deps.extend(
                    value
                        .split(',')
                        .filter(|d| !d.trim().is_empty())
                        .map(modindex::normalize),
                ),
                "alias" => index.aliases.push((value.clone(), name.to_string())),
                _ => {}
            }
        }
        let on_disk = decompressed_path(rel);
        disk.add(
            &on_disk,
            &file_meta(0o644),
            EntryKind::File {
                size: bytes.len() as u64,
                data: &mut bytes.as_slice(),
            },
        )
        .map_err(ext4)?;
        index.modules.insert(
            name.to_string(),
            Entry {
                path: on_disk.to_string_lossy().into_owned(),
                deps,
            },
        );
    }
    index.builtin = tree.builtin().cloned().collect::<BTreeSet<_>>();
    let mut add_bytes = |name: &str, mode: u16, bytes: &[u8]| {
        disk.add(
            Path::new(name),
            &file_meta(mode),
            EntryKind::File {
                size: bytes.len() as u64,
                data: &mut &bytes[..],
            },
        )
        .map_err(ext4)
    };
    add_bytes(modindex::INDEX_FILE, 0o644, index.render().as_bytes())?;
    for copied in ["modules.builtin", "modules.order"] {
        match std::fs::read(modules_dir.join(copied)) {
            Ok(bytes) => add_bytes(copied, 0o644, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KernelError::io("reading", modules_dir.join(copied), e)),
        }
    }
    let agent_bytes =
        std::fs::read(agent).map_err(|e| KernelError::io("reading guest agent", agent, e))?;
    add_bytes(modindex::MODPROBE_FILE, 0o755, &agent_bytes)?;
    let summary = disk.finish().map_err(ext4)?;
    Ok(ModulesDiskInfo {
        modules: index.modules.len(),
        aliases: index.aliases.len(),
        used_bytes: summary.used_bytes,
    })
}

/// `kernel/fs/x.ko.zst` → `kernel/fs/x.ko`: files on the disk are decompressed.
fn decompressed_path(rel: &Path) -> PathBuf {
    let s = rel.to_string_lossy();
    let stem = [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| s.strip_suffix(ext));
    match stem {
        Some(stem) => PathBuf::from(format!("{stem}.ko")),
        None => rel.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_names_lose_their_compression_suffix() {
        assert_eq!(
            decompressed_path(Path::new("kernel/fs/overlay.ko.zst")),
            Path::new("kernel/fs/overlay.ko")
        );
        assert_eq!(
            decompressed_path(Path::new("kernel/a.ko")),
            Path::new("kernel/a.ko")
        );
    }
}
