//! Pulls that go wrong: the daemon killed mid-pull, the registry dying mid-pull, two pulls
//! of one name, Ctrl-C, a full disk. After each: no staging, no partial blob, no record,
//! and the next pull works.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::layers::{LayerBuilder, noise};
use banger_testkit::oci_image::{self, Compression, Layer};
use banger_testkit::registry::Registry;
use banger_testkit::{tools, wait};
use common::{TestEnv, wait_gone};

/// Pushes `tar` as the one uncompressed layer of `registry/repo:v1` (laid out in `work`).
fn push_one_layer(registry: &Registry, work: &Path, repo: &str, tar: Vec<u8>) {
    let layout = work.join(repo.replace('/', "-"));
    oci_image::single(
        &layout,
        "v1",
        &[Layer {
            tar,
            compression: Compression::None,
        }],
    );
    oci_image::skopeo_push(&layout, "v1", &registry.host(), repo, &[]);
}

/// A ~192 MiB single-layer image: big enough that a pull is still downloading or writing
/// when the test strikes.
fn push_big_image(registry: &Registry, work: &Path) {
    let tar = LayerBuilder::new()
        .file("blob-a", &noise(96 << 20, 1))
        .file("blob-b", &noise(96 << 20, 2))
        .finish();
    push_one_layer(registry, work, "big", tar);
}

fn staging_dirs(env: &TestEnv) -> Vec<PathBuf> {
    std::fs::read_dir(env.state_dir().join("images"))
        .map(|rd| {
            rd.map(|e| e.expect("entry").path())
                .filter(|p| p.to_string_lossy().ends_with(".staging"))
                .collect()
        })
        .unwrap_or_default()
}

/// Temp files in the blob cache (downloads in progress, or partial ones kept for resume).
fn cache_temp_files(env: &TestEnv) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(env.path("cache/banger/oci/tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Returns a probe that turns true once a download that was not there before has
/// written more than a MiB (a partial file kept from an earlier failure doesn't count).
fn new_download(env: &TestEnv) -> impl FnMut() -> bool + '_ {
    let before: Vec<PathBuf> = cache_temp_files(env).into_iter().map(|(p, _)| p).collect();
    move || {
        cache_temp_files(env)
            .iter()
            .any(|(p, len)| !before.contains(p) && *len > 1 << 20)
    }
}

fn assert_clean(env: &TestEnv) {
    assert!(
        staging_dirs(env).is_empty(),
        "staging left: {:?}",
        staging_dirs(env)
    );
    let blobs = env.path("cache/banger/oci/blobs/sha256");
    for e in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
        let data = std::fs::read(e.path()).expect("read blob");
        assert_eq!(
            &oci_image::sha256(&data)[7..],
            e.file_name().to_string_lossy(),
            "a cached blob is partial or corrupt"
        );
    }
}

fn spawn_pull(env: &TestEnv, reference: &str, name: &str, kernel: &str) -> Child {
    env.banger_cmd(&[
        "image", "pull", reference, "--name", name, "--kernel", kernel,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn banger")
}

/// Waits for the CLI; returns whether it succeeded and its stderr, prefixed with the
/// exit status so a death by signal shows in assertion messages.
fn stderr_of(child: Child) -> (bool, String) {
    let out = child.wait_with_output().expect("wait");
    let text = format!("[{}] {}", out.status, String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn failures_mid_pull_leave_nothing_half_made() {
    let mut registry = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    push_big_image(&registry, work.path());
    let reference = format!("{}/big:v1", registry.host());
    let env = TestEnv::new();
    let f = env.fixture_files();
    let kernel = f.p("vmlinux");

    // 1. kill -9 of the daemon while it downloads.
    env.ok(&["daemon", "start"]);
    let daemon = env.daemon_pid();
    let downloading = new_download(&env);
    let cli = spawn_pull(&env, &reference, "killed", &kernel);
    wait::until("the download to start (step 1)", downloading);
    // SAFETY: kill(2) of the daemon this test started.
    assert_eq!(unsafe { libc::kill(daemon, libc::SIGKILL) }, 0);
    wait_gone(daemon);
    let (ok, err) = stderr_of(cli);
    assert!(!ok, "the pull cannot succeed once its daemon is dead");
    assert!(err.contains("bangerd"), "{err}");
    // The next command starts a new daemon, which sweeps the leftovers before serving.
    assert_eq!(env.json(&["image", "list"]), serde_json::json!([]));
    assert_clean(&env);

    // 2. The registry dies mid-download: a clean error, nothing kept.
    let downloading = new_download(&env);
    let cli = spawn_pull(&env, &reference, "orphaned", &kernel);
    wait::until("the download to start (step 2)", downloading);
    registry.stop();
    let (ok, err) = stderr_of(cli);
    assert!(!ok);
    assert!(
        err.contains("error:") && (err.contains("network") || err.contains("reachable")),
        "{err}"
    );
    assert_clean(&env);
    assert_eq!(env.json(&["image", "list"]), serde_json::json!([]));
    registry.restart();

    // 3. Two pulls of one name: exactly one image; the loser fails fast.
    let first = spawn_pull(&env, &reference, "contested", &kernel);
    wait::until("the first pull to claim the name", || {
        !staging_dirs(&env).is_empty()
    });
    let started = Instant::now();
    let err = env.fails(&[
        "image",
        "pull",
        &reference,
        "--name",
        "contested",
        "--kernel",
        &kernel,
    ]);
    let loser_took = started.elapsed();
    assert!(err.contains("already_exists"), "{err}");
    let (ok, err) = stderr_of(first);
    assert!(ok, "{err}");
    assert!(
        loser_took < Duration::from_secs(5),
        "the losing pull must not wait for the winner ({loser_took:?})"
    );
    let list = env.json(&["image", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    tools::e2fsck_clean(Path::new(list[0]["rootfs_path"].as_str().expect("rootfs")));

    // 4. Ctrl-C in the CLI cancels the pull in the daemon, which cleans up.
    // (Delete the image and the cache first: with either present the pull would reuse
    // instead of downloading.)
    env.ok(&["image", "delete", "contested"]);
    env.ok(&["image", "cache", "prune"]);
    let downloading = new_download(&env);
    let cli = spawn_pull(&env, &reference, "interrupted", &kernel);
    wait::until("the download to start (step 4)", downloading);
    // SAFETY: kill(2) of the CLI this test started.
    assert_eq!(unsafe { libc::kill(cli.id() as i32, libc::SIGINT) }, 0);
    let (ok, err) = stderr_of(cli);
    assert!(!ok);
    assert!(err.contains("cancelled"), "{err}");
    wait::until("the daemon to discard the cancelled pull", || {
        staging_dirs(&env).is_empty()
    });
    assert_clean(&env);
    assert_eq!(
        env.json(&["image", "list"]).as_array().map(Vec::len),
        Some(0)
    );

    // 5. After all that, the same pull succeeds.
    let pulled = env.json(&[
        "image", "pull", &reference, "--name", "finally", "--kernel", &kernel,
    ]);
    tools::e2fsck_clean(Path::new(pulled["rootfs_path"].as_str().expect("rootfs")));
}

#[test]
fn a_full_disk_is_a_clean_error() {
    assert!(
        tools::is_root(),
        "this test mounts a tmpfs and must run as root (CI does)"
    );
    let registry = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    push_big_image(&registry, work.path());
    let env = TestEnv::new();
    let f = env.fixture_files();
    // The state dir (where rootfs.ext4 is written) on a 64 MiB tmpfs; the blob cache
    // stays on the big disk.
    let state = env.state_home();
    std::fs::create_dir_all(&state).expect("mkdir");
    tools::run(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&state),
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(state.clone());

    let err = env.fails(&[
        "image",
        "pull",
        &format!("{}/big:v1", registry.host()),
        "--kernel",
        &f.p("vmlinux"),
    ]);
    // Where, how much, what to do (the details are in pull_resilience.rs).
    assert!(err.contains("no space left in"), "{err}");
    assert!(err.contains("MiB is free there"), "{err}");
    assert_clean(&env);
    assert_eq!(env.json(&["image", "list"]), serde_json::json!([]));
    let _ = env.banger(&["daemon", "stop"]);
}

#[test]
fn parallel_pulls_of_different_names_share_layers() {
    let registry = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let base = LayerBuilder::new()
        .file("base", &noise(48 << 20, 7))
        .finish();
    for app in ["one", "two"] {
        let layout = work.path().join(app);
        let top = LayerBuilder::new().file("app", app.as_bytes()).finish();
        oci_image::single(
            &layout,
            "v1",
            &[
                Layer {
                    tar: base.clone(),
                    compression: Compression::None,
                },
                Layer {
                    tar: top,
                    compression: Compression::Gzip,
                },
            ],
        );
        oci_image::skopeo_push(&layout, "v1", &registry.host(), app, &[]);
    }
    let env = TestEnv::new();
    let f = env.fixture_files();
    let kernel = f.p("vmlinux");
    env.ok(&["daemon", "start"]);
    let pulls: Vec<Child> = ["one", "two"]
        .iter()
        .map(|app| spawn_pull(&env, &format!("{}/{app}:v1", registry.host()), app, &kernel))
        .collect();
    let outputs: Vec<String> = pulls
        .into_iter()
        .map(|p| {
            let (ok, err) = stderr_of(p);
            assert!(ok, "{err}");
            err
        })
        .collect();
    // Plain progress names each layer's fate; the shared base (layer 1) came over the
    // network once, whichever pull got there first.
    let base_lines: Vec<&str> = outputs
        .iter()
        .flat_map(|o| o.lines())
        .filter(|l| l.starts_with("Layer 1 "))
        .collect();
    assert_eq!(base_lines.len(), 2, "{outputs:?}");
    assert_eq!(
        base_lines
            .iter()
            .filter(|l| l.contains("downloaded"))
            .count(),
        1,
        "{base_lines:?}"
    );
    let list = env.json(&["image", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    for image in list.as_array().expect("array") {
        tools::e2fsck_clean(Path::new(image["rootfs_path"].as_str().expect("rootfs")));
    }
}

/// `kernel pull` streams progress like `image pull`, and Ctrl-C cancels it the same way:
/// no staging dir, no record, no partial blob; the next pull of the name succeeds.
#[test]
fn ctrl_c_cancels_a_kernel_pull() {
    let registry = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    // A kernel image whose initrd is big enough to interrupt mid-download.
    let tar = LayerBuilder::new()
        .file(
            "vmlinuz",
            &banger_testkit::fake_kernel::gzip_bzimage("6.1.99-big"),
        )
        .file("initrd.img", &noise(160 << 20, 3))
        .finish();
    push_one_layer(&registry, work.path(), "kernels/big", tar);
    let reference = format!("{}/kernels/big:v1", registry.host());
    let env = TestEnv::new();
    env.ok(&["daemon", "start"]);
    let kernels = env.state_dir().join("kernels");
    let staging = || {
        std::fs::read_dir(&kernels)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
            .count()
    };

    let downloading = new_download(&env);
    let cli = env
        .banger_cmd(&["kernel", "pull", &reference, "--name", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn banger");
    wait::until("the kernel download to start", downloading);
    // SAFETY: kill(2) of the CLI this test started.
    assert_eq!(unsafe { libc::kill(cli.id() as i32, libc::SIGINT) }, 0);
    let (ok, err) = stderr_of(cli);
    assert!(!ok);
    assert!(
        err.contains("Resolving") && err.contains("cancelled"),
        "{err}"
    );
    wait::until("the daemon to discard the cancelled kernel pull", || {
        staging() == 0 && cache_temp_files(&env).is_empty()
    });
    assert_clean(&env);
    assert_eq!(
        env.json(&["kernel", "list"]).as_array().map(Vec::len),
        Some(0)
    );

    let pulled = env.json(&["kernel", "pull", &reference, "--name", "big"]);
    assert_eq!(pulled["version"], "6.1.99-big");
}
