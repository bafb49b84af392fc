//! Powering the guest off on the host's request. Every step is best effort: whatever
//! fails, the sequence goes on to `reboot(RB_AUTOBOOT)` (the VMM exits on a guest reboot).
//!
//! - Agent mode (we are PID 1): SIGTERM everyone, up to [`TERM_GRACE`] for them to go,
//!   SIGKILL, unmount `/root`, remount `/` read-only, sync, reboot.
//! - Image mode (the image's init is PID 1): sync, ask init to reboot with systemd's
//!   signal (SIGRTMIN+5); if we are still alive after [`INIT_GRACE`], reboot ourselves.

use std::path::Path;
use std::time::Duration;

use banger_guest_proto::InitMode;

use crate::console::log;
use crate::sys;

/// How long processes get between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long the image's init gets to shut down before we reboot anyway.
const INIT_GRACE: Duration = Duration::from_secs(10);
/// Lets the answer to SHUTDOWN reach the host before the connection dies.
const ANSWER_GRACE: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(20);

/// Runs the shutdown sequence for `init`; does not return on success.
pub async fn power_off(init: InitMode) {
    tokio::time::sleep(ANSWER_GRACE).await;
    sys::sync();
    if init == InitMode::Image {
        if let Err(e) = sys::kill(1, libc::SIGRTMIN() + 5) {
            log!("shutdown: signalling init: {e}");
        }
        tokio::time::sleep(INIT_GRACE).await;
        log!("shutdown: init did not stop the machine in {INIT_GRACE:?}; rebooting");
    } else {
        // kill(-1) spares PID 1 (us) and the caller.
        let _ = sys::kill(-1, libc::SIGTERM);
        wait_for_others(TERM_GRACE).await;
        let _ = sys::kill(-1, libc::SIGKILL);
        wait_for_others(Duration::from_secs(1)).await;
        if let Err(e) = unmount(Path::new("/root")) {
            log!("shutdown: umount /root: {e}");
        }
        if let Err(e) = sys::mount(
            "none",
            Path::new("/"),
            None,
            libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        ) {
            log!("shutdown: remount / read-only: {e}");
        }
    }
    reboot();
}

/// Syncs and reboots; as a last resort (no CAP_SYS_BOOT) just logs.
pub fn reboot() {
    sys::sync();
    // SAFETY: reboot takes a plain command number.
    let r = unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    if r != 0 {
        log!("reboot: {}", std::io::Error::last_os_error());
    }
}

fn unmount(path: &Path) -> std::io::Result<()> {
    let p = sys::cpath(path)?;
    // SAFETY: `p` is a valid C string.
    if unsafe { libc::umount2(p.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    // Busy (a survivor's cwd): detach, the sync below still flushes it.
    // SAFETY: as above.
    sys::cvt(unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// Waits until no user process but us is left (zombies and kernel threads do not count).
async fn wait_for_others(limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while others_alive() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

fn others_alive() -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            return false;
        };
        if pid == 1 || pid == me {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // Fields after "(comm)": state ppid pgrp session tty tpgid flags …
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let zombie = f.first().is_some_and(|s| *s == "Z" || *s == "X");
        let kthread = f
            .get(6)
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|flags| flags & PF_KTHREAD != 0);
        !zombie && !kthread
    })
}
