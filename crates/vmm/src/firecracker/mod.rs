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

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub use http::ApiError;

use crate::config::{Accel, ChannelKind, ConfigError, MAX_CMDLINE, NetConfig, VmConfig};
use crate::files::RunFiles;
use crate::process::{self, ProcessRecord, ROLE_VMM};
use crate::qemu::{self, LaunchError, Started};
use crate::{ChannelEndpoint, Launched, Vmm, VmmError, netns, ports};

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
}

impl Firecracker {
    /// A driver running `program` (a `firecracker` binary, v1.16 API).
    pub fn new(program: PathBuf) -> Firecracker {
        Firecracker { program }
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
        let mut v = api::requests(cfg, &files, Some(netns::TAP_NAME));
        v.push(api::instance_start());
        v.into_iter()
            .map(|r| (r.method, r.path, r.body.to_string()))
            .collect()
    }

    fn launch_inner(&self, cfg: &VmConfig) -> Result<Launched, VmmError> {
        check_config(cfg)?;
        let net = match &cfg.net {
            NetConfig::User { forwards } => {
                ports::check_free(forwards)?;
                Some((netns::check()?, forwards.clone()))
            }
            NetConfig::None => None,
        };
        let files = RunFiles::new(&cfg.run_dir);
        if let Some(live) = qemu::still_running(&files.pids_json) {
            return Err(LaunchError::AlreadyRunning {
                run_dir: cfg.run_dir.clone(),
                role: live.role,
                pid: live.pid,
            }
            .into());
        }
        for s in files.driver_sockets() {
            qemu::remove_stale(s)?;
        }
        // Firecracker opens the console file itself; truncated here like the logs.
        drop(qemu::create(&files.console_log)?);
        let log = qemu::create(&files.fc_log)?;

        let fc_args: Vec<std::ffi::OsString> = vec![
            "--api-sock".into(),
            files.fc_api_socket.clone().into(),
            "--id".into(),
            instance_id(&cfg.name).into(),
        ];
        let mut cmd = match &net {
            Some((tools, _)) => netns::wrap(tools, &self.program, &fc_args),
            None => {
                let mut c = Command::new(&self.program);
                c.args(&fc_args);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(qemu::clone_file(&log, &files.fc_log)?)
            .stderr(log);
        let created: Arc<Mutex<Leftovers>> = Arc::default();
        let to_remove = Arc::clone(&created);
        let vmm = process::spawn_detached(&mut cmd, ROLE_VMM, move |_| {
            let left = to_remove.lock().map(|l| l.clone()).unwrap_or_default();
            // pasta holds the namespace and would stay forever.
            for h in &left.helpers {
                let _ = h.signal(libc::SIGTERM);
            }
            for (path, ino) in left.sockets {
                remove_if_same(&path, ino);
            }
        })
        .map_err(|source| LaunchError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        let mut started = Started::new(&files.pids_json);
        started.add(vmm.record.clone())?;
        let failed = |e: ApiError| -> VmmError {
            match vmm.exit.try_recv() {
                Ok(status) => qemu::exited(&self.program, status, &files.fc_log).into(),
                Err(_) => e.into(),
            }
        };
        self.wait_api(&files, &vmm.exit)?;
        remember(&created, &files.fc_api_socket);

        let tap = match &net {
            Some((tools, forwards)) => {
                let attached = netns::attach(tools, &vmm.record, forwards, &files)?;
                if let Ok(mut l) = created.lock() {
                    l.helpers.push(attached.pasta.clone());
                }
                started.add(attached.pasta)?;
                Some(netns::TAP_NAME)
            }
            None => None,
        };
        for r in api::requests(cfg, &files, tap) {
            http::call(&files.fc_api_socket, r.method, &r.path, Some(&r.body)).map_err(failed)?;
        }
        remember(&created, &files.vsock_uds);
        let start = api::instance_start();
        http::call(
            &files.fc_api_socket,
            start.method,
            &start.path,
            Some(&start.body),
        )
        .map_err(failed)?;
        let mut processes = started.keep();
        // The VMM last, as `Launched` promises.
        processes.sort_by_key(|p| p.role == ROLE_VMM);
        tracing::debug!(vm = %cfg.name, ?processes, "launched under firecracker");
        Ok(Launched {
            processes,
            console_log: files.console_log,
            vmm_stderr: files.fc_log,
        })
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
                    tail: qemu::tail(&files.fc_log),
                });
            }
            // Wakes at once if Firecracker exits meanwhile.
            if let Ok(status) = exit.recv_timeout(Duration::from_millis(5)) {
                return Err(qemu::exited(&self.program, status, &files.fc_log));
            }
        }
    }
}

impl Vmm for Firecracker {
    fn name(&self) -> &'static str {
        "firecracker"
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
