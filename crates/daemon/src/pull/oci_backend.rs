//! The production pull backend: `banger-oci` resolves and fetches into the verified blob
//! cache and flattens the layers top-down; `banger-rootfs` writes each entry straight
//! into `banger-ext4`. No layer is ever extracted to a host directory.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::event::OpEvent;
use banger_api::image::CachePruned;
use banger_ext4 as ext4;
use banger_oci as oci;
use banger_rootfs as rootfs;

use super::{PullBackend, ResolvedPull};
use crate::error::OpError;
use crate::oci_client::{
    OciClient, ParsedSource, layer_progress, oci_error, parse_source, resolved_event,
};
use crate::progress::{OpContext, until_cancelled};

const DEFAULT_PLATFORM: &str = "linux/amd64";
/// How often the writer reports progress.
const WRITE_PROGRESS_EVERY: Duration = Duration::from_millis(250);

pub fn default_backend(client: Arc<OciClient>) -> Arc<dyn PullBackend> {
    Arc::new(OciBackend::new(client))
}

/// Images through the daemon's one [`OciClient`].
pub struct OciBackend {
    client: Arc<OciClient>,
}

impl OciBackend {
    pub fn new(client: Arc<OciClient>) -> OciBackend {
        OciBackend { client }
    }
}

impl PullBackend for OciBackend {
    fn prune_cache(&self, dry_run: bool) -> Result<CachePruned, OpError> {
        self.client.prune(dry_run)
    }

    fn parse(&self, source: &str) -> Result<ParsedSource, OpError> {
        parse_source(source)
    }

    fn resolve(
        &self,
        source: &ParsedSource,
        platform: Option<&str>,
        ctx: &OpContext,
    ) -> Result<Box<dyn ResolvedPull>, OpError> {
        let parsed = oci::Source::parse(&source.canonical).map_err(oci_error)?;
        let platform = oci::Platform::parse(platform.unwrap_or(DEFAULT_PLATFORM))
            .map_err(|e| OpError::BadRequest(format!("--platform: {e}")))?;
        let handle = tokio::runtime::Handle::current();
        let puller = self.client.puller().clone();
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
            puller: self.client.puller().clone(),
            handle,
        }))
    }
}

struct OciResolved {
    image: oci::ResolvedImage,
    digest: String,
    platform: String,
    puller: Arc<oci::Puller>,
    handle: tokio::runtime::Handle,
}

impl ResolvedPull for OciResolved {
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
        let mut sink = PullSink {
            rootfs: rootfs::Ext4Sink::new(writer),
            ctx,
            last_report: Instant::now(),
            consumed: consumed.clone(),
            compressed_total,
        };
        let flattened = oci::flatten_as_ready(
            self.image.layers.len(),
            &mut |i| arrived.wait_for(i),
            &mut sink,
            &unpack_limits(&self.image, size_bytes, consumed.clone()),
        );
        if ctx.is_cancelled() {
            return Err(OpError::Cancelled);
        }
        if let Some(failure) = arrived.failure.take() {
            return Err(failure);
        }
        let needed = |sink: &PullSink| {
            // Extrapolated from what was written for the share of the layers consumed.
            let done = consumed.load(std::sync::atomic::Ordering::Relaxed).max(1);
            let ratio = compressed_total.max(done) as f64 / done as f64;
            ((sink.rootfs.bytes() as f64 * ratio) as u64).max(compressed_total)
        };
        if let Err(e) = flattened {
            if sink.rootfs.hit_no_space() || e.is_no_space() {
                let free = crate::fsutil::free_bytes(dir).unwrap_or(0);
                return Err(disk_full(dir, "the root filesystem", needed(&sink), free));
            }
            if let oci::Error::LimitExceeded(_) = e {
                return Err(OpError::BadRequest(format!(
                    "{e}; if the image really unpacks to that much, pull it with --size set to its unpacked size"
                )));
            }
            return Err(oci_error(e));
        }
        sink.emit();
        let bytes = sink.rootfs.bytes();
        sink.rootfs.finish().map_err(|e| match e {
            ext4::Error::Io(ref io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                let free = crate::fsutil::free_bytes(dir).unwrap_or(0);
                disk_full(dir, "the root filesystem", bytes, free)
            }
            other => ext4_error(other),
        })?;
        Ok(())
    }
}

/// The image's flatten budget (tied to its compressed size); a `--size` the user gave is
/// their word on how big the content is, so the budget grows to twice it (tar headers
/// and padding come on top of the file data).
fn unpack_limits(
    image: &oci::ResolvedImage,
    size_bytes: Option<u64>,
    consumed: Arc<std::sync::atomic::AtomicU64>,
) -> oci::Limits {
    let mut limits = image.limits();
    if let Some(bytes) = size_bytes {
        limits.max_unpacked_bytes = limits.max_unpacked_bytes.max(bytes.saturating_mul(2));
    }
    limits.blob_bytes_read = Some(consumed);
    limits
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

/// The pull's view of [`rootfs::Ext4Sink`] (which maps entries to the ext4 writer):
/// cancellation checked per entry and `writing` progress events.
struct PullSink<'a> {
    rootfs: rootfs::Ext4Sink,
    ctx: &'a OpContext,
    last_report: Instant,
    /// Layer blob bytes the merge has read, of `compressed_total`.
    consumed: Arc<std::sync::atomic::AtomicU64>,
    compressed_total: u64,
}

impl PullSink<'_> {
    fn emit(&self) {
        self.ctx.emit(OpEvent::Writing {
            entries: self.rootfs.entries(),
            bytes: self.rootfs.bytes(),
            compressed_done: self
                .consumed
                .load(std::sync::atomic::Ordering::Relaxed)
                .min(self.compressed_total),
            compressed_total: self.compressed_total,
        });
    }
}

impl oci::EntrySink for PullSink<'_> {
    fn entry(
        &mut self,
        entry: &oci::Entry,
        data: Option<&mut dyn Read>,
    ) -> Result<(), oci::SinkError> {
        if self.ctx.is_cancelled() {
            return Err("cancelled".into());
        }
        self.rootfs.add(entry, data)?;
        if self.last_report.elapsed() >= WRITE_PROGRESS_EVERY {
            self.last_report = Instant::now();
            self.emit();
        }
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), oci::SinkError> {
        Ok(self.rootfs.remove_path(path)?)
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
}
