//! Launch plumbing both drivers share: the processes of a launch in progress
//! ([`Started`], mirrored in `pids.json` and killed if the launch fails), a run
//! directory's earlier processes, its files, and the errors with the tail of a program's
//! output.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::process::ProcessRecord;

/// How many lines of a process's stderr an error carries.
pub(crate) const TAIL_LINES: usize = 20;

/// Why a launch failed after validation. Whatever was started has been stopped.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The vsock channel was asked for but no helper is known.
    #[error(
        "the vsock channel needs vhost-device-vsock, which was not found: install it \
         (`cargo install --locked vhost-device-vsock`, or set $BANGER_VHOST_VSOCK) or use \
         the serial channel"
    )]
    NoVsockBackend,
    /// A file in the run directory could not be created or removed.
    #[error("cannot prepare {path}: {source}: check the run directory's permissions")]
    RunFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The saved state to restore cannot be read.
    #[error("cannot read the saved state {path}: {source}: is the snapshot complete?")]
    SavedState {
        /// The state file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("cannot start {program}: {source}: check that it is installed and executable")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The run directory's `pids.json` names a process that still runs.
    #[error(
        "the VM in {run_dir} still runs ({role} process {pid}): stop it before launching \
         it again"
    )]
    AlreadyRunning {
        /// The run directory.
        run_dir: PathBuf,
        /// The live process's role.
        role: String,
        /// Its pid.
        pid: u32,
    },
    /// A process exited before it was ready.
    #[error(
        "{program} exited during startup ({status}): the cause is in its last lines below \
         (all of its output is in {log}):\n{tail}"
    )]
    Exited {
        /// The program.
        program: PathBuf,
        /// How it ended.
        status: String,
        /// Its output file.
        log: PathBuf,
        /// The last lines of that file.
        tail: String,
    },
    /// A process did not become ready in time.
    #[error(
        "{program} was not ready after {timeout:?} ({waiting_for}); the host may be \
         overloaded. Its output ({log}) ends with:\n{tail}"
    )]
    NotReady {
        /// The program.
        program: PathBuf,
        /// The deadline.
        timeout: Duration,
        /// What was awaited.
        waiting_for: String,
        /// Its output file.
        log: PathBuf,
        /// The last lines of that file.
        tail: String,
    },
}

/// Processes of a launch in progress: written to `pids.json` as they start, killed if the
/// launch fails (dropped without [`Started::keep`]).
pub(crate) struct Started<'a> {
    pids_json: &'a Path,
    records: Vec<ProcessRecord>,
    keep: bool,
}

impl<'a> Started<'a> {
    pub(crate) fn new(pids_json: &'a Path) -> Started<'a> {
        Started {
            pids_json,
            records: Vec::new(),
            keep: false,
        }
    }

    pub(crate) fn add(&mut self, r: ProcessRecord) -> Result<(), LaunchError> {
        self.records.push(r);
        write_pids(self.pids_json, &self.records)
    }

    pub(crate) fn keep(mut self) -> Vec<ProcessRecord> {
        self.keep = true;
        std::mem::take(&mut self.records)
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for r in self.records.iter().rev() {
            r.kill_now();
        }
        if !self.records.is_empty() {
            let _ = std::fs::remove_file(self.pids_json);
        }
    }
}

/// A live process of an earlier launch in the same run directory, if any.
pub(crate) fn still_running(pids_json: &Path) -> Option<ProcessRecord> {
    let bytes = std::fs::read(pids_json).ok()?;
    let records: Vec<ProcessRecord> = serde_json::from_slice(&bytes).ok()?;
    records.into_iter().find(ProcessRecord::is_alive)
}

/// `pids.json`, replaced atomically.
fn write_pids(path: &Path, records: &[ProcessRecord]) -> Result<(), LaunchError> {
    let err = |source| LaunchError::RunFile {
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec_pretty(records).map_err(|e| err(e.into()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

pub(crate) fn create(path: &Path) -> Result<File, LaunchError> {
    File::create(path).map_err(|source| LaunchError::RunFile {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn clone_file(f: &File, path: &Path) -> Result<File, LaunchError> {
    f.try_clone().map_err(|source| LaunchError::RunFile {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn remove_stale(path: &Path) -> Result<(), LaunchError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LaunchError::RunFile {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

pub(crate) fn exited(program: &Path, status: ExitStatus, log: &Path) -> LaunchError {
    LaunchError::Exited {
        program: program.to_path_buf(),
        status: status.to_string(),
        log: log.to_path_buf(),
        tail: tail(log),
    }
}

/// The last [`TAIL_LINES`] lines of a log (read from its last 16 KiB).
pub(crate) fn tail(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let _ = f.read_to_end(&mut buf);
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let t = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    if t.trim().is_empty() {
        "(nothing)".to_string()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let t = tail(&p);
        assert!(t.starts_with("line 80\n") && t.ends_with("line 99"), "{t}");
        assert_eq!(tail(&dir.path().join("missing")), "(nothing)");
    }
}
