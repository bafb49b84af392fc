//! The QEMU harness against a baseline image made by `mkfs.ext4 -d` (not our writer).

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use banger_testkit::qemu::GuestRun;
use banger_testkit::tools::{self, debugfs, e2fsck_clean, run};

/// `mkfs.ext4 -d DIR` into a fresh 64 MiB image next to `dir`.
fn mkfs_from(dir: &Path, name: &str) -> PathBuf {
    let img = dir.parent().expect("parent").join(name);
    run(tools::command("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(dir)
        .arg(&img)
        .arg("64M"));
    img
}

#[test]
fn script_reads_and_writes_baseline_image() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::write(root.join("etc/hello"), "world\n").expect("write");
    let img = mkfs_from(&root, "root.ext4");

    let result = GuestRun::new(&img)
        .script(
            r#"set -e
[ "$ROOT" = /mnt ] && [ "$(pwd)" = /mnt ]
[ "$(cat etc/hello)" = world ]
grep -q ' /mnt ext4 rw' /proc/mounts
echo written-by-guest > newfile
echo CHECK-OK
"#,
        )
        .run();
    result.assert_success();
    assert!(result.console.contains("CHECK-OK"), "{}", result.console);
    eprintln!("boot took {:?}", result.elapsed);

    e2fsck_clean(&img);
    assert_eq!(debugfs(&img, "cat /newfile"), "written-by-guest\n");
}

#[test]
fn exit_code_and_second_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::create_dir_all(&a).expect("mkdir a");
    std::fs::create_dir_all(&b).expect("mkdir b");
    std::fs::write(a.join("which"), "first\n").expect("write");
    std::fs::write(b.join("which"), "second\n").expect("write");
    let img_a = mkfs_from(&a, "a.ext4");
    let img_b = mkfs_from(&b, "b.ext4");

    let result = GuestRun::new(&img_a)
        .disk(&img_b, true)
        .script(
            r#"[ "$(cat which)" = first ] || exit 1
mkdir -p /tmp/b && mount -t ext4 -o ro /dev/vdb /tmp/b || exit 2
[ "$(cat /tmp/b/which)" = second ] || exit 3
umount /tmp/b
exit 7
"#,
        )
        .run();
    assert_eq!(result.exit_code, 7, "{}", result.console);
}

#[test]
fn switch_root_runs_image_init() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    for d in ["bin", "sbin", "dev", "proc"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy(tools::require("busybox"), root.join("bin/busybox")).expect("copy busybox");
    let init = root.join("sbin/test-init");
    std::fs::write(
        &init,
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t proc proc /proc\n\
         [ -c /dev/console ] && echo IMAGE-INIT-PID=$$\n\
         echo BANGER-GUEST-EXIT=0\n\
         /bin/busybox poweroff -f\n",
    )
    .expect("write init");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).expect("chmod init");
    let img = mkfs_from(&root, "root.ext4");

    let result = GuestRun::new(&img).switch_root("/sbin/test-init").run();
    result.assert_success();
    assert!(
        result.console.contains("IMAGE-INIT-PID=1"),
        "{}",
        result.console
    );
}

#[test]
fn initrd_modules_resolve_in_dependency_order() {
    let kernel = banger_testkit::qemu::Kernel::get();
    let names: Vec<String> = kernel
        .modules_for(&["virtio_mmio", "virtio_blk", "ext4"])
        .into_iter()
        .map(|(n, bytes)| {
            assert!(
                bytes.starts_with(b"\x7fELF"),
                "{n} is not a decompressed ELF"
            );
            n
        })
        .collect();
    let pos = |m: &str| names.iter().position(|n| n == m);
    // Whatever is modular must come after what it depends on.
    if let (Some(ring), Some(blk)) = (pos("virtio_ring"), pos("virtio_blk")) {
        assert!(ring < blk, "{names:?}");
    }
    if let (Some(virtio), Some(mmio)) = (pos("virtio"), pos("virtio_mmio")) {
        assert!(virtio < mmio, "{names:?}");
    }
    assert!(
        pos("virtio_blk").is_some() || kernel_builtin(kernel, "virtio_blk"),
        "{names:?}"
    );
}

fn kernel_builtin(kernel: &banger_testkit::qemu::Kernel, name: &str) -> bool {
    std::fs::read_to_string(kernel.modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .contains(&format!("/{name}.ko"))
}
