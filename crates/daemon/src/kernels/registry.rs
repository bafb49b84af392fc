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
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::kernel::{KernelPushed, annotations};
use banger_oci as oci;

use banger_api::event::OpEvent;

use crate::error::OpError;
use crate::oci_client::{OciClient, layer_progress, oci_error, resolved_event};
use crate::progress::{OpContext, until_cancelled};
use crate::store::KernelRow;

use super::manifest::{INITRD, MODULES, Manifest, VMLINUX, VMLINUZ};
use super::staging::{STAGING_PREFIX, Staged};

/// Cap on a kernel image's unpacked size (modules included).
const MAX_UNPACKED: u64 = 8 << 30;

/// Kernels through the daemon's one [`OciClient`].
pub struct KernelRegistry {
    client: Arc<OciClient>,
}

impl KernelRegistry {
    pub fn new(client: Arc<OciClient>) -> KernelRegistry {
        KernelRegistry { client }
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
        ctx.emit(OpEvent::Packing);
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
        let mut label = |k: &str, v: &str| labels.insert(k.to_string(), v.to_string());
        label(annotations::KIND, annotations::KIND_KERNEL);
        label(annotations::NAME, &row.name);
        label(annotations::ARCH, &arch);
        if let Some(v) = &manifest.version {
            label(annotations::VERSION, v);
            label("org.opencontainers.image.version", v);
        }
        let platform = oci::Platform {
            os: "linux".into(),
            architecture: arch,
            variant: None,
        };
        let layers = [oci::ImageLayer {
            layer: layer.clone(),
            annotations: BTreeMap::from([(
                "org.opencontainers.image.title".to_string(),
                "kernel.tar.gz".to_string(),
            )]),
        }];
        let docs = oci::pack::image_documents(&platform, &labels, &layers).map_err(pack_error)?;
        let client = self.client.puller().client();
        let (registry, repo) = (r.registry.as_str(), r.repository.as_str());
        let (digest, total) = (layer.digest.to_string(), layer.size);
        let events = ctx.clone();
        let progress: oci::UploadProgress = Arc::new(move |done| {
            events.emit(OpEvent::Uploading {
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
                    .push_blob(registry, repo, &docs.config_digest, &docs.config)
                    .await?;
                client
                    .push_manifest(
                        registry,
                        repo,
                        &tag,
                        oci::manifest::OCI_MANIFEST,
                        &docs.manifest,
                    )
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
        let puller = self.client.puller();
        let handle = tokio::runtime::Handle::current();
        ctx.emit(OpEvent::Resolving {
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

/// Packs the kernel files of `dir` (`vmlinuz`, `vmlinux`, `initrd.img`, `modules/`) into
/// the deterministic gzip layer `out`.
fn build_layer(dir: &Path, out: &std::fs::File) -> Result<oci::PackedLayer, OpError> {
    let mut entries = Vec::new();
    for name in [VMLINUZ, VMLINUX, INITRD] {
        let path = dir.join(name);
        if path.is_file() {
            entries.push(oci::LayerEntry {
                name: name.to_string(),
                path,
            });
        }
    }
    let modules = dir.join(MODULES);
    if modules.is_dir() {
        entries.push(oci::LayerEntry {
            name: MODULES.to_string(),
            path: modules.clone(),
        });
        oci::pack::tree_entries(&modules, MODULES, &mut entries).map_err(pack_error)?;
    }
    oci::pack::pack_layer(&entries, out).map_err(pack_error)
}

fn pack_error(e: oci::PackError) -> OpError {
    match e {
        oci::PackError::Io { context, source } => OpError::io(context, source),
        other => OpError::Failed(other.to_string()),
    }
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
