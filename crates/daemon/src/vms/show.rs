//! `vm.show` and `vm.list`: the record, its runtime, and the disks' real sizes.

use banger_api::vm::{Vm, VmCapabilities, VmList};

use super::{Vms, disks, parse_runtime, parse_spec, state_of};
use crate::error::OpError;
use crate::store::VmRow;

impl Vms {
    pub fn show(&self, name_or_id: &str) -> Result<Vm, OpError> {
        let row = self.find(name_or_id)?;
        self.to_api(&row, true)
    }

    pub fn list(&self) -> Result<VmList, OpError> {
        let vms = self
            .store
            .list_vms()?
            .iter()
            .map(|row| self.to_api(row, false))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VmList { vms })
    }

    /// What the VM's driver offers, once this daemon has looked at the host (`vm show`
    /// does not probe KVM itself).
    fn capabilities_of(&self, vmm: &str) -> Option<VmCapabilities> {
        let caps = self.host.get()?.driver_named(vmm)?.capabilities();
        Some(VmCapabilities {
            pause: caps.pause.as_str().into(),
            snapshot: caps.snapshot.as_str().into(),
            shared_folders: caps.shared_folders.as_str().into(),
            hot_plug: caps.hot_plug.as_str().into(),
            vsock: caps.vsock.as_str().into(),
        })
    }

    /// `denials`: read what the running VM's network policy denied (`vm show` only: it
    /// runs `nft` in the VM's namespace).
    pub(super) fn to_api(&self, row: &VmRow, denials: bool) -> Result<Vm, OpError> {
        let spec = parse_spec(row)?;
        let runtime = parse_runtime(row);
        let image = self
            .store
            .find_image(&row.image_id)?
            .map(|i| i.name)
            .unwrap_or_else(|| "(deleted)".into());
        let (root, work) = disks::paths(std::path::Path::new(&row.dir), spec.disk_format);
        let vmm = if runtime.vmm.is_empty() {
            spec.vmm.as_str().to_string()
        } else {
            runtime.vmm.clone()
        };
        Ok(Vm {
            capabilities: self.capabilities_of(&vmm),
            id: row.id.clone(),
            name: row.name.clone(),
            image,
            image_id: row.image_id.clone(),
            state: state_of(row),
            cpus: spec.cpus,
            memory_mib: spec.memory_mib,
            init: spec.init_resolved.unwrap_or(spec.init).as_str().into(),
            vmm,
            vmm_reason: runtime.vmm_reason.clone(),
            accel: runtime.accel.clone(),
            accel_reason: runtime.accel_reason.clone(),
            channel: if runtime.channel.is_empty() {
                spec.channel.clone()
            } else {
                runtime.channel.clone()
            },
            net: match spec.net.as_str() {
                "user" => "host".into(),
                n => n.into(),
            },
            net_policy: super::net::policy_info(
                &spec,
                runtime
                    .vmm_process()
                    .filter(|p| denials && p.is_alive())
                    .map(|p| p.pid),
            ),
            published: spec.publish.iter().map(super::net::to_api).collect(),
            last_error: row.last_error.clone(),
            stages: runtime.stages.clone(),
            root_disk: disks::usage(&root),
            work_disk: disks::usage(&work),
            pid: runtime.vmm_process().map(|p| p.pid),
            dir: row.dir.clone(),
            created_at: row.created_at.clone(),
            started_at: row.started_at.clone(),
            auto_remove: spec.auto_remove,
            leased: spec.leased,
            forked_from: match &spec.forked_from {
                Some(id) => Some(
                    self.store
                        .find_snapshot(id)?
                        .map(|s| s.name)
                        .unwrap_or_else(|| format!("(deleted snapshot {id})")),
                ),
                None => None,
            },
            start: Some(runtime.start.clone()).filter(|s| !s.is_empty()),
            stop_idle_after_secs: spec.stop_idle_after_secs,
            idle_stop_in_secs: self
                .idle_stop_in(&row.id, spec.stop_idle_after_secs)
                .flatten(),
        })
    }
}
