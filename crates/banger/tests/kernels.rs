//! The kernel store end to end: `banger kernel …` → socket → `bangerd` → files/SQLite,
//! and `--kernel-ref` in `image register` and `image pull`.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use banger_testkit::fake_kernel as fixture;
use banger_testkit::layers::LayerBuilder;
use banger_testkit::oci_image::{self, Compression, Layer};
use common::TestEnv;

fn s(p: &Path) -> String {
    p.to_str().expect("utf8").to_string()
}

/// A gzip-payload bzImage, an initrd and a modules tree under `<test>/k/`.
fn kernel_files(env: &TestEnv, version: &str) -> PathBuf {
    let dir = env.path("k");
    std::fs::create_dir_all(dir.join("modules/kernel/fs")).expect("mkdir");
    std::fs::write(dir.join("vmlinuz"), fixture::gzip_bzimage(version)).expect("write");
    std::fs::write(dir.join("initrd.img"), b"initrd").expect("write");
    std::fs::write(dir.join("modules/kernel/fs/ext4.ko"), b"ko").expect("write");
    std::fs::write(dir.join("modules/modules.dep"), b"").expect("write");
    dir
}

fn sha(path: &str) -> String {
    oci_image::sha256(&std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}")))
}

#[test]
fn import_list_show_delete_through_the_cli() {
    let env = TestEnv::new();
    let k = kernel_files(&env, "6.1.99-e2e");
    let bare = env.json(&[
        "kernel",
        "import",
        "bare",
        "--kernel",
        &s(&k.join("vmlinuz")),
    ]);
    assert_eq!(bare["version"], "6.1.99-e2e");
    assert_eq!(bare["arch"], "amd64");
    assert!(bare["initrd_path"].is_null() && bare["modules_dir"].is_null());
    let vmlinux = bare["vmlinux_path"].as_str().expect("vmlinux");
    assert!(
        std::fs::read(vmlinux)
            .expect("read")
            .starts_with(b"\x7fELF")
    );

    // Relative paths are the caller's.
    let out = env
        .banger_cmd(&[
            "--json",
            "kernel",
            "import",
            "full",
            "--kernel",
            "vmlinuz",
            "--initrd",
            "initrd.img",
            "--modules",
            "modules",
        ])
        .current_dir(&k)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        sha(full["kernel_path"].as_str().expect("kernel")),
        sha(&s(&k.join("vmlinuz")))
    );
    assert_eq!(
        std::fs::read(full["initrd_path"].as_str().expect("initrd")).expect("read"),
        b"initrd"
    );
    let files = full["files"].as_array().expect("files");
    let names: Vec<&str> = files.iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["vmlinuz", "vmlinux", "initrd.img", "modules"]);

    let list = env.json(&["kernel", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["bare", "full"]);
    let human = env.ok(&["kernel", "list"]);
    assert!(human.starts_with("NAME"), "{human}");
    assert!(human.contains("vmlinuz+vmlinux+initrd+modules"), "{human}");
    let shown = env.ok(&["kernel", "show", "full"]);
    assert!(
        shown.contains("6.1.99-e2e") && shown.contains("sha256:"),
        "{shown}"
    );
    assert_eq!(env.json(&["kernel", "show", "full"]), full);

    let err = env.fails(&[
        "kernel",
        "import",
        "full",
        "--kernel",
        &s(&k.join("vmlinuz")),
    ]);
    assert!(err.contains("already_exists"), "{err}");

    let deleted = env.json(&["kernel", "delete", "full"]);
    assert_eq!(deleted["files_removed"], true);
    assert!(!Path::new(full["dir"].as_str().expect("dir")).exists());
    let err = env.fails(&["kernel", "show", "full"]);
    assert!(
        err.contains("not_found") && err.contains("banger kernel list"),
        "{err}"
    );
}

#[test]
fn bad_inputs_say_what_is_wrong() {
    let env = TestEnv::new();
    let k = kernel_files(&env, "6.1.99-e2e");
    let err = env.fails(&[
        "kernel",
        "import",
        "x",
        "--kernel",
        &s(&k.join("initrd.img")),
    ]);
    assert!(
        err.contains("bad_request") && err.contains("not a Linux kernel image"),
        "{err}"
    );
    let missing = s(&k.join("nope"));
    let err = env.fails(&["kernel", "import", "x", "--kernel", &missing]);
    assert!(
        err.contains(&missing) && err.contains("no such file"),
        "{err}"
    );
    let err = env.fails(&[
        "kernel",
        "import",
        "Bad",
        "--kernel",
        &s(&k.join("vmlinuz")),
    ]);
    assert!(err.contains("lower-case"), "{err}");
    let err = env.fails(&["kernel", "import", "x", "--deb", &s(&k.join("initrd.img"))]);
    assert!(err.contains("not a Debian package"), "{err}");
    // clap: a source is required, and --initrd only goes with --kernel.
    let err = env.fails(&["kernel", "import", "x"]);
    assert!(err.contains("--kernel") && err.contains("--deb"), "{err}");
    let err = env.fails(&["kernel", "import", "x", "--host", "--initrd", "/x"]);
    assert!(err.contains("--kernel"), "{err}");
    assert_eq!(env.json(&["kernel", "list"]), serde_json::json!([]));
}

/// A one-layer `oci:` layout with `etc/hello`.
fn rootfs_layout(env: &TestEnv) -> String {
    let layout = env.path("layout");
    let tar = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hello", b"world")
        .finish();
    oci_image::single(
        &layout,
        "v1",
        &[Layer {
            tar,
            compression: Compression::Gzip,
        }],
    );
    format!("oci:{}:v1", s(&layout))
}

#[test]
fn kernel_ref_on_pull_and_register_copies_the_kernel() {
    let env = TestEnv::new();
    let k = kernel_files(&env, "6.1.99-ref");
    env.ok(&[
        "kernel",
        "import",
        "k",
        "--kernel",
        &s(&k.join("vmlinuz")),
        "--initrd",
        &s(&k.join("initrd.img")),
        "--modules",
        &s(&k.join("modules")),
    ]);
    let kernel = env.json(&["kernel", "show", "k"]);

    let pulled = env.json(&[
        "image",
        "pull",
        &rootfs_layout(&env),
        "--name",
        "pulled",
        "--kernel-ref",
        "k",
    ]);
    assert_eq!(pulled["kernel_ref"], "k");
    let image_kernel = pulled["kernel_path"].as_str().expect("kernel").to_string();
    assert!(image_kernel.starts_with(pulled["artifact_dir"].as_str().expect("dir")));
    assert_eq!(
        sha(&image_kernel),
        sha(kernel["kernel_path"].as_str().expect("k"))
    );
    // The ELF the store extracted travels along (what Firecracker boots).
    let image_vmlinux = Path::new(pulled["artifact_dir"].as_str().expect("dir")).join("vmlinux");
    assert_eq!(
        sha(&s(&image_vmlinux)),
        sha(kernel["vmlinux_path"].as_str().expect("vmlinux"))
    );
    let image_modules = pulled["modules_dir"].as_str().expect("modules").to_string();
    assert!(
        Path::new(&image_modules)
            .join("kernel/fs/ext4.ko")
            .is_file()
    );

    let registered = env.json(&[
        "image",
        "register",
        "--name",
        "reg",
        "--rootfs",
        &s(&env.fixture_files().dir.join("rootfs.ext4")),
        "--kernel-ref",
        "k",
    ]);
    assert_eq!(registered["kernel_ref"], "k");
    assert_eq!(registered["managed"], false);
    let reg_dir = registered["artifact_dir"]
        .as_str()
        .expect("kernel copies dir")
        .to_string();
    let reg_kernel = registered["kernel_path"]
        .as_str()
        .expect("kernel")
        .to_string();
    assert!(reg_kernel.starts_with(&reg_dir), "{registered}");
    assert_eq!(
        sha(&reg_kernel),
        sha(kernel["kernel_path"].as_str().expect("k"))
    );
    assert!(
        Path::new(registered["modules_dir"].as_str().expect("modules"))
            .join("kernel/fs/ext4.ko")
            .is_file()
    );

    // --kernel-ref excludes paths; unknown refs say how to get one.
    let err = env.fails(&[
        "image",
        "pull",
        "oci:/x:v1",
        "--kernel-ref",
        "k",
        "--kernel",
        "/x",
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = env.fails(&[
        "image",
        "pull",
        &rootfs_layout(&env),
        "--name",
        "nope",
        "--kernel-ref",
        "missing",
    ]);
    assert!(
        err.contains("not_found") && err.contains("banger kernel import"),
        "{err}"
    );

    // Both images have their own copies: deleting the kernel breaks nothing.
    let deleted = env.json(&["kernel", "delete", "k"]);
    assert_eq!(
        deleted["images_with_copies"],
        serde_json::json!(["pulled", "reg"])
    );
    assert_eq!(deleted["images_broken"], serde_json::json!([]));
    for file in [&image_kernel, &reg_kernel] {
        assert!(Path::new(file).is_file(), "{file}");
    }
    assert!(
        Path::new(&image_modules)
            .join("kernel/fs/ext4.ko")
            .is_file()
    );
    // Deleting the registered image removes its kernel copies but not the user's rootfs.
    let rootfs = registered["rootfs_path"]
        .as_str()
        .expect("rootfs")
        .to_string();
    let gone = env.json(&["image", "delete", "reg"]);
    assert_eq!(gone["files_removed"], false);
    assert!(!Path::new(&reg_dir).exists());
    assert!(Path::new(&rootfs).is_file());
    assert!(!Path::new(kernel["dir"].as_str().expect("dir")).exists());
}

#[test]
fn delete_of_a_kernel_images_came_from_is_allowed_and_says_so() {
    let env = TestEnv::new();
    let k = kernel_files(&env, "6.1.99-del");
    env.ok(&["kernel", "import", "k", "--kernel", &s(&k.join("vmlinuz"))]);
    env.ok(&[
        "image",
        "pull",
        &rootfs_layout(&env),
        "--name",
        "img",
        "--kernel-ref",
        "k",
    ]);
    let out = env.ok(&["kernel", "delete", "k"]);
    assert!(
        out.contains("deleted kernel k")
            && out.contains("keep their own copy")
            && out.contains("img"),
        "{out}"
    );
    let image = env.json(&["image", "show", "img"]);
    assert!(Path::new(image["kernel_path"].as_str().expect("kernel")).is_file());
}

#[test]
fn push_and_pull_through_a_registry_round_trip() {
    let registry = banger_testkit::registry::Registry::start();
    let env = TestEnv::new();
    let k = kernel_files(&env, "6.1.99-oci");
    std::os::unix::fs::symlink("kernel/fs/ext4.ko", k.join("modules/link")).expect("symlink");
    let original = env.json(&[
        "kernel",
        "import",
        "orig",
        "--kernel",
        &s(&k.join("vmlinuz")),
        "--initrd",
        &s(&k.join("initrd.img")),
        "--modules",
        &s(&k.join("modules")),
    ]);
    let reference = format!("{}/kernels/cloud:6.1", registry.host());
    // Without --json the push reports its steps on stderr (plain lines: not a terminal).
    let (first, progress) = env.ok_with_stderr(&["kernel", "push", "orig", &reference]);
    assert!(
        progress.contains("Packing the kernel into a layer")
            && progress.contains("Uploaded layer")
            && progress.contains("Done in"),
        "{progress}"
    );
    // Deterministic: pushing again gives the same manifest.
    let pushed = env.json(&["kernel", "push", "orig", &reference]);
    assert_eq!(pushed["reference"], reference);
    let digest = pushed["manifest_digest"].as_str().expect("digest");
    assert!(first.contains(digest), "{first} vs {digest}");
    // The packed layer was a temp file in the kernels dir, gone now.
    let leftovers: Vec<_> = std::fs::read_dir(env.state_dir().join("kernels"))
        .expect("kernels dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // skopeo sees an ordinary image with our annotations and labels.
    let inspect = banger_testkit::tools::run_stdout(
        banger_testkit::tools::command("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{reference}")),
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("skopeo json");
    assert_eq!(inspect["Digest"], pushed["manifest_digest"]);
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Labels"]["dev.banger.kernel.version"], "6.1.99-oci");
    let raw = banger_testkit::tools::run_stdout(
        banger_testkit::tools::command("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}")),
    );
    let raw: serde_json::Value = serde_json::from_str(&raw).expect("raw manifest");
    assert_eq!(raw["annotations"]["dev.banger.kernel.arch"], "amd64");
    assert_eq!(raw["layers"].as_array().map(Vec::len), Some(1));

    // Pull into a second installation: identical files.
    let other = TestEnv::new();
    let (_, progress) = other.ok_with_stderr(&["kernel", "pull", &reference, "--name", "copy"]);
    assert!(
        progress.contains("Resolving")
            && progress.contains("Layer 1")
            && progress.contains("Publishing")
            && progress.contains("Done in"),
        "{progress}"
    );
    let pulled = other.json(&["kernel", "show", "copy"]);
    assert_eq!(pulled["name"], "copy");
    assert_eq!(pulled["version"], "6.1.99-oci");
    assert_eq!(pulled["files"], original["files"]);
    assert!(
        pulled["source"]
            .as_str()
            .is_some_and(|s| s.contains(pushed["manifest_digest"].as_str().expect("digest"))),
        "{pulled}"
    );
    let modules = PathBuf::from(pulled["modules_dir"].as_str().expect("modules"));
    assert_eq!(
        std::fs::read_link(modules.join("link")).expect("link"),
        PathBuf::from("kernel/fs/ext4.ko")
    );
    // Default name from the reference; a taken name is refused.
    let default = other.json(&["kernel", "pull", &reference]);
    assert_eq!(default["name"], "cloud-6-1");
    let err = other.fails(&["kernel", "pull", &reference, "--name", "copy"]);
    assert!(err.contains("already_exists"), "{err}");
    let err = other.fails(&[
        "kernel",
        "pull",
        &format!("{}/kernels/none:1", registry.host()),
    ]);
    assert!(err.contains("not_found"), "{err}");
    // An image built from the pulled kernel.
    let image = other.json(&[
        "image",
        "pull",
        &rootfs_layout(&other),
        "--name",
        "img",
        "--kernel-ref",
        "copy",
    ]);
    assert_eq!(
        sha(image["kernel_path"].as_str().expect("kernel")),
        sha(&s(&k.join("vmlinuz")))
    );
}

/// An `oci:` layout whose one layer holds `tar`.
fn layout_with(env: &TestEnv, name: &str, tar: Vec<u8>) -> String {
    let layout = env.path(name);
    oci_image::single(
        &layout,
        "k",
        &[Layer {
            tar,
            compression: Compression::Gzip,
        }],
    );
    format!("oci:{}:k", s(&layout))
}

#[test]
fn hostile_kernel_images_are_refused() {
    let env = TestEnv::new();
    let kernel = fixture::gzip_bzimage("6.1.99-evil");
    let traversal = layout_with(
        &env,
        "traversal",
        LayerBuilder::new()
            .file("vmlinuz", &kernel)
            .file("modules/../../escape", b"x")
            .finish(),
    );
    let err = env.fails(&["kernel", "pull", &traversal, "--name", "a"]);
    assert!(err.contains("bad_request") && err.contains(".."), "{err}");

    let stray = layout_with(
        &env,
        "stray",
        LayerBuilder::new()
            .file("vmlinuz", &kernel)
            .file("etc/passwd", b"root::0:0")
            .finish(),
    );
    let err = env.fails(&["kernel", "pull", &stray, "--name", "b"]);
    assert!(
        err.contains("not a kernel image") && err.contains("etc/passwd"),
        "{err}"
    );

    let through_link = layout_with(
        &env,
        "link",
        LayerBuilder::new()
            .file("vmlinuz", &kernel)
            .symlink("modules", "/tmp")
            .file("modules/escape", b"x")
            .finish(),
    );
    let err = env.fails(&["kernel", "pull", &through_link, "--name", "c"]);
    assert!(err.contains("bad_request"), "{err}");

    let mismatched = layout_with(
        &env,
        "twins",
        LayerBuilder::new()
            .file("vmlinuz", &kernel)
            .file("vmlinux", &fixture::elf("5.0.0-other"))
            .finish(),
    );
    let err = env.fails(&["kernel", "pull", &mismatched, "--name", "e"]);
    assert!(err.contains("different kernels"), "{err}");

    let not_kernel = layout_with(
        &env,
        "nk",
        LayerBuilder::new()
            .file("vmlinuz", b"MZ not really")
            .finish(),
    );
    let err = env.fails(&["kernel", "pull", &not_kernel, "--name", "d"]);
    assert!(err.contains("not a Linux kernel image"), "{err}");
    assert_eq!(env.json(&["kernel", "list"]), serde_json::json!([]));
    let leftovers = std::fs::read_dir(env.state_dir().join("kernels"))
        .expect("kernels dir")
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn image_pull_fetches_a_missing_kernel_ref_from_the_kernel_source() {
    let registry = banger_testkit::registry::Registry::start();
    let publisher = TestEnv::new();
    let k = kernel_files(&publisher, "6.1.99-auto");
    publisher.ok(&[
        "kernel",
        "import",
        "cloud",
        "--kernel",
        &s(&k.join("vmlinuz")),
    ]);
    let source = format!("{}/banger/kernels", registry.host());
    publisher.ok(&["kernel", "push", "cloud", &format!("{source}:cloud")]);

    let env = TestEnv::new();
    // The daemon this command starts inherits the kernel source.
    let out = env
        .banger_cmd(&["daemon", "start"])
        .env("BANGER_KERNEL_SOURCE", &source)
        .output()
        .expect("start");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layout = rootfs_layout(&env);
    let (_, progress) = env.ok_with_stderr(&[
        "image",
        "pull",
        &layout,
        "--name",
        "img",
        "--kernel-ref",
        "cloud",
    ]);
    assert!(
        progress.contains(&format!(
            "Kernel cloud is not local: fetching it from {source}:cloud"
        )),
        "{progress}"
    );
    let image = env.json(&["image", "show", "img"]);
    assert_eq!(image["kernel_ref"], "cloud");
    let kernel = env.json(&["kernel", "show", "cloud"]);
    assert_eq!(kernel["version"], "6.1.99-auto");
    assert!(
        kernel["source"]
            .as_str()
            .is_some_and(|s| s.contains("banger/kernels:cloud")),
        "{kernel}"
    );
    let err = env.fails(&[
        "image",
        "pull",
        &layout,
        "--name",
        "img2",
        "--kernel-ref",
        "nope",
    ]);
    assert!(
        err.contains("not_found") && err.contains("kernel source"),
        "{err}"
    );
}

#[test]
fn import_from_a_debian_package_and_from_the_host() {
    let deb = banger_testkit::qemu::Kernel::get().deb();
    let release = banger_testkit::qemu::Kernel::get().release.clone();
    let env = TestEnv::new();
    let k = env.json(&["kernel", "import", "cloud", "--deb", &s(&deb)]);
    assert_eq!(k["version"], release.as_str());
    let vmlinux = std::fs::read(k["vmlinux_path"].as_str().expect("vmlinux")).expect("read");
    assert!(vmlinux.starts_with(b"\x7fELF"));
    assert!(
        Path::new(k["modules_dir"].as_str().expect("modules"))
            .join("modules.order")
            .is_file()
    );
    // The host: imported where it has /boot, a clear error where not (containers).
    let out = env.banger(&["--json", "kernel", "import", "host", "--host"]);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("/boot/vmlinuz-") && err.contains("--deb"),
            "{err}"
        );
    }
}

/// What a killed daemon leaves in the kernels dir (an import's staging dir, a push's packed
/// layer, a directory no record owns) is gone after the next start; stored kernels stay.
#[test]
fn daemon_start_sweeps_kernel_store_leftovers() {
    let env = TestEnv::new();
    let k = kernel_files(&env, "6.1.99-sweep");
    env.ok(&[
        "kernel",
        "import",
        "kept",
        "--kernel",
        &s(&k.join("vmlinuz")),
    ]);
    env.ok(&["daemon", "stop"]);
    let kernels = env.state_dir().join("kernels");
    std::fs::create_dir_all(kernels.join(".staging-half-0123/modules")).expect("mkdir");
    std::fs::write(kernels.join(".staging-push-x1y2"), b"partial layer").expect("write");
    std::fs::create_dir(kernels.join("orphan")).expect("mkdir");
    env.ok(&["daemon", "start"]);
    let mut names: Vec<String> = std::fs::read_dir(&kernels)
        .expect("kernels dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["kept"]);
    assert_eq!(
        env.json(&["kernel", "show", "kept"])["version"],
        "6.1.99-sweep"
    );
}

/// arm64 kernels: Debian's arm64 `vmlinuz` is a gzip'd `Image`. It is stored as given, and
/// the raw `Image` (what QEMU and Firecracker boot there) is extracted as `vmlinux`.
#[test]
fn arm64_images_are_kernels_too() {
    let env = TestEnv::new();
    let dir = env.path("arm64");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let image = fixture::arm64_image("6.1.0-30-arm64");
    std::fs::write(dir.join("vmlinuz"), fixture::gzip(&image)).expect("write");
    std::fs::write(dir.join("Image"), &image).expect("write");

    let k = env.json(&[
        "kernel",
        "import",
        "arm",
        "--kernel",
        &s(&dir.join("vmlinuz")),
    ]);
    assert_eq!(k["version"], "6.1.0-30-arm64");
    assert_eq!(k["arch"], "arm64");
    assert_eq!(
        std::fs::read(k["vmlinux_path"].as_str().expect("vmlinux")).expect("read"),
        image
    );
    assert_eq!(
        k["kernel_path"], k["vmlinuz_path"],
        "the compressed kernel stays the one images get"
    );
    // An amd64 image with an arm64 kernel would not boot: refused before any layer is
    // downloaded, nothing staged.
    let err = env.fails(&["image", "pull", &rootfs_layout(&env), "--kernel-ref", "arm"]);
    assert!(
        err.contains("bad_request") && err.contains("arm64") && err.contains("linux/amd64"),
        "{err}"
    );
    // The same for a kernel file given directly.
    let err = env.fails(&[
        "image",
        "pull",
        &rootfs_layout(&env),
        "--kernel",
        &s(&dir.join("vmlinuz")),
    ]);
    assert!(
        err.contains("bad_request") && err.contains("is for arm64"),
        "{err}"
    );
    assert_eq!(env.json(&["image", "list"]), serde_json::json!([]));
    // Through a registry to an amd64 host: the one architecture there is, is taken.
    let registry = banger_testkit::registry::Registry::start();
    let reference = format!("{}/kernels/arm:6.1", registry.host());
    env.ok(&["kernel", "push", "arm", &reference]);
    let other = TestEnv::new();
    let pulled = other.json(&["kernel", "pull", &reference, "--name", "arm"]);
    assert_eq!(pulled["arch"], "arm64");
    assert_eq!(pulled["files"], k["files"]);
    // A bare Image is an uncompressed kernel on its own.
    let bare = env.json(&[
        "kernel",
        "import",
        "arm-raw",
        "--kernel",
        &s(&dir.join("Image")),
    ]);
    assert_eq!(bare["arch"], "arm64");
    assert!(bare["vmlinuz_path"].is_null());
    assert_eq!(bare["kernel_path"], bare["vmlinux_path"]);
}
