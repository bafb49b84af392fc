//! Processes that outlive their launcher, and how to recognise them later.
//!
//! A VMM and its helpers run in their own session, so that VMs outlive a daemon restart
//! (and a signal to the daemon's process group): the next daemon finds them again from [`ProcessRecord`]s (pid plus the kernel's start time
//! from `/proc/<pid>/stat`).
//!
//! # Invariants
//! - A record names one process for its whole life: a pid that was reused by a newer
//!   process never matches, because its start time differs. A zombie counts as dead once none of its threads runs.
//! - Signals go through a pidfd opened *before* the start time is checked, so the process
//!   checked is the process signalled (no window for pid reuse).
//! - Whoever spawns through [`spawn_detached`] also reaps: a thread per child waits for it,
//!   so no zombie stays behind while the launcher lives. Liveness is never judged from that
//!   thread, always from a record.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One process of a VM, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// What it is: [`ROLE_VMM`] or [`ROLE_VSOCK`].
    pub role: String,
    /// Its pid.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks after boot).
    pub start_time: u64,
}

/// The role of the VMM process itself.
pub const ROLE_VMM: &str = "vmm";
/// The role of the vhost-user vsock helper.
pub const ROLE_VSOCK: &str = "vsock";

/// State and start time of a pid, from `/proc/<pid>/stat`.
struct Stat {
    state: char,
    start_time: u64,
}

fn read_stat(pid: u32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unparseable /proc/{pid}/stat: {text:?}"),
        )
    })
}

fn exited(state: char) -> bool {
    matches!(state, 'Z' | 'X')
}

/// Whether a thread of `pid` other than its (exited) leader still runs: after an
/// `exit_group` the leader turns zombie first while its other threads are still tearing
/// down (a VMM's vCPU threads unmapping guest memory), and the process is not gone until
/// they are.
fn other_threads_run(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|text| parse_stat(&text))
            .is_some_and(|s| !exited(s.state))
    })
}

/// `pid (comm) S ppid … starttime …`: the command may hold spaces and parentheses, so
/// fields are counted from the last `)`. After it, field 3 (state) is index 0, field 22
/// (starttime) index 19.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(Stat { state, start_time })
}

impl ProcessRecord {
    /// The record of the running process `pid`.
    pub fn of(pid: u32, role: impl Into<String>) -> io::Result<ProcessRecord> {
        let stat = read_stat(pid)?;
        Ok(ProcessRecord {
            role: role.into(),
            pid,
            start_time: stat.start_time,
        })
    }

    /// Whether this very process still runs: the pid exists, is not a zombie, and started
    /// when the record says.
    pub fn is_alive(&self) -> bool {
        read_stat(self.pid).is_ok_and(|s| {
            s.start_time == self.start_time && (!exited(s.state) || other_threads_run(self.pid))
        })
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`) to this process; `ESRCH` when it is gone (or the
    /// pid now belongs to another process).
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        let fd = Pidfd::open(self.pid)?;
        // The pidfd pins the process it was opened on: checked now, it is the one signalled.
        if !self.is_alive() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        fd.send_signal(sig)
    }

    /// Resolves when the process is gone (exited, even if not yet reaped). Works for
    /// processes that are not children of the caller. Needs a tokio runtime with IO.
    pub async fn exited(&self) {
        let fd = match Pidfd::open(self.pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
            Err(e) => {
                tracing::debug!(pid = self.pid, "pidfd_open failed ({e}); polling /proc");
                return self.poll_until_gone().await;
            }
        };
        if !self.is_alive() {
            return;
        }
        // SAFETY: the AsyncFd takes ownership of the OwnedFd, which stays open (and its
        // raw fd unchanged) until the AsyncFd is dropped.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd.0, tokio::io::Interest::READABLE)
        };
        match registered {
            // A pidfd becomes readable when its process exits; nothing is ever read.
            Ok(afd) => {
                if afd.readable().await.is_err() {
                    self.poll_until_gone().await;
                }
            }
            Err(e) => {
                tracing::debug!(pid = self.pid, "pidfd not pollable ({e}); polling /proc");
                self.poll_until_gone().await;
            }
        }
    }

    /// SIGTERM, then SIGKILL if the process has not exited after `grace`; resolves once it
    /// is gone. A process already gone is not an error.
    pub async fn stop(&self, grace: Duration) -> io::Result<()> {
        for (sig, wait) in [(libc::SIGTERM, grace), (libc::SIGKILL, KILL_WAIT)] {
            match self.signal(sig) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
                Err(e) => return Err(e),
            }
            if tokio::time::timeout(wait, self.exited()).await.is_ok() {
                return Ok(());
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{} process {} survived SIGKILL for {KILL_WAIT:?}",
                self.role, self.pid
            ),
        ))
    }

    /// The fallback of [`Self::exited`] where pidfds are unavailable.
    async fn poll_until_gone(&self) {
        while self.is_alive() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Blocks until the process is gone or `timeout` passed; true when gone.
    pub(crate) fn wait_gone(&self, timeout: Duration) -> bool {
        let fd = match Pidfd::open(self.pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return true,
            Err(_) => {
                let deadline = Instant::now() + timeout;
                while self.is_alive() {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                return true;
            }
        };
        !self.is_alive() || fd.wait_readable(timeout).unwrap_or(false) || !self.is_alive()
    }

    /// SIGKILL and wait (bounded) until gone; for cleaning up a failed launch.
    pub(crate) fn kill_now(&self) {
        if self.signal(libc::SIGKILL).is_ok() && !self.wait_gone(KILL_WAIT) {
            tracing::warn!(pid = self.pid, role = %self.role, "process survived SIGKILL");
        }
    }
}

/// How long a SIGKILLed process may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A pidfd (`pidfd_open(2)`).
pub(crate) struct Pidfd(OwnedFd);

impl Pidfd {
    pub(crate) fn open(pid: u32) -> io::Result<Pidfd> {
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory
        // is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send_signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, a null siginfo
        // (the kernel fills one in as kill(2) would) and no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the process exited within `timeout` (the pidfd turned readable).
    pub(crate) fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd that lives across the call.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 {
                return Ok(true);
            }
            if n == 0 {
                return Ok(false);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// A child started by [`spawn_detached`].
pub(crate) struct Spawned {
    /// Its record, taken before anyone could reap it.
    pub(crate) record: ProcessRecord,
    /// Receives the exit status once the reaper thread collected it.
    pub(crate) exit: mpsc::Receiver<ExitStatus>,
}

/// Spawns `cmd` in a session of its own (it outlives the caller and gets no terminal
/// signals), records it, and starts a thread that reaps it and then runs `after_exit`.
pub(crate) fn spawn_detached(
    cmd: &mut Command,
    role: &str,
    after_exit: impl FnOnce(ExitStatus) + Send + 'static,
) -> io::Result<Spawned> {
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // which is async-signal-safe and touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // Not reaped yet (only the thread below waits), so the pid is still this child's.
    let record = match ProcessRecord::of(child.id(), role) {
        Ok(r) => r,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let (tx, rx) = mpsc::channel();
    let name = format!("reap-{role}-{}", record.pid);
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn(move || match child.wait() {
            Ok(status) => {
                after_exit(status);
                let _ = tx.send(status);
            }
            Err(e) => tracing::warn!("waiting for child {}: {e}", child.id()),
        });
    if let Err(e) = spawned {
        // No reaper: kill it rather than leave an unmanaged child (the thread closure, and
        // the Child with it, is gone; the zombie stays until this process exits).
        record.kill_now();
        return Err(e);
    }
    Ok(Spawned { record, exit: rx })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn stat_parsing_counts_from_the_last_paren() {
        let line = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    123456 1000 10 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_time, 123456);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn records_follow_one_process() {
        let me = ProcessRecord::of(std::process::id(), "self").unwrap();
        assert!(me.is_alive());
        let older = ProcessRecord {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(
            !older.is_alive(),
            "a different start time is another process"
        );
        let e = older.signal(0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        me.signal(0).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn detached_children_are_reaped_and_watched() {
        let mut cmd = Command::new("sleep");
        cmd.arg("600").stdin(Stdio::null());
        let s = spawn_detached(&mut cmd, "test", |_| {}).unwrap();
        let rec = s.record.clone();
        assert!(rec.is_alive());
        // Its own session: the session id is its pid.
        // SAFETY: getsid only reads the process table.
        let sid = unsafe { libc::getsid(rec.pid as libc::pid_t) };
        assert_eq!(sid, rec.pid as libc::pid_t);
        rec.signal(libc::SIGTERM).unwrap();
        tokio::time::timeout(Duration::from_secs(30), rec.exited())
            .await
            .expect("exited() resolves after SIGTERM");
        assert!(!rec.is_alive());
        let status = s.exit.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15)
        );
        // Gone for good: exited() on a dead record resolves at once, stop() is a no-op.
        rec.exited().await;
        rec.stop(Duration::from_secs(1)).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_escalates_to_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"trap '' TERM; : > "$0"; while :; do :; done"#)
            .arg(&ready)
            .stdin(Stdio::null());
        let s = spawn_detached(&mut cmd, "stubborn", |_| {}).unwrap();
        let rec = s.record.clone();
        banger_testkit::wait::until("the shell to ignore SIGTERM", || ready.exists());
        let started = Instant::now();
        rec.stop(Duration::from_millis(300)).await.unwrap();
        assert!(!rec.is_alive());
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_lives_while_any_thread_runs() {
        // The main thread leaves with exit(2) (not exit_group): the leader turns zombie
        // while the other thread runs on, as in the middle of a VMM's exit.
        let script = "import ctypes, threading, time\n\
                      threading.Thread(target=time.sleep, args=(600,)).start()\n\
                      ctypes.CDLL(None).syscall(60, 0)\n";
        let mut cmd = Command::new("python3");
        cmd.args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let s = spawn_detached(&mut cmd, "threads", |_| {}).unwrap();
        let rec = s.record.clone();
        // Killed also when an assertion fails.
        struct KillOnDrop(ProcessRecord);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                let _ = self.0.signal(libc::SIGKILL);
            }
        }
        let _guard = KillOnDrop(rec.clone());
        banger_testkit::wait::until("the leader to turn zombie", || {
            read_stat(rec.pid).is_ok_and(|st| exited(st.state))
        });
        assert!(rec.is_alive(), "its second thread still runs");
        let exited = rec.exited();
        tokio::pin!(exited);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut exited)
                .await
                .is_err(),
            "exited() waits for every thread"
        );
        rec.signal(libc::SIGKILL).unwrap();
        tokio::time::timeout(Duration::from_secs(30), exited)
            .await
            .expect("exited() resolves after SIGKILL");
        assert!(!rec.is_alive());
    }
}
