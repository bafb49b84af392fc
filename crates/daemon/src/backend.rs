//! The production pull backend: `banger-oci` resolves and fetches into the verified blob
//! cache and flattens the layers top-down; `Ext4Sink` writes each entry straight into
//! `banger-ext4`. No layer is ever extracted to a host directory.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::image::CachePruned;
use banger_api::layout::Layout;
use banger_api::pull::PullEvent;
use banger_ext4 as ext4;
use banger_oci as oci;

use crate::error::OpError;
use crate::progress::OpContext;
use crate::pull::{ParsedSource, PullBackend, ResolvedImage};

const DEFAULT_PLATFORM: &str = "linux/amd64";
/// How often the writer reports progress.
const WRITE_PROGRESS_EVERY: Duration = Duration::from_millis(250);

pub fn default_backend(layout: &Layout) -> anyhow::Result<Arc<dyn PullBackend>> {
    Ok(Arc::new(OciBackend::new(layout)?))
}

pub struct OciBackend {
    puller: Arc<oci::Puller>,
}

impl OciBackend {
    pub fn new(layout: &Layout) -> anyhow::Result<OciBackend> {
        let cache = oci::BlobCache::open(layout.oci_cache_dir())?;
        // Docker's config.json: $DOCKER_CONFIG/config.json or ~/.docker/config.json.
        let creds = oci::CredentialStore::load(None)?;
        let puller = oci::Puller::new(cache, oci::RegistryOptions::default(), creds)?;
        Ok(OciBackend {
            puller: Arc::new(puller),
        })
    }

    pub fn puller(&self) -> &oci::Puller {
        &self.puller
    }
}

impl PullBackend for OciBackend {
    fn prune_cache(&self, dry_run: bool) -> Result<CachePruned, OpError> {
        let report = self
            .puller
            .cache()
            .prune(&std::collections::HashSet::new(), dry_run)
            .map_err(oci_error)?;
        Ok(CachePruned {
            dry_run,
            blobs: report.blobs,
            bytes: report.bytes,
        })
    }

    fn parse(&self, source: &str) -> Result<ParsedSource, OpError> {
        parse_source(source)
    }

    fn resolve(
        &self,
        source: &ParsedSource,
        platform: Option<&str>,
        ctx: &OpContext,
    ) -> Result<Box<dyn ResolvedImage>, OpError> {
        let parsed = oci::Source::parse(&source.canonical).map_err(oci_error)?;
        let platform = oci::Platform::parse(platform.unwrap_or(DEFAULT_PLATFORM))
            .map_err(|e| OpError::BadRequest(format!("--platform: {e}")))?;
        let handle = tokio::runtime::Handle::current();
        let puller = self.puller.clone();
        let image = handle
            .block_on(until_cancelled(ctx, async move {
                puller.resolve(&parsed, &platform).await
            }))?
            .map_err(oci_error)?;
        ctx.emit(resolved_event(&image));
        Ok(Box::new(OciResolved {
            platform: image.platform.to_string(),
            digest: image.manifest_digest.to_string(),
            image,
            puller: self.puller.clone(),
            handle,
        }))
    }
}

/// `debian:bookworm` → canonical `docker.io/library/debian:bookworm`, name
/// `debian-bookworm`; local sources are named after their file or directory.
pub fn parse_source(source: &str) -> Result<ParsedSource, OpError> {
    let parsed = oci::Source::parse(source).map_err(oci_error)?;
    let default_name = match &parsed {
        oci::Source::Registry(r) => oci::default_image_name(r),
        oci::Source::OciDir { dir, tag } => local_name(dir, tag.as_deref()),
        oci::Source::OciArchive { file, tag } => local_name(file, tag.as_deref()),
        oci::Source::DockerArchive { file, image } => match image {
            // A tag names the image as a registry reference would.
            Some(oci::ArchiveImage::Tag(t)) => oci::Reference::parse(t)
                .map(|r| oci::default_image_name(&r))
                .unwrap_or_else(|_| local_name(file, Some(t))),
            Some(oci::ArchiveImage::Index(i)) => local_name(file, Some(&i.to_string())),
            None => local_name(file, None),
        },
    };
    Ok(ParsedSource {
        canonical: parsed.to_string(),
        default_name,
    })
}

/// `/x/my-app.tar` + `v1` → `my-app-v1`, folded into the image-name alphabet.
fn local_name(path: &Path, tag: Option<&str>) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let raw = match tag {
        Some(t) => format!("{stem}-{t}"),
        None => stem,
    };
    let mut name: String = raw
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_start_matches(['-', '_']).to_string();
    name.truncate(banger_api::names::MAX_NAME_LEN);
    if name.is_empty() {
        "image".into()
    } else {
        name
    }
}

struct OciResolved {
    image: oci::ResolvedImage,
    digest: String,
    platform: String,
    puller: Arc<oci::Puller>,
    handle: tokio::runtime::Handle,
}

impl ResolvedImage for OciResolved {
    fn manifest_digest(&self) -> &str {
        &self.digest
    }

    fn platform(&self) -> &str {
        &self.platform
    }

    fn build_rootfs(
        &self,
        dest: &Path,
        size_bytes: Option<u64>,
        ctx: &OpContext,
    ) -> Result<(), OpError> {
        let progress = layer_progress(ctx, &self.image);
        // Downloads run concurrently in the background (top layer first) while the merge,
        // which goes top-down, takes each layer the moment it is verified.
        let (tx, rx) = std::sync::mpsc::channel::<Result<(usize, oci::LayerInput), OpError>>();
        let puller = self.puller.clone();
        let image = self.image.clone();
        let fetch = self.handle.spawn(async move {
            let ready_tx = tx.clone();
            let ready = move |i: usize, layer: oci::LayerInput| {
                let _ = ready_tx.send(Ok((i, layer)));
            };
            if let Err(e) = puller.fetch_layers_as_ready(&image, progress, &ready).await {
                let _ = tx.send(Err(oci_error(e)));
            }
        });
        // Dropping the guard aborts downloads still running (on error or cancellation).
        let _abort = AbortOnDrop(fetch);
        let mut arrived = LayerArrivals {
            rx,
            ctx,
            ready: std::collections::HashMap::new(),
            failure: None,
        };

        let compressed_total: u64 = self.image.layers.iter().filter_map(|l| l.size).sum();
        // The directory users know (`<state>/images`), not the staging dir inside it.
        let dir = dest.parent().and_then(Path::parent).unwrap_or(dest);
        // The filesystem holds the uncompressed content, never less than the compressed
        // layers: when even that does not fit, say so before writing a byte.
        if let Some(free) = crate::fsutil::free_bytes(dir)
            && free < compressed_total
        {
            return Err(disk_full(
                dir,
                "the root filesystem",
                compressed_total,
                free,
            ));
        }
        let size = match size_bytes {
            Some(bytes) => ext4::SizePolicy::Exact(bytes),
            None => ext4::SizePolicy::default(),
        };
        let writer = ext4::Ext4Writer::create(
            dest,
            ext4::Options {
                size,
                // Same digest, same bytes: reproducible images.
                seed: seed_from_digest(&self.digest),
                ..Default::default()
            },
        )
        .map_err(ext4_error)?;
        let consumed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut sink = Ext4Sink {
            writer,
            ctx,
            entries: 0,
            bytes: 0,
            last_report: Instant::now(),
            consumed: consumed.clone(),
            compressed_total,
            no_space: false,
        };
        let flattened = oci::flatten_as_ready(
            self.image.layers.len(),
            &mut |i| arrived.wait_for(i),
            &mut sink,
            &oci::Limits {
                blob_bytes_read: Some(consumed.clone()),
                ..oci::Limits::default()
            },
        );
        if ctx.is_cancelled() {
            return Err(OpError::Cancelled);
        }
        if let Some(failure) = arrived.failure.take() {
            return Err(failure);
        }
        let needed = |sink: &Ext4Sink| {
            // Extrapolated from what was written for the share of the layers consumed.
            let done = consumed.load(std::sync::atomic::Ordering::Relaxed).max(1);
            let ratio = compressed_total.max(done) as f64 / done as f64;
            ((sink.bytes as f64 * ratio) as u64).max(compressed_total)
        };
        if let Err(e) = flattened {
            if sink.no_space || e.is_no_space() {
                let free = crate::fsutil::free_bytes(dir).unwrap_or(0);
                return Err(disk_full(dir, "the root filesystem", needed(&sink), free));
            }
            return Err(oci_error(e));
        }
        sink.emit();
        let bytes = sink.bytes;
        sink.writer.finish().map_err(|e| match e {
            ext4::Error::Io(ref io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                let free = crate::fsutil::free_bytes(dir).unwrap_or(0);
                disk_full(dir, "the root filesystem", bytes, free)
            }
            other => ext4_error(other),
        })?;
        Ok(())
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Layers as the background download verifies them, handed out in the order the merge
/// asks for them.
struct LayerArrivals<'a> {
    rx: std::sync::mpsc::Receiver<Result<(usize, oci::LayerInput), OpError>>,
    ctx: &'a OpContext,
    ready: std::collections::HashMap<usize, oci::LayerInput>,
    /// The download's own error, which explains a merge failure better than "layer lost".
    failure: Option<OpError>,
}

impl LayerArrivals<'_> {
    fn wait_for(&mut self, index: usize) -> oci::Result<oci::LayerInput> {
        let lost = |why: &str| oci::Error::Protocol(format!("layer {index} unavailable: {why}"));
        loop {
            if let Some(layer) = self.ready.remove(&index) {
                return Ok(layer);
            }
            if self.ctx.is_cancelled() {
                return Err(lost("cancelled"));
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok((i, layer))) => {
                    self.ready.insert(i, layer);
                }
                Ok(Err(e)) => {
                    let message = e.to_string();
                    self.failure = Some(e);
                    return Err(lost(&message));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(lost("the download stopped"));
                }
            }
        }
    }
}

/// Feeds flattened entries into the ext4 writer; checks for cancellation per entry.
struct Ext4Sink<'a> {
    writer: ext4::Ext4Writer,
    ctx: &'a OpContext,
    entries: u64,
    bytes: u64,
    last_report: Instant,
    /// Layer blob bytes the merge has read, of `compressed_total`.
    consumed: Arc<std::sync::atomic::AtomicU64>,
    compressed_total: u64,
    /// The writer hit ENOSPC (the merge only sees "sink rejected entry").
    no_space: bool,
}

impl Ext4Sink<'_> {
    fn emit(&self) {
        self.ctx.emit(PullEvent::Writing {
            entries: self.entries,
            bytes: self.bytes,
            compressed_done: self
                .consumed
                .load(std::sync::atomic::Ordering::Relaxed)
                .min(self.compressed_total),
            compressed_total: self.compressed_total,
        });
    }
}

impl oci::EntrySink for Ext4Sink<'_> {
    fn entry(
        &mut self,
        entry: &oci::Entry,
        data: Option<&mut dyn Read>,
    ) -> Result<(), oci::SinkError> {
        if self.ctx.is_cancelled() {
            return Err("cancelled".into());
        }
        let m = &entry.meta;
        let ts = |t: &oci::Timestamp| ext4::Timestamp {
            sec: t.sec,
            nsec: t.nsec,
        };
        let meta = ext4::Metadata {
            uid: m.uid,
            gid: m.gid,
            mode: (m.mode & 0o7777) as u16,
            mtime: ts(&m.mtime),
            atime: ts(&m.atime),
            ctime: ts(&m.ctime),
            xattrs: m
                .xattrs
                .iter()
                .map(|(name, value)| ext4::Xattr {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        let mut empty: &[u8] = &[];
        let kind = match &entry.kind {
            oci::EntryKind::Directory => ext4::EntryKind::Directory,
            oci::EntryKind::File { size } => {
                self.bytes += size;
                ext4::EntryKind::File {
                    size: *size,
                    data: match data {
                        Some(d) => d,
                        None if *size == 0 => &mut empty,
                        None => return Err(format!("no data for {}", entry.path).into()),
                    },
                }
            }
            oci::EntryKind::Symlink { target } => ext4::EntryKind::Symlink {
                target: OsStr::from_bytes(target),
            },
            oci::EntryKind::Hardlink { target } => ext4::EntryKind::Hardlink {
                target: Path::new(target),
            },
            oci::EntryKind::CharDevice { major, minor } => ext4::EntryKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            oci::EntryKind::BlockDevice { major, minor } => ext4::EntryKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            oci::EntryKind::Fifo => ext4::EntryKind::Fifo,
            oci::EntryKind::Socket => ext4::EntryKind::Socket,
        };
        if let Err(e) = self.writer.add(Path::new(&entry.path), &meta, kind) {
            if matches!(&e, ext4::Error::Io(io) if io.raw_os_error() == Some(libc::ENOSPC)) {
                self.no_space = true;
            }
            return Err(e.into());
        }
        self.entries += 1;
        if self.last_report.elapsed() >= WRITE_PROGRESS_EVERY {
            self.last_report = Instant::now();
            self.emit();
        }
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), oci::SinkError> {
        self.writer.remove(Path::new(path))?;
        Ok(())
    }
}

/// What was resolved: digest, platform, layer count and download size.
pub(crate) fn resolved_event(image: &oci::ResolvedImage) -> PullEvent {
    PullEvent::Resolved {
        manifest_digest: image.manifest_digest.to_string(),
        platform: image.platform.to_string(),
        layers: image.layers.len(),
        total_bytes: image.layers.iter().filter_map(|l| l.size).sum(),
    }
}

/// Forwards the download progress of `image`'s layers to the client as `layer` events.
/// Byte counts arrive per network chunk; at most ~10 a second go out.
pub(crate) fn layer_progress(ctx: &OpContext, image: &oci::ResolvedImage) -> oci::ProgressFn {
    let ctx = ctx.clone();
    let sizes: Vec<Option<u64>> = image.layers.iter().map(|l| l.size).collect();
    let last_bytes = std::sync::Mutex::new(Instant::now());
    Arc::new(move |p| {
        if matches!(p, oci::Progress::LayerBytes { .. }) {
            let mut last = last_bytes.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < Duration::from_millis(100) {
                return;
            }
            *last = Instant::now();
        }
        if let Some(event) = layer_event(&p, &sizes) {
            ctx.emit(event);
        }
    })
}

fn layer_event(p: &oci::Progress, sizes: &[Option<u64>]) -> Option<PullEvent> {
    let total_of = |index: usize, total: Option<u64>| {
        total.or(sizes.get(index).copied().flatten()).unwrap_or(0)
    };
    match p {
        oci::Progress::LayerStarted {
            index,
            digest,
            total,
        } => Some(PullEvent::Layer {
            index: *index,
            digest: digest.to_string(),
            done_bytes: 0,
            total_bytes: total_of(*index, *total),
            cached: false,
        }),
        oci::Progress::LayerBytes { index, done, total } => Some(PullEvent::Layer {
            index: *index,
            digest: String::new(),
            done_bytes: *done,
            total_bytes: total_of(*index, *total),
            cached: false,
        }),
        oci::Progress::LayerDone {
            index,
            digest,
            cached,
        } => {
            let total = total_of(*index, None);
            Some(PullEvent::Layer {
                index: *index,
                digest: digest.to_string(),
                done_bytes: total,
                total_bytes: total,
                cached: *cached,
            })
        }
    }
}

/// First 16 bytes of the manifest digest's hex, as the filesystem seed.
fn seed_from_digest(digest: &str) -> [u8; 16] {
    let hex = digest.rsplit(':').next().unwrap_or(digest).as_bytes();
    let mut seed = [0u8; 16];
    for (i, byte) in seed.iter_mut().enumerate() {
        let nibble = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16)).unwrap_or(0) as u8;
        *byte = (nibble(hex.get(2 * i)) << 4) | nibble(hex.get(2 * i + 1));
    }
    seed
}

/// Runs `fut` unless the client goes away first (polled: cancellation is rare and a
/// tenth of a second is prompt enough).
pub(crate) async fn until_cancelled<T>(
    ctx: &OpContext,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, OpError> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Ok(out),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if ctx.is_cancelled() {
                    return Err(OpError::Cancelled);
                }
            }
        }
    }
}

/// Disk full, said so it can be acted on: where, how much was needed and is free, and
/// the ways out.
pub(crate) fn disk_full(dir: &Path, what: &str, needed: u64, free: u64) -> OpError {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
    OpError::Failed(format!(
        "no space left in {} for {what}: the image needs about {}, {} is free there; free space (`banger image cache prune` removes cached layers, `banger image delete` unused images), pass a smaller --size, or use another --state-dir",
        dir.display(),
        mib(needed),
        mib(free)
    ))
}

/// Maps OCI failures to codes and messages that say what to do.
pub fn oci_error(e: oci::Error) -> OpError {
    if e.is_no_space() {
        return OpError::Failed(format!(
            "disk full while pulling ({e}); free space in the cache and state directories and retry"
        ));
    }
    match e {
        oci::Error::Reference(_) | oci::Error::Source(..) => OpError::BadRequest(e.to_string()),
        oci::Error::NotFound(m) => OpError::NotFound(format!(
            "{m}; check the image name and tag (and that you are logged in if it is private)"
        )),
        oci::Error::Unauthorized(m) => OpError::Unauthorized(format!(
            "registry refused access: {m}; log in with `docker login` (banger reads ~/.docker/config.json)"
        )),
        oci::Error::PlatformNotAvailable { .. } => {
            OpError::NotFound(format!("{e}; pick one with --platform"))
        }
        oci::Error::Network { .. } => OpError::Failed(format!("{e}; is the registry reachable?")),
        other => OpError::Failed(other.to_string()),
    }
}

fn ext4_error(e: ext4::Error) -> OpError {
    match e {
        ext4::Error::TooSmall { needed_bytes, .. } => OpError::BadRequest(format!(
            "{e}; use --size {} MiB or more, or omit --size",
            needed_bytes.div_ceil(1 << 20)
        )),
        ext4::Error::Io(ref io) if io.raw_os_error() == Some(libc::ENOSPC) => {
            OpError::Failed(format!(
                "disk full while writing the root filesystem ({e}); free space in the state directory and retry"
            ))
        }
        other => OpError::Failed(format!("writing the root filesystem: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_taken_from_the_digest() {
        let seed = seed_from_digest("sha256:0123456789abcdef0123456789abcdef00000000");
        assert_eq!(seed[0], 0x01);
        assert_eq!(seed[7], 0xef);
        assert_eq!(seed[15], 0xef);
    }

    #[test]
    fn local_sources_get_file_based_names() {
        assert_eq!(
            parse_source("oci:/tmp/My App:v1.2")
                .expect("parse")
                .default_name,
            "my-app-v1-2"
        );
        assert_eq!(
            parse_source("docker-archive:/x/debian.tar")
                .expect("parse")
                .default_name,
            "debian"
        );
        assert_eq!(
            parse_source("docker-archive:/x/save.tar:debian:bookworm")
                .expect("parse")
                .default_name,
            "debian-bookworm"
        );
        assert_eq!(
            parse_source("docker-archive:/x/save.tar:@1")
                .expect("parse")
                .default_name,
            "save-1"
        );
    }

    #[test]
    fn registry_refs_use_the_seed_rule() {
        let p = parse_source("debian:bookworm").expect("parse");
        assert_eq!(p.canonical, "docker.io/library/debian:bookworm");
        assert_eq!(p.default_name, "debian-bookworm");
        assert!(matches!(
            parse_source("Debian"),
            Err(OpError::BadRequest(_))
        ));
    }
}
