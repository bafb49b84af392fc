//! The process-wide child reaper.
//!
//! One table, pid → waiting exec session, behind one mutex. Invariants:
//! - A child is forked *while the table is locked* and registered before the lock is
//!   released ([`spawn_registered`]); reaping also holds the lock around `waitpid`. So a
//!   child that exits at once is never reaped before its session is registered, and
//!   `waitpid(-1)` never races with a spawner's own wait.
//! - Reaping is `waitpid(-1, WNOHANG)` until nothing is left, driven by SIGCHLD. Signals
//!   coalesce, so each wake-up drains every exited child. As PID 1 this also reaps the
//!   orphans reparented to us; their statuses go to a small bounded list.
//! - Nothing else in the agent waits for children (no `tokio::process`, no
//!   `std::process::Child::wait`): that would steal statuses from this table.
//!
//! The table is global (children are per process, not per runtime); every runtime that
//! serves calls [`start`] so SIGCHLD is handled as long as any of them runs.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::{Mutex, MutexGuard};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// A raw `waitpid` status.
pub type WaitStatus = libc::c_int;

/// Statuses of children nobody waits for (orphans), kept for diagnosis only.
const UNCLAIMED_KEPT: usize = 64;

struct Table {
    waiting: BTreeMap<libc::pid_t, oneshot::Sender<WaitStatus>>,
    unclaimed: VecDeque<(libc::pid_t, WaitStatus)>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    waiting: BTreeMap::new(),
    unclaimed: VecDeque::new(),
});

fn table() -> MutexGuard<'static, Table> {
    // A panic while holding the lock leaves the map consistent (plain inserts/removes).
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `fork` (which forks and returns the child's pid) with the table locked, and
/// registers the child before unlocking. The receiver gets the child's wait status.
pub fn spawn_registered(
    fork: impl FnOnce() -> io::Result<libc::pid_t>,
) -> io::Result<(libc::pid_t, oneshot::Receiver<WaitStatus>)> {
    let mut t = table();
    let pid = fork()?;
    let (tx, rx) = oneshot::channel();
    if let Some(i) = t.unclaimed.iter().position(|&(p, _)| p == pid) {
        // Cannot happen while forks hold the lock; kept so a status is never lost.
        if let Some((_, status)) = t.unclaimed.remove(i) {
            let _ = tx.send(status);
        }
    } else {
        t.waiting.insert(pid, tx);
    }
    Ok((pid, rx))
}

/// Reaps every child that has exited and hands each status to its session.
pub fn reap_now() {
    let mut t = table();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid int for the kernel to fill.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid == 0 {
            return;
        }
        if pid < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return; // ECHILD: no children at all.
        }
        match t.waiting.remove(&pid) {
            // A dropped receiver (session gone) just discards the status.
            Some(tx) => drop(tx.send(status)),
            None => {
                if t.unclaimed.len() == UNCLAIMED_KEPT {
                    t.unclaimed.pop_front();
                }
                t.unclaimed.push_back((pid, status));
            }
        }
    }
}

/// Starts reaping on SIGCHLD in the current tokio runtime (call it inside one).
pub fn start() -> io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        // Children that exited before the handler existed.
        reap_now();
        while sigchld.recv().await.is_some() {
            reap_now();
        }
    });
    Ok(())
}
