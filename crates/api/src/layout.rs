//! Where banger keeps things on disk (XDG base directories), and the one check that a
//! directory holding the socket is ours alone.
//!
//! Both binaries compute the same [`Layout`] from the environment, so pointing
//! `XDG_STATE_HOME`, `XDG_CACHE_HOME` and `XDG_RUNTIME_DIR` elsewhere gives a fully
//! isolated instance (the integration tests run many side by side this way).
//!
//! Without `XDG_RUNTIME_DIR` (su, sudo -u, cron, containers) the socket lives under the
//! shared temp dir (`$TMPDIR`, else `/tmp`): `<tmp>/banger-runtime-<uid>/banger`; without
//! `HOME`, state and cache live under `<tmp>/banger-home-<uid>`. Anyone can create those
//! names first, so both binaries create them with `mkdir(0700)` and refuse them unless
//! [`check_private_dir`] passes: a real directory (not a symlink), ours, writable by nobody
//! else. The CLI also checks who serves the socket before it sends a byte.

use std::path::{Path, PathBuf};

/// Every path the daemon and the CLI agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `$XDG_STATE_HOME/banger`: database, images, kernels, log.
    pub state_dir: PathBuf,
    /// `$XDG_CACHE_HOME/banger`: re-creatable data (OCI blobs).
    pub cache_dir: PathBuf,
    /// `$XDG_RUNTIME_DIR/banger`: the socket (directory mode 0700).
    pub runtime_dir: PathBuf,
}

/// Environment values that [`Layout::from_vars`] reads; split out so tests need not
/// mutate the process environment.
#[derive(Debug, Clone, Default)]
pub struct LayoutVars {
    pub xdg_state_home: Option<PathBuf>,
    pub xdg_cache_home: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub home: Option<PathBuf>,
    /// The shared temp dir (`$TMPDIR`); `None` means `/tmp`.
    pub tmp_dir: Option<PathBuf>,
    pub uid: u32,
}

impl LayoutVars {
    fn tmp_dir(&self) -> PathBuf {
        self.tmp_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/tmp"))
    }

    /// `<tmp>/banger-runtime-<uid>`: the runtime base without `XDG_RUNTIME_DIR`.
    pub fn fallback_runtime_base(&self) -> PathBuf {
        self.tmp_dir().join(format!("banger-runtime-{}", self.uid))
    }

    /// `<tmp>/banger-home-<uid>`: the home without `HOME`.
    pub fn fallback_home(&self) -> PathBuf {
        self.tmp_dir().join(format!("banger-home-{}", self.uid))
    }

    pub fn from_env() -> Self {
        // Empty or relative values must be ignored (XDG base directory spec).
        let abs = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        LayoutVars {
            xdg_state_home: abs("XDG_STATE_HOME"),
            xdg_cache_home: abs("XDG_CACHE_HOME"),
            xdg_runtime_dir: abs("XDG_RUNTIME_DIR"),
            home: abs("HOME"),
            tmp_dir: Some(std::env::temp_dir()).filter(|p| p.is_absolute()),
            // SAFETY: getuid has no preconditions and cannot fail.
            uid: unsafe { libc::getuid() },
        }
    }
}

impl Layout {
    pub fn from_env() -> Self {
        Self::from_vars(&LayoutVars::from_env())
    }

    pub fn from_vars(vars: &LayoutVars) -> Self {
        let home = vars.home.clone().unwrap_or_else(|| vars.fallback_home());
        let state_base = vars
            .xdg_state_home
            .clone()
            .unwrap_or_else(|| home.join(".local/state"));
        let cache_base = vars
            .xdg_cache_home
            .clone()
            .unwrap_or_else(|| home.join(".cache"));
        // Without XDG_RUNTIME_DIR, a per-uid directory in the temp dir: short enough for the
        // 108-byte socket path limit; see the module docs for why it is checked.
        let runtime_base = vars
            .xdg_runtime_dir
            .clone()
            .unwrap_or_else(|| vars.fallback_runtime_base());
        Layout {
            state_dir: state_base.join("banger"),
            cache_dir: cache_base.join("banger"),
            runtime_dir: runtime_base.join("banger"),
        }
    }

    /// The directories of this layout that sit in the shared temp dir (the fallbacks for an
    /// unset `XDG_RUNTIME_DIR` or `HOME`, as [`LayoutVars::from_env`] sees them): whoever
    /// starts a daemon creates them private and checks them first.
    pub fn shared_tmp_bases(&self) -> Vec<PathBuf> {
        self.shared_tmp_bases_for(&LayoutVars::from_env())
    }

    pub fn shared_tmp_bases_for(&self, vars: &LayoutVars) -> Vec<PathBuf> {
        let runtime = vars.fallback_runtime_base();
        let home = vars.fallback_home();
        let mut bases = Vec::new();
        if self.runtime_dir.parent() == Some(runtime.as_path()) {
            bases.push(runtime);
        }
        if self.state_dir.starts_with(&home) || self.cache_dir.starts_with(&home) {
            bases.push(home);
        }
        bases
    }

    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.sock")
    }
    /// Held (flock) by the running daemon; guards the socket.
    pub fn runtime_lock_path(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.lock")
    }
    /// Held (flock) by the running daemon; guards the state dir.
    pub fn state_lock_path(&self) -> PathBuf {
        self.state_dir.join("bangerd.lock")
    }
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("banger.db")
    }
    pub fn log_path(&self) -> PathBuf {
        self.state_dir.join("bangerd.log")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }
    /// One directory per VM: its disks, console log, sockets and pid file.
    pub fn vms_dir(&self) -> PathBuf {
        self.state_dir.join("vms")
    }

    /// One directory per snapshot: saved state, disk copies, boot files.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.state_dir.join("snapshots")
    }

    /// Guest initramfs files, built per kernel and agent and reused.
    pub fn initramfs_dir(&self) -> PathBuf {
        self.state_dir.join("initramfs")
    }

    pub fn kernels_dir(&self) -> PathBuf {
        self.state_dir.join("kernels")
    }
    /// Content-addressed OCI blobs (`blobs/sha256/<hex>`, OCI layout compatible).
    pub fn oci_cache_dir(&self) -> PathBuf {
        self.cache_dir.join("oci")
    }

    /// A copy of this layout with other roots (the daemon's `--state-dir` etc. flags).
    pub fn with_overrides(
        mut self,
        state_dir: Option<&Path>,
        cache_dir: Option<&Path>,
        runtime_dir: Option<&Path>,
    ) -> Self {
        if let Some(p) = state_dir {
            self.state_dir = p.to_path_buf();
        }
        if let Some(p) = cache_dir {
            self.cache_dir = p.to_path_buf();
        }
        if let Some(p) = runtime_dir {
            self.runtime_dir = p.to_path_buf();
        }
        self
    }
}

/// Why a directory that must be ours alone is not (or could not be checked).
#[derive(Debug)]
pub enum PrivateDirError {
    /// `lstat` or `mkdir` failed (a missing directory is `NotFound`).
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A symlink: whoever made it chooses where the socket goes.
    Symlink {
        path: PathBuf,
    },
    NotADirectory {
        path: PathBuf,
    },
    /// Someone else created it first.
    ForeignOwner {
        path: PathBuf,
        owner: u32,
        uid: u32,
    },
    /// Group or others may write in it (replace the socket, rename the directory).
    OpenToOthers {
        path: PathBuf,
        mode: u32,
    },
}

impl PrivateDirError {
    pub fn path(&self) -> &Path {
        match self {
            PrivateDirError::Io { path, .. }
            | PrivateDirError::Symlink { path }
            | PrivateDirError::NotADirectory { path }
            | PrivateDirError::ForeignOwner { path, .. }
            | PrivateDirError::OpenToOthers { path, .. } => path,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, PrivateDirError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

impl std::fmt::Display for PrivateDirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path().display();
        let problem = match self {
            // The cause follows as the error's source.
            PrivateDirError::Io { .. } => return write!(f, "cannot check {path}"),
            PrivateDirError::Symlink { .. } => "is a symlink".to_string(),
            PrivateDirError::NotADirectory { .. } => "is not a directory".to_string(),
            PrivateDirError::ForeignOwner { owner, uid, .. } => {
                format!("belongs to uid {owner}, not to you (uid {uid})")
            }
            PrivateDirError::OpenToOthers { mode, .. } => {
                format!("is writable by group or others (mode {mode:04o})")
            }
        };
        write!(
            f,
            "refusing to use {path}: it {problem}, so another user could stand in for bangerd; \
             remove it (if it is not yours, find out who made it), or set XDG_RUNTIME_DIR \
             (or --runtime-dir) to a directory only you can write"
        )
    }
}

impl std::error::Error for PrivateDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PrivateDirError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Checks, without following a symlink, that `path` is a directory owned by `uid` that
/// neither group nor others may write.
pub fn check_private_dir(path: &Path, uid: u32) -> Result<(), PrivateDirError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).map_err(|source| PrivateDirError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let path = path.to_path_buf();
    if meta.file_type().is_symlink() {
        return Err(PrivateDirError::Symlink { path });
    }
    if !meta.is_dir() {
        return Err(PrivateDirError::NotADirectory { path });
    }
    if meta.uid() != uid {
        return Err(PrivateDirError::ForeignOwner {
            path,
            owner: meta.uid(),
            uid,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(PrivateDirError::OpenToOthers {
            path,
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// Creates `path` with mode 0700 if missing (`mkdir` does not follow a symlink there), then
/// [`check_private_dir`]s it. Its parent must exist.
pub fn create_private_dir(path: &Path, uid: u32) -> Result<(), PrivateDirError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(PrivateDirError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    check_private_dir(path, uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdg_variables_win() {
        let l = Layout::from_vars(&LayoutVars {
            xdg_state_home: Some("/s".into()),
            xdg_cache_home: Some("/c".into()),
            xdg_runtime_dir: Some("/r".into()),
            home: Some("/home/u".into()),
            tmp_dir: Some("/scratch".into()),
            uid: 1000,
        });
        assert_eq!(l.state_dir, PathBuf::from("/s/banger"));
        assert_eq!(l.oci_cache_dir(), PathBuf::from("/c/banger/oci"));
        assert_eq!(l.socket_path(), PathBuf::from("/r/banger/bangerd.sock"));
    }

    #[test]
    fn falls_back_to_home_and_tmp() {
        let l = Layout::from_vars(&LayoutVars {
            home: Some("/home/u".into()),
            uid: 1000,
            ..Default::default()
        });
        assert_eq!(l.state_dir, PathBuf::from("/home/u/.local/state/banger"));
        assert_eq!(l.cache_dir, PathBuf::from("/home/u/.cache/banger"));
        assert_eq!(
            l.runtime_dir,
            PathBuf::from("/tmp/banger-runtime-1000/banger")
        );
    }

    #[test]
    fn fallbacks_follow_the_temp_dir() {
        let vars = LayoutVars {
            tmp_dir: Some("/scratch/t".into()),
            uid: 7,
            ..Default::default()
        };
        let l = Layout::from_vars(&vars);
        assert_eq!(
            l.socket_path(),
            PathBuf::from("/scratch/t/banger-runtime-7/banger/bangerd.sock")
        );
        assert_eq!(
            l.state_dir,
            PathBuf::from("/scratch/t/banger-home-7/.local/state/banger")
        );
        assert_eq!(
            l.shared_tmp_bases_for(&vars),
            [
                PathBuf::from("/scratch/t/banger-runtime-7"),
                PathBuf::from("/scratch/t/banger-home-7")
            ]
        );
        let explicit = Layout::from_vars(&LayoutVars {
            xdg_runtime_dir: Some("/run/user/7".into()),
            home: Some("/home/u".into()),
            ..vars.clone()
        });
        assert!(explicit.shared_tmp_bases_for(&vars).is_empty());
    }

    /// A fresh directory under the temp dir, removed on drop (no tempfile dependency here).
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir()
                .join(format!("banger-layout-test-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir(&p).expect("mkdir scratch");
            Scratch(p)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn private_dirs_are_made_0700_and_checked_without_following_links() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = Scratch::new("private");
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let mode = |p: &Path| {
            std::fs::symlink_metadata(p)
                .expect("stat")
                .permissions()
                .mode()
        };

        let fresh = scratch.0.join("fresh");
        create_private_dir(&fresh, me).expect("a new dir is private");
        assert_eq!(mode(&fresh) & 0o777, 0o700);
        create_private_dir(&fresh, me).expect("an existing private dir is fine");

        let link = scratch.0.join("link");
        std::os::unix::fs::symlink(&fresh, &link).expect("symlink");
        let err = create_private_dir(&link, me).expect_err("a symlink is refused");
        assert!(matches!(err, PrivateDirError::Symlink { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&link.display().to_string()), "{text}");
        assert!(text.contains("XDG_RUNTIME_DIR"), "{text}");

        let shared = scratch.0.join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o770)).expect("chmod");
        let err = check_private_dir(&shared, me).expect_err("group-writable is refused");
        assert!(
            matches!(err, PrivateDirError::OpenToOthers { mode: 0o770, .. }),
            "{err}"
        );

        let file = scratch.0.join("file");
        std::fs::write(&file, b"").expect("write");
        let err = create_private_dir(&file, me).expect_err("a file is refused");
        assert!(
            matches!(err, PrivateDirError::NotADirectory { .. }),
            "{err}"
        );

        let err = check_private_dir(&fresh, me.wrapping_add(1)).expect_err("foreign owner");
        assert!(matches!(err, PrivateDirError::ForeignOwner { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("belongs to uid {me}")),
            "{err}"
        );

        let missing = check_private_dir(&scratch.0.join("missing"), me).expect_err("missing");
        assert!(missing.is_not_found());
    }
}
