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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRegisterParams {
    pub name: String,
    pub rootfs_path: String,
    #[serde(default)]
    pub kernel_path: Option<String>,
    #[serde(default)]
    pub initrd_path: Option<String>,
    #[serde(default)]
    pub modules_dir: Option<String>,
    #[serde(default)]
    pub kernel_ref: Option<String>,
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
}
