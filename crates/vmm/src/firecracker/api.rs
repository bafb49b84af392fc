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
    Request {
        method: "PUT",
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
}

impl GuestPaths {
    /// The host's paths (no jail).
    pub(crate) fn direct(cfg: &VmConfig, files: &RunFiles) -> GuestPaths {
        GuestPaths {
            kernel: cfg.kernel.clone(),
            initrd: cfg.initrd.clone(),
            drives: cfg.disks.iter().map(|d| d.path.clone()).collect(),
            console: files.console_log.clone(),
            vsock_uds: files.vsock_uds.clone(),
        }
    }
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
