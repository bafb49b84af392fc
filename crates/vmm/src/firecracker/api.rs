//! The configuration banger sends to Firecracker, as the request bodies of its API
//! (v1.16.1's `firecracker.yaml`): typed here, checked against the published schema in
//! the tests.
//!
//! # Invariants
//! - [`requests`] is a pure function of the [`VmConfig`], the run directory's layout and
//!   the TAP name: what `vm show` prints is what a launch sends.
//! - Drives are `vda`, `vdb`, … in [`VmConfig::disks`] order; none is the root device
//!   (the agent's initramfs mounts them), so the guest sees them as `/dev/vda`, … in the
//!   same order.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{NetConfig, VmConfig};
use crate::files::RunFiles;

/// What the driver appends to the caller's command line: the serial console, reboot
/// through the keyboard controller (Firecracker exits on it), an immediate reboot on
/// panic (so a panicking guest ends the VMM), no PCI probing (the devices are MMIO).
pub(crate) const CMDLINE_SUFFIX: &str = "console=ttyS0 reboot=k panic=-1 pci=off";
/// The guest's vsock context id (the host is 2).
pub(crate) const GUEST_CID: u32 = 3;
/// The guest's MAC: QEMU's user-networking default, so both drivers look alike.
pub(crate) const GUEST_MAC: &str = "52:54:00:12:34:56";
/// The guest's network interface id.
pub(crate) const IFACE_ID: &str = "eth0";

/// `PUT /machine-config`.
#[derive(Debug, Serialize)]
pub(crate) struct MachineConfiguration {
    pub(crate) vcpu_count: u32,
    pub(crate) mem_size_mib: u64,
}

/// `PUT /boot-source`.
#[derive(Debug, Serialize)]
pub(crate) struct BootSource {
    pub(crate) kernel_image_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) initrd_path: Option<String>,
    pub(crate) boot_args: String,
}

/// `PUT /serial`: the console into a file instead of Firecracker's stdout (its log).
#[derive(Debug, Serialize)]
pub(crate) struct SerialDevice {
    pub(crate) serial_out_path: String,
}

/// `PUT /drives/{drive_id}`.
#[derive(Debug, Serialize)]
pub(crate) struct Drive {
    pub(crate) drive_id: String,
    pub(crate) path_on_host: String,
    pub(crate) is_root_device: bool,
    pub(crate) is_read_only: bool,
}

/// `PUT /vsock`.
#[derive(Debug, Serialize)]
pub(crate) struct Vsock {
    pub(crate) guest_cid: u32,
    pub(crate) uds_path: String,
}

/// `PUT /network-interfaces/{iface_id}`.
#[derive(Debug, Serialize)]
pub(crate) struct NetworkInterface {
    pub(crate) iface_id: String,
    pub(crate) host_dev_name: String,
    pub(crate) guest_mac: String,
}

/// `PUT /actions`.
#[derive(Debug, Serialize)]
pub(crate) struct InstanceActionInfo {
    pub(crate) action_type: &'static str,
}

/// `PATCH /vm`.
#[derive(Debug, Serialize)]
pub(crate) struct Vm {
    pub(crate) state: VmState,
}

/// The states `PATCH /vm` sets.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) enum VmState {
    Paused,
    Resumed,
}

/// `PUT /snapshot/create`.
#[derive(Debug, Serialize)]
pub(crate) struct SnapshotCreateParams {
    pub(crate) mem_file_path: String,
    pub(crate) snapshot_path: String,
    pub(crate) snapshot_type: SnapshotType,
}

/// Full snapshots only: a diff needs the previous snapshot's memory file and dirty-page
/// tracking from boot.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) enum SnapshotType {
    Full,
}

/// `PUT /snapshot/load`.
#[derive(Debug, Serialize)]
pub(crate) struct SnapshotLoadParams {
    pub(crate) mem_backend: MemoryBackend,
    pub(crate) snapshot_path: String,
    pub(crate) resume_vm: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) network_overrides: Vec<NetworkOverride>,
    pub(crate) vsock_override: VsockOverride,
}

/// Where the guest memory comes from on load.
#[derive(Debug, Serialize)]
pub(crate) struct MemoryBackend {
    pub(crate) backend_type: MemoryBackendType,
    pub(crate) backend_path: String,
}

/// A memory file (mapped privately: the file is never written, forks share its pages).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) enum MemoryBackendType {
    File,
}

/// The TAP a restored NIC uses instead of the saved one.
#[derive(Debug, Serialize)]
pub(crate) struct NetworkOverride {
    pub(crate) iface_id: String,
    pub(crate) host_dev_name: String,
}

/// The vsock Unix socket a restored VM uses instead of the saved one.
#[derive(Debug, Serialize)]
pub(crate) struct VsockOverride {
    pub(crate) uds_path: String,
}

/// The names of a saved state's files in the directory [`crate::Vmm::save_state`] fills.
pub(crate) const STATE_FILE: &str = "vmstate";
/// See [`STATE_FILE`].
pub(crate) const MEMORY_FILE: &str = "memory";

/// One API call: method, path, body, and the schema definition the body must match.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    pub(crate) method: &'static str,
    pub(crate) path: String,
    pub(crate) body: serde_json::Value,
    /// The name under `definitions:` in `firecracker.yaml`.
    pub(crate) schema: &'static str,
}

fn put(path: impl Into<String>, schema: &'static str, body: impl Serialize) -> Request {
    call("PUT", path, schema, body)
}

fn call(
    method: &'static str,
    path: impl Into<String>,
    schema: &'static str,
    body: impl Serialize,
) -> Request {
    Request {
        method,
        path: path.into(),
        // Serializing these plain structs of strings and integers cannot fail.
        body: serde_json::to_value(body).unwrap_or(serde_json::Value::Null),
        schema,
    }
}

/// The full kernel command line: the caller's part, then [`CMDLINE_SUFFIX`].
pub(crate) fn boot_args(cfg: &VmConfig) -> String {
    let caller = cfg.cmdline.trim();
    if caller.is_empty() {
        CMDLINE_SUFFIX.to_string()
    } else {
        format!("{caller} {CMDLINE_SUFFIX}")
    }
}

/// `vda`, `vdb`, … (`i` < 26, as [`VmConfig::validate`] ensures).
pub(crate) fn drive_id(i: usize) -> String {
    let letter = u8::try_from(i % 26).map_or('a', |n| char::from(b'a' + n));
    format!("vd{letter}")
}

/// The action starting the guest.
pub(crate) fn instance_start() -> Request {
    action("InstanceStart")
}

/// The graceful stop: Ctrl+Alt+Del on the emulated keyboard.
pub(crate) fn ctrl_alt_del() -> Request {
    action("SendCtrlAltDel")
}

/// `PATCH /vm`: pause or resume the vCPUs.
pub(crate) fn set_state(state: VmState) -> Request {
    call("PATCH", "/vm", "Vm", Vm { state })
}

/// `PUT /snapshot/create` of a paused VM: device state to `state`, memory to `memory`
/// (paths as Firecracker sees them).
pub(crate) fn snapshot_create(state: &Path, memory: &Path) -> Request {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    put(
        "/snapshot/create",
        "SnapshotCreateParams",
        SnapshotCreateParams {
            mem_file_path: s(memory),
            snapshot_path: s(state),
            snapshot_type: SnapshotType::Full,
        },
    )
}

/// Every call a launch from a saved state makes, in order: the serial console (the only
/// configuration Firecracker takes before a load), then the load, which resumes the
/// guest with this VM's vsock socket and TAP. Drives are not named: the saved state
/// holds their paths, which [`GuestPaths`] keeps the same for every VM.
pub(crate) fn restore_requests(
    cfg: &VmConfig,
    paths: &GuestPaths,
    tap: Option<&str>,
) -> Vec<Request> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (state, memory) = paths.saved.clone().unwrap_or_default();
    let network_overrides = match (&cfg.net, tap) {
        (NetConfig::User { .. }, Some(tap)) => vec![NetworkOverride {
            iface_id: IFACE_ID.into(),
            host_dev_name: tap.into(),
        }],
        _ => Vec::new(),
    };
    vec![
        put(
            "/serial",
            "SerialDevice",
            SerialDevice {
                serial_out_path: s(&paths.console),
            },
        ),
        put(
            "/snapshot/load",
            "SnapshotLoadParams",
            SnapshotLoadParams {
                mem_backend: MemoryBackend {
                    backend_type: MemoryBackendType::File,
                    backend_path: s(&memory),
                },
                snapshot_path: s(&state),
                resume_vm: true,
                network_overrides,
                vsock_override: VsockOverride {
                    uds_path: s(&paths.vsock_uds),
                },
            },
        ),
    ]
}

fn action(action_type: &'static str) -> Request {
    put(
        "/actions",
        "InstanceActionInfo",
        InstanceActionInfo { action_type },
    )
}

/// The paths of a VM's files as Firecracker sees them: the host's for a plain launch,
/// the jail's (relative to its root) for a jailed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestPaths {
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: Option<PathBuf>,
    /// One per [`VmConfig::disks`], in order.
    pub(crate) drives: Vec<PathBuf>,
    pub(crate) console: PathBuf,
    pub(crate) vsock_uds: PathBuf,
    /// The saved state and memory files to load ([`VmConfig::restore`]).
    pub(crate) saved: Option<(PathBuf, PathBuf)>,
}

impl GuestPaths {
    /// The host's paths (no jail), except the drives: `fc-drives/vda`, … relative to
    /// the run directory (Firecracker's working directory), symlinks to the disks. A
    /// saved state records the drives' paths and a load reopens them (the load request
    /// cannot re-point them): relative names make a VM restored in another run
    /// directory open its own disks, as the jail's `/vda` does.
    pub(crate) fn direct(cfg: &VmConfig, files: &RunFiles) -> GuestPaths {
        GuestPaths {
            kernel: absolute(&cfg.kernel),
            initrd: cfg.initrd.as_deref().map(absolute),
            drives: (0..cfg.disks.len())
                .map(|i| Path::new(DRIVE_LINKS).join(drive_id(i)))
                .collect(),
            console: absolute(&files.console_log),
            vsock_uds: absolute(&files.vsock_uds),
            saved: cfg.restore.as_deref().map(|d| saved_files(&absolute(d))),
        }
    }
}

/// `p` from the caller's working directory (Firecracker's is the run directory).
pub(crate) fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The run directory's subdirectory holding an unjailed VM's drive symlinks.
pub(crate) const DRIVE_LINKS: &str = "fc-drives";

/// The state and memory files of a saved-state directory.
pub(crate) fn saved_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(STATE_FILE), dir.join(MEMORY_FILE))
}

/// Every configuration call for `cfg`, in order, before [`instance_start`]. `tap` is the
/// TAP device the guest's NIC uses (only with [`NetConfig::User`]).
pub(crate) fn requests(cfg: &VmConfig, paths: &GuestPaths, tap: Option<&str>) -> Vec<Request> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let mut v = vec![
        put(
            "/machine-config",
            "MachineConfiguration",
            MachineConfiguration {
                vcpu_count: cfg.cpus,
                mem_size_mib: cfg.memory_mib,
            },
        ),
        put(
            "/boot-source",
            "BootSource",
            BootSource {
                kernel_image_path: s(&paths.kernel),
                initrd_path: paths.initrd.as_deref().map(s),
                boot_args: boot_args(cfg),
            },
        ),
        put(
            "/serial",
            "SerialDevice",
            SerialDevice {
                serial_out_path: s(&paths.console),
            },
        ),
    ];
    for (i, (d, path)) in cfg.disks.iter().zip(&paths.drives).enumerate() {
        let id = drive_id(i);
        v.push(put(
            format!("/drives/{id}"),
            "Drive",
            Drive {
                drive_id: id,
                path_on_host: s(path),
                is_root_device: false,
                is_read_only: d.read_only,
            },
        ));
    }
    v.push(put(
        "/vsock",
        "Vsock",
        Vsock {
            guest_cid: GUEST_CID,
            uds_path: s(&paths.vsock_uds),
        },
    ));
    if let (NetConfig::User { .. }, Some(tap)) = (&cfg.net, tap) {
        v.push(put(
            format!("/network-interfaces/{IFACE_ID}"),
            "NetworkInterface",
            NetworkInterface {
                iface_id: IFACE_ID.into(),
                host_dev_name: tap.into(),
                guest_mac: GUEST_MAC.into(),
            },
        ));
    }
    v
}
