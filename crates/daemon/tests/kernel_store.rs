//! The kernel store against real inputs: synthetic bzImages with every payload
//! compression (made by the real `gzip`, `xz`, `zstd`, `lz4`), Debian's cloud kernel and
//! its `.deb`, a fake host root, hostile packages, and concurrent imports.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use banger_api::ErrorCode;
use banger_api::kernel::KernelImportParams;
use banger_api::layout::Layout;
use banger_daemon::kernels::content_store::SharedFiles;
use banger_daemon::kernels::{Kernels, host, manifest};
use banger_daemon::store::Store;
use banger_kernel::image;
use banger_testkit::fake_kernel as fixture;
use banger_testkit::layers::LayerBuilder;
use banger_testkit::{qemu, tools};

struct Env {
    _root: tempfile::TempDir,
    files: PathBuf,
    kernels: Kernels,
}

fn env() -> Env {
    let root = tempfile::tempdir().expect("tempdir");
    let layout = Layout {
        state_dir: root.path().join("state"),
        cache_dir: root.path().join("cache"),
        runtime_dir: root.path().join("run"),
    };
    let files = root.path().join("files");
    std::fs::create_dir_all(&files).expect("mkdir");
    let store = Arc::new(Store::open_in_memory().expect("store"));
    let oci = Arc::new(banger_daemon::oci_client::OciClient::open(&layout).expect("oci client"));
    Env {
        kernels: Kernels::new(
            layout.clone(),
            store,
            oci,
            SharedFiles::open(&layout.state_dir),
        ),
        files,
        _root: root,
    }
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf8").to_string()
}

fn files_params(name: &str, kernel: &Path) -> KernelImportParams {
    KernelImportParams {
        name: name.into(),
        kernel_path: Some(s(kernel)),
        ..Default::default()
    }
}

fn sha(path: &Path) -> String {
    banger_testkit::oci_image::sha256(&std::fs::read(path).expect("read"))
}

#[test]
fn import_files_with_and_without_initrd_and_modules() {
    let e = env();
    let bz = e.files.join("vmlinuz");
    std::fs::write(&bz, fixture::gzip_bzimage("6.6.6-banger")).expect("write");
    std::fs::write(e.files.join("initrd.img"), b"initrd").expect("write");
    std::fs::create_dir_all(e.files.join("mods/kernel/fs")).expect("mkdir");
    std::fs::write(e.files.join("mods/kernel/fs/ext4.ko"), b"ko").expect("write");
    std::os::unix::fs::symlink("/usr/src/x", e.files.join("mods/build")).expect("symlink");

    let bare = e
        .kernels
        .import(files_params("bare", &bz))
        .expect("bare import");
    assert_eq!(bare.version.as_deref(), Some("6.6.6-banger"));
    assert_eq!(bare.arch.as_deref(), Some("amd64"));
    assert!(bare.kernel_path.ends_with("/bare/vmlinuz"), "{bare:?}");
    assert!(bare.initrd_path.is_none() && bare.modules_dir.is_none());
    let vmlinux = PathBuf::from(bare.vmlinux_path.as_deref().expect("vmlinux extracted"));
    assert_eq!(
        std::fs::read(&vmlinux).expect("read"),
        fixture::elf("6.6.6-banger")
    );
    let names: Vec<&str> = bare.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["vmlinuz", "vmlinux"]);
    assert_eq!(bare.files[0].sha256, sha(&bz));
    assert_eq!(bare.files[1].sha256, sha(&vmlinux));

    let full = e
        .kernels
        .import(KernelImportParams {
            initrd_path: Some(s(&e.files.join("initrd.img"))),
            modules_dir: Some(s(&e.files.join("mods"))),
            ..files_params("full", &bz)
        })
        .expect("full import");
    let modules = PathBuf::from(full.modules_dir.as_deref().expect("modules"));
    assert_eq!(
        std::fs::read(modules.join("kernel/fs/ext4.ko")).expect("ko"),
        b"ko"
    );
    assert_eq!(
        std::fs::read_link(modules.join("build")).expect("link"),
        PathBuf::from("/usr/src/x")
    );
    assert_eq!(
        std::fs::read(full.initrd_path.as_deref().expect("initrd")).expect("read"),
        b"initrd"
    );
    let tree = full
        .files
        .iter()
        .find(|f| f.name == "modules")
        .expect("tree");
    assert_eq!((tree.kind.as_str(), tree.file_count), ("tree", Some(1)));

    // An ELF vmlinux alone is a kernel too (Firecracker's kind), booted as is.
    let elf = e.files.join("vmlinux");
    std::fs::write(&elf, fixture::elf("6.6.7-elf")).expect("write");
    let k = e
        .kernels
        .import(files_params("elf", &elf))
        .expect("elf import");
    assert!(k.kernel_path.ends_with("/elf/vmlinux") && k.vmlinuz_path.is_none());
    assert_eq!(k.version.as_deref(), Some("6.6.7-elf"));

    let list = e.kernels.list().expect("list");
    let names: Vec<&str> = list.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["bare", "elf", "full"]);
    assert_eq!(e.kernels.show("full").expect("show"), full);

    let deleted = e.kernels.delete("full", false).expect("delete");
    assert!(deleted.files_removed);
    assert!(!Path::new(&full.dir).exists());
    assert_eq!(
        e.kernels.show("full").expect_err("gone").code(),
        ErrorCode::NotFound
    );
    // The name is free again.
    e.kernels
        .import(files_params("full", &bz))
        .expect("re-import");
    // Nothing but published kernels in the store dir.
    let mut left: Vec<String> = std::fs::read_dir(e.kernels.dir())
        .expect("ls")
        .map(|d| d.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["bare", "elf", "full"]);
}

#[test]
fn bad_inputs_have_clear_errors() {
    let e = env();
    let script = e.files.join("not-a-kernel");
    std::fs::write(&script, b"#!/bin/sh\necho hi\n").expect("write");
    let err = e
        .kernels
        .import(files_params("k", &script))
        .expect_err("not a kernel");
    assert_eq!(err.code(), ErrorCode::BadRequest);
    assert!(
        err.to_string().contains("not a Linux kernel image")
            && err.to_string().contains("not-a-kernel"),
        "{err}"
    );

    let missing = e.files.join("nope");
    let err = e
        .kernels
        .import(files_params("k", &missing))
        .expect_err("missing");
    assert!(err.to_string().contains("no such file"), "{err}");

    let bz = e.files.join("vmlinuz");
    std::fs::write(&bz, fixture::gzip_bzimage("1.2.3")).expect("write");
    let err = e
        .kernels
        .import(KernelImportParams {
            initrd_path: Some(s(&missing)),
            ..files_params("k", &bz)
        })
        .expect_err("missing initrd");
    assert!(err.to_string().contains("initrd"), "{err}");

    let err = e
        .kernels
        .import(files_params("Bad Name", &bz))
        .expect_err("bad name");
    assert_eq!(err.code(), ErrorCode::BadRequest);

    let err = e
        .kernels
        .import(KernelImportParams {
            host: true,
            ..files_params("k", &bz)
        })
        .expect_err("two sources");
    assert!(err.to_string().contains("exactly one"), "{err}");

    // A bzImage whose payload is damaged.
    let mut broken = fixture::gzip_bzimage("1.2.3");
    let n = broken.len();
    for b in &mut broken[0xa00 + 20..n - 8] {
        *b = 0x55;
    }
    std::fs::write(&bz, &broken).expect("write");
    let err = e
        .kernels
        .import(files_params("k", &bz))
        .expect_err("damaged");
    assert!(err.to_string().contains("cannot extract vmlinux"), "{err}");

    std::fs::write(&bz, fixture::gzip_bzimage("1.2.3")).expect("write");
    e.kernels.import(files_params("dup", &bz)).expect("first");
    let err = e.kernels.import(files_params("dup", &bz)).expect_err("dup");
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    assert!(
        err.to_string().contains("banger kernel delete dup"),
        "{err}"
    );
    // Failures leave nothing behind.
    let left: Vec<_> = std::fs::read_dir(e.kernels.dir()).expect("ls").collect();
    assert_eq!(left.len(), 1);
}

/// Payloads the way the kernel build compresses them, by the real tools.
#[test]
fn vmlinux_is_extracted_from_every_payload_compression() {
    let elf = fixture::elf("6.9.0-payload");
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("vmlinux.bin");
    std::fs::write(&raw, &elf).expect("write");
    let compressors: [(&str, &[&str]); 4] = [
        ("gzip", &["-9", "-c"]),
        (
            "xz",
            &["--check=crc32", "--x86", "--lzma2=dict=32MiB", "-c"],
        ),
        ("zstd", &["-22", "--ultra", "-q", "-c"]),
        ("lz4", &["-l", "-9", "-c"]),
    ];
    for (tool, args) in compressors {
        let out = tools::run(tools::command(tool).args(args).arg(&raw)).stdout;
        let bz = fixture::bzimage("6.9.0-payload", &out);
        let info = image::inspect(&bz).expect("inspect");
        assert_eq!(info.version.as_deref(), Some("6.9.0-payload"), "{tool}");
        let got = image::extract_vmlinux(&bz).unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert_eq!(got, elf, "{tool}");
    }
}

#[test]
fn debian_cloud_kernel_vmlinux_is_a_real_elf_with_the_package_release() {
    let k = qemu::Kernel::get();
    let bz = std::fs::read(&k.vmlinuz).expect("read vmlinuz");
    let info = image::inspect(&bz).expect("inspect");
    assert_eq!(info.version.as_deref(), Some(k.release.as_str()));
    let elf = image::extract_vmlinux(&bz).expect("extract");
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "ELF64");
    assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 0x3e, "x86-64");
    let info = image::inspect(&elf).expect("inspect elf");
    assert_eq!(info.version.as_deref(), Some(k.release.as_str()));
    assert!(
        info.banner
            .as_deref()
            .is_some_and(|b| b.contains("debian-kernel")),
        "{info:?}"
    );
}

#[test]
fn import_a_real_debian_kernel_package() {
    let deb = qemu::Kernel::get().deb();
    let release = qemu::Kernel::get().release.clone();
    let version = tools::run_stdout(
        tools::command("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .arg("Version"),
    );
    let e = env();
    let k = e
        .kernels
        .import(KernelImportParams {
            name: "cloud".into(),
            deb_path: Some(s(&deb)),
            ..Default::default()
        })
        .expect("deb import");
    assert_eq!(k.version.as_deref(), Some(release.as_str()));
    assert_eq!(k.arch.as_deref(), Some("amd64"));
    assert!(k.source.as_deref().is_some_and(|s| s.starts_with("deb:")));
    let vmlinux = std::fs::read(k.vmlinux_path.as_deref().expect("vmlinux")).expect("read");
    assert_eq!(&vmlinux[..4], b"\x7fELF");
    let info = image::inspect(&vmlinux).expect("inspect");
    assert_eq!(info.version.as_deref(), Some(release.as_str()));
    // The banner names the package version (`… Debian 6.1.192-2 (…)`).
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(&k.dir).join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert!(
        manifest["banner"]
            .as_str()
            .is_some_and(|b| b.contains(version.trim())),
        "{manifest} vs {version}"
    );
    // vmlinuz is byte-identical to the package's file (compare with the testkit's tree).
    assert_eq!(
        sha(Path::new(&k.kernel_path)),
        sha(&qemu::Kernel::get().vmlinuz)
    );
    let modules = PathBuf::from(k.modules_dir.as_deref().expect("modules"));
    assert!(modules.join("modules.builtin").is_file());
    // The modules tree is exactly what dpkg-deb extracted for the testkit.
    assert_eq!(
        manifest::tree_digest(&modules).expect("ours"),
        manifest::tree_digest(&qemu::Kernel::get().modules_dir).expect("dpkg-deb's")
    );
}

#[test]
fn host_import_reads_boot_and_lib_modules() {
    let e = env();
    let root = e.files.join("root");
    std::fs::create_dir_all(root.join("boot")).expect("mkdir");
    std::fs::create_dir_all(root.join("lib/modules/6.7.8-host/kernel")).expect("mkdir");
    std::fs::write(root.join("lib/modules/6.7.8-host/kernel/a.ko"), b"ko").expect("write");
    let staging = e.files.join("staging");
    std::fs::create_dir(&staging).expect("mkdir");

    let err = host::import_release(&root, "6.7.8-host", &staging).expect_err("no vmlinuz");
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert!(
        err.to_string().contains("boot/vmlinuz-6.7.8-host") && err.to_string().contains("--deb"),
        "{err}"
    );

    std::fs::write(
        root.join("boot/vmlinuz-6.7.8-host"),
        fixture::gzip_bzimage("6.7.8-host"),
    )
    .expect("write");
    host::import_release(&root, "6.7.8-host", &staging).expect("host import");
    assert!(staging.join("vmlinuz").is_file());
    assert!(staging.join("modules/kernel/a.ko").is_file());
    assert!(!staging.join("initrd.img").exists());

    // The real RPC path on this machine: either it works or it says why not.
    match e.kernels.import(KernelImportParams {
        name: "host".into(),
        host: true,
        ..Default::default()
    }) {
        Ok(k) => assert!(k.version.is_some()),
        Err(err) => assert!(err.to_string().contains("vmlinuz"), "{err}"),
    }
}

/// A hand-made `.deb`: `ar` with `debian-binary`, `control.tar` and `data.tar`.
fn make_deb(path: &Path, data_tar: &[u8]) {
    std::fs::write(path, banger_testkit::layers::deb("data.tar", data_tar)).expect("write deb");
}

#[test]
fn hostile_packages_are_refused() {
    let e = env();
    let deb = e.files.join("evil.deb");
    let kernel = fixture::gzip_bzimage("5.0.0-evil");
    let import = |name: &str| {
        e.kernels.import(KernelImportParams {
            name: name.into(),
            deb_path: Some(s(&deb)),
            ..Default::default()
        })
    };

    make_deb(
        &deb,
        &LayerBuilder::new()
            .file("./boot/vmlinuz-5.0.0-evil", &kernel)
            .file("./lib/modules/5.0.0-evil/../../../../escape", b"x")
            .finish(),
    );
    let err = import("a").expect_err("traversal");
    assert!(err.to_string().contains("'..'"), "{err}");

    make_deb(
        &deb,
        &LayerBuilder::new()
            .file("./boot/vmlinuz-5.0.0-evil", &kernel)
            .symlink("./lib/modules/5.0.0-evil/kernel", "/tmp")
            .file("./lib/modules/5.0.0-evil/kernel/escape", b"x")
            .finish(),
    );
    let err = import("b").expect_err("write through symlink");
    assert!(err.to_string().contains("unsafe path"), "{err}");
    assert!(!Path::new("/tmp/escape").exists());

    make_deb(
        &deb,
        &LayerBuilder::new().file("./usr/share/doc/x", b"x").finish(),
    );
    let err = import("c").expect_err("no kernel");
    assert!(err.to_string().contains("linux-image"), "{err}");

    std::fs::write(&deb, b"not an archive").expect("write");
    let err = import("d").expect_err("not a deb");
    assert!(err.to_string().contains("not a Debian package"), "{err}");

    // A well-formed one works, modules and all.
    make_deb(
        &deb,
        &LayerBuilder::new()
            .file("./boot/vmlinuz-5.0.0-evil", &kernel)
            .file("./usr/lib/modules/5.0.0-evil/kernel/a.ko", b"a")
            .file("./lib/modules/4.0.0-other/kernel/b.ko", b"b")
            .finish(),
    );
    let k = import("ok").expect("good deb");
    let modules = PathBuf::from(k.modules_dir.expect("modules"));
    assert!(modules.join("kernel/a.ko").is_file());
    assert!(!modules.join("kernel/b.ko").exists());
    let left: Vec<String> = std::fs::read_dir(e.kernels.dir())
        .expect("ls")
        .map(|d| d.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["ok"]);
}

#[test]
fn concurrent_imports_of_one_name_publish_once() {
    let e = Arc::new(env());
    let bz = e.files.join("vmlinuz");
    std::fs::write(&bz, fixture::gzip_bzimage("6.0.0-race")).expect("write");
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (e, bz, barrier) = (e.clone(), bz.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                e.kernels.import(files_params("race", &bz))
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), ErrorCode::AlreadyExists, "{r}");
    }
    let manifest = std::fs::read(e.kernels.dir().join("race/manifest.json")).expect("manifest");
    let m: serde_json::Value = serde_json::from_slice(&manifest).expect("whole manifest");
    assert_eq!(m["name"], "race");
}
