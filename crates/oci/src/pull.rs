//! The high-level flow the daemon drives: `resolve` a source to a manifest + config for a
//! platform, `fetch_layers` into the cache concurrently with progress events, then
//! `crate::flatten` the returned inputs into a sink.

use crate::cache::{BlobCache, BlobWriter, Lease};
use crate::credentials::CredentialStore;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::flatten::{LayerInput, Limits};
use crate::manifest::{
    Descriptor, ImageConfig, ImageManifest, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, ManifestDoc,
    Platform, select_platform,
};
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryOptions};
use crate::source::{ArchiveImage, Source, extract_archive};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Layer media types we can decode (compression is sniffed anyway).
const LAYER_TYPES: &[&str] = &[
    crate::manifest::OCI_LAYER,
    crate::manifest::OCI_LAYER_GZIP,
    crate::manifest::OCI_LAYER_ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "",
];

/// One layer of a resolved image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDescriptor {
    pub digest: Digest,
    pub size: Option<u64>,
    pub media_type: String,
    pub diff_id: Option<Digest>,
}

/// Where the blobs of a resolved image are read from.
#[derive(Clone, Debug)]
pub enum ImageOrigin {
    Registry {
        registry: String,
        repository: String,
    },
    /// Blobs already on disk (an `oci:` layout, or an unpacked archive kept alive by `_keep`).
    Files {
        blobs: HashMap<Digest, PathBuf>,
        in_place: bool,
        _keep: Option<Arc<tempfile::TempDir>>,
    },
}

#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The source as given, normalised (`docker.io/library/debian:latest`).
    pub source: String,
    /// Digest of the platform manifest (for `docker-archive:`, the config digest, i.e. the image ID).
    pub manifest_digest: Digest,
    /// Digest of the index/list the tag pointed at, if any.
    pub index_digest: Option<Digest>,
    pub platform: Platform,
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Bottom layer first.
    pub layers: Vec<LayerDescriptor>,
    pub origin: ImageOrigin,
    /// Holds the image's blobs in the cache (its config from `resolve`, its layers from
    /// `fetch_layers`): `BlobCache::prune` keeps them while any clone of the image lives.
    pub lease: Lease,
}

impl ResolvedImage {
    /// Every digest this image keeps alive in the cache (for pruning).
    pub fn digests(&self) -> Vec<Digest> {
        let mut v = vec![self.config_digest.clone(), self.manifest_digest.clone()];
        v.extend(self.layers.iter().map(|l| l.digest.clone()));
        v
    }

    /// Flatten limits tied to what the image declares: [`Limits::for_compressed_size`] of
    /// its layers' total size. A caller that knows better (the user gave the unpacked
    /// size) raises `max_unpacked_bytes` itself.
    pub fn limits(&self) -> Limits {
        Limits::for_compressed_size(self.layers.iter().filter_map(|l| l.size).sum())
    }
}

/// Download progress, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    LayerStarted {
        index: usize,
        digest: Digest,
        total: Option<u64>,
    },
    LayerBytes {
        index: usize,
        done: u64,
        total: Option<u64>,
    },
    LayerDone {
        index: usize,
        digest: Digest,
        cached: bool,
    },
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

pub struct Puller {
    cache: Arc<BlobCache>,
    client: Arc<RegistryClient>,
    /// Layers downloaded at once.
    pub concurrency: usize,
}

fn blocking_err(e: tokio::task::JoinError) -> Error {
    Error::io("background task", std::io::Error::other(e))
}

/// Why a local document could not be read: missing, or over its limit.
enum LocalReadError {
    Open(std::io::Error),
    Read(std::io::Error),
    TooLarge,
}

/// Reads a local document of at most `limit` bytes, the limit enforced while reading (the
/// file may be a FIFO, or grow).
async fn read_small_file(path: &Path, limit: u64) -> Result<Vec<u8>, LocalReadError> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(LocalReadError::Open)?;
    let mut body = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut body)
        .await
        .map_err(LocalReadError::Read)?;
    if body.len() as u64 > limit {
        return Err(LocalReadError::TooLarge);
    }
    Ok(body)
}

/// `read_small_file` for a document of an image source named `name`: failures are
/// `Error::Source` naming the file, or `TooLarge`.
async fn read_source_document(name: &str, path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    read_small_file(path, limit).await.map_err(|e| match e {
        LocalReadError::TooLarge => Error::TooLarge {
            what: format!("{name}: {what}"),
            limit,
        },
        LocalReadError::Open(e) | LocalReadError::Read(e) => {
            Error::Source(name.to_string(), format!("{what}: {e}"))
        }
    })
}

/// Reads a document blob of at most `limit` bytes and checks it against its digest.
async fn read_verified(path: &Path, d: &Digest, limit: u64) -> Result<Vec<u8>> {
    let body = read_small_file(path, limit).await.map_err(|e| match e {
        LocalReadError::Open(e) => Error::NotFound(format!("blob {d} ({}: {e})", path.display())),
        LocalReadError::Read(e) => Error::io(format!("read {}", path.display()), e),
        LocalReadError::TooLarge => Error::TooLarge {
            what: format!("document {d}"),
            limit,
        },
    })?;
    let got = Digest::of(&body);
    if got != *d {
        return Err(Error::DigestMismatch {
            what: format!("blob {}", path.display()),
            expected: d.clone(),
            actual: got,
        });
    }
    Ok(body)
}

impl Puller {
    pub fn new(cache: BlobCache, opts: RegistryOptions, creds: CredentialStore) -> Result<Puller> {
        Ok(Puller {
            cache: Arc::new(cache),
            client: Arc::new(RegistryClient::new(opts, creds)?),
            concurrency: 3,
        })
    }

    pub fn cache(&self) -> &BlobCache {
        &self.cache
    }

    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// Resolves `source` to one platform's manifest and config. Nothing but small JSON
    /// documents is downloaded (configs land in the cache).
    pub async fn resolve(&self, source: &Source, platform: &Platform) -> Result<ResolvedImage> {
        match source {
            Source::Registry(r) => {
                let (body, ct, digest) = self
                    .client
                    .manifest(&r.registry, &r.repository, &r.manifest_reference())
                    .await?;
                let origin = ImageOrigin::Registry {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                };
                self.finish_resolve(r.to_string(), body, ct, digest, platform, origin)
                    .await
            }
            Source::OciDir { dir, tag } => {
                let origin = ImageOrigin::Files {
                    blobs: HashMap::new(),
                    in_place: true,
                    _keep: None,
                };
                self.resolve_layout(source.to_string(), dir, tag.as_deref(), platform, origin)
                    .await
            }
            Source::OciArchive { file, tag } => {
                let tmp = Arc::new(
                    tempfile::tempdir_in(self.cache.root().join("tmp"))
                        .map_err(|e| Error::io("temp dir", e))?,
                );
                let (f, d) = (file.clone(), tmp.path().to_path_buf());
                tokio::task::spawn_blocking(move || extract_archive(&f, &d))
                    .await
                    .map_err(blocking_err)??;
                let origin = ImageOrigin::Files {
                    blobs: HashMap::new(),
                    in_place: false,
                    _keep: Some(tmp.clone()),
                };
                self.resolve_layout(
                    source.to_string(),
                    tmp.path(),
                    tag.as_deref(),
                    platform,
                    origin,
                )
                .await
            }
            Source::DockerArchive { file, image } => {
                self.resolve_docker_archive(source.to_string(), file, image.as_ref(), platform)
                    .await
            }
        }
    }

    async fn resolve_layout(
        &self,
        name: String,
        dir: &Path,
        tag: Option<&str>,
        platform: &Platform,
        origin: ImageOrigin,
    ) -> Result<ResolvedImage> {
        let index_path = dir.join("index.json");
        let body = read_source_document(
            &name,
            &index_path,
            &index_path.display().to_string(),
            MAX_MANIFEST_BYTES,
        )
        .await?;
        let ManifestDoc::Index(index) =
            ManifestDoc::parse(&body, Some(crate::manifest::OCI_INDEX))?
        else {
            return Err(Error::Source(
                name,
                "index.json is not an image index".into(),
            ));
        };
        let ref_name = |d: &Descriptor| {
            d.annotations
                .get("org.opencontainers.image.ref.name")
                .cloned()
        };
        let desc = match tag {
            Some(t) => index
                .manifests
                .iter()
                .find(|d| ref_name(d).as_deref() == Some(t)),
            None if index.manifests.len() == 1 => index.manifests.first(),
            None => None,
        };
        let Some(desc) = desc else {
            let tags: Vec<String> = index.manifests.iter().filter_map(ref_name).collect();
            return Err(Error::NotFound(format!(
                "{name}: no manifest {} (tags: {})",
                tag.map(|t| format!("tagged {t:?}"))
                    .unwrap_or_else(|| "selected: give a tag".into()),
                tags.join(", ")
            )));
        };
        let blob = |d: &Digest| dir.join("blobs/sha256").join(d.hex());
        check_declared(&desc.digest, desc.size, MAX_MANIFEST_BYTES, "manifest")?;
        let body = read_verified(&blob(&desc.digest), &desc.digest, MAX_MANIFEST_BYTES).await?;
        let mut origin = origin;
        if let ImageOrigin::Files { blobs, .. } = &mut origin {
            // Every blob of the layout is addressable by digest.
            if let Ok(rd) = std::fs::read_dir(dir.join("blobs/sha256")) {
                for e in rd.flatten() {
                    if let Ok(d) =
                        Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy()))
                    {
                        blobs.insert(d, e.path());
                    }
                }
            }
        }
        self.finish_resolve(
            name,
            body,
            Some(desc.media_type.clone()).filter(|m| !m.is_empty()),
            desc.digest.clone(),
            platform,
            origin,
        )
        .await
    }

    /// Reads a small document (manifest or config) by digest from wherever the image lives.
    /// A declared `size` over `limit` is refused before a byte is read; a download stops
    /// at the declared size (a longer body is an error, never a larger file).
    async fn document(
        &self,
        origin: &ImageOrigin,
        desc: &Descriptor,
        limit: u64,
        what: &str,
        lease: &Lease,
    ) -> Result<Vec<u8>> {
        let (d, size) = (&desc.digest, Some(desc.size));
        check_declared(d, desc.size, limit, what)?;
        match origin {
            ImageOrigin::Registry {
                registry,
                repository,
            } => {
                lease.hold(d);
                let (p, _) = self
                    .cache
                    .ensure(d, size, async |w: &mut BlobWriter| {
                        self.client
                            .blob(registry, repository, d, size, w, &|_| {})
                            .await
                    })
                    .await?;
                read_verified(&p, d, limit).await
            }
            ImageOrigin::Files { blobs, .. } => {
                let p = blobs
                    .get(d)
                    .ok_or_else(|| Error::NotFound(format!("blob {d} is not in the image")))?;
                read_verified(p, d, limit).await
            }
        }
    }

    async fn finish_resolve(
        &self,
        name: String,
        body: Vec<u8>,
        ct: Option<String>,
        digest: Digest,
        platform: &Platform,
        origin: ImageOrigin,
    ) -> Result<ResolvedImage> {
        let lease = self.cache.lease();
        let (manifest, manifest_digest, index_digest, from_index) =
            match ManifestDoc::parse(&body, ct.as_deref())? {
                ManifestDoc::Image(m) => (m, digest, None, false),
                ManifestDoc::Index(idx) => {
                    let desc = select_platform(&idx, platform)?;
                    check_declared(&desc.digest, desc.size, MAX_MANIFEST_BYTES, "manifest")?;
                    let body = match &origin {
                        ImageOrigin::Registry {
                            registry,
                            repository,
                        } => {
                            self.client
                                .manifest(registry, repository, &desc.digest.to_string())
                                .await?
                                .0
                        }
                        files => {
                            self.document(files, desc, MAX_MANIFEST_BYTES, "manifest", &lease)
                                .await?
                        }
                    };
                    if body.len() as u64 != desc.size {
                        return Err(Error::SizeMismatch {
                            what: format!("manifest {}", desc.digest),
                            expected: desc.size,
                            actual: body.len() as u64,
                        });
                    }
                    let ManifestDoc::Image(m) = ManifestDoc::parse(
                        &body,
                        Some(&desc.media_type)
                            .filter(|m| !m.is_empty())
                            .map(String::as_str),
                    )?
                    else {
                        return Err(Error::Protocol(format!(
                            "{} is a nested index",
                            desc.digest
                        )));
                    };
                    (m, desc.digest.clone(), Some(digest), true)
                }
            };
        let config_body = self
            .document(
                &origin,
                &manifest.config,
                MAX_CONFIG_BYTES,
                "image config",
                &lease,
            )
            .await?;
        let config = ImageConfig::parse(&config_body)?;
        let actual = Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone(),
        };
        if !from_index && !config.architecture.is_empty() && !platform.satisfied_by(&actual) {
            return Err(Error::PlatformNotAvailable {
                wanted: platform.to_string(),
                available: vec![actual.to_string()],
            });
        }
        let layers = layers_of(&manifest, &config)?;
        Ok(ResolvedImage {
            source: name,
            manifest_digest,
            index_digest,
            platform: actual,
            config_digest: manifest.config.digest.clone(),
            config,
            layers,
            origin,
            lease,
        })
    }

    async fn resolve_docker_archive(
        &self,
        name: String,
        file: &Path,
        image: Option<&ArchiveImage>,
        platform: &Platform,
    ) -> Result<ResolvedImage> {
        let tmp = Arc::new(
            tempfile::tempdir_in(self.cache.root().join("tmp"))
                .map_err(|e| Error::io("temp dir", e))?,
        );
        let (f, d) = (file.to_path_buf(), tmp.path().to_path_buf());
        tokio::task::spawn_blocking(move || extract_archive(&f, &d))
            .await
            .map_err(blocking_err)??;
        let mp = tmp.path().join("manifest.json");
        let body = read_source_document(&name, &mp, "manifest.json", MAX_MANIFEST_BYTES).await?;
        let items: Vec<ArchiveItem> = serde_json::from_slice(&body)
            .map_err(|e| Error::Source(name.clone(), format!("manifest.json: {e}")))?;
        let item =
            select_archive_item(&items, image).map_err(|m| Error::Source(name.clone(), m))?;
        let member = |p: &str| -> Result<PathBuf> {
            let n = crate::tarentry::normalize(p.as_bytes())
                .map_err(|m| Error::Source(name.clone(), format!("{p}: {m}")))?;
            Ok(tmp.path().join(n))
        };
        let config_path = member(&item.config)?;
        let config_body =
            read_source_document(&name, &config_path, &item.config, MAX_CONFIG_BYTES).await?;
        let config_digest = Digest::of(&config_body);
        let config = ImageConfig::parse(&config_body)?;
        let actual = Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone(),
        };
        if !config.architecture.is_empty() && !platform.satisfied_by(&actual) {
            return Err(Error::PlatformNotAvailable {
                wanted: platform.to_string(),
                available: vec![actual.to_string()],
            });
        }
        if item.layers.len() != config.rootfs.diff_ids.len() {
            return Err(Error::Source(
                name,
                "layer count differs from the config's diff_ids".into(),
            ));
        }
        let mut blobs = HashMap::new();
        let mut layers = Vec::new();
        for (l, diff_id) in item.layers.iter().zip(&config.rootfs.diff_ids) {
            let p = member(l)?;
            let p2 = p.clone();
            let (digest, size) = tokio::task::spawn_blocking(move || crate::cache::hash_file(&p2))
                .await
                .map_err(blocking_err)?
                .map_err(|e| Error::io(format!("read {}", p.display()), e))?;
            blobs.insert(digest.clone(), p);
            layers.push(LayerDescriptor {
                digest,
                size: Some(size),
                media_type: String::new(),
                diff_id: Some(diff_id.clone()),
            });
        }
        Ok(ResolvedImage {
            source: name,
            manifest_digest: config_digest.clone(),
            index_digest: None,
            platform: actual,
            config_digest,
            config,
            layers,
            origin: ImageOrigin::Files {
                blobs,
                in_place: false,
                _keep: Some(tmp),
            },
            lease: self.cache.lease(),
        })
    }

    /// Makes every layer available locally (downloading into the cache, at most
    /// `concurrency` at a time, or importing from an archive) and returns flatten inputs.
    pub async fn fetch_layers(
        &self,
        image: &ResolvedImage,
        progress: ProgressFn,
    ) -> Result<Vec<LayerInput>> {
        self.fetch_layers_as_ready(image, progress, &|_, _| {})
            .await
    }

    /// Like [`Puller::fetch_layers`], and also hands each layer to `ready` the moment it
    /// is verified, so merging can start before every download is done. The top layer
    /// (merged first) is requested first.
    pub async fn fetch_layers_as_ready(
        &self,
        image: &ResolvedImage,
        progress: ProgressFn,
        ready: &(dyn Fn(usize, LayerInput) + Send + Sync),
    ) -> Result<Vec<LayerInput>> {
        let sem = Arc::new(tokio::sync::Semaphore::new(self.concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for (index, layer) in image.layers.iter().cloned().enumerate().rev() {
            let (cache, client, origin, progress, sem, lease) = (
                self.cache.clone(),
                self.client.clone(),
                image.origin.clone(),
                progress.clone(),
                sem.clone(),
                image.lease.clone(),
            );
            set.spawn(async move {
                let _permit = sem
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Protocol("fetch cancelled".into()))?;
                let d = layer.digest.clone();
                progress(Progress::LayerStarted {
                    index,
                    digest: d.clone(),
                    total: layer.size,
                });
                let in_place_blob = matches!(&origin, ImageOrigin::Files { in_place: true, .. });
                if !in_place_blob {
                    // Before the cache is asked: see `Lease::hold`.
                    lease.hold(&d);
                }
                let (path, fetched) = match &origin {
                    ImageOrigin::Registry {
                        registry,
                        repository,
                    } => {
                        let p = progress.clone();
                        let total = layer.size;
                        let report = move |done| p(Progress::LayerBytes { index, done, total });
                        cache
                            .ensure(&d, layer.size, async |w: &mut BlobWriter| {
                                client
                                    .blob(registry, repository, &d, layer.size, w, &report)
                                    .await
                            })
                            .await?
                    }
                    ImageOrigin::Files {
                        blobs, in_place, ..
                    } => {
                        let src = blobs.get(&d).ok_or_else(|| {
                            Error::NotFound(format!("layer {d} is not in the image"))
                        })?;
                        if *in_place {
                            (src.clone(), false)
                        } else {
                            let f = tokio::fs::File::open(src)
                                .await
                                .map_err(|e| Error::io(format!("open {}", src.display()), e))?;
                            (cache.import(&d, layer.size, f).await?, true)
                        }
                    }
                };
                progress(Progress::LayerDone {
                    index,
                    digest: d.clone(),
                    cached: !fetched,
                });
                Ok::<_, Error>((
                    index,
                    LayerInput {
                        path,
                        digest: d,
                        diff_id: layer.diff_id.clone(),
                        // The cache hashes every blob it hands out (a fresh download while
                        // streaming, a cached one on reuse); a blob read in place is not.
                        verified: !in_place_blob,
                    },
                ))
            });
        }
        let mut out: Vec<Option<LayerInput>> = vec![None; image.layers.len()];
        while let Some(r) = set.join_next().await {
            let (i, input) = r.map_err(blocking_err)??;
            ready(i, input.clone());
            out[i] = Some(input);
        }
        out.into_iter()
            .map(|o| o.ok_or_else(|| Error::Protocol("layer fetch lost".into())))
            .collect()
    }
}

/// Refuses a document whose descriptor declares more than `limit` bytes, before any of it
/// is downloaded or read.
fn check_declared(d: &Digest, declared: u64, limit: u64, what: &str) -> Result<()> {
    if declared > limit {
        return Err(Error::TooLarge {
            what: format!("{what} {d} (declared {declared} bytes)"),
            limit,
        });
    }
    Ok(())
}

fn layers_of(m: &ImageManifest, config: &ImageConfig) -> Result<Vec<LayerDescriptor>> {
    if m.layers.len() != config.rootfs.diff_ids.len() {
        return Err(Error::Protocol(format!(
            "manifest has {} layers but the config lists {} diff_ids",
            m.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    m.layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(l, diff)| {
            if !LAYER_TYPES.contains(&l.media_type.as_str()) {
                return Err(Error::Protocol(format!(
                    "unsupported layer media type {:?} ({})",
                    l.media_type, l.digest
                )));
            }
            Ok(LayerDescriptor {
                digest: l.digest.clone(),
                size: Some(l.size),
                media_type: l.media_type.clone(),
                diff_id: Some(diff.clone()),
            })
        })
        .collect()
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(serde::Deserialize)]
struct ArchiveItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The image `wanted` names (a tag, compared in Docker's normalised form, or an index);
/// without a choice, the archive must hold exactly one. Errors list what is there.
fn select_archive_item<'a>(
    items: &'a [ArchiveItem],
    wanted: Option<&ArchiveImage>,
) -> std::result::Result<&'a ArchiveItem, String> {
    let normal = |t: &str| Reference::parse(t).map(|r| r.to_string()).ok();
    let listing = || {
        items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                let tags = it.repo_tags.as_deref().unwrap_or_default();
                if tags.is_empty() {
                    format!("@{i} (untagged)")
                } else {
                    format!("@{i} {}", tags.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match wanted {
        None => match items {
            [one] => Ok(one),
            [] => Err("the archive's manifest.json lists no image".into()),
            _ => Err(format!(
                "the archive holds {} images ({}); pick one with docker-archive:FILE:NAME:TAG or docker-archive:FILE:@INDEX",
                items.len(),
                listing()
            )),
        },
        Some(ArchiveImage::Index(i)) => items
            .get(*i)
            .ok_or_else(|| format!("no image @{i} in the archive; it holds {}", listing())),
        Some(ArchiveImage::Tag(t)) => {
            let want = normal(t);
            items
                .iter()
                .find(|it| {
                    it.repo_tags
                        .iter()
                        .flatten()
                        .any(|have| have == t || (want.is_some() && normal(have) == want))
                })
                .ok_or_else(|| {
                    format!("no image tagged {t} in the archive; it holds {}", listing())
                })
        }
    }
}
