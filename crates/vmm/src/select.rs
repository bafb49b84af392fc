//! Choosing the VMM for `--vmm auto|qemu|firecracker`, with a sentence saying why (for
//! `vm show`).
//!
//! # Invariants
//! - `auto` picks Firecracker only when it is installed and the KVM probe proved KVM
//!   ([`Detection::firecracker_usable`]); otherwise QEMU, with the reason.
//! - An explicit `firecracker` on a host where KVM cannot boot guests is an error before
//!   anything is created; so is a missing binary.
//! - [`Selected::accel`] and [`Selected::channel`] are what the VM's config must use with
//!   the chosen driver (Firecracker: KVM and vsock, always).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Accel, ChannelKind};
use crate::detect::{Detection, KvmStatus, kvm_cannot_run_guests};
use crate::firecracker::{FIRECRACKER_ENV, Firecracker};
use crate::{Vmm, VmmError, driver};

/// The VMM the user asks for (`--vmm`, `vmm =` in `config.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmmChoice {
    /// Firecracker when installed and KVM is proven; QEMU otherwise.
    #[default]
    Auto,
    /// QEMU (KVM when proven, else software emulation).
    Qemu,
    /// Firecracker; an error where KVM cannot boot guests.
    Firecracker,
}

impl VmmChoice {
    /// `"auto"`, `"qemu"` or `"firecracker"`.
    pub fn as_str(self) -> &'static str {
        match self {
            VmmChoice::Auto => "auto",
            VmmChoice::Qemu => "qemu",
            VmmChoice::Firecracker => "firecracker",
        }
    }
}

impl std::str::FromStr for VmmChoice {
    type Err = SelectError;
    fn from_str(s: &str) -> Result<VmmChoice, SelectError> {
        match s {
            "auto" => Ok(VmmChoice::Auto),
            "qemu" => Ok(VmmChoice::Qemu),
            "firecracker" => Ok(VmmChoice::Firecracker),
            other => Err(SelectError::UnknownChoice {
                value: other.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for VmmChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a [`VmmChoice`] cannot be honoured. Nothing was created.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// Not one of the choices.
    #[error("unknown VMM {value:?}: use auto, qemu or firecracker")]
    UnknownChoice {
        /// What was given.
        value: String,
    },
    /// `firecracker` was asked for but is not installed.
    #[error(
        "--vmm firecracker: {reason}: install Firecracker or set ${FIRECRACKER_ENV}, or use --vmm qemu"
    )]
    FirecrackerMissing {
        /// Detection's sentence on where it looked.
        reason: String,
    },
    /// `firecracker` was asked for on a host where KVM cannot boot guests.
    #[error(
        "--vmm firecracker cannot be used on this host: {kvm}; Firecracker needs a KVM \
         that boots guests: use --vmm auto or --vmm qemu (QEMU with software emulation)"
    )]
    FirecrackerNeedsKvm {
        /// Why KVM cannot run guests (`KVM cannot run guests here (…)`).
        kvm: String,
    },
}

/// The outcome of [`select`].
#[derive(Clone)]
pub struct Selected {
    /// The driver.
    pub vmm: Arc<dyn Vmm>,
    /// Its name (`"qemu"`, `"firecracker"`), as [`Vmm::name`].
    pub name: &'static str,
    /// One sentence on why, for `vm show`.
    pub reason: String,
    /// The accelerator the VM's config must have.
    pub accel: Accel,
    /// The agent channel the VM's config must have.
    pub channel: ChannelKind,
}

impl std::fmt::Debug for Selected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selected")
            .field("name", &self.name)
            .field("reason", &self.reason)
            .field("accel", &self.accel)
            .field("channel", &self.channel)
            .finish()
    }
}

/// Picks the driver for `choice` on the host `detection` describes.
pub fn select(choice: VmmChoice, detection: &Detection) -> Result<Selected, VmmError> {
    select_with_jailer(choice, detection, None)
}

/// [`select`], with a Firecracker driver that launches through `jailer` when given (and
/// the daemon runs as root: see [`Firecracker::with_jailer`]). QEMU is unaffected.
pub fn select_with_jailer(
    choice: VmmChoice,
    detection: &Detection,
    jailer: Option<&crate::JailerConfig>,
) -> Result<Selected, VmmError> {
    let qemu = |reason: String| -> Result<Selected, VmmError> {
        let vmm = driver(detection)?;
        Ok(Selected {
            name: vmm.name(),
            vmm,
            reason,
            accel: detection.accel,
            channel: detection.channel,
        })
    };
    let firecracker = |fc: &crate::FirecrackerInfo, reason: String| Selected {
        vmm: Arc::new(match jailer {
            Some(j) => Firecracker::new(fc.path.clone()).with_jailer(j.clone()),
            None => Firecracker::new(fc.path.clone()),
        }),
        name: "firecracker",
        reason,
        accel: Accel::Kvm,
        channel: ChannelKind::Vsock,
    };
    let qemu_mode = match detection.accel {
        Accel::Kvm => "QEMU with KVM",
        Accel::Tcg { .. } => "QEMU with software emulation",
    };
    match choice {
        VmmChoice::Qemu => qemu(format!("qemu, as asked: {}", detection.reason)),
        VmmChoice::Auto => match &detection.firecracker {
            Some(fc) if detection.firecracker_usable() => Ok(firecracker(
                fc,
                format!("auto: {}", detection.firecracker_reason),
            )),
            Some(_) if detection.kvm == KvmStatus::Forced => qemu(format!(
                "auto: Firecracker is installed but KVM is forced, not proven by the probe: \
                 using {qemu_mode} (ask for --vmm firecracker to use it anyway)"
            )),
            Some(_) => qemu(format!(
                "auto: Firecracker is installed but {}: using {qemu_mode}",
                kvm_cannot_run_guests(&detection.kvm)
            )),
            None => qemu(format!(
                "auto: Firecracker is not installed: using {qemu_mode} ({})",
                detection.reason
            )),
        },
        VmmChoice::Firecracker => match &detection.firecracker {
            None => Err(SelectError::FirecrackerMissing {
                reason: detection.firecracker_reason.clone(),
            }
            .into()),
            Some(fc) if detection.firecracker_usable() || detection.kvm == KvmStatus::Forced => {
                Ok(firecracker(
                    fc,
                    format!("firecracker, as asked: {}", detection.firecracker_reason),
                ))
            }
            Some(_) => Err(SelectError::FirecrackerNeedsKvm {
                kvm: kvm_cannot_run_guests(&detection.kvm),
            }
            .into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FirecrackerInfo;

    fn detection(kvm: KvmStatus, fc: bool) -> Detection {
        let accel = match kvm {
            KvmStatus::Works { .. } | KvmStatus::Forced => Accel::Kvm,
            _ => Accel::Tcg { tsc_khz: None },
        };
        Detection {
            accel,
            reason: "the accel reason".into(),
            qemu: Some("/usr/bin/qemu-system-x86_64".into()),
            qemu_version: Some("7.2.22".into()),
            vsock_backend: None,
            channel: ChannelKind::Serial,
            channel_reason: String::new(),
            kvm,
            firecracker: fc.then(|| FirecrackerInfo {
                path: "/opt/fc/firecracker".into(),
                version: Some("1.16.1".into()),
                origin: "given".into(),
            }),
            firecracker_reason: "the fc reason".into(),
        }
    }

    const NO_VMX: &str = "timed out after 3 s";

    #[test]
    fn auto_picks_firecracker_only_with_proven_kvm() {
        let d = detection(KvmStatus::Works { probe_ms: 80 }, true);
        let s = select(VmmChoice::Auto, &d).unwrap();
        assert_eq!(
            (s.name, s.accel, s.channel),
            ("firecracker", Accel::Kvm, ChannelKind::Vsock)
        );
        assert_eq!(s.vmm.name(), "firecracker");

        let d = detection(
            KvmStatus::ProbeFailed {
                detail: NO_VMX.into(),
            },
            true,
        );
        let s = select(VmmChoice::Auto, &d).unwrap();
        assert_eq!(s.name, "qemu");
        assert_eq!(s.channel, ChannelKind::Serial);
        assert_eq!(
            s.reason,
            "auto: Firecracker is installed but KVM cannot run guests here (/dev/kvm is \
             present but a probe guest did not boot under it: timed out after 3 s): using \
             QEMU with software emulation"
        );
        let s = select(
            VmmChoice::Auto,
            &detection(KvmStatus::Works { probe_ms: 1 }, false),
        )
        .unwrap();
        assert_eq!(s.name, "qemu");
        assert!(
            s.reason.contains("not installed") && s.reason.contains("QEMU with KVM"),
            "{}",
            s.reason
        );
        let s = select(VmmChoice::Auto, &detection(KvmStatus::Forced, true)).unwrap();
        assert_eq!(s.name, "qemu");
    }

    #[test]
    fn firecracker_without_kvm_is_refused_saying_so() {
        let d = detection(
            KvmStatus::ProbeFailed {
                detail: NO_VMX.into(),
            },
            true,
        );
        let e = select(VmmChoice::Firecracker, &d).unwrap_err();
        assert!(matches!(
            e,
            VmmError::Select(SelectError::FirecrackerNeedsKvm { .. })
        ));
        let text = e.to_string();
        assert!(
            text.contains("KVM cannot run guests here") && text.contains(NO_VMX),
            "{text}"
        );
        assert!(text.contains("--vmm qemu"), "{text}");

        let e = select(
            VmmChoice::Firecracker,
            &detection(KvmStatus::Missing, false),
        )
        .unwrap_err();
        assert!(
            matches!(e, VmmError::Select(SelectError::FirecrackerMissing { .. })),
            "{e}"
        );
        let s = select(VmmChoice::Firecracker, &detection(KvmStatus::Forced, true)).unwrap();
        assert_eq!(s.name, "firecracker");
        let s = select(
            VmmChoice::Qemu,
            &detection(KvmStatus::Works { probe_ms: 1 }, true),
        )
        .unwrap();
        assert_eq!((s.name, s.accel), ("qemu", Accel::Kvm));
    }

    #[test]
    fn choices_parse_and_print() {
        for c in [VmmChoice::Auto, VmmChoice::Qemu, VmmChoice::Firecracker] {
            assert_eq!(c.as_str().parse::<VmmChoice>().unwrap(), c);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
        }
        let e = "kvm".parse::<VmmChoice>().unwrap_err();
        assert!(e.to_string().contains("\"kvm\""), "{e}");
    }
}
