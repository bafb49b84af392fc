//! Feature tests: every image must pass `e2fsck -fn` and read back identically.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use banger_ext4::{EntryKind, Error, Ext4Writer, Metadata, Options, SizePolicy, Xattr};
use common::*;

/// Zeros with a few marked bytes at given offsets; never holds the data in memory.
struct Sparse {
    pos: u64,
    size: u64,
    marks: Vec<(u64, u8)>,
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.size - self.pos) as usize;
        buf[..n].fill(0);
        for &(off, v) in &self.marks {
            if off >= self.pos && off < self.pos + n as u64 {
                buf[(off - self.pos) as usize] = v;
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_at(img: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(img).unwrap();
    let mut b = vec![0; len];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

fn bmap(img: &Path, path: &str, logical: u64) -> u64 {
    let out = debugfs1(img, &format!("bmap {path} {logical}"));
    out.lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("bmap output: {out}"))
}

#[test]
fn file_larger_than_4gib_is_sparse_and_correct() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "big.img");
    let size = (5u64 << 30) + 123;
    let marks = vec![
        (0, 1u8),
        ((2u64 << 30) + 1, 2),
        ((4u64 << 30) + 5, 3),
        (size - 1, 4),
    ];
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    let mut r = Sparse {
        pos: 0,
        size,
        marks: marks.clone(),
    };
    w.add(
        Path::new("big"),
        &meta(0o644),
        EntryKind::File { size, data: &mut r },
    )
    .unwrap();
    let s = w.finish().unwrap();
    assert_eq!(s.data_bytes_written, 4 * 4096);
    fsck(&img);
    let st = debugfs1(&img, "stat /big");
    assert!(st.contains(&format!("Size: {size}")), "{st}");
    for (off, v) in marks {
        let phys = bmap(&img, "/big", off / 4096);
        assert_ne!(phys, 0);
        assert_eq!(read_at(&img, phys * 4096 + off % 4096, 1), vec![v]);
    }
    // A hole in the middle is unmapped.
    assert_eq!(bmap(&img, "/big", 1000), 0);
    // The image file itself stays small on the host.
    let m = std::fs::metadata(&img).unwrap();
    assert!(
        m.blocks() * 512 < 16 << 20,
        "allocated {}",
        m.blocks() * 512
    );
}

#[test]
fn fragmented_file_gets_deep_extent_tree() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "frag.img");
    // 3000 data blocks separated by holes: 3000 extents → two index levels.
    let mut data = vec![0u8; 6000 * 4096];
    for i in 0..3000usize {
        let b = &mut data[i * 2 * 4096..(i * 2 + 1) * 4096];
        b.fill((i % 250) as u8 + 1);
    }
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    add_file(&mut w, "frag", &meta(0o600), &data);
    w.finish().unwrap();
    fsck(&img);
    let ex = debugfs1(&img, "dump_extents /frag");
    assert!(
        ex.contains(" 2/ 2 "),
        "expected a depth-2 tree:\n{}",
        &ex[..ex.len().min(2000)]
    );
    assert_eq!(cat(&img, "/frag"), data);
}

#[test]
fn directory_with_100k_entries() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "wide.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    let m = meta(0o644);
    for i in 0..100_000u32 {
        let p = format!("wide/file-{i:06}");
        w.add(
            Path::new(&p),
            &m,
            EntryKind::File {
                size: 0,
                data: &mut std::io::empty(),
            },
        )
        .unwrap();
    }
    // Also many subdirectories elsewhere (link counts of the parent).
    for i in 0..2000u32 {
        w.add(
            Path::new(&format!("dirs/d{i}")),
            &meta(0o755),
            EntryKind::Directory,
        )
        .unwrap();
    }
    let s = w.finish().unwrap();
    assert_eq!(s.inodes, 11 + 2 + 100_000 + 2000);
    fsck(&img);
    let entries = ls(&img, "/wide");
    assert_eq!(entries.len(), 100_000);
    let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names[0], "file-000000");
    assert_eq!(names[99_999], "file-099999");
    names.dedup();
    assert_eq!(names.len(), 100_000);
    // Large directories carry a hash index (EXT4_INDEX_FL) that e2fsck has verified.
    let st = debugfs1(&img, "stat /wide");
    assert!(st.contains("Flags: 0x81000"), "{st}");
    let dump = debugfs1(&img, "htree_dump /wide");
    assert!(
        dump.contains("Indirect levels: 0"),
        "{}",
        &dump[..dump.len().min(1000)]
    );
    let st = debugfs1(&img, "stat /dirs");
    assert!(st.contains("Links: 2002"), "{st}");
}

#[test]
fn long_names_and_name_limits() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "names.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    let n255 = "n".repeat(254) + "z";
    let d255 = "d".repeat(255);
    add_file(&mut w, &format!("{d255}/{n255}"), &meta(0o644), b"deep");
    let n256 = "x".repeat(256);
    let err = w
        .add(Path::new(&n256), &meta(0o644), EntryKind::Fifo)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    assert!(matches!(
        w.add(Path::new("a/../b"), &meta(0), EntryKind::Fifo),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        w.add(Path::new("/abs"), &meta(0), EntryKind::Fifo),
        Err(Error::InvalidPath { .. })
    ));
    // Symlink targets of exactly 59/60 bytes (fast/slow boundary) and a long one.
    for (name, len) in [("s59", 59usize), ("s60", 60), ("s4000", 4000)] {
        let t = "t".repeat(len);
        w.add(
            Path::new(name),
            &meta(0o777),
            EntryKind::Symlink {
                target: OsStr::new(&t),
            },
        )
        .unwrap();
    }
    w.finish().unwrap();
    fsck(&img);
    assert_eq!(cat(&img, &format!("/{d255}/{n255}")), b"deep");
    let st = debugfs1(&img, "stat /s59");
    assert!(st.contains("Fast link dest"), "{st}");
    let st = debugfs1(&img, "stat /s4000");
    assert!(st.contains("Size: 4000"), "{st}");
}

#[test]
fn xattrs_in_inode_and_in_block() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "xattr.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    let cap = Xattr {
        name: b"security.capability".to_vec(),
        value: vec![
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    };
    add_file(
        &mut w,
        "small",
        &meta_full(0o755, 0, 0, 0, vec![cap.clone()]),
        b"x",
    );
    let many = vec![
        cap.clone(),
        Xattr {
            name: b"user.mime_type".to_vec(),
            value: b"text/plain".to_vec(),
        },
        Xattr {
            name: b"trusted.overlay.opaque".to_vec(),
            value: b"y".to_vec(),
        },
        Xattr {
            name: b"user.big".to_vec(),
            value: vec![0xAB; 3000],
        },
        Xattr {
            name: b"user.empty".to_vec(),
            value: vec![],
        },
    ];
    add_file(
        &mut w,
        "large",
        &meta_full(0o644, 0, 0, 0, many.clone()),
        b"y",
    );
    w.add(
        Path::new("d"),
        &meta_full(0o755, 0, 0, 0, many.clone()),
        EntryKind::Directory,
    )
    .unwrap();
    let too_big = vec![Xattr {
        name: b"user.huge".to_vec(),
        value: vec![1; 5000],
    }];
    assert!(matches!(
        w.add(
            Path::new("huge"),
            &meta_full(0o644, 0, 0, 0, too_big),
            EntryKind::Fifo
        ),
        Err(Error::XattrTooLarge(_))
    ));
    let bad = vec![Xattr {
        name: b"bogus.name".to_vec(),
        value: vec![],
    }];
    assert!(matches!(
        w.add(
            Path::new("bad"),
            &meta_full(0o644, 0, 0, 0, bad),
            EntryKind::Fifo
        ),
        Err(Error::UnsupportedXattr { .. })
    ));
    w.finish().unwrap();
    fsck(&img);
    let st = debugfs1(&img, "stat /small");
    assert!(st.contains("File ACL: 0"), "{st}");
    let st = debugfs1(&img, "stat /large");
    assert!(!st.contains("File ACL: 0"), "{st}");
    for p in ["/large", "/d"] {
        let ea = debugfs1(&img, &format!("ea_list {p}"));
        for x in &many {
            assert!(
                ea.contains(&String::from_utf8_lossy(&x.name).to_string()),
                "{p}: {ea}"
            );
        }
    }
    let dir2 = tempfile::tempdir().unwrap();
    let out = dir2.path().join("v");
    debugfs1(
        &img,
        &format!("ea_get -f {} /large user.big", out.display()),
    );
    assert_eq!(std::fs::read(&out).unwrap(), vec![0xAB; 3000]);
    debugfs1(
        &img,
        &format!("ea_get -f {} /small security.capability", out.display()),
    );
    assert_eq!(std::fs::read(&out).unwrap(), cap.value);
}

#[test]
fn too_small_exact_size_is_a_typed_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "small.img");
    let opts = Options {
        size: SizePolicy::Exact(8 << 20),
        ..Options::default()
    };
    let mut w = Ext4Writer::create(&img, opts).unwrap();
    let data: Vec<u8> = vec![7; 20 << 20];
    add_file(&mut w, "f", &meta(0o644), &data);
    match w.finish() {
        Err(Error::TooSmall {
            needed_bytes,
            requested_bytes,
        }) => {
            assert_eq!(requested_bytes, 8 << 20);
            assert!(needed_bytes > 20 << 20, "{needed_bytes}");
            // The reported size really is enough.
            let img2 = img_path(&dir, "fits.img");
            let opts = Options {
                size: SizePolicy::Exact(needed_bytes),
                ..Options::default()
            };
            let mut w = Ext4Writer::create(&img2, opts).unwrap();
            add_file(&mut w, "f", &meta(0o644), &data);
            let s = w.finish().unwrap();
            assert_eq!(s.size_bytes, needed_bytes);
            fsck(&img2);
            std::fs::remove_file(&img2).unwrap();
        }
        other => panic!("expected TooSmall, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn failed_or_dropped_build_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "fail.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    let mut short: &[u8] = b"only this";
    let err = w
        .add(
            Path::new("f"),
            &meta(0o644),
            EntryKind::File {
                size: 100,
                data: &mut short,
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::ShortRead { got: 9, .. }), "{err}");
    assert!(!img.exists());
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn exact_size_output_is_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "sparse.img");
    let opts = Options {
        size: SizePolicy::Exact(2 << 30),
        ..Options::default()
    };
    let mut w = Ext4Writer::create(&img, opts).unwrap();
    add_file(&mut w, "hello", &meta(0o644), b"hello");
    let s = w.finish().unwrap();
    let m = std::fs::metadata(&img).unwrap();
    assert_eq!(m.len(), 2 << 30);
    assert_eq!(s.size_bytes, 2 << 30);
    assert!(
        m.blocks() * 512 < 2 << 20,
        "allocated {} bytes",
        m.blocks() * 512
    );
    assert!(s.used_bytes > s.blocks_used); // journal + tables count as used fs blocks
    fsck(&img);
}

#[test]
fn auto_size_has_one_gib_floor_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "auto.img");
    let mut w = Ext4Writer::create(&img, Options::default()).unwrap();
    add_file(&mut w, "bin/app", &meta(0o755), b"\x7fELF");
    let s = w.finish().unwrap();
    assert_eq!(s.size_bytes, 1 << 30);
    fsck(&img);
}

fn build_sample(img: &Path, seed: [u8; 16]) {
    let opts = Options {
        seed,
        volume_label: Some("rootfs".into()),
        ..small_opts()
    };
    let mut w = Ext4Writer::create(img, opts).unwrap();
    for i in 0..50 {
        let data: Vec<u8> = (0..i * 997).map(|j| (j * 31 + i) as u8).collect();
        add_file(
            &mut w,
            &format!("d{}/f{i}", i % 7),
            &meta_full(0o640, i as u32, 7, i as i64, vec![]),
            &data,
        );
    }
    w.add(
        Path::new("d1"),
        &meta_full(0o700, 5, 5, 99, vec![]),
        EntryKind::Directory,
    )
    .unwrap();
    w.finish().unwrap();
}

#[test]
fn builds_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        img_path(&dir, "a"),
        img_path(&dir, "b"),
        img_path(&dir, "c"),
    );
    build_sample(&a, [1; 16]);
    build_sample(&b, [1; 16]);
    build_sample(&c, [2; 16]);
    let (ba, bb, bc) = (
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        std::fs::read(&c).unwrap(),
    );
    assert!(ba == bb, "same input and seed must give identical images");
    assert!(ba != bc, "a different seed must change the UUID");
    fsck(&a);
    let st = debugfs1(&a, "stats");
    assert!(st.contains("Filesystem volume name:   rootfs"), "{st}");
}

#[test]
fn replace_remove_and_late_directory_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "replace.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    add_file(&mut w, "a/b/c", &meta(0o644), b"old");
    add_file(&mut w, "t1", &meta(0o644), b"shared");
    w.add(
        Path::new("t2"),
        &meta(0),
        EntryKind::Hardlink {
            target: Path::new("t1"),
        },
    )
    .unwrap();
    // Overwriting t1 must not change t2 (the hardlink keeps the old inode).
    add_file(&mut w, "t1", &meta(0o600), b"new");
    // Replace a directory (and its subtree) by a file, then put a directory back.
    add_file(&mut w, "a", &meta(0o644), b"now a file");
    w.add(Path::new("a"), &meta(0o711), EntryKind::Directory)
        .unwrap();
    add_file(&mut w, "a/x", &meta(0o644), b"x");
    // Directory metadata given after its children wins.
    add_file(&mut w, "late/child", &meta(0o644), b"c");
    w.add(
        Path::new("late"),
        &meta_full(0o750, 42, 43, 0, vec![]),
        EntryKind::Directory,
    )
    .unwrap();
    // Root metadata.
    w.add(
        Path::new("."),
        &meta_full(0o755, 0, 0, 0, vec![]),
        EntryKind::Directory,
    )
    .unwrap();
    assert!(w.remove(Path::new("gone")).is_ok_and(|r| !r));
    add_file(&mut w, "gone/inner", &meta(0o644), b"g");
    assert!(w.remove(Path::new("gone")).unwrap());
    assert!(matches!(
        w.add(
            Path::new("h"),
            &meta(0),
            EntryKind::Hardlink {
                target: Path::new("missing")
            }
        ),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        w.add(
            Path::new("h"),
            &meta(0),
            EntryKind::Hardlink {
                target: Path::new("late")
            }
        ),
        Err(Error::HardlinkToDirectory(_))
    ));
    assert!(matches!(
        w.add(Path::new("t1/under"), &meta(0), EntryKind::Fifo),
        Err(Error::NotADirectory(_))
    ));
    assert!(matches!(
        w.add(Path::new(""), &meta(0), EntryKind::Fifo),
        Err(Error::RootNotDirectory)
    ));
    w.finish().unwrap();
    fsck(&img);
    assert_eq!(cat(&img, "/t1"), b"new");
    assert_eq!(cat(&img, "/t2"), b"shared");
    let root = ls(&img, "/");
    let names: Vec<&str> = root.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["a", "late", "lost+found", "t1", "t2"]);
    let a = ls(&img, "/a");
    assert_eq!(
        a.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        vec!["x"]
    );
    let late = root.iter().find(|e| e.name == "late").unwrap();
    assert_eq!((late.mode, late.uid, late.gid), (0o40750, 42, 43));
    assert_eq!(root.iter().find(|e| e.name == "a").unwrap().mode, 0o40711);
}

#[test]
fn resize2fs_can_grow_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "grow.img");
    let opts = Options {
        size: SizePolicy::Exact(256 << 20),
        ..Options::default()
    };
    let mut w = Ext4Writer::create(&img, opts).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    add_file(&mut w, "data/blob", &meta(0o644), &data);
    w.finish().unwrap();
    fsck(&img);
    let out = Command::new("/usr/sbin/resize2fs")
        .arg(&img)
        .arg("20G")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "resize2fs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 20 << 30);
    fsck(&img);
    assert_eq!(cat(&img, "/data/blob"), data);
}

#[test]
fn two_level_htree_with_long_names() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "htree2.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    let m = meta(0o644);
    // 12000 × 208-byte entries ≈ 630 leaf blocks: more than one dx root can index.
    for i in 0..12_000u32 {
        let p = format!("long/{}{i:06}", "n".repeat(194));
        w.add(Path::new(&p), &m, EntryKind::Fifo).unwrap();
    }
    w.finish().unwrap();
    fsck(&img);
    let dump = debugfs1(&img, "htree_dump /long");
    assert!(
        dump.contains("Indirect levels: 1"),
        "{}",
        &dump[..dump.len().min(1000)]
    );
    assert_eq!(ls(&img, "/long").len(), 12_000);
}

#[test]
fn htree_with_non_ascii_names() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "utf8.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    let m = meta(0o644);
    // Bytes >= 0x80 hash differently as signed and unsigned chars.
    for i in 0..3000u32 {
        let mut name = b"intl/".to_vec();
        name.extend_from_slice("Grüße-ñ-".as_bytes());
        name.extend_from_slice(&[0xFF, 0x80 + (i % 100) as u8]);
        name.extend_from_slice(format!("-{i}").as_bytes());
        w.add(Path::new(OsStr::from_bytes(&name)), &m, EntryKind::Fifo)
            .unwrap();
    }
    w.finish().unwrap();
    fsck(&img);
    let st = debugfs1(&img, "stat /intl");
    assert!(st.contains("Flags: 0x81000"), "{st}");
}

#[test]
fn names_with_control_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "ctrl.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    for i in 0..1000u32 {
        let mut name = b"ctrl/".to_vec();
        name.extend_from_slice(&[b'\n', 1 + (i % 30) as u8, b'\t', 0x7F]);
        name.extend_from_slice(format!("{i}").as_bytes());
        w.add(
            Path::new(OsStr::from_bytes(&name)),
            &meta(0o644),
            EntryKind::Fifo,
        )
        .unwrap();
    }
    w.finish().unwrap();
    fsck(&img);
    let st = debugfs1(&img, "stat /ctrl");
    assert!(st.contains("Flags: 0x81000"), "{st}");
}

#[test]
fn symlinks_are_always_0777_and_other_mode_subtleties_hold() {
    let dir = tempfile::tempdir().unwrap();
    let img = img_path(&dir, "modes.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    add_file(&mut w, "target", &meta(0o644), b"t");
    let owned = meta_full(0o644, 7, 8, 1_000_000, vec![]);
    // Short (in-inode) and long (block) targets, with header modes symlink(2) ignores.
    for (path, mode, target) in [
        ("short-0644", 0o644, "target".to_string()),
        ("short-0600", 0o600, "target".to_string()),
        ("long-0600", 0o600, "x".repeat(100)),
    ] {
        let m = Metadata {
            mode,
            ..owned.clone()
        };
        w.add(
            Path::new(path),
            &m,
            EntryKind::Symlink {
                target: OsStr::new(&target),
            },
        )
        .unwrap();
    }
    // A hardlink to a symlink shares the link's inode (and so its 0777).
    w.add(
        Path::new("hard-to-link"),
        &meta(0o600),
        EntryKind::Hardlink {
            target: Path::new("short-0600"),
        },
    )
    .unwrap();
    // A directory without x bits still gets its children (no host permission checks).
    w.add(Path::new("locked"), &meta(0o600), EntryKind::Directory)
        .unwrap();
    add_file(&mut w, "locked/child", &meta(0o644), b"inside");
    w.finish().unwrap();
    fsck(&img);
    let root = ls(&img, "/");
    let get = |n: &str| root.iter().find(|e| e.name == n).unwrap().clone();
    for name in ["short-0644", "short-0600", "long-0600"] {
        let e = get(name);
        assert_eq!(e.mode, 0o120777, "{name}");
        // Owner still comes from the header.
        assert_eq!((e.uid, e.gid), (7, 8), "{name}");
    }
    assert_eq!(get("hard-to-link").ino, get("short-0600").ino);
    assert_eq!(get("hard-to-link").mode, 0o120777);
    assert_eq!(get("locked").mode, 0o40600);
    assert_eq!(cat(&img, "/locked/child"), b"inside");
    // Times still come from the header (debugfs prints them as raw hex seconds).
    let stat = debugfs1(&img, "stat /short-0644");
    assert!(stat.contains("mtime: 0x000f4240"), "{stat}");
}
