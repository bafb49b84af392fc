//! The VM state machine (`vms/{create,start,stop,kill,delete,adopt,live}.rs`) in-process,
//! on a recording fake VMM (`fake_vmm.rs`) and a fake guest agent (`fake_agent.rs`): every
//! transition, and the failures and races a real VMM makes rare: a VMM that dies at each
//! step, a guest that ignores shutdown, concurrent verbs on one VM, a daemon restarted
//! mid-start. The processes are real (tiny shells), so pid watching, signals and adoption
//! run unchanged; only QEMU and the guest are fake. The whole file runs in a few seconds.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_agent;
mod fake_vmm;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use banger_api::ErrorCode;
use banger_api::image::Image;
use banger_api::layout::Layout;
use banger_api::snapshot::{Snapshot, SnapshotRef};
use banger_api::vm::{
    Vm, VmCreateParams, VmDeleteParams, VmRef, VmSnapshotParams, VmStartParams, VmState,
};
use banger_daemon::error::OpError;
use banger_daemon::progress::OpContext;
use banger_daemon::store::Store;
use banger_daemon::vms::{Host, StopGraces, Vms};
use banger_vmm::{Accel, ChannelKind, Detection, KvmStatus, Selected};
use fake_vmm::{CRASH_STDERR, Call, FakeVmm, Gate, Guest, Plan, PowerDown};

/// `stop`'s waits, short: a guest that ignores its shutdown costs two of these.
const GRACES: StopGraces = StopGraces {
    shutdown: Duration::from_millis(300),
    signal: Duration::from_millis(300),
};
/// How long a test waits for an observable state before failing.
const DEADLINE: Duration = Duration::from_secs(10);

/// The guest agent `bangerd` packs into the initramfs: never run here, so the smallest
/// static ELF header does (`$BANGER_AGENT`, set once before any test reads it).
fn fake_agent_binary() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("state-machine-agent");
        let mut elf = vec![0u8; 64];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &elf).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        // SAFETY: every test calls this first, and `Once` blocks the others until it is
        // done: no thread of this process reads the environment concurrently.
        unsafe { std::env::set_var("BANGER_AGENT", &path) };
        if std::env::var_os("STATE_MACHINE_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_test_writer()
                .init();
        }
    });
}

/// One state directory, one fake VMM, and daemons over them.
struct Env {
    _root: tempfile::TempDir,
    layout: Layout,
    fake: Arc<FakeVmm>,
    channel: ChannelKind,
}

impl Env {
    fn new(channel: ChannelKind) -> Env {
        fake_agent_binary();
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            state_dir: root.path().join("state"),
            cache_dir: root.path().join("cache"),
            runtime_dir: root.path().join("run"),
        };
        for d in [&layout.state_dir, &layout.cache_dir, &layout.runtime_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        let kernel = root.path().join("vmlinuz");
        let rootfs = root.path().join("rootfs.ext4");
        std::fs::write(&kernel, b"not a kernel: the fake VMM boots nothing").unwrap();
        std::fs::write(&rootfs, b"").unwrap();
        let store = Store::open(&layout.state_dir.join("banger.db")).unwrap();
        store
            .insert_image(&Image {
                id: "img0".into(),
                name: "base".into(),
                managed: false,
                artifact_dir: None,
                rootfs_path: rootfs.display().to_string(),
                kernel_path: kernel.display().to_string(),
                initrd_path: None,
                modules_dir: None,
                kernel_ref: None,
                source_ref: None,
                manifest_digest: None,
                platform: None,
                size_bytes: None,
                allocated_bytes: None,
                created_at: "2025-01-01T00:00:00Z".into(),
            })
            .unwrap();
        Env {
            _root: root,
            layout,
            fake: FakeVmm::new(tokio::runtime::Handle::current()),
            channel,
        }
    }

    /// A daemon over this state directory (as `bangerd` would start: the store opened
    /// anew), running VMs on the fake VMM. It runs on the caller's runtime.
    fn daemon(&self) -> Arc<Vms> {
        let store = Store::open(&self.layout.state_dir.join("banger.db")).unwrap();
        let accel = Accel::Tcg { tsc_khz: None };
        let host = Host {
            detection: Detection {
                accel,
                reason: "fake".into(),
                qemu: None,
                qemu_version: None,
                vsock_backend: None,
                channel: self.channel,
                channel_reason: "fake".into(),
                kvm: KvmStatus::NotProbed,
                firecracker: None,
                firecracker_reason: String::new(),
            },
            vmm: self.fake.clone(),
            jailer: None,
            pinned: Some(Selected {
                vmm: self.fake.clone(),
                name: "fake",
                reason: "the state machine tests' fake VMM".into(),
                accel,
                channel: self.channel,
            }),
        };
        Vms::with_host(self.layout.clone(), Arc::new(store), Arc::new(host), GRACES)
    }

    fn vms_dir(&self) -> PathBuf {
        self.layout.vms_dir()
    }

    /// Nothing of any VM runs: every process the fake ever started is gone.
    fn assert_no_process(&self) {
        let alive = self.fake.alive();
        assert!(alive.is_empty(), "processes left running: {alive:?}");
    }
}

fn create_params(name: &str) -> VmCreateParams {
    VmCreateParams {
        name: name.into(),
        image: "base".into(),
        cpus: Some(1),
        memory_mib: Some(128),
        disk_bytes: Some(64 << 20),
        work_disk_bytes: Some(64 << 20),
        net: Some(banger_api::vm::NetMode::None),
        ..Default::default()
    }
}

async fn create(vms: &Arc<Vms>, name: &str, start: bool) -> Result<Vm, OpError> {
    let params = VmCreateParams {
        no_start: !start,
        ..create_params(name)
    };
    vms.create(params, &OpContext::detached()).await
}

async fn start(vms: &Arc<Vms>, name: &str) -> Result<Vm, OpError> {
    start_within(vms, name, None).await
}

async fn start_within(vms: &Arc<Vms>, name: &str, secs: Option<u64>) -> Result<Vm, OpError> {
    let p = VmStartParams {
        vm: name.into(),
        ready_timeout_secs: secs,
    };
    vms.start(p, &OpContext::detached()).await
}

async fn stop(vms: &Arc<Vms>, name: &str) -> Result<Vm, OpError> {
    vms.stop(VmRef { vm: name.into() }).await
}

async fn kill(vms: &Arc<Vms>, name: &str) -> Result<Vm, OpError> {
    vms.kill(VmRef { vm: name.into() }).await
}

async fn delete(vms: &Arc<Vms>, name: &str, force: bool) -> Result<(), OpError> {
    let p = VmDeleteParams {
        vm: name.into(),
        force,
    };
    vms.delete(p).await.map(|_| ())
}

/// Waits (up to [`DEADLINE`]) until the VM is in `state`; returns it.
async fn wait_state(vms: &Arc<Vms>, name: &str, state: VmState) -> Vm {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let vm = vms.show(name).unwrap();
        if vm.state == state {
            return vm;
        }
        assert!(
            Instant::now() < deadline,
            "VM {name} is {:?}, not {state:?}, after {DEADLINE:?}: {:?}",
            vm.state,
            vm.last_error
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the VM's VMM pid is recorded (a boot persists it once the launch returned).
async fn wait_pid(vms: &Arc<Vms>, name: &str) -> Vm {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let vm = vms.show(name).unwrap();
        if vm.pid.is_some() {
            return vm;
        }
        assert!(Instant::now() < deadline, "VM {name} has no pid: {vm:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every process of the fake is gone.
async fn wait_no_process(env: &Env) {
    let deadline = Instant::now() + DEADLINE;
    while !env.fake.alive().is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes left: {:?}",
            env.fake.alive()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn code(r: Result<impl std::fmt::Debug, OpError>) -> ErrorCode {
    r.expect_err("the operation must fail").code()
}

/// The runtime files a VM's processes leave (sockets, pid file) are gone.
fn assert_no_runtime_files(dir: &str) {
    for f in ["vsock.sock_1025", "agent.sock", "pids.json"] {
        let p = Path::new(dir).join(f);
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

/// The VM left nothing: no record, no directory, no process.
fn assert_vm_gone(env: &Env, vms: &Arc<Vms>, vm: &Vm) {
    assert_eq!(code(vms.show(&vm.name)), ErrorCode::NotFound);
    assert!(!Path::new(&vm.dir).exists(), "{} left behind", vm.dir);
    env.assert_no_process();
}

/// Ends a daemon's runtime as a killed daemon would end: every task of it gone before
/// the test goes on. (`shutdown_background` returns at once, and a task still running on
/// its workers, such as an exit watcher, could record what the next daemon must find.)
fn end_daemon(runtime: tokio::runtime::Runtime) {
    tokio::task::block_in_place(|| runtime.shutdown_timeout(Duration::from_secs(10)));
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Transitions
// ---------------------------------------------------------------------------------------

async fn every_transition(channel: ChannelKind) {
    let env = Env::new(channel);
    let vms = env.daemon();

    // create → created: disks and row, nothing running.
    let vm = create(&vms, "a", false).await.unwrap();
    assert_eq!(vm.state, VmState::Created);
    assert!(Path::new(&vm.dir).join("root.ext4").is_file());
    assert_eq!(env.fake.launches(), 0);

    // start → starting (guest still booting) → running.
    let gate = Gate::default();
    env.fake.script(Plan {
        guest: Guest::HelloAfter(gate.clone()),
        ..Plan::default()
    });
    let booting = tokio::spawn({
        let vms = vms.clone();
        async move { start(&vms, "a").await }
    });
    gate.reached().await;
    let starting = wait_pid(&vms, "a").await;
    assert_eq!(starting.state, VmState::Starting);
    gate.open();
    let running = booting.await.unwrap().unwrap();
    assert_eq!(running.state, VmState::Running);
    assert_eq!(running.vmm, "fake");
    let caps = running
        .capabilities
        .expect("vm show reports the driver's capabilities");
    assert_eq!((caps.pause.as_str(), caps.vsock.as_str()), ("yes", "none"));
    assert_eq!(
        running.channel,
        if channel == ChannelKind::Vsock {
            "vsock"
        } else {
            "serial"
        }
    );
    let stages: Vec<_> = running.stages.iter().map(|s| s.stage.as_str()).collect();
    for s in ["vmm_spawned", "kernel_started", "agent_connected", "ready"] {
        assert!(stages.contains(&s), "stage {s} missing from {stages:?}");
    }
    assert_eq!(
        env.fake.calls(),
        vec![Call::Launch { vm: "a".into() }],
        "one launch, nothing else"
    );

    // stop (the agent's shutdown powers the guest off) → stopped, cleanly.
    let stopped = stop(&vms, "a").await.unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    assert_eq!(stopped.last_error, None, "a graceful stop leaves no note");
    assert_eq!(stopped.pid, None);
    assert_eq!(env.fake.power_downs(), 0, "the agent's shutdown sufficed");
    env.assert_no_process();
    assert_no_runtime_files(&stopped.dir);

    // stopped → running again → kill → stopped ("killed").
    assert_eq!(start(&vms, "a").await.unwrap().state, VmState::Running);
    let killed = kill(&vms, "a").await.unwrap();
    assert_eq!(killed.state, VmState::Stopped);
    assert_eq!(killed.last_error.as_deref(), Some("killed"));
    env.assert_no_process();

    // create with start → running; delete --force of a running VM → nothing left.
    let b = create(&vms, "b", true).await.unwrap();
    assert_eq!(b.state, VmState::Running);
    delete(&vms, "b", true).await.unwrap();
    assert_vm_gone(&env, &vms, &b);

    // delete of a stopped VM → nothing left.
    delete(&vms, "a", false).await.unwrap();
    assert_vm_gone(&env, &vms, &vm);
    assert_eq!(env.fake.launches(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_over_vsock() {
    every_transition(ChannelKind::Vsock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_over_serial() {
    every_transition(ChannelKind::Serial).await;
}

/// A daemon that dies (its runtime goes, with every task, socket and listener) and a new
/// one over the same state: the running VM is adopted, its agent redials, and a graceful
/// stop through the new daemon proves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_adopts_a_running_vm() {
    for channel in [ChannelKind::Vsock, ChannelKind::Serial] {
        let env = Env::new(channel);
        let first = multi_thread();
        let vms = env.daemon();
        let vm = first
            .spawn(async move { create(&vms, "a", true).await })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(vm.state, VmState::Running);
        end_daemon(first);

        let vms = env.daemon();
        let report = vms.adopt_all().await.unwrap();
        assert_eq!(report.adopted, vec!["a".to_string()]);
        assert_eq!(vms.show("a").unwrap().state, VmState::Running);
        let (_, vmm) = env.fake.processes(Path::new(&vm.dir)).unwrap();
        assert!(vmm.is_alive(), "adoption leaves the VM running");
        let stopped = stop(&vms, "a").await.unwrap();
        assert_eq!(
            stopped.last_error, None,
            "{channel:?}: the agent redialled the new daemon and shut the guest down"
        );
        env.assert_no_process();
    }
}

// ---------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------

/// The VMM cannot start: the VM is `error` with the reason, nothing runs, no runtime file
/// is left, and the next start works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_failure_leaves_nothing_half_made() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    env.fake.script(Plan {
        launch_fails: Some("no such VMM (scripted)"),
        ..Plan::default()
    });
    let e = create(&vms, "a", true).await.unwrap_err().to_string();
    assert!(e.contains("no such VMM (scripted)"), "{e}");
    let vm = vms.show("a").unwrap();
    assert_eq!(vm.state, VmState::Error);
    assert!(vm.last_error.as_deref().unwrap().contains("scripted"));
    assert_eq!(vm.pid, None);
    assert_no_runtime_files(&vm.dir);
    env.assert_no_process();
    assert_eq!(start(&vms, "a").await.unwrap().state, VmState::Running);
    delete(&vms, "a", true).await.unwrap();
    assert_vm_gone(&env, &vms, &vm);
}

/// The VMM dies before the agent dials (a kernel panic): `error`, with the stage reached
/// and the VMM's own output in the report; the helper is killed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_that_dies_during_start_is_an_error_with_a_report() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    create(&vms, "a", false).await.unwrap();
    env.fake.script(Plan {
        guest: Guest::DiesBeforeHello,
        ..Plan::default()
    });
    let e = start(&vms, "a").await.unwrap_err().to_string();
    assert!(e.contains("exited before the agent was ready"), "{e}");
    assert!(e.contains("last stage reached"), "{e}");
    assert!(e.contains(CRASH_STDERR), "the VMM's stderr is quoted: {e}");
    let vm = vms.show("a").unwrap();
    assert_eq!(vm.state, VmState::Error);
    assert_eq!(vm.pid, None);
    wait_no_process(&env).await;
    assert_no_runtime_files(&vm.dir);
}

/// The VMM dies right after the hello, while the daemon finishes readiness: the VM ends
/// `stopped` with the VMM's output, and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_that_dies_after_the_hello_ends_stopped() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    create(&vms, "a", false).await.unwrap();
    env.fake.script(Plan {
        guest: Guest::DiesAfterHello,
        ..Plan::default()
    });
    let _ = start(&vms, "a").await;
    let vm = wait_state(&vms, "a", VmState::Stopped).await;
    let note = vm.last_error.unwrap_or_default();
    assert!(note.contains(CRASH_STDERR), "{note}");
    wait_no_process(&env).await;
    assert_eq!(start(&vms, "a").await.unwrap().state, VmState::Running);
    kill(&vms, "a").await.unwrap();
}

/// A serial guest whose agent predates the session sync (booted by an older banger) is
/// recognised by its first HTTP/2 bytes and spoken to without the sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_agent_from_before_the_sync_is_reached_without_it() {
    let env = Env::new(ChannelKind::Serial);
    let vms = env.daemon();
    create(&vms, "a", false).await.unwrap();
    env.fake.script(Plan {
        guest: Guest::BeforeSerialSync,
        ..Plan::default()
    });
    assert_eq!(start(&vms, "a").await.unwrap().state, VmState::Running);
    stop(&vms, "a").await.unwrap();
    wait_no_process(&env).await;
}

/// The VMM dies while the VM runs: the exit watcher records `stopped` with the VMM's
/// output, kills the helper, and the VM can start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_that_dies_while_running_ends_stopped() {
    let env = Env::new(ChannelKind::Serial);
    let vms = env.daemon();
    let vm = create(&vms, "a", true).await.unwrap();
    env.fake.crash(Path::new(&vm.dir));
    let vm = wait_state(&vms, "a", VmState::Stopped).await;
    let note = vm.last_error.clone().unwrap_or_default();
    assert!(
        note.contains("exited on its own") && note.contains(CRASH_STDERR),
        "{note}"
    );
    wait_no_process(&env).await;
    assert_no_runtime_files(&vm.dir);
    assert_eq!(start(&vms, "a").await.unwrap().state, VmState::Running);
    delete(&vms, "a", true).await.unwrap();
    assert_vm_gone(&env, &vms, &vm);
}

/// The guest ignores both the agent's shutdown and the power button: stop waits its
/// graces, then kills; the VM is `stopped` with a note, and the power-down was asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_power_down_ends_in_a_kill_after_the_graces() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    env.fake.script(Plan {
        ignore_shutdown: true,
        power_down: PowerDown::Ignored,
        ..Plan::default()
    });
    let vm = create(&vms, "a", true).await.unwrap();
    let asked = Instant::now();
    let stopped = stop(&vms, "a").await.unwrap();
    assert!(
        asked.elapsed() >= GRACES.shutdown + GRACES.signal,
        "stop waited both graces before killing ({:?})",
        asked.elapsed()
    );
    assert_eq!(stopped.state, VmState::Stopped);
    assert!(stopped.last_error.unwrap().contains("killed"));
    assert_eq!(
        env.fake.calls().last(),
        Some(&Call::PowerDown {
            run_dir: PathBuf::from(&vm.dir)
        })
    );
    env.assert_no_process();
    assert_no_runtime_files(&vm.dir);
}

/// The guest ignores the agent's shutdown, and the VMM crashes when asked to power down
/// (the request fails): stop still ends `stopped` with everything gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_that_dies_during_stop_still_ends_stopped() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    env.fake.script(Plan {
        ignore_shutdown: true,
        power_down: PowerDown::Crashes,
        ..Plan::default()
    });
    let vm = create(&vms, "a", true).await.unwrap();
    let stopped = stop(&vms, "a").await.unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    assert_eq!(env.fake.power_downs(), 1);
    env.assert_no_process();
    assert_no_runtime_files(&vm.dir);
}

/// A guest that never reports ready fails its start at the deadline, is killed, and is
/// kept as `error` for `vm logs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_never_becomes_ready_times_out() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    create(&vms, "a", false).await.unwrap();
    env.fake.script(Plan {
        guest: Guest::Silent,
        ..Plan::default()
    });
    let e = start_within(&vms, "a", Some(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("did not become ready within 1 s"), "{e}");
    assert!(
        e.contains("kernel_started"),
        "the stage reached is named: {e}"
    );
    assert_eq!(vms.show("a").unwrap().state, VmState::Error);
    wait_no_process(&env).await;
}

/// Verbs refused for the state the VM is in, with their codes; nothing is launched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_in_the_wrong_state_are_refused() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    create(&vms, "a", false).await.unwrap();
    assert_eq!(code(stop(&vms, "a").await), ErrorCode::NotRunning);
    assert_eq!(code(kill(&vms, "a").await), ErrorCode::NotRunning);
    assert_eq!(
        code(create(&vms, "a", false).await),
        ErrorCode::AlreadyExists
    );
    start(&vms, "a").await.unwrap();
    assert_eq!(code(start(&vms, "a").await), ErrorCode::AlreadyRunning);
    assert_eq!(
        code(delete(&vms, "a", false).await),
        ErrorCode::AlreadyRunning
    );
    assert_eq!(vms.show("a").unwrap().state, VmState::Running);
    assert_eq!(env.fake.launches(), 1);
    delete(&vms, "a", true).await.unwrap();
    env.assert_no_process();
}

// ---------------------------------------------------------------------------------------
// Races
// ---------------------------------------------------------------------------------------

/// Starts `name` with its guest held at a gate; returns once the VM is `starting`.
async fn start_held(
    env: &Env,
    vms: &Arc<Vms>,
    name: &str,
) -> (Gate, tokio::task::JoinHandle<Result<Vm, OpError>>) {
    let gate = Gate::default();
    env.fake.script(Plan {
        guest: Guest::HelloAfter(gate.clone()),
        ..Plan::default()
    });
    let booting = tokio::spawn({
        let (vms, name) = (vms.clone(), name.to_string());
        async move { start(&vms, &name).await }
    });
    gate.reached().await;
    assert_eq!(wait_pid(vms, name).await.state, VmState::Starting);
    (gate, booting)
}

/// Two starts of one VM: one boots it, the other is refused; one launch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_launch_once() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    create(&vms, "a", false).await.unwrap();
    let (gate, first) = start_held(&env, &vms, "a").await;
    let second = tokio::spawn({
        let vms = vms.clone();
        async move { start(&vms, "a").await }
    });
    gate.open();
    assert_eq!(first.await.unwrap().unwrap().state, VmState::Running);
    assert_eq!(code(second.await.unwrap()), ErrorCode::AlreadyRunning);
    assert_eq!(env.fake.launches(), 1);
    kill(&vms, "a").await.unwrap();
    env.assert_no_process();
}

/// stop, kill and delete --force of a VM still starting do not wait for its boot: they
/// interrupt it; the start fails saying so, and the VM is `stopped` (or gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kill_and_delete_interrupt_a_starting_vm() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    let vm = create(&vms, "a", false).await.unwrap();

    let (_gate, booting) = start_held(&env, &vms, "a").await;
    let stopped = stop(&vms, "a").await.unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    assert_eq!(
        stopped.last_error.as_deref(),
        Some("stopped while it was starting")
    );
    let e = booting.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("did not finish starting"), "{e}");
    env.assert_no_process();

    let (_gate, booting) = start_held(&env, &vms, "a").await;
    assert_eq!(kill(&vms, "a").await.unwrap().state, VmState::Stopped);
    assert!(booting.await.unwrap().is_err());
    env.assert_no_process();

    let (_gate, booting) = start_held(&env, &vms, "a").await;
    delete(&vms, "a", true).await.unwrap();
    assert!(booting.await.unwrap().is_err());
    assert_vm_gone(&env, &vms, &vm);
}

/// delete without --force while the VM starts waits for the boot, then refuses: the VM
/// runs on, untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_without_force_during_a_start_is_refused_after_it() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    create(&vms, "a", false).await.unwrap();
    let (gate, booting) = start_held(&env, &vms, "a").await;
    let deleting = tokio::spawn({
        let vms = vms.clone();
        async move { delete(&vms, "a", false).await }
    });
    gate.open();
    assert_eq!(booting.await.unwrap().unwrap().state, VmState::Running);
    assert_eq!(code(deleting.await.unwrap()), ErrorCode::AlreadyRunning);
    assert_eq!(vms.show("a").unwrap().state, VmState::Running);
    kill(&vms, "a").await.unwrap();
}

/// delete --force while the VMM is still launching (no process yet to interrupt): it
/// waits for the launch, then kills what it started; nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_during_a_slow_launch_leaves_nothing() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    let vm = create(&vms, "a", false).await.unwrap();
    let gate = Gate::default();
    env.fake.script(Plan {
        launch_gate: Some(gate.clone()),
        ..Plan::default()
    });
    let booting = tokio::spawn({
        let vms = vms.clone();
        async move { start(&vms, "a").await }
    });
    gate.reached().await;
    let deleting = tokio::spawn({
        let vms = vms.clone();
        async move { delete(&vms, "a", true).await }
    });
    gate.open();
    let _ = booting.await.unwrap();
    deleting.await.unwrap().unwrap();
    assert_vm_gone(&env, &vms, &vm);
}

/// stop and kill of one running VM at once: they take turns; exactly one does the work,
/// the other finds the VM stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stop_and_kill_take_turns() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    // A guest that ignores its shutdown keeps the stop busy for its graces.
    env.fake.script(Plan {
        ignore_shutdown: true,
        power_down: PowerDown::Ignored,
        ..Plan::default()
    });
    create(&vms, "a", true).await.unwrap();
    let stopping = tokio::spawn({
        let vms = vms.clone();
        async move { stop(&vms, "a").await }
    });
    let killing = tokio::spawn({
        let vms = vms.clone();
        async move { kill(&vms, "a").await }
    });
    let (stopped, killed) = (stopping.await.unwrap(), killing.await.unwrap());
    let oks = [stopped.is_ok(), killed.is_ok()];
    assert_eq!(
        oks.iter().filter(|ok| **ok).count(),
        1,
        "{stopped:?} / {killed:?}"
    );
    for r in [stopped, killed] {
        if let Err(e) = r {
            assert_eq!(e.code(), ErrorCode::NotRunning, "{e}");
        }
    }
    assert_eq!(vms.show("a").unwrap().state, VmState::Stopped);
    env.assert_no_process();
}

/// Concurrent creates of one name: one VM exists afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_name_make_one_vm() {
    let env = Env::new(ChannelKind::Vsock);
    let vms = env.daemon();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let vms = vms.clone();
            tokio::spawn(async move { create(&vms, "a", false).await })
        })
        .collect();
    let mut made = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => made += 1,
            Err(e) => assert_eq!(e.code(), ErrorCode::AlreadyExists, "{e}"),
        }
    }
    assert_eq!(made, 1);
    assert_eq!(vms.list().unwrap().vms.len(), 1);
    let dirs = std::fs::read_dir(env.vms_dir()).unwrap().count();
    assert_eq!(dirs, 1, "the losers left no directory");
}

/// The daemon dies while a VM starts; a new daemon adopts it as `starting` and finishes
/// the readiness wait when the guest comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restarted_mid_start_finishes_the_boot() {
    let env = Env::new(ChannelKind::Vsock);
    let first = multi_thread();
    let vms = env.daemon();
    let vm = create(&vms, "a", false).await.unwrap();
    let gate = Gate::default();
    env.fake.script(Plan {
        guest: Guest::HelloAfter(gate.clone()),
        ..Plan::default()
    });
    let _booting = first.spawn({
        let vms = vms.clone();
        async move { start(&vms, "a").await }
    });
    gate.reached().await;
    assert_eq!(wait_pid(&vms, "a").await.state, VmState::Starting);
    end_daemon(first);
    drop(vms);

    let vms = env.daemon();
    let report = vms.adopt_all().await.unwrap();
    assert_eq!(report.adopted, vec!["a".to_string()]);
    assert_eq!(vms.show("a").unwrap().state, VmState::Starting);
    gate.open();
    let running = wait_state(&vms, "a", VmState::Running).await;
    assert!(
        running.stages.iter().any(|s| s.stage == "ready"),
        "{:?}",
        running.stages
    );
    assert_eq!(env.fake.launches(), 1, "adopted, not launched again");
    delete(&vms, "a", true).await.unwrap();
    assert_vm_gone(&env, &vms, &vm);
}

/// The VMM died while no daemon ran: the next daemon marks the VM stopped, kills what is
/// left of it (the helper), removes its runtime files, and sweeps directories no record
/// owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_died_while_no_daemon_ran_is_marked_stopped() {
    let env = Env::new(ChannelKind::Vsock);
    let first = multi_thread();
    let vms = env.daemon();
    let vm = first
        .spawn(async move { create(&vms, "a", true).await })
        .await
        .unwrap()
        .unwrap();
    end_daemon(first);
    env.fake.crash(Path::new(&vm.dir));
    let stray = env.vms_dir().join("no-record-owns-this");
    std::fs::create_dir_all(&stray).unwrap();

    let vms = env.daemon();
    let report = vms.adopt_all().await.unwrap();
    assert_eq!(report.stopped, vec!["a".to_string()]);
    assert!(report.adopted.is_empty());
    assert_eq!(report.swept_dirs.len(), 1, "{:?}", report.swept_dirs);
    assert!(!stray.exists());
    let stopped = vms.show("a").unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    assert!(
        stopped
            .last_error
            .unwrap()
            .contains("while bangerd was not running")
    );
    wait_no_process(&env).await;
    assert_no_runtime_files(&vm.dir);
    assert_eq!(start(&vms, "a").await.unwrap().state, VmState::Running);
    delete(&vms, "a", true).await.unwrap();
    assert_vm_gone(&env, &vms, &vm);
}

/// The daemon dies while the VMM is still launching, before it could record the pids:
/// the next daemon finds the processes through the driver's pid file and kills them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_launch_leaves_no_process() {
    let env = Env::new(ChannelKind::Vsock);
    let first = multi_thread();
    let vms = env.daemon();
    let vm = create(&vms, "a", false).await.unwrap();
    let gate = Gate::default();
    env.fake.script(Plan {
        launch_gate: Some(gate.clone()),
        guest: Guest::Silent,
        ..Plan::default()
    });
    let booting = first.spawn({
        let vms = vms.clone();
        async move { start(&vms, "a").await }
    });
    gate.reached().await;
    // The start task is gone before the launch returns (as in a killed daemon), but the
    // launch thread, blocked at the gate, outlives the runtime: not `end_daemon`.
    booting.abort();
    assert!(booting.await.is_err_and(|e| e.is_cancelled()));
    first.shutdown_background();
    drop(vms);
    // The launch thread outlives its daemon and starts the VM.
    gate.open();
    let deadline = Instant::now() + DEADLINE;
    while env.fake.processes(Path::new(&vm.dir)).is_none() {
        assert!(Instant::now() < deadline, "the launch never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!env.fake.alive().is_empty());

    let vms = env.daemon();
    let report = vms.adopt_all().await.unwrap();
    assert_eq!(report.stopped, vec!["a".to_string()]);
    wait_no_process(&env).await;
    assert_no_runtime_files(&vm.dir);
    assert_eq!(vms.show("a").unwrap().state, VmState::Stopped);
}

fn snapshot_entries(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.layout.snapshots_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn snapshot(vms: &Arc<Vms>, vm: &str, name: &str) -> Result<Snapshot, OpError> {
    vms.snapshot(VmSnapshotParams {
        vm: vm.into(),
        name: Some(name.into()),
        stop: false,
    })
    .await
}

/// Pause and resume, snapshots (a failed save leaves the VM running and nothing of the
/// snapshot), forks (restored, given their identity, the snapshot pinned while they live).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_snapshot_and_fork_transitions() {
    let env = Env::new(ChannelKind::Serial);
    let vms = env.daemon();
    let a = create(&vms, "a", true).await.unwrap();
    let dir = PathBuf::from(&a.dir);

    // running → paused → running (exec's refusal is checked on a real guest,
    // crates/banger/tests/vm_snapshot.rs).
    let paused = vms.pause(VmRef { vm: "a".into() }).await.unwrap();
    assert_eq!(paused.state, VmState::Paused);
    assert_eq!(
        vms.pause(VmRef { vm: "a".into() }).await.unwrap().state,
        VmState::Paused
    );
    let resumed = vms.resume(VmRef { vm: "a".into() }).await.unwrap();
    assert_eq!(resumed.state, VmState::Running);
    assert_eq!(
        env.fake.calls()[1..],
        [
            Call::Pause {
                run_dir: dir.clone()
            },
            Call::Resume {
                run_dir: dir.clone()
            }
        ]
    );
    // A paused VM is resumed before its stop (a paused guest cannot shut down).
    vms.pause(VmRef { vm: "a".into() }).await.unwrap();
    assert_eq!(stop(&vms, "a").await.unwrap().state, VmState::Stopped);
    assert!(env.fake.calls().ends_with(&[
        Call::Pause {
            run_dir: dir.clone()
        },
        Call::Resume {
            run_dir: dir.clone()
        }
    ]));
    assert_eq!(
        code(vms.pause(VmRef { vm: "a".into() }).await),
        ErrorCode::NotRunning
    );

    // A save that fails: the VM runs on, no snapshot is listed, no directory is left.
    env.fake.script(Plan {
        save_fails: Some("disk full (scripted)"),
        ..Plan::default()
    });
    start(&vms, "a").await.unwrap();
    let e = snapshot(&vms, "a", "bad").await.unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
    assert!(env.fake.calls().ends_with(&[
        Call::Pause {
            run_dir: dir.clone()
        },
        Call::Save {
            run_dir: dir.clone()
        },
        Call::Resume {
            run_dir: dir.clone()
        }
    ]));
    assert_eq!(vms.show("a").unwrap().state, VmState::Running);
    assert!(vms.snapshot_list().unwrap().snapshots.is_empty());
    assert_eq!(snapshot_entries(&env), Vec::<String>::new());

    // A snapshot: listed with its files; the VM was paused, saved, resumed.
    stop(&vms, "a").await.unwrap();
    start(&vms, "a").await.unwrap();
    let s = snapshot(&vms, "a", "s").await.unwrap();
    assert_eq!((s.name.as_str(), s.source_vm.as_str()), ("s", "a"));
    assert_eq!(vms.show("a").unwrap().state, VmState::Running);
    let snap_dir = env.layout.snapshots_dir().join(&s.id);
    for f in [
        "fake.state",
        "root.ext4",
        "work.ext4",
        "launch.json",
        "agent.key",
    ] {
        assert!(snap_dir.join(f).is_file(), "{f} missing from the snapshot");
    }
    assert_eq!(
        code(snapshot(&vms, "a", "s").await),
        ErrorCode::AlreadyExists
    );

    // A fork: restored (not booted), given its identity and a secret of its own.
    let params = VmCreateParams {
        name: "f".into(),
        from: Some("s".into()),
        ..Default::default()
    };
    let f = vms.create(params, &OpContext::detached()).await.unwrap();
    assert_eq!(f.state, VmState::Running);
    assert_eq!(f.forked_from.as_deref(), Some("s"));
    assert!(env.fake.restored(Path::new(&f.dir)));
    assert!(
        f.stages.iter().any(|st| st.stage == "identity"),
        "{:?}",
        f.stages
    );
    // This agent answered `identity` with `{}` (no host keys: one from before `authorize`),
    // so the daemon authorized its SSH key with the separate call.
    let authorized = std::fs::read_to_string(Path::new(&f.dir).join(fake_agent::AUTHORIZED_NOTE))
        .unwrap_or_default();
    assert_eq!(authorized.lines().count(), 1, "{authorized:?}");
    let key = |d: &Path| std::fs::read(d.join("agent.key")).unwrap();
    assert_ne!(
        key(Path::new(&f.dir)),
        key(&snap_dir),
        "the fork's own secret"
    );
    // Its second start boots it like any VM.
    stop(&vms, "f").await.unwrap();
    start(&vms, "f").await.unwrap();
    assert!(!env.fake.restored(Path::new(&f.dir)));
    // Mismatched resources are refused before anything is made.
    let bigger = VmCreateParams {
        name: "g".into(),
        from: Some("s".into()),
        cpus: Some(4),
        ..Default::default()
    };
    assert_eq!(
        code(vms.create(bigger, &OpContext::detached()).await),
        ErrorCode::BadRequest
    );
    assert_eq!(code(vms.show("g")), ErrorCode::NotFound);

    // The snapshot outlives its source. A fork not started yet needs it; a started fork
    // with disks of its own (this VMM's forks get raw copies) does not.
    delete(&vms, "a", true).await.unwrap();
    let pending = VmCreateParams {
        name: "p".into(),
        from: Some("s".into()),
        no_start: true,
        ..Default::default()
    };
    vms.create(pending, &OpContext::detached()).await.unwrap();
    let r = vms
        .snapshot_delete(SnapshotRef {
            snapshot: "s".into(),
        })
        .await;
    assert_eq!(code(r), ErrorCode::InUse);
    delete(&vms, "p", true).await.unwrap();
    vms.snapshot_delete(SnapshotRef {
        snapshot: "s".into(),
    })
    .await
    .unwrap();
    assert_eq!(snapshot_entries(&env), Vec::<String>::new());
    assert_eq!(vms.show("f").unwrap().state, VmState::Running);
    stop(&vms, "f").await.unwrap();
    start(&vms, "f").await.unwrap();
    delete(&vms, "f", true).await.unwrap();
    wait_no_process(&env).await;
}

/// Warm starts: the first create boots and has the image's ready-snapshot made in the
/// background (a template VM, booted, saved, deleted); the next create of the same settings
/// is restored from it; `warm: false` and other settings boot; the image's deletion takes
/// its ready-snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_starts_use_the_ready_snapshot_a_cold_start_left() {
    let env = Env::new(ChannelKind::Serial);
    let vms = env.daemon();
    let warm = |name: &str| VmCreateParams {
        warm: Some(true),
        ..create_params(name)
    };
    let a = vms.create(warm("a"), &OpContext::detached()).await.unwrap();
    assert_eq!(a.start.as_deref(), Some("cold"));
    assert!(!env.fake.restored(Path::new(&a.dir)));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ready_snapshots = || {
        vms.snapshot_list()
            .unwrap()
            .snapshots
            .into_iter()
            .filter(|s| s.warm)
            .collect::<Vec<_>>()
    };
    while ready_snapshots().is_empty() || vms.list().unwrap().vms.len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "no ready-snapshot made"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snap = ready_snapshots().remove(0);
    assert!(snap.source_vm.starts_with("banger-warm-"), "{snap:?}");
    assert!(snap.name.contains("@warm-"), "{snap:?}");

    let b = vms.create(warm("b"), &OpContext::detached()).await.unwrap();
    assert_eq!(b.start.as_deref(), Some("warm"));
    assert!(env.fake.restored(Path::new(&b.dir)));
    assert!(
        b.stages.iter().any(|s| s.stage == "identity"),
        "{:?}",
        b.stages
    );
    // Not asked, other settings: cold.
    let c = vms
        .create(
            VmCreateParams {
                warm: Some(false),
                ..create_params("c")
            },
            &OpContext::detached(),
        )
        .await
        .unwrap();
    assert_eq!(c.start.as_deref(), Some("cold"));

    // The image goes with its ready-snapshots (once its VMs are gone).
    for vm in ["a", "b", "c"] {
        delete(&vms, vm, true).await.unwrap();
    }
    wait_no_process(&env).await;
    vms.drop_warm_of_image(&a.image).unwrap();
    assert!(ready_snapshots().is_empty());
    assert_eq!(snapshot_entries(&env), Vec::<String>::new());
}

/// A daemon killed mid-snapshot left a directory without a row and the VM paused: the
/// next daemon sweeps the one and resumes the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_sweeps_a_half_snapshot_and_resumes_its_vm() {
    let env = Env::new(ChannelKind::Serial);
    let first = multi_thread();
    let vms = env.daemon();
    let a = first
        .spawn(async move { create(&vms, "a", true).await })
        .await
        .unwrap()
        .unwrap();
    end_daemon(first);
    let half = env.layout.snapshots_dir().join("0123456789abcdef");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("root.ext4"), b"partial").unwrap();
    let calls_before = env.fake.calls().len();
    let next = env.daemon();
    next.adopt_all().await.unwrap();
    assert_eq!(snapshot_entries(&env), Vec::<String>::new());
    assert_eq!(
        env.fake.calls()[calls_before..],
        [Call::Resume {
            run_dir: PathBuf::from(&a.dir)
        }]
    );
    assert_eq!(next.show("a").unwrap().state, VmState::Running);
    delete(&next, "a", true).await.unwrap();
    wait_no_process(&env).await;
}
