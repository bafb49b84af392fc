//! `vm.delete`: the record first, then the VM's directory (disks, console log, sockets):
//! a crash in between leaves a directory that the next start sweeps, never a record
//! without its disks. `auto_remove` VMs come here too, from every path that stops them.

use std::sync::Arc;

use banger_api::vm::{VmDeleteParams, VmDeleted};

use super::{Vms, is_live, parse_spec};
use crate::error::OpError;
use crate::store::VmRow;

impl Vms {
    pub async fn delete(self: &Arc<Self>, p: VmDeleteParams) -> Result<VmDeleted, OpError> {
        let row = self.find(&p.vm)?;
        if p.force {
            self.interrupt_boot(&row);
        }
        let lock = self.op_lock(&row.id);
        let _op = lock.lock().await;
        let row = self.find(&row.id)?;
        if is_live(&row) {
            if !p.force {
                return Err(OpError::AlreadyRunning(format!(
                    "VM {} is {}; stop it first (`banger vm stop {}`) or delete it with --force",
                    row.name, row.state, row.name
                )));
            }
            self.kill_locked(&row).await?;
        }
        self.remove_locked(&row)?;
        Ok(VmDeleted {
            id: row.id,
            name: row.name,
        })
    }

    /// After a VM stopped, whichever way: deletes it when it was made with `auto_remove`.
    /// The caller holds the op lock and the VM's processes are gone. True when deleted.
    pub(super) fn remove_if_auto(&self, row: &VmRow) -> bool {
        if !parse_spec(row).is_ok_and(|s| s.auto_remove) {
            return false;
        }
        match self.remove_locked(row) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(vm = %row.name, error = %e, "could not delete an auto_remove VM");
                false
            }
        }
    }

    /// Removes a stopped VM whose op lock the caller holds: the record, then its files.
    pub(super) fn remove_locked(&self, row: &VmRow) -> Result<(), OpError> {
        self.store.delete_vm(&row.id)?;
        self.leases.detach(&row.id);
        self.forget_host_keys(&row.name);
        let dir = std::path::Path::new(&row.dir);
        if dir.parent() == Some(self.layout.vms_dir().as_path()) {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "VM files not removed; the next daemon start sweeps them")
                }
            }
        } else {
            tracing::warn!(dir = %dir.display(), "VM dir outside the vms dir; left alone");
        }
        self.op_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&row.id);
        tracing::info!(vm = %row.name, id = %row.id, "deleted VM");
        Ok(())
    }
}
