//! `vm.start` (and the second half of `vm.create`): launch the VMM and wait for the agent
//! to report the guest ready, streaming the stages as they happen.
//!
//! Readiness is pushed: the agent dials the host once the root is assembled and
//! configured; the daemon never polls the guest. A guest that does not come up within its
//! deadline, or whose VMM exits first, fails with the stage reached, the VMM's stderr and
//! the console tail, and stays (state `error`) for `vm logs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::event::OpEvent;
use banger_api::image::Image;
use banger_api::vm::{Vm, VmStageRecord, VmStartParams, VmState};
use banger_guest_proto::IdentityTaken;
use banger_vmm::netns::Policy;
use banger_vmm::{Accel, ChannelEndpoint, ChannelKind, DiskConfig, NetConfig, VmConfig};

use super::console;
use super::live::{self, LiveVm};
use super::spec::{VmRuntime, VmSpec};
use super::{Host, Vms, boot, disks, ms_since, parse_spec, state_of};
use crate::error::OpError;
use crate::progress::OpContext;
use crate::store::VmRow;

/// Lines of the serial console quoted in a failure.
const CONSOLE_TAIL_LINES: usize = 50;
/// Bytes of a guest-fed file (console, VMM stderr) quoted in a message at most: one
/// gigantic line must not land whole in `last_error`.
const QUOTE_MAX_BYTES: usize = 8 << 10;
/// The note of a VM stopped, killed or deleted before its guest was ready.
const INTERRUPTED: &str = "stopped while it was starting";

/// How long a guest gets to report ready: as asked, else by what runs it.
fn ready_timeout(asked_secs: Option<u64>, accel: Accel) -> Duration {
    Duration::from_secs(asked_secs.unwrap_or(match accel {
        Accel::Kvm => 30,
        Accel::Tcg { .. } => 120,
    }))
}

/// The ELF `vmlinux` Firecracker boots: the one the kernel store extracted beside the
/// image's kernel, the kernel itself when it is one, else extracted once into the VM's
/// directory (an image registered with a bzImage path).
fn elf_kernel(kernel: &Path, vm_dir: &Path) -> Result<std::path::PathBuf, OpError> {
    let beside = kernel.with_file_name(crate::kernels::manifest::VMLINUX);
    if beside.is_file() {
        return Ok(beside);
    }
    let extracted = vm_dir.join(crate::kernels::manifest::VMLINUX);
    if extracted.is_file() {
        return Ok(extracted);
    }
    let bytes = std::fs::read(kernel)
        .map_err(|e| OpError::io(format!("reading {}", kernel.display()), e))?;
    if banger_kernel::image::is_elf(&bytes) {
        return Ok(kernel.to_path_buf());
    }
    let elf = banger_kernel::image::extract_vmlinux(&bytes).map_err(|e| {
        OpError::BadRequest(format!(
            "Firecracker boots an ELF vmlinux, and none could be extracted from {}: {e}; \
             use --vmm qemu, or import the kernel with `banger kernel import`",
            kernel.display()
        ))
    })?;
    // Through a temporary name: a crash mid-write must not leave a truncated kernel.
    let tmp = vm_dir.join(".vmlinux.tmp");
    std::fs::write(&tmp, &elf)
        .and_then(|()| std::fs::rename(&tmp, &extracted))
        .map_err(|e| OpError::io(format!("writing {}", extracted.display()), e))?;
    Ok(extracted)
}

/// The kernel QEMU boots: the kernel set's uncompressed `vmlinux` when it has a PVH entry
/// (QEMU loads it as it is and skips the bzImage's decompressor, most of a second of every
/// boot under software emulation), else the image's kernel.
fn qemu_kernel(kernel: &Path) -> std::path::PathBuf {
    let vmlinux = kernel.with_file_name(crate::kernels::manifest::VMLINUX);
    match banger_kernel::pvh::has_pvh_entry(&vmlinux) {
        Ok(true) => vmlinux,
        _ => kernel.to_path_buf(),
    }
}

/// The VMM's own output (stdout and stderr) in a VM's directory.
pub(super) fn vmm_log(dir: &Path, vmm: &str) -> std::path::PathBuf {
    let files = banger_vmm::RunFiles::new(dir);
    if vmm == "firecracker" {
        files.fc_log
    } else {
        files.vmm_stderr
    }
}

/// What [`Vms::boot_files`] made ready for a boot.
struct BootFiles {
    kernel: PathBuf,
    initramfs: PathBuf,
    modules_disk: Option<PathBuf>,
}

/// Refuses to boot a VM that is already up or on its way.
fn check_startable(row: &VmRow) -> Result<(), OpError> {
    match state_of(row) {
        VmState::Created | VmState::Stopped | VmState::Error => Ok(()),
        VmState::Running | VmState::Starting | VmState::Stopping | VmState::Paused => Err(
            OpError::AlreadyRunning(format!("VM {} is already {}", row.name, row.state)),
        ),
    }
}

/// The VMM's view of the VM: the image's rootfs read-only, the VM's root and work disks,
/// the modules disk if any, the channel, the network and its policy.
fn vm_config(
    row: &VmRow,
    spec: &VmSpec,
    image: &Image,
    files: BootFiles,
    vsock: bool,
    policy: Option<Policy>,
    accel: Accel,
) -> VmConfig {
    let dir = std::path::PathBuf::from(&row.dir);
    let (root_disk, work_disk) = disks::paths(&dir, spec.disk_format);
    let with_net = policy.is_some();
    VmConfig {
        name: row.name.clone(),
        run_dir: dir,
        cpus: spec.cpus,
        memory_mib: spec.memory_mib,
        kernel: files.kernel,
        initrd: Some(files.initramfs),
        cmdline: boot::kernel_cmdline(
            &row.name,
            vsock,
            spec.init,
            spec.ready,
            with_net,
            files.modules_disk.is_some(),
            &spec.kernel_args,
        ),
        disks: vec![
            DiskConfig {
                path: image.rootfs_path.clone().into(),
                read_only: true,
                format: Default::default(),
            },
            DiskConfig {
                path: root_disk,
                read_only: false,
                format: spec.disk_format,
            },
            DiskConfig {
                path: work_disk,
                read_only: false,
                format: spec.disk_format,
            },
        ]
        .into_iter()
        .chain(files.modules_disk.map(|path| DiskConfig {
            path,
            read_only: true,
            format: Default::default(),
        }))
        .collect(),
        channel: if vsock {
            ChannelKind::Vsock
        } else {
            ChannelKind::Serial
        },
        net: match policy {
            Some(policy) => NetConfig::User {
                forwards: spec.publish.clone(),
                policy,
            },
            None => NetConfig::None,
        },
        accel,
        restore: None,
        // A save then copies memory instead of streaming it, and the VMs started from the
        // save (forks, warm starts) map the copy instead of loading it. Serial only: vsock
        // already shares a memfd with its helper, and QEMU cannot save it.
        shared_memory: !vsock,
    }
}

impl Vms {
    pub async fn start(self: &Arc<Self>, p: VmStartParams, ctx: &OpContext) -> Result<Vm, OpError> {
        let row = self.find(&p.vm)?;
        let lock = self.op_lock(&row.id);
        let _op = lock.lock().await;
        let row = self.find(&row.id)?;
        self.boot(row, ctx, p.ready_timeout_secs).await
    }

    /// Boots a VM whose op lock the caller holds.
    pub(super) async fn boot(
        self: &Arc<Self>,
        row: VmRow,
        ctx: &OpContext,
        ready_timeout_secs: Option<u64>,
    ) -> Result<Vm, OpError> {
        check_startable(&row)?;
        let spec = parse_spec(&row)?;
        if spec.resume_pending {
            return self.boot_restored(row, spec, ctx, ready_timeout_secs).await;
        }
        let image = self.store.find_image(&row.image_id)?.ok_or_else(|| {
            OpError::Failed(format!(
                "VM {}'s image (id {}) no longer exists; delete the VM",
                row.name, row.image_id
            ))
        })?;
        let host = self.host().await?;
        let selected = host.select(spec.vmm)?;
        let vsock = use_vsock(&spec.channel, &host, selected.channel)?;
        let policy = super::net::policy(&spec)?;
        let with_net = policy.is_some();
        super::net::check_free(&spec.publish)?;
        let dir = std::path::PathBuf::from(&row.dir);
        let files = self
            .boot_files(&image, &dir, selected.name, vsock, with_net)
            .await?;
        let cfg = vm_config(&row, &spec, &image, files, vsock, policy, selected.accel);
        self.launch_and_wait(
            row,
            spec,
            cfg,
            &host,
            &selected,
            "cold",
            ctx,
            ready_timeout_secs,
        )
        .await
    }

    /// A fork's first start: its VMM goes on from the snapshot's saved state.
    async fn boot_restored(
        self: &Arc<Self>,
        row: VmRow,
        spec: VmSpec,
        ctx: &OpContext,
        ready_timeout_secs: Option<u64>,
    ) -> Result<Vm, OpError> {
        let snap_id = spec.forked_from.clone().unwrap_or_default();
        let snap = self.store.find_snapshot(&snap_id)?.ok_or_else(|| {
            OpError::Failed(format!(
                "VM {} was forked from snapshot {snap_id}, which no longer exists; delete the VM",
                row.name
            ))
        })?;
        let host = self.host().await?;
        let selected = host.select(spec.vmm)?;
        if selected.name != snap.vmm {
            return Err(OpError::BadRequest(format!(
                "snapshot {} was taken with {}, which cannot run here ({} was selected)",
                snap.name, snap.vmm, selected.name
            )));
        }
        let policy = super::net::policy(&spec)?;
        super::net::check_free(&spec.publish)?;
        let cfg = super::fork::fork_config(
            Path::new(&snap.dir),
            Path::new(&row.dir),
            &row.name,
            &spec,
            policy,
        )?;
        let start = if snap.warm_key.is_some() {
            "warm"
        } else {
            "fork"
        };
        self.launch_and_wait(
            row,
            spec,
            cfg,
            &host,
            &selected,
            start,
            ctx,
            ready_timeout_secs,
        )
        .await
    }

    /// Launches `cfg` and waits for the guest's agent (the VM recorded `starting`, then
    /// `running`, or `error` with the console's tail).
    #[allow(clippy::too_many_arguments)]
    async fn launch_and_wait(
        self: &Arc<Self>,
        row: VmRow,
        spec: VmSpec,
        cfg: VmConfig,
        host: &super::Host,
        selected: &banger_vmm::Selected,
        start: &str,
        ctx: &OpContext,
        ready_timeout_secs: Option<u64>,
    ) -> Result<Vm, OpError> {
        let dir = std::path::PathBuf::from(&row.dir);
        super::snapshot::save_launch_config(&dir, &cfg)?;
        let vsock = cfg.channel == ChannelKind::Vsock;
        let endpoint = selected.vmm.channel_endpoint(&cfg);
        let listener = match &endpoint {
            ChannelEndpoint::VsockListen(path) => Some(live::bind_vsock_listener(path)?),
            ChannelEndpoint::SerialConnect(_) => None,
        };

        let started = Instant::now();
        let mut runtime = VmRuntime {
            processes: Vec::new(),
            channel: if vsock { "vsock" } else { "serial" }.into(),
            channel_path: match &endpoint {
                ChannelEndpoint::VsockListen(p) | ChannelEndpoint::SerialConnect(p) => {
                    crate::paths::to_string(p)?
                }
            },
            vmm: selected.name.into(),
            vmm_reason: selected.reason.clone(),
            accel: selected.accel.as_str().into(),
            accel_reason: host.detection.reason.clone(),
            stages: Vec::new(),
            boot_id: None,
            start: start.to_string(),
        };
        self.set_state(&row, VmState::Starting, Some(&runtime), None)?;
        let vmm = selected.vmm.clone();
        let launch_cfg = cfg.clone();
        let launched = tokio::task::spawn_blocking(move || vmm.launch(&launch_cfg))
            .await
            .map_err(|e| OpError::Failed(format!("VMM launch aborted: {e}")))?;
        let launched = match launched {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("VM {} could not start: {e}", row.name);
                live::cleanup_processes(&dir, &[]);
                live::release_driver_files(&dir);
                self.set_state(&row, VmState::Error, Some(&runtime), Some(&msg))?;
                return Err(OpError::Failed(msg));
            }
        };
        runtime.processes = launched.processes.clone();
        stage(ctx, &mut runtime, "vmm_spawned", started, None);
        // Live before the pids are visible: whoever sees them can interrupt this boot.
        let live = LiveVm::new(&row.id, &row.name, &dir, runtime.clone());
        self.set_live(live.clone());
        // Persist the pids at once: a daemon killed from here on still finds them.
        if let Err(e) = self.set_state(&row, VmState::Starting, Some(&runtime), None) {
            live::cleanup_processes(&dir, &runtime.processes);
            self.drop_live(&row.id);
            return Err(e);
        }
        live.spawn_channel(endpoint, listener);
        console::spawn_keeper(&live, &row, console::Boot::Fresh);

        let timeout = ready_timeout(ready_timeout_secs, cfg.accel);
        self.await_ready(&row, spec, live, ctx, started, runtime, timeout)
            .await
    }

    /// What the guest boots from besides its disks: the initramfs (cached, then this
    /// boot's copy with its agent secret in the VM's directory), the modules disk, and the
    /// kernel (an ELF `vmlinux` for Firecracker).
    async fn boot_files(
        &self,
        image: &Image,
        dir: &Path,
        vmm_name: &str,
        vsock: bool,
        with_net: bool,
    ) -> Result<BootFiles, OpError> {
        let cache = self.layout.initramfs_dir();
        let for_build = image.clone();
        let initramfs = tokio::task::spawn_blocking(move || {
            boot::initramfs(&cache, &for_build, vsock, with_net)
        })
        .await
        .map_err(|e| OpError::Failed(format!("initramfs build aborted: {e}")))??;

        let (cache, for_build) = (self.layout.initramfs_dir(), image.clone());
        let modules_disk =
            tokio::task::spawn_blocking(move || boot::modules_disk(&cache, &for_build))
                .await
                .map_err(|e| OpError::Failed(format!("modules disk build aborted: {e}")))??;

        // This boot's agent secret, in the VM's own copy of the initramfs.
        let vm_dir = dir.to_path_buf();
        let initramfs =
            tokio::task::spawn_blocking(move || boot::agent_initramfs(&initramfs, &vm_dir))
                .await
                .map_err(|e| OpError::Failed(format!("initramfs build aborted: {e}")))??;
        let kernel = if vmm_name == "firecracker" {
            let (image_kernel, vm_dir) = (image.kernel_path.clone(), dir.to_path_buf());
            tokio::task::spawn_blocking(move || elf_kernel(Path::new(&image_kernel), &vm_dir))
                .await
                .map_err(|e| OpError::Failed(format!("kernel extraction aborted: {e}")))??
        } else {
            let image_kernel = image.kernel_path.clone();
            tokio::task::spawn_blocking(move || qemu_kernel(Path::new(&image_kernel)))
                .await
                .map_err(|e| OpError::Failed(format!("kernel check aborted: {e}")))?
        };
        Ok(BootFiles {
            kernel,
            initramfs,
            modules_disk,
        })
    }

    /// The second half of a boot: wait for the agent, then record the VM running; or,
    /// when the guest does not come up, clean up and record why. Also run (in the
    /// background) for a VM that a restarted daemon adopts while it is still starting.
    /// The caller holds the VM's op lock.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn await_ready(
        self: &Arc<Self>,
        row: &VmRow,
        mut spec: super::spec::VmSpec,
        live: Arc<LiveVm>,
        ctx: &OpContext,
        started: Instant,
        mut runtime: VmRuntime,
        timeout: Duration,
    ) -> Result<Vm, OpError> {
        let dir = live.dir.clone();
        let console = banger_vmm::RunFiles::new(&dir).console_log;
        // A resumed guest's hello repeats the stages of the snapshot's boot: not this one's.
        let boot_stages = !spec.resume_pending;
        let outcome = wait_ready(
            &live,
            &console,
            ctx,
            started,
            &mut runtime,
            timeout,
            boot_stages,
        )
        .await;
        let outcome = match outcome {
            Ok(conn) if spec.resume_pending => {
                let became = self.become_itself(&row.name, &dir, &conn).await;
                stage(ctx, &mut runtime, "identity", started, None);
                became.map(|taken| (conn, Some(taken)))
            }
            other => other.map(|conn| (conn, None)),
        };
        match outcome {
            Ok((conn, identity)) => {
                // A fork's identity set its clock already.
                let clock = async {
                    if !spec.resume_pending {
                        super::clock::push(&row.name, &conn).await;
                    }
                };
                // and, from an agent that knows how, authorized banger's key and sent its
                // host keys back.
                let ssh = async {
                    match identity {
                        Some(IdentityTaken {
                            host_keys: Some(keys),
                            authorize_error,
                        }) => {
                            if let Some(e) = authorize_error {
                                let e = banger_api::text::cut(&e, 300);
                                tracing::warn!(vm = %row.name, error = ?e, "could not authorize banger's SSH key in the guest");
                            }
                            self.record_host_keys(&row.name, &keys);
                        }
                        _ => self.setup_ssh(&row.name, &conn).await,
                    }
                };
                tokio::join!(clock, ssh);
                runtime.boot_id = Some(conn.hello.boot_id.clone());
                stage(ctx, &mut runtime, "ready", started, None);
                *live.runtime.lock().unwrap_or_else(|e| e.into_inner()) = runtime.clone();
                if spec.init_resolved != Some(conn.hello.init) || spec.resume_pending {
                    spec.init_resolved = Some(conn.hello.init);
                    spec.resume_pending = false;
                    if let Ok(json) = serde_json::to_string(&spec) {
                        self.store.update_vm_spec(&row.id, &json)?;
                    }
                }
                self.set_state(row, VmState::Running, Some(&runtime), None)?;
                self.spawn_exit_watcher(live);
                tracing::info!(vm = %row.name, ready_ms = ms_since(started), "VM ready");
                self.show(&row.id)
            }
            Err(reason) => {
                // Set by stop, kill or delete, which do not wait for a boot to finish.
                let interrupted = live.is_stopping();
                live.mark_stopping();
                live::end_processes(&dir, &runtime.processes, Duration::from_secs(5)).await;
                self.drop_live(&row.id);
                runtime.processes.clear();
                if interrupted {
                    self.set_state(row, VmState::Stopped, None, Some(INTERRUPTED))?;
                    tracing::info!(vm = %row.name, "VM stopped while starting");
                    self.remove_if_auto(row);
                    return Err(OpError::Failed(format!(
                        "VM {} did not finish starting: it was {INTERRUPTED}",
                        row.name
                    )));
                }
                let reached = runtime
                    .stages
                    .last()
                    .map(|s| s.stage.clone())
                    .unwrap_or_else(|| "none".into());
                let msg = failure_report(
                    &row.name,
                    &reason,
                    &reached,
                    &dir,
                    &vmm_log(&dir, &runtime.vmm),
                    &console,
                );
                self.set_state(row, VmState::Error, Some(&runtime), Some(&msg))?;
                // `--rm`: the reason travels in the error; nothing is kept for `vm logs`.
                self.remove_if_auto(row);
                Err(OpError::Failed(msg))
            }
        }
    }

    /// Stop, kill and delete of a VM that is still starting do not wait for its boot
    /// (which holds the op lock until the guest is ready, up to minutes under emulation):
    /// they kill its processes here, and the boot, seeing its VMM exit, records the VM
    /// stopped. True when a boot was interrupted.
    pub(super) fn interrupt_boot(&self, row: &VmRow) -> bool {
        if state_of(row) != VmState::Starting {
            return false;
        }
        let Some(live) = self.live(&row.id) else {
            return false;
        };
        live.mark_stopping();
        live::cleanup_processes(&live.dir, &live.processes());
        tracing::info!(vm = %row.name, "interrupting the boot");
        true
    }

    /// Resumes the readiness wait of a VM adopted while `starting`, in the background.
    pub(super) fn resume_boot(self: &Arc<Self>, row: VmRow, live: Arc<LiveVm>) {
        let vms = self.clone();
        tokio::spawn(async move {
            let lock = vms.op_lock(&row.id);
            let _op = lock.lock().await;
            let runtime = live.runtime();
            let spec = match parse_spec(&row) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(vm = %row.name, error = %e, "cannot resume the boot");
                    return;
                }
            };
            // Stage times stay relative to the launch: at least the last one recorded.
            let since_launch =
                Duration::from_millis(runtime.stages.last().map(|s| s.at_ms).unwrap_or(0));
            let started = Instant::now()
                .checked_sub(since_launch)
                .unwrap_or_else(Instant::now);
            let accel = if runtime.accel == "kvm" {
                Accel::Kvm
            } else {
                Accel::Tcg { tsc_khz: None }
            };
            let timeout = ready_timeout(None, accel);
            let ctx = OpContext::detached();
            match vms
                .await_ready(&row, spec, live, &ctx, started, runtime, timeout)
                .await
            {
                Ok(_) => tracing::info!(vm = %row.name, "adopted VM finished starting"),
                Err(e) => tracing::info!(vm = %row.name, error = %e, "adopted VM did not start"),
            }
        });
    }

    /// When the VMM exits on its own (the guest powered off, crashed, or was killed from
    /// outside), clean up and record it; deliberate stops mark the VM first and are left
    /// to their verb.
    pub(super) fn spawn_exit_watcher(self: &Arc<Self>, live: Arc<LiveVm>) {
        let Some(vmm) = live.vmm() else { return };
        self.spawn_idle_stop(live.clone());
        let vms = self.clone();
        let watched = live.clone();
        let task = tokio::spawn(async move {
            vmm.exited().await;
            if watched.is_stopping() {
                return;
            }
            let lock = vms.op_lock(&watched.id);
            let _op = lock.lock().await;
            if watched.is_stopping() {
                return;
            }
            live::end_processes(&watched.dir, &watched.processes(), Duration::from_secs(5)).await;
            let stderr = tail(&vmm_log(&watched.dir, &watched.runtime().vmm), 5);
            let note = if stderr.trim().is_empty() {
                "the guest powered off or its VMM exited on its own".to_string()
            } else {
                format!("the VMM exited on its own: {stderr}")
            };
            tracing::info!(vm = %watched.name, %note, "VM stopped");
            match vms.find(&watched.id) {
                Ok(row) => {
                    if let Err(e) = vms.set_state(&row, VmState::Stopped, None, Some(&note)) {
                        tracing::warn!(vm = %watched.name, error = %e, "could not record the stop");
                    }
                    vms.remove_if_auto(&row);
                }
                Err(e) => tracing::debug!(error = %e, "VM gone before its exit was recorded"),
            }
            vms.live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&watched.id);
            watched.abort_tasks();
        });
        live.add_task(task);
    }
}

/// Whether this start talks to the agent over vsock (else virtio-serial). `driver_channel`
/// is what the chosen VMM wants (Firecracker only speaks vsock).
pub(super) fn use_vsock(
    channel: &str,
    host: &Host,
    driver_channel: ChannelKind,
) -> Result<bool, OpError> {
    let has_backend =
        host.detection.vsock_backend.is_some() || driver_channel == ChannelKind::Vsock;
    if driver_channel == ChannelKind::Vsock && host.detection.vsock_backend.is_none() {
        return match channel {
            "serial" => Err(OpError::BadRequest(
                "--channel serial is not available with Firecracker (vsock only)".into(),
            )),
            _ => Ok(true),
        };
    }
    match channel {
        "auto" => Ok(has_backend),
        "serial" => Ok(false),
        "vsock" if has_backend => Ok(true),
        "vsock" => Err(OpError::BadRequest(
            "--channel vsock needs vhost-device-vsock, which is not installed: `cargo install --locked vhost-device-vsock`".into(),
        )),
        other => Err(OpError::BadRequest(format!(
            "--channel {other:?}: use auto, vsock or serial"
        ))),
    }
}

fn stage(
    ctx: &OpContext,
    runtime: &mut VmRuntime,
    name: &str,
    started: Instant,
    guest_uptime_ms: Option<u64>,
) {
    let at_ms = ms_since(started);
    runtime.stages.push(VmStageRecord {
        stage: name.to_string(),
        at_ms,
        guest_uptime_ms,
    });
    ctx.emit(OpEvent::VmStage {
        stage: name.to_string(),
        elapsed_ms: at_ms,
    });
}

/// Waits for the first agent connection, reporting `kernel_started` when the console
/// shows output and the guest's own stages when the agent says hello.
async fn wait_ready(
    live: &Arc<LiveVm>,
    console: &Path,
    ctx: &OpContext,
    started: Instant,
    runtime: &mut VmRuntime,
    timeout: Duration,
    boot_stages: bool,
) -> Result<super::agent::AgentConn, String> {
    let Some(vmm) = live.vmm() else {
        return Err("no VMM process was recorded".into());
    };
    let mut updates = live.agent_updates();
    // An agent may have been published before this subscription (a fast guest, or one
    // that redialled a restarted daemon at once): look at the current value first.
    updates.mark_changed();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let exited = vmm.exited();
    tokio::pin!(exited);
    let mut kernel_seen = false;
    let mut console_tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return Err("the agent channel closed".into());
                }
                let conn = updates.borrow_and_update().clone();
                if let Some(conn) = conn {
                    if !kernel_seen {
                        stage(ctx, runtime, "kernel_started", started, None);
                    }
                    stage(ctx, runtime, "agent_connected", started, None);
                    for s in conn.hello.stages.iter().filter(|_| boot_stages) {
                        let name = serde_json::to_value(s.stage)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_else(|| format!("{:?}", s.stage));
                        runtime.stages.push(VmStageRecord {
                            stage: name,
                            at_ms: ms_since(started),
                            guest_uptime_ms: Some(s.uptime_ms),
                        });
                    }
                    return Ok(conn);
                }
            }
            () = &mut exited => {
                return Err("the VMM exited before the agent was ready".into());
            }
            () = &mut deadline => {
                return Err(format!("the guest did not become ready within {} s", timeout.as_secs()));
            }
            _ = console_tick.tick(), if !kernel_seen => {
                if std::fs::metadata(console).map(|m| m.len() > 0).unwrap_or(false) {
                    kernel_seen = true;
                    stage(ctx, runtime, "kernel_started", started, None);
                }
            }
        }
    }
}

fn failure_report(
    name: &str,
    reason: &str,
    reached: &str,
    dir: &Path,
    stderr: &Path,
    console: &Path,
) -> String {
    let stderr = tail(stderr, 20);
    let console = console::quote_tail(
        &[
            console.with_file_name(console::CONSOLE_LOG_OLD),
            console.to_path_buf(),
        ],
        CONSOLE_TAIL_LINES,
        QUOTE_MAX_BYTES,
    );
    format!(
        "VM {name} failed to start: {reason} (last stage reached: {reached}); it is kept for `banger vm logs {name}` ({})\n--- VMM stderr ---\n{stderr}\n--- console (last {CONSOLE_TAIL_LINES} lines, at most {} KiB) ---\n{console}",
        dir.display(),
        QUOTE_MAX_BYTES >> 10,
    )
}

/// The last `lines` lines of the file at `path`, at most [`QUOTE_MAX_BYTES`], read from
/// the end (a VMM's stderr can hold whatever the guest made it print).
pub(super) fn tail(path: &Path, lines: usize) -> String {
    console::quote_tail(&[path.to_path_buf()], lines, QUOTE_MAX_BYTES)
}
