//! `image.pull` orchestration: reference → kernel → staging → rootfs and kernel files (at
//! once) → publish → record. The image world (registries, layers, ext4) sits behind
//! [`PullBackend`], so this module is only the policy: order, locking and cleanup.
//!
//! Invariants: nothing half-made is ever listed (staging is invisible to `image.list`, and
//! the record is written only after the directory is published); every failure removes
//! what it made (staging before publication, the final directory after, and kernel files
//! it imported that nothing links); a name is checked before any work and again at
//! publication.

pub mod oci_backend;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use banger_api::event::OpEvent;
use banger_api::image::{CachePruned, Image};
use banger_api::names::validate_name;
use banger_api::pull::ImagePullParams;

use crate::claims::NameClaims;
use crate::error::OpError;
use crate::fsutil::{self, DirGuard};
use crate::ids;
use crate::images::{Images, file_sizes};
use crate::kernels::choice::KernelInputs;
use crate::kernels::content_store::{SharedFiles, StagedKernel};
use crate::kernels::{Kernels, choice};
use crate::paths;
use crate::progress::OpContext;
use crate::recovery::STAGING_SUFFIX;
use crate::store::Store;

pub use crate::oci_client::ParsedSource;

/// One image manifest, chosen for a platform, ready to be turned into a rootfs.
pub trait ResolvedPull: Send {
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
    ) -> Result<Box<dyn ResolvedPull>, OpError>;
    /// Removes cached download blobs (converted images never need them again) that no
    /// pull in flight holds.
    fn prune_cache(&self, dry_run: bool) -> Result<CachePruned, OpError>;
}

pub struct ImagePuller {
    pub images_dir: PathBuf,
    pub store: Arc<Store>,
    pub backend: Arc<dyn PullBackend>,
    /// Image names with a pull in flight.
    pub claims: NameClaims,
    /// Held only around "check name, rename, insert" so publication is atomic with respect
    /// to other pulls and registers; the long work runs outside it.
    pub publish_lock: Mutex<()>,
    /// Kernel files, shared by content with the kernel store and the other images.
    pub shared: Arc<SharedFiles>,
}

impl ImagePuller {
    pub fn new(
        images_dir: PathBuf,
        store: Arc<Store>,
        backend: Arc<dyn PullBackend>,
        shared: Arc<SharedFiles>,
    ) -> Self {
        ImagePuller {
            store,
            backend,
            claims: NameClaims::new(|name| {
                format!(
                    "an image named {name:?} is being pulled right now; wait for it or pick another --name"
                )
            }),
            publish_lock: Mutex::new(()),
            shared,
            images_dir,
        }
    }

    /// Prunes the blob cache. Pulls in flight (images and kernels) hold leases on their
    /// blobs, which the prune keeps; so it need not wait for them.
    pub fn prune_cache(&self, dry_run: bool) -> Result<CachePruned, OpError> {
        self.backend.prune_cache(dry_run)
    }

    /// Runs a whole pull. Blocking: call from a blocking thread.
    pub fn pull(
        &self,
        images: &Images,
        kernels: &Kernels,
        params: ImagePullParams,
        ctx: &OpContext,
    ) -> Result<Image, OpError> {
        // A `--kernel-ref` that is not local comes from the kernel source, if any.
        if params.kernel.kernel_path.is_none() {
            kernels.ensure_local(params.kernel.kernel_ref.as_deref(), ctx)?;
        }
        let result = self.try_pull(images, params, ctx);
        if result.is_err() {
            // The kernel files are staged beside the rootfs, so a failed conversion may
            // have imported a triple that nothing links now (the staging dir is gone).
            if let Err(e) = self.shared.gc(&self.store) {
                tracing::warn!(error = %e, "could not remove the kernel files of a failed pull");
            }
        }
        result
    }

    fn try_pull(
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
        let kernel = choice::resolve(&self.store, &params.kernel)?;
        if params.size_bytes == Some(0) {
            return Err(OpError::BadRequest(
                "--size must be greater than zero".into(),
            ));
        }

        // 3. Staging.
        let id = ids::new_id();
        let (staging, guard) = self.make_staging(&id)?;

        // 4. Rootfs: resolve, then reuse an identical conversion or build.
        ctx.emit(OpEvent::Resolving {
            reference: source.canonical.clone(),
        });
        let resolved = self
            .backend
            .resolve(&source, params.platform.as_deref(), ctx)?;
        kernel.check_platform(resolved.platform())?;
        ctx.check()?;
        let rootfs = staging.join("rootfs.ext4");
        // 5. Kernel files, at the same time.
        let built = self.build_rootfs_and_kernel(
            &kernel,
            resolved.as_ref(),
            &staging,
            &rootfs,
            params.size_bytes,
            ctx,
        )?;
        ctx.check()?;
        // After the conversion, as before: the CLI's rootfs bar ends at the next step line.
        ctx.emit(OpEvent::StagingKernel);

        // 6. Publish: rename, then record, under the publication lock.
        ctx.emit(OpEvent::Publishing);
        let final_dir = self.images_dir.join(&id);
        let record = Record {
            id: &id,
            name: &name,
            final_dir: &final_dir,
            rootfs: &rootfs,
            kernel: &kernel,
            staged: &built.staged,
            source: &source,
            resolved: resolved.as_ref(),
        };
        let image = record.image()?;
        fsutil::publish_dir(
            guard,
            &staging,
            &final_dir,
            &self.publish_lock,
            || images.ensure_name_free(&name),
            || Ok(self.store.insert_image(&image)?),
        )?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        ctx.emit(OpEvent::Done { elapsed_ms });
        let (rootfs_ms, kernel_ms) = (built.rootfs_ms, built.kernel_ms);
        tracing::info!(id = %image.id, name = %image.name, source = %source.canonical, digest = resolved.manifest_digest(), elapsed_ms, rootfs_ms, kernel_ms, "pulled image");
        Ok(image)
    }

    /// `<images>/<id><STAGING_SUFFIX>`, removed by the guard unless published.
    fn make_staging(&self, id: &str) -> Result<(PathBuf, DirGuard), OpError> {
        let staging = self.images_dir.join(format!("{id}{STAGING_SUFFIX}"));
        // Recreated if someone removed it under us: a missing directory is no failure.
        std::fs::create_dir_all(&self.images_dir)
            .map_err(|e| OpError::io(format!("creating {}", self.images_dir.display()), e))?;
        std::fs::create_dir(&staging)
            .map_err(|e| OpError::io(format!("creating {}", staging.display()), e))?;
        let guard = DirGuard::new(staging.clone());
        Ok((staging, guard))
    }

    /// Builds (or reuses) the rootfs while another thread stages the kernel files: a
    /// user's triple is hashed and copied into the shared store on first use, which would
    /// otherwise add its whole time to a cold pull. Hardlinks to the shared copies; the
    /// pin keeps the modules tree until recorded. Either failure stops the other.
    fn build_rootfs_and_kernel(
        &self,
        kernel: &KernelInputs,
        resolved: &dyn ResolvedPull,
        staging: &Path,
        rootfs: &Path,
        size_bytes: Option<u64>,
        ctx: &OpContext,
    ) -> Result<Built, OpError> {
        let ((built, rootfs_ms), (staged, kernel_ms)) = std::thread::scope(|s| {
            let kernel_files = s.spawn(|| {
                let t = Instant::now();
                let staged = self.shared.stage(kernel, staging);
                if staged.is_err() {
                    // The pull fails anyway: stop the conversion instead of finishing it.
                    ctx.cancel();
                }
                (staged, t.elapsed().as_millis() as u64)
            });
            let t = Instant::now();
            let built = if self.reuse_rootfs(resolved, size_bytes, rootfs, ctx) {
                Ok(())
            } else {
                resolved.build_rootfs(rootfs, size_bytes, ctx)
            };
            let rootfs_ms = t.elapsed().as_millis() as u64;
            let staged = kernel_files.join().unwrap_or_else(|_| {
                (
                    Err(OpError::Failed("staging the kernel files panicked".into())),
                    0,
                )
            });
            ((built, rootfs_ms), staged)
        });
        // Either failure drops the other's result: a `StagedKernel` releases its pin, the
        // guard removes the staging dir. The build's `Cancelled` is the staging error's echo.
        match (built, staged) {
            (Ok(()), Ok(staged)) => Ok(Built {
                staged,
                rootfs_ms,
                kernel_ms,
            }),
            (Err(OpError::Cancelled) | Ok(()), Err(e)) | (Err(e), _) => Err(e),
        }
    }

    /// Hardlinks the rootfs of an earlier conversion of the same manifest, when the size
    /// request allows it. Images never write their rootfs (VMs get copy-on-write disks), so
    /// sharing the inode is safe and costs nothing.
    fn reuse_rootfs(
        &self,
        resolved: &dyn ResolvedPull,
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
                ctx.emit(OpEvent::Reused {
                    from_image: image.name,
                });
                return true;
            }
        }
        false
    }
}

/// What [`ImagePuller::build_rootfs_and_kernel`] made, with how long each half took.
struct Built {
    staged: StagedKernel,
    rootfs_ms: u64,
    kernel_ms: u64,
}

/// What an image's record is made of, at the end of a pull.
struct Record<'a> {
    id: &'a str,
    name: &'a str,
    final_dir: &'a Path,
    rootfs: &'a Path,
    kernel: &'a KernelInputs,
    staged: &'a StagedKernel,
    source: &'a ParsedSource,
    resolved: &'a dyn ResolvedPull,
}

impl Record<'_> {
    /// The image as it will be recorded, paths at its published place.
    fn image(&self) -> Result<Image, OpError> {
        let (size, allocated) = file_sizes(self.rootfs)?;
        let artifact = |rel: &str| paths::to_string(&self.final_dir.join(rel));
        Ok(Image {
            id: self.id.to_string(),
            name: self.name.to_string(),
            managed: true,
            artifact_dir: Some(paths::to_string(self.final_dir)?),
            rootfs_path: artifact("rootfs.ext4")?,
            kernel_path: artifact("kernel")?,
            initrd_path: self
                .kernel
                .initrd
                .as_ref()
                .map(|_| artifact("initrd.img"))
                .transpose()?,
            modules_dir: self
                .staged
                .modules_dir
                .as_deref()
                .map(paths::to_string)
                .transpose()?,
            kernel_ref: self.kernel.kernel_ref.clone(),
            source_ref: Some(self.source.canonical.clone()),
            manifest_digest: Some(self.resolved.manifest_digest().to_string()),
            platform: Some(self.resolved.platform().to_string()),
            size_bytes: Some(size),
            allocated_bytes: Some(allocated),
            created_at: ids::now_rfc3339(),
        })
    }
}
