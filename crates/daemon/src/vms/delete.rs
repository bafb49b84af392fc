//! `vm.delete`: the record first, then the VM's directory (disks, console log, sockets):
//! a crash in between leaves a directory that the next start sweeps, never a record
//! without its disks.

use std::sync::Arc;

use banger_api::vm::{VmDeleteParams, VmDeleted};

use super::{Vms, is_live};
use crate::error::OpError;

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
        self.store.delete_vm(&row.id)?;
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
        Ok(VmDeleted {
            id: row.id,
            name: row.name,
        })
    }
}
