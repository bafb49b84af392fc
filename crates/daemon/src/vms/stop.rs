//! `vm.stop`: agent shutdown (sync, unmount) → the VMM's power-down (ACPI button or
//! Ctrl-Alt-Del) → SIGTERM → SIGKILL, each with a deadline; then the helpers and sockets
//! go. Every step runs even if one before failed.

use std::sync::Arc;
use std::time::Duration;

use banger_api::vm::{Vm, VmRef, VmState};
use banger_guest_proto::{Empty, ShutdownRequest, paths};

use super::live::{self, LiveVm};
use super::{Vms, is_live, parse_runtime, state_of};
use crate::error::OpError;
use crate::store::VmRow;

/// How long `stop` waits at each step before the next, harsher one.
#[derive(Debug, Clone, Copy)]
pub struct StopGraces {
    /// How long the guest gets to sync and power off after the agent's shutdown.
    pub shutdown: Duration,
    /// How long the VMM gets to exit after the power-down, SIGTERM, and SIGKILL.
    pub signal: Duration,
}

impl Default for StopGraces {
    fn default() -> Self {
        StopGraces {
            shutdown: Duration::from_secs(15),
            signal: Duration::from_secs(5),
        }
    }
}

impl Vms {
    pub async fn stop(self: &Arc<Self>, p: VmRef) -> Result<Vm, OpError> {
        let row = self.find(&p.vm)?;
        let interrupted = self.interrupt_boot(&row);
        let lock = self.op_lock(&row.id);
        let _op = lock.lock().await;
        let row = match self.after_interrupt(&row, interrupted)? {
            Ok(row) => row,
            Err(stopped) => return Ok(stopped),
        };
        self.require_running(&row)?;
        if state_of(&row) == VmState::Paused {
            // A paused guest cannot shut itself down.
            self.resume_locked(&row).await?;
        }
        let live = self.live_or_adopted(&row);
        live.mark_stopping();
        self.set_state(&row, VmState::Stopping, Some(&live.runtime()), None)?;
        let processes = live.processes();
        let graceful = match live.agent(Duration::from_secs(2)).await {
            Ok(conn) => {
                let asked = tokio::time::timeout(
                    Duration::from_secs(5),
                    conn.call::<_, Empty>(paths::SHUTDOWN, &ShutdownRequest {}),
                )
                .await;
                matches!(asked, Ok(Ok(_)))
            }
            Err(_) => false,
        };
        let vmm: Vec<_> = live.vmm().into_iter().collect();
        let mut gone = graceful && live::wait_gone(&vmm, self.stop_graces.shutdown).await;
        // No agent, or it did not get the guest off: the VMM's own power-down (QEMU's
        // ACPI button, Firecracker's Ctrl-Alt-Del), then signals.
        if !gone && let Some(driver) = self.driver_of(&live.runtime().vmm).await {
            let dir = live.dir.clone();
            let asked = tokio::task::spawn_blocking(move || driver.power_down(&dir)).await;
            match asked {
                Ok(Ok(())) => gone = live::wait_gone(&vmm, self.stop_graces.signal).await,
                Ok(Err(e)) => tracing::debug!(vm = %row.name, error = %e, "power-down refused"),
                Err(e) => tracing::debug!(vm = %row.name, error = %e, "power-down aborted"),
            }
        }
        // A guest that acknowledged the shutdown but kept running is killed too: not clean.
        let signalled = !gone;
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            if gone {
                break;
            }
            for p in &vmm {
                if p.is_alive()
                    && let Err(e) = p.signal(signal)
                {
                    tracing::warn!(vm = %row.name, pid = p.pid, error = %e, "signal failed");
                }
            }
            gone = live::wait_gone(&vmm, self.stop_graces.signal).await;
        }
        live::end_processes(&live.dir, &processes, self.stop_graces.signal).await;
        self.drop_live(&row.id);
        let note = (!graceful || signalled)
            .then_some("the guest did not shut down cleanly; it was killed");
        self.set_state(&row, VmState::Stopped, None, note)?;
        tracing::info!(vm = %row.name, graceful, "VM stopped");
        let stopped = self.show(&row.id)?;
        self.remove_if_auto(&row);
        Ok(stopped)
    }

    /// The row again once the op lock is held, or, when an interrupted boot already
    /// recorded the VM stopped (and maybe deleted it, `auto_remove`), the VM to answer.
    pub(super) fn after_interrupt(
        &self,
        before: &VmRow,
        interrupted: bool,
    ) -> Result<Result<VmRow, Vm>, OpError> {
        let row = match self.find(&before.id) {
            Ok(row) => row,
            Err(OpError::NotFound(_)) if interrupted => {
                let mut gone = self.to_api(before, false)?;
                gone.state = VmState::Stopped;
                gone.pid = None;
                return Ok(Err(gone));
            }
            Err(e) => return Err(e),
        };
        if interrupted && !is_live(&row) {
            return Ok(Err(self.to_api(&row, false)?));
        }
        Ok(Ok(row))
    }

    /// The driver that runs VMs of `vmm` (a runtime's `vmm` name) on this host.
    pub(super) async fn driver_of(&self, vmm: &str) -> Option<Arc<dyn banger_vmm::Vmm>> {
        self.host().await.ok()?.driver_named(vmm)
    }

    pub(super) fn require_running(&self, row: &VmRow) -> Result<(), OpError> {
        match state_of(row) {
            VmState::Running | VmState::Starting | VmState::Stopping | VmState::Paused => Ok(()),
            other => Err(OpError::NotRunning(format!(
                "VM {} is not running (it is {}); start it with `banger vm start {}`",
                row.name,
                other.as_str(),
                row.name
            ))),
        }
    }

    /// The live view of a VM the store says runs (rebuilt from the row if missing).
    pub(super) fn live_or_adopted(&self, row: &VmRow) -> Arc<LiveVm> {
        if let Some(live) = self.live(&row.id) {
            return live;
        }
        let live = LiveVm::new(
            &row.id,
            &row.name,
            std::path::Path::new(&row.dir),
            parse_runtime(row),
        );
        self.set_live(live.clone());
        live
    }
}
