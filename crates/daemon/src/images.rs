//! Image operations: register, list, show, delete. (Pull arrives with the OCI pipeline.)

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use banger_api::image::{Image, ImageDeleted, ImageDetails, ImageDisk, ImageRegisterParams};
use banger_api::layout::Layout;
use banger_api::names::validate_name;

use crate::error::OpError;
use crate::fsutil::{self, DirGuard};
use crate::ids;
use crate::kernels::choice::{self, KernelInputs};
use crate::kernels::content_store::{SharedFiles, StagedKernel};
use crate::paths::{self, Expect};
use crate::recovery::STAGING_SUFFIX;
use crate::store::Store;

pub struct Images {
    layout: Layout,
    store: Arc<Store>,
    shared: Arc<SharedFiles>,
}

impl Images {
    pub fn new(layout: Layout, store: Arc<Store>, shared: Arc<SharedFiles>) -> Self {
        Images {
            layout,
            store,
            shared,
        }
    }

    /// Records an unmanaged image: the rootfs (and directly given kernel files) stay where
    /// the user keeps them. A kernel from the store is hardlinked into `<images>/<id>/`
    /// (ours, removed with the record), so deleting the kernel never breaks this image.
    pub fn register(&self, params: ImageRegisterParams) -> Result<Image, OpError> {
        validate_name(&params.name).map_err(OpError::BadRequest)?;
        self.ensure_name_free(&params.name)?;
        let kernel = choice::resolve(&self.store, &params.kernel)?;
        let rootfs = paths::validate("rootfs", &params.rootfs_path, Expect::File)?;
        let (size, allocated) = file_sizes(&rootfs)?;
        let id = ids::new_id();
        let mut copies = None;
        let (kernel_path, initrd_path, modules_dir) = if kernel.kernel_ref.is_some() {
            let (guard, dir, staged) = self.copy_kernel(&id, &kernel)?;
            let file = |rel: &str| paths::to_string(&dir.join(rel));
            let files = (
                file("kernel")?,
                kernel
                    .initrd
                    .as_ref()
                    .map(|_| file("initrd.img"))
                    .transpose()?,
                staged
                    .modules_dir
                    .as_deref()
                    .map(paths::to_string)
                    .transpose()?,
            );
            copies = Some((guard, paths::to_string(&dir)?, staged.pin));
            files
        } else {
            let own =
                |p: &Option<std::path::PathBuf>| p.as_deref().map(paths::to_string).transpose();
            (
                paths::to_string(&kernel.kernel)?,
                own(&kernel.initrd)?,
                own(&kernel.modules)?,
            )
        };
        let image = Image {
            id,
            name: params.name,
            managed: false,
            artifact_dir: copies.as_ref().map(|(_, dir, _)| dir.clone()),
            rootfs_path: paths::to_string(&rootfs)?,
            kernel_path,
            initrd_path,
            modules_dir,
            kernel_ref: kernel.kernel_ref,
            source_ref: None,
            manifest_digest: None,
            platform: None,
            size_bytes: Some(size),
            allocated_bytes: Some(allocated),
            created_at: ids::now_rfc3339(),
        };
        // The insert re-checks the name under the UNIQUE constraint: a concurrent register
        // of the same name loses here with `already_exists` (and its copies are removed).
        self.store.insert_image(&image)?;
        if let Some((guard, _, _pin)) = copies {
            guard.disarm();
        }
        tracing::info!(id = %image.id, name = %image.name, "registered image");
        Ok(image)
    }

    /// Stages links to the shared kernel triple and publishes them as `<images>/<id>/`; the
    /// guard removes it unless the caller records the image.
    fn copy_kernel(
        &self,
        id: &str,
        kernel: &KernelInputs,
    ) -> Result<(DirGuard, std::path::PathBuf, StagedKernel), OpError> {
        let images = self.layout.images_dir();
        let staging = images.join(format!("{id}{STAGING_SUFFIX}"));
        std::fs::create_dir_all(&images)
            .map_err(|e| OpError::io(format!("creating {}", images.display()), e))?;
        std::fs::create_dir(&staging)
            .map_err(|e| OpError::io(format!("creating {}", staging.display()), e))?;
        let mut guard = DirGuard::new(staging.clone());
        let staged = self.shared.stage(kernel, &staging)?;
        fsutil::fsync_dir(&staging)?;
        let dir = images.join(id);
        std::fs::rename(&staging, &dir)
            .map_err(|e| OpError::io(format!("publishing {}", dir.display()), e))?;
        guard.moved_to(dir.clone());
        fsutil::fsync_dir(&images)?;
        Ok((guard, dir, staged))
    }

    pub fn list(&self) -> Result<Vec<Image>, OpError> {
        Ok(self.store.list_images()?)
    }

    pub fn show(&self, name_or_id: &str) -> Result<Image, OpError> {
        self.store
            .find_image(name_or_id)?
            .ok_or_else(|| not_found(name_or_id))
    }

    /// `image.show`: the record plus what its files occupy, own and shared.
    pub fn details(&self, name_or_id: &str) -> Result<ImageDetails, OpError> {
        let image = self.show(name_or_id)?;
        let usage = self.shared.usage(&image);
        Ok(ImageDetails {
            image,
            disk: ImageDisk {
                own_bytes: usage.own_bytes,
                shared_bytes: usage.shared_bytes,
            },
        })
    }

    /// Removes the record first, then (managed only) the files: a crash in between leaves
    /// an orphan directory that the next start sweeps, never a record without files.
    pub fn delete(&self, name_or_id: &str) -> Result<ImageDeleted, OpError> {
        let image = self.show(name_or_id)?;
        let users = self.store.vm_names_of_image(&image.id)?;
        if !users.is_empty() {
            return Err(OpError::InUse(format!(
                "image {} is used by VM(s) {}; delete them first (`banger vm delete NAME`)",
                image.name,
                users.join(", ")
            )));
        }
        let snapshots = self.store.snapshot_names_of_image(&image.id)?;
        if !snapshots.is_empty() {
            return Err(OpError::InUse(format!(
                "image {} is used by snapshot(s) {}; delete them first (`banger snapshot delete NAME`)",
                image.name,
                snapshots.join(", ")
            )));
        }
        if !self.store.delete_image(&image.id)? {
            return Err(not_found(name_or_id));
        }
        // The artifact dir is always ours: a managed image's files, or the kernel copies of
        // a registered one (whose rootfs stays where the user keeps it).
        let mut files_removed = false;
        if let Some(dir) = &image.artifact_dir {
            let dir = Path::new(dir);
            // Never follow a corrupted record outside our own images directory.
            if dir.parent() == Some(self.layout.images_dir().as_path()) {
                match std::fs::remove_dir_all(dir) {
                    Ok(()) => files_removed = image.managed,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "image files not removed; the next daemon start sweeps them");
                    }
                }
            } else {
                tracing::warn!(dir = %dir.display(), "managed image dir outside the images dir; left alone");
            }
        }
        // Kernel files only this image used go now (a failure here waits for the next start).
        if let Err(e) = self.shared.gc(&self.store) {
            tracing::warn!(error = %e, "collecting unused kernel files failed");
        }
        tracing::info!(id = %image.id, name = %image.name, files_removed, "deleted image");
        Ok(ImageDeleted {
            id: image.id,
            name: image.name,
            files_removed,
        })
    }

    pub fn ensure_name_free(&self, name: &str) -> Result<(), OpError> {
        if self.store.name_exists(name)? {
            return Err(OpError::AlreadyExists(format!(
                "an image named {name:?} already exists; pick another --name or delete it with `banger image delete {name}`"
            )));
        }
        Ok(())
    }
}

fn not_found(name_or_id: &str) -> OpError {
    OpError::NotFound(format!(
        "no image named {name_or_id:?} (nor with that id); see `banger image list`"
    ))
}

/// Apparent and allocated size of a (possibly sparse) file.
pub fn file_sizes(path: &Path) -> Result<(u64, u64), OpError> {
    let meta =
        std::fs::metadata(path).map_err(|e| OpError::io(format!("stat {}", path.display()), e))?;
    Ok((meta.len(), meta.blocks() * 512))
}
