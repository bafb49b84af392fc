//! A VM's own disks: the copy-on-write upper disk and the work disk, both empty sparse
//! ext4 filesystems written by `banger-ext4` in milliseconds. Nothing of the image is
//! copied: the guest agent overlays the upper disk on the shared read-only base and seeds
//! the work disk from the image's `/root` on first boot.

use std::path::{Path, PathBuf};

use banger_api::vm::DiskUsage;
use banger_ext4::{Ext4Writer, Options, SizePolicy};
use banger_vmm::DiskFormat;

use crate::error::OpError;

/// File names inside a VM's directory.
pub const ROOT_DISK: &str = "root.ext4";
pub const WORK_DISK: &str = "work.ext4";

/// Writes an empty ext4 filesystem of `bytes` apparent size at `path`.
pub fn create_empty(path: &Path, bytes: u64, label: &str, seed: [u8; 16]) -> Result<(), OpError> {
    let opts = Options {
        size: SizePolicy::Exact(bytes),
        seed,
        volume_label: Some(label.chars().take(16).collect()),
        fs_time: u32::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
        .unwrap_or(u32::MAX),
        // Scratch disks never grow online; the reserve would cost 4 MiB each.
        online_resize: false,
        ..Options::default()
    };
    let writer = Ext4Writer::create(path, opts)
        .map_err(|e| OpError::Failed(format!("creating disk {}: {e}", path.display())))?;
    writer
        .finish()
        .map_err(|e| OpError::Failed(format!("writing disk {}: {e}", path.display())))?;
    Ok(())
}

/// Apparent and allocated bytes of a disk file (zeros when it does not exist).
pub fn usage(path: &Path) -> DiskUsage {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => DiskUsage {
            apparent_bytes: m.len(),
            allocated_bytes: m.blocks() * 512,
        },
        Err(_) => DiskUsage::default(),
    }
}

/// The names of a fork's disks: qcow2 overlays over its snapshot's copies.
pub const ROOT_OVERLAY: &str = "root.qcow2";
pub const WORK_OVERLAY: &str = "work.qcow2";

/// The two disk paths of a VM directory, for disks stored as `format`.
pub fn paths(vm_dir: &Path, format: DiskFormat) -> (PathBuf, PathBuf) {
    match format {
        DiskFormat::Raw => (vm_dir.join(ROOT_DISK), vm_dir.join(WORK_DISK)),
        DiskFormat::Qcow2 => (vm_dir.join(ROOT_OVERLAY), vm_dir.join(WORK_OVERLAY)),
    }
}

/// Writes the disk a qcow2 `overlay` shows (with its backing file) as a new sparse raw
/// file `raw` (`qemu-img convert`: only allocated data is read and written).
pub fn flatten(overlay: &Path, raw: &Path) -> Result<(), OpError> {
    qemu_img(
        &["convert", "-q", "-f", "qcow2", "-O", "raw", "-S", "4k"],
        &[overlay, raw],
        raw,
    )
}

/// Runs `qemu-img ARGS PATHS…`; `made` is the file it makes (for messages).
fn qemu_img(args: &[&str], paths: &[&Path], made: &Path) -> Result<(), OpError> {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .args(paths)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            OpError::Failed(format!(
                "running qemu-img to make {}: {e}: install the qemu-utils package",
                made.display()
            ))
        })?;
    if !out.status.success() {
        return Err(OpError::Failed(format!(
            "qemu-img could not make {}: {}",
            made.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Creates `overlay`, a qcow2 file whose unwritten blocks read from the raw `backing`
/// (`qemu-img create`): O(1), nothing is copied.
pub fn create_overlay(backing: &Path, overlay: &Path) -> Result<(), OpError> {
    qemu_img(
        &["create", "-q", "-f", "qcow2", "-F", "raw", "-b"],
        &[backing, overlay],
        overlay,
    )
}

/// A per-VM seed for filesystem UUIDs, from its id (16 hex digits).
pub fn seed_from_id(id: &str, salt: u8) -> [u8; 16] {
    let mut seed = [salt; 16];
    for (i, b) in id.bytes().enumerate().take(16) {
        seed[i] ^= b;
    }
    seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_disks_are_sparse_and_clean() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("d.ext4");
        create_empty(&path, 8 << 30, "root", seed_from_id("0123456789abcdef", 1)).expect("create");
        banger_testkit::tools::e2fsck_clean(&path);
        let u = usage(&path);
        assert_eq!(u.apparent_bytes, 8 << 30);
        assert!(
            u.allocated_bytes < 1 << 20,
            "an empty 8 GiB disk allocates {} bytes",
            u.allocated_bytes
        );
    }
}
