//! Images: what `image.*` methods take and return.

use serde::{Deserialize, Serialize};

/// An image as reported to clients. Optional fields are `null` where unknown, so scripts
/// can rely on every key being present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub name: String,
    /// Managed images live under the daemon's images dir and are deleted with the record;
    /// unmanaged (registered) images point at files the user owns.
    pub managed: bool,
    pub artifact_dir: Option<String>,
    pub rootfs_path: String,
    pub kernel_path: String,
    pub initrd_path: Option<String>,
    pub modules_dir: Option<String>,
    pub kernel_ref: Option<String>,
    pub source_ref: Option<String>,
    pub manifest_digest: Option<String>,
    pub platform: Option<String>,
    /// Apparent size of the root filesystem in bytes.
    pub size_bytes: Option<u64>,
    /// Bytes the root filesystem really occupies on disk (it is sparse).
    pub allocated_bytes: Option<u64>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// `image.show`: the image, and what its files occupy on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDetails {
    #[serde(flatten)]
    pub image: Image,
    pub disk: ImageDisk,
}

/// Allocated bytes of an image's files: its own, and those it shares with other images
/// or kernels (kernel files are stored once; a reused rootfs is one inode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDisk {
    pub own_bytes: u64,
    pub shared_bytes: u64,
}

/// Which kernel an image gets, in `image.register` and `image.pull`: `kernel_ref` (a kernel
/// from the store) XOR `kernel_path` with optional `initrd_path`/`modules_dir` (the daemon
/// decides and explains). Flattened into the params: on the wire these are top-level keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelChoice {
    // No `deny_unknown_fields` here: serde checks the keys of the params it is flattened
    // into, which do deny them.
    #[serde(default)]
    pub kernel_path: Option<String>,
    #[serde(default)]
    pub initrd_path: Option<String>,
    #[serde(default)]
    pub modules_dir: Option<String>,
    #[serde(default)]
    pub kernel_ref: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRegisterParams {
    pub name: String,
    pub rootfs_path: String,
    #[serde(flatten)]
    pub kernel: KernelChoice,
}

/// Names one image, by name or id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    pub image: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<Image>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageDeleted {
    pub id: String,
    pub name: String,
    /// True when files were removed (managed images only).
    pub files_removed: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePruneParams {
    /// Report what would be freed without removing anything.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachePruned {
    pub dry_run: bool,
    pub blobs: u64,
    pub bytes: u64,
    /// Blobs kept because a pull in flight holds them (pruned by a later run).
    #[serde(default)]
    pub in_use_blobs: u64,
    #[serde(default)]
    pub in_use_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull::ImagePullParams;

    #[test]
    fn kernel_fields_stay_top_level_keys() {
        let register = ImageRegisterParams {
            name: "dev".into(),
            rootfs_path: "/r".into(),
            kernel: KernelChoice {
                kernel_path: Some("/k".into()),
                ..KernelChoice::default()
            },
        };
        let json = serde_json::to_string(&register).unwrap();
        assert_eq!(
            json,
            r#"{"name":"dev","rootfs_path":"/r","kernel_path":"/k","initrd_path":null,"modules_dir":null,"kernel_ref":null}"#
        );
        let pull: ImagePullParams =
            serde_json::from_str(r#"{"ref":"debian","kernel_ref":"cloud","size_bytes":5}"#)
                .unwrap();
        assert_eq!(pull.kernel.kernel_ref.as_deref(), Some("cloud"));
        assert_eq!(pull.size_bytes, Some(5));
        let pull = serde_json::to_value(&pull).unwrap();
        let keys: Vec<&str> = pull
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            keys.contains(&"kernel_ref") && !keys.contains(&"kernel"),
            "{keys:?}"
        );
    }

    #[test]
    fn unknown_keys_are_still_refused() {
        for json in [
            r#"{"name":"dev","rootfs_path":"/r","kernel_pth":"/k"}"#,
            r#"{"name":"dev","rootfs_path":"/r","kernel":{"kernel_path":"/k"}}"#,
        ] {
            let err = serde_json::from_str::<ImageRegisterParams>(json).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{err}");
        }
        let err = serde_json::from_str::<ImagePullParams>(r#"{"ref":"x","bogus":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
    }
}
