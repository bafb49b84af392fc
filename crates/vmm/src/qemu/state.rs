//! Pausing QEMU guests and saving and restoring their state, through QMP and QEMU's
//! migration stream.
//!
//! QEMU 7.2 (Debian 12) migrates only to sockets, commands and fds (`file:` URIs came in
//! 8.2), so the state travels through a Unix socket in the run directory: to save, the
//! driver listens and asks QEMU to `migrate` to it, writing what arrives to
//! [`STATE_FILE`]; to restore, QEMU starts with `-incoming unix:…` and the driver feeds
//! the file to it. No shell and no file descriptor passing; the socket works from inside
//! the VM's network namespace.
//!
//! Guest memory QEMU maps shared (a memfd: [`crate::VmConfig::shared_memory`]) stays out
//! of the stream (`x-ignore-shared`): the save copies the memfd, sparse, to [`MEMORY_FILE`]
//! through `/proc/PID/fd`, and restores map that file privately instead of loading it.
//!
//! # Invariants
//! - Only a paused guest is saved: its vCPUs are stopped, so memory, devices and (after
//!   QEMU's own flush) disks describe one moment. Migration inactivates the disks; the
//!   caller copies them, then resumes (`cont` reactivates them).
//! - A state file is complete or absent: written to a temporary name, synced, renamed.
//! - Every wait has a deadline; a failed migration is QEMU's own error message.

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::VmmError;
use crate::files::RunFiles;
use crate::launch::{LaunchError, remove_stale};
use crate::qmp::{Qmp, QmpError};

/// The saved state's file name in a [`crate::Vmm::save_state`] directory.
pub const STATE_FILE: &str = "qemu.state";
/// Guest memory in a save of a VM whose memory was shared ([`crate::VmConfig::shared_memory`]):
/// the state stream leaves it out, restores map it privately.
pub const MEMORY_FILE: &str = "memory";

/// How QEMU names its `memory-backend-memfd` (`/proc/PID/fd/N` links to `/memfd:NAME (deleted)`).
const MEMFD_LINK: &str = "/memfd:memory-backend-memfd";

/// Set on both sides of every save and restore (the stream's format depends on it): RAM
/// QEMU maps shared from a file is not streamed, the file itself carries it.
const IGNORE_SHARED: &str = "x-ignore-shared";

/// How long QMP commands may take to answer.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole save or restore stream may take (gigabytes of guest memory).
const STREAM_DEADLINE: Duration = Duration::from_secs(300);
/// Unthrottled: the guest is paused, the stream goes to a local file.
const MAX_BANDWIDTH: u64 = 1 << 40;

fn qmp(run_dir: &Path) -> Result<Qmp, QmpError> {
    Qmp::connect(&RunFiles::new(run_dir).qmp_socket, QMP_TIMEOUT)
}

/// `stop`: the vCPUs halt.
pub(crate) fn pause(run_dir: &Path) -> Result<(), VmmError> {
    qmp(run_dir)?.execute("stop")?;
    Ok(())
}

/// `cont`: the vCPUs run again (and disks inactivated by a save are reactivated).
pub(crate) fn resume(run_dir: &Path) -> Result<(), VmmError> {
    qmp(run_dir)?.execute("cont")?;
    Ok(())
}

/// Migrates the paused guest into `dest/`[`STATE_FILE`].
pub(crate) fn save(run_dir: &Path, dest: &Path) -> Result<(), VmmError> {
    let files = RunFiles::new(run_dir);
    let mut q = qmp(run_dir)?;
    let status = q.status()?;
    if !matches!(status.as_str(), "paused" | "postmigrate") {
        return Err(SaveError::NotPaused { status }.into());
    }
    // Shared memory is left out of the stream: it must be found before anything is saved.
    let memory = if has_shared_memory(&mut q)? {
        Some(shared_memory_of(&files).ok_or(SaveError::NoSharedMemory)?)
    } else {
        None
    };
    remove_stale(&files.migrate_socket)?;
    let listener = UnixListener::bind(&files.migrate_socket).map_err(|source| SaveError::Io {
        what: "binding the migration socket",
        path: files.migrate_socket.clone(),
        source,
    })?;
    let result = (|| {
        q.execute_with(
            "migrate-set-parameters",
            json!({ "max-bandwidth": MAX_BANDWIDTH }),
        )?;
        set_ignore_shared(&mut q)?;
        let uri = format!("unix:{}", files.migrate_socket.display());
        q.execute_with("migrate", json!({ "uri": uri }))?;
        let target = dest.join(STATE_FILE);
        let receiver = receive(listener, target);
        let outcome = wait_migration(&mut q);
        let received = receiver
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the receiving thread panicked")));
        outcome?;
        received.map_err(|source| SaveError::Io {
            what: "writing the saved state",
            path: dest.join(STATE_FILE),
            source,
        })?;
        match &memory {
            Some(memory) => save_memory(memory, dest),
            None => Ok(()),
        }
    })();
    let _ = std::fs::remove_file(&files.migrate_socket);
    result
}

fn set_ignore_shared(q: &mut Qmp) -> Result<(), QmpError> {
    q.execute_with(
        "migrate-set-capabilities",
        json!({ "capabilities": [{ "capability": IGNORE_SHARED, "state": true }] }),
    )
    .map(drop)
}

/// Whether QEMU maps any guest memory shared (`query-memdev`), which the stream leaves out.
fn has_shared_memory(q: &mut Qmp) -> Result<bool, QmpError> {
    let memdevs = q.execute("query-memdev")?;
    Ok(memdevs
        .as_array()
        .is_some_and(|m| m.iter().any(|d| d["share"].as_bool() == Some(true))))
}

/// The paused guest's shared memory copied beside its state (complete or absent, like the
/// state).
fn save_memory(memory: &Path, dest: &Path) -> Result<(), VmmError> {
    let target = dest.join(MEMORY_FILE);
    let partial = target.with_extension("partial");
    let copied = crate::copy_sparse(memory, &partial)
        .and_then(|()| {
            std::fs::set_permissions(
                &partial,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
        })
        .and_then(|()| std::fs::rename(&partial, &target));
    copied.map_err(|source| {
        let _ = std::fs::remove_file(&partial);
        SaveError::Io {
            what: "copying the guest's memory",
            path: target,
            source,
        }
        .into()
    })
}

/// `/proc/PID/fd/N` of the running QEMU's guest memfd: opening it opens the memfd itself
/// (QEMU runs as this user). Only this driver's launch records name the process.
fn shared_memory_of(files: &RunFiles) -> Option<PathBuf> {
    let bytes = std::fs::read(&files.pids_json).ok()?;
    let records: Vec<crate::process::ProcessRecord> = serde_json::from_slice(&bytes).ok()?;
    let vmm = records
        .into_iter()
        .find(|r| r.role == crate::process::ROLE_VMM && r.is_alive())?;
    let fds = PathBuf::from(format!("/proc/{}/fd", vmm.pid));
    std::fs::read_dir(&fds).ok()?.flatten().find_map(|e| {
        let link = std::fs::read_link(e.path()).ok()?;
        link.as_os_str()
            .as_encoded_bytes()
            .starts_with(MEMFD_LINK.as_bytes())
            .then(|| e.path())
    })
}

/// Starts the restore of a QEMU launched with `-incoming defer`: once QMP answers, the
/// capabilities the save used, then the incoming migration on the migration socket (which
/// [`feed`] fills).
pub(crate) fn start_incoming(files: &RunFiles, within: Duration) -> Result<(), QmpError> {
    let until = Instant::now() + within;
    let mut q = loop {
        match Qmp::connect(&files.qmp_socket, QMP_TIMEOUT) {
            Ok(q) => break q,
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    set_ignore_shared(&mut q)?;
    let uri = format!("unix:{}", files.migrate_socket.display());
    q.execute_with("migrate-incoming", json!({ "uri": uri }))
        .map(drop)
}

/// Accepts QEMU's connection and writes the stream to `target` (via a temporary name).
fn receive(listener: UnixListener, target: PathBuf) -> std::thread::JoinHandle<io::Result<()>> {
    std::thread::spawn(move || {
        let stream = accept_within(&listener, STREAM_DEADLINE)?;
        stream.set_read_timeout(Some(STREAM_DEADLINE))?;
        let partial = target.with_extension("partial");
        let written = (|| {
            // Guest memory: readable by its owner only.
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)?;
            io::copy(&mut { stream }, &mut out)?;
            out.sync_all()?;
            std::fs::rename(&partial, &target)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written
    })
}

fn accept_within(listener: &UnixListener, deadline: Duration) -> io::Result<UnixStream> {
    listener.set_nonblocking(true)?;
    let until = Instant::now() + deadline;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= until {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "QEMU never connected to the migration socket",
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Polls `query-migrate` until the migration completed or failed.
fn wait_migration(q: &mut Qmp) -> Result<(), VmmError> {
    let until = Instant::now() + STREAM_DEADLINE;
    loop {
        let info = q.execute("query-migrate")?;
        match info.get("status").and_then(Value::as_str).unwrap_or("") {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                let why = info
                    .get("error-desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                return Err(SaveError::Failed {
                    reason: why.chars().take(500).collect(),
                }
                .into());
            }
            _ if Instant::now() >= until => {
                let _ = q.execute("migrate_cancel");
                return Err(SaveError::TimedOut {
                    after: STREAM_DEADLINE,
                }
                .into());
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Feeds `state_dir/`[`STATE_FILE`] to a QEMU started with `-incoming unix:…`, in the
/// background; QEMU exits when the stream is bad or cut short, which the launch sees.
pub(crate) fn feed(
    files: &RunFiles,
    state_dir: &Path,
) -> Result<std::thread::JoinHandle<io::Result<()>>, LaunchError> {
    let path = state_dir.join(STATE_FILE);
    let mut file =
        std::fs::File::open(&path).map_err(|source| LaunchError::SavedState { path, source })?;
    let socket = files.migrate_socket.clone();
    Ok(std::thread::spawn(move || {
        let until = Instant::now() + STREAM_DEADLINE;
        let mut stream = loop {
            match UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        stream.set_write_timeout(Some(STREAM_DEADLINE))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        }
    }))
}

/// Why saving a guest's state failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Only paused guests are saved.
    #[error("the guest is {status}, not paused: pause it first")]
    NotPaused {
        /// QEMU's run state.
        status: String,
    },
    /// QEMU's migration failed.
    #[error("QEMU could not save the guest: {reason}")]
    Failed {
        /// QEMU's `error-desc`.
        reason: String,
    },
    /// QEMU maps the guest's memory shared, but its memfd is not among its open files.
    #[error(
        "the guest's memory is shared but QEMU's memfd was not found in /proc (is its pid in pids.json?)"
    )]
    NoSharedMemory,
    /// The migration did not finish in time.
    #[error("saving the guest took longer than {after:?}: cancelled")]
    TimedOut {
        /// The deadline.
        after: Duration,
    },
    /// The socket or the file failed.
    #[error("{what} ({path}): {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The socket or file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}
