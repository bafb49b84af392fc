//! A VM's own disks: the copy-on-write upper disk and the work disk, both empty sparse
//! ext4 filesystems written by `banger-ext4` in milliseconds. Nothing of the image is
//! copied: the guest agent overlays the upper disk on the shared read-only base and seeds
//! the work disk from the image's `/root` on first boot.

use std::path::{Path, PathBuf};

use banger_api::vm::DiskUsage;
use banger_ext4::{Ext4Writer, Options, SizePolicy};

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

/// The two disk paths of a VM directory.
pub fn paths(vm_dir: &Path) -> (PathBuf, PathBuf) {
    (vm_dir.join(ROOT_DISK), vm_dir.join(WORK_DISK))
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
