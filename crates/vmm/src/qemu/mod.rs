//! The QEMU driver: `qemu-system-x86_64 -M microvm`, under KVM or TCG, with the agent
//! channel over hybrid vsock (through `vhost-device-vsock`) or virtio-serial.
//!
//! # Launch
//! 1. The config is validated, every published host port is bound once to prove it
//!    free, and `pids.json` must name no live process: nothing starts (and no file is
//!    touched) for a launch that cannot work.
//! 2. With the vsock channel, `vhost-device-vsock` starts first; the launch waits until
//!    its vhost-user socket is listening (read from `/proc/net/unix`), while it lives.
//! 3. QEMU starts; the launch waits until QMP answers `query-status` with `running`,
//!    which QEMU only does once every device was realised and the guest started. If QEMU
//!    exits with an error first, the error carries the tail of `qemu.stderr`.
//!
//! # Invariants
//! - Both processes run in their own session with stdin from `/dev/null` and their output
//!   in the run directory; `pids.json` lists them from the moment they exist.
//! - A failed launch leaves no process behind: what it started is killed (SIGKILL) and
//!   waited for before the error returns.
//! - The helper does not exit with QEMU by itself (it waits for the next frontend): while
//!   the launching process lives, QEMU's reaper thread sends it SIGTERM. A daemon that
//!   re-adopts a VM whose `vmm` record is dead stops its `vsock` record itself.

mod args;
mod state;

pub use state::{MEMORY_FILE, STATE_FILE, SaveError};

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::config::{ChannelKind, ConfigError, MAX_CMDLINE, NetConfig, VmConfig};
use crate::files::RunFiles;
pub use crate::launch::LaunchError;
use crate::launch::{Started, clone_file, create, exited, remove_stale, still_running};
// netns/ still reads it here; moving that caller belongs to the netns rework.
pub(crate) use crate::launch::tail;
use crate::process::{self, ProcessRecord, ROLE_VMM, ROLE_VSOCK};
use crate::qmp::Qmp;
use crate::{ChannelEndpoint, Launched, Vmm, VmmError, netns, ports};

/// How long the vsock helper may take to listen on its socket.
const HELPER_READY: Duration = Duration::from_secs(10);
/// How long QEMU may take from spawn to a running guest (device setup, not the boot).
const VMM_READY: Duration = Duration::from_secs(30);

/// The QEMU driver.
#[derive(Debug, Clone)]
pub struct Qemu {
    qemu: PathBuf,
    vsock_backend: Option<PathBuf>,
}

impl Qemu {
    /// A driver running `qemu` (a `qemu-system-x86_64`) and, for the vsock channel,
    /// `vsock_backend` (a `vhost-device-vsock`).
    pub fn new(qemu: PathBuf, vsock_backend: Option<PathBuf>) -> Qemu {
        Qemu {
            qemu,
            vsock_backend,
        }
    }

    /// QEMU's full argument list for `cfg` (for `vm show` and debugging; no checks).
    pub fn command_line(&self, cfg: &VmConfig) -> Vec<OsString> {
        let mut v = vec![self.qemu.clone().into_os_string()];
        v.extend(args::qemu_args(cfg, &RunFiles::new(&cfg.run_dir)));
        v
    }

    fn launch_inner(&self, cfg: &VmConfig) -> Result<Launched, VmmError> {
        cfg.validate()?;
        let cmdline = args::kernel_cmdline(cfg);
        if cmdline.len() > MAX_CMDLINE {
            return Err(ConfigError::CmdlineTooLong { len: cmdline.len() }.into());
        }
        let net = match &cfg.net {
            NetConfig::User { forwards, policy } => {
                ports::check_free(forwards)?;
                Some((netns::check_for(forwards, policy)?, forwards, policy))
            }
            NetConfig::None => None,
        };
        let helper = match (cfg.channel, &self.vsock_backend) {
            (ChannelKind::Vsock, Some(h)) => Some(h.clone()),
            (ChannelKind::Vsock, None) => return Err(LaunchError::NoVsockBackend.into()),
            (ChannelKind::Serial, _) => None,
        };
        let files = RunFiles::new(&cfg.run_dir);
        if let Some(live) = still_running(&files.pids_json) {
            return Err(LaunchError::AlreadyRunning {
                run_dir: cfg.run_dir.clone(),
                role: live.role,
                pid: live.pid,
            }
            .into());
        }
        for s in files.driver_sockets() {
            remove_stale(s)?;
        }

        let mut started = Started::new(&files.pids_json);
        let mut helper_record = None;
        if let Some(program) = &helper {
            let log = create(&files.vsock_stderr)?;
            let mut cmd = Command::new(program);
            cmd.args(args::vsock_helper_args(&files))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(clone_file(&log, &files.vsock_stderr)?)
                .stderr(log);
            let spawned =
                process::spawn_detached(&mut cmd, ROLE_VSOCK, |_| {}).map_err(|source| {
                    LaunchError::Spawn {
                        program: program.clone(),
                        source,
                    }
                })?;
            started.add(spawned.record.clone())?;
            wait_listening(program, &files, &spawned.exit)?;
            helper_record = Some(spawned.record);
        }

        // QEMU appends to the console (so that the daemon can rotate it); a boot starts it
        // empty.
        drop(create(&files.console_log)?);
        let log = create(&files.vmm_stderr)?;
        let qemu_args = args::qemu_args(cfg, &files);
        let mut cmd = match &net {
            Some((tools, forwards, policy)) => {
                let rules = netns::write_rules(policy, forwards, &files)?;
                netns::wrap(tools, &self.qemu, &qemu_args, forwards, rules.as_deref())
            }
            None => {
                let mut c = Command::new(&self.qemu);
                c.args(&qemu_args);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(clone_file(&log, &files.vmm_stderr)?)
            .stderr(log);
        // pasta joins once QEMU runs; both it and the helper would outlive QEMU.
        let helpers: Arc<Mutex<Vec<ProcessRecord>>> =
            Arc::new(Mutex::new(helper_record.into_iter().collect()));
        let to_stop = Arc::clone(&helpers);
        let vmm = process::spawn_detached(&mut cmd, ROLE_VMM, move |_| {
            for h in to_stop.lock().map(|l| l.clone()).unwrap_or_default() {
                let _ = h.signal(libc::SIGTERM);
            }
        })
        .map_err(|source| LaunchError::Spawn {
            program: self.qemu.clone(),
            source,
        })?;
        started.add(vmm.record.clone())?;
        let feeder = match &cfg.restore {
            Some(dir) => {
                if let Err(e) = state::start_incoming(&files, VMM_READY) {
                    if let Ok(status) = vmm.exit.try_recv() {
                        return Err(exited(&self.qemu, status, &files.vmm_stderr).into());
                    }
                    return Err(LaunchError::NotReady {
                        program: self.qemu.clone(),
                        timeout: VMM_READY,
                        waiting_for: format!("QMP to start the restore: {e}"),
                        log: files.vmm_stderr.clone(),
                        tail: tail(&files.vmm_stderr),
                    }
                    .into());
                }
                Some(state::feed(&files, dir)?)
            }
            None => None,
        };
        if let Some((tools, forwards, policy)) = &net {
            self.wait_namespace(&files, &vmm.record, &vmm.exit)?;
            let attached = netns::attach(tools, &vmm.record, forwards, policy, &files)?;
            for r in attached.records() {
                if let Ok(mut h) = helpers.lock() {
                    h.push(r.clone());
                }
                started.add(r)?;
            }
            self.resume(&files, &vmm.exit)?;
        }
        self.wait_running(&files, &vmm.exit, cfg.restore.is_some())?;
        if let Some(feeder) = feeder {
            // QEMU runs once it has read the whole state: the feeder is done or about to be.
            match feeder.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(vm = %cfg.name, error = %e, "feeding the saved state"),
                Err(_) => tracing::warn!(vm = %cfg.name, "the saved-state feeder panicked"),
            }
            let _ = std::fs::remove_file(&files.migrate_socket);
        }
        let processes = started.keep();
        tracing::debug!(vm = %cfg.name, ?processes, "launched");
        Ok(Launched {
            processes,
            console_log: files.console_log,
            vmm_stderr: files.vmm_stderr,
        })
    }

    /// Waits until the namespace set-up (TAP, bridge, policy rules) is done and QEMU (which
    /// opens the TAP as it starts) answers QMP.
    fn wait_namespace(
        &self,
        files: &RunFiles,
        vmm: &ProcessRecord,
        exit: &mpsc::Receiver<ExitStatus>,
    ) -> Result<(), LaunchError> {
        let deadline = Instant::now() + VMM_READY;
        loop {
            if netns::has_interface(vmm.pid, netns::BRIDGE_NAME)
                && Qmp::connect(&files.qmp_socket, Duration::from_millis(100)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::NotReady {
                    program: self.qemu.clone(),
                    timeout: VMM_READY,
                    waiting_for: "its network namespace and QMP".into(),
                    log: files.vmm_stderr.clone(),
                    tail: tail(&files.vmm_stderr),
                });
            }
            if let Ok(status) = exit.recv_timeout(Duration::from_millis(5)) {
                return Err(exited(&self.qemu, status, &files.vmm_stderr));
            }
        }
    }

    /// Starts the guest of a QEMU started paused (`-S`).
    fn resume(
        &self,
        files: &RunFiles,
        exit: &mpsc::Receiver<ExitStatus>,
    ) -> Result<(), LaunchError> {
        let resumed =
            Qmp::connect(&files.qmp_socket, VMM_READY).and_then(|mut q| q.execute("cont"));
        match (resumed, exit.try_recv()) {
            (_, Ok(status)) => Err(exited(&self.qemu, status, &files.vmm_stderr)),
            (Ok(_), _) => Ok(()),
            (Err(e), _) => Err(LaunchError::NotReady {
                program: self.qemu.clone(),
                timeout: VMM_READY,
                waiting_for: format!("QMP `cont` after the network was attached: {e}"),
                log: files.vmm_stderr.clone(),
                tail: tail(&files.vmm_stderr),
            }),
        }
    }

    /// Waits until QMP reports the guest running. A QEMU that exits successfully first
    /// (a guest that was done very fast) counts as launched. `restored`: a guest saved
    /// while paused comes back paused once its state is loaded, and is resumed here. One
    /// QMP connection polled every few milliseconds: a warm start waits on this.
    fn wait_running(
        &self,
        files: &RunFiles,
        exit: &mpsc::Receiver<ExitStatus>,
        restored: bool,
    ) -> Result<(), LaunchError> {
        let deadline = Instant::now() + VMM_READY;
        let mut last = String::from("QMP socket not connectable yet");
        let mut qmp: Option<Qmp> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LaunchError::NotReady {
                    program: self.qemu.clone(),
                    timeout: VMM_READY,
                    waiting_for: format!("QMP status `running`; last: {last}"),
                    log: files.vmm_stderr.clone(),
                    tail: tail(&files.vmm_stderr),
                });
            }
            match exit.try_recv() {
                Ok(status) if status.success() => return Ok(()),
                Ok(status) => {
                    return Err(exited(&self.qemu, status, &files.vmm_stderr));
                }
                Err(_) => {}
            }
            let connected = match qmp.take() {
                Some(q) => Ok(q),
                None => Qmp::connect(&files.qmp_socket, left),
            };
            match connected {
                Ok(mut q) => match q.status() {
                    Ok(s) if s == "running" => return Ok(()),
                    Ok(s) if restored && s == "paused" => match q.execute("cont") {
                        Ok(_) => qmp = Some(q),
                        Err(e) => last = format!("`cont` after the restore: {e}"),
                    },
                    Ok(s) => {
                        last = format!("status `{s}`");
                        qmp = Some(q);
                    }
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            // Not yet: wait a little, but wake at once if QEMU exits meanwhile.
            if let Ok(status) = exit.recv_timeout(Duration::from_millis(2)) {
                if status.success() {
                    return Ok(());
                }
                return Err(exited(&self.qemu, status, &files.vmm_stderr));
            }
        }
    }
}

impl Vmm for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn capabilities(&self) -> crate::Capabilities {
        crate::capabilities::qemu(self.vsock_backend.is_some())
    }

    fn channel_endpoint(&self, cfg: &VmConfig) -> ChannelEndpoint {
        let files = RunFiles::new(&cfg.run_dir);
        match cfg.channel {
            ChannelKind::Vsock => ChannelEndpoint::VsockListen(files.vsock_agent_listen),
            ChannelKind::Serial => ChannelEndpoint::SerialConnect(files.serial_socket),
        }
    }

    fn launch(&self, cfg: &VmConfig) -> Result<Launched, VmmError> {
        self.launch_inner(cfg)
    }

    fn power_down(&self, run_dir: &Path) -> Result<(), VmmError> {
        let files = RunFiles::new(run_dir);
        let mut q = Qmp::connect(&files.qmp_socket, Duration::from_secs(5))?;
        q.execute("system_powerdown")?;
        Ok(())
    }

    fn pause(&self, run_dir: &Path) -> Result<(), VmmError> {
        state::pause(run_dir)
    }

    fn resume(&self, run_dir: &Path) -> Result<(), VmmError> {
        state::resume(run_dir)
    }

    fn save_state(&self, run_dir: &Path, dest: &Path) -> Result<(), VmmError> {
        state::save(run_dir, dest)
    }
}

/// Waits until the helper listens on its vhost-user socket (while it runs).
fn wait_listening(
    program: &Path,
    files: &RunFiles,
    exit: &mpsc::Receiver<ExitStatus>,
) -> Result<(), LaunchError> {
    let deadline = Instant::now() + HELPER_READY;
    loop {
        if is_listening(&files.vhost_socket) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LaunchError::NotReady {
                program: program.to_path_buf(),
                timeout: HELPER_READY,
                waiting_for: format!("a listener on {}", files.vhost_socket.display()),
                log: files.vsock_stderr.clone(),
                tail: tail(&files.vsock_stderr),
            });
        }
        if let Ok(status) = exit.recv_timeout(Duration::from_millis(5)) {
            return Err(exited(program, status, &files.vsock_stderr));
        }
    }
}

/// Whether a Unix socket bound at `path` is listening, from `/proc/net/unix` (connecting
/// to find out would be taken for a frontend by a vhost-user backend).
fn is_listening(path: &Path) -> bool {
    std::fs::read_to_string("/proc/net/unix").is_ok_and(|t| unix_table_listens(&t, path))
}

/// `Num RefCount Protocol Flags Type St Inode Path`; flag `__SO_ACCEPTCON` (0x10000)
/// marks a listening socket.
fn unix_table_listens(table: &str, path: &Path) -> bool {
    let want = path.as_os_str().to_string_lossy();
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8
            && f[7..].join(" ") == want
            && u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & 0x10000 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_found_in_proc_net_unix() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                     0000000000000000: 00000002 00000000 00010000 0001 01 1234 /run/a b/x.sock\n\
                     0000000000000000: 00000002 00000000 00000000 0001 01 1235 /run/y.sock\n";
        assert!(unix_table_listens(table, Path::new("/run/a b/x.sock")));
        assert!(!unix_table_listens(table, Path::new("/run/y.sock")));
        assert!(!unix_table_listens(table, Path::new("/run/z.sock")));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.sock");
        let _l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        assert!(is_listening(&p));
    }
}
