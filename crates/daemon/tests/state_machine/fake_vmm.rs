//! A recording fake of `banger_vmm::Vmm`: every launch starts two real, tiny processes
//! (a "helper" and a "VMM": `sh -c 'read x'` on a pipe this process holds, so they also
//! end if the test process dies) and an in-process fake guest agent. The daemon watches,
//! signals and re-adopts them through their `ProcessRecord`s exactly as it does QEMU's.
//! What each launch does is scripted by a [`Plan`].

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use banger_vmm::{
    Capabilities, ChannelEndpoint, ChannelKind, LaunchError, Launched, ProcessRecord, ROLE_VMM,
    ROLE_VSOCK, RunFiles, Support, VmConfig, Vmm, VmmError, VsockKind,
};
use tokio::sync::watch;

use crate::fake_agent;

/// What the VMM's own output says when the fake guest crashes (the daemon must quote it).
pub const CRASH_STDERR: &str = "fake-vmm: guest crashed (scripted)";

/// A point a launch or a guest stops at until the test opens it.
#[derive(Clone)]
pub struct Gate {
    open: watch::Sender<bool>,
    reached: watch::Sender<bool>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            open: watch::Sender::new(false),
            reached: watch::Sender::new(false),
        }
    }
}

impl Gate {
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Resolves once something waits at the gate.
    pub async fn reached(&self) {
        let mut rx = self.reached.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    pub async fn pass(&self) {
        self.reached.send_replace(true);
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|o| *o).await;
    }

    fn pass_blocking(&self, rt: &tokio::runtime::Handle) {
        rt.block_on(self.pass());
    }
}

/// What the guest does once its VMM runs.
#[derive(Clone, Default)]
pub enum Guest {
    /// Dials the host and passes the authenticated hello at once.
    #[default]
    Ready,
    /// Waits at the gate, then behaves as `Ready`.
    HelloAfter(Gate),
    /// Never dials (a guest stuck in its boot).
    Silent,
    /// The VMM dies before the guest dials (a kernel panic), saying [`CRASH_STDERR`].
    DiesBeforeHello,
    /// The VMM dies as soon as the hello was answered.
    DiesAfterHello,
    /// As `Ready`, but serves HTTP/2 on the serial port without the session sync (an agent
    /// of an older banger).
    BeforeSerialSync,
}

/// What a power-down request does.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub enum PowerDown {
    /// The guest honours the ACPI button: the VMM exits.
    #[default]
    PowersOff,
    /// The guest ignores it: nothing happens.
    Ignored,
    /// The VMM crashes while asked, and the request fails.
    Crashes,
}

/// The script of one launch.
#[derive(Clone, Default)]
pub struct Plan {
    /// The launch blocks here first (a slow VMM start).
    pub launch_gate: Option<Gate>,
    /// The launch fails with this message, starting nothing.
    pub launch_fails: Option<&'static str>,
    pub guest: Guest,
    /// The agent answers `shutdown` but the guest keeps running.
    pub ignore_shutdown: bool,
    pub power_down: PowerDown,
    /// `save_state` fails with this message (after the guest was paused).
    pub save_fails: Option<&'static str>,
}

/// A call the daemon made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Launch { vm: String },
    PowerDown { run_dir: PathBuf },
    Pause { run_dir: PathBuf },
    Resume { run_dir: PathBuf },
    Save { run_dir: PathBuf },
}

/// One launched VM: its processes, and the pipes that keep them waiting.
struct Running {
    vmm: ProcessRecord,
    helper: ProcessRecord,
    power_down: PowerDown,
    save_fails: Option<&'static str>,
    /// Restored from a saved state (`VmConfig::restore`).
    restored: bool,
    _stdin: Vec<ChildStdin>,
}

pub struct FakeVmm {
    rt: tokio::runtime::Handle,
    plans: Mutex<VecDeque<Plan>>,
    calls: Mutex<Vec<Call>>,
    vms: Mutex<HashMap<PathBuf, Running>>,
    /// Every process any launch started, to prove none is left.
    spawned: Mutex<Vec<ProcessRecord>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeVmm {
    /// Fake guests run on `rt`, which must outlive every daemon of the test.
    pub fn new(rt: tokio::runtime::Handle) -> Arc<FakeVmm> {
        Arc::new(FakeVmm {
            rt,
            plans: Mutex::default(),
            calls: Mutex::default(),
            vms: Mutex::default(),
            spawned: Mutex::default(),
        })
    }

    /// The next launch follows `plan` (launches without a plan get the default one).
    pub fn script(&self, plan: Plan) {
        lock(&self.plans).push_back(plan);
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    pub fn launches(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c, Call::Launch { .. }))
            .count()
    }

    pub fn power_downs(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c, Call::PowerDown { .. }))
            .count()
    }

    /// Whether the VM in `run_dir` was launched from a saved state.
    pub fn restored(&self, run_dir: &Path) -> bool {
        lock(&self.vms).get(run_dir).is_some_and(|r| r.restored)
    }

    /// The processes of the VM in `run_dir`'s latest launch: (helper, VMM).
    pub fn processes(&self, run_dir: &Path) -> Option<(ProcessRecord, ProcessRecord)> {
        lock(&self.vms)
            .get(run_dir)
            .map(|r| (r.helper.clone(), r.vmm.clone()))
    }

    /// Every process a launch started that still runs.
    pub fn alive(&self) -> Vec<ProcessRecord> {
        lock(&self.spawned)
            .iter()
            .filter(|p| p.is_alive())
            .cloned()
            .collect()
    }

    /// The VMM of the VM in `run_dir` dies now, as a crashed QEMU would.
    pub fn crash(&self, run_dir: &Path) {
        let vmm = lock(&self.vms).get(run_dir).map(|r| r.vmm.clone());
        if let Some(vmm) = vmm {
            crash(&vmm, run_dir);
        }
    }

    fn next_plan(&self) -> Plan {
        lock(&self.plans).pop_front().unwrap_or_default()
    }

    fn record(&self, call: Call) {
        lock(&self.calls).push(call);
    }

    fn spawn_waiting(&self, role: &str) -> Result<(ProcessRecord, ChildStdin), VmmError> {
        let spawn_error = |source| LaunchError::Spawn {
            program: "sh".into(),
            source,
        };
        let mut child: Child = Command::new("sh")
            .args(["-c", "read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(spawn_error)?;
        let stdin = child.stdin.take();
        let record = ProcessRecord::of(child.id(), role).map_err(spawn_error)?;
        // Reaped at once when it dies: a zombie would still hold its pid.
        std::thread::spawn(move || child.wait());
        lock(&self.spawned).push(record.clone());
        let stdin = stdin.ok_or_else(|| spawn_error(std::io::Error::other("no stdin pipe")))?;
        Ok((record, stdin))
    }
}

/// Kills `vmm` after writing [`CRASH_STDERR`] to the VMM's output, and returns once it is
/// dead: `kill` returns before the signal is acted on, and a daemon looking in between
/// would still find it alive.
pub fn crash(vmm: &ProcessRecord, run_dir: &Path) {
    let _ = std::fs::write(RunFiles::new(run_dir).vmm_stderr, CRASH_STDERR);
    let _ = vmm.signal(libc::SIGKILL);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while vmm.is_alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "a SIGKILLed VMM lives on"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

impl Vmm for FakeVmm {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause: Support::Yes,
            snapshot: Support::Yes,
            shared_folders: Support::No,
            hot_plug: Support::No,
            vsock: VsockKind::None,
        }
    }

    fn channel_endpoint(&self, cfg: &VmConfig) -> ChannelEndpoint {
        let files = RunFiles::new(&cfg.run_dir);
        match cfg.channel {
            ChannelKind::Vsock => ChannelEndpoint::VsockListen(files.vsock_agent_listen),
            ChannelKind::Serial => ChannelEndpoint::SerialConnect(files.serial_socket),
        }
    }

    fn launch(&self, cfg: &VmConfig) -> Result<Launched, VmmError> {
        self.record(Call::Launch {
            vm: cfg.name.clone(),
        });
        let plan = self.next_plan();
        if let Some(gate) = &plan.launch_gate {
            gate.pass_blocking(&self.rt);
        }
        let files = RunFiles::new(&cfg.run_dir);
        if let Some(message) = plan.launch_fails {
            return Err(LaunchError::Spawn {
                program: "fake-vmm".into(),
                source: std::io::Error::other(message),
            }
            .into());
        }
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LaunchError::RunFile { path, source }
        };
        std::fs::write(&files.console_log, "fake kernel: booting\n")
            .map_err(io_error(&files.console_log))?;
        std::fs::write(&files.vmm_stderr, "").map_err(io_error(&files.vmm_stderr))?;
        let (helper, helper_in) = self.spawn_waiting(ROLE_VSOCK)?;
        let (vmm, vmm_in) = self.spawn_waiting(ROLE_VMM)?;
        let processes = vec![helper.clone(), vmm.clone()];
        let pids = serde_json::to_vec(&processes).unwrap_or_default();
        std::fs::write(&files.pids_json, pids).map_err(io_error(&files.pids_json))?;
        let endpoint = self.channel_endpoint(cfg);
        // Like QEMU's chardev: listening before the launch returns.
        let serial = match &endpoint {
            ChannelEndpoint::SerialConnect(path) => {
                let _ = std::fs::remove_file(path);
                let listener = std::os::unix::net::UnixListener::bind(path)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(io_error(path))?;
                Some(listener)
            }
            ChannelEndpoint::VsockListen(_) => None,
        };
        lock(&self.vms).insert(
            cfg.run_dir.clone(),
            Running {
                vmm: vmm.clone(),
                helper,
                power_down: plan.power_down,
                save_fails: plan.save_fails,
                restored: cfg.restore.is_some(),
                _stdin: vec![helper_in, vmm_in],
            },
        );
        self.rt.spawn(fake_agent::run(fake_agent::Guest {
            run_dir: cfg.run_dir.clone(),
            endpoint,
            serial,
            vmm,
            behaviour: plan.guest.clone(),
            ignore_shutdown: plan.ignore_shutdown,
        }));
        Ok(Launched {
            processes,
            console_log: files.console_log,
            vmm_stderr: files.vmm_stderr,
        })
    }

    fn pause(&self, run_dir: &Path) -> Result<(), VmmError> {
        self.record(Call::Pause {
            run_dir: run_dir.to_path_buf(),
        });
        Ok(())
    }

    fn resume(&self, run_dir: &Path) -> Result<(), VmmError> {
        self.record(Call::Resume {
            run_dir: run_dir.to_path_buf(),
        });
        Ok(())
    }

    /// Writes a stand-in state file, or fails as scripted.
    fn save_state(&self, run_dir: &Path, dest: &Path) -> Result<(), VmmError> {
        self.record(Call::Save {
            run_dir: run_dir.to_path_buf(),
        });
        let fails = lock(&self.vms).get(run_dir).and_then(|r| r.save_fails);
        if let Some(message) = fails {
            return Err(VmmError::NoVmm {
                reason: format!("fake: {message}"),
            });
        }
        std::fs::write(dest.join("fake.state"), b"saved").map_err(|source| {
            LaunchError::RunFile {
                path: dest.to_path_buf(),
                source,
            }
            .into()
        })
    }

    fn power_down(&self, run_dir: &Path) -> Result<(), VmmError> {
        self.record(Call::PowerDown {
            run_dir: run_dir.to_path_buf(),
        });
        let Some((vmm, plan)) = lock(&self.vms)
            .get(run_dir)
            .map(|r| (r.vmm.clone(), r.power_down))
        else {
            return Err(VmmError::NoVmm {
                reason: format!("fake: no VM in {}", run_dir.display()),
            });
        };
        match plan {
            PowerDown::PowersOff => {
                let _ = vmm.signal(libc::SIGKILL);
                Ok(())
            }
            PowerDown::Ignored => Ok(()),
            PowerDown::Crashes => {
                crash(&vmm, run_dir);
                Err(VmmError::NoVmm {
                    reason: "fake: the VMM crashed while asked to power down".into(),
                })
            }
        }
    }
}
