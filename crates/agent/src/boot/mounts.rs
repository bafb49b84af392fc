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
pub fn wait_for_disks() -> Result<(), BootError> {
    let start = Instant::now();
    loop {
        let missing: Vec<&str> = [disks::BASE, disks::UPPER, disks::WORK]
            .into_iter()
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
