//! `vm.pause`, `vm.resume`, `vm.snapshot` and `snapshot.*`.
//!
//! A snapshot is a directory under `<state>/snapshots/<id>`: the VMM's saved state
//! (memory and devices), sparse copies of the VM's two writable disks taken while its
//! vCPUs were stopped, and what its launch used (`launch.json`, the VM's initramfs, a link
//! to the modules disk, the agent secret of that boot). Forks (`fork.rs`) start from it.
//!
//! # Invariants
//! - The row is inserted after every file is written and synced: a listed snapshot is
//!   whole. A directory without a row (a daemon killed mid-snapshot) is swept at start.
//! - The source VM is paused only for the save and the disk copies, and always resumed
//!   (unless it was paused before, or `stop` was asked), also when the snapshot fails.
//! - A snapshot outlives its source VM; it is deleted only when no fork uses its disks.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use banger_api::snapshot::{Snapshot, SnapshotDeleted, SnapshotList, SnapshotRef};
use banger_api::vm::{Vm, VmRef, VmSnapshotParams, VmState};
use banger_vmm::{DiskFormat, VmConfig, Vmm};

use super::{Vms, boot, disks, parse_runtime, parse_spec, state_of};
use crate::error::OpError;
use crate::fsutil::{self, DirGuard};
use crate::store::{SnapshotRow, StoreError, VmRow};

/// The VMM configuration of a VM's current boot, kept in its directory (and copied into
/// its snapshots: a fork launches with the same one).
pub const LAUNCH_CONFIG: &str = "launch.json";
/// Inside a snapshot: the disk copies and the modules disk.
pub const ROOT_COPY: &str = "root.ext4";
pub const WORK_COPY: &str = "work.ext4";
pub const MODULES_LINK: &str = "modules.ext4";
/// Inside a snapshot: the kernel, when the VM's own directory held it (Firecracker's ELF).
pub const KERNEL_COPY: &str = "kernel";

/// Writes `<vm_dir>/launch.json`.
pub fn save_launch_config(vm_dir: &Path, cfg: &VmConfig) -> Result<(), OpError> {
    let json = serde_json::to_vec_pretty(cfg)
        .map_err(|e| OpError::Failed(format!("encoding the launch config: {e}")))?;
    let path = vm_dir.join(LAUNCH_CONFIG);
    std::fs::write(&path, json).map_err(|e| OpError::io(format!("writing {}", path.display()), e))
}

/// Reads a `launch.json`.
pub fn load_launch_config(dir: &Path) -> Result<VmConfig, OpError> {
    let path = dir.join(LAUNCH_CONFIG);
    let bytes =
        std::fs::read(&path).map_err(|e| OpError::io(format!("reading {}", path.display()), e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| OpError::Failed(format!("{} is unreadable: {e}", path.display())))
}

impl Vms {
    pub async fn pause(self: &Arc<Self>, p: VmRef) -> Result<Vm, OpError> {
        let row = self.find(&p.vm)?;
        let lock = self.op_lock(&row.id);
        let _op = lock.lock().await;
        let row = self.find(&row.id)?;
        match state_of(&row) {
            VmState::Paused => return self.show(&row.id),
            VmState::Running => {}
            other => {
                return Err(OpError::NotRunning(format!(
                    "VM {} is {}: only a running VM can be paused",
                    row.name,
                    other.as_str()
                )));
            }
        }
        let driver = self.driver_for(&row).await?;
        let dir = PathBuf::from(&row.dir);
        blocking(move || driver.pause(&dir).map_err(vmm_error)).await?;
        self.set_state(&row, VmState::Paused, Some(&parse_runtime(&row)), None)?;
        tracing::info!(vm = %row.name, "VM paused");
        self.show(&row.id)
    }

    pub async fn resume(self: &Arc<Self>, p: VmRef) -> Result<Vm, OpError> {
        let row = self.find(&p.vm)?;
        let lock = self.op_lock(&row.id);
        let _op = lock.lock().await;
        let row = self.find(&row.id)?;
        match state_of(&row) {
            VmState::Running => return self.show(&row.id),
            VmState::Paused => {}
            other => {
                return Err(OpError::NotRunning(format!(
                    "VM {} is {}, not paused; start it with `banger vm start {}`",
                    row.name,
                    other.as_str(),
                    row.name
                )));
            }
        }
        self.resume_locked(&row).await?;
        self.show(&row.id)
    }

    /// Lets a paused VM (op lock held) run again and records it running.
    pub(super) async fn resume_locked(&self, row: &VmRow) -> Result<(), OpError> {
        let driver = self.driver_for(row).await?;
        let dir = PathBuf::from(&row.dir);
        blocking(move || driver.resume(&dir).map_err(vmm_error)).await?;
        self.set_state(row, VmState::Running, Some(&parse_runtime(row)), None)?;
        self.set_clock_after_pause(row).await;
        tracing::info!(vm = %row.name, "VM resumed");
        Ok(())
    }

    /// The guest's clock stood still while it was paused: set it from the host's.
    async fn set_clock_after_pause(&self, row: &VmRow) {
        if let Some(live) = self.live(&row.id)
            && let Ok(conn) = live.agent(std::time::Duration::from_secs(2)).await
        {
            super::clock::push(&row.name, &conn).await;
        }
    }

    /// Best effort, at adoption: a VM recorded running is let run (a daemon killed while
    /// it had the guest paused for a snapshot left it paused), and the migration socket
    /// such a snapshot left is removed.
    pub(super) async fn ensure_running(&self, row: &VmRow) {
        let dir = PathBuf::from(&row.dir);
        let _ = std::fs::remove_file(banger_vmm::RunFiles::new(&dir).migrate_socket);
        let Ok(driver) = self.driver_for(row).await else {
            return;
        };
        if driver.capabilities().pause != banger_vmm::Support::Yes {
            return;
        }
        if let Err(e) = blocking(move || driver.resume(&dir).map_err(vmm_error)).await {
            tracing::debug!(vm = %row.name, error = %e, "resume at adoption");
        }
    }

    /// The driver running `row` (from its runtime's VMM name).
    async fn driver_for(&self, row: &VmRow) -> Result<Arc<dyn Vmm>, OpError> {
        let runtime = parse_runtime(row);
        self.driver_of(&runtime.vmm).await.ok_or_else(|| {
            OpError::Unavailable(format!(
                "VM {} runs on {}, which this daemon cannot drive",
                row.name, runtime.vmm
            ))
        })
    }

    pub async fn snapshot(self: &Arc<Self>, p: VmSnapshotParams) -> Result<Snapshot, OpError> {
        let row = self.find(&p.vm)?;
        let name = match &p.name {
            Some(n) => {
                banger_api::names::validate_name(n)
                    .map_err(|e| OpError::BadRequest(format!("snapshot {e}")))?;
                n.clone()
            }
            None => format!("{}-{}", row.name, super::naming::random_suffix()),
        };
        if self
            .store
            .find_snapshot(&name)?
            .is_some_and(|s| s.name == name)
        {
            return Err(OpError::AlreadyExists(
                StoreError::SnapshotNameTaken(name).to_string(),
            ));
        }
        self.take_snapshot(&row.id, name, p.stop, None).await
    }

    /// Snapshots VM `id` as `name` (checked by the caller); `warm_key`: a warm start's
    /// ready-snapshot.
    pub(super) async fn take_snapshot(
        self: &Arc<Self>,
        id: &str,
        name: String,
        stop: bool,
        warm_key: Option<String>,
    ) -> Result<Snapshot, OpError> {
        let lock = self.op_lock(id);
        let _op = lock.lock().await;
        let row = self.find(id)?;
        let was_paused = match state_of(&row) {
            VmState::Running => false,
            VmState::Paused => true,
            other => {
                return Err(OpError::NotRunning(format!(
                    "VM {} is {}: only a running or paused VM can be snapshotted",
                    row.name,
                    other.as_str()
                )));
            }
        };
        let spec = parse_spec(&row)?;
        let runtime = parse_runtime(&row);
        let driver = self.driver_for(&row).await?;
        if driver.name() == "qemu" && runtime.channel == "vsock" {
            return Err(OpError::BadRequest(format!(
                "VM {} talks to its agent over vsock, which QEMU 7.2 cannot save \
                 (vhost-user-vsock devices refuse migration): create it with `--channel serial` to snapshot it",
                row.name
            )));
        }
        let id = crate::ids::new_id();
        let snap_dir = self.layout.snapshots_dir().join(&id);
        // Guest memory and an agent secret: the owner's only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&snap_dir)
            .map_err(|e| OpError::io(format!("creating {}", snap_dir.display()), e))?;
        let guard = DirGuard::new(snap_dir.clone());

        let vm_dir = PathBuf::from(&row.dir);
        let format = spec.disk_format;
        let (drv, from, to) = (driver.clone(), vm_dir.clone(), snap_dir.clone());
        let paused_at = Instant::now();
        let taken = blocking(move || {
            if !was_paused {
                drv.pause(&from).map_err(vmm_error)?;
            }
            drv.save_state(&from, &to)
                .map_err(vmm_error)
                .and_then(|()| copy_vm_files(&from, &to, format))
        })
        .await;
        // Resumed whatever happened (a failed save must not leave the VM stopped).
        let resume = match &taken {
            Ok(()) => !was_paused && !stop,
            Err(_) => !was_paused,
        };
        if resume {
            let (drv, dir) = (driver.clone(), vm_dir.clone());
            match blocking(move || drv.resume(&dir).map_err(vmm_error)).await {
                Ok(()) => self.set_clock_after_pause(&row).await,
                Err(e) => {
                    tracing::warn!(vm = %row.name, error = %e, "could not resume the VM after its snapshot")
                }
            }
        }
        let paused_ms = super::ms_since(paused_at);
        taken?;
        if stop {
            // Its state is saved: killing the VMM loses nothing the snapshot needs.
            self.kill_locked(&row).await?;
            self.set_state(
                &row,
                VmState::Stopped,
                None,
                Some("stopped after its snapshot"),
            )?;
            self.remove_if_auto(&row);
        }
        let size_bytes = dir_allocated_bytes(&snap_dir);
        let snap = SnapshotRow {
            id: id.clone(),
            name,
            image_id: row.image_id.clone(),
            source_vm: row.name.clone(),
            vmm: driver.name().to_string(),
            spec: row.spec.clone(),
            dir: crate::paths::to_string(&snap_dir)?,
            size_bytes,
            paused_ms,
            created_at: crate::ids::now_rfc3339(),
            warm_key,
        };
        match self.store.insert_snapshot(&snap) {
            Ok(()) => guard.disarm(),
            Err(StoreError::SnapshotNameTaken(n)) => {
                return Err(OpError::AlreadyExists(
                    StoreError::SnapshotNameTaken(n).to_string(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(vm = %row.name, snapshot = %snap.name, paused_ms, size_bytes, "snapshot taken");
        self.snapshot_view(&snap)
    }

    pub fn snapshot_list(&self) -> Result<SnapshotList, OpError> {
        let rows = self.store.list_snapshots()?;
        let snapshots = rows
            .iter()
            .map(|r| self.snapshot_view(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SnapshotList { snapshots })
    }

    pub fn snapshot_show(&self, p: SnapshotRef) -> Result<Snapshot, OpError> {
        let row = self.find_snapshot(&p.snapshot)?;
        self.snapshot_view(&row)
    }

    pub async fn snapshot_delete(&self, p: SnapshotRef) -> Result<SnapshotDeleted, OpError> {
        let row = self.find_snapshot(&p.snapshot)?;
        let forks = self.dependent_forks(&row.id)?;
        if !forks.is_empty() {
            return Err(OpError::InUse(format!(
                "snapshot {} is the base of {} ({}): delete them first",
                row.name,
                if forks.len() == 1 { "a VM" } else { "VMs" },
                forks.join(", ")
            )));
        }
        self.remove_snapshot(row)
    }

    /// Deletes a snapshot nothing depends on (checked by the caller).
    pub(super) fn remove_snapshot(&self, row: SnapshotRow) -> Result<SnapshotDeleted, OpError> {
        let dir = PathBuf::from(&row.dir);
        let freed_bytes = dir_allocated_bytes(&dir);
        // The row first: a directory without a row is swept at the next start anyway.
        self.store.delete_snapshot(&row.id)?;
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted snapshot's files");
        }
        tracing::info!(snapshot = %row.name, freed_bytes, "snapshot deleted");
        Ok(SnapshotDeleted {
            name: row.name,
            freed_bytes,
        })
    }

    pub(super) fn find_snapshot(&self, name_or_id: &str) -> Result<SnapshotRow, OpError> {
        self.store.find_snapshot(name_or_id)?.ok_or_else(|| {
            OpError::NotFound(format!(
                "no snapshot named {name_or_id:?} (nor with that id); see `banger snapshot list`"
            ))
        })
    }

    /// Names of the VMs forked from snapshot `id`.
    fn forks_of(&self, id: &str) -> Result<Vec<String>, OpError> {
        self.forks_where(id, |_| true)
    }

    /// Names of the VMs that need snapshot `id`'s files: forks whose disks are overlays over
    /// its disks, and forks not started yet. A started fork with disks of its own (a warm
    /// start, a Firecracker fork) needs nothing more of it: its VMM keeps the memory file
    /// it mapped open.
    pub(super) fn dependent_forks(&self, id: &str) -> Result<Vec<String>, OpError> {
        self.forks_where(id, |s| {
            s.disk_format == DiskFormat::Qcow2 || s.resume_pending
        })
    }

    fn forks_where(
        &self,
        id: &str,
        needs: impl Fn(&super::spec::VmSpec) -> bool,
    ) -> Result<Vec<String>, OpError> {
        Ok(self
            .store
            .list_vms()?
            .into_iter()
            .filter(|vm| {
                parse_spec(vm).is_ok_and(|s| s.forked_from.as_deref() == Some(id) && needs(&s))
            })
            .map(|vm| vm.name)
            .collect())
    }

    pub(super) fn snapshot_view(&self, row: &SnapshotRow) -> Result<Snapshot, OpError> {
        let spec: super::spec::VmSpec = serde_json::from_str(&row.spec).map_err(|e| {
            OpError::Failed(format!(
                "snapshot {}'s stored spec is unreadable: {e}",
                row.name
            ))
        })?;
        let image = self
            .store
            .find_image(&row.image_id)?
            .map(|i| i.name)
            .unwrap_or_else(|| "(deleted)".into());
        Ok(Snapshot {
            id: row.id.clone(),
            name: row.name.clone(),
            source_vm: row.source_vm.clone(),
            image,
            image_id: row.image_id.clone(),
            vmm: row.vmm.clone(),
            cpus: spec.cpus,
            memory_mib: spec.memory_mib,
            size_bytes: row.size_bytes,
            forks: self.forks_of(&row.id)?,
            created_at: row.created_at.clone(),
            paused_ms: row.paused_ms,
            warm: row.warm_key.is_some(),
        })
    }
}

/// Everything of a paused VM a fork needs besides the saved state: its writable disks
/// (raw, sparse; a fork's qcow2 disks are flattened), the launch config, its initramfs
/// and agent secret, and the modules disk (hard-linked: the cache may replace its file).
fn copy_vm_files(vm_dir: &Path, snap_dir: &Path, format: DiskFormat) -> Result<(), OpError> {
    let (root, work) = disks::paths(vm_dir, format);
    for (from, to) in [(root, ROOT_COPY), (work, WORK_COPY)] {
        let to = snap_dir.join(to);
        match format {
            DiskFormat::Raw => fsutil::copy_sparse(&from, &to)?,
            DiskFormat::Qcow2 => disks::flatten(&from, &to)?,
        }
    }
    let cfg = load_launch_config(vm_dir).map_err(|e| {
        OpError::Failed(format!(
            "{e}: a VM started by an older bangerd has none; stop and start it, then snapshot it"
        ))
    })?;
    for name in [LAUNCH_CONFIG, boot::VM_INITRAMFS, boot::AGENT_KEY] {
        fsutil::copy_file(&vm_dir.join(name), &snap_dir.join(name))?;
    }
    let mut links = vec![];
    if let Some(modules) = cfg.disks.get(3) {
        links.push((modules.path.clone(), MODULES_LINK));
    }
    if cfg.kernel.starts_with(vm_dir) {
        // The source VM's directory goes with it; its forks need the kernel.
        links.push((cfg.kernel.clone(), KERNEL_COPY));
    }
    for (from, name) in links {
        let link = snap_dir.join(name);
        if std::fs::hard_link(&from, &link).is_err() {
            fsutil::copy_sparse(&from, &link)?;
        }
    }
    fsutil::fsync_dir(snap_dir)
}

/// Bytes the files directly in `dir` take on disk, except files linked elsewhere too (the
/// modules disk, shared with the cache): what deleting `dir` frees.
pub fn dir_allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.nlink() == 1)
        .map(|m| m.blocks() * 512)
        .sum()
}

fn vmm_error(e: banger_vmm::VmmError) -> OpError {
    OpError::Failed(e.to_string())
}

/// Runs a blocking VMM call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OpError> + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OpError::Failed(format!("VMM call aborted: {e}")))?
}
