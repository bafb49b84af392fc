//! Random trees → image → e2fsck clean and identical when read back with debugfs.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;

use banger_ext4::{EntryKind, Ext4Writer, Metadata, Xattr};
use common::*;
use proptest::prelude::*;

const DIRS: [&str; 6] = ["", "a", "a/b", "c", "c/d/e", "f"];

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Fifo,
    Char(u32, u32),
    Hardlink(usize),
}

#[derive(Debug, Clone)]
struct Op {
    dir: usize,
    name: String,
    kind: Kind,
    mode: u16,
    uid: u32,
    gid: u32,
    xattr: Option<Vec<u8>>,
}

fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        // Block-structured: a mix of zero (hole) and data blocks.
        proptest::collection::vec(any::<bool>(), 1..12).prop_map(|blocks| {
            let mut v = Vec::new();
            for (i, data) in blocks.iter().enumerate() {
                let b = if *data {
                    (i as u8).wrapping_mul(37) | 1
                } else {
                    0
                };
                v.extend(std::iter::repeat_n(b, 4096));
            }
            v.truncate(v.len() - 100);
            v
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        1 => Just(Kind::Dir),
        4 => content().prop_map(Kind::File),
        2 => "[a-z/.]{1,120}".prop_map(Kind::Symlink),
        1 => Just(Kind::Fifo),
        1 => (0u32..4096, 0u32..100_000).prop_map(|(a, b)| Kind::Char(a, b)),
        2 => (0usize..64).prop_map(Kind::Hardlink),
    ];
    (
        0..DIRS.len(),
        "f_[a-z0-9]{1,8}",
        kind,
        0u16..0o10000,
        0u32..100_000,
        0u32..100_000,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..400)),
    )
        .prop_map(|(dir, name, kind, mode, uid, gid, xattr)| Op {
            dir,
            name,
            kind,
            mode,
            uid,
            gid,
            xattr,
        })
}

#[derive(Debug, Clone)]
struct Want {
    mode: u32,
    uid: u32,
    gid: u32,
    size: usize,
    content: Option<Vec<u8>>,
    group: usize,
    xattr: Option<usize>,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn run(ops: Vec<Op>) {
    let tmp = tempfile::tempdir().unwrap();
    let img = img_path(&tmp, "prop.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    let mut files: BTreeMap<String, Want> = BTreeMap::new();
    let mut dirs: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    // Every directory exists up front (implicitly, 0755 root:root) via a marker fifo.
    for (k, d) in DIRS.iter().enumerate().filter(|(_, d)| !d.is_empty()) {
        let mut p = String::new();
        for c in d.split('/') {
            p = join(&p, c);
            dirs.entry(p.clone()).or_insert((0o40755, 0, 0));
        }
        let m = Metadata {
            mode: 0o644,
            ..Default::default()
        };
        w.add(Path::new(&format!("{d}/f_keep")), &m, EntryKind::Fifo)
            .unwrap();
        let want = Want {
            mode: 0o10644,
            uid: 0,
            gid: 0,
            size: 0,
            content: None,
            group: usize::MAX - k,
            xattr: None,
        };
        files.insert(join(d, "f_keep"), want);
    }
    let mut history: Vec<String> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let xattrs: Vec<Xattr> = op
            .xattr
            .iter()
            .map(|v| Xattr {
                name: b"user.prop".to_vec(),
                value: v.clone(),
            })
            .collect();
        let meta = Metadata {
            uid: op.uid,
            gid: op.gid,
            mode: op.mode,
            xattrs,
            ..Default::default()
        };
        let base = Want {
            mode: 0,
            uid: op.uid,
            gid: op.gid,
            size: 0,
            content: None,
            group: i,
            xattr: op.xattr.as_ref().map(|v| v.len()),
        };
        let path = join(DIRS[op.dir], &op.name);
        let want = match &op.kind {
            Kind::Dir => {
                let d = DIRS[op.dir];
                w.add(Path::new(d), &meta, EntryKind::Directory).unwrap();
                if !d.is_empty() {
                    dirs.insert(d.to_string(), (0o40000 | op.mode as u32, op.uid, op.gid));
                }
                continue;
            }
            Kind::File(data) => {
                let mut r = data.as_slice();
                let kind = EntryKind::File {
                    size: data.len() as u64,
                    data: &mut r,
                };
                w.add(Path::new(&path), &meta, kind).unwrap();
                Want {
                    mode: 0o100000 | op.mode as u32,
                    size: data.len(),
                    content: Some(data.clone()),
                    ..base
                }
            }
            Kind::Symlink(t) => {
                let kind = EntryKind::Symlink {
                    target: OsStr::new(t),
                };
                w.add(Path::new(&path), &meta, kind).unwrap();
                Want {
                    // Linux symlinks are always 0777, whatever mode was asked for.
                    mode: 0o120777,
                    size: t.len(),
                    content: (t.len() >= 60).then(|| t.clone().into_bytes()),
                    ..base
                }
            }
            Kind::Fifo => {
                w.add(Path::new(&path), &meta, EntryKind::Fifo).unwrap();
                Want {
                    mode: 0o10000 | op.mode as u32,
                    ..base
                }
            }
            Kind::Char(major, minor) => {
                let kind = EntryKind::CharDevice {
                    major: *major,
                    minor: *minor,
                };
                w.add(Path::new(&path), &meta, kind).unwrap();
                Want {
                    mode: 0o20000 | op.mode as u32,
                    ..base
                }
            }
            Kind::Hardlink(k) => {
                if history.is_empty() {
                    continue;
                }
                let target = history[k % history.len()].clone();
                let Some(t) = files.get(&target).cloned() else {
                    continue;
                };
                if target == path {
                    continue;
                }
                let kind = EntryKind::Hardlink {
                    target: Path::new(&target),
                };
                w.add(Path::new(&path), &meta, kind).unwrap();
                t
            }
        };
        history.push(path.clone());
        files.insert(path, want);
    }
    w.finish().unwrap();
    fsck(&img);

    // Read everything back in one debugfs run.
    let out_dir = tempfile::tempdir().unwrap();
    let mut cmds = Vec::new();
    let all_dirs: Vec<String> = std::iter::once(String::new())
        .chain(dirs.keys().cloned())
        .collect();
    for d in &all_dirs {
        cmds.push(format!("ls -p \"/{d}\""));
    }
    let paths: Vec<&String> = files.keys().collect();
    for (i, p) in paths.iter().enumerate() {
        if files[*p].content.is_some() {
            let dest = out_dir.path().join(i.to_string());
            cmds.push(format!("dump \"/{p}\" {}", dest.display()));
        }
        cmds.push(format!("ea_list \"/{p}\""));
    }
    let out = debugfs(&img, &cmds);
    let mut sections: BTreeMap<String, String> = BTreeMap::new();
    let mut cur = String::new();
    for line in out.lines() {
        if let Some(c) = line.strip_prefix("debugfs: ") {
            cur = c.to_string();
            sections.insert(cur.clone(), String::new());
        } else if let Some(s) = sections.get_mut(&cur) {
            s.push_str(line);
            s.push('\n');
        }
    }
    let mut inode_of_group: BTreeMap<usize, u64> = BTreeMap::new();
    let mut group_of_inode: BTreeMap<u64, usize> = BTreeMap::new();
    for d in &all_dirs {
        let listing = parse_ls(&sections[&format!("ls -p \"/{d}\"")]);
        let got: BTreeSet<String> = listing.iter().map(|e| e.name.clone()).collect();
        let mut want: BTreeSet<String> = BTreeSet::new();
        for p in files.keys().chain(dirs.keys()) {
            let (parent, name) = p.rsplit_once('/').unwrap_or(("", p));
            if parent == d {
                want.insert(name.to_string());
            }
        }
        if d.is_empty() {
            want.insert("lost+found".into());
        }
        assert_eq!(got, want, "entries of /{d}");
        for e in &listing {
            let p = join(d, &e.name);
            if let Some(&(mode, uid, gid)) = dirs.get(&p) {
                assert_eq!((e.mode, e.uid, e.gid), (mode, uid, gid), "dir {p}");
            } else if let Some(f) = files.get(&p) {
                assert_eq!((e.mode, e.uid, e.gid), (f.mode, f.uid, f.gid), "{p}");
                let t = f.mode & 0o170000;
                if t == 0o100000 || t == 0o120000 {
                    assert_eq!(e.size, f.size.to_string(), "size of {p}");
                }
                // Hardlink groups ↔ inode numbers, both ways.
                assert_eq!(
                    *inode_of_group.entry(f.group).or_insert(e.ino),
                    e.ino,
                    "{p}"
                );
                assert_eq!(
                    *group_of_inode.entry(e.ino).or_insert(f.group),
                    f.group,
                    "{p}"
                );
            }
        }
    }
    for (i, p) in paths.iter().enumerate() {
        let f = &files[*p];
        if let Some(c) = &f.content {
            let got = std::fs::read(out_dir.path().join(i.to_string())).unwrap_or_default();
            assert!(got == *c, "content of {p}");
        }
        let ea = &sections[&format!("ea_list \"/{p}\"")];
        match f.xattr {
            Some(n) => assert!(ea.contains(&format!("user.prop ({n})")), "{p}: {ea}"),
            None => assert!(!ea.contains("user.prop"), "{p}: {ea}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_trees_roundtrip(ops in proptest::collection::vec(op(), 0..40)) {
        run(ops);
    }
}

/// Big directories of arbitrary byte names (multi-round hashes, bytes >= 0x80): the hash
/// index must satisfy e2fsck and every name must read back.
fn big_dir(names: BTreeSet<Vec<u8>>) {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let img = img_path(&tmp, "bigdir.img");
    let mut w = Ext4Writer::create(&img, small_opts()).unwrap();
    let m = Metadata {
        mode: 0o644,
        ..Default::default()
    };
    for n in &names {
        let mut p = b"d/".to_vec();
        p.extend_from_slice(n);
        w.add(Path::new(OsStr::from_bytes(&p)), &m, EntryKind::Fifo)
            .unwrap();
    }
    w.finish().unwrap();
    fsck(&img);
    // debugfs prints names lossily; compare counts and the ASCII ones exactly.
    let listing = ls(&img, "/d");
    assert_eq!(listing.len(), names.len());
    for n in names
        .iter()
        .filter(|n| n.iter().all(|b| b.is_ascii_alphanumeric()))
    {
        let s = String::from_utf8_lossy(n).into_owned();
        assert!(listing.iter().any(|e| e.name == s), "{s} missing");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn big_directories_hash_index(
        names in proptest::collection::btree_set(
            prop_oneof![
                proptest::collection::vec(
                    // Printable ASCII except '/', and high bytes: debugfs prints one line each.
                    // Generated from ranges (not filtered) so no case can run out of rejects.
                    prop_oneof![0x20u8..0x2F, 0x30u8..0x7F, 0x80u8..=0xFF],
                    1..255,
                ),
                "[a-zA-Z0-9]{1,40}".prop_map(String::into_bytes),
            ]
            .prop_filter("not . or ..", |n| n != b"." && n != b".."),
            200..1500,
        )
    ) {
        big_dir(names);
    }
}
