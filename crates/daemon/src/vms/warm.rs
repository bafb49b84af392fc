//! Warm starts: `vm.create` from an image goes on from a ready-snapshot of that image
//! instead of booting, when one exists for the same settings.
//!
//! A ready-snapshot is a snapshot (`snapshot.rs`) with a `warm_key`: the digest of
//! everything that makes a VM's state at `ready` what it is ([`KeyParts`]: the image's
//! files, the kernel, the initramfs (which names the agent binary), the VMM and
//! accelerator, CPUs, memory, disk sizes, init and readiness, whether it has a network
//! device, kernel arguments, the channel). A create whose key has a ready-snapshot forks it
//! (`fork.rs`: its identity, its own disks, copied sparse); one without boots cold and,
//! once ready, has the ready-snapshot made in the background. `banger image warm` makes
//! it up front.
//!
//! The ready-snapshot is taken of a template VM that banger boots for the purpose
//! (`banger-warm-<key>`, deleted afterwards): nobody has run anything in it. On QEMU its
//! memory is a file, copied into the snapshot, which the VMs started from it map
//! copy-on-write: no memory is loaded at start, and what none of them wrote is shared.
//!
//! # Invariants
//! - A warm-started VM depends on its ready-snapshot only until its first start is done
//!   (its disks are copies), so a ready-snapshot can be replaced or deleted (with its
//!   image) whenever no fork is starting from it.
//! - One template per key at a time; at most [`KEEP_PER_IMAGE`] ready-snapshots per image
//!   (the oldest go when a new one is made).
//! - A template VM left by a killed daemon is deleted at the next start (`adopt.rs`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use banger_api::image::Image;
use banger_api::snapshot::Snapshot;
use banger_api::vm::{Vm, VmCreateParams, VmDeleteParams};
use banger_vmm::{DiskFormat, Support, VsockKind};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::spec::VmSpec;
use super::{Vms, boot};
use crate::error::OpError;
use crate::fsutil::DirGuard;
use crate::progress::OpContext;
use crate::store::SnapshotRow;

/// Bumped when what a ready-snapshot holds, or how it is restored, changes meaning
/// (2: the template ran one command before it was saved).
const FORMAT: u32 = 2;
/// How long the template's first command may take.
const FIRST_EXEC: std::time::Duration = std::time::Duration::from_secs(20);
/// Ready-snapshots kept per image.
const KEEP_PER_IMAGE: usize = 4;

/// The keys with a template booting (one at a time per key); closed at shutdown.
#[derive(Default)]
pub struct Warming {
    keys: Mutex<HashSet<String>>,
    closed: std::sync::atomic::AtomicBool,
}

impl Warming {
    fn begin(&self, key: &str) -> bool {
        !self.closed.load(std::sync::atomic::Ordering::SeqCst)
            && self
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.to_string())
    }

    fn end(&self, key: &str) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What a warm start's state depends on; its JSON's digest is the key.
#[derive(Serialize)]
struct KeyParts<'a> {
    format: u32,
    image_id: &'a str,
    rootfs: FileStamp,
    kernel: FileStamp,
    /// The cached initramfs's name: a digest of the agent binary, the kernel, its modules
    /// and the channel and network modules it loads.
    initramfs: String,
    vmm: &'a str,
    accel: &'a str,
    cpus: u32,
    memory_mib: u64,
    disk_bytes: u64,
    work_disk_bytes: u64,
    init: banger_guest_proto::InitMode,
    ready: banger_guest_proto::Readiness,
    net: bool,
    kernel_args: &'a [String],
    channel: &'a str,
}

/// A file's identity without reading it: size and modification time.
#[derive(Serialize)]
struct FileStamp {
    len: u64,
    modified_ns: u128,
}

fn stamp(path: &Path) -> Result<FileStamp, OpError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| OpError::io(format!("reading {}", path.display()), e))?;
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(FileStamp {
        len: meta.len(),
        modified_ns,
    })
}

/// A create that can start warm: its key, and the template's spec.
pub(super) struct WarmPlan {
    pub key: String,
    template: VmSpec,
}

impl Vms {
    /// The warm plan of a create from an image, or `None` when it must boot cold: warm
    /// starts turned off (`warm: false`, `[vm] warm = false`), `no_start`, a VMM that cannot
    /// snapshot, or a channel it cannot save (QEMU: vsock).
    pub(super) async fn warm_plan(
        &self,
        p: &VmCreateParams,
        image: &Image,
        spec: &VmSpec,
    ) -> Result<Option<WarmPlan>, OpError> {
        let wanted = match p.warm.or(self.warm_default) {
            Some(w) => w,
            None => banger_api::config::warm_starts(&banger_api::config::config_path())
                .map_err(|e| OpError::BadRequest(format!("config.toml: {e}")))?,
        };
        if !wanted || p.no_start {
            return Ok(None);
        }
        let host = self.host().await?;
        let selected = host.select(spec.vmm)?;
        if selected.vmm.capabilities().snapshot != Support::Yes {
            return Ok(None);
        }
        // The channel the VMM can save: Firecracker's vsock (its snapshots carry it), else
        // virtio-serial (QEMU 7.2's vhost-user-vsock refuses migration).
        let saveable = match selected.vmm.capabilities().vsock {
            VsockKind::Hybrid => "vsock",
            _ => "serial",
        };
        let channel = match spec.channel.as_str() {
            "auto" => saveable,
            asked if asked == saveable => saveable,
            _ => return Ok(None),
        };
        let with_net = spec.net != "none";
        let cache = self.layout.initramfs_dir();
        let for_build = image.clone();
        let vsock = channel == "vsock";
        let initramfs = tokio::task::spawn_blocking(move || {
            boot::initramfs(&cache, &for_build, vsock, with_net)
        })
        .await
        .map_err(|e| OpError::Failed(format!("initramfs build aborted: {e}")))??;
        let parts = KeyParts {
            format: FORMAT,
            image_id: &image.id,
            rootfs: stamp(Path::new(&image.rootfs_path))?,
            kernel: stamp(Path::new(&image.kernel_path))?,
            initramfs: initramfs
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            vmm: selected.name,
            accel: selected.accel.as_str(),
            cpus: spec.cpus,
            memory_mib: spec.memory_mib,
            disk_bytes: spec.disk_bytes,
            work_disk_bytes: spec.work_disk_bytes,
            init: spec.init,
            ready: spec.ready,
            net: with_net,
            kernel_args: &spec.kernel_args,
            channel,
        };
        let json = serde_json::to_vec(&parts)
            .map_err(|e| OpError::Failed(format!("encoding the warm key: {e}")))?;
        let key: String = Sha256::digest(&json)
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut template = spec.clone();
        template.channel = channel.to_string();
        template.publish.clear();
        template.auto_remove = false;
        template.leased = false;
        template.warm_template = true;
        Ok(Some(WarmPlan { key, template }))
    }

    /// The ready-snapshot of `plan`, if made.
    pub(super) fn warm_snapshot(&self, plan: &WarmPlan) -> Result<Option<SnapshotRow>, OpError> {
        Ok(self.store.find_warm_snapshot(&plan.key)?)
    }

    /// A create that starts from the ready-snapshot `snap`: a fork with the asked-for
    /// spec and disks of its own.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_warm(
        self: &Arc<Self>,
        p: &VmCreateParams,
        name: String,
        image: &Image,
        mut spec: VmSpec,
        snap: &SnapshotRow,
        ctx: &OpContext,
    ) -> Result<Vm, OpError> {
        spec.disk_format = DiskFormat::Raw;
        spec.forked_from = Some(snap.id.clone());
        spec.resume_pending = true;
        let id = crate::ids::new_id();
        let dir = self.vm_dir(&id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| OpError::io(format!("creating {}", dir.display()), e))?;
        let guard = DirGuard::new(dir.clone());
        let (snap_dir, vm_dir) = (std::path::PathBuf::from(&snap.dir), dir.clone());
        tokio::task::spawn_blocking(move || {
            super::fork::fork_files(&snap_dir, &vm_dir, DiskFormat::Raw)
        })
        .await
        .map_err(|e| OpError::Failed(format!("making the VM's disks aborted: {e}")))??;
        tracing::info!(vm = %name, snapshot = %snap.name, "starting warm");
        self.record_and_start(id, name, image, &spec, guard, p, ctx)
            .await
    }

    /// Makes `plan`'s ready-snapshot in the background (after a cold start), unless a
    /// template for it is already booting.
    pub(super) fn warm_later(self: &Arc<Self>, image: Image, plan: WarmPlan) {
        let vms = Arc::clone(self);
        tokio::spawn(async move {
            match vms.make_warm(&image, plan, &OpContext::detached()).await {
                Ok(Some(snap)) => {
                    tracing::info!(image = %image.name, snapshot = %snap.name, "ready-snapshot made for warm starts")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(image = %image.name, error = %e, "could not make a ready-snapshot for warm starts")
                }
            }
        });
    }

    /// `image.warm`: the ready-snapshot of the VMs `p` describes, made now unless it exists.
    pub async fn warm_image(
        self: &Arc<Self>,
        mut p: VmCreateParams,
        ctx: &OpContext,
    ) -> Result<Snapshot, OpError> {
        let image = self.store.find_image(&p.image)?.ok_or_else(|| {
            OpError::NotFound(format!(
                "no image named {:?}; see `banger image list`",
                p.image
            ))
        })?;
        let spec = self.validated_spec(&p)?;
        p.warm = Some(true);
        let plan = self.warm_plan(&p, &image, &spec).await?.ok_or_else(|| {
            OpError::BadRequest(
                "these VMs cannot start warm: their VMM cannot snapshot them (QEMU with --channel vsock)"
                    .into(),
            )
        })?;
        if let Some(row) = self.warm_snapshot(&plan)? {
            return self.snapshot_view(&row);
        }
        match self.make_warm(&image, plan, ctx).await? {
            Some(snap) => Ok(snap),
            None => Err(OpError::AlreadyExists(format!(
                "a ready-snapshot of image {} for these settings is being made; try again in a moment",
                image.name
            ))),
        }
    }

    /// Boots `plan`'s template, snapshots it when ready, deletes it. `None`: another
    /// template of the same key is booting.
    async fn make_warm(
        self: &Arc<Self>,
        image: &Image,
        plan: WarmPlan,
        ctx: &OpContext,
    ) -> Result<Option<Snapshot>, OpError> {
        if !self.warming.begin(&plan.key) {
            return Ok(None);
        }
        // A template of this key may have finished since the caller looked (a cold start
        // plans its ready-snapshot before it boots).
        match self.warm_snapshot(&plan) {
            Ok(Some(row)) => {
                self.warming.end(&plan.key);
                return self.snapshot_view(&row).map(Some);
            }
            Ok(None) => {}
            Err(e) => {
                self.warming.end(&plan.key);
                return Err(e);
            }
        }
        let made = self.boot_and_snapshot(image, &plan, ctx).await;
        self.warming.end(&plan.key);
        if made.is_ok() {
            self.prune_warm(&image.id);
        }
        made.map(Some)
    }

    async fn boot_and_snapshot(
        self: &Arc<Self>,
        image: &Image,
        plan: &WarmPlan,
        ctx: &OpContext,
    ) -> Result<Snapshot, OpError> {
        let short = plan.key.get(..12).unwrap_or(&plan.key);
        let name = format!("banger-warm-{short}");
        let _claim = self.creating.claim(&name)?;
        if self.store.find_vm(&name)?.is_some_and(|v| v.name == name) {
            return Err(OpError::AlreadyExists(format!(
                "VM {name} exists: a ready-snapshot is being made, or one was cut short (delete it)"
            )));
        }
        let id = crate::ids::new_id();
        let dir = self.vm_dir(&id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| OpError::io(format!("creating {}", dir.display()), e))?;
        let guard = DirGuard::new(dir.clone());
        super::create::make_disks(&id, &dir, &plan.template).await?;
        let params = VmCreateParams {
            name: name.clone(),
            image: image.id.clone(),
            ..Default::default()
        };
        let booted = self
            .record_and_start(id.clone(), name, image, &plan.template, guard, &params, ctx)
            .await;
        let snap_name = format!("{}@warm-{}", image.name, short);
        let taken = match booted {
            Ok(_) => {
                self.first_exec(&id).await;
                self.take_snapshot(&id, snap_name, true, Some(plan.key.clone()))
                    .await
            }
            Err(e) => Err(e),
        };
        // The template goes whatever happened (a failed boot may already have removed it).
        if self.store.find_vm(&id)?.is_some()
            && let Err(e) = self
                .delete(VmDeleteParams {
                    vm: id.clone(),
                    force: true,
                })
                .await
        {
            tracing::warn!(vm = %id, error = %e, "could not delete a warm start template");
        }
        taken
    }

    /// Runs `true` in the template once before it is saved: the agent's exec path (its
    /// lazily made state, the guest kernel's fork and exec of a program from the disk) is
    /// then already set up in every VM started from the snapshot, whose first command
    /// otherwise pays for it (about 0.2 s under software emulation). Best effort.
    async fn first_exec(self: &Arc<Self>, id: &str) {
        use http_body_util::BodyExt;
        let request = banger_guest_proto::ExecRequest {
            argv: vec!["true".into()],
            env: Vec::new(),
            cwd: None,
            user: None,
            tty: None,
            term: None,
        };
        let ran = tokio::time::timeout(FIRST_EXEC, async {
            let (_, conn) = self.agent_of(id).await.map_err(|e| e.to_string())?;
            let first = banger_guest_proto::frame::encode(&request).map_err(|e| e.to_string())?;
            let (input, response) = conn.exec(first).await.map_err(|e| e.to_string())?;
            drop(input);
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                frame.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        })
        .await;
        match ran {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(vm = %id, error = %e, "warm template: first command failed")
            }
            Err(_) => tracing::warn!(vm = %id, "warm template: first command timed out"),
        }
    }

    /// Deletes an image's oldest ready-snapshots beyond [`KEEP_PER_IMAGE`] (those no VM is
    /// starting from).
    fn prune_warm(&self, image_id: &str) {
        let Ok(rows) = self.store.warm_snapshots_of_image(image_id) else {
            return;
        };
        for row in rows.into_iter().skip(KEEP_PER_IMAGE) {
            self.remove_unused_warm(row);
        }
    }

    /// Deletes image `image`'s ready-snapshots (before the image itself goes): those a VM
    /// is starting from stay, and keep the image.
    pub fn drop_warm_of_image(&self, image: &str) -> Result<(), OpError> {
        let Some(image) = self.store.find_image(image)? else {
            return Ok(());
        };
        for row in self.store.warm_snapshots_of_image(&image.id)? {
            self.remove_unused_warm(row);
        }
        Ok(())
    }

    fn remove_unused_warm(&self, row: SnapshotRow) {
        match self.dependent_forks(&row.id) {
            Ok(forks) if forks.is_empty() => {
                if let Err(e) = self.remove_snapshot(row) {
                    tracing::warn!(error = %e, "could not delete a ready-snapshot");
                }
            }
            _ => {}
        }
    }
}
