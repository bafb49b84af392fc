//! The daemon's view of VMs whose processes run: the agent connection (replaced on every
//! reconnect), the channel task that accepts or dials it, and the exit watcher.
//!
//! Invariant: a [`LiveVm`] exists for a VM exactly while the store says it is
//! `starting`, `running` or `stopping`; it is dropped after cleanup.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_vmm::{ChannelEndpoint, ProcessRecord};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use super::agent::{AgentCallError, AgentConn};
use super::spec::VmRuntime;
use crate::error::OpError;

/// How long a connection gets to complete the serial sync (serial only), the HTTP/2
/// handshake and the hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on one VM's agent port; a new one evicts the oldest.
const MAX_PENDING_HANDSHAKES: usize = 8;
/// At most one refusal line per VM in this interval (the rest are counted).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Logs a guest-provoked warning at most once per [`REFUSAL_LOG_INTERVAL`], with the
/// number of occurrences suppressed since: a guest that dials in a loop cannot fill
/// `bangerd.log`.
#[derive(Default)]
struct RateLimitedLog {
    state: Mutex<(Option<std::time::Instant>, u64)>,
    /// The newest refusal, for the error of a caller that waited for the agent in vain.
    last: Mutex<Option<String>>,
}

impl RateLimitedLog {
    fn note(&self, vm: &str, what: &str) {
        *lock(&self.last) = Some(banger_api::text::cut(what, 512).to_string());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, suppressed) = &mut *state;
        if last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_INTERVAL) {
            *suppressed += 1;
            return;
        }
        let what = banger_api::text::cut(what, 512);
        tracing::warn!(vm, suppressed = *suppressed, "{what}");
        *last = Some(std::time::Instant::now());
        *suppressed = 0;
    }
}

/// What precedes HTTP/2 on a stream: nothing (vsock, and a serial agent from before the
/// sync) or the serial session sync.
#[derive(Clone, Copy, Debug)]
enum Preamble {
    None,
    SerialSync,
}

/// Sockets and pid files a VM's processes leave in its directory.
const RUNTIME_FILES: &[&str] = &[
    "vsock.sock",
    "vsock.sock_1025",
    "vhost-vsock.sock",
    "agent.sock",
    "qmp.sock",
    "fc.sock",
    "pids.json",
];

pub struct LiveVm {
    pub id: String,
    pub name: String,
    pub dir: PathBuf,
    pub runtime: Mutex<VmRuntime>,
    agent: watch::Sender<Option<AgentConn>>,
    /// Set by stop/kill/delete: the exit watcher then leaves the state to them.
    pub stopping: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Refused connections, logged at a bounded rate (a guest can dial in a loop).
    refusals: RateLimitedLog,
    /// Exec, cp and proxy sessions open now ([`LiveVm::busy`]), and when one last began
    /// or ended (or the VM came up): what the idle stop looks at.
    sessions: AtomicU32,
    last_active: Mutex<Instant>,
}

/// An open exec, cp or proxy session of a VM: the VM is not idle while it lives.
pub struct Busy(Arc<LiveVm>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LiveVm {
    pub fn new(id: &str, name: &str, dir: &Path, runtime: VmRuntime) -> Arc<LiveVm> {
        Arc::new(LiveVm {
            id: id.to_string(),
            name: name.to_string(),
            dir: dir.to_path_buf(),
            runtime: Mutex::new(runtime),
            agent: watch::Sender::new(None),
            stopping: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            refusals: RateLimitedLog::default(),
            sessions: AtomicU32::new(0),
            last_active: Mutex::new(Instant::now()),
        })
    }

    /// Marks a session open until the returned guard drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Busy(self.clone())
    }

    /// Records activity now (a session began or ended, traffic on a published port).
    pub fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// How long the VM has had no session; `None` while one is open.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.sessions.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(
            self.last_active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed(),
        )
    }

    pub fn runtime(&self) -> VmRuntime {
        self.runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn processes(&self) -> Vec<ProcessRecord> {
        self.runtime().processes
    }

    pub fn vmm(&self) -> Option<ProcessRecord> {
        self.runtime().vmm_process().cloned()
    }

    pub fn add_task(&self, task: JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    pub fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A receiver that sees every new agent connection.
    pub fn agent_updates(&self) -> watch::Receiver<Option<AgentConn>> {
        self.agent.subscribe()
    }

    /// The current agent connection, waiting up to `timeout` for one (after a daemon
    /// restart the agent redials within a second).
    pub async fn agent(&self, timeout: Duration) -> Result<AgentConn, OpError> {
        let mut rx = self.agent.subscribe();
        let wait = rx.wait_for(|c| c.as_ref().is_some_and(|c| !c.is_closed()));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(conn)) => conn
                .clone()
                .ok_or_else(|| OpError::Failed("agent connection vanished".into())),
            _ => {
                let last = lock(&self.refusals.last)
                    .as_deref()
                    .map(|r| format!(" (last refused connection: {r})"))
                    .unwrap_or_default();
                Err(OpError::Failed(format!(
                    "VM {} is running but its agent did not answer within {}s{last}; see `banger vm logs {}`",
                    self.name,
                    timeout.as_secs(),
                    self.name
                )))
            }
        }
    }

    /// Starts the task that keeps an agent connection up for as long as this VM lives.
    pub fn spawn_channel(
        self: &Arc<Self>,
        endpoint: ChannelEndpoint,
        listener: Option<UnixListener>,
    ) {
        let live = self.clone();
        let task = tokio::spawn(async move {
            match (endpoint, listener) {
                (ChannelEndpoint::VsockListen(_), Some(listener)) => {
                    live.accept_loop(listener).await
                }
                (ChannelEndpoint::SerialConnect(path), _) => live.dial_loop(&path).await,
                (ChannelEndpoint::VsockListen(path), None) => {
                    tracing::error!(vm = %live.name, path = %path.display(), "vsock channel without a listener");
                }
            }
        });
        self.add_task(task);
    }

    /// Accepts the guest's connections to the agent port. Any guest process can dial it,
    /// so: while an agent session is live every other connection is closed at once; the
    /// others are handshaken concurrently, each bounded in time, and at most
    /// [`MAX_PENDING_HANDSHAKES`] at once: a new connection evicts the oldest pending one,
    /// so stalled connections can neither exhaust the daemon's descriptors nor hold a slot
    /// the real agent needs (its handshake takes one round trip).
    async fn accept_loop(self: Arc<Self>, listener: UnixListener) {
        let pending: Arc<Mutex<VecDeque<(u64, AbortHandle)>>> = Arc::default();
        let mut next_id = 0u64;
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(vm = %self.name, error = %e, "agent accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.has_live_agent() {
                self.refusals
                    .note(&self.name, "a second agent session was refused");
                continue;
            }
            let id = next_id;
            next_id += 1;
            let (live, queue) = (self.clone(), pending.clone());
            let task = tokio::spawn(async move {
                let _ = live.adopt(stream, Preamble::None).await;
                lock(&queue).retain(|(i, _)| *i != id);
            });
            let mut queue = lock(&pending);
            queue.push_back((id, task.abort_handle()));
            while queue.len() > MAX_PENDING_HANDSHAKES {
                if let Some((_, oldest)) = queue.pop_front() {
                    oldest.abort();
                    self.refusals.note(
                        &self.name,
                        "too many agent handshakes in progress; the oldest was dropped",
                    );
                }
            }
        }
    }

    /// Whether an authenticated agent connection is up.
    fn has_live_agent(&self) -> bool {
        self.agent.borrow().as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Keeps a connection to the VM's serial socket (QEMU's chardev): each one starts
    /// with the serial sync, which also ends a snapshot's stale session at once. An agent
    /// from before the sync (a VM booted, or a snapshot taken, by an older banger) is
    /// spoken to without it from the next connection on, until that fails.
    async fn dial_loop(self: Arc<Self>, path: &Path) {
        let mut preamble = Preamble::SerialSync;
        loop {
            match UnixStream::connect(path).await {
                Ok(stream) => match self.adopt(stream, preamble).await {
                    Ok(closed) => {
                        let _ = closed.await;
                    }
                    Err(AgentCallError::BeforeSerialSync) => preamble = Preamble::None,
                    Err(_) => preamble = Preamble::SerialSync,
                },
                Err(e) => {
                    tracing::debug!(vm = %self.name, error = %e, "agent serial socket not ready");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Syncs (serial only), handshakes and publishes the connection, all within
    /// [`HANDSHAKE_TIMEOUT`]. Returns a receiver that fires when it closes; failures are
    /// noted in `refusals`.
    async fn adopt(
        self: &Arc<Self>,
        stream: UnixStream,
        preamble: Preamble,
    ) -> Result<tokio::sync::oneshot::Receiver<()>, AgentCallError> {
        let deadline = HANDSHAKE_TIMEOUT;
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        let secret = match super::boot::read_agent_key(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                let error = AgentCallError::Transport(format!("no agent secret: {e}"));
                self.refusals.note(&self.name, &error.to_string());
                return Err(error);
            }
        };
        let handshake = async {
            match preamble {
                Preamble::None => AgentConn::handshake(stream, closed_tx, &secret).await,
                Preamble::SerialSync => {
                    let began = std::time::Instant::now();
                    let stream = super::agent::sync_serial(stream).await?;
                    tracing::debug!(vm = %self.name, took = ?began.elapsed(), "serial sync done");
                    AgentConn::handshake(stream, closed_tx, &secret).await
                }
            }
        };
        // A handshake that stalls (a guest that never answers the sync, or a guest process
        // holding a connection open) is dropped rather than waited on.
        match tokio::time::timeout(deadline, handshake)
            .await
            .unwrap_or_else(|_| {
                Err(AgentCallError::Transport(format!(
                    "handshake timed out after {deadline:?}"
                )))
            }) {
            Ok(conn) => {
                // Two authenticated handshakes may race (a redial); the first one wins.
                let mut published = false;
                self.agent.send_if_modified(|current| {
                    if current.as_ref().is_some_and(|c| !c.is_closed()) {
                        return false;
                    }
                    *current = Some(conn.clone());
                    published = true;
                    true
                });
                if !published {
                    return Err(AgentCallError::Transport(
                        "another connection was published first".into(),
                    ));
                }
                tracing::info!(vm = %self.name, agent = %conn.hello.agent_version, boot_id = %conn.hello.boot_id, "agent connected");
                Ok(closed_rx)
            }
            Err(AgentCallError::BeforeSerialSync) => {
                tracing::info!(vm = %self.name, "the agent predates the serial sync; connecting without it");
                Err(AgentCallError::BeforeSerialSync)
            }
            Err(e) => {
                self.refusals
                    .note(&self.name, &format!("agent handshake failed: {e}"));
                Err(e)
            }
        }
    }

    /// Stops the channel and watcher tasks.
    pub fn abort_tasks(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
        self.agent.send_replace(None);
    }
}

/// Binds the Unix socket the guest's vsock connections arrive on, replacing a stale one.
pub fn bind_vsock_listener(path: &Path) -> Result<UnixListener, OpError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(OpError::io(format!("removing {}", path.display()), e)),
    }
    UnixListener::bind(path).map_err(|e| OpError::io(format!("binding {}", path.display()), e))
}

/// Kills whatever of `processes` still runs and removes the sockets they leave. Every
/// step runs even if an earlier one failed; failures are logged.
pub fn cleanup_processes(dir: &Path, processes: &[ProcessRecord]) {
    for p in processes {
        if p.is_alive()
            && let Err(e) = p.signal(libc::SIGKILL)
        {
            tracing::warn!(pid = p.pid, role = %p.role, error = %e, "could not kill a VM process");
        }
    }
    for name in RUNTIME_FILES {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove"),
        }
    }
}

/// Kills whatever of `processes` still runs, waits up to `grace` for them to go, then
/// removes what the driver leaves behind them (see [`release_driver_files`]). True when
/// they are gone.
pub async fn end_processes(dir: &Path, processes: &[ProcessRecord], grace: Duration) -> bool {
    cleanup_processes(dir, processes);
    let gone = wait_gone(processes, grace).await;
    if gone {
        release_driver_files(dir);
    }
    gone
}

/// What a VM's driver leaves once its processes are gone: Firecracker's sockets and, when
/// it ran jailed, its jail and the jail's network namespace (a driver that outlived the
/// VM removed them already; after a daemon restart nobody else will). Harmless for QEMU.
pub fn release_driver_files(dir: &Path) {
    if let Err(e) = banger_vmm::firecracker::cleanup(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the VMM's leftovers");
    }
}

/// Waits until none of `processes` is alive, up to `timeout`. True when all are gone.
pub async fn wait_gone(processes: &[ProcessRecord], timeout: Duration) -> bool {
    let all = async {
        for p in processes {
            p.exited().await;
        }
    };
    tokio::time::timeout(timeout, all).await.is_ok()
}
