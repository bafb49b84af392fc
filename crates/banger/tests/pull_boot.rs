//! A pulled image boots: a real Debian kernel under QEMU (software emulation) switches
//! root into the `rootfs.ext4` that `banger image pull` wrote and runs the image's own
//! test init, which checks what the layers said — as the guest kernel sees it.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use banger_testkit::layers::{LayerBuilder, Member};
use banger_testkit::oci_image::{self, Compression, Layer};
use banger_testkit::qemu::{GuestRun, Kernel};
use banger_testkit::registry::Registry;
use banger_testkit::tools;
use common::TestEnv;

/// PID 1 of the guest. Busybox applets are called through `/bin/busybox` so nothing
/// depends on PATH or on applet links.
const TEST_INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
fail() { echo "CHECK FAILED: $1"; echo BANGER-GUEST-EXIT=1; $B sync; $B poweroff -f; }
[ "$($B cat /etc/hello)" = world ] || fail content
[ "$($B stat -c %u:%g /home/user/notes)" = 1000:1000 ] || fail owner
[ "$($B stat -c %a /home/user/notes)" = 600 ] || fail mode
[ "$($B stat -c %a /usr/bin/su)" = 4755 ] || fail setuid
[ -u /usr/bin/su ] || fail setuid-bit
[ -c /testdev/zero ] || fail chardev
[ "$($B stat -c %t,%T /testdev/zero)" = 1,5 ] || fail chardev-numbers
[ "$($B stat -c %i /h1)" = "$($B stat -c %i /h2)" ] || fail hardlink
[ "$($B stat -c %h /h1)" = 2 ] || fail hardlink-count
[ "$($B stat -c %i /t1)" != "$($B stat -c %i /t2)" ] || fail overwritten-link-split
[ "$($B cat /t1)" = "new content" ] || fail overwritten-content
[ "$($B cat /t2)" = "old content" ] || fail link-keeps-old-content
[ ! -e /etc/removed ] || fail whiteout
[ "$($B readlink /sbin-link)" = sbin ] || fail symlink
$B grep -q ' / ext4 rw' /proc/mounts || fail rw-root
echo "guest wrote this" > /root/written || fail write
$B sync
echo ALL-CHECKS-PASSED
echo BANGER-GUEST-EXIT=0
$B poweroff -f
"#;

fn bootable_layers() -> Vec<Layer> {
    let busybox = std::fs::read(tools::require("busybox")).expect("read busybox");
    let mut init = Member::new("sbin/test-init", b'0');
    init.mode = 0o755;
    init.data = TEST_INIT.as_bytes().to_vec();
    let mut bb = Member::new("bin/busybox", b'0');
    bb.mode = 0o755;
    bb.data = busybox;
    let base = LayerBuilder::new()
        .dir("bin", 0o755)
        .member(bb)
        .dir("sbin", 0o755)
        .member(init)
        .dir("proc", 0o555)
        .dir("dev", 0o755)
        .dir("root", 0o700)
        .file("etc/hello", b"world")
        .file("etc/removed", b"soon gone")
        .file_with("usr/bin/su", b"#!/bin/sh\n", 0o4755, 0, 0)
        .file_with("home/user/notes", b"mine", 0o600, 1000, 1000)
        .char_dev("testdev/zero", 1, 5)
        .file("h1", b"shared")
        .hardlink("h2", "h1")
        .file("t1", b"old content")
        .hardlink("t2", "t1")
        .symlink("sbin-link", "sbin")
        .finish();
    let top = LayerBuilder::new()
        .whiteout("etc/removed")
        .file("t1", b"new content")
        .finish();
    vec![
        Layer {
            tar: base,
            compression: Compression::Gzip,
        },
        Layer {
            tar: top,
            compression: Compression::Zstd,
        },
    ]
}

#[test]
fn pulled_image_boots_and_checks_itself() {
    let registry = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    oci_image::single(&layout, "v1", &bootable_layers());
    oci_image::skopeo_push(&layout, "v1", &registry.host(), "bootable", &[]);

    // The kernel travels through banger's kernel store, as users' kernels do.
    let kernel = Kernel::get();
    let env = TestEnv::new();
    env.ok(&[
        "kernel",
        "import",
        "debian-cloud",
        "--kernel",
        kernel.vmlinuz.to_str().expect("utf8"),
        "--modules",
        kernel.modules_dir.to_str().expect("utf8"),
    ]);
    let image = env.json(&[
        "image",
        "pull",
        &format!("{}/bootable:v1", registry.host()),
        "--kernel-ref",
        "debian-cloud",
    ]);
    assert_eq!(image["kernel_ref"], "debian-cloud");
    let dir = std::path::PathBuf::from(image["artifact_dir"].as_str().expect("artifact_dir"));
    assert_eq!(
        std::fs::read(dir.join("kernel")).expect("staged kernel"),
        std::fs::read(&kernel.vmlinuz).expect("kernel"),
        "the image carries the kernel it boots with"
    );
    assert!(dir.join("modules/kernel").is_dir(), "modules staged");

    // VMs get their own copy-on-write disk; the test boots a sparse copy so the image
    // itself stays pristine.
    let rootfs = image["rootfs_path"].as_str().expect("rootfs");
    let disk = work.path().join("vm-disk.ext4");
    tools::run(
        std::process::Command::new("cp")
            .args(["--sparse=always", rootfs])
            .arg(&disk),
    );

    let result = GuestRun::new(&disk).switch_root("/sbin/test-init").run();
    assert!(
        result.console.contains("ALL-CHECKS-PASSED"),
        "{}",
        tools::tail(&result.console, 40)
    );
    result.assert_success();
    eprintln!("guest boot and checks took {:?}", result.elapsed);

    tools::e2fsck_clean(&disk);
    assert_eq!(
        tools::debugfs(&disk, "cat /root/written"),
        "guest wrote this\n"
    );
    tools::e2fsck_clean(std::path::Path::new(rootfs));
}
