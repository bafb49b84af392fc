//! Pulls survive what users do to the daemon's directories, show real progress bars on a
//! terminal (and plain lines elsewhere), and say exactly what to do when the disk is full.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use banger_testkit::layers::{LayerBuilder, noise};
use banger_testkit::oci_image::{self, Compression, Layer};
use banger_testkit::registry::Registry;
use banger_testkit::tools;
use common::{TestEnv, is_root};

fn one_layer(tar: Vec<u8>) -> Vec<Layer> {
    vec![Layer {
        tar,
        compression: Compression::Gzip,
    }]
}

fn layout_with(dir: &Path, name: &str, tar: Vec<u8>) -> String {
    let layout = dir.join(name);
    oci_image::single(&layout, "v1", &one_layer(tar));
    format!("oci:{}:v1", layout.display())
}

fn pull(env: &TestEnv, source: &str, name: &str) -> serde_json::Value {
    let f = env.fixture_files();
    env.json(&[
        "image",
        "pull",
        source,
        "--name",
        name,
        "--kernel",
        &f.p("vmlinux"),
    ])
}

#[test]
fn removed_cache_and_image_files_never_fail_a_pull() {
    let registry = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    for (tag, content) in [("v1", &b"one"[..]), ("v2", b"two"), ("v3", b"three")] {
        let layout = work.path().join(tag);
        let tar = LayerBuilder::new().file("etc/which", content).finish();
        oci_image::single(&layout, "t", &one_layer(tar));
        oci_image::skopeo_push(&layout, "t", &registry.host(), &format!("app-{tag}"), &[]);
    }
    let reference = |tag: &str| format!("{}/app-{tag}:t", registry.host());
    let env = TestEnv::new();
    pull(&env, &reference("v1"), "a");

    // `rm -rf ~/.cache/banger` under the running daemon, as the Go tool told users to.
    std::fs::remove_dir_all(env.path("cache")).expect("rm -rf cache");
    let b = pull(&env, &reference("v2"), "b");
    assert!(Path::new(b["rootfs_path"].as_str().expect("rootfs")).is_file());
    assert!(
        env.path("cache/banger/oci/blobs/sha256").is_dir() || env.path("cache/banger").is_dir()
    );
    env.ok(&["image", "cache", "prune"]);

    // Then every child of the images dir (and the shared kernel files).
    let state = env.state_dir();
    for entry in std::fs::read_dir(state.join("images"))
        .expect("ls images")
        .flatten()
    {
        std::fs::remove_dir_all(entry.path()).expect("rm image dir");
    }
    std::fs::remove_dir_all(state.join("kernel-files")).expect("rm kernel-files");
    // Same digest as "a" (whose rootfs is gone): rebuilt, not a failure.
    let c = pull(&env, &reference("v1"), "c");
    let rootfs = PathBuf::from(c["rootfs_path"].as_str().expect("rootfs"));
    tools::e2fsck_clean(&rootfs);
    assert_eq!(tools::debugfs(&rootfs, "cat /etc/which"), "one");
    // And the images dir itself.
    std::fs::remove_dir_all(state.join("images")).expect("rm images");
    pull(&env, &reference("v3"), "d");
}

/// Runs `banger ARGS` on a pseudo-terminal (util-linux `script`), returning what the
/// terminal received.
fn on_pty(env: &TestEnv, args: &[&str]) -> String {
    let mut line = String::from(env!("CARGO_BIN_EXE_banger"));
    for a in args {
        line.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
    }
    let mut cmd = std::process::Command::new(tools::require("script"));
    cmd.args(["-q", "-e", "-f", "-c", &line, "/dev/null"]);
    env.apply(&mut cmd);
    cmd.env("TERM", "xterm-256color").env("COLUMNS", "120");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "on a pty: {text}");
    text
}

#[test]
fn a_terminal_gets_progress_bars_and_a_pipe_plain_lines() {
    let work = tempfile::tempdir().expect("tempdir");
    let tar = LayerBuilder::new()
        .file("big", &noise(24 << 20, 3))
        .file("etc/hello", b"world")
        .finish();
    let source = layout_with(work.path(), "layout", tar);
    let env = TestEnv::new();
    let f = env.fixture_files();
    let kernel = f.p("vmlinux");

    let tty = on_pty(
        &env,
        &[
            "image", "pull", &source, "--name", "tty", "--kernel", &kernel,
        ],
    );
    assert!(tty.contains("Writing rootfs"), "{tty}");
    assert!(tty.contains("100%"), "no bar with a percentage: {tty:?}");
    assert!(tty.contains("[="), "no bar: {tty:?}");
    assert!(
        tty.contains('\x1b'),
        "a terminal gets redrawn bars: {tty:?}"
    );

    // Another digest: a reused rootfs would skip the conversion.
    let tar = LayerBuilder::new().file("etc/hello", b"pipe").finish();
    let other = layout_with(work.path(), "other", tar);
    let (_, stderr) = env.ok_with_stderr(&[
        "image", "pull", &other, "--name", "pipe", "--kernel", &kernel,
    ]);
    assert!(stderr.contains("Writing the root filesystem"), "{stderr}");
    assert!(stderr.contains("Done in"), "{stderr}");
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "control characters without a terminal: {stderr:?}"
    );
}

/// A tmpfs mounted for the test, unmounted however it ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mkdir");
        tools::run(
            tools::command("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(path),
        );
        Tmpfs(path.to_path_buf())
    }

    fn resize(&self, size: &str) {
        tools::run(
            tools::command("mount")
                .args(["-o", &format!("remount,size={size}")])
                .arg(&self.0),
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_says_where_how_much_and_what_to_do() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    // Compresses to almost nothing, so the early check passes and the writer fills up.
    let text: Vec<u8> = b"banger fills the disk. "
        .iter()
        .copied()
        .cycle()
        .take(48 << 20)
        .collect();
    let compressible = layout_with(
        work.path(),
        "text",
        LayerBuilder::new().file("usr/lib/big.a", &text).finish(),
    );
    // Incompressible and larger than the space: refused before writing.
    let random = layout_with(
        work.path(),
        "noise",
        LayerBuilder::new()
            .file("blob", &noise(40 << 20, 5))
            .finish(),
    );

    let env = TestEnv::new();
    let tmpfs = Tmpfs::mount(&env.state_home(), "24m");
    let f = env.fixture_files();
    let kernel = f.p("vmlinux");
    let images = env.state_dir().join("images");
    let images_s = images.to_string_lossy().into_owned();

    for source in [&compressible, &random] {
        let err = env.fails(&[
            "image", "pull", source, "--name", "full", "--kernel", &kernel,
        ]);
        assert!(
            err.contains(&format!("no space left in {images_s} ")),
            "names the directory: {err}"
        );
        assert!(
            err.contains("needs about") && err.contains("MiB is free"),
            "sizes: {err}"
        );
        assert!(
            err.contains("image cache prune")
                && err.contains("--size")
                && err.contains("--state-dir"),
            "what to do: {err}"
        );
        assert!(!err.contains("sink rejected"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&images)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert_eq!(env.json(&["image", "list"]), serde_json::json!([]));
    }
    // The big one needs about its 48 MiB.
    let err = env.fails(&[
        "image",
        "pull",
        &compressible,
        "--name",
        "full",
        "--kernel",
        &kernel,
    ]);
    assert!(
        err.contains("needs about 4") || err.contains("needs about 5"),
        "{err}"
    );

    tmpfs.resize("256m");
    let image = env.json(&[
        "image",
        "pull",
        &compressible,
        "--name",
        "fits",
        "--kernel",
        &kernel,
    ]);
    tools::e2fsck_clean(Path::new(image["rootfs_path"].as_str().expect("rootfs")));
    drop(env);
    drop(tmpfs);
}
