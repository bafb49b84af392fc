//! The errors of module resolution and initramfs building.

use std::path::PathBuf;

use crate::cpio::CpioError;
use crate::decompress::DecompressError;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A module that is neither built into the kernel nor present in its modules tree.
    #[error(
        "kernel {release} lacks module {module}{needed} (not built in, not in {dir}): {hint}",
        release = .release.as_deref().unwrap_or("(release unknown)"),
        needed = .needed_by.as_ref().map(|by| format!(" needed by {by}")).unwrap_or_default(),
        dir = .modules_dir.display(),
        hint = missing_hint(.module, .needed_by.is_some()),
    )]
    MissingModule {
        /// The kernel release (`6.1.0-28-cloud-amd64`), when the tree tells it.
        release: Option<String>,
        module: String,
        /// The module that depends on the missing one; `None` when it was asked for.
        needed_by: Option<String>,
        modules_dir: PathBuf,
    },
    #[error("{action} {} failed: {source}", .path.display())]
    Io {
        /// What was being done: `reading module`, `writing initramfs`, ….
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("module file {} cannot be decompressed: {source}; reinstall the kernel's modules", .path.display())]
    Decompress {
        path: PathBuf,
        #[source]
        source: DecompressError,
    },
    #[error(
        "module file {} is not a kernel module ({reason}); reinstall the kernel's modules",
        .path.display()
    )]
    NotAModule { path: PathBuf, reason: String },
    #[error(
        "guest agent {} is not a regular file; build banger-agent (static) and point banger at it",
        .path.display()
    )]
    AgentNotAFile { path: PathBuf },
    #[error("building initramfs {}: {source}", .path.display())]
    Cpio {
        path: PathBuf,
        #[source]
        source: CpioError,
    },
}

impl KernelError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        KernelError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// What to do about a missing module: the kernel option that provides it.
fn missing_hint(module: &str, is_dependency: bool) -> String {
    if is_dependency {
        return "the modules tree is incomplete; reinstall the kernel's modules (or run depmod)"
            .into();
    }
    let feature = match module {
        "vmw_vsock_virtio_transport" | "vmw_vsock_virtio_transport_common" | "vsock" => {
            "virtio vsock support (CONFIG_VIRTIO_VSOCKETS)"
        }
        "virtio_console" => "virtio console support (CONFIG_VIRTIO_CONSOLE)",
        "virtio_mmio" => "virtio-mmio support (CONFIG_VIRTIO_MMIO)",
        "virtio_blk" => "virtio block support (CONFIG_VIRTIO_BLK)",
        "virtio_net" => "virtio network support (CONFIG_VIRTIO_NET)",
        "ext4" => "ext4 support (CONFIG_EXT4_FS)",
        "overlay" => "overlayfs support (CONFIG_OVERLAY_FS)",
        other => return format!("use a kernel that has {other} built in or as a module"),
    };
    format!("use a kernel with {feature}")
}
