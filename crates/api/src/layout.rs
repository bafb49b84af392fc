//! Where banger keeps things on disk (XDG base directories).
//!
//! Both binaries compute the same [`Layout`] from the environment, so pointing
//! `XDG_STATE_HOME`, `XDG_CACHE_HOME` and `XDG_RUNTIME_DIR` elsewhere gives a fully
//! isolated instance (the integration tests run many side by side this way).

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
    pub uid: u32,
}

impl LayoutVars {
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
        let home = vars
            .home
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/banger-home-{}", vars.uid)));
        let state_base = vars
            .xdg_state_home
            .clone()
            .unwrap_or_else(|| home.join(".local/state"));
        let cache_base = vars
            .xdg_cache_home
            .clone()
            .unwrap_or_else(|| home.join(".cache"));
        // Without XDG_RUNTIME_DIR, use a per-uid directory in /tmp: short enough for the
        // 108-byte socket path limit, and the 0700 mode keeps it private.
        let runtime_base = vars
            .xdg_runtime_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/banger-runtime-{}", vars.uid)));
        Layout {
            state_dir: state_base.join("banger"),
            cache_dir: cache_base.join("banger"),
            runtime_dir: runtime_base.join("banger"),
        }
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
}
