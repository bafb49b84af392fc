//! Blob cache: only whole verified blobs become visible (PITFALLS #16, #17).

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_oci::{BlobCache, BlobWriter, Digest, Error};
use banger_testkit::wait;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn blobs(cache: &BlobCache) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.root().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn tmp_files(cache: &BlobCache) -> usize {
    std::fs::read_dir(cache.root().join("tmp")).unwrap().count()
}

#[tokio::test]
async fn early_stop_and_wrong_content_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let data = vec![5u8; 100_000];
    let d = Digest::of(&data);
    // A reader that stops early: size mismatch, nothing visible.
    let e = cache
        .ensure(&d, Some(data.len() as u64), async |w: &mut BlobWriter| {
            w.write(&data[..10]).await
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::SizeMismatch { .. }), "{e}");
    // Wrong content of the right size.
    let e = cache
        .ensure(&d, Some(data.len() as u64), async |w: &mut BlobWriter| {
            w.write(&vec![6u8; 100_000]).await
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    // Unknown size, zero bytes: still a digest mismatch, no zero-byte blob.
    let e = cache
        .ensure(&d, None, async |_w: &mut BlobWriter| Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(blobs(&cache).is_empty());
    assert_eq!(tmp_files(&cache), 0);
    let (p, fetched) = cache
        .ensure(&d, Some(100_000), async |w: &mut BlobWriter| {
            w.write(&data).await
        })
        .await
        .unwrap();
    assert!(fetched);
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert_eq!(p, dir.path().join("blobs/sha256").join(d.hex()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_fetch_leaves_no_partial_blob() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(BlobCache::open(dir.path()).unwrap());
    let d = Digest::of(b"never finished");
    let c2 = cache.clone();
    let d2 = d.clone();
    let task = tokio::spawn(async move {
        c2.ensure(&d2, None, async |w: &mut BlobWriter| {
            w.write(b"never").await?;
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            Ok(())
        })
        .await
    });
    wait::until("the fetch to open its temp file", || tmp_files(&cache) == 1);
    task.abort();
    let _ = task.await;
    assert!(blobs(&cache).is_empty());
    assert_eq!(tmp_files(&cache), 0);
}

#[tokio::test]
async fn concurrent_fetches_download_once_and_reset_works() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(BlobCache::open(dir.path()).unwrap());
    let data = b"shared layer".to_vec();
    let d = Digest::of(&data);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (cache, data, d, calls) = (cache.clone(), data.clone(), d.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .ensure(&d, Some(data.len() as u64), async |w: &mut BlobWriter| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    w.write(b"garbage first").await?;
                    w.reset().await?;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    w.write(&data).await
                })
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn corrupted_cached_blob_is_refetched() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let data = b"good bytes".to_vec();
    let d = Digest::of(&data);
    let (p, _) = cache
        .ensure(&d, None, async |w: &mut BlobWriter| w.write(&data).await)
        .await
        .unwrap();
    std::fs::write(&p, b"bad bytes!").unwrap(); // same size, other content
    assert!(!cache.verify(&d, Some(data.len() as u64)).await.unwrap());
    let (_, fetched) = cache
        .ensure(&d, None, async |w: &mut BlobWriter| w.write(&data).await)
        .await
        .unwrap();
    assert!(fetched);
    std::fs::write(&p, b"").unwrap(); // zero-byte blob from some other tool
    let (_, fetched) = cache
        .ensure(&d, Some(data.len() as u64), async |w: &mut BlobWriter| {
            w.write(&data).await
        })
        .await
        .unwrap();
    assert!(fetched);
    assert_eq!(std::fs::read(&p).unwrap(), data);
}

#[tokio::test]
async fn prune_dry_run_reports_and_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let mut ds = Vec::new();
    for body in [&b"aaaa"[..], b"bbbbbb", b"cc"] {
        let d = Digest::of(body);
        cache
            .ensure(&d, None, async |w: &mut BlobWriter| w.write(body).await)
            .await
            .unwrap();
        ds.push(d);
    }
    let keep: HashSet<Digest> = [ds[0].clone()].into();
    let r = cache.prune(&keep, true).unwrap();
    assert_eq!((r.blobs, r.bytes), (2, 8));
    assert_eq!(blobs(&cache).len(), 3);
    let r = cache.prune(&keep, false).unwrap();
    assert_eq!((r.blobs, r.bytes), (2, 8));
    assert_eq!(blobs(&cache), vec![ds[0].hex().to_string()]);
}

/// A blob a live lease holds survives prune (reported as leased); once every clone of the
/// lease is gone, the next prune removes it.
#[tokio::test]
async fn prune_keeps_leased_blobs_until_the_lease_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let (held, free) = (&b"held blob"[..], &b"free"[..]);
    let lease = cache.lease();
    lease.hold(&Digest::of(held));
    for body in [held, free] {
        cache
            .ensure(&Digest::of(body), None, async |w: &mut BlobWriter| {
                w.write(body).await
            })
            .await
            .unwrap();
    }
    let clone = lease.clone();
    drop(lease);
    assert!(clone.holds(&Digest::of(held)));
    let r = cache.prune(&HashSet::new(), true).unwrap();
    assert_eq!(
        (r.blobs, r.bytes, r.leased_blobs, r.leased_bytes),
        (1, 4, 1, 9)
    );
    let r = cache.prune(&HashSet::new(), false).unwrap();
    assert_eq!((r.blobs, r.leased_blobs), (1, 1));
    assert_eq!(blobs(&cache), vec![Digest::of(held).hex().to_string()]);
    // A second lease on the same blob keeps it after the first one goes.
    let other = cache.lease();
    other.hold(&Digest::of(held));
    drop(clone);
    assert_eq!(cache.prune(&HashSet::new(), false).unwrap().leased_blobs, 1);
    drop(other);
    let r = cache.prune(&HashSet::new(), false).unwrap();
    assert_eq!((r.blobs, r.leased_blobs), (1, 0));
    assert!(blobs(&cache).is_empty());
}

/// ENOSPC is reported as an I/O error callers can recognise, and leaves nothing behind.
#[tokio::test]
async fn disk_full_is_reported_as_no_space() {
    assert!(
        banger_testkit::tools::is_root(),
        "this test mounts a 1 MiB tmpfs and must run as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    banger_testkit::tools::run(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&mnt),
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let cache = BlobCache::open(&mnt).unwrap();
    let data = vec![1u8; 3 << 20];
    let d = Digest::of(&data);
    let e = cache
        .ensure(&d, None, async |w: &mut BlobWriter| {
            for c in data.chunks(64 * 1024) {
                w.write(c).await?;
            }
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(e.is_no_space(), "{e}");
    assert!(blobs(&cache).is_empty());
    assert_eq!(tmp_files(&cache), 0);
}

#[tokio::test]
async fn a_removed_cache_directory_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let cache = BlobCache::open(&root).unwrap();
    let data = b"layer bytes".to_vec();
    let d = Digest::of(&data);
    // What `rm -rf ~/.cache/banger` does under a running daemon.
    std::fs::remove_dir_all(&root).unwrap();
    let report = cache.prune(&HashSet::new(), false).unwrap();
    assert_eq!(report.blobs, 0);
    let (p, fetched) = cache
        .ensure(&d, Some(data.len() as u64), async |w: &mut BlobWriter| {
            w.write(&data).await
        })
        .await
        .unwrap();
    assert!(fetched);
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert_eq!(blobs(&cache), vec![d.hex().to_string()]);
    assert_eq!(tmp_files(&cache), 0);
}
