//! The idle stop (`[vm] stop_idle_after`): a running VM with no exec, ssh, cp or proxy
//! session for that long (and, when it publishes ports, no traffic on its network either)
//! is stopped cleanly, as `vm stop` does; `vm show` says when.

use std::sync::Arc;
use std::time::Duration;

use banger_api::vm::{VmRef, VmState};

use super::live::LiveVm;
use super::{Vms, parse_runtime, parse_spec, state_of};

/// How often a VM's idleness is looked at: a quarter of its limit, within these bounds.
const MIN_PERIOD: Duration = Duration::from_secs(1);
const MAX_PERIOD: Duration = Duration::from_secs(30);

impl Vms {
    /// Watches `live` for as long as it runs, when its spec asks for an idle stop.
    pub(super) fn spawn_idle_stop(self: &Arc<Self>, live: Arc<LiveVm>) {
        let Ok(row) = self.find(&live.id) else { return };
        let Ok(spec) = parse_spec(&row) else { return };
        let Some(limit) = spec.stop_idle_after_secs.map(Duration::from_secs) else {
            return;
        };
        if spec.warm_template {
            return;
        }
        let publishes = !spec.publish.is_empty();
        let period = (limit / 4).clamp(MIN_PERIOD, MAX_PERIOD);
        let vms = self.clone();
        let watched = live.clone();
        let task = tokio::spawn(async move {
            let mut traffic = None;
            loop {
                tokio::time::sleep(period).await;
                if watched.is_stopping() {
                    return;
                }
                if publishes {
                    // Published ports carry no session: their traffic is what says busy.
                    let now = tap_bytes(&vms, &watched.id);
                    if now.is_some() && now != traffic {
                        if traffic.is_some() {
                            watched.touch();
                        }
                        traffic = now;
                    }
                }
                let Some(idle) = watched.idle_for() else {
                    continue;
                };
                if idle < limit {
                    continue;
                }
                let Ok(row) = vms.find(&watched.id) else {
                    return;
                };
                if state_of(&row) != VmState::Running {
                    continue; // paused, or in another verb's hands
                }
                tracing::info!(vm = %row.name, idle_secs = idle.as_secs(), "stopping an idle VM");
                // Not in this task: the stop aborts the VM's tasks, this one among them.
                let vms = vms.clone();
                tokio::spawn(async move {
                    let note = format!(
                        "stopped after {} without an exec, ssh, cp or proxy session ([vm] stop_idle_after)",
                        banger_api::text::human_duration(limit.as_secs())
                    );
                    match vms.stop(VmRef { vm: row.id.clone() }).await {
                        Ok(_) => {
                            if let Ok(row) = vms.find(&row.id)
                                && let Err(e) =
                                    vms.set_state(&row, VmState::Stopped, None, Some(&note))
                            {
                                tracing::warn!(vm = %row.name, error = %e, "could not record the idle stop");
                            }
                        }
                        Err(e) => tracing::warn!(vm = %row.name, error = %e, "idle stop failed"),
                    }
                });
                return;
            }
        });
        live.add_task(task);
    }

    /// Seconds until the idle stop of a running VM: `Some(None)` while a session is open,
    /// `None` when it has no idle stop or does not run.
    pub(super) fn idle_stop_in(&self, id: &str, limit: Option<u64>) -> Option<Option<u64>> {
        let limit = Duration::from_secs(limit?);
        let live = self.live(id)?;
        Some(
            live.idle_for()
                .map(|idle| limit.saturating_sub(idle).as_secs()),
        )
    }
}

/// The guest's tap counters (received + sent bytes), seen from the VMM's namespace.
fn tap_bytes(vms: &Vms, id: &str) -> Option<u64> {
    let row = vms.find(id).ok()?;
    let vmm = parse_runtime(&row).vmm_process()?.pid;
    let table = std::fs::read_to_string(format!("/proc/{vmm}/net/dev")).ok()?;
    super::stats::interface_bytes(&table, banger_vmm::netns::TAP_NAME).map(|(rx, tx)| rx + tx)
}
