//! Flattening compared against `umoci unpack` (as root), one test per PITFALLS item.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use banger_testkit::layers::{LayerBuilder, Member};
use common::{assert_same_as_umoci, layer};

fn base() -> LayerBuilder {
    LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/os-release", b"base\n")
        .dir("a", 0o755)
        .dir("a/b", 0o700)
        .file("a/b/c", b"lower c")
}

#[test]
fn p01_single_layer_markers_applied_and_hidden() {
    let l = base().whiteout("x").opaque("a").whiteout("a/b/zz").finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(l)]);
    assert!(tree.contains_key("a/b/c"));
}

#[test]
fn p02_hardlink_set_keeps_old_content_when_target_overwritten() {
    let l1 = LayerBuilder::new()
        .file_with("t1", b"old content", 0o4755, 7, 8)
        .hardlink("t2", "t1")
        .hardlink("t3", "t2")
        .finish();
    let l2 = LayerBuilder::new().file("t1", b"new").finish();
    let (tree, groups) = assert_same_as_umoci(vec![layer(l1), layer(l2)]);
    assert_eq!(groups, vec![vec!["t2".to_string(), "t3".to_string()]]);
    assert_eq!(tree["t2"].mode, 0o4755);
}

#[test]
fn p02b_hardlink_to_lower_layer_target() {
    let l1 = LayerBuilder::new()
        .file("t1", b"one")
        .file("u", b"u")
        .finish();
    let l2 = LayerBuilder::new()
        .hardlink("t2", "t1")
        .hardlink("v", "u")
        .finish();
    let l3 = LayerBuilder::new().file("t1", b"replaced").finish();
    let (_, groups) = assert_same_as_umoci(vec![layer(l1), layer(l2), layer(l3)]);
    assert_eq!(groups, vec![vec!["u".to_string(), "v".to_string()]]);
}

#[test]
fn p02c_same_layer_target_shadowed_needs_reread() {
    let l1 = LayerBuilder::new()
        .file("t1", b"keep me")
        .file("x", b"x")
        .hardlink("t2", "t1")
        .finish();
    let l2 = LayerBuilder::new().whiteout("t1").finish();
    assert_same_as_umoci(vec![layer(l1), layer(l2)]);
}

#[test]
fn p03_opaque_dir_keeps_same_layer_files() {
    let l2 = LayerBuilder::new()
        .dir("a", 0o750)
        .file("a/new", b"n")
        .opaque("a")
        .file("a/b2", b"x")
        .finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(base().finish()), layer(l2)]);
    assert!(!tree.contains_key("a/b/c") && !tree.contains_key("a/b"));
    assert!(tree.contains_key("a/new"));
}

#[test]
fn p04_rm_rf_then_mkdir() {
    let l1 = LayerBuilder::new()
        .dir("test", 0o755)
        .file("test/old", b"o")
        .dir("test/sub", 0o755)
        .file("test/sub/deep", b"d")
        .finish();
    let l2 = LayerBuilder::new().whiteout("test").finish();
    let l3 = LayerBuilder::new()
        .dir("test", 0o700)
        .file("test/new", b"n")
        .finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(l1.clone()), layer(l2), layer(l3)]);
    assert_eq!(tree.keys().filter(|k| k.starts_with("test/")).count(), 1);
    // Same in one layer: whiteout and re-creation together.
    let l2 = LayerBuilder::new()
        .dir("test", 0o700)
        .file("test/new", b"n")
        .whiteout("test")
        .finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(l1), layer(l2)]);
    assert_eq!(tree.keys().filter(|k| k.starts_with("test/")).count(), 1);
}

#[test]
fn p06_whiteouts_before_and_after_siblings() {
    let l1 = LayerBuilder::new()
        .dir("d", 0o755)
        .file("d/a", b"a")
        .file("d/b", b"b")
        .file("d/c", b"c")
        .finish();
    let l2 = LayerBuilder::new()
        .whiteout("d/a")
        .file("d/n1", b"1")
        .file("d/n2", b"2")
        .whiteout("d/c")
        .finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(l1), layer(l2)]);
    assert!(tree.contains_key("d/b") && !tree.contains_key("d/a") && !tree.contains_key("d/c"));
}

#[test]
fn p07_hardlink_to_symlink() {
    let l = LayerBuilder::new()
        .file("f", b"f")
        .symlink("s", "f")
        .hardlink("s2", "s")
        .finish();
    let (_, groups) = assert_same_as_umoci(vec![layer(l)]);
    assert_eq!(groups, vec![vec!["s".to_string(), "s2".to_string()]]);
}

#[test]
fn p08_dot_entries_prefixes_and_duplicates() {
    let l = LayerBuilder::new()
        .dir(".", 0o755)
        .dir("./", 0o755)
        .dir("./usr", 0o755)
        .file("./usr/f", b"first")
        .file("/usr/g", b"g")
        .file("usr/f", b"second wins")
        .file("usr/kind", b"file first")
        .symlink("usr/kind", "f")
        .finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(l)]);
    assert_eq!(tree["usr/kind"].kind, "symlink");
}

#[test]
fn p11_devices_fifos() {
    let l = LayerBuilder::new()
        .dir("dev", 0o755)
        .char_dev("dev/null", 1, 3)
        .block_dev("dev/sda", 8, 0)
        .char_dev("dev/big", 300, 70000)
        .fifo("dev/fifo")
        .finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(l)]);
    assert_eq!(tree["dev/null"].kind, "char");
    assert_eq!(tree["dev/fifo"].kind, "fifo");
}

#[test]
fn p12_pax_gnu_xattrs_big_ids() {
    let long = format!("long/{}/{}", "d".repeat(120), "f".repeat(140));
    let long_gnu = format!("gnu/{}", "g".repeat(200));
    let l = LayerBuilder::new()
        .member(Member {
            data: b"pax".to_vec(),
            ..Member::new(&long, b'0')
        })
        .member(Member {
            data: b"gnu".to_vec(),
            gnu_long_names: true,
            ..Member::new(&long_gnu, b'0')
        })
        .member(Member {
            link: long.clone().into_bytes(),
            ..Member::new("ln-long-target", b'2')
        })
        .member(Member {
            link: long_gnu.clone().into_bytes(),
            gnu_long_names: true,
            ..Member::new("hl-gnu", b'1')
        })
        .member(Member {
            data: b"cap".to_vec(),
            mode: 0o755,
            pax: vec![
                (
                    "SCHILY.xattr.security.capability".into(),
                    vec![1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
                ("SCHILY.xattr.user.note".into(), b"hello".to_vec()),
            ],
            ..Member::new("bin/ping", b'0')
        })
        .member(Member {
            data: b"pax ids".to_vec(),
            uid: 3_000_000,
            gid: 70_000_000,
            ..Member::new("ids/pax", b'0')
        })
        .member(Member {
            data: b"b256".to_vec(),
            uid: 2_500_000,
            gid: 4_000_000_000,
            base256_ids: true,
            ..Member::new("ids/b256", b'0')
        })
        .finish();
    let (tree, groups) = assert_same_as_umoci(vec![layer(l)]);
    assert_eq!(tree["ids/pax"].uid, 3_000_000);
    assert_eq!(tree["ids/b256"].gid, 4_000_000_000);
    assert_eq!(tree["bin/ping"].xattrs.len(), 2);
    assert_eq!(groups.len(), 1);
}

#[test]
fn p15_implicit_parents_and_late_directory_metadata() {
    let l = LayerBuilder::new()
        .file("x/y/z", b"z")
        .member(Member {
            mode: 0o1777,
            uid: 5,
            gid: 6,
            ..Member::new("x/y", b'5')
        })
        .finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(l)]);
    assert_eq!((tree["x/y"].mode, tree["x/y"].uid), (0o1777, 5));
    // Lower dir metadata survives under an upper layer that only implies it.
    let l1 = LayerBuilder::new()
        .member(Member {
            mode: 0o700,
            uid: 9,
            ..Member::new("p", b'5')
        })
        .finish();
    let l2 = LayerBuilder::new().file("p/q", b"q").finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(l1), layer(l2)]);
    assert_eq!((tree["p"].mode, tree["p"].uid), (0o700, 9));
}

#[test]
fn replacing_kinds_across_layers() {
    let l1 = LayerBuilder::new()
        .dir("d", 0o755)
        .file("d/inner", b"i")
        .file("f", b"f")
        .symlink("s", "f")
        .finish();
    let l2 = LayerBuilder::new()
        .file("d", b"now a file")
        .dir("f", 0o711)
        .file("f/child", b"c")
        .file("s", b"regular")
        .finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(l1), layer(l2)]);
    assert_eq!(tree["d"].kind, "file");
    assert!(!tree.contains_key("d/inner"));
}

#[test]
fn whiteout_and_same_layer_children_in_either_order() {
    let l1 = LayerBuilder::new()
        .member(Member {
            mode: 0o700,
            uid: 3,
            ..Member::new("w", b'5')
        })
        .file("w/old", b"o")
        .finish();
    let l2 = LayerBuilder::new()
        .file("w/new", b"n")
        .whiteout("w")
        .finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(l1.clone()), layer(l2)]);
    assert!(!tree.contains_key("w/old"));
    let l2 = LayerBuilder::new()
        .whiteout("w")
        .file("w/new", b"n")
        .finish();
    let (tree, _) = assert_same_as_umoci(vec![layer(l1), layer(l2)]);
    assert!(!tree.contains_key("w/old"));
}
