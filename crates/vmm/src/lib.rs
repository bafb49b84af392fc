//! banger-vmm: virtual machine monitors behind one trait.
//!
//! [`detect()`] finds out what this host can run (QEMU, a KVM that really boots guests or
//! software emulation, the vsock helper, Firecracker) and [`driver`] (QEMU) or [`select`]
//! (for a [`VmmChoice`]: QEMU or [`Firecracker`]) turns that into a [`Vmm`]. A
//! [`Vmm`] launches a [`VmConfig`] as processes that outlive the caller, described by
//! [`ProcessRecord`]s the caller stores. Nothing here knows about images, the store or
//! the daemon.
//!
//! ```no_run
//! # fn main() -> Result<(), banger_vmm::VmmError> {
//! use banger_vmm::{detect, driver, DetectOptions};
//! let detection = detect(&DetectOptions::default());
//! println!("{}", detection.reason);
//! let vmm = driver(&detection)?;
//! # let cfg: banger_vmm::VmConfig = todo!();
//! // Bind `vmm.channel_endpoint(&cfg)` first if it is a `VsockListen`.
//! let launched = vmm.launch(&cfg)?;
//! # Ok(()) }
//! ```
//!
//! # Invariants
//! - The daemon never names a driver: [`driver`] picks it from a [`Detection`].
//! - A launch either returns with every process running, or fails having started
//!   nothing that still runs. Configuration errors and taken host ports are reported
//!   before any process starts.
//! - Every file of a VM is under its run directory, at the names of [`RunFiles`].
//!
//! # Errors
//! Every message says what failed, with the value at fault, and what to do next.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

mod capabilities;
mod config;
mod detect;
mod files;
pub mod firecracker;
mod host;
mod launch;
// TODO: netns/ is being reworked; its module docs link private steps (`wrap`,
// `attach`). Drop this allow once they are plain code spans or public.
#[allow(rustdoc::private_intra_doc_links)]
pub mod netns;
mod ports;
mod process;
pub mod qemu;
pub mod qmp;
mod select;
mod sparse;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use capabilities::{Capabilities, Support, VsockKind};
pub use config::{
    Accel, ChannelKind, ConfigError, DiskConfig, DiskFormat, MAX_CMDLINE, MAX_CPUS, MAX_DISKS,
    MIN_MEMORY_MIB, NetConfig, PortForward, Proto, VmConfig,
};
pub use detect::{
    AccelChoice, DetectOptions, Detection, FirecrackerInfo, KvmStatus, PROBE_TIMEOUT, QEMU_PROGRAM,
    VSOCK_ENV, VSOCK_PROGRAM, detect,
};
pub use files::RunFiles;
pub use firecracker::{
    ApiError, FIRECRACKER_ENV, FIRECRACKER_PROGRAM, Firecracker, JailError, JailerConfig,
};
pub use launch::LaunchError;
pub use netns::{NetnsError, ROLE_DNS, ROLE_NET};
pub use ports::PortError;
pub use process::{ProcessRecord, ROLE_VMM, ROLE_VSOCK};
pub use qemu::Qemu;
pub use qmp::QmpError;
pub use select::{SelectError, Selected, VmmChoice, select, select_with_jailer};
pub use sparse::copy_sparse;

/// Where the host side of the agent channel is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEndpoint {
    /// The caller binds and listens on this Unix socket **before** launching; the guest's
    /// connection to host port [`banger_guest_proto::AGENT_VSOCK_PORT`] arrives there.
    VsockListen(PathBuf),
    /// The VMM listens on this Unix socket; the caller connects after launching.
    SerialConnect(PathBuf),
}

/// What a launch started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    /// The processes, helper(s) first, the VMM ([`ROLE_VMM`]) last. Also written to
    /// [`RunFiles::pids_json`].
    pub processes: Vec<ProcessRecord>,
    /// The serial console log (the guest kernel's and init's output).
    pub console_log: PathBuf,
    /// The VMM's stdout and stderr.
    pub vmm_stderr: PathBuf,
}

/// One virtual machine monitor.
pub trait Vmm: Send + Sync {
    /// The driver's name (`"qemu"`).
    fn name(&self) -> &'static str;

    /// What this driver offers beyond booting (pause, snapshots, shared folders,
    /// hot-plug, the vsock kind): ask before offering a feature.
    fn capabilities(&self) -> Capabilities;

    /// Where the agent channel's host side will be for `cfg`: a pure function of its run
    /// directory and channel, callable before [`Vmm::launch`].
    fn channel_endpoint(&self, cfg: &VmConfig) -> ChannelEndpoint;

    /// Starts the VM's processes and returns once they run (not when the guest is up).
    /// Blocks for up to a few seconds: call it from a blocking context.
    fn launch(&self, cfg: &VmConfig) -> Result<Launched, VmmError>;

    /// Asks the VMM to power the guest off (ACPI power button); returns once asked. The
    /// guest may ignore it: callers follow up with a deadline and a kill.
    fn power_down(&self, run_dir: &Path) -> Result<(), VmmError>;

    /// Stops the guest's vCPUs; its memory and devices stay as they are. Pausing a paused
    /// guest is not an error.
    fn pause(&self, run_dir: &Path) -> Result<(), VmmError> {
        let _ = run_dir;
        Err(VmmError::NotSupported {
            vmm: self.name(),
            what: "pause",
        })
    }

    /// Lets a paused guest run again. Resuming a running guest is not an error.
    fn resume(&self, run_dir: &Path) -> Result<(), VmmError> {
        let _ = run_dir;
        Err(VmmError::NotSupported {
            vmm: self.name(),
            what: "resume",
        })
    }

    /// Writes the state of a **paused** guest — its memory and device state, not its
    /// disks — into `dest`, an existing empty directory; the guest stays paused. A
    /// [`VmConfig::restore`] naming `dest` launches a VM that goes on from that state
    /// (with disks holding what the guest's disks held at that moment).
    fn save_state(&self, run_dir: &Path, dest: &Path) -> Result<(), VmmError> {
        let _ = (run_dir, dest);
        Err(VmmError::NotSupported {
            vmm: self.name(),
            what: "snapshots",
        })
    }

    /// Tells the driver the caller bound a new listener at the
    /// [`ChannelEndpoint::VsockListen`] path of a running VM (e.g. a restarted daemon
    /// that re-adopted it). A jailed Firecracker reaches that socket through a hard link
    /// inside its jail, which still names the old one: this relinks it. Nothing to do
    /// for the other drivers.
    fn listener_rebound(&self, run_dir: &Path) -> Result<(), VmmError> {
        let _ = run_dir;
        Ok(())
    }

    /// Removes the sockets the driver's processes leave in `run_dir` (Firecracker leaves
    /// its API and vsock sockets). Call it only once every process of the VM is gone: a
    /// launcher that lived through the VM's end already did it, a daemon that re-adopted
    /// the VM has to. Never touches the caller's listen socket; missing files are fine.
    fn cleanup(&self, run_dir: &Path) -> Result<(), VmmError> {
        let files = RunFiles::new(run_dir);
        for s in files.driver_sockets() {
            launch::remove_stale(s)?;
        }
        Ok(())
    }
}

/// Any failure of this crate.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The configuration cannot be launched.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A published host port is taken.
    #[error(transparent)]
    Port(#[from] PortError),
    /// Starting the processes failed.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// Talking to a running VMM failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// Saving a QEMU guest's state failed.
    #[error(transparent)]
    Save(#[from] qemu::SaveError),
    /// Firecracker's API refused a request or did not answer.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The Firecracker jail could not be prepared.
    #[error(transparent)]
    Jail(#[from] JailError),
    /// Rootless networking (namespace, TAP, pasta) could not be set up.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The VMM asked for cannot be used on this host.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// The driver cannot do this (see [`Vmm::capabilities`]).
    #[error("{vmm} cannot do {what} here")]
    NotSupported {
        /// The driver.
        vmm: &'static str,
        /// The feature.
        what: &'static str,
    },
    /// No VMM can run on this host.
    #[error("no VMM is available: {reason}")]
    NoVmm {
        /// Why (from the detection).
        reason: String,
    },
}

/// The QEMU driver for this host, from a [`detect()`] result. [`select`] picks between
/// QEMU and Firecracker for a [`VmmChoice`].
pub fn driver(detection: &Detection) -> Result<Arc<dyn Vmm>, VmmError> {
    match &detection.qemu {
        Some(qemu) => Ok(Arc::new(Qemu::new(
            qemu.clone(),
            detection.vsock_backend.clone(),
        ))),
        None => Err(VmmError::NoVmm {
            reason: format!("{QEMU_PROGRAM} was not found: install the qemu-system-x86 package"),
        }),
    }
}
