//! `banger doctor`: checks what banger needs on this machine, with a fix for each gap.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Context;
use crate::output::Tone;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    /// What to do about a WARN or FAIL.
    pub fix: Option<String>,
}

/// Below this much free space in the state dir, pulls of ordinary images fail.
const MIN_FREE_BYTES: u64 = 2 << 30;
const COMFORTABLE_FREE_BYTES: u64 = 20 << 30;

pub async fn run(ctx: &Context) -> anyhow::Result<u8> {
    let checks = vec![
        tool_check(
            "e2fsck",
            "checks the root filesystems banger writes",
            "apt-get install e2fsprogs",
            Verdict::Fail,
        ),
        tool_check(
            "qemu-system-x86_64",
            "runs VMs where Firecracker is not installed",
            "apt-get install qemu-system-x86",
            Verdict::Warn,
        ),
        tool_check(
            "pasta",
            "networking of VMs (a TAP in a per-VM user + network namespace)",
            "apt-get install passt",
            Verdict::Warn,
        ),
        tool_check(
            "nft",
            "the network policy of VMs with a network (--net public, host, --allow, --deny)",
            "apt-get install nftables",
            Verdict::Warn,
        ),
        tool_check(
            "iptables",
            "ports published on 127.0.0.1 for Firecracker VMs",
            "apt-get install iptables",
            Verdict::Warn,
        ),
        tool_check(
            "ebtables",
            "ports published on 127.0.0.1 for Firecracker VMs",
            "apt-get install iptables",
            Verdict::Warn,
        ),
    ];
    let mut checks = checks;
    checks.extend(vm_checks(&ctx.layout.runtime_dir).await);
    checks.push(disk_check(&ctx.layout.state_dir));
    let daemon = daemon_check(ctx).await;
    let started_by = daemon.1;
    checks.push(daemon.0);
    checks.push(service_check(started_by.as_deref()));
    let failed = checks.iter().any(|c| c.verdict == Verdict::Fail);
    if ctx.json {
        crate::output::print_json(&checks)?;
    } else {
        for c in &checks {
            let (label, tone) = match c.verdict {
                Verdict::Pass => ("PASS", Tone::Good),
                Verdict::Warn => ("WARN", Tone::Warn),
                Verdict::Fail => ("FAIL", Tone::Bad),
            };
            println!(
                "{}  {:<18} {}",
                ctx.style.paint(tone, label),
                c.name,
                c.detail
            );
            if let Some(fix) = &c.fix {
                println!("      {:<18} fix: {fix}", "");
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Which daemon answers the CLI's socket (without starting one), and how it was started.
async fn daemon_check(ctx: &Context) -> (Check, Option<String>) {
    let client = ctx.plain_client();
    match client
        .call::<banger_api::methods::system::Version>(&banger_api::system::Empty {})
        .await
    {
        Ok(v) => {
            let by = super::daemon_service::started_by_text(&v).to_string();
            let check = Check {
                name: "daemon",
                verdict: Verdict::Pass,
                detail: format!(
                    "bangerd {} pid {}, started by {by}, socket {}",
                    v.version, v.pid, v.socket_path
                ),
                fix: None,
            };
            (check, Some(v.started_by))
        }
        Err(e) if e.is_not_running() => (
            Check {
                name: "daemon",
                verdict: Verdict::Pass,
                detail: format!(
                    "not running (banger commands start it on demand), socket {}",
                    client.location()
                ),
                fix: None,
            },
            None,
        ),
        Err(e) => (
            Check {
                name: "daemon",
                verdict: Verdict::Warn,
                detail: format!("{} does not answer as bangerd: {e}", client.location()),
                fix: Some("banger daemon stop; banger daemon start".into()),
            },
            None,
        ),
    }
}

/// Whether `banger daemon install` wrote a unit; `started_by` is the answering daemon's.
fn service_check(started_by: Option<&str>) -> Check {
    use super::daemon_service::{Scope, UNIT_NAME, installed_units};
    let units = installed_units();
    if units.is_empty() {
        return Check {
            name: "service",
            verdict: Verdict::Pass,
            detail: "no systemd unit installed (`banger daemon install` makes one)".into(),
            fix: None,
        };
    }
    let detail = units
        .iter()
        .map(|(scope, path)| format!("{} unit {}", scope.name(), path.display()))
        .collect::<Vec<_>>()
        .join("; ");
    let user_unit = units.iter().any(|(s, _)| *s == Scope::User);
    // The user unit's daemon serves this CLI's directories: another daemon there holds the
    // instance lock it needs.
    if user_unit && started_by.is_some_and(|by| !by.starts_with("systemd")) {
        return Check {
            name: "service",
            verdict: Verdict::Warn,
            detail: format!("{detail}, but the daemon answering was not started by it"),
            fix: Some(format!(
                "banger daemon stop && systemctl --user restart {UNIT_NAME}"
            )),
        };
    }
    Check {
        name: "service",
        verdict: Verdict::Pass,
        detail: format!("{detail} installed"),
        fix: None,
    }
}

/// Finds `tool` on PATH or in the sbin directories (root tools live there on Debian).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn tool_check(name: &'static str, purpose: &str, fix: &str, missing: Verdict) -> Check {
    match find_tool(name) {
        Some(p) => Check {
            name,
            verdict: Verdict::Pass,
            detail: format!("{} ({purpose})", p.display()),
            fix: None,
        },
        None => Check {
            name,
            verdict: missing,
            detail: format!("not found ({purpose})"),
            fix: Some(fix.to_string()),
        },
    }
}

/// What `vm create` will use, from the same detection the daemon runs (sharing its cached
/// KVM probe): the accelerator and why, QEMU's version, the vsock backend, the agent.
async fn vm_checks(runtime_dir: &Path) -> Vec<Check> {
    let cache = runtime_dir.join("accel-probe.json");
    // As the daemon will see it: config.toml's `[daemon]` settings (a bad file is reported
    // by `banger config show`; doctor still checks the rest).
    let daemon = crate::config::Config::load()
        .map(|c| c.daemon)
        .unwrap_or_default();
    let accel = match daemon.accel.as_ref().map(|a| a.value.as_str()) {
        Some("kvm") => banger_vmm::AccelChoice::Kvm,
        Some("tcg") => banger_vmm::AccelChoice::Tcg,
        _ => banger_vmm::AccelChoice::Auto,
    };
    let firecracker = daemon.firecracker.map(|s| s.value);
    let detection = tokio::task::spawn_blocking(move || {
        banger_vmm::detect(&banger_vmm::DetectOptions {
            cache: Some(cache),
            accel,
            firecracker,
            ..Default::default()
        })
    })
    .await;
    let Ok(d) = detection else {
        return vec![kvm_check()];
    };
    let mut checks = vec![kvm_check()];
    let accel = match d.accel {
        banger_vmm::Accel::Kvm => Check {
            name: "acceleration",
            verdict: Verdict::Pass,
            detail: format!("vm create uses QEMU with KVM: {}", d.reason),
            fix: None,
        },
        banger_vmm::Accel::Tcg { .. } => Check {
            name: "acceleration",
            verdict: Verdict::Warn,
            detail: format!(
                "vm create uses QEMU with software emulation (slow boots): {}",
                d.reason
            ),
            fix: Some("on a host whose KVM runs guests, VMs boot in well under a second".into()),
        },
    };
    checks.push(accel);
    if let Some(v) = &d.qemu_version {
        checks.push(Check {
            name: "qemu version",
            verdict: Verdict::Pass,
            detail: format!("QEMU {v}"),
            fix: None,
        });
    }
    checks.push(match &d.firecracker {
        Some(fc) => Check {
            name: "firecracker",
            verdict: if d.firecracker_usable() {
                Verdict::Pass
            } else {
                Verdict::Warn
            },
            detail: format!(
                "{} {}: {}",
                fc.path.display(),
                fc.version.as_deref().unwrap_or("(version unknown)"),
                d.firecracker_reason
            ),
            fix: (!d.firecracker_usable())
                .then(|| "Firecracker needs KVM that runs guests; QEMU is used meanwhile".into()),
        },
        None => Check {
            name: "firecracker",
            verdict: Verdict::Warn,
            detail: format!(
                "not found (the fastest VMM, used when present): {}",
                d.firecracker_reason
            ),
            fix: Some(
                "install Firecracker (or set BANGER_FIRECRACKER); QEMU works meanwhile".into(),
            ),
        },
    });
    checks.push(capabilities_check(&d));
    checks.push(match &d.vsock_backend {
        Some(p) => Check {
            name: "vsock backend",
            verdict: Verdict::Pass,
            detail: format!("{} (the agent channel is vsock)", p.display()),
            fix: None,
        },
        None => Check {
            name: "vsock backend",
            verdict: Verdict::Warn,
            detail: "vhost-device-vsock not found: the agent channel falls back to virtio-serial"
                .into(),
            fix: Some("cargo install --locked vhost-device-vsock".into()),
        },
    });
    let daemon = std::env::var_os("BANGER_DAEMON")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok());
    checks.push(
        match banger_kernel::agent::locate(daemon.as_deref().and_then(Path::parent)) {
            Ok(p) => Check {
                name: "guest agent",
                verdict: Verdict::Pass,
                detail: format!("{} (PID 1 of every VM)", p.display()),
                fix: None,
            },
            Err(e) => Check {
                name: "guest agent",
                verdict: Verdict::Fail,
                detail: format!("{e}: VMs cannot boot"),
                fix: Some("scripts/build-agent.sh --install ~/.cargo/bin".into()),
            },
        },
    );
    checks
}

/// What each installed VMM offers beyond booting (`Vmm::capabilities`).
fn capabilities_check(d: &banger_vmm::Detection) -> Check {
    let mut lines = Vec::new();
    if let Ok(qemu) = banger_vmm::driver(d) {
        lines.push(format!("qemu: {}", qemu.capabilities()));
    }
    if let Some(fc) = &d.firecracker {
        let fc = banger_vmm::Firecracker::new(fc.path.clone());
        lines.push(format!(
            "firecracker: {}",
            banger_vmm::Vmm::capabilities(&fc)
        ));
    }
    Check {
        name: "vmm capabilities",
        verdict: Verdict::Pass,
        detail: if lines.is_empty() {
            "no VMM installed".into()
        } else {
            lines.join("; ")
        },
        fix: None,
    }
}

fn kvm_check() -> Check {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Check {
            name: "/dev/kvm",
            verdict: Verdict::Pass,
            // Opening proves access, not that guests boot: nested virtualisation can accept
            // a toy guest and still fail a real kernel.
            detail: "opens read-write (whether guests really boot under it: see acceleration)".into(),
            fix: None,
        },
        Err(e) => Check {
            name: "/dev/kvm",
            verdict: Verdict::Warn,
            detail: format!("not usable ({e}): VMs fall back to slow software emulation"),
            fix: Some(
                "enable virtualisation in the firmware, load kvm_intel/kvm_amd, and add yourself to the 'kvm' group".into(),
            ),
        },
    }
}

fn disk_check(state_dir: &Path) -> Check {
    // The state dir may not exist yet: measure the filesystem it will live on.
    let existing = state_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match free_bytes(existing) {
        Ok(free) => {
            let detail = format!(
                "{} free for {}",
                crate::output::human_bytes(free),
                state_dir.display()
            );
            let fix = Some(format!(
                "free space on that filesystem, or point XDG_STATE_HOME elsewhere (images need {}+)",
                crate::output::human_bytes(MIN_FREE_BYTES)
            ));
            if free < MIN_FREE_BYTES {
                Check {
                    name: "disk",
                    verdict: Verdict::Fail,
                    detail,
                    fix,
                }
            } else if free < COMFORTABLE_FREE_BYTES {
                Check {
                    name: "disk",
                    verdict: Verdict::Warn,
                    detail,
                    fix,
                }
            } else {
                Check {
                    name: "disk",
                    verdict: Verdict::Pass,
                    detail,
                    fix: None,
                }
            }
        }
        Err(e) => Check {
            name: "disk",
            verdict: Verdict::Warn,
            detail: format!("cannot measure free space at {}: {e}", existing.display()),
            fix: None,
        },
    }
}

fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is writable storage for one statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
