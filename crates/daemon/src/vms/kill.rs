//! `vm.kill`: SIGKILL the VMM and its helpers now; nothing is synced.

use std::sync::Arc;
use std::time::Duration;

use banger_api::vm::{Vm, VmRef, VmState};

use super::Vms;
use super::live;
use crate::error::OpError;

impl Vms {
    pub async fn kill(self: &Arc<Self>, p: VmRef) -> Result<Vm, OpError> {
        let row = self.find(&p.vm)?;
        let interrupted = self.interrupt_boot(&row);
        let lock = self.op_lock(&row.id);
        let _op = lock.lock().await;
        let row = match self.after_interrupt(&row, interrupted)? {
            Ok(row) => row,
            Err(stopped) => return Ok(stopped),
        };
        self.require_running(&row)?;
        self.kill_locked(&row).await?;
        let killed = self.show(&row.id)?;
        self.remove_if_auto(&row);
        Ok(killed)
    }

    /// Kills a VM whose op lock the caller holds, and records it stopped.
    pub(super) async fn kill_locked(&self, row: &crate::store::VmRow) -> Result<(), OpError> {
        let live = self.live_or_adopted(row);
        live.mark_stopping();
        let processes = live.processes();
        let gone = live::end_processes(&live.dir, &processes, Duration::from_secs(5)).await;
        self.drop_live(&row.id);
        if !gone {
            tracing::warn!(vm = %row.name, "VM processes survived SIGKILL for 5 s");
        }
        self.set_state(row, VmState::Stopped, None, Some("killed"))?;
        tracing::info!(vm = %row.name, "VM killed");
        Ok(())
    }
}
