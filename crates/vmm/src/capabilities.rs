//! What a driver offers beyond booting: asked through [`crate::Vmm::capabilities`] before a
//! feature is offered, and reported by `vm show` and `banger doctor`.
//!
//! Each feature says what is true today: [`Support::Yes`] only when banger drives it with
//! that VMM; [`Support::VmmOnly`] when the VMM can but banger has no code for it yet (the
//! work a feature such as snapshots starts from).

use serde::{Deserialize, Serialize};

/// Whether a feature is available with a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    /// banger implements it with this VMM.
    Yes,
    /// The VMM can do it; banger does not drive it yet.
    VmmOnly,
    /// The VMM cannot.
    No,
}

impl Support {
    /// `yes`, `vmm_only` or `no`.
    pub fn as_str(self) -> &'static str {
        match self {
            Support::Yes => "yes",
            Support::VmmOnly => "vmm_only",
            Support::No => "no",
        }
    }
}

/// How the guest's vsock reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VsockKind {
    /// No vsock device: the agent channel is virtio-serial.
    None,
    /// vhost-user-vsock through `vhost-device-vsock` (QEMU).
    VhostUser,
    /// Firecracker's hybrid vsock: guest ports are Unix sockets on the host.
    Hybrid,
}

impl VsockKind {
    /// `none`, `vhost_user` or `hybrid`.
    pub fn as_str(self) -> &'static str {
        match self {
            VsockKind::None => "none",
            VsockKind::VhostUser => "vhost_user",
            VsockKind::Hybrid => "hybrid",
        }
    }
}

/// What one driver offers on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Pausing and resuming the guest's vCPUs.
    pub pause: Support,
    /// Saving a running guest to files and restoring it.
    pub snapshot: Support,
    /// Host directories shared into the guest (virtio-fs).
    pub shared_folders: Support,
    /// Adding disks or network devices to a running guest.
    pub hot_plug: Support,
    /// The vsock transport (the agent channel and host↔guest ports).
    pub vsock: VsockKind,
}

impl std::fmt::Display for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pause {}, snapshot {}, shared folders {}, hot-plug {}, vsock {}",
            self.pause.as_str(),
            self.snapshot.as_str(),
            self.shared_folders.as_str(),
            self.hot_plug.as_str(),
            self.vsock.as_str()
        )
    }
}

/// QEMU's `microvm` machine: QMP `stop`/`cont` pause it and its migration stream saves
/// it (`qemu/state.rs`; VMs on the serial channel: QEMU 7.2's vhost-user-vsock refuses
/// migration); virtio-fs works through `virtiofsd` (vhost-user-fs on virtio-mmio). Its
/// virtio-mmio devices are fixed at boot: no hot-plug. vsock needs the vhost-user helper.
pub(crate) fn qemu(vsock_helper: bool) -> Capabilities {
    Capabilities {
        pause: Support::Yes,
        snapshot: Support::Yes,
        shared_folders: Support::VmmOnly,
        hot_plug: Support::No,
        vsock: if vsock_helper {
            VsockKind::VhostUser
        } else {
            VsockKind::None
        },
    }
}

/// Firecracker: `PATCH /vm` pauses and resumes, `PUT /snapshot/create` saves a paused
/// guest and `PUT /snapshot/load` restores it (all driven by banger); it has no virtio-fs and no device hot-plug; its vsock is the hybrid Unix-socket kind.
pub(crate) fn firecracker() -> Capabilities {
    Capabilities {
        pause: Support::Yes,
        snapshot: Support::Yes,
        shared_folders: Support::No,
        hot_plug: Support::No,
        vsock: VsockKind::Hybrid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_claimed_that_banger_does_not_drive() {
        for caps in [qemu(true), qemu(false), firecracker()] {
            for s in [caps.shared_folders, caps.hot_plug] {
                assert_ne!(s, Support::Yes, "{caps}");
            }
            // Both drivers pause, resume, save and restore (`qemu/state.rs`, `firecracker/`).
            assert_eq!((caps.pause, caps.snapshot), (Support::Yes, Support::Yes));
        }
        assert_eq!(firecracker().hot_plug, Support::No);
        assert_eq!(qemu(false).vsock, VsockKind::None);
        assert_eq!(qemu(true).vsock, VsockKind::VhostUser);
        assert_eq!(firecracker().shared_folders, Support::No);
    }

    #[test]
    fn the_wire_form_is_snake_case() {
        let json = serde_json::to_value(firecracker()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "pause": "yes",
                "snapshot": "yes",
                "shared_folders": "no",
                "hot_plug": "no",
                "vsock": "hybrid",
            })
        );
        assert_eq!(
            qemu(true).to_string(),
            "pause yes, snapshot yes, shared folders vmm_only, hot-plug no, vsock vhost_user"
        );
    }
}
