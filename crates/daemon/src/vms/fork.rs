//! Forks: `vm.create` with `from` makes a VM that goes on from a snapshot.
//!
//! The fork's disks are qcow2 overlays over the snapshot's copies (O(1): nothing is
//! copied; its writes stay its own). Its first start launches the VMM from the snapshot's
//! saved state with the snapshot's launch config (same kernel, initramfs, devices), and
//! before anything else is asked of it the guest is given its own identity: its name as
//! hostname, host entropy mixed in and the kernel's RNG reseeded (forks of one snapshot
//! never share random bytes), the host's clock, and a fresh agent secret (the snapshot's
//! is known to every fork). Later starts boot it from its own disks like any VM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::vm::{Vm, VmCreateParams};
use banger_guest_proto::{IdentityTaken, MAX_SEED, SetIdentity, auth, paths};
use banger_vmm::{DiskFormat, NetConfig, VmConfig};

use super::agent::AgentConn;
use super::snapshot::{KERNEL_COPY, MODULES_LINK, ROOT_COPY, WORK_COPY, load_launch_config};
use super::spec::VmSpec;
use super::{Vms, boot, disks};
use crate::error::OpError;
use crate::fsutil::DirGuard;
use crate::progress::OpContext;

/// Host entropy given to each fork.
const SEED_BYTES: usize = 64;
const _: () = assert!(SEED_BYTES <= MAX_SEED);

impl Vms {
    pub(super) async fn create_fork(
        self: &Arc<Self>,
        p: VmCreateParams,
        name: String,
        snapshot: &str,
        ctx: &OpContext,
    ) -> Result<Vm, OpError> {
        let snap = self.find_snapshot(snapshot)?;
        let image = self.store.find_image(&snap.image_id)?.ok_or_else(|| {
            OpError::Failed(format!(
                "snapshot {}'s image (id {}) no longer exists; delete the snapshot",
                snap.name, snap.image_id
            ))
        })?;
        if !p.image.is_empty() && p.image != image.name && p.image != image.id {
            return Err(OpError::BadRequest(format!(
                "snapshot {} is of image {}, not {}: drop the image to fork it",
                snap.name, image.name, p.image
            )));
        }
        let source: VmSpec = serde_json::from_str(&snap.spec).map_err(|e| {
            OpError::Failed(format!(
                "snapshot {}'s stored spec is unreadable: {e}",
                snap.name
            ))
        })?;
        // QEMU forks get copy-on-write overlays; Firecracker reads raw files only.
        let format = if snap.vmm == "qemu" {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Raw
        };
        let spec = fork_spec(source, &p, &snap.id, format)?;

        let id = crate::ids::new_id();
        let dir = self.vm_dir(&id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| OpError::io(format!("creating {}", dir.display()), e))?;
        let guard = DirGuard::new(dir.clone());
        let (snap_dir, vm_dir) = (PathBuf::from(&snap.dir), dir.clone());
        tokio::task::spawn_blocking(move || fork_files(&snap_dir, &vm_dir, format))
            .await
            .map_err(|e| OpError::Failed(format!("making the fork's disks aborted: {e}")))??;
        tracing::info!(vm = %name, snapshot = %snap.name, "forking");
        self.record_and_start(id, name, &image, &spec, guard, &p, ctx)
            .await
    }

    /// Gives a fork that just resumed its own identity; its agent secret is the new one
    /// from here on. banger's SSH key is authorized in the same call (when there is one).
    pub(super) async fn become_itself(
        &self,
        name: &str,
        dir: &Path,
        conn: &AgentConn,
    ) -> Result<IdentityTaken, String> {
        let mut secret = vec![0u8; auth::SECRET_LEN];
        let mut seed = vec![0u8; SEED_BYTES];
        crate::ids::secret_random(&mut secret)
            .and_then(|()| crate::ids::secret_random(&mut seed))
            .map_err(|e| format!("drawing the fork's secret: {e}"))?;
        let identity = SetIdentity {
            hostname: name.to_string(),
            seed,
            secret: secret.clone(),
            unix_nanos: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            authorize: self.ssh_key_to_authorize(name),
        };
        let taken = conn
            .call::<_, IdentityTaken>(paths::IDENTITY, &identity)
            .await
            .map_err(|e| format!("the fork did not take its identity: {e}"))?;
        boot::replace_agent_key(dir, &secret).map_err(|e| e.to_string())?;
        Ok(taken)
    }
}

/// The fork's spec: the snapshot's, with what may differ between forks (ports, network
/// policy, `--rm`, lease) taken from the params. CPUs and memory are the snapshot's.
fn fork_spec(
    mut spec: VmSpec,
    p: &VmCreateParams,
    snapshot_id: &str,
    format: DiskFormat,
) -> Result<VmSpec, OpError> {
    for (flag, asked, have) in [
        ("--cpus", p.cpus.map(u64::from), u64::from(spec.cpus)),
        ("--memory", p.memory_mib, spec.memory_mib),
    ] {
        if asked.is_some_and(|a| a != have) {
            return Err(OpError::BadRequest(format!(
                "{flag}: a fork has its snapshot's CPUs and memory ({} CPUs, {} MiB)",
                spec.cpus, spec.memory_mib
            )));
        }
    }
    if let Some(net) = p.net {
        let mode = super::net::mode_name(Some(net));
        if (mode == "none") != (spec.net == "none") {
            return Err(OpError::BadRequest(format!(
                "--net {mode}: the snapshot's VM had {} network device; a fork keeps its devices",
                if spec.net == "none" { "no" } else { "a" }
            )));
        }
        spec.net = mode;
        spec.net_from = p.net_from.clone().unwrap_or_default();
    }
    if !p.allow.is_empty() || !p.deny.is_empty() {
        spec.allow = p.allow.clone();
        spec.deny = p.deny.clone();
    }
    super::net::check(&spec.net, &spec.allow, &spec.deny)?;
    spec.publish = p
        .publish
        .iter()
        .map(|s| super::net::parse_publish(&s.text()))
        .collect::<Result<Vec<_>, _>>()?;
    super::net::check_free(&spec.publish)?;
    spec.auto_remove = p.auto_remove;
    spec.leased = p.lease.is_some();
    spec.disk_format = format;
    spec.forked_from = Some(snapshot_id.to_string());
    spec.resume_pending = true;
    Ok(spec)
}

/// The fork's disks (overlays over the snapshot's copies, or sparse copies of them for a
/// VMM that reads raw files only) and the snapshot boot's agent secret, which the resumed
/// agent still proves until it is given its own.
pub(super) fn fork_files(
    snap_dir: &Path,
    vm_dir: &Path,
    format: DiskFormat,
) -> Result<(), OpError> {
    let (root, work) = disks::paths(vm_dir, format);
    for (copy, disk) in [(ROOT_COPY, root), (WORK_COPY, work)] {
        match format {
            DiskFormat::Qcow2 => disks::create_overlay(&snap_dir.join(copy), &disk)?,
            DiskFormat::Raw => crate::fsutil::copy_sparse(&snap_dir.join(copy), &disk)?,
        }
    }
    let key = boot::read_agent_key(snap_dir)?;
    boot::replace_agent_key(vm_dir, &key)
}

/// The fork's launch: the snapshot's config with the fork's directory, disks, ports and
/// network policy, restoring the snapshot's state.
pub(super) fn fork_config(
    snap_dir: &Path,
    vm_dir: &Path,
    name: &str,
    spec: &VmSpec,
    policy: Option<banger_vmm::netns::Policy>,
) -> Result<VmConfig, OpError> {
    let mut cfg = load_launch_config(snap_dir)?;
    cfg.name = name.to_string();
    cfg.run_dir = vm_dir.to_path_buf();
    let format = spec.disk_format;
    let (root, work) = disks::paths(vm_dir, format);
    for (i, path) in [(1, root), (2, work)] {
        let disk = cfg.disks.get_mut(i).ok_or_else(|| {
            OpError::Failed(format!(
                "the snapshot's launch config has {} disks, not the VM's four",
                i
            ))
        })?;
        disk.path = path;
        disk.format = format;
    }
    if let Some(modules) = cfg.disks.get_mut(3) {
        modules.path = snap_dir.join(MODULES_LINK);
    }
    if snap_dir.join(KERNEL_COPY).is_file() {
        cfg.kernel = snap_dir.join(KERNEL_COPY);
    }
    cfg.initrd = Some(snap_dir.join(boot::VM_INITRAMFS));
    cfg.net = match (cfg.net, policy) {
        (NetConfig::User { .. }, Some(policy)) => NetConfig::User {
            forwards: spec.publish.clone(),
            policy,
        },
        (NetConfig::None, None) => NetConfig::None,
        _ => {
            return Err(OpError::BadRequest(
                "a fork keeps its snapshot's devices: its network must be `none` exactly when the snapshot's was".into(),
            ));
        }
    };
    cfg.restore = Some(snap_dir.to_path_buf());
    Ok(cfg)
}
