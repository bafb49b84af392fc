//! Real layers through the real merge into the real writer, read back with e2fsprogs:
//! what each entry kind, mode, owner and xattr becomes, and what whiteouts remove.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use banger_ext4 as ext4;
use banger_oci as oci;
use banger_rootfs::{Ext4Sink, RootfsError};
use banger_testkit::layers::{LayerBuilder, Member};
use banger_testkit::tools;

fn debugfs(img: &Path, cmd: &str) -> String {
    let out = Command::new(tools::require("debugfs"))
        .args(["-R", cmd])
        .arg(img)
        .output()
        .expect("run debugfs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A file's content (stdout only: debugfs prints its banner on stderr).
fn cat(img: &Path, path: &str) -> String {
    let out = Command::new(tools::require("debugfs"))
        .args(["-R", &format!("cat {path}")])
        .arg(img)
        .output()
        .expect("run debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fsck(img: &Path) {
    let out = Command::new(tools::require("e2fsck"))
        .arg("-fn")
        .arg(img)
        .output()
        .expect("run e2fsck");
    assert!(
        out.status.success(),
        "e2fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn layer(dir: &Path, n: usize, tar: Vec<u8>) -> oci::LayerInput {
    let path = dir.join(format!("layer{n}.tar"));
    std::fs::write(&path, &tar).unwrap();
    oci::LayerInput {
        path,
        digest: oci::Digest::of(&tar),
        diff_id: None,
        verified: false,
    }
}

fn writer(dir: &Path) -> ext4::Ext4Writer {
    ext4::Ext4Writer::create(
        &dir.join("rootfs.ext4"),
        ext4::Options {
            size: ext4::SizePolicy::Exact(64 << 20),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn every_entry_kind_lands_as_the_layers_say() {
    let dir = tempfile::tempdir().unwrap();
    let lower = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        .file("etc/gone", b"whited out above")
        .member(Member {
            data: b"secret".to_vec(),
            mode: 0o640,
            gid: 42,
            pax: vec![("SCHILY.xattr.user.note".into(), b"hi".to_vec())],
            ..Member::new("etc/shadow", b'0')
        })
        .file_with("bin/su", b"#!su", 0o4755, 0, 0)
        .hardlink("bin/su2", "bin/su")
        .symlink("bin/sh", "busybox")
        .char_dev("dev/null", 1, 3)
        .block_dev("dev/vda", 254, 0)
        .fifo("run/fifo")
        .file("opt/a", b"a")
        .finish();
    let upper = LayerBuilder::new()
        .whiteout("etc/gone")
        .opaque("opt")
        .file("opt/b", b"b")
        .finish();
    // Bottom first, as a manifest lists them.
    let layers = vec![layer(dir.path(), 0, lower), layer(dir.path(), 1, upper)];
    let mut sink = Ext4Sink::new(writer(dir.path()));
    oci::flatten(&layers, &mut sink, &oci::Limits::default()).unwrap();
    let written = sink.bytes();
    // Implicit parents (bin, dev, run, opt) are the writer's, not entries.
    assert_eq!(sink.entries(), 10);
    assert!(!sink.hit_no_space());
    sink.finish().unwrap();
    let img = dir.path().join("rootfs.ext4");
    fsck(&img);
    // Shadowed and whited-out files are never offered, so never counted.
    assert_eq!(written, 26 + 6 + 4 + 1);

    let su = debugfs(&img, "stat /bin/su");
    assert!(su.contains("Mode:  04755"), "{su}");
    assert!(su.contains("Links: 2"), "{su}");
    let shadow = debugfs(&img, "stat /etc/shadow");
    assert!(shadow.contains("Mode:  0640"), "{shadow}");
    assert!(shadow.contains("Group:    42"), "{shadow}");
    let note = debugfs(&img, "ea_get /etc/shadow user.note");
    assert!(note.contains("hi"), "{note}");
    assert_eq!(cat(&img, "/etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
    let sh = debugfs(&img, "stat /bin/sh");
    assert!(sh.contains("Type: symlink"), "{sh}");
    assert!(sh.contains("\"busybox\""), "{sh}");
    let null = debugfs(&img, "stat /dev/null");
    assert!(null.contains("Type: character special"), "{null}");
    assert!(null.contains("Device major/minor number: 01:03"), "{null}");
    let vda = debugfs(&img, "stat /dev/vda");
    assert!(vda.contains("Type: block special"), "{vda}");
    assert!(debugfs(&img, "stat /run/fifo").contains("Type: FIFO"));
    // The whiteout and the opaque directory removed what the lower layer had.
    assert!(debugfs(&img, "stat /etc/gone").contains("File not found"));
    assert!(debugfs(&img, "stat /opt/a").contains("File not found"));
    assert_eq!(cat(&img, "/opt/b"), "b");
}

#[test]
fn a_file_without_its_data_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = Ext4Sink::new(writer(dir.path()));
    let entry = oci::Entry {
        path: "etc/motd".into(),
        kind: oci::EntryKind::File { size: 5 },
        meta: oci::Metadata::default(),
    };
    let err = sink.add(&entry, None).unwrap_err();
    assert!(matches!(err, RootfsError::MissingData { .. }), "{err:?}");
    assert_eq!(err.to_string(), "no data for etc/motd");
    assert!(!err.is_no_space());
    assert_eq!(sink.entries(), 0);
    // An empty file needs no reader.
    let empty = oci::Entry {
        kind: oci::EntryKind::File { size: 0 },
        ..entry
    };
    sink.add(&empty, None).unwrap();
    assert_eq!(sink.entries(), 1);
    sink.finish().unwrap();
}

#[test]
fn only_permission_bits_reach_the_inode() {
    let m = banger_rootfs::metadata(&oci::Metadata {
        uid: 7,
        gid: 8,
        mode: 0o100_644 | 0o7000,
        xattrs: vec![(b"user.a".to_vec(), b"b".to_vec())],
        ..Default::default()
    });
    assert_eq!(m.mode, 0o7644);
    assert_eq!((m.uid, m.gid), (7, 8));
    assert_eq!(m.xattrs.len(), 1);
}
