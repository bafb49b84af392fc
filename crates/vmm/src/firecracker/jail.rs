//! Firecracker under its `jailer`: the jail directory, what is staged into it, and its
//! removal.
//!
//! `jailer --id <id> --exec-file <firecracker> --uid U --gid G --chroot-base-dir <base>
//! [--cgroup-version 2] -- --api-sock /fc.sock` copies Firecracker into
//! `<base>/<exec name>/<id>/root` (the jail root), pivots into it in a new mount
//! namespace, makes `/dev/kvm` and `/dev/net/tun` there, drops to U:G and execs
//! Firecracker **in place** (no `--daemonize`, no `--new-pid-ns`): the pid spawned is the
//! pid of Firecracker, so its [`crate::ProcessRecord`] is right from the start.
//!
//! # What the jail holds
//! Everything Firecracker opens by path has to be inside it, at the root:
//! - `vmlinux`, `initrd`: hard links when on the same filesystem and readable by U:G,
//!   else copies owned by U:G (they are small and shared between VMs: never chowned);
//! - `vda`, `vdb`, …: the real drive files (writes must land in them): hard links, or
//!   file bind mounts across filesystems (the jailer's bind of the jail root is
//!   recursive, so they are visible inside). Writable drives are given to U:G (they are
//!   per-VM files); read-only ones must already be readable by U:G (shared images are
//!   never chowned): otherwise the launch is refused before anything starts;
//! - `console.log` and `vsock.sock_1025`: the run directory's files (the caller's
//!   listener, bound before launch), linked the same way and given to U:G, so the
//!   console lands in `<run>/console.log` and guest connections reach the caller.
//! - `vmstate`, `memory` for a launch from a saved state: linked like the drives, never
//!   chowned (every VM restored from them shares them), refused before anything starts
//!   when U:G cannot read them.
//!
//! A snapshot of a jailed VM is written to the jail's `/snapshot/` (made for U:G) and
//! moved out (see [`super::save_state`]).
//!
//! The sockets Firecracker creates (`/fc.sock`, `/vsock.sock`) are symlinked from the
//! run directory's usual names: callers keep using [`crate::RunFiles`] unchanged.
//!
//! # Cgroups
//! No `--cgroup` is passed, so the jailer creates no cgroup. With a cgroup2 mount in
//! `/proc/mounts` (on Debian 12 hybrid hosts: `/sys/fs/cgroup/unified`) it gets
//! `--cgroup-version 2` and only moves Firecracker into `<cgroup2>/<exec name>` if an
//! administrator made that cgroup; without one, the v1 default, which does nothing
//! without `--cgroup`. Removal still deletes a `<cgroup2>/<exec name>/<id>` if one
//! exists (an empty cgroup once the VM is gone).
//!
//! # Invariants
//! - `<run>/jail` is a symlink to the jail directory (`<base>/<exec name>/<id>`): the
//!   run directory alone says what to remove, also for a daemon that re-adopted the VM.
//! - A jail directory not recorded by this run directory is never removed: two VMs
//!   whose names map to the same id get an error, not each other's jail.
//! - Removal unmounts the bind mounts under the jail first, then deletes the directory;
//!   a hard link's removal never touches the original.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::api::GuestPaths;
use crate::config::VmConfig;
use crate::files::RunFiles;

/// How the driver jails Firecracker. Used only when the launching process is root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary (the same version as Firecracker).
    pub path: PathBuf,
    /// The uid Firecracker runs as.
    pub uid: u32,
    /// The gid Firecracker runs as.
    pub gid: u32,
    /// Where jails are made, `<chroot_base>/firecracker/<id>/root` (the jailer's default
    /// is `/srv/jailer`). Created if missing. Put it on the filesystem of the run
    /// directories and images, so drives are hard-linked rather than bind-mounted.
    pub chroot_base: PathBuf,
}

/// Why a jail could not be prepared. Nothing has been started.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A filesystem step failed.
    #[error(
        "cannot prepare the Firecracker jail at {jail}: {action} {path}: {source}; check that \
         the chroot base is a local directory root can write"
    )]
    Io {
        /// The jail directory.
        jail: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A read-only drive the jailed user cannot read.
    #[error(
        "the read-only drive {path} is not readable by uid {uid} / gid {gid}, which the jailed \
         Firecracker runs as: make it readable by them (e.g. chmod o+r, or chgrp {gid} and \
         chmod g+r), or configure the jailer with ids that can read it"
    )]
    Unreadable {
        /// The drive.
        path: PathBuf,
        /// The jailed uid.
        uid: u32,
        /// The jailed gid.
        gid: u32,
    },
    /// A saved state's file the jailed user cannot read.
    #[error(
        "the saved state's file {path} is not readable by uid {uid} / gid {gid}, which the \
         jailed Firecracker restoring it runs as: make it readable by them (a jailed \
         save_state leaves it to them), or configure the jailer with ids that can read it"
    )]
    UnreadableState {
        /// The file.
        path: PathBuf,
        /// The jailed uid.
        uid: u32,
        /// The jailed gid.
        gid: u32,
    },
    /// A saved state could not be staged in the jail, moved out of it, or restricted to
    /// its owner.
    #[error(
        "cannot {action} {path} for a Firecracker snapshot: {source}; check that the \
         destination is writable and has room for the guest's memory"
    )]
    SavedState {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The jail directory exists and belongs to another run directory.
    #[error(
        "the jail {jail} exists but is not this VM's (its run directory {run_dir} does not \
         record it): another VM has the same Firecracker id; rename one of them"
    )]
    InUse {
        /// The jail directory.
        jail: PathBuf,
        /// The run directory of the launch.
        run_dir: PathBuf,
    },
}

/// Names inside the jail root (Firecracker sees them as `/<name>`).
const KERNEL: &str = "vmlinux";
const INITRD: &str = "initrd";
const CONSOLE: &str = "console.log";
/// Firecracker's API socket inside the jail.
pub(crate) const API_SOCKET: &str = "/fc.sock";
const VSOCK: &str = "vsock.sock";

/// One VM's jail.
#[derive(Debug, Clone)]
pub(crate) struct Jail {
    /// `<base>/<exec name>/<id>`: what is removed.
    pub(crate) dir: PathBuf,
    /// `<dir>/root`: the jailed `/`.
    pub(crate) root: PathBuf,
    pub(crate) id: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Jail {
    /// The jail of `id` for `firecracker` under `cfg.chroot_base` (created, and made
    /// canonical as the jailer makes it).
    pub(crate) fn new(cfg: &JailerConfig, firecracker: &Path, id: &str) -> Result<Jail, JailError> {
        let err = |action, path: &Path, source| JailError::Io {
            jail: cfg.chroot_base.clone(),
            action,
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&cfg.chroot_base)
            .map_err(|e| err("creating", &cfg.chroot_base, e))?;
        let base = std::fs::canonicalize(&cfg.chroot_base)
            .map_err(|e| err("resolving", &cfg.chroot_base, e))?;
        // The jailer names the directory after the canonical exec file's name.
        let exe = std::fs::canonicalize(firecracker).unwrap_or_else(|_| firecracker.into());
        let name = exe
            .file_name()
            .map_or_else(|| "firecracker".into(), |n| n.to_os_string());
        let dir = base.join(name).join(id);
        Ok(Jail {
            root: dir.join("root"),
            dir,
            id: id.to_string(),
            uid: cfg.uid,
            gid: cfg.gid,
        })
    }

    /// The paths Firecracker is given (inside the jail).
    pub(crate) fn guest_paths(cfg: &VmConfig) -> GuestPaths {
        let at = |n: &str| Path::new("/").join(n);
        GuestPaths {
            kernel: at(KERNEL),
            initrd: cfg.initrd.as_ref().map(|_| at(INITRD)),
            drives: (0..cfg.disks.len())
                .map(|i| at(&super::api::drive_id(i)))
                .collect(),
            console: at(CONSOLE),
            vsock_uds: at(VSOCK),
            saved: cfg
                .restore
                .as_ref()
                .map(|_| super::api::saved_files(Path::new("/"))),
        }
    }

    /// The host path of the jailed `/name`.
    pub(crate) fn host_path(&self, jailed: &str) -> PathBuf {
        self.root.join(jailed.trim_start_matches('/'))
    }

    fn io(&self, action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> JailError {
        let (jail, path) = (self.dir.clone(), path.to_path_buf());
        move |source| JailError::Io {
            jail,
            action,
            path,
            source,
        }
    }

    /// Checks what can be refused before anything is created.
    pub(crate) fn check(&self, cfg: &VmConfig, files: &RunFiles) -> Result<(), JailError> {
        for d in cfg.disks.iter().filter(|d| d.read_only) {
            let m = std::fs::metadata(&d.path).map_err(self.io("reading", &d.path))?;
            if !readable_by(&m, self.uid, self.gid) {
                return Err(JailError::Unreadable {
                    path: d.path.clone(),
                    uid: self.uid,
                    gid: self.gid,
                });
            }
        }
        if let Some(dir) = &cfg.restore {
            let (state, memory) = super::api::saved_files(dir);
            for f in [state, memory] {
                let m = std::fs::metadata(&f).map_err(self.io("reading", &f))?;
                if !readable_by(&m, self.uid, self.gid) {
                    return Err(JailError::UnreadableState {
                        path: f,
                        uid: self.uid,
                        gid: self.gid,
                    });
                }
            }
        }
        if self.dir.exists() && recorded(&files.jail_link).as_deref() != Some(&*self.dir) {
            return Err(JailError::InUse {
                jail: self.dir.clone(),
                run_dir: cfg.run_dir.clone(),
            });
        }
        Ok(())
    }

    /// Makes the jail root (a stale one of this run directory is removed first), records
    /// it in `<run>/jail` and stages the VM's files into it. On error the jail is removed.
    pub(crate) fn prepare(
        &self,
        cfg: &VmConfig,
        files: &RunFiles,
        firecracker: &Path,
    ) -> Result<(), JailError> {
        self.check(cfg, files)?;
        remove(&self.dir);
        let _ = std::fs::remove_file(&files.jail_link);
        std::fs::create_dir_all(&self.root).map_err(self.io("creating", &self.root))?;
        std::os::unix::fs::symlink(&self.dir, &files.jail_link)
            .map_err(self.io("linking", &files.jail_link))?;
        let staged = self
            .stage_libraries(firecracker)
            .and_then(|()| self.stage_all(cfg, files));
        if staged.is_err() {
            remove_recorded(files);
        }
        staged
    }

    fn stage_all(&self, cfg: &VmConfig, files: &RunFiles) -> Result<(), JailError> {
        self.stage_small(&cfg.kernel, KERNEL)?;
        if let Some(initrd) = &cfg.initrd {
            self.stage_small(initrd, INITRD)?;
        }
        for (i, d) in cfg.disks.iter().enumerate() {
            let dst = self.root.join(super::api::drive_id(i));
            self.link_or_bind(&d.path, &dst)?;
            if !d.read_only {
                self.chown(&d.path)?;
            }
        }
        if let Some(dir) = &cfg.restore {
            // Never chowned: forks of one snapshot share these files, read-only (the
            // memory file is mapped privately). A jailed save left them to the jailed ids.
            let (state, memory) = super::api::saved_files(dir);
            let (in_state, in_memory) = super::api::saved_files(&self.root);
            self.link_or_bind(&state, &in_state)?;
            self.link_or_bind(&memory, &in_memory)?;
        }
        self.link_or_bind(&files.console_log, &self.root.join(CONSOLE))?;
        self.chown(&files.console_log)?;
        // The caller's listener, if bound; without it guest connections fail as they
        // would unjailed.
        if std::fs::symlink_metadata(&files.vsock_agent_listen).is_ok() {
            let name = files
                .vsock_agent_listen
                .file_name()
                .map_or_else(|| "vsock.sock_1025".into(), |n| n.to_os_string());
            self.link_or_bind(&files.vsock_agent_listen, &self.root.join(name))?;
            self.chown(&files.vsock_agent_listen)?;
        }
        Ok(())
    }

    /// A dynamically linked Firecracker (a glibc build, like the one the tests use) needs
    /// its loader and libraries inside the jail, at the paths `ldd` names; upstream's
    /// static musl builds need none (`ldd` says so, or is absent: nothing is staged).
    fn stage_libraries(&self, firecracker: &Path) -> Result<(), JailError> {
        let Ok(out) = std::process::Command::new("ldd")
            .arg(firecracker)
            .stdin(std::process::Stdio::null())
            .output()
        else {
            return Ok(());
        };
        if !out.status.success() {
            return Ok(());
        }
        for lib in ldd_paths(&String::from_utf8_lossy(&out.stdout)) {
            let Ok(rel) = lib.strip_prefix("/") else {
                continue;
            };
            let dst = self.root.join(rel);
            if let Some(dir) = dst.parent() {
                std::fs::create_dir_all(dir).map_err(self.io("creating", dir))?;
            }
            // Link the file itself: library names are often symlinks.
            let src = std::fs::canonicalize(&lib).map_err(self.io("resolving", &lib))?;
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).map_err(self.io("copying", &src))?;
            }
        }
        Ok(())
    }

    /// Kernel and initrd: a hard link when readable by the jailed ids, else a copy
    /// given to them (never chowning a file other VMs share).
    fn stage_small(&self, src: &Path, name: &str) -> Result<(), JailError> {
        let dst = self.root.join(name);
        let m = std::fs::metadata(src).map_err(self.io("reading", src))?;
        if readable_by(&m, self.uid, self.gid) && std::fs::hard_link(src, &dst).is_ok() {
            return Ok(());
        }
        std::fs::copy(src, &dst).map_err(self.io("copying", src))?;
        self.chown(&dst)
    }

    /// The real file inside the jail: a hard link, or a bind mount across filesystems.
    fn link_or_bind(&self, src: &Path, dst: &Path) -> Result<(), JailError> {
        match std::fs::hard_link(src, dst) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                std::fs::File::create(dst).map_err(self.io("creating", dst))?;
                bind_mount(src, dst).map_err(self.io("bind-mounting", src))
            }
            Err(e) => Err(self.io("hard-linking", src)(e)),
        }
    }

    fn chown(&self, path: &Path) -> Result<(), JailError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(self.io("changing the owner of", path))
    }

    /// The jailer's command line (Firecracker's own arguments after `--`).
    pub(crate) fn command_args(
        &self,
        jailer: &JailerConfig,
        firecracker: &Path,
    ) -> Vec<std::ffi::OsString> {
        let base = self
            .dir
            .parent()
            .and_then(Path::parent)
            .map_or_else(|| jailer.chroot_base.clone(), Path::to_path_buf);
        let mut v: Vec<std::ffi::OsString> = vec![
            "--id".into(),
            self.id.clone().into(),
            "--exec-file".into(),
            firecracker.into(),
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--chroot-base-dir".into(),
            base.into(),
        ];
        if cgroup2_mount().is_some() {
            v.extend(["--cgroup-version".into(), "2".into()]);
        }
        // The jailer passes `--id` itself.
        v.extend(["--".into(), "--api-sock".into(), API_SOCKET.into()]);
        v
    }

    /// Symlinks a socket Firecracker made in the jail from its usual run-directory name.
    pub(crate) fn expose(&self, jailed: &str, at: &Path) -> Result<(), JailError> {
        let _ = std::fs::remove_file(at);
        std::os::unix::fs::symlink(self.host_path(jailed), at).map_err(self.io("linking", at))
    }
}

/// The absolute paths in `ldd`'s output (`libc.so.6 => /lib/…/libc.so.6 (0x…)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`); the vDSO has none.
fn ldd_paths(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|l| {
            let l = l.rsplit_once("=>").map_or(l, |(_, r)| r).trim();
            let p = l.split_once(" (").map_or(l, |(p, _)| p).trim();
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect()
}

/// Whether `m` grants read access to `uid`/`gid` (no supplementary groups: the jailer
/// drops them).
fn readable_by(m: &std::fs::Metadata, uid: u32, gid: u32) -> bool {
    let mode = m.mode();
    uid == 0
        || (m.uid() == uid && mode & 0o400 != 0)
        || (m.uid() != uid && m.gid() == gid && mode & 0o040 != 0)
        || (m.uid() != uid && m.gid() != gid && mode & 0o004 != 0)
}

fn bind_mount(src: &Path, dst: &Path) -> io::Result<()> {
    let (s, d) = (cstring(src)?, cstring(dst)?);
    // SAFETY: two valid NUL-terminated paths; null fstype and data are allowed for
    // MS_BIND.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn cstring(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// The first cgroup2 mount point in `/proc/mounts`.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(dir)))
    })
}

/// `/proc/mounts` and `mountinfo` escape space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The jail directory `<run>/jail` points to.
fn recorded(link: &Path) -> Option<PathBuf> {
    std::fs::read_link(link).ok().filter(|p| p.is_absolute())
}

/// The jail root this run directory records, if the VM is jailed.
pub(crate) fn recorded_root(files: &RunFiles) -> Option<PathBuf> {
    recorded(&files.jail_link).map(|d| d.join("root"))
}

/// A failed step of moving a saved state out of a jail or restricting it.
pub(crate) fn saved_state_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> JailError {
    let path = path.to_path_buf();
    move |source| JailError::SavedState {
        action,
        path,
        source,
    }
}

/// Where a jailed Firecracker writes a snapshot, under its jail root.
pub(crate) const SNAPSHOT_DIR: &str = "snapshot";

/// A fresh, empty `<root>/snapshot` the jailed ids (the jail root's owner) can write.
pub(crate) fn snapshot_dir(root: &Path) -> Result<PathBuf, JailError> {
    let owner = std::fs::metadata(root).map_err(saved_state_err("read", root))?;
    let dir = root.join(SNAPSHOT_DIR);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(saved_state_err("create", &dir))?;
    std::os::unix::fs::chown(&dir, Some(owner.uid()), Some(owner.gid()))
        .map_err(saved_state_err("change the owner of", &dir))?;
    Ok(dir)
}

/// Moves a file the jailed Firecracker wrote to `to`: a rename, or a copy across
/// filesystems.
pub(crate) fn move_out(from: &Path, to: &Path) -> Result<(), JailError> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::copy(from, to).map_err(saved_state_err("copy", from))?;
            std::fs::remove_file(from).map_err(saved_state_err("remove", from))
        }
        Err(e) => Err(saved_state_err("move", from)(e)),
    }
}

/// Removes the jail this run directory records (bind mounts, directory, cgroup, the
/// record). Missing pieces are fine; call it once Firecracker is gone.
pub(crate) fn remove_recorded(files: &RunFiles) {
    if let Some(dir) = recorded(&files.jail_link) {
        // Only a jail: `<dir>/root` is what the jailer makes.
        if dir.join("root").is_dir() || !dir.exists() {
            remove(&dir);
            if let Some(id) = dir.file_name().and_then(|n| n.to_str())
                && let Some(exe) = dir.parent().and_then(Path::file_name)
                && let Some(cg) = cgroup2_mount()
            {
                let _ = std::fs::remove_dir(cg.join(exe).join(id));
            }
        }
    }
    let _ = std::fs::remove_file(&files.jail_link);
}

/// Relinks the caller's (new) listen socket into the jail this run directory records;
/// nothing without a jail. The jail's owner is read from the jail root (the jailer
/// chowned it to the jailed ids).
pub(crate) fn relink_listener(files: &RunFiles) -> Result<(), JailError> {
    let Some(dir) = recorded(&files.jail_link) else {
        return Ok(());
    };
    let root = dir.join("root");
    let io = |action, path: &Path| {
        let (jail, path) = (dir.clone(), path.to_path_buf());
        move |source| JailError::Io {
            jail,
            action,
            path,
            source,
        }
    };
    let owner = std::fs::metadata(&root).map_err(io("reading", &root))?;
    let name = files
        .vsock_agent_listen
        .file_name()
        .map_or_else(|| "vsock.sock_1025".into(), |n| n.to_os_string());
    let jail = Jail {
        root: root.clone(),
        id: dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        dir: dir.clone(),
        uid: owner.uid(),
        gid: owner.gid(),
    };
    let dst = root.join(name);
    match std::fs::remove_file(&dst) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            // A bind mount across filesystems: unmount it first.
            if let Ok(c) = cstring(&dst) {
                // SAFETY: a valid NUL-terminated path; MNT_DETACH needs nothing else.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            std::fs::remove_file(&dst).map_err(io("removing", &dst))?;
        }
        _ => {}
    }
    jail.link_or_bind(&files.vsock_agent_listen, &dst)?;
    jail.chown(&files.vsock_agent_listen)
}

/// Unmounts what is mounted under `dir` (deepest first), then deletes it.
fn remove(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let mut mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(4)
                .map(|m| PathBuf::from(unescape(m)))
        })
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for m in mounts {
        if let Ok(c) = cstring(&m) {
            // SAFETY: a valid NUL-terminated path; MNT_DETACH needs nothing else.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(jail = %dir.display(), "cannot remove the Firecracker jail: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_loader_and_libraries() {
        let out = "\tlinux-vdso.so.1 (0x00007f20c4661000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f20c401e000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f20c4663000)\n";
        assert_eq!(
            ldd_paths(out),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(ldd_paths("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/x\"), r"/x\");
    }

    #[test]
    fn the_jailer_gets_its_flags_and_firecracker_its_socket() {
        let cfg = JailerConfig {
            path: "/usr/bin/jailer".into(),
            uid: 123,
            gid: 100,
            chroot_base: "/srv/jailer".into(),
        };
        let jail = Jail {
            dir: "/srv/jailer/firecracker/vm-1".into(),
            root: "/srv/jailer/firecracker/vm-1/root".into(),
            id: "vm-1".into(),
            uid: 123,
            gid: 100,
        };
        let args: Vec<String> = jail
            .command_args(&cfg, Path::new("/opt/firecracker"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let s = args.join(" ");
        assert!(
            s.starts_with(
                "--id vm-1 --exec-file /opt/firecracker --uid 123 --gid 100 \
                 --chroot-base-dir /srv/jailer"
            ),
            "{s}"
        );
        assert!(s.ends_with(" -- --api-sock /fc.sock"), "{s}");
        assert_eq!(
            jail.host_path(API_SOCKET),
            Path::new("/srv/jailer/firecracker/vm-1/root/fc.sock")
        );
    }

    #[test]
    fn readability_follows_owner_group_other() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert!(readable_by(&m, m.uid(), 4242));
        assert!(readable_by(&m, 4242, m.gid()));
        assert!(!readable_by(&m, 4242, 4243));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o604)).unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert!(readable_by(&m, 4242, 4243));
        assert!(!readable_by(&m, 4242, m.gid()), "group bits apply first");
    }
}
