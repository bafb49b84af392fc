//! Startup sweep: whatever a crashed or killed daemon left half-made is removed before the
//! socket opens, so clients never see it.

use std::collections::HashSet;
use std::path::Path;

use crate::store::Store;

/// Suffixes of in-progress work in the images dir.
pub const STAGING_SUFFIX: &str = ".staging";

/// Removes staging dirs, temp files and image dirs no record owns. Returns what it removed.
pub fn sweep_images_dir(images_dir: &Path, store: &Store) -> anyhow::Result<Vec<String>> {
    let owned: HashSet<String> = store.ids_owning_artifact_dirs()?.into_iter().collect();
    Ok(remove_unowned(images_dir, &owned)?)
}

/// Removes every entry of `dir` whose name is not in `owned` (a missing `dir` holds
/// nothing). Failures to remove one entry are logged, not fatal: the next start retries.
/// Returns the names removed.
pub fn remove_unowned(dir: &Path, owned: &HashSet<String>) -> std::io::Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if owned.contains(&name) {
            continue;
        }
        let path = entry.path();
        let result = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed leftover from an interrupted operation");
                removed.push(name);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove leftover")
            }
        }
    }
    Ok(removed)
}

/// Removes temp files of downloads a dead daemon left in the blob cache. Only complete,
/// verified blobs ever leave `tmp/`, so everything in it is garbage at start.
pub fn sweep_cache_tmp(oci_cache_dir: &Path) -> anyhow::Result<usize> {
    let tmp = oci_cache_dir.join("tmp");
    let entries = match std::fs::read_dir(&tmp) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove cache temp file")
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed partial downloads left in the blob cache");
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_api::image::Image;

    #[test]
    fn cache_temp_files_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).expect("mkdir");
        std::fs::write(dir.path().join("tmp/.tmpXYZ"), b"partial").expect("write");
        std::fs::write(dir.path().join("blobs/sha256/ab"), b"whole").expect("write");
        assert_eq!(sweep_cache_tmp(dir.path()).expect("sweep"), 1);
        assert!(dir.path().join("blobs/sha256/ab").exists());
        assert_eq!(
            sweep_cache_tmp(&dir.path().join("missing")).expect("sweep"),
            0
        );
    }

    #[test]
    fn keeps_owned_dirs_and_removes_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = dir.path();
        let store = Store::open_in_memory().expect("store");
        let owned = images.join("abc");
        std::fs::create_dir(&owned).expect("mkdir");
        store
            .insert_image(&Image {
                id: "abc".into(),
                name: "kept".into(),
                managed: true,
                artifact_dir: Some(owned.to_str().expect("utf8").into()),
                rootfs_path: "/x".into(),
                kernel_path: "/k".into(),
                initrd_path: None,
                modules_dir: None,
                kernel_ref: None,
                source_ref: None,
                manifest_digest: None,
                platform: None,
                size_bytes: None,
                allocated_bytes: None,
                created_at: "t".into(),
            })
            .expect("insert");
        std::fs::create_dir(images.join("def.staging")).expect("mkdir");
        std::fs::write(images.join("def.staging/rootfs.ext4"), b"x").expect("write");
        std::fs::create_dir(images.join("orphan")).expect("mkdir");
        std::fs::write(images.join(".tmp-123"), b"x").expect("write");
        let mut removed = sweep_images_dir(images, &store).expect("sweep");
        removed.sort();
        assert_eq!(removed, vec![".tmp-123", "def.staging", "orphan"]);
        assert!(owned.is_dir());
    }
}
