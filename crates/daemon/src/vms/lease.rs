//! `vm.hold`: leases that tie `auto_remove` VMs to a client's connection.
//!
//! A client opens a lease first (a streaming call whose first event carries the id), then
//! creates VMs with it. The lease lasts as long as that call's connection: when the client
//! goes away without the daemon ending the lease (SIGKILL, a crash, a lost connection)
//! the lease *vanishes* and its VMs are killed and deleted. The daemon *releases* every
//! lease when it shuts down: the calls end cleanly and the VMs are left to the next start,
//! which deletes them (no client can hold a lease across a restart; see `adopt.rs`).
//!
//! A VM is attached to its lease right after its record is inserted, under the same lock
//! that ends leases, so a lease that vanishes while a create is in flight either finds
//! the VM (and deletes it) or makes the attach fail (and the create deletes it).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use banger_api::event::OpEvent;
use banger_api::vm::{VmDeleteParams, VmHoldEnded};
use tokio::sync::oneshot;

use super::Vms;
use crate::error::OpError;
use crate::progress::OpContext;

struct Lease {
    vms: HashSet<String>,
    /// Fired when the daemon releases the lease.
    release: oneshot::Sender<()>,
}

/// Every lease held now, by id.
#[derive(Default)]
pub struct Leases {
    held: Mutex<HashMap<String, Lease>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new lease, and what fires when the daemon releases it.
    pub fn open(&self) -> (String, oneshot::Receiver<()>) {
        let id = format!("lease-{}", crate::ids::new_id());
        let (release, released) = oneshot::channel();
        self.lock().insert(
            id.clone(),
            Lease {
                vms: HashSet::new(),
                release,
            },
        );
        (id, released)
    }

    /// Puts VM `vm_id` under `lease`; fails when the lease is not held (never was, or its
    /// client went away meanwhile).
    pub fn attach(&self, lease: &str, vm_id: &str) -> Result<(), OpError> {
        match self.lock().get_mut(lease) {
            Some(l) => {
                l.vms.insert(vm_id.to_string());
                Ok(())
            }
            None => Err(OpError::BadRequest(format!(
                "lease {:?} is not held (its `vm.hold` call ended); open a new one",
                banger_api::text::cut(lease, 80)
            ))),
        }
    }

    /// A VM deleted: no lease reaps it any more.
    pub fn detach(&self, vm_id: &str) {
        for lease in self.lock().values_mut() {
            lease.vms.remove(vm_id);
        }
    }

    /// The client of `lease` went away: ends it and returns its VMs, to be deleted.
    pub fn vanish(&self, lease: &str) -> Vec<String> {
        let mut vms: Vec<String> = self
            .lock()
            .remove(lease)
            .map(|l| l.vms.into_iter().collect())
            .unwrap_or_default();
        vms.sort();
        vms
    }

    /// Ends every lease cleanly (daemon shutdown): their calls return, their VMs stay.
    pub fn release_all(&self) {
        for (_, lease) in self.lock().drain() {
            let _ = lease.release.send(());
        }
    }
}

impl Vms {
    /// `vm.hold`: emits the lease id, then holds the lease until the client goes away
    /// (its VMs are killed and deleted) or the daemon releases it.
    pub async fn hold(self: &Arc<Self>, ctx: &OpContext) -> Result<VmHoldEnded, OpError> {
        if !ctx.is_streaming() {
            return Err(OpError::BadRequest(
                "vm.hold lasts as long as its connection: call it streaming (`Accept: application/x-ndjson`)".into(),
            ));
        }
        let (id, released) = self.leases.open();
        ctx.emit(OpEvent::Lease { id: id.clone() });
        tokio::select! {
            _ = released => {
                tracing::info!(lease = %id, "lease released");
                Ok(VmHoldEnded { lease: id })
            }
            () = ctx.closed() => {
                let vms = self.leases.vanish(&id);
                tracing::info!(lease = %id, ?vms, "lease holder went away; deleting its VMs");
                for vm in vms {
                    self.reap(&vm).await;
                }
                Err(OpError::Cancelled)
            }
        }
    }

    /// Kills and deletes a VM whose lease vanished (it may be gone already).
    async fn reap(self: &Arc<Self>, id: &str) {
        let params = VmDeleteParams {
            vm: id.to_string(),
            force: true,
        };
        match self.delete(params).await {
            Ok(gone) => tracing::info!(vm = %gone.name, "deleted the VM of a vanished lease"),
            Err(OpError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(vm = %id, error = %e, "could not delete the VM of a vanished lease")
            }
        }
    }

    /// Ends every lease cleanly (daemon shutdown).
    pub fn release_leases(&self) {
        self.leases.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vanished_lease_gives_its_vms_and_refuses_new_ones() {
        let leases = Leases::default();
        let (id, _released) = leases.open();
        leases.attach(&id, "vm-b").expect("attach");
        leases.attach(&id, "vm-a").expect("attach");
        leases.attach(&id, "vm-c").expect("attach");
        leases.detach("vm-c");
        assert_eq!(
            leases.vanish(&id),
            ["vm-a", "vm-b"],
            "deleted VMs are not reaped"
        );
        assert!(leases.vanish(&id).is_empty(), "a lease vanishes once");
        let e = leases.attach(&id, "vm-d").expect_err("the lease is gone");
        assert!(e.to_string().contains("not held"), "{e}");
        assert!(leases.attach("lease-unknown", "vm-e").is_err());
    }

    #[test]
    fn a_released_lease_reaps_nothing() {
        let leases = Leases::default();
        let (one, mut released_one) = leases.open();
        let (two, mut released_two) = leases.open();
        assert_ne!(one, two, "lease ids are unique");
        leases.attach(&one, "vm-a").expect("attach");
        assert!(released_one.try_recv().is_err(), "held until released");
        leases.release_all();
        assert!(released_one.try_recv().is_ok(), "the hold call returns");
        assert!(released_two.try_recv().is_ok());
        assert!(
            leases.vanish(&one).is_empty(),
            "a client leaving after the release deletes nothing"
        );
        assert!(leases.attach(&two, "vm-b").is_err());
    }
}
