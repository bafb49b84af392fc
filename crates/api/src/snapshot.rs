//! Snapshots: a VM's memory, device state and disks at one moment (`vm snapshot`), from
//! which new VMs are forked (`vm create --from`, `vm run --from`).

use serde::{Deserialize, Serialize};

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    /// The VM it was taken of (by name at the time; that VM may be gone).
    pub source_vm: String,
    pub image: String,
    pub image_id: String,
    /// `qemu` or `firecracker`: forks run on the same VMM.
    pub vmm: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// Bytes its files take on disk (memory state and disk copies).
    pub size_bytes: u64,
    /// The VMs forked from it that still exist (it cannot be deleted while they do).
    #[serde(default)]
    pub forks: Vec<String>,
    pub created_at: String,
    /// How long the source VM was paused to take it.
    #[serde(default)]
    pub paused_ms: u64,
    /// A ready-snapshot banger made of its image for warm starts (deleted with the image).
    #[serde(default)]
    pub warm: bool,
}

/// `snapshot.list`'s result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotList {
    pub snapshots: Vec<Snapshot>,
}

/// A snapshot by name or id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRef {
    pub snapshot: String,
}

/// `snapshot.delete`'s result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotDeleted {
    pub name: String,
    /// Bytes freed on disk.
    pub freed_bytes: u64,
}
