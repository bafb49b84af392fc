//! The VM lifecycle: one file per verb, over the pieces they share.
//!
//! ```text
//! create ─┬─ spec (defaults, limits) ─ boot (initramfs, cmdline) ─ disks ─ store row
//!         └─ start ─ vmm launch ─ live (agent channel) ─ readiness ─ running
//! stop / kill / delete ─ live::cleanup_processes ─ store
//! exec ─ live.agent() ─ agent::AgentConn::exec (relayed by the server)
//! adopt (daemon start) ─ store rows + /proc ─ live again, or stopped and cleaned
//! ```
//!
//! Locks: `op_lock(id)` serialises the verbs of one VM (start vs stop vs delete); the store
//! row is written at every state change and is the truth a restarted daemon reads;
//! `live` holds the in-memory side of VMs whose processes run.

mod adopt;
pub mod agent;
pub mod boot;
mod clock;
mod console;
mod create;
mod delete;
pub mod disks;
mod exec;
pub mod exec_relay;
mod files;
mod fork;
mod idle;
mod kill;
pub mod lease;
pub mod live;
mod logs;
pub mod naming;
pub mod net;
mod ports;
mod prune;
mod restart;
mod show;
pub mod snapshot;
pub mod spec;
pub mod ssh;
mod start;
mod stats;
mod stop;
mod warm;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use banger_api::layout::Layout;
use banger_api::vm::VmState;
use banger_vmm::{Detection, Vmm};

pub use exec::{RelayMode, SessionOutput, StreamSession};
pub use stop::StopGraces;

use crate::error::OpError;
use crate::store::{Store, VmRow};
use live::LiveVm;
use spec::{HostResources, VmRuntime, VmSpec};

/// What `vm create` will boot with on this host (detected once per daemon).
pub struct Host {
    pub detection: Detection,
    pub vmm: Arc<dyn Vmm>,
    /// How Firecracker VMs are jailed, when `--jailer` was given.
    pub jailer: Option<banger_vmm::JailerConfig>,
    /// Every choice gets this VMM instead of a detected one (the state machine's tests
    /// run on a fake VMM, see [`Vms::with_host`]).
    pub pinned: Option<banger_vmm::Selected>,
}

impl Host {
    /// The VMM for `choice` on this host (with the jailer when configured).
    pub fn select(&self, choice: banger_vmm::VmmChoice) -> Result<banger_vmm::Selected, OpError> {
        if let Some(pinned) = &self.pinned {
            return Ok(pinned.clone());
        }
        banger_vmm::select_with_jailer(choice, &self.detection, self.jailer.as_ref())
            .map_err(|e| OpError::BadRequest(e.to_string()))
    }

    /// The driver that runs VMs whose runtime names `vmm` (`qemu`, `firecracker`).
    pub fn driver_named(&self, vmm: &str) -> Option<Arc<dyn Vmm>> {
        if let Some(pinned) = &self.pinned {
            return (pinned.name == vmm).then(|| pinned.vmm.clone());
        }
        self.select(vmm.parse().ok()?).ok().map(|s| s.vmm)
    }
}

/// How this daemon runs VMs (`bangerd --accel`, `--firecracker`).
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    pub accel: banger_vmm::AccelChoice,
    /// The Firecracker binary; `None`: `$BANGER_FIRECRACKER`, then PATH.
    pub firecracker: Option<std::path::PathBuf>,
    /// Firecracker's `jailer`: used for Firecracker VMs when the daemon runs as root.
    pub jailer: Option<std::path::PathBuf>,
}

/// The uid and gid a jailed Firecracker runs as (`nobody`/`nogroup` on Debian).
pub const JAILED_ID: u32 = 65534;

pub struct Vms {
    layout: Layout,
    store: Arc<Store>,
    resources: HostResources,
    host: tokio::sync::OnceCell<Arc<Host>>,
    host_options: std::sync::OnceLock<HostOptions>,
    live: Mutex<HashMap<String, Arc<LiveVm>>>,
    op_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Names with a create in flight (the store's UNIQUE is the final arbiter).
    creating: crate::claims::NameClaims,
    /// `vm.hold` leases and the VMs under them.
    leases: lease::Leases,
    stop_graces: StopGraces,
    /// Warm start templates booting.
    warming: warm::Warming,
    /// Whether creates that do not say start warm: `None`, as `config.toml`'s `[vm] warm`
    /// says (the daemon); the state machine's tests boot cold unless they ask.
    warm_default: Option<bool>,
}

impl Vms {
    pub fn new(layout: Layout, store: Arc<Store>) -> Arc<Vms> {
        Self::build(layout, store, None, StopGraces::default(), None)
    }

    /// VMs run by `host` instead of the detected one, with `stop`'s waits shortened to
    /// `graces`: the seam the state machine's tests use to run on a fake VMM.
    pub fn with_host(
        layout: Layout,
        store: Arc<Store>,
        host: Arc<Host>,
        graces: StopGraces,
    ) -> Arc<Vms> {
        Self::build(layout, store, Some(host), graces, Some(false))
    }

    fn build(
        layout: Layout,
        store: Arc<Store>,
        host: Option<Arc<Host>>,
        stop_graces: StopGraces,
        warm_default: Option<bool>,
    ) -> Arc<Vms> {
        Arc::new(Vms {
            layout,
            store,
            resources: HostResources::read(),
            host: tokio::sync::OnceCell::new_with(host),
            host_options: std::sync::OnceLock::new(),
            live: Mutex::new(HashMap::new()),
            op_locks: Mutex::new(HashMap::new()),
            creating: crate::claims::NameClaims::new(create::taken_message),
            leases: lease::Leases::default(),
            stop_graces,
            warming: warm::Warming::default(),
            warm_default,
        })
    }

    /// Sets `bangerd`'s `--accel` and `--firecracker` (before the first VM operation).
    pub fn set_host_options(&self, options: HostOptions) {
        if self.host_options.set(options).is_err() {
            tracing::warn!("VM host options set twice; the first ones stay");
        }
    }

    /// The VMM and acceleration to use, probing KVM the first time.
    pub async fn host(&self) -> Result<Arc<Host>, OpError> {
        let cache = self.layout.runtime_dir.join("accel-probe.json");
        let options = self.host_options.get().cloned().unwrap_or_default();
        let jail_dir = self.layout.state_dir.join("jail");
        self.host
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    let detection = banger_vmm::detect(&banger_vmm::DetectOptions {
                        cache: Some(cache),
                        accel: options.accel,
                        firecracker: options.firecracker,
                        ..Default::default()
                    });
                    let vmm = banger_vmm::driver(&detection).map_err(|e| {
                        OpError::Unavailable(format!("no VMM to run VMs with: {e}"))
                    })?;
                    // Same filesystem as the VMs' disks: the jail hard-links them.
                    let jailer = options.jailer.map(|path| banger_vmm::JailerConfig {
                        path,
                        uid: JAILED_ID,
                        gid: JAILED_ID,
                        chroot_base: jail_dir,
                    });
                    Ok(Arc::new(Host {
                        detection,
                        vmm,
                        jailer,
                        pinned: None,
                    }))
                })
                .await
                .map_err(|e| OpError::Failed(format!("VMM detection aborted: {e}")))?
            })
            .await
            .cloned()
    }

    fn vm_dir(&self, id: &str) -> PathBuf {
        self.layout.vms_dir().join(id)
    }

    fn op_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.op_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn live(&self, id: &str) -> Option<Arc<LiveVm>> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn set_live(&self, vm: Arc<LiveVm>) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(vm.id.clone(), vm);
    }

    fn drop_live(&self, id: &str) -> Option<Arc<LiveVm>> {
        let vm = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(vm) = &vm {
            vm.abort_tasks();
        }
        vm
    }

    /// The row of a VM by name or id.
    fn find(&self, name_or_id: &str) -> Result<VmRow, OpError> {
        self.store.find_vm(name_or_id)?.ok_or_else(|| {
            OpError::NotFound(format!(
                "no VM named {name_or_id:?} (nor with that id); see `banger vm list`"
            ))
        })
    }

    /// Records a state change (and keeps the live map in step with it).
    fn set_state(
        &self,
        row: &VmRow,
        state: VmState,
        runtime: Option<&VmRuntime>,
        last_error: Option<&str>,
    ) -> Result<(), OpError> {
        let runtime = runtime
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| OpError::Failed(format!("encoding VM runtime: {e}")))?;
        let started = (state == VmState::Starting).then(crate::ids::now_rfc3339);
        self.store.update_vm_state(
            &row.id,
            state.as_str(),
            runtime.as_deref(),
            last_error,
            started.as_deref(),
        )?;
        Ok(())
    }
}

pub(crate) fn parse_spec(row: &VmRow) -> Result<VmSpec, OpError> {
    serde_json::from_str(&row.spec)
        .map_err(|e| OpError::Failed(format!("VM {}'s stored spec is unreadable: {e}", row.name)))
}

pub(crate) fn parse_runtime(row: &VmRow) -> VmRuntime {
    row.runtime
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default()
}

pub(crate) fn state_of(row: &VmRow) -> VmState {
    VmState::parse(&row.state).unwrap_or(VmState::Error)
}

/// Whether the store says the VM's processes run (`starting`, `running` or `stopping`).
pub(crate) fn is_live(row: &VmRow) -> bool {
    matches!(
        state_of(row),
        VmState::Running | VmState::Starting | VmState::Stopping | VmState::Paused
    )
}

/// Milliseconds since `t`.
pub(crate) fn ms_since(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}
