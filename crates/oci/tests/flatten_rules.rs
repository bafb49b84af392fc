//! Flattening rules checked on the emitted stream itself: hostile input, limits,
//! compression, digests, and the stream guarantees the ext4 writer relies on.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use banger_oci::{CollectSink, Digest, EntryKind, Error, LayerInput, Limits, flatten};
use banger_testkit::layers::{LayerBuilder, Member, gzip, zstd};
use banger_testkit::oci_image::{Compression, Layer};
use common::collect;

fn err(layers: Vec<Vec<u8>>) -> Error {
    collect(layers).expect_err("flatten should fail")
}

fn paths(s: &CollectSink) -> Vec<String> {
    s.entries.iter().map(|(e, _)| e.path.clone()).collect()
}

#[test]
fn p05_whiteout_and_nested_whiteout_in_one_layer() {
    let l1 = LayerBuilder::new()
        .dir("foo", 0o755)
        .file("foo/bar", b"b")
        .file("foo/baz", b"z")
        .finish();
    let l2 = LayerBuilder::new()
        .whiteout("foo")
        .whiteout("foo/bar")
        .finish();
    let s = collect(vec![l1, l2]).unwrap();
    assert!(
        paths(&s).iter().all(|p| !p.starts_with("foo")),
        "{:?}",
        paths(&s)
    );
}

#[test]
fn p14_dotdot_names_rejected_with_layer_and_entry() {
    let l = LayerBuilder::new().file("../evil", b"x").finish();
    let e = err(vec![l]);
    let msg = e.to_string();
    assert!(matches!(e, Error::InvalidLayer { .. }), "{msg}");
    assert!(
        msg.contains("../evil") && msg.contains("sha256:") && msg.contains(".."),
        "{msg}"
    );
    let l = LayerBuilder::new()
        .file("a/../../etc/passwd", b"x")
        .finish();
    assert!(matches!(err(vec![l]), Error::InvalidLayer { .. }));
    let l = LayerBuilder::new()
        .file("f", b"x")
        .hardlink("h", "../../etc/shadow")
        .finish();
    assert!(err(vec![l]).to_string().contains("hardlink target"));
}

#[test]
fn p14_absolute_names_are_confined() {
    let s = collect(vec![
        LayerBuilder::new()
            .file("/etc/x", b"x")
            .hardlink("/etc/y", "/etc/x")
            .finish(),
    ])
    .unwrap();
    assert_eq!(paths(&s), vec!["etc/x", "etc/y"]);
    assert_eq!(
        s.entries[1].0.kind,
        EntryKind::Hardlink {
            target: "etc/x".into()
        }
    );
}

#[test]
fn p14_never_write_through_symlink() {
    // Same layer.
    let l = LayerBuilder::new()
        .symlink("a", "/etc")
        .file("a/passwd", b"pwned")
        .finish();
    let msg = err(vec![l]).to_string();
    assert!(
        msg.contains("a/passwd") && msg.contains("not a directory"),
        "{msg}"
    );
    // Across layers.
    let l1 = LayerBuilder::new().symlink("a", "/etc").finish();
    let l2 = LayerBuilder::new().file("a/passwd", b"pwned").finish();
    let msg = err(vec![l1, l2]).to_string();
    assert!(msg.contains("symlink") && msg.contains("\"a\""), "{msg}");
}

#[test]
fn p14_hardlink_problems() {
    assert!(
        err(vec![LayerBuilder::new().hardlink("h", "missing").finish()])
            .to_string()
            .contains("not found")
    );
    assert!(
        err(vec![
            LayerBuilder::new()
                .dir("d", 0o755)
                .hardlink("h", "d")
                .finish()
        ])
        .to_string()
        .contains("directory")
    );
    let l1 = LayerBuilder::new().file("t", b"t").finish();
    let l2 = LayerBuilder::new().whiteout("t").finish();
    let l3 = LayerBuilder::new().hardlink("h", "t").finish();
    assert!(err(vec![l1, l2, l3]).to_string().contains("does not exist"));
}

#[test]
fn p14_truncated_and_corrupt_streams() {
    let full = LayerBuilder::new()
        .file("big", &vec![7u8; 100_000])
        .finish();
    let truncated = full[..20_000].to_vec();
    assert!(matches!(err(vec![truncated]), Error::InvalidLayer { .. }));
    // Corrupt gzip: flip bytes in the middle of a compressed blob.
    let tmp = tempfile::tempdir().unwrap();
    let mut gz = gzip(&full);
    let mid = gz.len() / 2;
    gz[mid] ^= 0xff;
    gz[mid + 1] ^= 0xff;
    let p = tmp.path().join("blob");
    std::fs::write(&p, &gz).unwrap();
    let input = LayerInput {
        path: p,
        digest: Digest::of(&gz),
        diff_id: None,
        verified: false,
    };
    let e = flatten(&[input], &mut CollectSink::default(), &Limits::default()).unwrap_err();
    assert!(matches!(e, Error::InvalidLayer { .. }), "{e}");
    // Corrupt zstd.
    let mut zs = zstd(&full);
    let n = zs.len();
    zs.truncate(n - 10);
    let p = tmp.path().join("blob2");
    std::fs::write(&p, &zs).unwrap();
    let input = LayerInput {
        path: p,
        digest: Digest::of(&zs),
        diff_id: None,
        verified: false,
    };
    assert!(flatten(&[input], &mut CollectSink::default(), &Limits::default()).is_err());
    // Garbage header.
    let garbage = vec![0x41u8; 1024];
    assert!(matches!(err(vec![garbage]), Error::InvalidLayer { .. }));
}

#[test]
fn p14_decompression_bomb_and_entry_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let bomb = LayerBuilder::new()
        .file("zeros", &vec![0u8; 8 << 20])
        .finish();
    let ins = common::inputs(
        tmp.path(),
        &[Layer {
            tar: bomb,
            compression: Compression::Gzip,
        }],
    );
    assert!(std::fs::metadata(&ins[0].path).unwrap().len() < 100_000);
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        max_entries: 1000,
        blob_bytes_read: None,
    };
    let e = flatten(&ins, &mut CollectSink::default(), &limits).unwrap_err();
    assert!(matches!(e, Error::LimitExceeded(_)), "{e}");
    let mut many = LayerBuilder::new();
    for i in 0..50 {
        many = many.file(&format!("f{i}"), b"");
    }
    let tmp2 = tempfile::tempdir().unwrap();
    let ins = common::inputs(
        tmp2.path(),
        &[Layer {
            tar: many.finish(),
            compression: Compression::None,
        }],
    );
    let e = flatten(
        &ins,
        &mut CollectSink::default(),
        &Limits {
            max_unpacked_bytes: u64::MAX,
            max_entries: 10,
            blob_bytes_read: None,
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::LimitExceeded(_)), "{e}");
}

#[test]
fn p14_absurd_size_field_errors() {
    // A header claiming 8 GiB of data with none following.
    let l = LayerBuilder::new()
        .member(Member {
            data: Vec::new(),
            ..Member::new("x", b'0')
        })
        .unterminated();
    let mut l = l;
    // Patch the size field to 077777777777 (octal) and fix the checksum.
    l[124..136].copy_from_slice(b"77777777777\0");
    l[148..156].fill(b' ');
    let sum: u32 = l[..512].iter().map(|b| u32::from(*b)).sum();
    l[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    assert!(matches!(err(vec![l]), Error::InvalidLayer { .. }));
}

#[test]
fn compressions_and_multi_member_gzip() {
    let tar = LayerBuilder::new()
        .file("a", b"hello")
        .file("b", &vec![1u8; 300_000])
        .finish();
    let tmp = tempfile::tempdir().unwrap();
    let mut multi = gzip(&tar[..512 * 2]);
    multi.extend(gzip(&tar[512 * 2..]));
    let mut zmulti = zstd(&tar[..1024]);
    zmulti.extend(zstd(&tar[1024..]));
    for (i, blob) in [tar.clone(), gzip(&tar), zstd(&tar), multi, zmulti]
        .into_iter()
        .enumerate()
    {
        let p = tmp.path().join(format!("l{i}"));
        std::fs::write(&p, &blob).unwrap();
        let input = LayerInput {
            path: p,
            digest: Digest::of(&blob),
            diff_id: Some(Digest::of(&tar)),
            verified: false,
        };
        let mut s = CollectSink::default();
        flatten(&[input], &mut s, &Limits::default())
            .unwrap_or_else(|e| panic!("variant {i}: {e}"));
        assert_eq!(
            s.entries[0].1.as_deref(),
            Some(&b"hello"[..]),
            "variant {i}"
        );
        assert_eq!(s.entries[1].1.as_ref().map(Vec::len), Some(300_000));
    }
}

#[test]
fn p17_digest_and_diff_id_mismatch() {
    let tar = LayerBuilder::new().file("a", b"hello").finish();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("l");
    let gz = gzip(&tar);
    std::fs::write(&p, &gz).unwrap();
    let wrong = Digest::of(b"other");
    let e = flatten(
        &[LayerInput {
            path: p.clone(),
            digest: Digest::of(&gz),
            diff_id: Some(wrong.clone()),
            verified: false,
        }],
        &mut CollectSink::default(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::DigestMismatch { .. }) && e.to_string().contains("diff_id"),
        "{e}"
    );
    let e = flatten(
        &[LayerInput {
            path: p,
            digest: wrong,
            diff_id: None,
            verified: false,
        }],
        &mut CollectSink::default(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
}

#[test]
fn stream_guarantees() {
    let l1 = LayerBuilder::new()
        .dir("d", 0o755)
        .file("d/x", b"1")
        .file("t1", b"old")
        .hardlink("t2", "t1")
        .finish();
    let l2 = LayerBuilder::new()
        .file("d/x", b"2")
        .file("t1", b"new")
        .dir("d", 0o700)
        .finish();
    let s = collect(vec![l1, l2]).unwrap();
    let ps = paths(&s);
    let mut seen = std::collections::HashSet::new();
    for (e, _) in &s.entries {
        assert!(!e.path.starts_with('/') && !e.path.is_empty());
        if e.kind != EntryKind::Directory {
            assert!(
                seen.insert(e.path.clone()),
                "{} emitted twice: {ps:?}",
                e.path
            );
        }
        if let EntryKind::Hardlink { target } = &e.kind {
            assert!(
                seen.contains(target),
                "link {} before target {target}",
                e.path
            );
        }
    }
    let x = s.entries.iter().find(|(e, _)| e.path == "d/x").unwrap();
    assert_eq!(x.1.as_deref(), Some(&b"2"[..]));
    let d = s.entries.iter().find(|(e, _)| e.path == "d").unwrap();
    assert_eq!(d.0.meta.mode, 0o700);
    let t2 = s.entries.iter().find(|(e, _)| e.path == "t2").unwrap();
    assert_eq!(t2.1.as_deref(), Some(&b"old"[..]));
}

#[test]
fn p10_large_directory_is_fast() {
    let mut b = LayerBuilder::new().dir("big", 0o755);
    for i in 0..50_000 {
        b = b.member(Member::new(format!("big/f{i}"), b'0'));
    }
    let lower = LayerBuilder::new()
        .dir("big", 0o755)
        .file("big/f1", b"lower")
        .finish();
    let t = std::time::Instant::now();
    let s = collect(vec![lower, b.finish()]).unwrap();
    assert_eq!(s.entries.len(), 50_001);
    assert!(t.elapsed().as_secs() < 30, "took {:?}", t.elapsed());
}

/// A layer whose GNU long-name header declares 1 GiB (a few hundred bytes compressed) is
/// refused at that header, before the tar crate would buffer the name whole.
#[test]
fn an_oversized_extension_header_is_refused_before_it_is_buffered() {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_path("././@LongLink").unwrap();
    header.set_size(1 << 30);
    header.set_mode(0o644);
    header.set_cksum();
    let mut layer = header.as_bytes().to_vec();
    // The first 4 KiB of the "name": all the guard needs to see is the header.
    layer.extend(std::iter::repeat_n(b'a', 4096));
    let msg = err(vec![layer]).to_string();
    assert!(
        msg.contains("extension header") && msg.contains("GNU long name"),
        "{msg}"
    );
}
