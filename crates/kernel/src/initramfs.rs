//! The per-VM guest initramfs: banger's static guest agent as `/init`, plus the kernel
//! modules it needs to reach its disks and its channel to the host.
//!
//! Layout (a `newc` archive, see [`crate::cpio`]):
//!
//! | path | what |
//! |---|---|
//! | `/dev /proc /sys /run /tmp /.banger` | empty mount points (`/tmp` is `1777`) |
//! | `/dev/console` | char device 5:1, so the kernel has a console before devtmpfs |
//! | `/init` | the agent binary, `0755` |
//! | `/lib/modules/banger/<name>.ko` | each needed module, decompressed |
//! | `/lib/modules/banger/order` | the module file names, one a line, dependencies first |
//!
//! The agent loads the modules listed in `order`, top to bottom, with `init_module`.

use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use crate::cpio::Newc;
use crate::error::KernelError;
use crate::modules::resolve_modules;

/// Where the modules go inside the initramfs.
pub const MODULES_DIR: &str = "lib/modules/banger";
/// The load-order file inside [`MODULES_DIR`].
pub const ORDER_FILE: &str = "lib/modules/banger/order";

/// Modules every guest needs: the virtio-mmio transport, block devices, ext4 (the root
/// image) and overlayfs (the writable layer over it).
const BASE_MODULES: [&str; 4] = ["virtio_mmio", "virtio_blk", "ext4", "overlay"];

/// The kernel modules a guest needs, before dependencies: `BASE_MODULES`, then the
/// agent channel's driver (`vmw_vsock_virtio_transport` for vsock, `virtio_console` for
/// a virtio serial port), then `virtio_net` when the VM has networking.
pub fn guest_modules(channel_vsock: bool, net: bool) -> Vec<&'static str> {
    let mut m = BASE_MODULES.to_vec();
    m.push(if channel_vsock {
        "vmw_vsock_virtio_transport"
    } else {
        "virtio_console"
    });
    if net {
        m.push("virtio_net");
    }
    m
}

/// What [`build_guest_initramfs`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsInfo {
    /// The modules included, in load order (empty when all are built in).
    pub modules: Vec<String>,
    /// Size of the archive.
    pub bytes: u64,
}

/// Writes the guest initramfs to `out`: `agent` as `/init`, and the modules `wanted`
/// (see [`guest_modules`]) with their dependencies from `modules_dir`
/// (`…/lib/modules/<release>`; `None` or a missing dir: everything is built in).
///
/// The archive is written to a temporary file beside `out`, synced, and renamed over
/// `out`, so `out` is either the old file or the complete new one.
pub fn build_guest_initramfs(
    agent: &Path,
    modules_dir: Option<&Path>,
    wanted: &[&str],
    out: &Path,
) -> Result<InitramfsInfo, KernelError> {
    let agent_meta =
        std::fs::metadata(agent).map_err(|e| KernelError::io("reading guest agent", agent, e))?;
    if !agent_meta.is_file() {
        return Err(KernelError::AgentNotAFile {
            path: agent.to_path_buf(),
        });
    }
    let mut agent_bytes = Vec::new();
    std::fs::File::open(agent)
        .and_then(|mut f| f.read_to_end(&mut agent_bytes))
        .map_err(|e| KernelError::io("reading guest agent", agent, e))?;
    let modules = resolve_modules(modules_dir, wanted)?;

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".initramfs-")
        .tempfile_in(&parent)
        .map_err(|e| KernelError::io("creating a temporary file in", &parent, e))?;
    let cpio_err = |source| KernelError::Cpio {
        path: out.to_path_buf(),
        source,
    };

    let mut cpio = Newc::new(BufWriter::new(tmp.as_file()));
    for (dir, perm) in [
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        (".banger", 0o700),
        ("lib", 0o755),
        ("lib/modules", 0o755),
        (MODULES_DIR, 0o755),
    ] {
        cpio.dir(dir, perm).map_err(cpio_err)?;
    }
    cpio.char_device("dev/console", 0o600, 5, 1)
        .map_err(cpio_err)?;
    cpio.file("init", 0o755, &agent_bytes).map_err(cpio_err)?;
    let mut order = String::new();
    for m in &modules {
        let file = format!("{}.ko", m.name);
        cpio.file(&format!("{MODULES_DIR}/{file}"), 0o644, &m.bytes)
            .map_err(cpio_err)?;
        order.push_str(&file);
        order.push('\n');
    }
    cpio.file(ORDER_FILE, 0o644, order.as_bytes())
        .map_err(cpio_err)?;
    let (writer, bytes) = cpio.finish().map_err(cpio_err)?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(|e| KernelError::io("writing initramfs", tmp.path(), e))?;
    tmp.persist(out)
        .map_err(|e| KernelError::io("renaming the new initramfs to", out, e.error))?;
    // The rename is durable once the directory is.
    std::fs::File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| KernelError::io("syncing directory", &parent, e))?;

    Ok(InitramfsInfo {
        modules: modules.into_iter().map(|m| m.name).collect(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_module_sets() {
        assert_eq!(
            guest_modules(true, false),
            [
                "virtio_mmio",
                "virtio_blk",
                "ext4",
                "overlay",
                "vmw_vsock_virtio_transport"
            ]
        );
        let serial_net = guest_modules(false, true);
        assert!(serial_net.contains(&"virtio_console") && serial_net.ends_with(&["virtio_net"]));
        assert!(!serial_net.contains(&"vmw_vsock_virtio_transport"));
    }

    #[test]
    fn writes_the_layout_without_modules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"\x7fELF agent").expect("agent");
        let out = dir.path().join("initramfs.cpio");
        std::fs::write(&out, b"old").expect("old");
        let info =
            build_guest_initramfs(&agent, None, &guest_modules(true, true), &out).expect("build");
        assert!(info.modules.is_empty());
        let archive = std::fs::read(&out).expect("read");
        assert_eq!(info.bytes, archive.len() as u64);
        let members = crate::cpio::tests::parse(&archive);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "proc",
                "sys",
                "run",
                "tmp",
                ".banger",
                "lib",
                "lib/modules",
                "lib/modules/banger",
                "dev/console",
                "init",
                "lib/modules/banger/order"
            ]
        );
        let init = &members[10];
        assert_eq!(init.mode, 0o100755);
        assert_eq!(init.data, b"\x7fELF agent");
        assert_eq!(members[9].mode, 0o020600);
        assert_eq!(members[9].rdev, (5, 1));
        assert!(members[11].data.is_empty());
        // Nothing left behind but the result.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn missing_agent_is_an_error_and_out_is_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("initramfs.cpio");
        std::fs::write(&out, b"old").expect("old");
        let err =
            build_guest_initramfs(&dir.path().join("nope"), None, &[], &out).expect_err("no agent");
        assert!(err.to_string().contains("nope"), "{err}");
        let err = build_guest_initramfs(dir.path(), None, &[], &out).expect_err("a dir");
        assert!(matches!(err, KernelError::AgentNotAFile { .. }), "{err}");
        assert_eq!(std::fs::read(&out).expect("read"), b"old");
    }
}
