//! `vm.create`: validate everything, build what the guest boots with, make the disks,
//! record the VM, then start it (unless `no_start`). Anything that fails before the record
//! exists removes what it made; nothing half-made is ever listed.

use std::path::Path;
use std::sync::Arc;

use banger_api::image::Image;
use banger_api::names::validate_name;
use banger_api::vm::{InitChoice, Vm, VmCreateParams, VmState};
use banger_guest_proto::InitMode;

use super::spec::{DEFAULT_DISK_BYTES, VmSpec, validate_disk};
use super::{Vms, boot, disks};
use crate::error::OpError;
use crate::fsutil::DirGuard;
use crate::progress::OpContext;
use crate::store::{StoreError, VmRow};

impl Vms {
    pub async fn create(
        self: &Arc<Self>,
        p: VmCreateParams,
        ctx: &OpContext,
    ) -> Result<Vm, OpError> {
        if p.lease.is_some() && !p.auto_remove {
            return Err(OpError::BadRequest(
                "a lease deletes its VMs: give `auto_remove` with `lease`".into(),
            ));
        }
        let (name, _claim) = self.claim_name(&p)?;
        if let Some(snapshot) = p.from.clone() {
            return self.create_fork(p, name, &snapshot, ctx).await;
        }
        let image = self.store.find_image(&p.image)?.ok_or_else(|| {
            OpError::NotFound(format!(
                "no image named {:?}; see `banger image list`, or make one with `banger image pull`",
                p.image
            ))
        })?;
        check_architecture(&image.name, image.platform.as_deref())?;
        let spec = self.validated_spec(&p)?;
        self.check_bootable(&image, &spec).await?;
        let warm = self.warm_plan(&p, &image, &spec).await?;
        if let Some(plan) = &warm
            && let Some(snap) = self.warm_snapshot(plan)?
        {
            return self.create_warm(&p, name, &image, spec, &snap, ctx).await;
        }

        let id = crate::ids::new_id();
        let dir = self.vm_dir(&id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| OpError::io(format!("creating {}", dir.display()), e))?;
        let guard = DirGuard::new(dir.clone());
        make_disks(&id, &dir, &spec).await?;
        let vm = self
            .record_and_start(id, name, &image, &spec, guard, &p, ctx)
            .await?;
        if let Some(plan) = warm {
            // Now that this VM is ready, so that the next one starts warm.
            self.warm_later(image, plan);
        }
        Ok(vm)
    }

    /// Records a VM whose directory and disks are made (removing them if the record
    /// fails), attaches it to its lease, and boots it unless `no_start`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_and_start(
        self: &Arc<Self>,
        id: String,
        name: String,
        image: &Image,
        spec: &VmSpec,
        guard: DirGuard,
        p: &VmCreateParams,
        ctx: &OpContext,
    ) -> Result<Vm, OpError> {
        let dir = self.vm_dir(&id);
        let (cpus, memory_mib) = (spec.cpus, spec.memory_mib);
        let row = VmRow {
            id: id.clone(),
            name,
            image_id: image.id.clone(),
            state: VmState::Created.as_str().into(),
            spec: serde_json::to_string(spec)
                .map_err(|e| OpError::Failed(format!("encoding VM spec: {e}")))?,
            runtime: None,
            last_error: None,
            dir: crate::paths::to_string(&dir)?,
            created_at: crate::ids::now_rfc3339(),
            started_at: None,
        };
        match self.store.insert_vm(&row) {
            Ok(()) => guard.disarm(),
            Err(StoreError::VmNameTaken(n)) => return Err(taken(&n)),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(vm = %row.name, id = %row.id, image = %image.name, cpus, memory_mib, "created VM");
        if let Some(lease) = &p.lease
            && let Err(e) = self.leases.attach(lease, &id)
        {
            // Its holder went away while this create ran.
            self.remove_locked(&row)?;
            return Err(e);
        }
        if p.no_start {
            return self.show(&id);
        }
        let lock = self.op_lock(&id);
        let _op = lock.lock().await;
        // A vanished lease may have deleted it before this boot got the lock.
        let row = self.find(&id)?;
        self.boot(row, ctx, p.ready_timeout_secs).await
    }

    /// The VM's spec from the params and the daemon's defaults, every value checked.
    pub(super) fn validated_spec(&self, p: &VmCreateParams) -> Result<VmSpec, OpError> {
        let cpus = p.cpus.unwrap_or_else(|| self.resources.default_cpus());
        let memory_mib = p
            .memory_mib
            .unwrap_or_else(|| self.resources.default_memory_mib());
        self.resources.validate(cpus, memory_mib)?;
        let disk_bytes = validate_disk("--disk", p.disk_bytes.unwrap_or(DEFAULT_DISK_BYTES))?;
        let work_disk_bytes = validate_disk(
            "--work-disk",
            p.work_disk_bytes.unwrap_or(DEFAULT_DISK_BYTES),
        )?;
        let init = match p.init.unwrap_or_default() {
            InitChoice::Auto => InitMode::Auto,
            InitChoice::Agent => InitMode::Agent,
            InitChoice::Image => InitMode::Image,
        };
        let ready = match p.ready.as_deref() {
            None => banger_guest_proto::Readiness::default(),
            Some(s) => banger_guest_proto::Readiness::parse(s).ok_or_else(|| {
                OpError::BadRequest(format!("--ready {s:?}: use none, sysinit or multi-user"))
            })?,
        };
        let channel = p.channel.unwrap_or_default().as_str().to_string();
        let net = super::net::mode_name(p.net);
        super::net::check(&net, &p.allow, &p.deny)?;
        let publish = p
            .publish
            .iter()
            .map(|s| super::net::parse_publish(&s.text()))
            .collect::<Result<Vec<_>, _>>()?;
        if net == "none" && !publish.is_empty() {
            return Err(OpError::BadRequest(
                "-p needs networking; drop --net none".into(),
            ));
        }
        super::net::check_free(&publish)?;
        super::spec::validate_kernel_args(&p.kernel_args)?;
        let console_log_max = super::console::check_max(p.console_log_max)?;
        let vmm: banger_vmm::VmmChoice = p
            .vmm
            .unwrap_or_default()
            .as_str()
            .parse()
            .map_err(|e: banger_vmm::SelectError| OpError::BadRequest(e.to_string()))?;
        Ok(VmSpec {
            cpus,
            memory_mib,
            disk_bytes,
            work_disk_bytes,
            init,
            init_resolved: None,
            ready,
            channel,
            net,
            net_from: p.net_from.clone().unwrap_or_default(),
            allow: p.allow.clone(),
            deny: p.deny.clone(),
            publish,
            vmm,
            kernel_args: p.kernel_args.clone(),
            console_log_max,
            auto_remove: p.auto_remove,
            leased: p.lease.is_some(),
            disk_format: banger_vmm::DiskFormat::Raw,
            forked_from: None,
            resume_pending: false,
            warm_template: false,
            stop_idle_after_secs: banger_api::config::idle_stop_after(
                &banger_api::config::config_path(),
            )
            .map_err(|e| OpError::BadRequest(format!("config.toml: {e}")))?,
        })
    }

    /// Refuses, before anything of the VM exists, a VMM this host cannot run and a kernel
    /// that cannot boot the agent (the initramfs is built and cached on the way).
    async fn check_bootable(&self, image: &Image, spec: &VmSpec) -> Result<(), OpError> {
        let host = self.host().await?;
        // `--vmm firecracker` where KVM cannot boot guests fails here, before anything exists.
        let selected = host.select(spec.vmm)?;
        let vsock = super::start::use_vsock(&spec.channel, &host, selected.channel)?;

        // The kernel must be able to boot the agent: checked (and cached) before anything
        // of the VM exists.
        let cache = self.layout.initramfs_dir();
        let for_check = image.clone();
        let with_net = spec.net != "none";
        tokio::task::spawn_blocking(move || boot::initramfs(&cache, &for_check, vsock, with_net))
            .await
            .map_err(|e| OpError::Failed(format!("initramfs build aborted: {e}")))??;
        Ok(())
    }
}

/// The VM's empty root and work disks in `dir`, their filesystems seeded from its id.
pub(super) async fn make_disks(id: &str, dir: &Path, spec: &VmSpec) -> Result<(), OpError> {
    let (root, work) = disks::paths(dir, spec.disk_format);
    let seed_id = id.to_string();
    let (disk_bytes, work_disk_bytes) = (spec.disk_bytes, spec.work_disk_bytes);
    tokio::task::spawn_blocking(move || {
        disks::create_empty(
            &root,
            disk_bytes,
            "banger-root",
            disks::seed_from_id(&seed_id, 1),
        )?;
        disks::create_empty(
            &work,
            work_disk_bytes,
            "banger-work",
            disks::seed_from_id(&seed_id, 2),
        )
    })
    .await
    .map_err(|e| OpError::Failed(format!("disk creation aborted: {e}")))??;
    Ok(())
}

impl Vms {
    /// The name asked for, or one the daemon picks from the hint; claimed either way, so a
    /// concurrent create of the same name fails at once.
    fn claim_name(
        &self,
        p: &VmCreateParams,
    ) -> Result<(String, crate::claims::NameClaim<'_>), OpError> {
        let in_store = |name: &str| -> Result<bool, OpError> {
            Ok(self.store.find_vm(name)?.is_some_and(|v| v.name == name))
        };
        if p.name.is_empty() {
            return super::naming::claim_free_name(
                &self.creating,
                p.name_hint.as_deref(),
                in_store,
                super::naming::random_suffix,
            );
        }
        validate_name(&p.name).map_err(|e| OpError::BadRequest(format!("VM {e}")))?;
        let claim = self.creating.claim(&p.name)?;
        if in_store(&p.name)? {
            return Err(taken(&p.name));
        }
        Ok((p.name.clone(), claim))
    }
}

/// The message of a name that is taken, or has a create in flight.
pub(super) fn taken_message(name: &str) -> String {
    format!(
        "a VM named {name:?} already exists; pick another name or delete it with `banger vm delete {name}`"
    )
}

fn taken(name: &str) -> OpError {
    OpError::AlreadyExists(taken_message(name))
}

/// The guest runs this host's architecture (no cross-architecture emulation).
fn check_architecture(image: &str, platform: Option<&str>) -> Result<(), OpError> {
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let Some(arch) = platform.and_then(|p| p.split('/').nth(1)) else {
        return Ok(());
    };
    if arch != host {
        return Err(OpError::BadRequest(format!(
            "image {image} is for {}, but this host runs {host} guests; pull the image with --platform linux/{host}",
            platform.unwrap_or(arch)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_architecture_is_refused_with_the_fix() {
        assert!(
            check_architecture("a", Some("linux/amd64")).is_ok()
                || cfg!(not(target_arch = "x86_64"))
        );
        assert!(check_architecture("a", None).is_ok());
        let e = check_architecture("a", Some("linux/riscv64"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("--platform"), "{e}");
    }
}
