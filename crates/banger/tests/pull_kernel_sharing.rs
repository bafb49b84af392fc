//! Kernel files are stored once: with the real Debian cloud kernel triple, a second image
//! of one kernel costs a directory entry, a warm pull takes milliseconds, and deleting the
//! kernel and the first image leaves the second intact and bootable.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_testkit::layers::LayerBuilder;
use banger_testkit::oci_image::{self, Compression, Layer};
use banger_testkit::qemu::Kernel;
use banger_testkit::tools;
use common::TestEnv;

/// Allocated bytes under `dir`, each inode once (what `du -s` reports).
fn du(dir: &Path) -> u64 {
    let out = tools::run_stdout(tools::command("du").args(["-s", "-B1"]).arg(dir));
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du output: {out}"))
}

fn timed_json(env: &TestEnv, args: &[&str]) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let v = env.json(args);
    (v, started.elapsed())
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

#[test]
fn kernel_files_are_shared_not_copied() {
    let kernel = Kernel::get();
    let env = TestEnv::new();
    let work = tempfile::tempdir().expect("tempdir");
    // Any file serves as the initrd here: only its sharing is under test.
    let initrd = work.path().join("initrd.img");
    std::fs::write(&initrd, banger_testkit::layers::noise(4 << 20, 9)).expect("initrd");
    let layout = work.path().join("layout");
    let layer = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hello", b"world")
        .finish();
    oci_image::single(
        &layout,
        "v1",
        &[Layer {
            tar: layer,
            compression: Compression::Gzip,
        }],
    );
    let source = format!("oci:{}:v1", layout.display());
    let (vmlinuz, modules) = (
        kernel.vmlinuz.to_str().expect("utf8"),
        kernel.modules_dir.to_str().expect("utf8"),
    );
    let initrd_s = initrd.to_str().expect("utf8");
    env.ok(&[
        "kernel",
        "import",
        "cloud",
        "--kernel",
        vmlinuz,
        "--initrd",
        initrd_s,
        "--modules",
        modules,
    ]);
    let state = env.state_dir();

    // First image of the kernel: converted.
    let first = env.json(&[
        "image",
        "pull",
        &source,
        "--name",
        "first",
        "--kernel-ref",
        "cloud",
    ]);
    let before = du(&state);
    // Second image, same digest, same kernel: a warm pull.
    let (second, took) = timed_json(
        &env,
        &[
            "image",
            "pull",
            &source,
            "--name",
            "second",
            "--kernel-ref",
            "cloud",
            "-q",
        ],
    );
    let added = du(&state).saturating_sub(before);
    eprintln!("warm pull with the Debian kernel triple: {took:?}, {added} bytes added");
    assert!(added < 1 << 20, "the second image added {added} bytes");

    // The same triple given as paths is imported once, by digest: no new copy either.
    env.json(&[
        "image",
        "pull",
        &source,
        "--name",
        "paths1",
        "--kernel",
        vmlinuz,
        "--initrd",
        initrd_s,
        "--modules",
        modules,
    ]);
    let before = du(&state);
    let (paths2, took) = timed_json(
        &env,
        &[
            "image",
            "pull",
            &source,
            "--name",
            "paths2",
            "--kernel",
            vmlinuz,
            "--initrd",
            initrd_s,
            "--modules",
            modules,
            "-q",
        ],
    );
    let added = du(&state).saturating_sub(before);
    eprintln!("warm pull with --kernel/--initrd/--modules paths: {took:?}, {added} bytes added");
    assert!(added < 1 << 20, "a warm pull by paths added {added} bytes");
    assert_eq!(
        paths2["modules_dir"], second["modules_dir"],
        "one modules tree"
    );
    let shared = state.join("kernel-files");
    assert_eq!(files_under(&shared.join("trees")), 1);
    // vmlinuz, the vmlinux the store extracted from it, and the initrd: once each.
    assert_eq!(files_under(&shared.join("blobs")), 3);

    // `image show` tells the shared bytes from the image's own.
    let shown = env.json(&["image", "show", "second"]);
    let shared_bytes = shown["disk"]["shared_bytes"]
        .as_u64()
        .expect("shared_bytes");
    let own_bytes = shown["disk"]["own_bytes"].as_u64().expect("own_bytes");
    let kernel_bytes = std::fs::metadata(&kernel.vmlinuz).expect("stat").len();
    assert!(
        shared_bytes > kernel_bytes + (50 << 20),
        "shared {shared_bytes}"
    );
    assert!(own_bytes < 1 << 20, "own {own_bytes}");

    // Deleting the kernel and the first image breaks nothing of the second.
    env.ok(&["kernel", "delete", "cloud"]);
    env.ok(&["image", "delete", "first"]);
    assert!(!Path::new(first["artifact_dir"].as_str().expect("dir")).exists());
    let kernel_path = PathBuf::from(second["kernel_path"].as_str().expect("kernel"));
    assert_eq!(
        std::fs::read(&kernel_path).expect("kernel of the second image"),
        std::fs::read(&kernel.vmlinuz).expect("vmlinuz")
    );
    let initrd_path = second["initrd_path"].as_str().expect("initrd");
    assert_eq!(
        std::fs::read(initrd_path).expect("initrd"),
        std::fs::read(&initrd).expect("initrd")
    );
    let modules_dir = PathBuf::from(second["modules_dir"].as_str().expect("modules"));
    let count = |dir: &Path| {
        tools::run_stdout(tools::command("find").arg(dir).args(["-type", "f"]))
            .lines()
            .count()
    };
    assert_eq!(count(&modules_dir), count(&kernel.modules_dir));
    // The second image really boots with its own (shared) kernel and modules: a banger VM
    // of it, whose agent reads the image's file back (the image has no tools of its own).
    env.ok(&[
        "vm", "create", "s", "--image", "second", "--cpus", "1", "--memory", "256MiB", "-q",
    ]);
    let back = work.path().join("back");
    std::fs::create_dir_all(&back).expect("mkdir");
    env.ok(&["vm", "cp", "s:/etc/hello", &format!("{}/", back.display())]);
    assert_eq!(
        std::fs::read(back.join("hello")).expect("copied back"),
        b"world"
    );
    let vm = env.json(&["vm", "show", "s"]);
    assert_eq!(vm["image"], "second", "{vm}");
    env.ok(&["vm", "delete", "s", "--force"]);

    // Nothing unreferenced stays: with every image gone, so are the shared files.
    for name in ["second", "paths1", "paths2"] {
        env.ok(&["image", "delete", name]);
    }
    assert_eq!(files_under(&shared.join("trees")), 0);
    assert_eq!(files_under(&shared.join("blobs")), 0);
}

#[test]
fn unreferenced_kernel_files_are_swept_at_start() {
    let env = TestEnv::new();
    env.ok(&["daemon", "start"]);
    env.ok(&["daemon", "stop"]);
    // What a daemon killed between "store the files" and "record the image" leaves.
    let shared = env.state_dir().join("kernel-files");
    std::fs::create_dir_all(shared.join("blobs")).expect("mkdir");
    std::fs::create_dir_all(shared.join("trees/abc/kernel")).expect("mkdir");
    std::fs::write(shared.join("blobs/0123"), b"orphan").expect("write");
    std::fs::write(shared.join("trees/abc/kernel/x.ko"), b"ko").expect("write");
    std::fs::write(shared.join(".tmp-1"), b"half").expect("write");
    env.ok(&["kernel", "list"]); // starts the daemon again
    assert_eq!(files_under(&shared.join("blobs")), 0, "orphan blob swept");
    assert_eq!(files_under(&shared.join("trees")), 0, "orphan tree swept");
    assert!(!shared.join(".tmp-1").exists());
}
