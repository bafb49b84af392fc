//! The guest initramfs built for the real Debian cloud kernel, read back with GNU cpio.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use banger_kernel::{KernelError, build_guest_initramfs, guest_modules};

fn cpio(args: &[&str], archive: &std::path::Path, cwd: &std::path::Path) -> String {
    let out = Command::new("cpio")
        .args(args)
        .current_dir(cwd)
        .stdin(std::fs::File::open(archive).expect("open archive"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run cpio (GNU cpio is needed for this test)");
    assert!(
        out.status.success(),
        "cpio {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

#[test]
fn debian_cloud_kernel_initramfs_unpacks_with_agent_modules_and_order() {
    let kernel = banger_testkit::qemu::Kernel::get();
    let work = tempfile::tempdir().expect("tempdir");
    let agent = work.path().join("banger-agent");
    std::fs::write(&agent, b"\x7fELF pretend static agent").expect("agent");
    let out = work.path().join("initramfs.cpio");
    let wanted = guest_modules(true, true);
    let info = build_guest_initramfs(&agent, Some(&kernel.modules_dir), &wanted, &out)
        .expect("build initramfs");
    assert_eq!(info.bytes, std::fs::metadata(&out).expect("stat").len());
    assert!(
        info.modules
            .contains(&"vmw_vsock_virtio_transport".to_string())
    );
    assert!(info.modules.contains(&"virtio_net".to_string()));

    let listing = cpio(&["-t", "-v", "--quiet"], &out, work.path());
    let console = listing
        .lines()
        .find(|l| l.ends_with(" dev/console"))
        .unwrap_or_else(|| panic!("no dev/console in\n{listing}"));
    assert!(
        console.starts_with("crw-------") && console.contains("5,   1"),
        "{console}"
    );
    for dir in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        ".banger",
        "lib/modules/banger",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with('d') && l.ends_with(&format!(" {dir}"))),
            "{dir} missing from\n{listing}"
        );
    }

    // Unpack everything but the device node (mknod may be refused here).
    let root = work.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    cpio(
        &[
            "-i",
            "-d",
            "--no-absolute-filenames",
            "--quiet",
            "-f",
            "dev/console",
        ],
        &out,
        &root,
    );
    let init = std::fs::metadata(root.join("init")).expect("init");
    assert_eq!(init.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read(root.join("init")).expect("read init"),
        b"\x7fELF pretend static agent"
    );
    let tmp_mode = std::fs::metadata(root.join("tmp"))
        .expect("tmp")
        .permissions()
        .mode();
    assert_eq!(tmp_mode & 0o7777, 0o1777);

    let order = std::fs::read_to_string(root.join("lib/modules/banger/order")).expect("order");
    let files: Vec<&str> = order.lines().collect();
    let expected: Vec<String> = info.modules.iter().map(|m| format!("{m}.ko")).collect();
    assert_eq!(files, expected);
    for f in &files {
        let ko = std::fs::read(root.join("lib/modules/banger").join(f)).expect("module");
        assert!(ko.starts_with(b"\x7fELF"), "{f} is not an uncompressed ELF");
    }
    let shipped = std::fs::read_dir(root.join("lib/modules/banger"))
        .expect("ls")
        .count();
    assert_eq!(shipped, files.len() + 1, "modules plus the order file");

    // Same inputs, same bytes.
    let again = work.path().join("again.cpio");
    build_guest_initramfs(&agent, Some(&kernel.modules_dir), &wanted, &again).expect("rebuild");
    assert_eq!(
        std::fs::read(&out).expect("read"),
        std::fs::read(&again).expect("read")
    );
}

#[test]
fn a_kernel_without_the_channel_module_fails_before_writing() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = common::modules_dir(work.path(), "6.1.0-novsock");
    common::add_module(&dir, "kernel/drivers/char/virtio_console.ko", &[]);
    std::fs::write(
        dir.join("modules.builtin"),
        "kernel/drivers/virtio/virtio_mmio.ko\nkernel/drivers/block/virtio_blk.ko\n\
         kernel/fs/ext4/ext4.ko\nkernel/fs/overlayfs/overlay.ko\n",
    )
    .expect("builtin");
    let agent = work.path().join("agent");
    std::fs::write(&agent, b"agent").expect("agent");
    let out = work.path().join("initramfs.cpio");

    let info = build_guest_initramfs(&agent, Some(&dir), &guest_modules(false, false), &out)
        .expect("serial channel works");
    assert_eq!(info.modules, ["virtio_console"]);

    std::fs::remove_file(&out).expect("rm");
    let err = build_guest_initramfs(&agent, Some(&dir), &guest_modules(true, false), &out)
        .expect_err("no vsock");
    assert!(
        matches!(&err, KernelError::MissingModule { module, .. } if module == "vmw_vsock_virtio_transport"),
        "{err}"
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(work.path()).expect("ls").count(),
        2,
        "no temp file left"
    );
}
