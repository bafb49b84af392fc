//! Waiting, in the agent that serves beside the image's init, until that init is far enough
//! for commands to run as on a booted machine (`banger.ready`, see
//! [`banger_guest_proto::Readiness`]). Only systemd is understood: with another init, or
//! when asked for `none`, there is nothing to wait for.
//!
//! Before PID 1 becomes systemd, the agent (still PID 1, in `/run`, which it mounted) adds
//! a oneshot unit ordered after the target and wanted by it, which creates
//! [`MARKER`]; systemd reads `/run/systemd/system` when it starts. The serving agent then
//! waits for the marker — a `stat` every few milliseconds, nothing that competes with the
//! boot for the CPU (spawning `systemctl` in a loop slowed a software-emulated boot
//! several-fold). `/run` is root's, so no guest user can fake the marker. The wait is
//! bounded; past it the agent connects all the same and says so on the console (a broken
//! unit must not make the VM unreachable).

use std::path::Path;
use std::time::{Duration, Instant};

use banger_guest_proto::Readiness;

use crate::console::log;

const POLL: Duration = Duration::from_millis(10);
const LIMIT: Duration = Duration::from_secs(120);
/// Created by the unit once the target is reached.
const MARKER: &str = "/run/banger/init-ready";
const UNIT: &str = "banger-ready.service";
const UNIT_DIR: &str = "/run/systemd/system";

/// Whether `init` (a path in the image) is systemd, through any symlinks.
pub fn is_systemd(init: &str) -> bool {
    std::fs::canonicalize(init).is_ok_and(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("systemd"))
    })
}

/// Adds the unit that marks `ready` reached; false when there is nothing to wait for or
/// the unit could not be written (then nobody waits).
pub fn prepare(ready: Readiness) -> bool {
    let Some(target) = ready.systemd_target() else {
        return false;
    };
    let unit = format!(
        "# Written by banger's agent: marks the guest ready for commands.\n\
         [Unit]\n\
         Description=banger: {target} reached\n\
         DefaultDependencies=no\n\
         After={target}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart=/bin/sh -c ': > {MARKER}'\n"
    );
    let written = std::fs::create_dir_all(Path::new(MARKER).parent().unwrap_or(Path::new("/run")))
        .and_then(|()| std::fs::create_dir_all(format!("{UNIT_DIR}/{target}.wants")))
        .and_then(|()| std::fs::write(format!("{UNIT_DIR}/{UNIT}"), unit))
        .and_then(|()| {
            std::os::unix::fs::symlink(
                format!("../{UNIT}"),
                format!("{UNIT_DIR}/{target}.wants/{UNIT}"),
            )
        });
    match written {
        Ok(()) => true,
        Err(e) => {
            log!("cannot add {UNIT}: {e}; not waiting for {target}");
            false
        }
    }
}

/// Waits for the marker; true when it appeared in time.
pub fn wait() -> bool {
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        if Path::new(MARKER).exists() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    log!(
        "the image's init did not reach its ready target in {}s; serving anyway",
        LIMIT.as_secs()
    );
    false
}
