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
            "firecracker",
            "the fastest VMM, used when present",
            "install Firecracker from its release page; QEMU works meanwhile",
            Verdict::Warn,
        ),
        kvm_check(),
        disk_check(&ctx.layout.state_dir),
    ];
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

fn kvm_check() -> Check {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Check {
            name: "/dev/kvm",
            verdict: Verdict::Pass,
            // Opening proves access, not that guests boot: nested virtualisation can accept
            // a toy guest and still fail a real kernel.
            detail: "opens read-write: VMs can use hardware acceleration".into(),
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
