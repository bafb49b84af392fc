//! Kernels: what `kernel.*` methods take and return.
//!
//! A stored kernel lives in `<state>/kernels/<name>/`: `vmlinuz` (compressed bzImage, what
//! QEMU boots) and/or `vmlinux` (uncompressed ELF, what Firecracker boots), optionally
//! `initrd.img` and `modules/`, plus `manifest.json` describing them.

use serde::{Deserialize, Serialize};

/// A kernel in the store. Optional fields are `null` where unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    pub name: String,
    /// Release read from the image itself (`6.1.0-28-cloud-amd64`).
    pub version: Option<String>,
    /// `amd64`, `arm64`, …
    pub arch: Option<String>,
    /// The kernel's directory in the store.
    pub dir: String,
    /// The file QEMU boots (`vmlinuz` when present, else `vmlinux`); images copy it.
    pub kernel_path: String,
    /// Compressed bzImage, if the kernel came as one.
    pub vmlinuz_path: Option<String>,
    /// Uncompressed ELF (extracted from the bzImage on import), for Firecracker.
    pub vmlinux_path: Option<String>,
    pub initrd_path: Option<String>,
    pub modules_dir: Option<String>,
    /// Where it came from: `files`, `deb:/path/pkg.deb`, `host:/boot/vmlinuz-…`,
    /// `oci:registry/repo@sha256:…`.
    pub source: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Checksums of the stored files (from the manifest).
    pub files: Vec<KernelFile>,
}

/// One stored file (or the modules tree) and its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFile {
    /// `vmlinuz`, `vmlinux`, `initrd.img` or `modules`.
    pub name: String,
    /// `file` or `tree`.
    pub kind: String,
    /// `sha256:<hex>` of the file; for `modules`, of a canonical listing of the tree
    /// (each entry's path, type and content digest or link target).
    pub sha256: String,
    /// Bytes (for a tree: the sum of its regular files).
    pub size_bytes: u64,
    /// Regular files in a tree; `null` for a file.
    pub file_count: Option<u64>,
}

/// `kernel.import`: exactly one of `kernel_path`, `deb_path` or `host`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelImportParams {
    pub name: String,
    /// A bzImage (`vmlinuz`) or an ELF `vmlinux`; absolute path.
    #[serde(default)]
    pub kernel_path: Option<String>,
    #[serde(default)]
    pub initrd_path: Option<String>,
    /// The contents of `/lib/modules/<version>`.
    #[serde(default)]
    pub modules_dir: Option<String>,
    /// A Debian/Ubuntu `linux-image-*.deb`, unpacked without installing it.
    #[serde(default)]
    pub deb_path: Option<String>,
    /// The running host's `/boot/vmlinuz-$(uname -r)`, initrd and modules.
    #[serde(default)]
    pub host: bool,
}

/// Names one kernel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelRef {
    pub kernel: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelDeleteParams {
    pub kernel: String,
    /// Delete even when registered images point at the kernel's files (they break).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelList {
    pub kernels: Vec<Kernel>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelDeleted {
    pub name: String,
    pub files_removed: bool,
    /// Managed images created with `--kernel-ref` this kernel: they keep their own copy.
    pub images_with_copies: Vec<String>,
    /// Registered images that pointed at the kernel's files (only with `force`): they
    /// need a new kernel.
    pub images_broken: Vec<String>,
}

/// `kernel.push`: a stored kernel to an OCI registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelPushParams {
    pub kernel: String,
    /// `registry/repository:tag`.
    #[serde(rename = "ref")]
    pub reference: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelPushed {
    pub kernel: String,
    /// The canonical reference pushed to.
    pub reference: String,
    pub manifest_digest: String,
    pub layer_digest: String,
    /// Compressed layer size.
    pub layer_bytes: u64,
}

/// `kernel.pull`: a kernel image from a registry or a local OCI layout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelPullParams {
    /// `registry/repository:tag`, `…@sha256:…`, `oci:DIR[:TAG]`, `oci-archive:FILE`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Defaults to a name derived from the reference (`reg/kernels:cloud` → `kernels-cloud`).
    #[serde(default)]
    pub name: Option<String>,
}

/// Annotations (manifest) and labels (config) of a kernel image.
pub mod annotations {
    pub const NAME: &str = "dev.banger.kernel.name";
    pub const VERSION: &str = "dev.banger.kernel.version";
    pub const ARCH: &str = "dev.banger.kernel.arch";
    /// Marks an image as a banger kernel.
    pub const KIND: &str = "dev.banger.kind";
    pub const KIND_KERNEL: &str = "kernel";
}
