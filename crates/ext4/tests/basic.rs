// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::path::Path;

use banger_ext4::{EntryKind, Ext4Writer, Xattr};
use common::*;

#[test]
fn empty_filesystem_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "empty.img");
    let w = Ext4Writer::create(&img, small_opts()).unwrap();
    let s = w.finish().unwrap();
    assert_eq!(std::fs::metadata(&img).unwrap().len(), s.size_bytes);
    fsck(&img);
    let root = ls(&img, "/");
    assert_eq!(root.len(), 1);
    assert_eq!(root[0].name, "lost+found");
    assert_eq!(root[0].ino, 11);
    let stats = debugfs1(&img, "stats");
    for f in [
        "has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum",
        "Reserved GDT blocks:      127",
        "Inode size:\t          256",
        "Journal inode:            8",
    ] {
        assert!(stats.contains(f), "missing {f:?} in:\n{stats}");
    }
}

#[test]
fn small_tree_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "small.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    add_file(
        &mut w,
        "etc/hostname",
        &meta_full(0o644, 0, 0, 1000, vec![]),
        b"banger\n",
    );
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    add_file(
        &mut w,
        "usr/bin/tool",
        &meta_full(0o4755, 1000, 1001, 5, vec![]),
        &big,
    );
    w.add(
        Path::new("usr/bin/link"),
        &meta(0o777),
        EntryKind::Symlink {
            target: OsStr::new("tool"),
        },
    )
    .unwrap();
    let long = "x/".repeat(40) + "end";
    w.add(
        Path::new("usr/bin/slow"),
        &meta(0o777),
        EntryKind::Symlink {
            target: OsStr::new(&long),
        },
    )
    .unwrap();
    w.add(
        Path::new("dev/null"),
        &meta(0o666),
        EntryKind::CharDevice { major: 1, minor: 3 },
    )
    .unwrap();
    w.add(
        Path::new("dev/big"),
        &meta(0o660),
        EntryKind::BlockDevice {
            major: 259,
            minor: 300,
        },
    )
    .unwrap();
    w.add(Path::new("run/fifo"), &meta(0o600), EntryKind::Fifo)
        .unwrap();
    w.add(Path::new("run/sock"), &meta(0o600), EntryKind::Socket)
        .unwrap();
    w.add(
        Path::new("usr/bin/hard"),
        &meta(0),
        EntryKind::Hardlink {
            target: Path::new("usr/bin/tool"),
        },
    )
    .unwrap();
    let caps = Xattr {
        name: b"security.capability".to_vec(),
        value: vec![
            1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    };
    add_file(
        &mut w,
        "usr/bin/ping",
        &meta_full(0o755, 0, 0, 0, vec![caps]),
        b"ping",
    );
    let s = w.finish().unwrap();
    fsck(&img);
    assert!(s.inodes > 11);
    assert_eq!(cat(&img, "/etc/hostname"), b"banger\n");
    assert_eq!(cat(&img, "/usr/bin/tool"), big);
    let bin = ls(&img, "/usr/bin");
    let tool = bin.iter().find(|e| e.name == "tool").unwrap();
    let hard = bin.iter().find(|e| e.name == "hard").unwrap();
    assert_eq!(tool.ino, hard.ino);
    assert_eq!(tool.mode, 0o104755);
    assert_eq!((tool.uid, tool.gid), (1000, 1001));
    let st = debugfs1(&img, "stat /usr/bin/link");
    assert!(st.contains("Fast link dest: \"tool\""), "{st}");
    let st = debugfs1(&img, "stat /dev/big");
    assert!(st.contains("259:300"), "{st}");
    let st = debugfs1(&img, "stat /dev/null");
    assert!(st.contains("01:03"), "{st}");
    let ea = debugfs1(&img, "ea_list /usr/bin/ping");
    assert!(ea.contains("security.capability"), "{ea}");
}
