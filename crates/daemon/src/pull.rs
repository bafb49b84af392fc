//! `image.pull` orchestration: reference → kernel → staging → rootfs → kernel files →
//! publish → record. The image world (registries, layers, ext4) sits behind
//! [`PullBackend`], so this module is only the policy: order, locking and cleanup.
//!
//! Invariants: nothing half-made is ever listed (staging is invisible to `image.list`, and
//! the record is written only after the directory is published); every failure removes
//! what it made (staging before publication, the final directory after); a name is checked
//! before any work and again at publication.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use banger_api::image::{CachePruned, Image};
use banger_api::names::validate_name;
use banger_api::pull::{ImagePullParams, PullEvent};

use crate::error::OpError;
use crate::fsutil::{self, DirGuard};
use crate::ids;
use crate::images::{Images, file_sizes};
use crate::kernel_inputs::{self, KernelArgs};
use crate::kernels::shared::SharedFiles;
use crate::paths;
use crate::progress::OpContext;
use crate::recovery::STAGING_SUFFIX;
use crate::store::Store;

/// A source that parsed (no I/O yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSource {
    /// Canonical form recorded as the image's `source_ref` (`docker.io/library/debian:bookworm`).
    pub canonical: String,
    /// Name used when the user gives none (`debian-bookworm`).
    pub default_name: String,
}

/// One image manifest, chosen for a platform, ready to be turned into a rootfs.
pub trait ResolvedImage: Send {
    fn manifest_digest(&self) -> &str;
    fn platform(&self) -> &str;
    /// Fetches, flattens and writes the root filesystem to `dest` (which must not exist
    /// on failure). `size_bytes`: exact size, or `None` for `max(content × 1.25, 1 GiB)`.
    fn build_rootfs(
        &self,
        dest: &Path,
        size_bytes: Option<u64>,
        ctx: &OpContext,
    ) -> Result<(), OpError>;
}

/// Where images come from. The real backend is OCI + ext4; tests substitute stubs (the
/// seed's `pullAndFlatten` seam).
pub trait PullBackend: Send + Sync {
    fn parse(&self, source: &str) -> Result<ParsedSource, OpError>;
    fn resolve(
        &self,
        source: &ParsedSource,
        platform: Option<&str>,
        ctx: &OpContext,
    ) -> Result<Box<dyn ResolvedImage>, OpError>;
    /// Removes cached download blobs (converted images never need them again).
    fn prune_cache(&self, dry_run: bool) -> Result<CachePruned, OpError>;
}

/// Names with a pull in flight: a second pull of the same name fails at once instead of
/// after minutes of work.
#[derive(Default)]
pub struct NameClaims {
    names: Mutex<HashSet<String>>,
}

pub struct NameClaim<'a> {
    claims: &'a NameClaims,
    name: String,
}

impl NameClaims {
    pub fn claim(&self, name: &str) -> Result<NameClaim<'_>, OpError> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if !names.insert(name.to_string()) {
            return Err(OpError::AlreadyExists(format!(
                "an image named {name:?} is being pulled right now; wait for it or pick another --name"
            )));
        }
        Ok(NameClaim {
            claims: self,
            name: name.to_string(),
        })
    }
}

impl Drop for NameClaim<'_> {
    fn drop(&mut self) {
        let mut names = self.claims.names.lock().unwrap_or_else(|e| e.into_inner());
        names.remove(&self.name);
    }
}

pub struct Puller {
    pub images_dir: PathBuf,
    pub store: Arc<Store>,
    pub backend: Arc<dyn PullBackend>,
    pub claims: NameClaims,
    /// Held only around "check name, rename, insert" so publication is atomic with respect
    /// to other pulls and registers; the long work runs outside it.
    pub publish_lock: Mutex<()>,
    /// Kernel files, shared by content with the kernel store and the other images.
    pub shared: Arc<SharedFiles>,
}

impl Puller {
    pub fn new(images_dir: PathBuf, store: Arc<Store>, backend: Arc<dyn PullBackend>) -> Self {
        Puller {
            store,
            backend,
            claims: NameClaims::default(),
            publish_lock: Mutex::new(()),
            // The images dir is `<state>/images`; the shared files live beside it.
            shared: SharedFiles::for_state_dir(images_dir.parent().unwrap_or(&images_dir)),
            images_dir,
        }
    }

    /// Prunes the blob cache, refusing while a pull might be using it.
    pub fn prune_cache(&self, dry_run: bool) -> Result<CachePruned, OpError> {
        let in_flight = self.claims.names.lock().unwrap_or_else(|e| e.into_inner());
        if !in_flight.is_empty() && !dry_run {
            return Err(OpError::Unavailable(format!(
                "a pull is in progress ({}); prune when it has finished",
                in_flight.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        // Holding the claims lock keeps new pulls from starting meanwhile.
        self.backend.prune_cache(dry_run)
    }

    /// Runs a whole pull. Blocking: call from a blocking thread.
    pub fn pull(
        &self,
        images: &Images,
        params: ImagePullParams,
        ctx: &OpContext,
    ) -> Result<Image, OpError> {
        let started = Instant::now();
        // 1. Reference and name, before anything else.
        let source = self.backend.parse(&params.reference)?;
        let name = params
            .name
            .clone()
            .unwrap_or_else(|| source.default_name.clone());
        validate_name(&name).map_err(OpError::BadRequest)?;
        images.ensure_name_free(&name)?;
        let _claim = self.claims.claim(&name)?;

        // 2. Kernel inputs: only the kernel triple is validated here.
        let kernel = kernel_inputs::resolve(
            &self.store,
            &KernelArgs {
                kernel_ref: params.kernel_ref.clone(),
                kernel_path: params.kernel_path.clone(),
                initrd_path: params.initrd_path.clone(),
                modules_dir: params.modules_dir.clone(),
            },
        )?;
        if params.size_bytes == Some(0) {
            return Err(OpError::BadRequest(
                "--size must be greater than zero".into(),
            ));
        }

        // 3. Staging.
        let id = ids::new_id();
        let staging = self.images_dir.join(format!("{id}{STAGING_SUFFIX}"));
        // Recreated if someone removed it under us: a missing directory is no failure.
        std::fs::create_dir_all(&self.images_dir)
            .map_err(|e| OpError::io(format!("creating {}", self.images_dir.display()), e))?;
        std::fs::create_dir(&staging)
            .map_err(|e| OpError::io(format!("creating {}", staging.display()), e))?;
        let mut guard = DirGuard::new(staging.clone());

        // 4. Rootfs: resolve, then reuse an identical conversion or build.
        ctx.emit(PullEvent::Resolving {
            reference: source.canonical.clone(),
        });
        let resolved = self
            .backend
            .resolve(&source, params.platform.as_deref(), ctx)?;
        kernel.check_platform(resolved.platform())?;
        ctx.check()?;
        let rootfs = staging.join("rootfs.ext4");
        if !self.reuse_rootfs(resolved.as_ref(), params.size_bytes, &rootfs, ctx) {
            resolved.build_rootfs(&rootfs, params.size_bytes, ctx)?;
        }
        ctx.check()?;

        // 5. Kernel files.
        ctx.emit(PullEvent::StagingKernel);
        // Hardlinks to the shared copies; the pin keeps the modules tree until recorded.
        let shared = self.shared.stage(&kernel, &staging)?;
        fsutil::fsync_dir(&staging)?;
        ctx.check()?;

        // 6. Publish: rename, then record, under the publication lock.
        ctx.emit(PullEvent::Publishing);
        let final_dir = self.images_dir.join(&id);
        let (size, allocated) = file_sizes(&rootfs)?;
        let artifact = |rel: &str| paths::to_string(&final_dir.join(rel));
        let image = Image {
            id: id.clone(),
            name: name.clone(),
            managed: true,
            artifact_dir: Some(paths::to_string(&final_dir)?),
            rootfs_path: artifact("rootfs.ext4")?,
            kernel_path: artifact("kernel")?,
            initrd_path: kernel
                .initrd
                .as_ref()
                .map(|_| artifact("initrd.img"))
                .transpose()?,
            modules_dir: shared
                .modules_dir
                .as_deref()
                .map(paths::to_string)
                .transpose()?,
            kernel_ref: kernel.kernel_ref.clone(),
            source_ref: Some(source.canonical.clone()),
            manifest_digest: Some(resolved.manifest_digest().to_string()),
            platform: Some(resolved.platform().to_string()),
            size_bytes: Some(size),
            allocated_bytes: Some(allocated),
            created_at: ids::now_rfc3339(),
        };
        {
            let _publishing = self.publish_lock.lock().unwrap_or_else(|e| e.into_inner());
            images.ensure_name_free(&name)?;
            std::fs::rename(&staging, &final_dir)
                .map_err(|e| OpError::io(format!("publishing {}", final_dir.display()), e))?;
            guard.moved_to(final_dir.clone());
            fsutil::fsync_dir(&self.images_dir)?;
            self.store.insert_image(&image)?;
        }
        guard.disarm();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        ctx.emit(PullEvent::Done { elapsed_ms });
        tracing::info!(id = %image.id, name = %image.name, source = %source.canonical, digest = resolved.manifest_digest(), elapsed_ms, "pulled image");
        Ok(image)
    }

    /// Hardlinks the rootfs of an earlier conversion of the same manifest, when the size
    /// request allows it. Images never write their rootfs (VMs get copy-on-write disks), so
    /// sharing the inode is safe and costs nothing.
    fn reuse_rootfs(
        &self,
        resolved: &dyn ResolvedImage,
        size: Option<u64>,
        dest: &Path,
        ctx: &OpContext,
    ) -> bool {
        let Ok(candidates) = self
            .store
            .images_with_digest(resolved.manifest_digest(), resolved.platform())
        else {
            return false;
        };
        for image in candidates.into_iter().filter(|i| i.managed) {
            if size.is_some() && size != image.size_bytes {
                continue;
            }
            if std::fs::hard_link(&image.rootfs_path, dest).is_ok() {
                ctx.emit(PullEvent::Reused {
                    from_image: image.name,
                });
                return true;
            }
        }
        false
    }
}
