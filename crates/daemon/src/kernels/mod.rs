//! The kernel store: `<state>/kernels/<name>/` with `vmlinuz` and/or `vmlinux`, optional
//! `initrd.img` and `modules/`, and `manifest.json`; one row per kernel in `kernels`.
//!
//! Every way in (files, a `.deb`, the host, an OCI image) fills a staging directory
//! `kernels/.staging-<name>-<id>`; [`Kernels::finish`] then identifies the kernel from its
//! bytes, extracts `vmlinux` from a bzImage, writes the manifest, and publishes the
//! directory by rename and records it, under the publication lock. A name being imported
//! is claimed, so a second import of it fails at once. Nothing half-made is ever visible:
//! staging names start with `.` and are swept at daemon start, as is any kernel directory
//! without a record.
//!
//! Kernel files are stored once by content (`content_store.rs`): the store's files and those of
//! every image made with `--kernel-ref` (by `image pull` or `image register`) are hardlinks
//! of the shared copies, so deleting a kernel never breaks an image. Records that
//! point into a kernel's own directory (older registers) make a delete refuse unless
//! forced; the answer names the images that then need a new kernel.

pub mod choice;
pub mod content_store;
pub mod deb;
pub mod host;
pub mod manifest;
pub mod registry;
pub mod staging;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use banger_api::event::OpEvent;
use banger_api::kernel::{Kernel, KernelDeleted, KernelImportParams};
use banger_api::layout::Layout;
use banger_api::names::validate_name;
use banger_kernel::image::{self, KernelInfo};

use crate::claims::{NameClaim, NameClaims};
use crate::error::OpError;
use crate::fsutil::{self, DirGuard};
use crate::ids;
use crate::oci_client::{OciClient, parse_source};
use crate::paths::{self, Expect};
use crate::progress::OpContext;
use crate::store::{KernelRow, Store, StoreError};

use self::manifest::{INITRD, MODULES, Manifest, VMLINUX, VMLINUZ};
use self::staging::read_kernel;
// Re-exported for the sources that stage into the kernel store.
pub use self::staging::{STAGING_PREFIX, Staged, arch_of, stage_kernel_file};

/// Daemon environment variable naming where `image pull --kernel-ref NAME` finds kernels
/// that are not local: a repository (`registry/path`); NAME is pulled from `<source>:NAME`.
pub const KERNEL_SOURCE_ENV: &str = "BANGER_KERNEL_SOURCE";

pub struct Kernels {
    dir: PathBuf,
    layout: Layout,
    store: Arc<Store>,
    /// Kernel names with an import or pull in flight.
    claims: NameClaims,
    /// Held around "check name, rename, insert" and "delete record, move dir away".
    publish: Mutex<()>,
    registry: registry::KernelRegistry,
    /// Repository that missing `--kernel-ref` kernels are pulled from, if configured.
    source: Option<String>,
    /// The content-addressed copies this store's files are hardlinks of.
    shared: Arc<content_store::SharedFiles>,
}

impl Kernels {
    /// Opens the store at daemon start, sweeping what an interrupted import left. Pulls
    /// and pushes go through `oci`, the daemon's one OCI client; `shared` is the daemon's
    /// one store of kernel files by content.
    pub fn new(
        layout: Layout,
        store: Arc<Store>,
        oci: Arc<OciClient>,
        shared: Arc<content_store::SharedFiles>,
    ) -> Kernels {
        let kernels = Kernels {
            dir: layout.kernels_dir(),
            shared,
            registry: registry::KernelRegistry::new(oci),
            layout,
            store,
            claims: NameClaims::new(|name| {
                format!(
                    "a kernel named {name:?} is being imported right now; wait for it or pick another name"
                )
            }),
            publish: Mutex::new(()),
            source: std::env::var(KERNEL_SOURCE_ENV)
                .ok()
                .map(|s| s.trim().trim_end_matches('/').to_string())
                .filter(|s| !s.is_empty()),
        };
        match kernels.sweep() {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(count = removed.len(), "swept kernel-store leftovers")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "kernel-store sweep failed"),
        }
        // After the sweeps of images and kernels: whatever shared file none of them links.
        if let Err(e) = kernels.shared.gc(&kernels.store) {
            tracing::warn!(error = %e, "collecting unused kernel files failed");
        }
        kernels
    }

    /// Sets (or clears) the kernel source, overriding the environment.
    pub fn set_source(&mut self, source: Option<String>) {
        self.source = source;
    }

    /// Makes sure the kernel `name` is local before an image pull uses it: when it is
    /// not and a kernel source is configured, pulls `<source>:<name>` under that name.
    /// Without a source, or for an invalid name, does nothing (the pull then reports the
    /// kernel as not found).
    pub fn ensure_local(&self, name: Option<&str>, ctx: &OpContext) -> Result<(), OpError> {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok(());
        };
        let Some(source) = &self.source else {
            return Ok(());
        };
        if validate_name(name).is_err() || self.store.get_kernel(name)?.is_some() {
            return Ok(());
        }
        let reference = format!("{source}:{name}");
        tracing::info!(kernel = name, %reference, "kernel not local; pulling it from the kernel source");
        ctx.emit(OpEvent::FetchingKernel {
            name: name.to_string(),
            reference: reference.clone(),
        });
        let params = banger_api::kernel::KernelPullParams {
            reference: reference.clone(),
            name: Some(name.to_string()),
        };
        match self.pull(params, &ctx.quiet()) {
            Ok(_) => Ok(()),
            Err(OpError::NotFound(m)) => Err(OpError::NotFound(format!(
                "kernel {name:?} is not local and the kernel source has none ({reference}: {m}); import it with `banger kernel import`"
            ))),
            Err(e) => Err(e),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Removes staging leftovers and kernel directories no record owns (startup).
    pub fn sweep(&self) -> Result<Vec<String>, OpError> {
        let owned: HashSet<String> = self
            .store
            .list_kernels()?
            .into_iter()
            .map(|k| k.name)
            .collect();
        crate::recovery::remove_unowned(&self.dir, &owned)
            .map_err(|e| OpError::io(format!("sweeping {}", self.dir.display()), e))
    }

    fn claim(&self, name: &str) -> Result<NameClaim<'_>, OpError> {
        validate_name(name).map_err(OpError::BadRequest)?;
        self.ensure_free(name)?;
        self.claims.claim(name)
    }

    fn ensure_free(&self, name: &str) -> Result<(), OpError> {
        if self.store.get_kernel(name)?.is_some() {
            return Err(OpError::AlreadyExists(format!(
                "a kernel named {name:?} already exists; pick another name or delete it with `banger kernel delete {name}`"
            )));
        }
        Ok(())
    }

    /// A fresh staging directory for `name`, removed on drop unless published.
    fn staging(&self, name: &str) -> Result<(PathBuf, DirGuard), OpError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| OpError::io(format!("creating {}", self.dir.display()), e))?;
        let staging = self
            .dir
            .join(format!("{STAGING_PREFIX}{name}-{}", ids::new_id()));
        std::fs::create_dir(&staging)
            .map_err(|e| OpError::io(format!("creating {}", staging.display()), e))?;
        Ok((staging.clone(), DirGuard::new(staging)))
    }

    /// `kernel.import`: from files, a `.deb`, or the host.
    pub fn import(&self, p: KernelImportParams) -> Result<Kernel, OpError> {
        let sources = [p.kernel_path.is_some(), p.deb_path.is_some(), p.host]
            .iter()
            .filter(|s| **s)
            .count();
        if sources != 1 {
            return Err(OpError::BadRequest(
                "pass exactly one of --kernel PATH, --deb FILE or --host".into(),
            ));
        }
        if p.kernel_path.is_none() && (p.initrd_path.is_some() || p.modules_dir.is_some()) {
            return Err(OpError::BadRequest(
                "--initrd and --modules go with --kernel (a .deb or the host provides its own)"
                    .into(),
            ));
        }
        let _claim = self.claim(&p.name)?;
        let (staging, guard) = self.staging(&p.name)?;
        let staged = if let Some(kernel) = &p.kernel_path {
            import_files(
                &staging,
                kernel,
                p.initrd_path.as_deref(),
                p.modules_dir.as_deref(),
            )?
        } else if let Some(deb) = &p.deb_path {
            let deb = paths::validate("deb", deb, Expect::File)?;
            deb::import(&deb, &staging)?
        } else {
            host::import(Path::new("/"), &staging)?
        };
        self.finish(&p.name, staging, guard, staged)
    }

    /// Identifies the staged kernel, extracts `vmlinux`, writes the manifest, publishes.
    pub fn finish(
        &self,
        name: &str,
        staging: PathBuf,
        guard: DirGuard,
        staged: Staged,
    ) -> Result<Kernel, OpError> {
        let info = prepare(&staging)?;
        let manifest = Manifest {
            schema: 1,
            name: name.to_string(),
            version: info.version.clone(),
            banner: info.banner.clone(),
            arch: info.arch.clone(),
            source: staged.source.clone(),
            imported_at: ids::now_rfc3339(),
            files: manifest::describe_files(&staging)?,
        };
        manifest.write(&staging)?;
        // One copy of each file for the store and every image made from it.
        self.shared.adopt(&staging)?;

        let final_dir = self.dir.join(name);
        let at = |rel: &str| paths::to_string(&final_dir.join(rel));
        let has = |rel: &str| staging.join(rel).exists();
        let row = KernelRow {
            name: name.to_string(),
            version: manifest.version.clone(),
            arch: manifest.arch.clone(),
            dir: paths::to_string(&final_dir)?,
            kernel_path: at(if has(VMLINUZ) { VMLINUZ } else { VMLINUX })?,
            initrd_path: has(INITRD).then(|| at(INITRD)).transpose()?,
            modules_dir: has(MODULES).then(|| at(MODULES)).transpose()?,
            source: Some(manifest.source.clone()),
            created_at: manifest.imported_at.clone(),
        };
        fsutil::publish_dir(
            guard,
            &staging,
            &final_dir,
            &self.publish,
            || self.ensure_free(name),
            || self.store.insert_kernel(&row).map_err(name_taken),
        )?;
        tracing::info!(name, version = ?row.version, source = %manifest.source, "imported kernel");
        Ok(to_api(&row, Some(&manifest)))
    }

    pub fn list(&self) -> Result<Vec<Kernel>, OpError> {
        Ok(self
            .store
            .list_kernels()?
            .iter()
            .map(|row| to_api(row, Manifest::read(Path::new(&row.dir)).ok().as_ref()))
            .collect())
    }

    pub fn show(&self, name: &str) -> Result<Kernel, OpError> {
        let row = self.row(name)?;
        let manifest = Manifest::read(Path::new(&row.dir))
            .inspect_err(
                |e| tracing::warn!(kernel = name, error = %e, "kernel manifest unreadable"),
            )
            .ok();
        Ok(to_api(&row, manifest.as_ref()))
    }

    fn row(&self, name: &str) -> Result<KernelRow, OpError> {
        self.store.get_kernel(name)?.ok_or_else(|| {
            OpError::NotFound(format!(
                "no kernel named {name:?}; see `banger kernel list`, or import one with `banger kernel import`"
            ))
        })
    }

    /// Removes the record, then the files. Images that copied the kernel keep working;
    /// registered images pointing at its files block the delete unless `force`.
    pub fn delete(&self, name: &str, force: bool) -> Result<KernelDeleted, OpError> {
        let row = self.row(name)?;
        let images = self.store.images_with_kernel_ref(name)?;
        let dir = Path::new(&row.dir);
        let (pointing, copies): (Vec<_>, Vec<_>) = images
            .into_iter()
            .partition(|i| Path::new(&i.kernel_path).starts_with(dir));
        let pointing: Vec<String> = pointing.into_iter().map(|i| i.name).collect();
        let copies: Vec<String> = copies.into_iter().map(|i| i.name).collect();
        if !pointing.is_empty() && !force {
            return Err(OpError::BadRequest(format!(
                "registered image(s) {} use this kernel's files in place; delete or re-register them first, or pass --force (they then need a new kernel)",
                pointing.join(", ")
            )));
        }
        let mut files_removed = false;
        {
            let _publishing = self.publish.lock().unwrap_or_else(|e| e.into_inner());
            if !self.store.delete_kernel(name)? {
                return Err(self
                    .row(name)
                    .err()
                    .unwrap_or_else(|| OpError::NotFound(format!("no kernel named {name:?}"))));
            }
            // Never follow a corrupted record outside the kernels directory.
            if dir.parent() == Some(self.dir.as_path()) {
                // Move it aside first, so a new import of the name can publish at once.
                let doomed = self
                    .dir
                    .join(format!("{STAGING_PREFIX}deleted-{name}-{}", ids::new_id()));
                match std::fs::rename(dir, &doomed) {
                    Ok(()) => {
                        drop(DirGuard::new(doomed));
                        files_removed = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "kernel files not removed; the next daemon start sweeps them")
                    }
                }
            } else {
                tracing::warn!(dir = %dir.display(), "kernel dir outside the kernels dir; left alone");
            }
        }
        if let Err(e) = self.shared.gc(&self.store) {
            tracing::warn!(error = %e, "collecting unused kernel files failed");
        }
        tracing::info!(name, files_removed, "deleted kernel");
        Ok(KernelDeleted {
            name: name.to_string(),
            files_removed,
            images_with_copies: copies,
            images_broken: pointing,
        })
    }

    /// `kernel.push`: a stored kernel as a one-layer OCI image.
    pub fn push(
        &self,
        params: banger_api::kernel::KernelPushParams,
        ctx: &OpContext,
    ) -> Result<banger_api::kernel::KernelPushed, OpError> {
        let started = Instant::now();
        let row = self.row(&params.kernel)?;
        let manifest = Manifest::read(Path::new(&row.dir))?;
        // The layer is packed into a temp file here (a dot name: swept at start if the
        // daemon dies mid-push), then streamed to the registry.
        let pushed = self
            .registry
            .push(&row, &manifest, &params.reference, &self.dir, ctx)?;
        ctx.emit(OpEvent::Done {
            elapsed_ms: started.elapsed().as_millis() as u64,
        });
        Ok(pushed)
    }

    /// `kernel.pull`: a kernel image from a registry or local layout into the store.
    pub fn pull(
        &self,
        params: banger_api::kernel::KernelPullParams,
        ctx: &OpContext,
    ) -> Result<Kernel, OpError> {
        let started = Instant::now();
        let source = parse_source(&params.reference)?;
        let name = params.name.unwrap_or(source.default_name);
        let _claim = self.claim(&name)?;
        let (staging, guard) = self.staging(&name)?;
        let staged = self.registry.pull(&source.canonical, &staging, ctx)?;
        ctx.check()?;
        ctx.emit(OpEvent::Publishing);
        let kernel = self.finish(&name, staging, guard, staged)?;
        ctx.emit(OpEvent::Done {
            elapsed_ms: started.elapsed().as_millis() as u64,
        });
        Ok(kernel)
    }
}

fn name_taken(e: StoreError) -> OpError {
    match e {
        StoreError::KernelNameTaken(n) => OpError::AlreadyExists(format!(
            "a kernel named {n:?} already exists; pick another name or delete it with `banger kernel delete {n}`"
        )),
        other => other.into(),
    }
}

fn to_api(row: &KernelRow, manifest: Option<&Manifest>) -> Kernel {
    let dir = Path::new(&row.dir);
    let file = |rel: &str| {
        let p = dir.join(rel);
        p.exists().then(|| p.to_string_lossy().into_owned())
    };
    Kernel {
        name: row.name.clone(),
        version: row.version.clone(),
        arch: row.arch.clone(),
        dir: row.dir.clone(),
        kernel_path: row.kernel_path.clone(),
        vmlinuz_path: file(VMLINUZ),
        vmlinux_path: file(VMLINUX),
        initrd_path: row.initrd_path.clone(),
        modules_dir: row.modules_dir.clone(),
        source: row.source.clone(),
        created_at: row.created_at.clone(),
        files: manifest.map(manifest::api_files).unwrap_or_default(),
    }
}

/// Copies a user's kernel triple into `staging`.
fn import_files(
    staging: &Path,
    kernel: &str,
    initrd: Option<&str>,
    modules: Option<&str>,
) -> Result<Staged, OpError> {
    let kernel = paths::validate("kernel", kernel, Expect::File)?;
    let initrd = initrd
        .map(|p| paths::validate("initrd", p, Expect::File))
        .transpose()?;
    let modules = modules
        .map(|p| paths::validate("modules", p, Expect::Dir))
        .transpose()?;
    stage_kernel_file(&kernel, staging)?;
    if let Some(initrd) = initrd {
        fsutil::copy_file(&initrd, &staging.join(INITRD))?;
    }
    if let Some(modules) = modules {
        fsutil::copy_tree(&modules, &staging.join(MODULES))?;
    }
    Ok(Staged {
        source: format!("files:{}", kernel.display()),
    })
}

/// Checks what `staging` holds and completes it: `vmlinuz` must be a compressed kernel
/// (an x86 bzImage or a compressed arm64 Image) and its uncompressed `vmlinux` (the ELF, or
/// the arm64 Image) is extracted unless present; a lone `vmlinux` must be uncompressed.
/// Returns what the image says about itself.
fn prepare(staging: &Path) -> Result<KernelInfo, OpError> {
    let vmlinuz = staging.join(VMLINUZ);
    let vmlinux = staging.join(VMLINUX);
    let bad = |p: &Path, e: &dyn std::fmt::Display| {
        OpError::BadRequest(format!(
            "{}: {e}",
            p.file_name().unwrap_or_default().to_string_lossy()
        ))
    };
    let not_uncompressed = "is not an uncompressed kernel (an ELF vmlinux or an arm64 Image)";
    if vmlinuz.is_file() {
        let packed = read_kernel(&vmlinuz)?;
        let mut info = image::inspect(&packed).map_err(|e| bad(&vmlinuz, &e))?;
        if info.format.is_uncompressed() {
            return Err(bad(
                &vmlinuz,
                &"is an uncompressed kernel, not a bzImage or compressed Image",
            ));
        }
        let plain = if vmlinux.is_file() {
            read_kernel(&vmlinux)?
        } else {
            let plain = image::extract_uncompressed(&packed).map_err(|e| bad(&vmlinuz, &e))?;
            write_synced(&vmlinux, &plain)?;
            plain
        };
        let plain_info = image::inspect(&plain).map_err(|e| bad(&vmlinux, &e))?;
        if !plain_info.format.is_uncompressed() {
            return Err(bad(&vmlinux, &not_uncompressed));
        }
        // A vmlinux that came with the vmlinuz (a pulled kernel image) must be its twin.
        if let (Some(a), Some(b)) = (&info.version, &plain_info.version)
            && a != b
        {
            return Err(OpError::BadRequest(format!(
                "vmlinux ({b}) and vmlinuz ({a}) are different kernels"
            )));
        }
        // The uncompressed kernel knows its machine for sure; its banner is the complete one.
        info.arch = plain_info.arch.or(info.arch);
        info.banner = plain_info.banner.or(info.banner);
        info.version = info.version.or(plain_info.version);
        return Ok(info);
    }
    if vmlinux.is_file() {
        let plain = read_kernel(&vmlinux)?;
        let info = image::inspect(&plain).map_err(|e| bad(&vmlinux, &e))?;
        if !info.format.is_uncompressed() {
            return Err(bad(&vmlinux, &not_uncompressed));
        }
        return Ok(info);
    }
    Err(OpError::BadRequest(
        "no kernel found: expected a vmlinuz (bzImage or compressed arm64 Image) or a vmlinux (ELF or arm64 Image)".into(),
    ))
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), OpError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)
        .map_err(|e| OpError::io(format!("creating {}", path.display()), e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| OpError::io(format!("writing {}", path.display()), e))
}
