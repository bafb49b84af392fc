//! Module resolution against fake modules trees (missing modules, `modules.dep`,
//! built-ins, compressed modules) and against the real Debian cloud kernel.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use banger_kernel::modules::{self, ModuleIndex};
use banger_kernel::{KernelError, guest_modules, resolve_modules};
use common::{add_module, compress, modules_dir};

fn names(mods: &[banger_kernel::Module]) -> Vec<&str> {
    mods.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn dependencies_come_first_and_builtins_are_skipped() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = modules_dir(root.path(), "6.1.0-test");
    add_module(&dir, "kernel/drivers/virtio/virtio.ko", &[]);
    add_module(&dir, "kernel/drivers/virtio/virtio_ring.ko", &["virtio"]);
    add_module(
        &dir,
        "kernel/drivers/virtio/virtio-mmio.ko",
        &["virtio", "virtio-ring"],
    );
    add_module(
        &dir,
        "kernel/drivers/block/virtio_blk.ko",
        &["virtio_ring", "crc16"],
    );
    // Shipped as a file too, but built in wins: no file is needed.
    add_module(&dir, "kernel/lib/crc16.ko", &[]);
    std::fs::write(
        dir.join("modules.builtin"),
        "kernel/lib/crc16.ko\nkernel/fs/ext4/ext4.ko\n",
    )
    .expect("builtin");

    let mods =
        resolve_modules(Some(&dir), &["virtio_mmio", "virtio-blk", "ext4"]).expect("resolve");
    assert_eq!(
        names(&mods),
        ["virtio", "virtio_ring", "virtio_mmio", "virtio_blk"]
    );
    assert!(
        mods[2]
            .path
            .ends_with("kernel/drivers/virtio/virtio-mmio.ko")
    );
    let index = ModuleIndex::load(&dir).expect("index");
    assert!(index.is_builtin("ext4") && index.is_builtin("crc16"));
    assert_eq!(index.release().as_deref(), Some("6.1.0-test"));
    assert_eq!(index.len(), 5);
}

#[test]
fn a_missing_dependency_names_module_dependent_and_dir() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = modules_dir(root.path(), "6.1.0-x");
    add_module(&dir, "kernel/drivers/block/virtio_blk.ko", &["virtio_ring"]);
    let err = resolve_modules(Some(&dir), &["virtio_blk"]).expect_err("virtio_ring is missing");
    match &err {
        KernelError::MissingModule {
            release,
            module,
            needed_by,
            modules_dir,
        } => {
            assert_eq!(release.as_deref(), Some("6.1.0-x"));
            assert_eq!(module, "virtio_ring");
            assert_eq!(needed_by.as_deref(), Some("virtio_blk"));
            assert_eq!(modules_dir, &dir);
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "kernel 6.1.0-x lacks module virtio_ring needed by virtio_blk (not built in, not in "
        ) && msg.contains(&dir.display().to_string()),
        "{msg}"
    );
}

#[test]
fn a_missing_wanted_module_says_which_kernel_feature_to_get() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = modules_dir(root.path(), "6.1.0-x");
    let err = resolve_modules(Some(&dir), &guest_modules(true, false)[4..]).expect_err("no vsock");
    assert_eq!(
        err.to_string(),
        format!(
            "kernel 6.1.0-x lacks module vmw_vsock_virtio_transport (not built in, not in {}): \
             use a kernel with virtio vsock support (CONFIG_VIRTIO_VSOCKETS)",
            dir.display()
        )
    );
}

#[test]
fn no_modules_tree_means_everything_is_built_in() {
    let root = tempfile::tempdir().expect("tempdir");
    let wanted = guest_modules(true, true);
    assert!(resolve_modules(None, &wanted).expect("none").is_empty());
    let absent = root.path().join("lib/modules/6.1.0-custom");
    assert!(
        resolve_modules(Some(&absent), &wanted)
            .expect("absent")
            .is_empty()
    );
    // A file where the tree should be is a mistake, not "no modules".
    let file = root.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    assert!(resolve_modules(Some(&file), &wanted).is_err());
}

#[test]
fn modules_dep_is_used_when_present() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("store-kernel/modules");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // The modules' own depends= are empty: the order must come from modules.dep.
    add_module(&dir, "kernel/fs/overlayfs/overlay.ko", &[]);
    add_module(&dir, "kernel/lib/helper-one.ko", &[]);
    add_module(&dir, "kernel/lib/helper_two.ko", &[]);
    std::fs::write(
        dir.join("modules.dep"),
        "kernel/fs/overlayfs/overlay.ko: kernel/lib/helper_two.ko kernel/lib/helper-one.ko\n\
         kernel/lib/helper-one.ko:\n\
         kernel/lib/helper_two.ko: kernel/lib/helper-one.ko\n",
    )
    .expect("modules.dep");
    let mods = resolve_modules(Some(&dir), &["overlay"]).expect("resolve");
    assert_eq!(names(&mods), ["helper_one", "helper_two", "overlay"]);
    // Not in a lib/modules/<release> layout: the release comes from vermagic.
    let index = ModuleIndex::load(&dir).expect("index");
    assert_eq!(index.release().as_deref(), Some("6.1.0-test"));
}

#[test]
fn compressed_modules_are_decompressed_in_process() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = modules_dir(root.path(), "6.1.0-test");
    let cases: [(&str, &str, &[&str]); 5] = [
        ("a_xz", "xz", &[]),
        // What kmod's build uses: crc32 check, 1 MiB dictionary.
        ("b_xz_kmod", "xz", &["--check=crc32", "--lzma2=dict=1MiB"]),
        ("c_zst", "zstd", &["-q", "-19"]),
        ("d_gz", "gzip", &["-9"]),
        ("e_plain", "", &[]),
    ];
    let mut originals = Vec::new();
    for (i, (name, tool, args)) in cases.iter().enumerate() {
        let deps: Vec<&str> = cases[..i].iter().map(|c| c.0).collect();
        let rel = format!("kernel/test/{name}.ko");
        let bytes = add_module(&dir, &rel, &deps);
        if !tool.is_empty() {
            compress(&dir.join(&rel), tool, args);
        }
        originals.push(bytes);
    }
    let mods = resolve_modules(Some(&dir), &["e_plain"]).expect("resolve");
    assert_eq!(
        names(&mods),
        ["a_xz", "b_xz_kmod", "c_zst", "d_gz", "e_plain"]
    );
    for (m, original) in mods.iter().zip(&originals) {
        assert_eq!(&m.bytes, original, "{}", m.name);
    }
    assert!(mods[2].path.to_string_lossy().ends_with("c_zst.ko.zst"));
}

#[test]
fn damaged_module_files_are_errors() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = modules_dir(root.path(), "6.1.0-test");
    let rel = dir.join("kernel/x");
    std::fs::create_dir_all(&rel).expect("mkdir");
    // Named .xz, holds gzip.
    let gz = compress(
        &{
            let p = rel.join("wrong.ko");
            std::fs::write(&p, common::fake_ko(&["depends="], 10)).expect("write");
            p
        },
        "gzip",
        &[],
    );
    std::fs::rename(&gz, rel.join("wrong.ko.xz")).expect("rename");
    // Truncated zstd.
    let zst = compress(
        &{
            let p = rel.join("cut.ko");
            std::fs::write(&p, common::fake_ko(&["depends="], 5000)).expect("write");
            p
        },
        "zstd",
        &["-q"],
    );
    let bytes = std::fs::read(&zst).expect("read");
    std::fs::write(&zst, &bytes[..bytes.len() / 2]).expect("truncate");
    // Not an ELF object.
    std::fs::write(rel.join("text.ko"), b"hello").expect("write");

    let err = resolve_modules(Some(&dir), &["wrong"]).expect_err("wrong format");
    assert!(matches!(err, KernelError::NotAModule { .. }), "{err}");
    assert!(err.to_string().contains("holds gzip data, not xz"), "{err}");
    let err = resolve_modules(Some(&dir), &["cut"]).expect_err("truncated");
    assert!(matches!(err, KernelError::Decompress { .. }), "{err}");
    assert!(err.to_string().contains("cut.ko.zst"), "{err}");
    let err = resolve_modules(Some(&dir), &["text"]).expect_err("not ELF");
    assert!(err.to_string().contains("no ELF header"), "{err}");
}

#[test]
fn module_names_and_modinfo() {
    assert_eq!(
        modules::module_name("kernel/drivers/block/virtio-blk.ko.zst").as_deref(),
        Some("virtio_blk")
    );
    assert_eq!(modules::module_name("kernel/x/readme.txt"), None);
    assert_eq!(modules::module_name("kernel/x/.ko"), None);
    let ko = common::fake_ko(
        &["license=GPL", "depends=virtio,virtio-ring", "vermagic=6.1"],
        0,
    );
    assert_eq!(
        modules::modinfo_depends(&ko).expect("modinfo"),
        ["virtio", "virtio_ring"]
    );
    let ko = common::fake_ko(&["depends="], 0);
    assert!(modules::modinfo_depends(&ko).expect("modinfo").is_empty());
    // A depends= outside .modinfo is not a dependency.
    let mut ko = common::fake_ko(&["license=GPL"], 0);
    ko.extend_from_slice(b"\0depends=bogus\0");
    assert!(modules::modinfo_depends(&ko).expect("modinfo").is_empty());
    assert!(modules::modinfo_depends(b"\x7fELF\x02\x01\x01").is_err());
    assert!(modules::modinfo_depends(b"not elf").is_err());
}

/// The real Debian cloud kernel: both guest module sets resolve, every module comes
/// after its dependencies, and built-ins (ext4 here) are left out.
#[test]
fn debian_cloud_kernel_guest_module_sets() {
    let kernel = banger_testkit::qemu::Kernel::get();
    let index = ModuleIndex::load(&kernel.modules_dir).expect("index");
    assert_eq!(index.release().as_deref(), Some(kernel.release.as_str()));
    for vsock in [true, false] {
        let wanted = guest_modules(vsock, true);
        let mods = index.resolve(&wanted).expect("resolve guest modules");
        let got = names(&mods);
        for (i, m) in mods.iter().enumerate() {
            assert!(m.bytes.starts_with(b"\x7fELF"), "{}", m.name);
            assert!(!index.is_builtin(&m.name), "built-in {} included", m.name);
            for dep in modules::modinfo_depends(&m.bytes).expect("modinfo") {
                let at = got.iter().position(|n| *n == dep);
                assert!(
                    index.is_builtin(&dep) || at.is_some_and(|at| at < i),
                    "{} depends on {dep}, which is not before it: {got:?}",
                    m.name
                );
            }
        }
        for w in &wanted {
            assert!(
                index.is_builtin(w) || got.contains(w),
                "{w} missing: {got:?}"
            );
        }
        let channel = if vsock {
            "vmw_vsock_virtio_transport"
        } else {
            "virtio_console"
        };
        let other = if vsock {
            "virtio_console"
        } else {
            "vmw_vsock_virtio_transport"
        };
        assert!(got.contains(&channel) && !got.contains(&other), "{got:?}");
        if vsock {
            assert!(got.contains(&"vsock") && got.contains(&"vmw_vsock_virtio_transport_common"));
        }
        // Debian builds ext4 in: it must be skipped, not looked for.
        if index.is_builtin("ext4") {
            assert!(!got.contains(&"ext4"), "{got:?}");
        }
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "duplicates in {got:?}");
    }
}
