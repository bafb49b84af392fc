//! The `.deb` reader on hand-made packages (`banger_testkit::layers::deb`): the kernel
//! and its release's modules come out, nothing else does, and hostile or wrong packages
//! are refused with typed errors. The daemon's `kernel_store` tests import the real
//! Debian cloud kernel package through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use banger_kernel::deb::{DebError, DebKernel, unpack};
use banger_testkit::layers::{self, LayerBuilder};

fn run(dir: &Path, member: &str, data: &[u8]) -> Result<DebKernel, DebError> {
    let deb = dir.join("k.deb");
    std::fs::write(&deb, layers::deb(member, data)).unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    unpack(&deb, &out.join("kernel"), &out.join("modules"))
}

#[test]
fn the_kernel_and_its_modules_come_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = LayerBuilder::new()
        .file("./boot/vmlinuz-6.1.0-x", b"bzImage")
        .file("./boot/config-6.1.0-x", b"CONFIG_X=y")
        .file_with("./usr/lib/modules/6.1.0-x/kernel/a.ko", b"a", 0o4755, 0, 0)
        .symlink("./usr/lib/modules/6.1.0-x/build", "/usr/src/linux")
        .hardlink(
            "./usr/lib/modules/6.1.0-x/kernel/b.ko",
            "./usr/lib/modules/6.1.0-x/kernel/a.ko",
        )
        .file("./lib/modules/5.0.0-other/kernel/c.ko", b"c")
        .char_dev("./lib/modules/6.1.0-x/null", 1, 3)
        .finish();
    // zstd, as Ubuntu ships it.
    let got = run(dir.path(), "data.tar.zst", &layers::zstd(&data)).unwrap();
    assert_eq!(
        got,
        DebKernel {
            release: "6.1.0-x".into(),
            modules: true
        }
    );
    let out = dir.path().join("out");
    assert_eq!(std::fs::read(out.join("kernel")).unwrap(), b"bzImage");
    let a = out.join("modules/kernel/a.ko");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // setuid and group/other write never survive.
    assert_eq!(
        std::fs::metadata(&a).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(std::fs::metadata(&a).unwrap().nlink(), 2);
    assert_eq!(
        std::fs::read_link(out.join("modules/build")).unwrap(),
        Path::new("/usr/src/linux")
    );
    // Other releases, devices and the scratch directory are gone.
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["kernel", "modules"]);
    assert!(!out.join("modules/null").exists());
}

#[test]
fn a_kernel_without_modules_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let data = LayerBuilder::new()
        .file("boot/vmlinux-6.2.0", b"elf")
        .finish();
    let got = run(dir.path(), "data.tar", &data).unwrap();
    assert_eq!((got.release.as_str(), got.modules), ("6.2.0", false));
    assert!(!dir.path().join("out/modules").exists());
}

#[test]
fn wrong_and_hostile_packages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kernel = |b: LayerBuilder| b.file("./boot/vmlinuz-5.0.0", b"k");

    let only_docs = LayerBuilder::new().file("./usr/share/doc/x", b"x").finish();
    let e = run(d, "data.tar", &only_docs).unwrap_err();
    assert!(matches!(e, DebError::NoKernel), "{e}");
    assert!(e.to_string().contains("linux-image-*"), "{e}");

    let two = kernel(LayerBuilder::new())
        .file("./boot/vmlinuz-5.0.1", b"k")
        .finish();
    let e = run(d, "data.tar", &two).unwrap_err();
    assert!(matches!(e, DebError::TwoKernels), "{e}");

    let up = kernel(LayerBuilder::new())
        .file("./lib/modules/5.0.0/../../../../escape", b"x")
        .finish();
    let e = run(d, "data.tar", &up).unwrap_err();
    assert!(e.to_string().contains("'..'"), "{e}");

    let through = kernel(LayerBuilder::new())
        .symlink("./lib/modules/5.0.0/kernel", d.to_str().unwrap())
        .file("./lib/modules/5.0.0/kernel/escape", b"x")
        .finish();
    let e = run(d, "data.tar", &through).unwrap_err();
    assert!(matches!(e, DebError::UnsafePath { .. }), "{e}");
    assert!(!d.join("escape").exists());

    let out_link = kernel(LayerBuilder::new())
        .hardlink("./lib/modules/5.0.0/passwd", "./etc/passwd")
        .finish();
    let e = run(d, "data.tar", &out_link).unwrap_err();
    assert!(e.to_string().contains("outside the modules"), "{e}");

    let e = run(d, "data.tar.bz2", &[]).unwrap_err();
    assert!(matches!(e, DebError::UnsupportedMember(_)), "{e}");

    std::fs::write(d.join("k.deb"), b"not an archive").unwrap();
    let e = unpack(&d.join("k.deb"), &d.join("kernel"), &d.join("modules")).unwrap_err();
    assert!(
        e.to_string().starts_with("not a Debian package (.deb): "),
        "{e}"
    );

    let e = unpack(
        &d.join("missing.deb"),
        &d.join("kernel"),
        &d.join("modules"),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            DebError::Io {
                action: "opening",
                ..
            }
        ),
        "{e}"
    );
}
