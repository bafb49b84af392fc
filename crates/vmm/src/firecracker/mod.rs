//! The Firecracker driver: `firecracker --api-sock <run>/fc.sock`, configured over its
//! HTTP API (see `api` for the bodies, `http` for the client), KVM only.
//!
//! # Launch
//! 1. The config is validated, plus what Firecracker alone needs: KVM, the vsock
//!    channel (Firecracker has no virtio-serial), an ELF `vmlinux`, 1 or an even number
//!    of vCPUs up to 32. `pids.json` must name no live process. Nothing starts for a
//!    launch that cannot work.
//! 2. With [`NetConfig::User`], a user + network namespace with a TAP is made first
//!    (see [`crate::netns`]); Firecracker runs inside it.
//! 3. Firecracker starts in its own session, stdout and stderr in `<run>/firecracker.log`;
//!    the launch waits until `GET /` answers, then sends machine config, boot source,
//!    serial console (`<run>/console.log`), drives, vsock, network interface, and
//!    `InstanceStart`. It returns when `InstanceStart` succeeded: the guest runs.
//!    With [`VmConfig::restore`] it sends only the serial console and
//!    `PUT /snapshot/load` (which resumes the guest) instead.
//!
//! # Pause, save, restore
//! `PATCH /vm` pauses and resumes; [`save_state`] is a full `PUT /snapshot/create`. A
//! saved state records the drives' paths and a load reopens them, so they are the same
//! for every VM: the jail's `/vda`, …, or unjailed `fc-drives/vda`, … relative to the run
//! directory (Firecracker's working directory), symlinks to the VM's disks.
//!
//! # Invariants
//! - A refused request is an error carrying Firecracker's `fault_message`; if Firecracker
//!   exited meanwhile, the error carries the tail of its log instead.
//! - A failed launch leaves no process: what it started is killed and waited for.
//! - Firecracker leaves its API and vsock sockets behind when it exits. While the
//!   launching process lives, the reaper thread removes them (only if they are still the
//!   ones this launch created); otherwise [`crate::Vmm::cleanup`] does.
//! - Guest connections to host port 1025 arrive at `<run>/vsock.sock_1025`, exactly as with
//!   QEMU ([`crate::ChannelEndpoint::VsockListen`]).

pub(crate) mod api;
pub(crate) mod http;
mod jail;

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub use http::ApiError;
pub use jail::{JailError, JailerConfig};

use crate::config::{
    Accel, ChannelKind, ConfigError, DiskFormat, MAX_CMDLINE, NetConfig, PortForward, VmConfig,
};
use crate::files::RunFiles;
use crate::launch::{self, LaunchError, Started};
use crate::process::{self, ProcessRecord, ROLE_VMM};
use crate::{ChannelEndpoint, Launched, Vmm, VmmError, netns, ports};
use jail::Jail;

/// The program name detection looks for.
pub const FIRECRACKER_PROGRAM: &str = "firecracker";
/// The environment variable naming the Firecracker binary explicitly.
pub const FIRECRACKER_ENV: &str = "BANGER_FIRECRACKER";
/// Firecracker's vCPU limit.
pub const FIRECRACKER_MAX_CPUS: u32 = 32;
/// How long Firecracker may take from spawn to answering its API.
const API_READY: Duration = Duration::from_secs(30);

/// The Firecracker driver.
#[derive(Debug, Clone)]
pub struct Firecracker {
    program: PathBuf,
    jailer: Option<JailerConfig>,
}

impl Firecracker {
    /// A driver running `program` (a `firecracker` binary, v1.16 API).
    pub fn new(program: PathBuf) -> Firecracker {
        Firecracker {
            program,
            jailer: None,
        }
    }

    /// The same driver, launching Firecracker through `jailer` whenever the launching
    /// process is root (otherwise the jailer cannot chroot or drop privileges, and
    /// Firecracker runs as the caller, as without it). See the module docs of `jail`.
    pub fn with_jailer(mut self, jailer: JailerConfig) -> Firecracker {
        self.jailer = Some(jailer);
        self
    }

    /// The jailer configuration, if any (used only as root: see [`Self::jailed`]).
    pub fn jailer(&self) -> Option<&JailerConfig> {
        self.jailer.as_ref()
    }

    /// Whether a launch now would go through the jailer: configured, and running as root.
    pub fn jailed(&self) -> bool {
        self.active_jailer().is_some()
    }

    fn active_jailer(&self) -> Option<&JailerConfig> {
        // SAFETY: geteuid has no preconditions and touches no memory.
        let root = unsafe { libc::geteuid() } == 0;
        self.jailer.as_ref().filter(|_| root)
    }

    /// The binary this driver runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The API calls a launch of `cfg` makes, as `(method, path, JSON body)`, in order
    /// (for `vm show` and debugging; no checks). The TAP name is the one
    /// [`crate::netns`] creates.
    pub fn api_calls(&self, cfg: &VmConfig) -> Vec<(&'static str, String, String)> {
        let files = RunFiles::new(&cfg.run_dir);
        let paths = match self.active_jailer() {
            Some(_) => Jail::guest_paths(cfg),
            None => api::GuestPaths::direct(cfg, &files),
        };
        let tap = Some(netns::TAP_NAME);
        let v = match cfg.restore {
            Some(_) => api::restore_requests(cfg, &paths, tap),
            None => {
                let mut v = api::requests(cfg, &paths, tap);
                v.push(api::instance_start());
                v
            }
        };
        v.into_iter()
            .map(|r| (r.method, r.path, r.body.to_string()))
            .collect()
    }

    fn launch_inner(&self, cfg: &VmConfig) -> Result<Launched, VmmError> {
        check_config(cfg)?;
        let net = user_net(cfg)?;
        let files = RunFiles::new(&cfg.run_dir);
        if let Some(live) = launch::still_running(&files.pids_json) {
            return Err(LaunchError::AlreadyRunning {
                run_dir: cfg.run_dir.clone(),
                role: live.role,
                pid: live.pid,
            }
            .into());
        }
        let id = instance_id(&cfg.name);
        let jail = match self.active_jailer() {
            Some(j) => {
                let jail = Jail::new(j, &self.program, &id)?;
                jail.check(cfg, &files)?;
                Some((j, jail))
            }
            None => None,
        };
        let log = fresh_run_files(&files)?;
        if jail.is_none() {
            link_drives(cfg)?;
        }
        let rules = match &cfg.net {
            NetConfig::User { forwards, policy } => netns::write_rules(policy, forwards, &files)?,
            NetConfig::None => None,
        };
        let mut cmd = self.command(cfg, &files, &id, &jail, &net, rules.as_deref())?;
        // Unjailed drive paths are relative to the run directory (see `GuestPaths`).
        cmd.current_dir(&cfg.run_dir)
            .stdin(Stdio::null())
            .stdout(launch::clone_file(&log, &files.fc_log)?)
            .stderr(log);
        let (vmm, created) = self.spawn(cfg, &files, &jail, &mut cmd)?;
        let mut started = Started::new(&files.pids_json);
        started.add(vmm.record.clone())?;
        if let Some((_, j)) = &jail {
            // The run directory's usual names lead into the jail.
            j.expose(jail::API_SOCKET, &files.fc_api_socket)?;
            j.expose(
                &Jail::guest_paths(cfg).vsock_uds.to_string_lossy(),
                &files.vsock_uds,
            )?;
        }
        self.wait_api(&files, &vmm.exit)?;
        remember(&created, &files.fc_api_socket);
        let tap = match &net {
            Some(net) => {
                let named = jail.as_ref().map(|_| netns::named_path(&netns_name(&id)));
                let ns = match &named {
                    Some(p) => netns::Ns::Named(p),
                    None => netns::Ns::Process(vmm.record.pid),
                };
                let attached = netns::attach_to(
                    &net.tools,
                    ns,
                    &vmm.record,
                    &net.forwards,
                    &net.policy,
                    &files,
                )?;
                for r in attached.records() {
                    if let Ok(mut l) = created.lock() {
                        l.helpers.push(r.clone());
                    }
                    started.add(r)?;
                }
                Some(netns::TAP_NAME)
            }
            None => None,
        };
        self.configure_and_start(cfg, &files, jail.is_some(), tap, &vmm, &created)?;
        let mut processes = started.keep();
        // The VMM last, as `Launched` promises.
        processes.sort_by_key(|p| p.role == ROLE_VMM);
        tracing::debug!(vm = %cfg.name, ?processes, jailed = jail.is_some(), "launched under firecracker");
        Ok(Launched {
            processes,
            console_log: files.console_log,
            vmm_stderr: files.fc_log,
        })
    }

    /// The command that starts Firecracker: through the jailer (in a named network
    /// namespace when networked), or directly (wrapped into a fresh namespace when
    /// networked).
    fn command(
        &self,
        cfg: &VmConfig,
        files: &RunFiles,
        id: &str,
        jail: &Option<(&JailerConfig, Jail)>,
        net: &Option<UserNet>,
        rules: Option<&Path>,
    ) -> Result<Command, VmmError> {
        Ok(match jail {
            Some((jailer, jail)) => {
                jail.prepare(cfg, files, &self.program)?;
                let mut args = jail.command_args(jailer, &self.program);
                if let Some(net) = net {
                    // The jailer needs the init user namespace (mknod, chown, setuid),
                    // so the TAP lives in a named network namespace it joins.
                    let name = netns_name(id);
                    match netns::create_named(
                        &net.tools,
                        &name,
                        (jail.uid, jail.gid),
                        &net.forwards,
                        rules,
                    ) {
                        Ok(path) => {
                            args.splice(0..0, [OsString::from("--netns"), path.into()]);
                        }
                        Err(e) => {
                            jail::remove_recorded(files);
                            return Err(e.into());
                        }
                    }
                }
                let mut c = Command::new(&jailer.path);
                c.args(args);
                c
            }
            None => {
                let fc_args: Vec<OsString> = vec![
                    "--api-sock".into(),
                    files.fc_api_socket.clone().into(),
                    "--id".into(),
                    id.to_string().into(),
                ];
                match net {
                    Some(net) => {
                        netns::wrap(&net.tools, &self.program, &fc_args, &net.forwards, rules)
                    }
                    None => {
                        let mut c = Command::new(&self.program);
                        c.args(&fc_args);
                        c
                    }
                }
            }
        })
    }

    /// Starts Firecracker in its own session, with a reaper that removes what it leaves
    /// behind (its sockets, its jail, its pasta) once it exits.
    fn spawn(
        &self,
        cfg: &VmConfig,
        files: &RunFiles,
        jail: &Option<(&JailerConfig, Jail)>,
        cmd: &mut Command,
    ) -> Result<(process::Spawned, Arc<Mutex<Leftovers>>), VmmError> {
        let created: Arc<Mutex<Leftovers>> = Arc::new(Mutex::new(Leftovers {
            jail: jail.as_ref().map(|(_, j)| j.dir.clone()),
            run_dir: cfg.run_dir.clone(),
            ..Leftovers::default()
        }));
        let to_remove = Arc::clone(&created);
        let spawned = process::spawn_detached(cmd, ROLE_VMM, move |_| {
            let left = to_remove.lock().map(|l| l.clone()).unwrap_or_default();
            // pasta holds the namespace and would stay forever.
            for h in &left.helpers {
                let _ = h.signal(libc::SIGTERM);
            }
            for (path, ino) in left.sockets {
                remove_if_same(&path, ino);
            }
            if let Some(dir) = &left.jail {
                remove_jail(&RunFiles::new(&left.run_dir), dir);
            }
        });
        match spawned {
            Ok(v) => Ok((v, created)),
            Err(source) => {
                if let Some((_, j)) = jail {
                    remove_jail(files, &j.dir);
                }
                Err(LaunchError::Spawn {
                    program: jail
                        .as_ref()
                        .map_or_else(|| self.program.clone(), |(c, _)| c.path.clone()),
                    source,
                }
                .into())
            }
        }
    }

    /// Sends the machine's configuration over the API, then `InstanceStart`. A refusal
    /// from a Firecracker that exited meanwhile becomes its exit and log tail.
    fn configure_and_start(
        &self,
        cfg: &VmConfig,
        files: &RunFiles,
        jailed: bool,
        tap: Option<&str>,
        vmm: &process::Spawned,
        created: &Mutex<Leftovers>,
    ) -> Result<(), VmmError> {
        let failed = |e: ApiError| -> VmmError {
            match vmm.exit.try_recv() {
                Ok(status) => launch::exited(&self.program, status, &files.fc_log).into(),
                Err(_) => e.into(),
            }
        };
        let paths = if jailed {
            Jail::guest_paths(cfg)
        } else {
            api::GuestPaths::direct(cfg, files)
        };
        let calls = match cfg.restore {
            // The load resumes the guest: nothing to start.
            Some(_) => api::restore_requests(cfg, &paths, tap),
            None => {
                let mut v = api::requests(cfg, &paths, tap);
                v.push(api::instance_start());
                v
            }
        };
        for r in calls {
            http::call(&files.fc_api_socket, r.method, &r.path, Some(&r.body)).map_err(failed)?;
            if r.path == "/vsock" || r.path == "/snapshot/load" {
                // Firecracker made the vsock socket: the reaper removes it.
                remember(created, &files.vsock_uds);
            }
        }
        Ok(())
    }

    /// Waits until `GET /` answers on the API socket, while Firecracker lives.
    fn wait_api(
        &self,
        files: &RunFiles,
        exit: &mpsc::Receiver<ExitStatus>,
    ) -> Result<(), LaunchError> {
        let deadline = Instant::now() + API_READY;
        let mut last = String::from("no API socket yet");
        loop {
            if files.fc_api_socket.exists() {
                match http::call(&files.fc_api_socket, "GET", "/", None) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::NotReady {
                    program: self.program.clone(),
                    timeout: API_READY,
                    waiting_for: format!(
                        "an answer on {}; last: {last}",
                        files.fc_api_socket.display()
                    ),
                    log: files.fc_log.clone(),
                    tail: launch::tail(&files.fc_log),
                });
            }
            // Wakes at once if Firecracker exits meanwhile.
            if let Ok(status) = exit.recv_timeout(Duration::from_millis(5)) {
                return Err(launch::exited(&self.program, status, &files.fc_log));
            }
        }
    }
}

impl Vmm for Firecracker {
    fn name(&self) -> &'static str {
        "firecracker"
    }

    fn capabilities(&self) -> crate::Capabilities {
        crate::capabilities::firecracker()
    }

    fn channel_endpoint(&self, cfg: &VmConfig) -> ChannelEndpoint {
        // Firecracker has only vsock; a serial config is refused at launch.
        ChannelEndpoint::VsockListen(RunFiles::new(&cfg.run_dir).vsock_agent_listen)
    }

    fn launch(&self, cfg: &VmConfig) -> Result<Launched, VmmError> {
        self.launch_inner(cfg)
    }

    fn power_down(&self, run_dir: &Path) -> Result<(), VmmError> {
        let files = RunFiles::new(run_dir);
        let r = api::ctrl_alt_del();
        http::call(&files.fc_api_socket, r.method, &r.path, Some(&r.body))?;
        Ok(())
    }

    fn pause(&self, run_dir: &Path) -> Result<(), VmmError> {
        send(run_dir, &api::set_state(api::VmState::Paused))
    }

    fn resume(&self, run_dir: &Path) -> Result<(), VmmError> {
        send(run_dir, &api::set_state(api::VmState::Resumed))
    }

    fn save_state(&self, run_dir: &Path, dest: &Path) -> Result<(), VmmError> {
        save_state(run_dir, dest)
    }

    fn listener_rebound(&self, run_dir: &Path) -> Result<(), VmmError> {
        listener_rebound(run_dir)
    }

    fn cleanup(&self, run_dir: &Path) -> Result<(), VmmError> {
        cleanup(run_dir)
    }
}

/// One call to the API of the VM running in `run_dir`.
fn send(run_dir: &Path, r: &api::Request) -> Result<(), VmmError> {
    let files = RunFiles::new(run_dir);
    http::call(&files.fc_api_socket, r.method, &r.path, Some(&r.body))?;
    Ok(())
}

/// [`Vmm::save_state`] of a Firecracker VM: a full snapshot, `dest/vmstate` (devices)
/// and `dest/memory`. A jailed Firecracker can only write inside its jail: it writes to
/// the jail's `/snapshot/`, and the files are then moved to `dest` (a rename when the
/// jail is on `dest`'s filesystem, as the chroot base should be; else a copy). Both files
/// are made 0600: they hold everything the guest held in memory, secrets included.
pub fn save_state(run_dir: &Path, dest: &Path) -> Result<(), VmmError> {
    let files = RunFiles::new(run_dir);
    let dest = api::absolute(dest);
    let (state, memory) = api::saved_files(&dest);
    write_state(run_dir, &files, &state, &memory)?;
    for f in [&state, &memory] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600))
            .map_err(jail::saved_state_err("restrict to its owner", f))
            .map_err(VmmError::from)?;
    }
    Ok(())
}

/// Has Firecracker write a full snapshot to `state` and `memory`.
fn write_state(
    run_dir: &Path,
    files: &RunFiles,
    state: &Path,
    memory: &Path,
) -> Result<(), VmmError> {
    match jail::recorded_root(files) {
        None => send(run_dir, &api::snapshot_create(state, memory)),
        Some(root) => {
            let staging = jail::snapshot_dir(&root)?;
            let inside = Path::new("/").join(jail::SNAPSHOT_DIR);
            let (in_state, in_memory) = api::saved_files(&inside);
            let (out_state, out_memory) = api::saved_files(&staging);
            let saved = send(run_dir, &api::snapshot_create(&in_state, &in_memory))
                .and_then(|()| Ok(jail::move_out(&out_state, state)?))
                .and_then(|()| Ok(jail::move_out(&out_memory, memory)?));
            let _ = std::fs::remove_dir_all(&staging);
            saved
        }
    }
}

/// Symlinks an unjailed VM's disks as `<run>/fc-drives/vda`, … (see `GuestPaths`).
fn link_drives(cfg: &VmConfig) -> Result<(), LaunchError> {
    let dir = cfg.run_dir.join(api::DRIVE_LINKS);
    let _ = std::fs::remove_dir_all(&dir);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LaunchError::RunFile { path, source }
    };
    std::fs::create_dir(&dir).map_err(io(&dir))?;
    for (i, d) in cfg.disks.iter().enumerate() {
        let link = dir.join(api::drive_id(i));
        std::os::unix::fs::symlink(api::absolute(&d.path), &link).map_err(io(&link))?;
    }
    Ok(())
}

/// [`Vmm::listener_rebound`] of a Firecracker VM; needs no driver instance (everything is
/// recorded in the run directory), so a restarted daemon can call it for any VM.
pub fn listener_rebound(run_dir: &Path) -> Result<(), VmmError> {
    Ok(jail::relink_listener(&RunFiles::new(run_dir))?)
}

/// [`Vmm::cleanup`] of a Firecracker VM (its sockets, its jail and the jail's network
/// namespace); needs no driver instance, and is harmless for a VM of another driver.
pub fn cleanup(run_dir: &Path) -> Result<(), VmmError> {
    let files = RunFiles::new(run_dir);
    for s in files.driver_sockets() {
        launch::remove_stale(s)?;
    }
    if let Ok(dir) = std::fs::read_link(&files.jail_link) {
        remove_jail(&files, &dir);
    }
    Ok(())
}

/// User-mode networking's launch inputs: the tools found, the forwards, the policy.
struct UserNet {
    tools: netns::Tools,
    forwards: Vec<PortForward>,
    policy: netns::Policy,
}

/// Checks what user-mode networking needs (free host ports, the tools) before anything
/// starts; `None` without networking.
fn user_net(cfg: &VmConfig) -> Result<Option<UserNet>, VmmError> {
    match &cfg.net {
        NetConfig::User { forwards, policy } => {
            ports::check_free(forwards)?;
            Ok(Some(UserNet {
                tools: netns::check_for(forwards, policy)?,
                forwards: forwards.clone(),
                policy: policy.clone(),
            }))
        }
        NetConfig::None => Ok(None),
    }
}

/// Removes the sockets a previous Firecracker left and starts an empty console log;
/// returns Firecracker's own log, fresh.
fn fresh_run_files(files: &RunFiles) -> Result<std::fs::File, VmmError> {
    for s in files.driver_sockets() {
        launch::remove_stale(s)?;
    }
    // Firecracker opens the console file itself (at offset 0, without O_APPEND: its API
    // has no append mode), so it starts empty here. After the daemon truncates it to
    // rotate, Firecracker's writes continue at its offset past a hole, which takes no
    // disk space and which readers skip (banger-daemon's `vms/console.rs`).
    drop(launch::create(&files.console_log)?);
    Ok(launch::create(&files.fc_log)?)
}

/// The named network namespace of a jailed VM with networking.
fn netns_name(id: &str) -> String {
    format!("banger-{id}")
}

/// Removes a jail (and its named network namespace) if `files` still records `dir`.
fn remove_jail(files: &RunFiles, dir: &Path) {
    if std::fs::read_link(&files.jail_link).is_ok_and(|d| d == dir) {
        if let Some(id) = dir.file_name().and_then(|n| n.to_str()) {
            netns::delete_named(&netns::named_path(&netns_name(id)));
        }
        jail::remove_recorded(files);
    }
}

/// What Firecracker needs beyond [`VmConfig::validate`].
pub(crate) fn check_config(cfg: &VmConfig) -> Result<(), ConfigError> {
    cfg.validate()?;
    let unsupported = |what: String, fix: &'static str| ConfigError::Unsupported {
        vmm: "firecracker",
        what,
        fix,
    };
    if let Accel::Tcg { .. } = cfg.accel {
        return Err(unsupported(
            "software emulation (TCG)".into(),
            "Firecracker runs only under KVM: use QEMU on this host",
        ));
    }
    if cfg.channel == ChannelKind::Serial {
        return Err(unsupported(
            "the serial agent channel".into(),
            "use the vsock channel (Firecracker has hybrid vsock built in)",
        ));
    }
    if cfg.cpus > FIRECRACKER_MAX_CPUS || (cfg.cpus > 1 && cfg.cpus % 2 == 1) {
        return Err(ConfigError::OutOfRange {
            what: "cpus",
            value: u64::from(cfg.cpus),
            range: format!("1 or an even number up to {FIRECRACKER_MAX_CPUS} for Firecracker"),
        });
    }
    if !is_elf(&cfg.kernel) {
        return Err(unsupported(
            format!(
                "the kernel {}, which is not an ELF vmlinux",
                cfg.kernel.display()
            ),
            "give it the uncompressed vmlinux (the kernel store extracts it from vmlinuz)",
        ));
    }
    if let Some((i, d)) = cfg
        .disks
        .iter()
        .enumerate()
        .find(|(_, d)| d.format != DiskFormat::Raw)
    {
        return Err(unsupported(
            format!(
                "disk {i} ({}) in the {} format",
                d.path.display(),
                d.format.as_str()
            ),
            "Firecracker attaches raw disk files only: give it a raw image (qcow2 overlays \
             are QEMU's)",
        ));
    }
    if let Some(dir) = &cfg.restore {
        let (state, memory) = api::saved_files(dir);
        for f in [state, memory] {
            if !f.is_file() {
                return Err(unsupported(
                    format!(
                        "restoring from {}, which has no {}",
                        dir.display(),
                        f.display()
                    ),
                    "restore from a directory Firecracker's save_state wrote",
                ));
            }
        }
    }
    let len = api::boot_args(cfg).len();
    if len > MAX_CMDLINE {
        return Err(ConfigError::CmdlineTooLong { len });
    }
    Ok(())
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// Firecracker's `--id`: 1..=64 of `[A-Za-z0-9-]`.
fn instance_id(name: &str) -> String {
    let id: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(64)
        .collect();
    if id.is_empty() { "banger".into() } else { id }
}

/// What the reaper cleans once Firecracker exited.
#[derive(Debug, Clone, Default)]
struct Leftovers {
    /// The jail directory, when jailed.
    jail: Option<PathBuf>,
    /// The run directory (whose `jail` link must still name that jail).
    run_dir: PathBuf,
    /// Sockets Firecracker created, with their inodes.
    sockets: Vec<(PathBuf, u64)>,
    /// Helpers that do not exit with Firecracker (pasta).
    helpers: Vec<ProcessRecord>,
}

/// Notes the inode of a socket Firecracker created, for the reaper to remove.
fn remember(created: &Mutex<Leftovers>, path: &Path) {
    if let (Ok(m), Ok(mut l)) = (std::fs::symlink_metadata(path), created.lock()) {
        l.sockets.push((path.to_path_buf(), m.ino()));
    }
}

/// Removes `path` if it is still the file with inode `ino` (a later launch into the same
/// run directory may have created a new one).
fn remove_if_same(path: &Path, ino: u64) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == ino) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests;
