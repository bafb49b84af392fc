//! Byte-exact output: one image holding every kind of entry (files, a hash-indexed
//! directory, short and long symlinks, devices, a fifo, a socket, a hardlink, xattrs in
//! the inode and in a block of their own) must hash to the value checked in here. A change
//! of the writer that changes any byte fails this test; if the change is meant, check the
//! image with e2fsck and update `GOLDEN`.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::path::Path;

use banger_ext4::{EntryKind, Ext4Writer, Options, Xattr};
use common::*;

/// FNV-1a (64 bits) of the image built by [`build_every_kind`].
const GOLDEN: u64 = 0xf1fc_ff64_0cf9_95dd;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn build_every_kind(img: &Path) {
    let opts = Options {
        seed: [7; 16],
        volume_label: Some("golden".into()),
        ..small_opts()
    };
    let mut w = Ext4Writer::create(img, opts).unwrap();
    let small_attr = vec![Xattr {
        name: b"user.tag".to_vec(),
        value: b"v".to_vec(),
    }];
    let big_attr = vec![Xattr {
        name: b"user.big".to_vec(),
        value: vec![b'x'; 900],
    }];
    add_file(
        &mut w,
        "etc/small",
        &meta_full(0o644, 1, 2, 10, small_attr),
        b"hi",
    );
    add_file(
        &mut w,
        "etc/big",
        &meta_full(0o600, 3, 4, 20, big_attr),
        &[9u8; 70_000],
    );
    // Enough entries for a hash-indexed directory.
    for i in 0..400 {
        add_file(
            &mut w,
            &format!("many/entry-with-a-long-name-{i:04}"),
            &meta_full(0o640, i, 7, i as i64, vec![]),
            &[i as u8; 3],
        );
    }
    let special = |kind| (meta_full(0o600, 0, 0, 30, vec![]), kind);
    let long_target = "t/".repeat(40);
    let entries: Vec<(&str, _)> = vec![
        (
            "links/short",
            special(EntryKind::Symlink {
                target: OsStr::new("../etc/small"),
            }),
        ),
        (
            "links/long",
            special(EntryKind::Symlink {
                target: OsStr::new(&long_target),
            }),
        ),
        (
            "links/hard",
            special(EntryKind::Hardlink {
                target: Path::new("etc/small"),
            }),
        ),
        (
            "dev/null",
            special(EntryKind::CharDevice { major: 1, minor: 3 }),
        ),
        (
            "dev/sda",
            special(EntryKind::BlockDevice { major: 8, minor: 0 }),
        ),
        ("run/fifo", special(EntryKind::Fifo)),
        ("run/sock", special(EntryKind::Socket)),
    ];
    for (path, (meta, kind)) in entries {
        w.add(Path::new(path), &meta, kind).unwrap();
    }
    w.add(
        Path::new("empty"),
        &meta_full(0o755, 0, 0, 40, vec![]),
        EntryKind::Directory,
    )
    .unwrap();
    w.finish().unwrap();
}

#[test]
fn the_image_of_every_kind_of_entry_is_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "golden.ext4");
    build_every_kind(&img);
    fsck(&img);
    let hash = fnv1a(&std::fs::read(&img).unwrap());
    assert_eq!(hash, GOLDEN, "image bytes changed: {hash:#018x}");
}
