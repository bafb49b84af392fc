//! Image operations: register, list, show, delete. (Pull arrives with the OCI pipeline.)

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use banger_api::image::{Image, ImageDeleted, ImageRegisterParams};
use banger_api::layout::Layout;
use banger_api::names::validate_name;

use crate::error::OpError;
use crate::ids;
use crate::kernel_inputs::{self, KernelArgs};
use crate::paths::{self, Expect};
use crate::store::Store;

pub struct Images {
    layout: Layout,
    store: Arc<Store>,
}

impl Images {
    pub fn new(layout: Layout, store: Arc<Store>) -> Self {
        Images { layout, store }
    }

    /// Records an unmanaged image: the files stay where the user keeps them.
    pub fn register(&self, params: ImageRegisterParams) -> Result<Image, OpError> {
        validate_name(&params.name).map_err(OpError::BadRequest)?;
        self.ensure_name_free(&params.name)?;
        let kernel = kernel_inputs::resolve(
            &self.store,
            &KernelArgs {
                kernel_ref: params.kernel_ref,
                kernel_path: params.kernel_path,
                initrd_path: params.initrd_path,
                modules_dir: params.modules_dir,
            },
        )?;
        let rootfs = paths::validate("rootfs", &params.rootfs_path, Expect::File)?;
        let (size, allocated) = file_sizes(&rootfs)?;
        let now = ids::now_rfc3339();
        let image = Image {
            id: ids::new_id(),
            name: params.name,
            managed: false,
            artifact_dir: None,
            rootfs_path: paths::to_string(&rootfs)?,
            kernel_path: paths::to_string(&kernel.kernel)?,
            initrd_path: kernel.initrd.as_deref().map(paths::to_string).transpose()?,
            modules_dir: kernel
                .modules
                .as_deref()
                .map(paths::to_string)
                .transpose()?,
            kernel_ref: kernel.kernel_ref,
            source_ref: None,
            manifest_digest: None,
            platform: None,
            size_bytes: Some(size),
            allocated_bytes: Some(allocated),
            created_at: now,
        };
        // The insert re-checks the name under the UNIQUE constraint: a concurrent register
        // of the same name loses here with `already_exists`.
        self.store.insert_image(&image)?;
        tracing::info!(id = %image.id, name = %image.name, "registered image");
        Ok(image)
    }

    pub fn list(&self) -> Result<Vec<Image>, OpError> {
        Ok(self.store.list_images()?)
    }

    pub fn show(&self, name_or_id: &str) -> Result<Image, OpError> {
        self.store
            .find_image(name_or_id)?
            .ok_or_else(|| not_found(name_or_id))
    }

    /// Removes the record first, then (managed only) the files: a crash in between leaves
    /// an orphan directory that the next start sweeps, never a record without files.
    pub fn delete(&self, name_or_id: &str) -> Result<ImageDeleted, OpError> {
        let image = self.show(name_or_id)?;
        if !self.store.delete_image(&image.id)? {
            return Err(not_found(name_or_id));
        }
        let mut files_removed = false;
        if image.managed
            && let Some(dir) = &image.artifact_dir
        {
            let dir = Path::new(dir);
            // Never follow a corrupted record outside our own images directory.
            if dir.parent() == Some(self.layout.images_dir().as_path()) {
                match std::fs::remove_dir_all(dir) {
                    Ok(()) => files_removed = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "image files not removed; the next daemon start sweeps them");
                    }
                }
            } else {
                tracing::warn!(dir = %dir.display(), "managed image dir outside the images dir; left alone");
            }
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
