//! Content-addressed blob cache, laid out like an OCI image layout (`blobs/sha256/<hex>`)
//! so it can be inspected with standard tools.
//!
//! A blob becomes visible only whole and verified: writers stream into a temp file under
//! `<root>/tmp/` while hashing, then check size and digest, fsync, and rename into place
//! (rename is atomic, so concurrent processes at worst both download and one rename
//! wins). A dropped or failed writer deletes its temp file. In one process, concurrent
//! requests for one digest are serialised by a per-digest lock, so it is fetched once.
//! Cached blobs are re-checked (size, then full re-hash) before use; a bad one is
//! deleted and fetched again (PITFALLS #16).
//!
//! Users of a blob hold a [`Lease`] on it ([`BlobCache::lease`], then [`Lease::hold`] before
//! asking for the blob): [`BlobCache::prune`] keeps every blob a live lease holds, so a
//! pull never has a layer deleted between fetching and reading it. Holding and pruning
//! take the same lock, so a blob is either held before prune looks at it (kept) or removed
//! before it is held (and then fetched again by the holder's `ensure`).

use crate::digest::Digest;
use crate::error::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

pub struct BlobCache {
    root: PathBuf,
    locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    leases: Arc<LeaseTable>,
}

/// How many live leases hold each digest.
#[derive(Debug, Default)]
struct LeaseTable {
    held: Mutex<HashMap<Digest, usize>>,
}

impl LeaseTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A claim on blobs of one cache: while any clone of it lives, [`BlobCache::prune`] keeps
/// the blobs it holds. Dropping the last clone releases them.
#[derive(Clone, Debug)]
pub struct Lease {
    inner: Arc<LeaseInner>,
}

#[derive(Debug)]
struct LeaseInner {
    table: Arc<LeaseTable>,
    digests: Mutex<HashSet<Digest>>,
}

impl Lease {
    /// Holds `d` from now on. Call it before [`BlobCache::ensure`]: a blob pruned before
    /// this is fetched again, one present after it stays.
    pub fn hold(&self, d: &Digest) {
        let mut mine = self.inner.digests.lock().unwrap_or_else(|p| p.into_inner());
        if mine.insert(d.clone()) {
            *self.inner.table.lock().entry(d.clone()).or_insert(0) += 1;
        }
    }

    /// Whether this lease holds `d`.
    pub fn holds(&self, d: &Digest) -> bool {
        let mine = self.inner.digests.lock().unwrap_or_else(|p| p.into_inner());
        mine.contains(d)
    }
}

impl Drop for LeaseInner {
    fn drop(&mut self) {
        let mine = self.digests.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut table = self.table.lock();
        for d in mine.drain() {
            if let Some(n) = table.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    table.remove(&d);
                }
            }
        }
    }
}

/// Streaming writer handed to a fetcher; see [`BlobCache::ensure`].
pub struct BlobWriter {
    file: tokio::fs::File,
    tmp: tempfile::TempPath,
    hasher: Sha256,
    written: u64,
}

impl BlobWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| Error::io("write cache temp file", e))?;
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far (the offset to resume from with `Range`).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Starts over (a server ignored `Range` and sent the whole blob again).
    pub async fn reset(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .await
            .map_err(|e| Error::io("truncate cache temp file", e))?;
        use tokio::io::AsyncSeekExt;
        self.file
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| Error::io("seek cache temp file", e))?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }
}

/// Result of [`BlobCache::prune`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs removed (or, in a dry run, that would be).
    pub blobs: u64,
    pub bytes: u64,
    /// Blobs kept because a live [`Lease`] holds them.
    pub leased_blobs: u64,
    pub leased_bytes: u64,
}

pub(crate) fn hash_file(p: &Path) -> std::io::Result<(Digest, u64)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((Digest::from_hasher(h), n))
}

impl BlobCache {
    /// Opens (creating) a cache rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<BlobCache> {
        let cache = BlobCache {
            root: root.into(),
            locks: Mutex::new(HashMap::new()),
            leases: Arc::default(),
        };
        cache.ensure_dirs()?;
        Ok(cache)
    }

    /// Creates the cache's directories if missing (cheap when they exist).
    fn ensure_dirs(&self) -> Result<()> {
        for d in ["blobs/sha256", "tmp"] {
            let dir = self.root.join(d);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (whether or not it is present).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// True if the blob is present with the right size and content. A present but bad
    /// blob is deleted so the next [`ensure`](Self::ensure) fetches it again.
    pub async fn verify(&self, d: &Digest, size: Option<u64>) -> Result<bool> {
        let p = self.path(d);
        let meta = match tokio::fs::metadata(&p).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(format!("stat {}", p.display()), e)),
        };
        let size_ok = size.is_none_or(|s| s == meta.len());
        let ok = size_ok && {
            let p2 = p.clone();
            let (got, _) = tokio::task::spawn_blocking(move || hash_file(&p2))
                .await
                .map_err(|e| Error::io("hash task", std::io::Error::other(e)))?
                .map_err(|e| Error::io(format!("read {}", p.display()), e))?;
            got == *d
        };
        if !ok {
            tracing::warn!(digest = %d, "cached blob is corrupt; removing it");
            let _ = tokio::fs::remove_file(&p).await;
        }
        Ok(ok)
    }

    fn lock_for(&self, d: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(d.clone()).or_default().clone()
    }

    /// Returns the path of blob `d`, calling `fill` to fetch it if it is not cached (or
    /// cached but corrupt). `fill` streams into the writer; the result is checked against
    /// `d` and `size` before it becomes visible. Returns (path, fetched?).
    pub async fn ensure<F>(&self, d: &Digest, size: Option<u64>, fill: F) -> Result<(PathBuf, bool)>
    where
        F: AsyncFnOnce(&mut BlobWriter) -> Result<()>,
    {
        let lock = self.lock_for(d);
        let _guard = lock.lock().await;
        if self.verify(d, size).await? {
            return Ok((self.path(d), false));
        }
        // The cache is re-creatable data: a user may `rm -rf` it while we run.
        self.ensure_dirs()?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}.", d.hex()))
            .tempfile_in(self.root.join("tmp"))
            .map_err(|e| Error::io("create cache temp file", e))?;
        let (file, tmp) = tmp.into_parts();
        let mut w = BlobWriter {
            file: tokio::fs::File::from_std(file),
            tmp,
            hasher: Sha256::new(),
            written: 0,
        };
        fill(&mut w).await?;
        let BlobWriter {
            mut file,
            tmp,
            hasher,
            written,
        } = w;
        if let Some(s) = size
            && s != written
        {
            return Err(Error::SizeMismatch {
                what: format!("blob {d}"),
                expected: s,
                actual: written,
            });
        }
        let got = Digest::from_hasher(hasher);
        if got != *d {
            return Err(Error::DigestMismatch {
                what: "blob".into(),
                expected: d.clone(),
                actual: got,
            });
        }
        file.flush()
            .await
            .map_err(|e| Error::io("flush cache temp file", e))?;
        file.sync_all()
            .await
            .map_err(|e| Error::io("fsync cache temp file", e))?;
        drop(file);
        let dest = self.path(d);
        self.ensure_dirs()?;
        tmp.persist(&dest)
            .map_err(|e| Error::io(format!("rename into {}", dest.display()), e.error))?;
        if let Ok(dir) = std::fs::File::open(self.root.join("blobs/sha256")) {
            let _ = dir.sync_all();
        }
        Ok((dest, true))
    }

    /// Copies a local file into the cache (verifying it), e.g. from an archive.
    pub async fn import(
        &self,
        d: &Digest,
        size: Option<u64>,
        mut reader: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<PathBuf> {
        use tokio::io::AsyncReadExt;
        let (p, _) = self
            .ensure(d, size, async |w: &mut BlobWriter| {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = reader
                        .read(&mut buf)
                        .await
                        .map_err(|e| Error::io("read import source", e))?;
                    if n == 0 {
                        return Ok(());
                    }
                    w.write(&buf[..n]).await?;
                }
            })
            .await?;
        Ok(p)
    }

    /// A new, empty lease on this cache's blobs.
    pub fn lease(&self) -> Lease {
        Lease {
            inner: Arc::new(LeaseInner {
                table: self.leases.clone(),
                digests: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Deletes every blob not in `keep` and held by no live [`Lease`] (and stale temp
    /// files older than an hour, unless a lease holds their digest: a slow download).
    /// With `dry_run`, only reports what would go.
    pub fn prune(&self, keep: &HashSet<Digest>, dry_run: bool) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let dir = self.root.join("blobs/sha256");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            // Nothing cached (the directory was removed): nothing to prune.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
        };
        for e in rd {
            let e = e.map_err(|e| Error::io("read cache dir", e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let digest = Digest::parse(&format!("sha256:{name}")).ok();
            if digest.as_ref().is_some_and(|d| keep.contains(d)) {
                continue;
            }
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            // Held across the check and the removal, so no lease starts in between.
            let leases = self.leases.lock();
            if digest.as_ref().is_some_and(|d| leases.contains_key(d)) {
                report.leased_blobs += 1;
                report.leased_bytes += len;
                continue;
            }
            if !dry_run {
                std::fs::remove_file(e.path())
                    .map_err(|x| Error::io(format!("remove {}", e.path().display()), x))?;
            }
            drop(leases);
            report.blobs += 1;
            report.bytes += len;
        }
        if !dry_run && let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) {
            for e in rd.flatten() {
                // Temp files are named `<hex>.<random>` after the blob they will become.
                let name = e.file_name().to_string_lossy().into_owned();
                let leased = name.split_once('.').is_some_and(|(hex, _)| {
                    Digest::parse(&format!("sha256:{hex}"))
                        .is_ok_and(|d| self.leases.lock().contains_key(&d))
                });
                if leased {
                    continue;
                }
                let old = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|a| a.as_secs() > 3600);
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(report)
    }
}
