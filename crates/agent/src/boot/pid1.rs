//! What a Linux PID 1 gives the programs under it, for guests where the agent stays PID 1
//! (images without an init). Each item names what systemd's early boot does for the same:
//!
//! | here | systemd |
//! |---|---|
//! | `/dev/fd`, `/dev/stdin`, `/dev/stdout`, `/dev/stderr` links (both modes) | `systemd-tmpfiles --create` (`static-nodes`, `tmp.conf`) |
//! | `/dev/mqueue` (mqueue) | `dev-mqueue.mount` |
//! | cgroup2 at `/sys/fs/cgroup` (`nsdelegate`), every controller enabled for children | `mount_setup` in PID 1, delegation per unit |
//! | `/run/lock` (1777) | `tmpfiles.d/legacy.conf` |
//! | `RLIMIT_NOFILE` 1024 soft, 524288 hard | PID 1's `DefaultLimitNOFILE` |
//!
//! Already done elsewhere: `/proc`, `/sys`, `/dev`, `/run`, `/dev/pts`, `/dev/shm`
//! (`mounts`), loopback, hostname and `/etc/hosts` (`configure`), `PATH`, `HOME` and
//! `LANG` for commands (`exec::spawn`), reaping orphans (`reaper`). Failures are logged,
//! never fatal: a guest without a cgroup is still a usable guest.

use std::io;
use std::path::Path;

use crate::console::log;
use crate::sys;

/// The `/dev` links programs expect (bash's `<(…)`, `apt-key`, `/dev/stdin` in scripts).
/// Run in both init modes: the image's init makes them too, but later than a first command
/// may run.
pub fn dev_links() {
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => log!("{link}: {e}"),
            _ => {}
        }
    }
}

/// The rest of PID 1's environment, when the agent stays PID 1.
pub fn environment() {
    report("/dev/mqueue", mount_new("mqueue", "/dev/mqueue", 0o755, ""));
    report("/sys/fs/cgroup", cgroups());
    report("/run/lock", make_dir("/run/lock", 0o1777));
    report("RLIMIT_NOFILE", raise_nofile());
}

fn report(what: &str, r: io::Result<()>) {
    if let Err(e) = r {
        log!("{what}: {e}");
    }
}

/// Creates `path` with `mode` (exactly: no umask); one that exists is left as it is
/// (`/sys/fs/cgroup` is sysfs's, and cannot be chmod'ed).
fn make_dir(path: &str, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::create_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)),
    }
}

fn mount_new(fstype: &str, target: &str, mode: u32, data: &str) -> io::Result<()> {
    make_dir(target, mode)?;
    let quiet = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    match sys::mount(fstype, Path::new(target), Some(fstype), quiet, Some(data)) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        r => r,
    }
}

/// cgroup2 with every available controller enabled for child groups, so `docker`,
/// `systemd-run --scope` or a plain `mkdir /sys/fs/cgroup/x` get cpu, memory, pids, io.
/// The root group may hold processes and delegate at once (the no-internal-processes rule
/// exempts it).
fn cgroups() -> io::Result<()> {
    let root = "/sys/fs/cgroup";
    mount_new("cgroup2", root, 0o755, "nsdelegate")?;
    let available = std::fs::read_to_string(format!("{root}/cgroup.controllers"))?;
    let enable: Vec<String> = available
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    if enable.is_empty() {
        return Ok(());
    }
    // One write per controller: one the kernel refuses must not keep the others off.
    let control = format!("{root}/cgroup.subtree_control");
    let mut refused = Vec::new();
    for c in &enable {
        if let Err(e) = std::fs::write(&control, c) {
            refused.push(format!("{c}: {e}"));
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "controllers not enabled: {}",
            refused.join(", ")
        )))
    }
}

/// systemd's defaults: 1024 soft (select() users stay safe), 524288 hard.
fn raise_nofile() -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 524_288,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    sys::cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }).map(|_| ())
}
