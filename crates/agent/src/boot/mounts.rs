//! Mounts of the early phase, in boot order: pseudo-filesystems, the overlay root, the
//! work disk, the switch to the new root, terminals. Each function is one step; any
//! error is fatal (the caller prints it and reboots) and names the mount and errno.
//!
//! Layout while the initramfs is still `/` (it stays mounted, hidden, after the switch;
//! the overlay keeps using the lower and upper mounts under it):
//! - `/.banger/lower`: the image's `rootfs.ext4` (vda), read-only, no journal replay (it is
//!   shared by every VM of the image);
//! - `/.banger/upper`: the VM's disk (vdb) with `upper/`, `work/` (overlay) and `meta/`
//!   (the agent's markers, outside the guest's view);
//! - `/.banger/root`: the overlay, the guest's future `/`;
//! - `/.banger/work`: the work disk (vdc), moved to `/root` of the overlay.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::Path;
use std::time::{Duration, Instant};

use banger_guest_proto::disks;

use super::error::{BootError, Context};
use super::seed;
use crate::console::log;
use crate::{sys, users};

const LOWER: &str = "/.banger/lower";
const UPPER: &str = "/.banger/upper";
const ROOT: &str = "/.banger/root";
const WORK: &str = "/.banger/work";
/// Present once the work disk holds the image's `/root`.
const SEEDED: &str = "/.banger/upper/meta/work-seeded";
const DISK_WAIT: Duration = Duration::from_secs(30);

fn mkdir_p(path: &Path, mode: u32) -> Result<(), BootError> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .context(|| format!("mkdir {}", path.display()))
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), BootError> {
    let t = Path::new(target);
    mkdir_p(t, 0o755)?;
    let data_opt = (!data.is_empty()).then_some(data);
    sys::mount(source, t, Some(fstype), flags, data_opt)
        .context(|| format!("mount -t {fstype} {source} {target} -o {data:?}"))
}

fn move_mount(from: &str, to: &Path) -> Result<(), BootError> {
    sys::mount(from, to, None, libc::MS_MOVE, None)
        .context(|| format!("move mount {from} to {}", to.display()))
}

/// `/proc`, `/sys`, `/dev` (devtmpfs), `/run`. Already mounted is fine.
pub fn pseudo_filesystems() -> Result<(), BootError> {
    let quiet = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for (fstype, target, flags, data) in [
        ("proc", "/proc", quiet, ""),
        ("sysfs", "/sys", quiet, ""),
        ("devtmpfs", "/dev", libc::MS_NOSUID, "mode=0755"),
        (
            "tmpfs",
            "/run",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ),
    ] {
        mkdir_p(Path::new(target), 0o755)?;
        match sys::mount(fstype, Path::new(target), Some(fstype), flags, Some(data)) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            r => r.context(|| format!("mount -t {fstype} {target}"))?,
        }
    }
    Ok(())
}

/// Waits for the three disks the VMM attaches.
pub fn wait_for_disks(modules: bool) -> Result<(), BootError> {
    let start = Instant::now();
    let modules = modules.then_some(disks::MODULES);
    loop {
        let missing: Vec<&str> = [disks::BASE, disks::UPPER, disks::WORK]
            .into_iter()
            .chain(modules)
            .filter(|d| !fs::metadata(d).is_ok_and(|m| m.file_type().is_block_device()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if start.elapsed() > DISK_WAIT {
            return Err(BootError(format!(
                "disks {} did not appear within {DISK_WAIT:?} (virtio_blk missing? see the \
                 module lines above)",
                missing.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The modules disk, read-only at `dir` (created when missing).
pub fn mount_modules(dir: &Path) -> Result<(), BootError> {
    let target = dir.to_string_lossy();
    mount(disks::MODULES, &target, "ext4", libc::MS_RDONLY, "noload")
}

/// Lower and upper disks, and the overlay of the two at `/.banger/root`.
pub fn assemble_root() -> Result<(), BootError> {
    mount(disks::BASE, LOWER, "ext4", libc::MS_RDONLY, "noload")?;
    mount(disks::UPPER, UPPER, "ext4", 0, "discard")?;
    for dir in ["upper", "work", "meta"] {
        mkdir_p(&Path::new(UPPER).join(dir), 0o755)?;
    }
    mount(
        "overlay",
        ROOT,
        "overlay",
        0,
        &format!("lowerdir={LOWER},upperdir={UPPER}/upper,workdir={UPPER}/work"),
    )
}

/// The work disk, seeded on first boot, moved to the new root's `/root`.
pub fn mount_work() -> Result<(), BootError> {
    mount(disks::WORK, WORK, "ext4", 0, "discard")?;
    let seeded = Path::new(SEEDED);
    if !seeded.exists() {
        for problem in seed::copy_tree(&Path::new(LOWER).join("root"), Path::new(WORK)) {
            log!("seeding /root: {problem}");
        }
        sync_fs(Path::new(WORK)).context(|| format!("syncfs {WORK}"))?;
        let marker = fs::File::create(seeded).context(|| format!("create {SEEDED}"))?;
        marker.sync_all().context(|| format!("fsync {SEEDED}"))?;
        let meta = Path::new(UPPER).join("meta");
        fs::File::open(&meta)
            .and_then(|d| d.sync_all())
            .context(|| format!("fsync {}", meta.display()))?;
    }
    let target = Path::new(ROOT).join("root");
    match fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(BootError(format!(
                "{}: the image's /root is not a directory; cannot mount the work disk there",
                target.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir_p(&target, 0o700)?,
        Err(e) => return Err(BootError(format!("{}: {e}", target.display()))),
    }
    move_mount(WORK, &target)
}

/// Directories of container engines, which keep overlay filesystems of their own there
/// and refuse (or crawl with copies) when that directory is itself on overlayfs, as the
/// guest's root is: each is bind-mounted from `volumes/` on the VM's upper disk (plain
/// ext4, kept across restarts like the rest of the VM's changes). What the image has at
/// those paths is hidden.
const NATIVE_DIRS: [&str; 3] = ["var/lib/docker", "var/lib/containerd", "var/lib/containers"];

/// Mounts [`NATIVE_DIRS`] into the new root. A path whose parents are not plain
/// directories in the image (a symlink, a file) is left alone: the guest's own paths
/// never steer a mount elsewhere. Failures are logged, not fatal.
pub fn native_dirs() {
    for dir in NATIVE_DIRS {
        let rel = Path::new(dir);
        let plain = rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .all(|a| fs::symlink_metadata(Path::new(ROOT).join(a)).is_ok_and(|m| m.is_dir()));
        let target = Path::new(ROOT).join(rel);
        let target_ok = match fs::symlink_metadata(&target) {
            Ok(m) => m.is_dir(),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if !plain || !target_ok {
            log!("/{dir}: not a plain directory path in the image; left on the overlay");
            continue;
        }
        let source = Path::new(UPPER)
            .join("volumes")
            .join(rel.file_name().unwrap_or_default());
        let made = mkdir_p(&source, 0o711).and_then(|()| mkdir_p(&target, 0o711));
        let bound = made.and_then(|()| {
            sys::mount(
                &source.to_string_lossy(),
                &target,
                None,
                libc::MS_BIND,
                None,
            )
            .context(|| format!("bind {} to /{dir}", source.display()))
        });
        if let Err(e) = bound {
            log!("{e}");
        }
    }
}

fn sync_fs(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = fs::File::open(dir)?;
    // SAFETY: syncfs on an fd we hold.
    sys::cvt(unsafe { libc::syncfs(d.as_raw_fd()) }).map(drop)
}

/// Moves the pseudo-filesystems into the new root and makes it `/` (`switch_root`
/// without deleting the initramfs: its mounts still back the overlay).
pub fn switch_root() -> Result<(), BootError> {
    for dir in ["dev", "proc", "sys", "run"] {
        let target = Path::new(ROOT).join(dir);
        mkdir_p(&target, 0o755)?;
        move_mount(&format!("/{dir}"), &target)?;
    }
    std::env::set_current_dir(ROOT).context(|| format!("chdir {ROOT}"))?;
    sys::mount(".", Path::new("/"), None, libc::MS_MOVE, None)
        .context(|| format!("move mount {ROOT} to /"))?;
    std::os::unix::fs::chroot(".").context(|| format!("chroot {ROOT}"))?;
    std::env::set_current_dir("/").context(|| "chdir / in the new root".to_string())
}

/// devpts (a private instance) at `/dev/pts` with a usable `/dev/ptmx`, tmpfs at
/// `/dev/shm`. Run in the new root (the image's `tty` group owns the ptys).
pub fn terminals() -> Result<(), BootError> {
    let gid = users::group_id(Path::new("/"), "tty")
        .map(|g| format!(",gid={g}"))
        .unwrap_or_default();
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        &format!("newinstance,ptmxmode=0666,mode=0620{gid}"),
    )?;
    let ptmx = Path::new("/dev/ptmx");
    if sys::open(ptmx, libc::O_RDWR | libc::O_NOCTTY, 0).is_err() {
        let _ = fs::remove_file(ptmx);
        std::os::unix::fs::symlink("pts/ptmx", ptmx).context(|| "symlink /dev/ptmx".into())?;
    }
    mount(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    )
}
