//! Kernels through OCI registries.
//!
//! A kernel travels as an ordinary OCI image so any registry (and `skopeo`) handles it:
//! one gzip layer holding `vmlinuz`, `vmlinux`, `initrd.img` and `modules/` at its root,
//! a config for `linux/<arch>` whose labels, like the manifest's annotations, carry the
//! kernel's name, version and architecture. The layer is deterministic (sorted entries,
//! fixed owners and times), so pushing the same kernel twice gives the same digests.
//!
//! Pulling flattens the layers (the OCI crate refuses `..`, absolute escapes and writes
//! through symlinks) into a sink that accepts only those four names and writes below the
//! staging directory; the store then verifies the kernel as for any import.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::kernel::{KernelPushed, annotations};
use banger_api::layout::Layout;
use banger_oci as oci;
use sha2::{Digest as _, Sha256};

use banger_api::pull::PullEvent;

use crate::backend::{layer_progress, oci_error, resolved_event, until_cancelled};
use crate::error::OpError;
use crate::progress::OpContext;
use crate::store::KernelRow;

use super::manifest::{INITRD, MODULES, Manifest, VMLINUX, VMLINUZ, hex_digest};
use super::{STAGING_PREFIX, Staged};

const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Cap on a kernel image's unpacked size (modules included).
const MAX_UNPACKED: u64 = 8 << 30;

pub struct KernelRegistry {
    puller: Result<Arc<oci::Puller>, String>,
}

impl KernelRegistry {
    pub fn new(layout: &Layout) -> KernelRegistry {
        let make = || -> Result<oci::Puller, oci::Error> {
            let cache = oci::BlobCache::open(layout.oci_cache_dir())?;
            let creds = oci::CredentialStore::load(None)?;
            oci::Puller::new(cache, oci::RegistryOptions::default(), creds)
        };
        KernelRegistry {
            puller: make().map(Arc::new).map_err(|e| e.to_string()),
        }
    }

    fn puller(&self) -> Result<Arc<oci::Puller>, OpError> {
        self.puller
            .clone()
            .map_err(|e| OpError::Unavailable(format!("the OCI client is unavailable: {e}")))
    }

    /// Pushes a stored kernel to `reference` (`registry/repo:tag`). The layer is packed
    /// into a temp file in `scratch` (removed on return) and streamed from there, so memory
    /// stays flat whatever the size of `modules/`.
    pub fn push(
        &self,
        row: &KernelRow,
        manifest: &Manifest,
        reference: &str,
        scratch: &Path,
        ctx: &OpContext,
    ) -> Result<KernelPushed, OpError> {
        let r = oci::Reference::parse(reference)
            .map_err(|e| OpError::BadRequest(format!("{e}; push to registry/repository:tag")))?;
        let tag = r.tag_or_latest().map(str::to_owned).ok_or_else(|| {
            OpError::BadRequest(format!(
                "{reference}: push to a tag, not a digest (the digest is computed)"
            ))
        })?;
        let dir = Path::new(&row.dir);
        ctx.emit(PullEvent::Packing);
        let layer_file = tempfile::Builder::new()
            .prefix(&format!("{STAGING_PREFIX}push-"))
            .tempfile_in(scratch)
            .map_err(|e| {
                OpError::io(format!("creating a temp file in {}", scratch.display()), e)
            })?;
        let layer = build_layer(dir, layer_file.as_file())?;
        ctx.check()?;
        let arch = manifest.arch.clone().unwrap_or_else(|| "amd64".into());
        let mut labels = BTreeMap::new();
        labels.insert(annotations::KIND, annotations::KIND_KERNEL.to_string());
        labels.insert(annotations::NAME, row.name.clone());
        labels.insert(annotations::ARCH, arch.clone());
        if let Some(v) = &manifest.version {
            labels.insert(annotations::VERSION, v.clone());
            labels.insert("org.opencontainers.image.version", v.clone());
        }
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": { "Labels": labels },
            "rootfs": { "type": "layers", "diff_ids": [layer.diff_id] },
        });
        let config = serde_json::to_vec(&config)
            .map_err(|e| OpError::Failed(format!("encoding the config: {e}")))?;
        let config_digest = oci::Digest::of(&config);
        let image_manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": { "mediaType": MT_CONFIG, "digest": config_digest.to_string(), "size": config.len() },
            "layers": [{
                "mediaType": MT_LAYER,
                "digest": layer.digest.to_string(),
                "size": layer.size,
                "annotations": { "org.opencontainers.image.title": "kernel.tar.gz" },
            }],
            "annotations": labels,
        });
        let image_manifest = serde_json::to_vec(&image_manifest)
            .map_err(|e| OpError::Failed(format!("encoding the manifest: {e}")))?;
        let puller = self.puller()?;
        let client = puller.client();
        let (registry, repo) = (r.registry.as_str(), r.repository.as_str());
        let (digest, total) = (layer.digest.to_string(), layer.size);
        let events = ctx.clone();
        let progress: oci::UploadProgress = Arc::new(move |done| {
            events.emit(PullEvent::Uploading {
                digest: digest.clone(),
                done_bytes: done,
                total_bytes: total,
            });
        });
        let manifest_digest = tokio::runtime::Handle::current()
            .block_on(until_cancelled(ctx, async {
                client
                    .push_blob_file(
                        registry,
                        repo,
                        &layer.digest,
                        layer_file.path(),
                        Some(progress),
                    )
                    .await?;
                client
                    .push_blob(registry, repo, &config_digest, &config)
                    .await?;
                client
                    .push_manifest(registry, repo, &tag, MT_MANIFEST, &image_manifest)
                    .await
            }))?
            .map_err(oci_error)?;
        let canonical = format!("{registry}/{repo}:{tag}");
        tracing::info!(kernel = %row.name, reference = %canonical, digest = %manifest_digest, "pushed kernel");
        Ok(KernelPushed {
            kernel: row.name.clone(),
            reference: canonical,
            manifest_digest: manifest_digest.to_string(),
            layer_digest: layer.digest.to_string(),
            layer_bytes: layer.size,
        })
    }

    /// Fetches and unpacks the kernel image `source` into `staging`.
    pub fn pull(&self, source: &str, staging: &Path, ctx: &OpContext) -> Result<Staged, OpError> {
        let parsed = oci::Source::parse(source).map_err(oci_error)?;
        let platform = oci::Platform {
            os: "linux".into(),
            architecture: host_arch().into(),
            variant: None,
        };
        let puller = self.puller()?;
        let handle = tokio::runtime::Handle::current();
        ctx.emit(PullEvent::Resolving {
            reference: source.to_string(),
        });
        let resolve = |platform: oci::Platform| {
            handle.block_on(until_cancelled(ctx, puller.resolve(&parsed, &platform)))
        };
        // The host's architecture is preferred among several; a kernel image made for one
        // architecture is taken as it is (an arm64 kernel can be kept on an amd64 host).
        let image = match resolve(platform)? {
            Err(oci::Error::PlatformNotAvailable { available, .. }) if available.len() == 1 => {
                let only = oci::Platform::parse(&available[0]).map_err(oci_error)?;
                resolve(only)?
            }
            other => other,
        }
        .map_err(oci_error)?;
        ctx.emit(resolved_event(&image));
        let progress = layer_progress(ctx, &image);
        let layers = handle
            .block_on(until_cancelled(ctx, puller.fetch_layers(&image, progress)))?
            .map_err(oci_error)?;
        ctx.check()?;
        let mut sink = KernelSink {
            root: staging.to_path_buf(),
        };
        let limits = oci::Limits {
            max_unpacked_bytes: MAX_UNPACKED,
            ..oci::Limits::default()
        };
        oci::flatten(&layers, &mut sink, &limits).map_err(|e| match e {
            oci::Error::Sink { path, source } => OpError::BadRequest(format!(
                "{}: not a kernel image: entry {path:?}: {source}",
                image.source
            )),
            oci::Error::InvalidLayer { .. } | oci::Error::LimitExceeded(_) => {
                OpError::BadRequest(format!("{}: {e}", image.source))
            }
            other => oci_error(other),
        })?;
        Ok(Staged {
            source: format!("oci:{}@{}", image.source, image.manifest_digest),
        })
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Hashes and counts what goes through.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A packed layer: its blob digest and size, and the digest of the uncompressed tar.
struct PackedLayer {
    digest: oci::Digest,
    size: u64,
    diff_id: String,
}

/// Writes the deterministic gzip tar of a kernel dir to `out`, hashing both the tar (the
/// `diff_id`) and the compressed blob (its digest) on the way through.
fn build_layer(dir: &Path, out: &std::fs::File) -> Result<PackedLayer, OpError> {
    let io = |what: String| move |e: std::io::Error| OpError::io(what, e);
    let blob = HashingWriter {
        inner: std::io::BufWriter::new(out),
        hash: Sha256::new(),
        written: 0,
    };
    let gz = flate2::write::GzEncoder::new(blob, flate2::Compression::new(6));
    let mut tar = tar::Builder::new(HashingWriter {
        inner: gz,
        hash: Sha256::new(),
        written: 0,
    });
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for name in [VMLINUZ, VMLINUX, INITRD] {
        let p = dir.join(name);
        if p.is_file() {
            entries.push((name.to_string(), p));
        }
    }
    let modules = dir.join(MODULES);
    if modules.is_dir() {
        entries.push((MODULES.to_string(), modules.clone()));
        collect(&modules, MODULES, &mut entries)?;
    }
    for (name, path) in &entries {
        let meta =
            std::fs::symlink_metadata(path).map_err(io(format!("stat {}", path.display())))?;
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let res = if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, format!("{name}/"), std::io::empty())
        } else if meta.is_symlink() {
            let target =
                std::fs::read_link(path).map_err(io(format!("readlink {}", path.display())))?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            tar.append_link(&mut h, name, target)
        } else {
            use std::os::unix::fs::PermissionsExt;
            let f = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            });
            h.set_size(meta.len());
            tar.append_data(&mut h, name, f)
        };
        res.map_err(io(format!("adding {name} to the layer")))?;
    }
    let hashing = tar.into_inner().map_err(io("finishing the layer".into()))?;
    let diff_id = hex_digest(hashing.hash);
    let mut blob = hashing
        .inner
        .finish()
        .map_err(io("compressing the layer".into()))?;
    blob.flush().map_err(io("writing the layer".into()))?;
    let digest = oci::Digest::parse(&hex_digest(blob.hash))
        .map_err(|e| OpError::Failed(format!("layer digest: {e}")))?;
    Ok(PackedLayer {
        digest,
        size: blob.written,
        diff_id,
    })
}

/// Entries below `dir`, sorted, as (`rel/path`, host path).
fn collect(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), OpError> {
    let mut children: Vec<(String, PathBuf, bool)> = std::fs::read_dir(dir)
        .map_err(|e| OpError::io(format!("reading {}", dir.display()), e))?
        .filter_map(Result::ok)
        .map(|e| {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path(),
                is_dir,
            )
        })
        .collect();
    children.sort();
    for (name, path, is_dir) in children {
        let rel = format!("{rel}/{name}");
        out.push((rel.clone(), path.clone()));
        if is_dir {
            collect(&path, &rel, out)?;
        }
    }
    Ok(())
}

/// Writes a kernel image's entries below `root`, refusing anything but the kernel files.
struct KernelSink {
    root: PathBuf,
}

impl KernelSink {
    /// Host path for `path`, creating (real, non-symlink) parent directories.
    fn place(&self, path: &str) -> Result<PathBuf, oci::SinkError> {
        let parts: Vec<&str> = path.split('/').collect();
        let mut at = self.root.clone();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(format!("{} is not a directory", at.display()).into()),
                Err(_) => std::fs::create_dir(&at)?,
            }
        }
        Ok(self.root.join(path))
    }
}

fn clear(dest: &Path) -> Result<(), oci::SinkError> {
    if let Ok(m) = std::fs::symlink_metadata(dest) {
        if m.is_dir() {
            return Err("a file would replace a directory".into());
        }
        std::fs::remove_file(dest)?;
    }
    Ok(())
}

impl oci::EntrySink for KernelSink {
    fn entry(
        &mut self,
        entry: &oci::Entry,
        data: Option<&mut dyn Read>,
    ) -> Result<(), oci::SinkError> {
        let path = entry.path.as_str();
        let top = path.split('/').next().unwrap_or_default();
        let nested = path.contains('/');
        let allowed = match top {
            VMLINUZ | VMLINUX | INITRD => {
                !nested && matches!(entry.kind, oci::EntryKind::File { .. })
            }
            MODULES => true,
            _ => false,
        };
        if !allowed {
            return Err(
                "only vmlinuz, vmlinux, initrd.img (files) and modules/ belong in a kernel image"
                    .into(),
            );
        }
        let dest = self.place(path)?;
        match &entry.kind {
            oci::EntryKind::Directory => match std::fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err("a directory would replace a file".into()),
                Err(_) => Ok(std::fs::create_dir(&dest)?),
            },
            oci::EntryKind::File { .. } => {
                use std::os::unix::fs::OpenOptionsExt;
                clear(&dest)?;
                let mode = if entry.meta.mode & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)?;
                if let Some(r) = data {
                    std::io::copy(r, &mut f)?;
                }
                f.sync_all()?;
                Ok(())
            }
            oci::EntryKind::Symlink { target } => {
                use std::os::unix::ffi::OsStrExt;
                clear(&dest)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &dest)?;
                Ok(())
            }
            oci::EntryKind::Hardlink { target } => {
                let source = self.root.join(target);
                let m = std::fs::symlink_metadata(&source)?;
                if !m.is_file() || !target.starts_with("modules/") {
                    return Err("hardlinks may only join files under modules/".into());
                }
                clear(&dest)?;
                std::fs::hard_link(&source, &dest)?;
                Ok(())
            }
            _ => Err("devices, FIFOs and sockets do not belong in a kernel image".into()),
        }
    }

    fn remove(&mut self, path: &str) -> Result<(), oci::SinkError> {
        let p = self.root.join(path);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p)?,
            Ok(_) => std::fs::remove_file(&p)?,
            Err(_) => {}
        }
        Ok(())
    }
}
