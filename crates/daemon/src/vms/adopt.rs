//! Daemon start: VMs whose processes still run are adopted again (their agent redials the
//! new listener); VMs whose VMM died meanwhile are marked stopped with exactly their
//! leftovers removed; VM directories no record owns are swept.

use std::collections::HashSet;
use std::sync::Arc;

use banger_api::vm::VmState;
use banger_vmm::ChannelEndpoint;

use super::live::{self, LiveVm};
use super::{Vms, parse_runtime, state_of};
use crate::error::OpError;

/// What the start-up pass found.
#[derive(Debug, Default)]
pub struct AdoptReport {
    pub adopted: Vec<String>,
    pub stopped: Vec<String>,
    pub swept_dirs: Vec<String>,
}

impl Vms {
    pub async fn adopt_all(self: &Arc<Self>) -> Result<AdoptReport, OpError> {
        let mut report = AdoptReport::default();
        for row in self.store.list_vms()? {
            if !matches!(
                state_of(&row),
                VmState::Running | VmState::Starting | VmState::Stopping
            ) {
                continue;
            }
            let runtime = parse_runtime(&row);
            let dir = std::path::PathBuf::from(&row.dir);
            let alive = runtime.vmm_process().is_some_and(|p| p.is_alive());
            if !alive {
                live::cleanup_processes(&dir, &runtime.processes);
                self.set_state(
                    &row,
                    VmState::Stopped,
                    None,
                    Some("its VMM exited while bangerd was not running"),
                )?;
                tracing::info!(vm = %row.name, "VM found dead at start; marked stopped");
                report.stopped.push(row.name.clone());
                continue;
            }
            let endpoint = runtime.endpoint();
            let listener = match &endpoint {
                ChannelEndpoint::VsockListen(path) => Some(live::bind_vsock_listener(path)?),
                ChannelEndpoint::SerialConnect(_) => None,
            };
            let vm = LiveVm::new(&row.id, &row.name, &dir, runtime.clone());
            self.set_live(vm.clone());
            vm.spawn_channel(endpoint, listener);
            self.spawn_exit_watcher(vm);
            if state_of(&row) != VmState::Running {
                self.set_state(&row, VmState::Running, Some(&runtime), None)?;
            }
            tracing::info!(vm = %row.name, "re-adopted running VM");
            report.adopted.push(row.name.clone());
        }
        let owned: HashSet<String> = self.store.vm_ids()?.into_iter().collect();
        report.swept_dirs = crate::recovery::remove_unowned(&self.layout.vms_dir(), &owned)
            .map_err(|e| OpError::io("sweeping the vms dir", e))?;
        Ok(report)
    }
}
