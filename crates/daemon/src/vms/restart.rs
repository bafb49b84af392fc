//! `vm.restart`: a clean stop (when the VM is up), then a boot from the same disks.

use std::sync::Arc;

use banger_api::event::OpEvent;
use banger_api::vm::{Vm, VmRef, VmStartParams};

use super::{Vms, is_live};
use crate::error::OpError;
use crate::progress::OpContext;

impl Vms {
    /// Stops the VM as `vm.stop` does when it is up (a paused one is resumed to shut
    /// down), then boots it as `vm.start` does. A VM that is not up is only started.
    pub async fn restart(
        self: &Arc<Self>,
        p: VmStartParams,
        ctx: &OpContext,
    ) -> Result<Vm, OpError> {
        let row = self.find(&p.vm)?;
        if is_live(&row) {
            let began = std::time::Instant::now();
            self.stop(VmRef { vm: row.id.clone() }).await?;
            ctx.emit(OpEvent::VmStage {
                stage: "stopped".into(),
                elapsed_ms: super::ms_since(began),
            });
        }
        self.start(
            VmStartParams {
                vm: row.id,
                ready_timeout_secs: p.ready_timeout_secs,
            },
            ctx,
        )
        .await
    }
}
