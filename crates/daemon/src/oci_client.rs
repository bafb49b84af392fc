//! The daemon's one OCI client, and the glue between `banger-oci` and the daemon's types:
//! source parsing and default names, error mapping, progress events.
//!
//! [`OciClient`] is built once at daemon start: one registry client with the user's
//! credentials, one blob cache with its per-digest locks and its leases. Image pulls,
//! kernel pulls and pushes and `image cache prune` all use it, so a prune sees every pull's
//! lease (a resolved image holds its blobs until it is dropped) and never deletes a layer
//! between its download and its use.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::event::OpEvent;
use banger_api::image::CachePruned;
use banger_api::layout::Layout;
use banger_oci as oci;

use crate::error::OpError;
use crate::progress::OpContext;

/// Registry client, credentials and blob cache, shared by every OCI operation.
pub struct OciClient {
    puller: Arc<oci::Puller>,
}

impl OciClient {
    /// Opens the blob cache under `layout` and reads Docker's credentials
    /// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    pub fn open(layout: &Layout) -> Result<OciClient, oci::Error> {
        let cache = oci::BlobCache::open(layout.oci_cache_dir())?;
        let creds = oci::CredentialStore::load(None)?;
        let puller = oci::Puller::new(cache, oci::RegistryOptions::default(), creds)?;
        Ok(OciClient {
            puller: Arc::new(puller),
        })
    }

    /// Resolve and fetch; cloned into the tasks that download in the background.
    pub fn puller(&self) -> &Arc<oci::Puller> {
        &self.puller
    }

    /// Removes every cached blob no pull in flight holds: converted images and stored
    /// kernels never need their layers again, a pull still running keeps its own.
    pub fn prune(&self, dry_run: bool) -> Result<CachePruned, OpError> {
        let report = self
            .puller
            .cache()
            .prune(&HashSet::new(), dry_run)
            .map_err(oci_error)?;
        tracing::info!(
            dry_run,
            removed = report.blobs,
            bytes = report.bytes,
            kept_leased = report.leased_blobs,
            kept_bytes = report.leased_bytes,
            "pruned the blob cache"
        );
        Ok(CachePruned {
            dry_run,
            blobs: report.blobs,
            bytes: report.bytes,
            in_use_blobs: report.leased_blobs,
            in_use_bytes: report.leased_bytes,
        })
    }
}

/// A source that parsed (no I/O yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSource {
    /// Canonical form recorded as the image's `source_ref` (`docker.io/library/debian:bookworm`).
    pub canonical: String,
    /// Name used when the user gives none (`debian-bookworm`).
    pub default_name: String,
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

/// What was resolved: digest, platform, layer count and download size.
pub fn resolved_event(image: &oci::ResolvedImage) -> OpEvent {
    OpEvent::Resolved {
        manifest_digest: image.manifest_digest.to_string(),
        platform: image.platform.to_string(),
        layers: image.layers.len(),
        total_bytes: image.layers.iter().filter_map(|l| l.size).sum(),
    }
}

/// Forwards the download progress of `image`'s layers to the client as `layer` events.
/// Byte counts arrive per network chunk; at most ~10 a second go out.
pub fn layer_progress(ctx: &OpContext, image: &oci::ResolvedImage) -> oci::ProgressFn {
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

fn layer_event(p: &oci::Progress, sizes: &[Option<u64>]) -> Option<OpEvent> {
    let total_of = |index: usize, total: Option<u64>| {
        total.or(sizes.get(index).copied().flatten()).unwrap_or(0)
    };
    match p {
        oci::Progress::LayerStarted {
            index,
            digest,
            total,
        } => Some(OpEvent::Layer {
            index: *index,
            digest: digest.to_string(),
            done_bytes: 0,
            total_bytes: total_of(*index, *total),
            cached: false,
        }),
        oci::Progress::LayerBytes { index, done, total } => Some(OpEvent::Layer {
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
            Some(OpEvent::Layer {
                index: *index,
                digest: digest.to_string(),
                done_bytes: total,
                total_bytes: total,
                cached: *cached,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
