//! Daemon start: VMs whose processes still run are adopted again (their agent redials the
//! new listener; one still starting resumes its readiness wait); VMs whose VMM died
//! meanwhile are marked stopped with exactly their leftovers removed; VM directories no
//! record owns are swept. VMs created under a `vm.hold` lease are killed and deleted: the
//! lease lived on a connection to the previous daemon, so its client is gone from here on;
//! `auto_remove` VMs found stopped are deleted.

use std::collections::HashSet;
use std::sync::Arc;

use banger_api::vm::VmState;
use banger_vmm::ChannelEndpoint;

use super::live::{self, LiveVm};
use super::{Vms, is_live, parse_runtime, parse_spec, state_of};
use crate::error::OpError;

/// How long a leased VM's processes get to die at start.
const LEASED_KILL_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the start-up pass found.
#[derive(Debug, Default)]
pub struct AdoptReport {
    pub adopted: Vec<String>,
    pub stopped: Vec<String>,
    /// `auto_remove` VMs found stopped, and every leased VM (see `lease.rs`).
    pub removed: Vec<String>,
    pub swept_dirs: Vec<String>,
}

impl Vms {
    pub async fn adopt_all(self: &Arc<Self>) -> Result<AdoptReport, OpError> {
        let mut report = AdoptReport::default();
        for row in self.store.list_vms()? {
            if parse_spec(&row).is_ok_and(|s| s.warm_template) {
                // A warm start template whose snapshot the last daemon did not finish: its
                // next create boots cold and makes another.
                self.remove_template(&row).await?;
                tracing::info!(vm = %row.name, "unfinished warm start template deleted at start");
                report.removed.push(row.name.clone());
                continue;
            }
            if !is_live(&row) {
                continue;
            }
            let runtime = parse_runtime(&row);
            let dir = std::path::PathBuf::from(&row.dir);
            let alive = runtime.vmm_process().is_some_and(|p| p.is_alive());
            if parse_spec(&row).is_ok_and(|s| s.leased) {
                // Its lease was held on a connection to the previous daemon: gone.
                live::end_processes(&dir, &runtime.processes, LEASED_KILL_GRACE).await;
                self.remove_locked(&row)?;
                tracing::info!(vm = %row.name, "leased VM deleted at start (its lease ended with the last daemon)");
                report.removed.push(row.name.clone());
                continue;
            }
            if !alive {
                live::cleanup_processes(&dir, &launched_processes(&dir, &runtime));
                live::release_driver_files(&dir);
                self.set_state(
                    &row,
                    VmState::Stopped,
                    None,
                    Some("its VMM exited while bangerd was not running"),
                )?;
                tracing::info!(vm = %row.name, "VM found dead at start; marked stopped");
                if self.remove_if_auto(&row) {
                    report.removed.push(row.name.clone());
                    continue;
                }
                report.stopped.push(row.name.clone());
                continue;
            }
            let endpoint = runtime.endpoint();
            let listener = match &endpoint {
                ChannelEndpoint::VsockListen(path) => {
                    let listener = live::bind_vsock_listener(path)?;
                    // A jailed Firecracker reaches the listener through a link in its jail.
                    if let Err(e) = banger_vmm::firecracker::listener_rebound(&dir) {
                        tracing::warn!(vm = %row.name, error = %e, "could not relink the agent listener into the jail");
                    }
                    Some(listener)
                }
                ChannelEndpoint::SerialConnect(_) => None,
            };
            let vm = LiveVm::new(&row.id, &row.name, &dir, runtime.clone());
            self.set_live(vm.clone());
            vm.spawn_channel(endpoint, listener);
            super::console::spawn_keeper(&vm, &row, super::console::Boot::Adopted);
            if state_of(&row) == VmState::Starting {
                // Killed mid-boot: the guest may still come up (its agent dials the new
                // listener) or die; the readiness wait decides, as it would have.
                tracing::info!(vm = %row.name, "re-adopted VM still starting");
                report.adopted.push(row.name.clone());
                self.resume_boot(row, vm);
                continue;
            }
            self.spawn_exit_watcher(vm);
            if state_of(&row) == VmState::Paused {
                tracing::info!(vm = %row.name, "re-adopted paused VM");
                report.adopted.push(row.name.clone());
                continue;
            }
            // A daemon killed while it had the guest paused for a snapshot: running again.
            self.ensure_running(&row).await;
            if state_of(&row) != VmState::Running {
                self.set_state(&row, VmState::Running, Some(&runtime), None)?;
            }
            tracing::info!(vm = %row.name, "re-adopted running VM");
            report.adopted.push(row.name.clone());
        }
        let owned: HashSet<String> = self.store.vm_ids()?.into_iter().collect();
        report.swept_dirs = crate::recovery::remove_unowned(&self.layout.vms_dir(), &owned)
            .map_err(|e| OpError::io("sweeping the vms dir", e))?;
        // Snapshots cut short (a daemon killed while taking one) have no row.
        let snapshots: HashSet<String> = self.store.snapshot_ids()?.into_iter().collect();
        let swept = crate::recovery::remove_unowned(&self.layout.snapshots_dir(), &snapshots)
            .map_err(|e| OpError::io("sweeping the snapshots dir", e))?;
        report
            .swept_dirs
            .extend(swept.into_iter().map(|d| format!("snapshots/{d}")));
        Ok(report)
    }
}

/// The processes of a VM to clean up: the recorded ones, or, for a daemon killed between
/// a launch and recording its pids, those the driver wrote to the run directory's pid file
/// (records carry start times: a reused pid is never mistaken for them).
impl Vms {
    /// Kills a warm start template's processes (those its launch recorded too) and
    /// deletes it.
    pub(super) async fn remove_template(&self, row: &crate::store::VmRow) -> Result<(), OpError> {
        let dir = std::path::PathBuf::from(&row.dir);
        let processes = launched_processes(&dir, &parse_runtime(row));
        live::end_processes(&dir, &processes, LEASED_KILL_GRACE).await;
        self.remove_locked(row)
    }

    /// At shutdown: no new template starts, and those booting are killed and deleted (a
    /// template is of no use without the daemon that would snapshot it).
    pub async fn end_warm_templates(&self) {
        self.warming.close();
        let Ok(rows) = self.store.list_vms() else {
            return;
        };
        for row in rows {
            if parse_spec(&row).is_ok_and(|s| s.warm_template)
                && let Err(e) = self.remove_template(&row).await
            {
                tracing::warn!(vm = %row.name, error = %e, "could not delete a warm start template");
            }
        }
    }
}

fn launched_processes(
    dir: &std::path::Path,
    runtime: &super::spec::VmRuntime,
) -> Vec<banger_vmm::ProcessRecord> {
    if !runtime.processes.is_empty() {
        return runtime.processes.clone();
    }
    std::fs::read(banger_vmm::RunFiles::new(dir).pids_json)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}
