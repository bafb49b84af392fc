//! Daemon lifecycle: prepare directories, take the instance locks, open the store, sweep
//! leftovers, bind the socket, serve, and clean up on SIGTERM/SIGINT or `daemon.shutdown`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use banger_api::layout::{Layout, create_private_dir};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::lock::InstanceLock;
use crate::oci_client::OciClient;
use crate::recovery;
use crate::server;
use crate::state::DaemonState;
use crate::store::Store;

/// Runs the daemon until it is told to stop.
pub async fn run(layout: Layout, vm_host: crate::vms::HostOptions) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    // Fallback bases in the shared temp dir first: anyone may have created them.
    for base in layout.shared_tmp_bases() {
        create_private_dir(&base, me)?;
    }
    prepare_private_dir(&layout.state_dir)?;
    for dir in [
        layout.images_dir(),
        layout.kernels_dir(),
        layout.oci_cache_dir(),
        layout.vms_dir(),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    prepare_runtime_dir(&layout.runtime_dir, me)?;

    // Locks before touching anything shared: the state dir (database, images), the runtime
    // dir (socket) and the cache may each be shared with another instance's other half.
    let _state_lock = InstanceLock::acquire(&layout.state_lock_path())?;
    let _runtime_lock = InstanceLock::acquire(&layout.runtime_lock_path())?;
    // The blob cache may live elsewhere; its temp files are swept below, so it must be ours.
    let _cache_lock = InstanceLock::acquire(&layout.cache_dir.join("bangerd.lock"))?;

    let store = Arc::new(
        Store::open(&layout.db_path())
            .with_context(|| format!("opening the database {}", layout.db_path().display()))?,
    );
    recovery::sweep_cache_tmp(&layout.oci_cache_dir())?;
    let uploads = crate::uploads::sweep(&layout.state_dir);
    if uploads > 0 {
        tracing::info!(
            count = uploads,
            "removed uploads an earlier daemon's clients left"
        );
    }
    let removed = recovery::sweep_images_dir(&layout.images_dir(), &store)?;
    if !removed.is_empty() {
        tracing::info!(
            count = removed.len(),
            "swept leftovers of interrupted operations"
        );
    }

    let socket = layout.socket_path();
    let listener = bind_socket(&socket)?;
    // One OCI client for images, kernels and prune: one cache, one set of leases.
    let oci = Arc::new(OciClient::open(&layout).context("setting up the OCI client")?);
    let backend = crate::pull::oci_backend::default_backend(oci.clone());
    let state = Arc::new(DaemonState::new(layout.clone(), store, oci, backend));
    state.vms.set_host_options(vm_host);
    // VMs outlive the daemon: adopt the live ones again before clients can ask about them.
    let report = state.vms.adopt_all().await.context("re-adopting VMs")?;
    state.vms.spawn_clock_watch();
    if !report.adopted.is_empty()
        || !report.stopped.is_empty()
        || !report.removed.is_empty()
        || !report.swept_dirs.is_empty()
    {
        tracing::info!(adopted = ?report.adopted, stopped = ?report.stopped, removed = ?report.removed, swept = report.swept_dirs.len(), "VMs after restart");
    }
    spawn_signal_handler(state.clone())?;
    tracing::info!(socket = %socket.display(), pid = std::process::id(), version = env!("CARGO_PKG_VERSION"), "bangerd ready");

    server::serve(listener, state.clone()).await;
    state.vms.end_warm_templates().await;

    if let Err(e) = std::fs::remove_file(&socket) {
        tracing::warn!(error = %e, "could not remove the socket");
    }
    tracing::info!("bangerd stopped");
    Ok(())
}

/// Creates the socket's directory (its parent too unless it is a checked fallback base) and
/// refuses it unless it is a real directory of ours that nobody else may write: whoever
/// controls it could stand in for this daemon.
fn prepare_runtime_dir(dir: &Path, me: u32) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    create_private_dir(dir, me)?;
    // Ours and not a symlink (checked above): a 0755 the user made becomes 0700.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    Ok(())
}

/// Creates `dir` if needed and makes it 0700; refuses a directory owned by someone else.
/// (The state dir may be a symlink, e.g. to another disk; the socket's directory may not.)
fn prepare_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "{} belongs to uid {}, not to us (uid {me}); refusing to use it",
            dir.display(),
            meta.uid()
        );
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    Ok(())
}

/// We hold the runtime lock, so any socket file present is a dead daemon's: replace it.
fn bind_socket(path: &PathBuf) -> anyhow::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(socket = %path.display(), "removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", path.display()));
        }
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(listener)
}

fn spawn_signal_handler(state: Arc<DaemonState>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        state.shutdown.notify_one();
    });
    Ok(())
}
