//! Which VMM, accelerator and agent channel this host can use, and why: shared by the
//! daemon (to launch) and `banger doctor` (to explain).
//!
//! # Invariants
//! - KVM is used only after a probe guest proved it runs guest code at hardware speed
//!   under the driver's exact machine and CPU model (see [`probe`]), or when the caller
//!   forces it. An openable `/dev/kvm` proves nothing.
//! - [`detect`] never fails: whatever is missing is said in [`Detection::reason`] (a
//!   sentence for `doctor` and `vm show`) and the result falls back to software emulation.
//! - The probe result and the TSC rate are cached per host boot and QEMU build
//!   ([`DetectOptions::cache`]), so every process of one boot sees the same detection.

mod cache;
mod probe;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Accel, ChannelKind};
use crate::firecracker::{FIRECRACKER_ENV, FIRECRACKER_PROGRAM};
use crate::host;

/// The QEMU program detection looks for.
pub const QEMU_PROGRAM: &str = "qemu-system-x86_64";
/// The vsock helper's program name.
pub const VSOCK_PROGRAM: &str = "vhost-device-vsock";
/// The environment variable naming the vsock helper explicitly.
pub const VSOCK_ENV: &str = "BANGER_VHOST_VSOCK";
/// The default deadline of the KVM probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Which accelerator the caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccelChoice {
    /// KVM if the probe passes, else TCG.
    #[default]
    Auto,
    /// KVM without probing, when `/dev/kvm` opens (for hosts where the probe is wrong).
    Kvm,
    /// Software emulation, no probe.
    Tcg,
}

/// Inputs of [`detect`].
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// Where to cache the probe result (a small JSON file); `None` probes every time.
    pub cache: Option<PathBuf>,
    /// The QEMU program; default `qemu-system-x86_64` on `$PATH`.
    pub qemu: Option<PathBuf>,
    /// The vsock helper; default `$BANGER_VHOST_VSOCK`, then `vhost-device-vsock` on
    /// `$PATH`, then in `~/.cargo/bin`.
    pub vsock_backend: Option<PathBuf>,
    /// Accelerator preference.
    pub accel: AccelChoice,
    /// Deadline of the probe guest.
    pub probe_timeout: Duration,
    /// The Firecracker binary (from `config.toml`); default `$BANGER_FIRECRACKER`, then
    /// `firecracker` on `$PATH`.
    pub firecracker: Option<PathBuf>,
}

impl Default for DetectOptions {
    fn default() -> DetectOptions {
        DetectOptions {
            cache: None,
            qemu: None,
            vsock_backend: None,
            accel: AccelChoice::Auto,
            probe_timeout: PROBE_TIMEOUT,
            firecracker: None,
        }
    }
}

/// What detection found out about `/dev/kvm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum KvmStatus {
    /// `/dev/kvm` does not exist.
    Missing,
    /// `/dev/kvm` exists but does not open read-write.
    NoAccess {
        /// The open error.
        error: String,
        /// Whether it was `EACCES` (the fix is the `kvm` group).
        permission_denied: bool,
    },
    /// Not probed: software emulation was asked for, or there is no QEMU to probe with.
    NotProbed,
    /// The caller forced KVM; `/dev/kvm` opens, no probe ran.
    Forced,
    /// A probe guest did not run to its end under KVM.
    ProbeFailed {
        /// What happened (`timed out after 3 s`, `QEMU exit status: 1: …`).
        detail: String,
    },
    /// A probe guest ran to its end under KVM.
    Works {
        /// How long the probe took, QEMU's start included.
        probe_ms: u64,
    },
}

/// The outcome of [`detect`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detection {
    /// The accelerator VMs get.
    pub accel: Accel,
    /// One sentence on why, for `banger doctor` and `vm show`.
    pub reason: String,
    /// The QEMU program, if found.
    pub qemu: Option<PathBuf>,
    /// Its version (`7.2.22`).
    pub qemu_version: Option<String>,
    /// The vsock helper, if found.
    pub vsock_backend: Option<PathBuf>,
    /// The agent channel VMs get: vsock with a helper, serial without.
    pub channel: ChannelKind,
    /// One sentence on why that channel.
    pub channel_reason: String,
    /// What is known about KVM.
    pub kvm: KvmStatus,
    /// The Firecracker binary, if found.
    #[serde(default)]
    pub firecracker: Option<FirecrackerInfo>,
    /// One sentence on Firecracker: where it is, its version, whether it can be used
    /// and why (for `banger doctor`).
    #[serde(default)]
    pub firecracker_reason: String,
}

/// A Firecracker binary detection found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerInfo {
    /// Its path.
    pub path: PathBuf,
    /// Its version from `firecracker --version` (`1.16.1`), when it answered.
    pub version: Option<String>,
    /// Where it was found: `"given"`, `"$BANGER_FIRECRACKER"` or `"PATH"`.
    pub origin: String,
}

impl Detection {
    /// Whether Firecracker can run guests here: it is installed and the KVM probe proved
    /// that KVM runs guest code (`auto` picks it only then). A forced KVM
    /// ([`KvmStatus::Forced`]) lets an explicit `firecracker` choice through, not `auto`.
    pub fn firecracker_usable(&self) -> bool {
        self.firecracker.is_some() && matches!(self.kvm, KvmStatus::Works { .. })
    }
}

/// Finds QEMU, the vsock helper and a working accelerator. Blocks while the probe runs
/// (up to [`DetectOptions::probe_timeout`] plus QEMU's start) unless cached.
pub fn detect(opts: &DetectOptions) -> Detection {
    let qemu = match &opts.qemu {
        Some(p) => host::is_executable(p).then(|| p.clone()),
        None => host::find_program(QEMU_PROGRAM, &[PathBuf::from("/usr/bin")]),
    };
    let qemu_version = qemu.as_deref().and_then(host::qemu_version);
    let (vsock_backend, channel_reason) = find_vsock_backend(opts);
    let channel = if vsock_backend.is_some() {
        ChannelKind::Vsock
    } else {
        ChannelKind::Serial
    };

    let key = host::boot_id().map(|boot_id| cache::Key {
        boot_id,
        qemu: qemu.clone(),
        qemu_version: qemu_version.clone(),
        probe_timeout_ms: u64::try_from(opts.probe_timeout.as_millis()).unwrap_or(u64::MAX),
    });
    let cached = match (&opts.cache, &key) {
        (Some(path), Some(key)) => cache::load(path, key),
        _ => cache::Facts::default(),
    };
    let mut facts = cached.clone();
    let kvm = kvm_status(opts, qemu.as_deref(), &mut facts);
    let accel = match kvm {
        KvmStatus::Works { .. } | KvmStatus::Forced => Accel::Kvm,
        _ => {
            if facts.tsc_khz.is_none() {
                facts.tsc_khz = host::tsc_khz();
            }
            Accel::Tcg {
                tsc_khz: facts.tsc_khz,
            }
        }
    };
    if facts != cached
        && let (Some(path), Some(key)) = (&opts.cache, &key)
    {
        cache::store(path, key, &facts);
    }
    let reason = reason(opts.accel, &kvm, qemu.is_some(), opts.qemu.as_deref());
    let (firecracker, firecracker_reason) = find_firecracker(opts, &kvm);
    Detection {
        accel,
        reason,
        qemu,
        qemu_version,
        vsock_backend,
        channel,
        channel_reason,
        kvm,
        firecracker,
        firecracker_reason,
    }
}

/// Firecracker from [`DetectOptions::firecracker`], `$BANGER_FIRECRACKER` or `PATH`, and
/// a sentence on whether it can be used with this KVM.
fn find_firecracker(opts: &DetectOptions, kvm: &KvmStatus) -> (Option<FirecrackerInfo>, String) {
    let explicit = opts
        .firecracker
        .clone()
        .map(|p| (p, "given".to_string()))
        .or_else(|| {
            std::env::var_os(FIRECRACKER_ENV)
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), format!("${FIRECRACKER_ENV}")))
        });
    let found = match explicit {
        Some((p, origin)) if host::is_executable(&p) => Some((p, origin)),
        Some((p, origin)) => {
            return (
                None,
                format!(
                    "Firecracker {} ({origin}) is not an executable file: fix the path",
                    p.display()
                ),
            );
        }
        None => host::find_program(FIRECRACKER_PROGRAM, &[]).map(|p| (p, "PATH".to_string())),
    };
    let Some((path, origin)) = found else {
        return (
            None,
            format!(
                "{FIRECRACKER_PROGRAM} was found neither on PATH nor in ${FIRECRACKER_ENV}: VMs use QEMU (install Firecracker to use it on a KVM host)"
            ),
        );
    };
    let version = host::firecracker_version(&path);
    let info = FirecrackerInfo {
        path,
        version,
        origin,
    };
    let reason = firecracker_reason(&info, kvm);
    (Some(info), reason)
}

fn firecracker_reason(info: &FirecrackerInfo, kvm: &KvmStatus) -> String {
    let what = format!(
        "Firecracker {} at {} ({})",
        info.version.as_deref().unwrap_or("(version unknown)"),
        info.path.display(),
        info.origin
    );
    match kvm {
        KvmStatus::Works { probe_ms } => {
            format!("{what}: usable, a probe guest ran under KVM in {probe_ms} ms")
        }
        KvmStatus::Forced => format!(
            "{what}: KVM is forced, not probed: `auto` keeps QEMU, an explicit `firecracker`              choice is allowed"
        ),
        other => format!("{what}: not usable, {}", kvm_cannot_run_guests(other)),
    }
}

/// Why KVM cannot run guests, for messages: `KVM cannot run guests here (…)`.
pub(crate) fn kvm_cannot_run_guests(kvm: &KvmStatus) -> String {
    let why = match kvm {
        KvmStatus::Missing => "/dev/kvm does not exist".to_string(),
        KvmStatus::NoAccess { error, .. } => format!("/dev/kvm does not open read-write: {error}"),
        KvmStatus::ProbeFailed { detail } => {
            format!("/dev/kvm is present but a probe guest did not boot under it: {detail}")
        }
        KvmStatus::NotProbed => "KVM was not probed (software emulation was configured, or                                  QEMU, which runs the probe, is missing)"
            .to_string(),
        KvmStatus::Forced | KvmStatus::Works { .. } => "KVM works".to_string(),
    };
    format!("KVM cannot run guests here ({why})")
}

fn find_vsock_backend(opts: &DetectOptions) -> (Option<PathBuf>, String) {
    let explicit = opts
        .vsock_backend
        .clone()
        .map(|p| (p, "given"))
        .or_else(|| {
            std::env::var_os(VSOCK_ENV)
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), VSOCK_ENV))
        });
    if let Some((p, origin)) = explicit {
        if host::is_executable(&p) {
            let why = format!("hybrid vsock through {} ({origin})", p.display());
            return (Some(p), why);
        }
        let why = format!(
            "the vsock helper {} ({origin}) is not an executable file: the agent channel \
             uses virtio-serial (fix the path to get vsock)",
            p.display()
        );
        return (None, why);
    }
    let extra: Vec<PathBuf> = host::cargo_bin().into_iter().collect();
    match host::find_program(VSOCK_PROGRAM, &extra) {
        Some(p) => {
            let why = format!("hybrid vsock through {}", p.display());
            (Some(p), why)
        }
        None => (
            None,
            format!(
                "{VSOCK_PROGRAM} was found neither on PATH nor in ~/.cargo/bin (nor set in \
                 ${VSOCK_ENV}): the agent channel uses virtio-serial; install it with \
                 `cargo install --locked {VSOCK_PROGRAM}` to get vsock"
            ),
        ),
    }
}

/// KVM's status; a probe result is taken from and recorded in `facts`.
fn kvm_status(opts: &DetectOptions, qemu: Option<&Path>, facts: &mut cache::Facts) -> KvmStatus {
    if opts.accel == AccelChoice::Tcg {
        return KvmStatus::NotProbed;
    }
    if let Some(denied) = open_kvm() {
        return denied;
    }
    if opts.accel == AccelChoice::Kvm {
        return KvmStatus::Forced;
    }
    let Some(qemu) = qemu else {
        return KvmStatus::NotProbed;
    };
    if let Some(known) = &facts.kvm {
        return known.clone();
    }
    let started = Instant::now();
    let status = match probe::run(qemu, opts.probe_timeout) {
        Ok(t) => KvmStatus::Works {
            probe_ms: u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
        },
        Err(detail) => KvmStatus::ProbeFailed { detail },
    };
    tracing::debug!(?status, elapsed = ?started.elapsed(), "KVM probe");
    facts.kvm = Some(status.clone());
    status
}

/// `None` when `/dev/kvm` opens read-write, else why not.
fn open_kvm() -> Option<KvmStatus> {
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return Some(KvmStatus::Missing);
    }
    match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => None,
        Err(e) => Some(KvmStatus::NoAccess {
            permission_denied: e.kind() == std::io::ErrorKind::PermissionDenied,
            error: e.to_string(),
        }),
    }
}

const TCG: &str = "using software emulation (TCG)";

fn reason(choice: AccelChoice, kvm: &KvmStatus, have_qemu: bool, given: Option<&Path>) -> String {
    match kvm {
        KvmStatus::Works { probe_ms } => {
            format!("KVM: a probe guest ran under /dev/kvm in {probe_ms} ms")
        }
        KvmStatus::Forced => "KVM, as configured (not probed); /dev/kvm opens read-write".into(),
        KvmStatus::Missing => format!(
            "/dev/kvm does not exist (no hardware virtualization, or the kvm module is not \
             loaded): {TCG}"
        ),
        KvmStatus::NoAccess {
            permission_denied: true,
            ..
        } => format!(
            "/dev/kvm: permission denied (add yourself to the 'kvm' group and log in \
             again): {TCG}"
        ),
        KvmStatus::NoAccess { error, .. } => {
            format!("/dev/kvm does not open read-write ({error}): {TCG}")
        }
        KvmStatus::ProbeFailed { detail } => format!(
            "/dev/kvm is present but a probe guest did not boot under KVM ({detail}): {TCG}"
        ),
        KvmStatus::NotProbed if choice == AccelChoice::Tcg => {
            "software emulation (TCG), as configured".into()
        }
        KvmStatus::NotProbed if !have_qemu => match given {
            Some(p) => format!(
                "QEMU {} is not an executable file: fix the path; KVM was not probed",
                p.display()
            ),
            None => format!(
                "{QEMU_PROGRAM} was not found on PATH: install the qemu-system-x86 package; \
                 KVM was not probed"
            ),
        },
        KvmStatus::NotProbed => format!("KVM was not probed: {TCG}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_cause_and_the_fix() {
        let r = |kvm: KvmStatus| reason(AccelChoice::Auto, &kvm, true, None);
        assert!(r(KvmStatus::Missing).ends_with(TCG));
        assert!(
            r(KvmStatus::NoAccess {
                error: "Permission denied (os error 13)".into(),
                permission_denied: true
            })
            .contains("'kvm' group")
        );
        let failed = r(KvmStatus::ProbeFailed {
            detail: "timed out after 3 s".into(),
        });
        assert_eq!(
            failed,
            "/dev/kvm is present but a probe guest did not boot under KVM (timed out after \
             3 s): using software emulation (TCG)"
        );
        assert!(reason(AccelChoice::Auto, &KvmStatus::NotProbed, false, None).contains("install"));
        assert!(r(KvmStatus::Works { probe_ms: 12 }).starts_with("KVM"));
    }

    #[test]
    fn forcing_tcg_skips_the_probe() {
        let d = detect(&DetectOptions {
            accel: AccelChoice::Tcg,
            ..DetectOptions::default()
        });
        assert_eq!(d.kvm, KvmStatus::NotProbed);
        assert!(matches!(d.accel, Accel::Tcg { tsc_khz: Some(_) }));
        assert_eq!(d.reason, "software emulation (TCG), as configured");
    }

    #[test]
    fn explicit_programs_are_checked() {
        let d = detect(&DetectOptions {
            accel: AccelChoice::Tcg,
            qemu: Some("/nonexistent/qemu".into()),
            vsock_backend: Some("/nonexistent/vhost".into()),
            ..DetectOptions::default()
        });
        assert_eq!(d.qemu, None);
        assert_eq!(d.vsock_backend, None);
        assert_eq!(d.channel, ChannelKind::Serial);
        assert!(
            d.channel_reason.contains("/nonexistent/vhost"),
            "{}",
            d.channel_reason
        );
    }
}
