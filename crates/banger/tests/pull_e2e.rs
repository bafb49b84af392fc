//! `banger image pull` end to end: real binaries, a real `docker-registry` on loopback,
//! images generated here with pitfall-laden layers, pushed with the real `skopeo`. The
//! resulting `rootfs.ext4` must pass `e2fsck -fn` and, loop-mounted by the host kernel,
//! equal `umoci unpack` of the same image.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use banger_testkit::layers::{LayerBuilder, Member};
use banger_testkit::oci_image::{self, Compression, Layer};
use banger_testkit::registry::Registry;
use banger_testkit::tools;
use banger_testkit::tree::{self, LoopMount};
use common::TestEnv;

/// Three layers exercising the merge rules: whiteouts, an opaque dir, a hardlink whose
/// target is overwritten later, devices, a FIFO, setuid, owners, xattrs, long names, big
/// ids, implicit parents.
fn pitfall_layers() -> Vec<Layer> {
    let capability = {
        // VFS_CAP_REVISION_2, cap_net_bind_service permitted.
        let mut v = vec![0u8; 20];
        v[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        v[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
        v
    };
    let mut xattr_file = Member::new("usr/bin/ping", b'0');
    xattr_file.data = b"#!/bin/sh\necho ping\n".to_vec();
    xattr_file.mode = 0o755;
    xattr_file.pax = vec![
        ("SCHILY.xattr.security.capability".into(), capability),
        ("SCHILY.xattr.user.banger".into(), b"ok".to_vec()),
    ];
    let base = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/removed", b"gone soon\n")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file_with("usr/bin/su", b"#!/bin/sh\n", 0o4755, 0, 0)
        .file_with("usr/bin/wall", b"#!/bin/sh\n", 0o2755, 0, 5)
        .member(xattr_file)
        .dir("tmp", 0o1777)
        .file_with("home/user/notes", b"mine\n", 0o600, 1000, 1000)
        .file("t1", b"old content\n")
        .hardlink("t2", "t1")
        .char_dev("dev/null", 1, 3)
        .block_dev("dev/vda", 254, 0)
        .fifo("run/initctl")
        .symlink("bin", "usr/bin")
        // symlink(2) ignores modes: these must come out 0777 (owner from the header).
        .member(Member {
            link: b"../etc/passwd".to_vec(),
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            ..Member::new("usr/passwd-0644", b'2')
        })
        .member(Member {
            link: b"/etc/passwd".to_vec(),
            mode: 0o600,
            ..Member::new("usr/passwd-0600", b'2')
        })
        .hardlink("usr/passwd-hard", "usr/passwd-0600")
        .dir("a", 0o755)
        .dir("a/b", 0o755)
        .file("a/b/c", b"lower\n")
        .dir("test", 0o755)
        .file("test/old", b"old\n")
        .finish();
    let middle = LayerBuilder::new()
        .whiteout("etc/removed")
        .file("t1", b"new content\n")
        .opaque("a")
        .file("a/fresh", b"same layer as the marker\n")
        .whiteout("test")
        .finish();
    let long_dir = "d".repeat(120);
    let mut big_uid = Member::new("var/lib/big-uid", b'0');
    big_uid.data = b"owned by a large uid\n".to_vec();
    big_uid.uid = 3_000_000;
    big_uid.gid = 3_000_000;
    let top = LayerBuilder::new()
        .dir("test", 0o700)
        .file("test/new", b"new\n")
        .file(&format!("{long_dir}/{}", "f".repeat(200)), b"long name\n")
        .member(big_uid)
        .file("implicit/parent/file", b"parents never listed\n")
        .dir("usr", 0o755)
        .finish();
    vec![
        Layer {
            tar: base,
            compression: Compression::Gzip,
        },
        Layer {
            tar: middle,
            compression: Compression::Zstd,
        },
        Layer {
            tar: top,
            compression: Compression::None,
        },
    ]
}

/// The manifest digest the registry serves for `reference` (amd64 entry of an index).
fn registry_digest(reference: &str) -> String {
    tools::run_stdout(
        tools::command("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{reference}")),
    )
    .trim()
    .to_string()
}

struct Pulled {
    rootfs: PathBuf,
    json: serde_json::Value,
}

fn pull(env: &TestEnv, reference: &str, extra: &[&str]) -> Pulled {
    let f = env.fixture_files();
    let mut args = vec!["image", "pull", reference, "--kernel"];
    let kernel = f.p("vmlinux");
    args.push(&kernel);
    args.extend_from_slice(extra);
    let json = env.json(&args);
    Pulled {
        rootfs: PathBuf::from(json["rootfs_path"].as_str().expect("rootfs_path")),
        json,
    }
}

/// `rootfs` passes `e2fsck -fn` and, loop-mounted, equals `umoci unpack` of an image made
/// of the same layer tars. (Debian's umoci cannot read zstd layers, so its reference copy
/// is all gzip: the uncompressed tars, hence the tree, are the same.)
fn assert_matches_umoci(rootfs: &Path, layers: &[Layer]) {
    tools::e2fsck_clean(rootfs);
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("reference");
    oci_image::single(&layout, "ref", &gzip_copies(layers));
    let reference = oci_image::umoci_unpack(&layout, "ref", work.path());
    let mounted = LoopMount::new(rootfs);
    let ours = tree::snapshot(mounted.path(), &["lost+found"]);
    let theirs = tree::snapshot(&reference, &[]);
    tree::assert_same("rootfs.ext4", &ours, "umoci", &theirs);
    // The snapshot leaves symlink modes out; Linux always has 0777 there.
    assert_eq!(
        symlink_modes(mounted.path()),
        symlink_modes(&reference),
        "symlink modes differ from umoci's"
    );
    assert!(
        symlink_modes(mounted.path())
            .iter()
            .all(|(_, mode)| *mode == 0o777),
        "{:?}",
        symlink_modes(mounted.path())
    );
}

/// (path, permission bits) of every symlink under `root`, sorted.
fn symlink_modes(root: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            if meta.is_dir() {
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                let rel = path.strip_prefix(root).expect("under root").to_path_buf();
                out.push((rel, meta.mode() & 0o7777));
            }
        }
    }
    out.sort();
    out
}

fn gzip_copies(layers: &[Layer]) -> Vec<Layer> {
    layers
        .iter()
        .map(|l| Layer {
            tar: l.tar.clone(),
            compression: Compression::Gzip,
        })
        .collect()
}

#[test]
fn pull_from_registry_equals_umoci_unpack() {
    let registry = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let layers = pitfall_layers();
    oci_image::single(&layout, "v1", &layers);
    oci_image::skopeo_push(&layout, "v1", &registry.host(), "pitfalls", &[]);

    let env = TestEnv::new();
    let reference = format!("{}/pitfalls:v1", registry.host());
    let pulled = pull(&env, &reference, &[]);
    assert_eq!(pulled.json["name"], "pitfalls-v1");
    assert_eq!(pulled.json["managed"], true);
    // skopeo re-serialises manifests on push: the registry's digest is the truth.
    assert_eq!(pulled.json["manifest_digest"], registry_digest(&reference));
    assert_eq!(pulled.json["platform"], "linux/amd64");
    assert_eq!(
        pulled.json["size_bytes"],
        1u64 << 30,
        "tiny images get the 1 GiB floor"
    );
    let allocated = pulled.json["allocated_bytes"].as_u64().expect("allocated");
    assert!(
        allocated < 64 << 20,
        "sparse output: {allocated} bytes allocated"
    );
    assert_matches_umoci(&pulled.rootfs, &layers);

    // Same image, Docker v2s2 manifest (gzip layers): same tree.
    let layout2 = work.path().join("layout-v2s2");
    oci_image::single(&layout2, "v1", &gzip_copies(&layers));
    oci_image::skopeo_push(
        &layout2,
        "v1",
        &registry.host(),
        "pitfalls-docker",
        &["--format", "v2s2"],
    );
    let pulled = pull(
        &env,
        &format!("{}/pitfalls-docker:v1", registry.host()),
        &["--name", "docker-v2s2"],
    );
    assert_matches_umoci(&pulled.rootfs, &layers);
}

#[test]
fn local_sources_pull_without_a_registry() {
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let layers = pitfall_layers();
    oci_image::single(&layout, "v1", &layers);
    let env = TestEnv::new();
    let pulled = pull(&env, &format!("oci:{}:v1", layout.display()), &[]);
    assert_eq!(pulled.json["name"], "layout-v1");
    assert!(
        pulled.json["source_ref"]
            .as_str()
            .is_some_and(|s| s.starts_with("oci:"))
    );
    assert_matches_umoci(&pulled.rootfs, &layers);

    // The same layout as an OCI archive (a tar of the layout, so the digests are the
    // same): the converted rootfs is shared instead of rebuilt.
    let archive = work.path().join("image.tar");
    tools::run(
        std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout)
            .arg("."),
    );
    let again = pull(&env, &format!("oci-archive:{}", archive.display()), &[]);
    assert_eq!(again.json["name"], "image");
    assert_eq!(
        again.json["manifest_digest"],
        pulled.json["manifest_digest"]
    );
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
    assert_eq!(
        ino(&again.rootfs),
        ino(&pulled.rootfs),
        "rootfs reused by digest"
    );
}

#[test]
fn platform_selection_from_a_multi_arch_index() {
    let registry = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let amd = vec![Layer {
        tar: LayerBuilder::new().file("arch", b"amd64\n").finish(),
        compression: Compression::Gzip,
    }];
    let arm = vec![Layer {
        tar: LayerBuilder::new().file("arch", b"arm64\n").finish(),
        compression: Compression::Gzip,
    }];
    oci_image::multi_arch(&layout, "multi", &amd, &arm);
    oci_image::skopeo_push(&layout, "multi", &registry.host(), "multi", &["--all"]);
    let env = TestEnv::new();
    let reference = format!("{}/multi:multi", registry.host());

    let pulled = pull(&env, &reference, &[]);
    assert_eq!(pulled.json["platform"], "linux/amd64");
    let mounted = LoopMount::new(&pulled.rootfs);
    assert_eq!(
        std::fs::read(mounted.path().join("arch")).expect("read"),
        b"amd64\n"
    );
    drop(mounted);

    let pulled = pull(
        &env,
        &reference,
        &["--platform", "linux/arm64", "--name", "arm"],
    );
    assert!(
        pulled.json["platform"]
            .as_str()
            .is_some_and(|p| p.starts_with("linux/arm64")),
        "{}",
        pulled.json
    );
    let mounted = LoopMount::new(&pulled.rootfs);
    assert_eq!(
        std::fs::read(mounted.path().join("arch")).expect("read"),
        b"arm64\n"
    );
    drop(mounted);

    let f = env.fixture_files();
    let err = env.fails(&[
        "image",
        "pull",
        &reference,
        "--kernel",
        &f.p("vmlinux"),
        "--platform",
        "linux/s390x",
        "--name",
        "nope",
    ]);
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64") && err.contains("--platform"),
        "{err}"
    );
    assert_no_leftovers(&env);
}

#[test]
fn user_errors_are_clear_and_leave_nothing_behind() {
    let registry = Registry::start();
    let env = TestEnv::new();
    let f = env.fixture_files();
    let kernel = f.p("vmlinux");

    let err = env.fails(&[
        "image",
        "pull",
        &format!("{}/nobody/here:v1", registry.host()),
        "--kernel",
        &kernel,
    ]);
    assert!(err.contains("not_found"), "{err}");

    let err = env.fails(&["image", "pull", "Upper/Case:v1", "--kernel", &kernel]);
    assert!(err.contains("bad_request"), "{err}");

    let err = env.fails(&[
        "image",
        "pull",
        "127.0.0.1:1/nothing:v1",
        "--kernel",
        &kernel,
    ]);
    assert!(
        err.contains("reachable") || err.contains("network"),
        "{err}"
    );

    let err = env.fails(&["image", "pull", "127.0.0.1:1/nothing:v1"]);
    assert!(err.contains("kernel"), "{err}");

    // --size too small for the content says how much is needed.
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let big = vec![Layer {
        tar: LayerBuilder::new()
            .file("blob", &vec![7u8; 8 << 20])
            .finish(),
        compression: Compression::Gzip,
    }];
    oci_image::single(&layout, "v1", &big);
    let err = env.fails(&[
        "image",
        "pull",
        &format!("oci:{}:v1", layout.display()),
        "--kernel",
        &kernel,
        "--size",
        "4MiB",
    ]);
    assert!(
        err.contains("bad_request") && err.contains("--size"),
        "{err}"
    );

    let err = env.fails(&[
        "image",
        "pull",
        &format!("oci:{}:v1", layout.display()),
        "--kernel",
        &kernel,
        "--size",
        "4 parsecs",
    ]);
    assert!(err.contains("unit"), "{err}");

    assert_no_leftovers(&env);
    assert_eq!(env.json(&["image", "list"]), serde_json::json!([]));
}

#[test]
fn warm_pulls_reuse_cached_layers() {
    let registry = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let base = Layer {
        tar: LayerBuilder::new()
            .file("base", &vec![1u8; 1 << 20])
            .finish(),
        compression: Compression::Gzip,
    };
    let base_again = Layer {
        tar: base.tar.clone(),
        compression: Compression::Gzip,
    };
    let one = work.path().join("one");
    oci_image::single(
        &one,
        "v1",
        &[
            base,
            Layer {
                tar: LayerBuilder::new().file("app", b"one\n").finish(),
                compression: Compression::Gzip,
            },
        ],
    );
    let two = work.path().join("two");
    oci_image::single(
        &two,
        "v1",
        &[
            base_again,
            Layer {
                tar: LayerBuilder::new().file("app", b"two\n").finish(),
                compression: Compression::Gzip,
            },
        ],
    );
    oci_image::skopeo_push(&one, "v1", &registry.host(), "app-one", &[]);
    oci_image::skopeo_push(&two, "v1", &registry.host(), "app-two", &[]);

    let env = TestEnv::new();
    let f = env.fixture_files();
    env.ok(&[
        "image",
        "pull",
        &format!("{}/app-one:v1", registry.host()),
        "--kernel",
        &f.p("vmlinux"),
    ]);
    let out = env.banger(&[
        "image",
        "pull",
        &format!("{}/app-two:v1", registry.host()),
        "--kernel",
        &f.p("vmlinux"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    // Plain (non-TTY) progress: one line per layer, the shared base layer from the cache.
    assert!(
        progress.contains("Layer 1") && progress.contains("cached"),
        "{progress}"
    );
    assert!(
        progress.contains("Layer 2") && progress.contains("downloaded"),
        "{progress}"
    );

    let pruned = env.json(&["image", "cache", "prune", "--dry-run"]);
    assert!(pruned["blobs"].as_u64().expect("blobs") >= 3, "{pruned}");
    let pruned = env.json(&["image", "cache", "prune"]);
    assert!(
        pruned["bytes"].as_u64().expect("bytes") > 1 << 10,
        "{pruned}"
    );
    let after = env.json(&["image", "cache", "prune", "--dry-run"]);
    assert_eq!(after["blobs"], 0, "{after}");
    // Images do not depend on the cache.
    assert_eq!(
        env.json(&["image", "list"]).as_array().map(Vec::len),
        Some(2)
    );
}

/// No staging dirs in the images dir, no temp files in the blob cache, and every cached
/// blob matches its name.
fn assert_no_leftovers(env: &TestEnv) {
    let images = env.state_dir().join("images");
    if let Ok(entries) = std::fs::read_dir(&images) {
        for e in entries {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            assert!(!name.ends_with(".staging"), "staging left: {name}");
        }
    }
    let blobs = env.path("cache/banger/oci/blobs/sha256");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for e in entries {
            let e = e.expect("entry");
            let data = std::fs::read(e.path()).expect("read blob");
            let digest = oci_image::sha256(&data);
            assert_eq!(
                &digest[7..],
                e.file_name().to_string_lossy(),
                "cached blob does not match its name"
            );
        }
    }
}

/// A private registry: refused with advice until `docker login`, then pulled, with the
/// daemon still running (credentials are read on each use).
fn private_registry_needs_docker_login(registry: &Registry) {
    use banger_testkit::registry::{AUTH_PASSWORD, AUTH_USER};
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    oci_image::single(
        &layout,
        "v1",
        &[Layer {
            tar: LayerBuilder::new().file("secret", b"private\n").finish(),
            compression: Compression::Gzip,
        }],
    );
    let creds = format!("{AUTH_USER}:{AUTH_PASSWORD}");
    oci_image::skopeo_push(
        &layout,
        "v1",
        &registry.host(),
        "private",
        &["--dest-creds", &creds],
    );
    let reference = format!("{}/private:v1", registry.host());

    let env = TestEnv::new();
    let f = env.fixture_files();
    let docker_config = env.path("docker");
    std::fs::create_dir_all(&docker_config).expect("mkdir");
    let pull = |name: &str| {
        let mut cmd = env.banger_cmd(&[
            "--json",
            "image",
            "pull",
            &reference,
            "--name",
            name,
            "--kernel",
            &f.p("vmlinux"),
        ]);
        // The daemon (started by this first command) inherits DOCKER_CONFIG.
        cmd.env("DOCKER_CONFIG", &docker_config);
        cmd.output().expect("banger")
    };

    // Not logged in: a clear error that says what to do, and nothing left behind.
    let out = pull("private");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unauthorized") && err.contains("docker login"),
        "{err}"
    );
    assert_no_leftovers(&env);

    // `docker login` (as the config it writes), with the daemon still running: now it works.
    std::fs::write(
        docker_config.join("config.json"),
        registry.docker_config_json(),
    )
    .expect("config.json");
    let out = pull("private");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mounted = LoopMount::new(Path::new(image["rootfs_path"].as_str().expect("rootfs")));
    assert_eq!(
        std::fs::read(mounted.path().join("secret")).expect("read"),
        b"private\n"
    );
}

#[test]
fn private_registry_with_basic_auth() {
    private_registry_needs_docker_login(&Registry::start_with_basic_auth());
}

/// Bearer tokens, as Docker Hub and GHCR do it: the registry's challenge sends the daemon
/// to the token server, which grants a signed token for the logged-in user only.
#[test]
fn private_registry_with_bearer_tokens() {
    let registry = Registry::start_with_token_auth();
    private_registry_needs_docker_login(&registry);
    let requests = registry.token_server().expect("token server").requests();
    // The daemon asked for a pull token: refused before `docker login`, granted after.
    let ours: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("scope=repository%3Aprivate%3Apull&"))
        .collect();
    let refused = ours.iter().filter(|r| r.ends_with("refused")).count();
    assert!(
        refused >= 1
            && ours[..refused].iter().all(|r| r.ends_with("refused"))
            && ours.len() > refused,
        "{requests:#?}"
    );
}

/// Rootless operation: CLI and daemon both run as uid 65534, yet the rootfs holds
/// root-owned setuid files, device nodes, foreign owners and `security.*` xattrs exactly as
/// the image says, the same tree root's `umoci unpack` makes. Nothing is extracted to the
/// host, so no privilege is needed.
#[test]
fn an_unprivileged_user_pulls_exactly_the_image() {
    assert!(
        tools::is_root(),
        "this test switches to uid 65534 and must run as root (CI does)"
    );
    let env = TestEnv::new();
    let f = env.fixture_files();
    let home = env.root.path().to_path_buf();
    // All the unprivileged user touches lives in the env dir (binaries copied too: the
    // build tree may sit below a directory it cannot enter).
    let bin = home.join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    for (exe, name) in [
        (env!("CARGO_BIN_EXE_banger"), "banger"),
        (env!("CARGO_BIN_EXE_bangerd"), "bangerd"),
    ] {
        std::fs::copy(exe, bin.join(name)).expect("copy binary");
    }
    let kernel = home.join("kernel");
    std::fs::copy(f.p("vmlinux"), &kernel).expect("copy kernel");
    let layers = pitfall_layers();
    let layout = home.join("layout");
    oci_image::single(&layout, "v1", &layers);
    tools::run(
        std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&home),
    );
    let nobody_cmd = |args: &[&str]| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin.join("banger"))
            .args(args);
        env.apply(&mut cmd);
        cmd.env("BANGER_DAEMON", bin.join("bangerd"))
            .env("HOME", &home);
        cmd
    };
    let as_nobody = |args: &[&str]| {
        let out = nobody_cmd(args).output().expect("setpriv (util-linux)");
        assert!(
            out.status.success(),
            "banger {args:?} as uid 65534: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    // Stops the unprivileged daemon however the test ends (root's `daemon stop` in
    // TestEnv's drop is refused by its peer-credential check).
    struct StopDaemon(std::process::Command);
    impl Drop for StopDaemon {
        fn drop(&mut self) {
            let _ = self.0.output();
        }
    }
    let _stop = StopDaemon(nobody_cmd(&["daemon", "stop"]));
    let source = format!("oci:{}:v1", layout.display());
    let pulled = as_nobody(&[
        "--json",
        "image",
        "pull",
        &source,
        "--name",
        "rootless",
        "--kernel",
        &kernel.to_string_lossy(),
    ]);
    // The daemon really is unprivileged.
    let pid = as_nobody(&["--json", "daemon", "status"])["daemon"]["pid"]
        .as_i64()
        .expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line");
    assert!(
        uids.split_whitespace().all(|u| u == "65534"),
        "daemon uids: {uids}"
    );
    let rootfs = PathBuf::from(pulled["rootfs_path"].as_str().expect("rootfs_path"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&rootfs).expect("stat").uid(), 65534);
    assert_matches_umoci(&rootfs, &layers);
}

/// Reproducible output: the same image pulled by two installations, under different
/// names, gives byte-identical `rootfs.ext4` files.
#[test]
fn the_same_digest_gives_the_same_bytes() {
    let registry = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    oci_image::single(&layout, "v1", &pitfall_layers());
    oci_image::skopeo_push(&layout, "v1", &registry.host(), "repro", &[]);
    let reference = format!("{}/repro:v1", registry.host());
    let (a, b) = (TestEnv::new(), TestEnv::new());
    let first = pull(&a, &reference, &["--name", "one"]);
    // Another daemon, another name, later (any wall-clock time in the filesystem, even in
    // nanoseconds, would differ).
    let second = pull(&b, &reference, &["--name", "two"]);
    assert_ne!(first.rootfs, second.rootfs);
    let digest = |p: &Path| oci_image::sha256(&std::fs::read(p).expect("read rootfs"));
    assert_eq!(digest(&first.rootfs), digest(&second.rootfs));
}
