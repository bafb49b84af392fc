//! `vm.prune`: deletes the VMs that are not up (created, stopped, failed), with their disks.

use std::sync::Arc;

use banger_api::vm::{VmPruneParams, VmPruned};

use super::{Vms, is_live, parse_spec};
use crate::error::OpError;

impl Vms {
    /// The VMs that are not up, or (with `only`) those of the named ones that still are
    /// not: a front end that asked its user about a list deletes no VM that started since.
    /// `dry_run` names them without deleting. Warm start templates are the daemon's own.
    pub async fn prune(self: &Arc<Self>, p: VmPruneParams) -> Result<VmPruned, OpError> {
        let candidates: Vec<_> = self
            .store
            .list_vms()?
            .into_iter()
            .filter(|row| !is_live(row) && !parse_spec(row).is_ok_and(|s| s.warm_template))
            .filter(|row| {
                p.only
                    .as_ref()
                    .is_none_or(|only| only.iter().any(|n| *n == row.name || *n == row.id))
            })
            .collect();
        let mut pruned = VmPruned::default();
        for row in candidates {
            if p.dry_run {
                pruned.deleted.push(row.name);
                continue;
            }
            let lock = self.op_lock(&row.id);
            let _op = lock.lock().await;
            // Looked at again under the lock: it may have started or gone meanwhile.
            let Ok(row) = self.find(&row.id) else {
                continue;
            };
            if is_live(&row) {
                continue;
            }
            pruned.freed_bytes +=
                super::snapshot::dir_allocated_bytes(std::path::Path::new(&row.dir));
            self.remove_locked(&row)?;
            pruned.deleted.push(row.name);
        }
        Ok(pruned)
    }
}
