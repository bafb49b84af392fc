//! The Firecracker driver against the real Firecracker v1.16.1 (`../shared/tools`), with
//! Debian's cloud kernel extracted to a `vmlinux`. On these hosts KVM has no VMX: the
//! guest gets through early boot and then Firecracker stops with
//! `KVM_EXIT_INTERNAL_ERROR`, which is exactly what lets us test that the driver notices.
//!
//! A missing Firecracker fails these tests when `CI=true` and skips them (with a message
//! on stderr) otherwise. Every wait is on observable state with a deadline; every process
//! a test starts it stops through its record, also when the test fails.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use banger_testkit::qemu::Kernel;
use banger_vmm::{
    Accel, ApiError, ChannelEndpoint, ChannelKind, DiskConfig, Firecracker, JailError,
    JailerConfig, LaunchError, Launched, NetConfig, PortForward, ProcessRecord, Proto, ROLE_NET,
    ROLE_VMM, VmConfig, Vmm, VmmError,
};
use support::{GUEST_DEADLINE, Reap};

/// `../shared/tools` beside the repository (where CI has it too).
fn tools_dir() -> PathBuf {
    banger_testkit::tools::shared_tools_dir()
}

/// The binary, or `None` (skipped with a message) outside CI.
fn firecracker() -> Option<Arc<Firecracker>> {
    let path = tools_dir().join("firecracker");
    if path.is_file() {
        return Some(Arc::new(Firecracker::new(path)));
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but the Firecracker binary {} is missing: these tests need it",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: no Firecracker at {} (../shared/tools); these tests run where it is present",
        path.display()
    );
    None
}

/// The uid and gid the jailed Firecracker runs as (`nobody`/`nogroup`).
const JAILED: u32 = 65534;

/// Firecracker behind the real jailer, with jails under `base`; `None` (skipped with a
/// message) outside CI when the binaries are missing, or when not root (the jailer needs
/// root; these machines and CI run the tests as root).
fn jailed(base: &Path) -> Option<Arc<Firecracker>> {
    let fc = firecracker()?;
    let jailer = tools_dir().join("jailer");
    if !jailer.is_file() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true but the jailer binary {} is missing",
                jailer.display()
            );
        }
        eprintln!("SKIPPED: no jailer at {}", jailer.display());
        return None;
    }
    if !banger_testkit::tools::is_root() {
        eprintln!("SKIPPED: the jailer needs root");
        return None;
    }
    let fc = Firecracker::new(fc.program().to_path_buf()).with_jailer(JailerConfig {
        path: jailer,
        uid: JAILED,
        gid: JAILED,
        chroot_base: base.to_path_buf(),
    });
    assert!(fc.jailed());
    Some(Arc::new(fc))
}

/// `Uid:` and `Gid:` of `/proc/<pid>/status`.
fn ids_of(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_default()
            .to_string()
    };
    (line("Uid:"), line("Gid:"))
}

/// Mount points under `dir` in this mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .filter(|m| m.starts_with(&d))
        .collect()
}

/// The cgroup v2 directory the jailer would make for `id` (it makes none without
/// `--cgroup`).
fn cgroup_of(id: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| Path::new(f[1]).join("firecracker").join(id))
    })
}

/// The output of `cmd` run in the network namespace of `pid` (needs root).
fn in_netns_of(pid: u32, cmd: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "--"])
        .args(cmd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The loopback relay for guest port 80 is in `pid`'s namespace (see `netns`).
fn assert_relay(pid: u32) {
    if !banger_testkit::tools::is_root() {
        return;
    }
    let addr = in_netns_of(pid, &["ip", "-o", "-4", "addr", "show", "dev", "br0"]);
    assert!(addr.contains("inet 10.0.2.1/24"), "{addr}");
    let nat = in_netns_of(pid, &["iptables", "-t", "nat", "-S", "OUTPUT"]);
    assert!(nat.contains("--to-destination 10.0.2.15:80"), "{nat}");
}

/// Debian's cloud kernel as an ELF vmlinux, extracted once into the test cache.
fn vmlinux() -> PathBuf {
    static V: OnceLock<PathBuf> = OnceLock::new();
    V.get_or_init(|| {
        let k = Kernel::get();
        let out = banger_testkit::tools::cache_dir().join(format!("vmlinux-{}", k.release));
        if !out.is_file() {
            let bz = std::fs::read(&k.vmlinuz).expect("read vmlinuz");
            let elf = banger_kernel::image::extract_vmlinux(&bz).expect("extract vmlinux");
            let tmp = out.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, elf).expect("write vmlinux");
            std::fs::rename(&tmp, &out).expect("rename vmlinux");
        }
        out
    })
    .clone()
}

fn config(run: &Path, cmdline: &str) -> VmConfig {
    let disk = |name: &str| {
        let p = run.join(name);
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        DiskConfig {
            path: p,
            read_only: name == "base.img",
            format: Default::default(),
        }
    };
    VmConfig {
        name: "fc test".into(),
        run_dir: run.to_path_buf(),
        cpus: 1,
        memory_mib: 128,
        kernel: vmlinux(),
        initrd: None,
        cmdline: cmdline.into(),
        disks: vec![disk("base.img"), disk("upper.img"), disk("work.img")],
        channel: ChannelKind::Vsock,
        net: NetConfig::None,
        accel: Accel::Kvm,
        restore: None,
        shared_memory: false,
    }
}

async fn launch(vmm: &Arc<Firecracker>, cfg: &VmConfig) -> Result<Launched, VmmError> {
    let (vmm, cfg) = (Arc::clone(vmm), cfg.clone());
    tokio::task::spawn_blocking(move || vmm.launch(&cfg))
        .await
        .expect("launch task")
}

fn vmm_of(l: &Launched) -> &ProcessRecord {
    let last = l.processes.last().expect("a process");
    assert_eq!(last.role, ROLE_VMM);
    last
}

async fn gone(p: &ProcessRecord, run: &Path) {
    tokio::time::timeout(GUEST_DEADLINE, p.exited())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} process {} still runs; console:\n{}",
                p.role,
                p.pid,
                support::console(run)
            )
        });
    assert!(!p.is_alive());
}

fn sockets(run: &Path) -> [PathBuf; 2] {
    [run.join("fc.sock"), run.join("vsock.sock")]
}

/// The configuration is accepted, `InstanceStart` succeeds, the kernel's first lines
/// reach the console log, and when the guest dies (no VMX here) Firecracker exits, the
/// record says so and the sockets are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_starts_writes_its_console_and_its_end_is_noticed() {
    let Some(vmm) = firecracker() else { return };
    let run = support::run_dir();
    let cfg = config(run.path(), "earlyprintk=ttyS0");
    let ChannelEndpoint::VsockListen(listen) = vmm.channel_endpoint(&cfg) else {
        panic!("vsock expected");
    };
    assert_eq!(listen, run.path().join("vsock.sock_1025"));
    let _agent = std::os::unix::net::UnixListener::bind(&listen).unwrap();

    let launched = launch(&vmm, &cfg).await.expect("launch");
    let _reap = Reap(launched.processes.clone());
    assert_eq!(launched.processes.len(), 1);
    let fc = vmm_of(&launched);
    // SAFETY: getsid only reads the process table.
    let sid = unsafe { libc::getsid(fc.pid as libc::pid_t) };
    assert_eq!(sid, fc.pid as i32);
    let pids: Vec<ProcessRecord> =
        serde_json::from_slice(&std::fs::read(run.path().join("pids.json")).unwrap()).unwrap();
    assert_eq!(pids, launched.processes);
    assert_eq!(launched.console_log, run.path().join("console.log"));
    assert_eq!(launched.vmm_stderr, run.path().join("firecracker.log"));
    for s in sockets(run.path()) {
        assert!(s.exists(), "{} while Firecracker runs", s.display());
    }

    // The memory map follows the command line: once it shows, that line is complete.
    support::until(run.path(), "the kernel's first console lines", || {
        support::console(run.path()).contains("BIOS-e820")
    })
    .await;
    let console = support::console(run.path());
    assert!(console.contains("Linux version"), "{console}");
    assert!(
        console.contains("earlyprintk=ttyS0 console=ttyS0 reboot=k panic=-1 pci=off"),
        "{console}"
    );
    // Three drives on virtio-mmio, as Firecracker appends them to the command line.
    assert_eq!(
        console.matches("virtio_mmio.device=").count(),
        4,
        "{console}"
    );
    let log = std::fs::read_to_string(&launched.vmm_stderr).unwrap();
    assert!(
        !log.contains("linux version"),
        "the console is not in the log"
    );

    gone(fc, run.path()).await;
    let log = std::fs::read_to_string(&launched.vmm_stderr).unwrap();
    eprintln!(
        "firecracker's log ends with:\n{}",
        banger_testkit::tools::tail(&log, 5)
    );
    // The reaper removes the sockets Firecracker leaves (not the caller's listener).
    banger_testkit::wait::until("the sockets to be removed", || {
        sockets(run.path()).iter().all(|s| !s.exists())
    });
    assert!(listen.exists());
    assert!(support::processes_mentioning(run.path()).is_empty());
}

/// Killing the record leaves no process and no socket; a second launch into the same
/// run directory is refused while the first runs; power-down is an accepted request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_record_leaves_nothing_behind() {
    let Some(vmm) = firecracker() else { return };
    let run = support::run_dir();
    let cfg = config(run.path(), "");
    let launched = launch(&vmm, &cfg).await.expect("launch");
    let _reap = Reap(launched.processes.clone());
    let fc = vmm_of(&launched).clone();
    assert!(fc.is_alive());

    let err = launch(&vmm, &cfg).await.unwrap_err();
    assert!(
        matches!(err, VmmError::Launch(LaunchError::AlreadyRunning { pid, .. }) if pid == fc.pid),
        "{err}"
    );
    vmm.power_down(run.path()).expect("SendCtrlAltDel accepted");

    fc.signal(libc::SIGKILL).unwrap();
    gone(&fc, run.path()).await;
    banger_testkit::wait::until("the sockets to be removed", || {
        sockets(run.path()).iter().all(|s| !s.exists())
    });
    assert!(support::processes_mentioning(run.path()).is_empty());
    // Without a reaper (a daemon that re-adopted the VM), cleanup() does it; it is
    // idempotent and keeps the caller's listen socket.
    for s in sockets(run.path()) {
        std::fs::write(&s, b"").unwrap();
    }
    std::fs::write(run.path().join("vsock.sock_1025"), b"").unwrap();
    vmm.cleanup(run.path()).unwrap();
    vmm.cleanup(run.path()).unwrap();
    assert!(sockets(run.path()).iter().all(|s| !s.exists()));
    assert!(run.path().join("vsock.sock_1025").exists());
    // Power-down of a VM that is gone says so.
    let e = vmm.power_down(run.path()).unwrap_err();
    assert!(matches!(e, VmmError::Api(ApiError::Connect { .. })), "{e}");
}

/// A configuration Firecracker itself refuses comes back with its `fault_message`, and
/// nothing is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_carries_firecrackers_fault_message() {
    let Some(vmm) = firecracker() else { return };
    let run = support::run_dir();
    let bogus = run.path().join("bogus-vmlinux");
    let mut elf = b"\x7fELF".to_vec();
    elf.resize(4096, 0);
    std::fs::write(&bogus, elf).unwrap();
    let cfg = VmConfig {
        kernel: bogus,
        ..config(run.path(), "")
    };
    let err = launch(&vmm, &cfg).await.unwrap_err();
    let VmmError::Api(ApiError::Rejected {
        path,
        fault_message,
        ..
    }) = &err
    else {
        panic!("a refusal expected, got {err}");
    };
    eprintln!("{err}");
    assert!(path == "/boot-source" || path == "/actions", "{err}");
    assert!(!fault_message.is_empty());
    assert!(support::processes_mentioning(run.path()).is_empty());
    let pids = run.path().join("pids.json");
    assert!(!pids.exists(), "a failed launch removes its pids.json");
}

/// With user networking, Firecracker runs in a user + network namespace holding the TAP,
/// pasta connects it and binds the published port; killing Firecracker tears it all down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_networking_is_plumbed_and_torn_down_with_the_vm() {
    let Some(vmm) = firecracker() else { return };
    let run = support::run_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = VmConfig {
        net: NetConfig::User {
            forwards: vec![PortForward {
                proto: Proto::Tcp,
                host_ip: "127.0.0.1".parse().unwrap(),
                host_port: port,
                guest_port: 80,
            }],
            policy: Default::default(),
        },
        ..config(run.path(), "")
    };
    let launched = match launch(&vmm, &cfg).await {
        Ok(l) => l,
        Err(VmmError::Netns(e)) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: rootless networking is not available here: {e}");
            return;
        }
        Err(e) => panic!("launch: {e}"),
    };
    let _reap = Reap(launched.processes.clone());
    let roles: Vec<&str> = launched.processes.iter().map(|p| p.role.as_str()).collect();
    assert_eq!(roles, [ROLE_NET, ROLE_VMM]);
    let fc = vmm_of(&launched).clone();
    let pasta = launched.processes[0].clone();
    let dev = std::fs::read_to_string(format!("/proc/{}/net/dev", fc.pid)).unwrap();
    for ifname in ["tap0", "br0", "pasta0"] {
        assert!(
            dev.contains(&format!("{ifname}:")),
            "{ifname} missing:\n{dev}"
        );
    }
    let own_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        std::fs::read_link(format!("/proc/{}/ns/net", fc.pid)).unwrap(),
        own_ns
    );
    // pasta listens on the published port (binding it again fails), and the namespace
    // relays what pasta splices into its loopback to the guest.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
    assert_relay(fc.pid);
    let log = std::fs::read_to_string(run.path().join("firecracker.log")).unwrap();
    assert!(log.contains("tap0"), "the NIC was configured:\n{log}");

    fc.signal(libc::SIGKILL).unwrap();
    gone(&fc, run.path()).await;
    gone(&pasta, run.path()).await;
    banger_testkit::wait::until("the published port to be free again", || {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    });
    assert!(support::processes_mentioning(run.path()).is_empty());
}

/// Under the real jailer: the configuration is accepted and `InstanceStart` succeeds, the
/// process is Firecracker itself (the jailer exec'd in place) running as the jailed uid
/// and gid, the console reaches `<run>/console.log` through the jail's hard link, the
/// writable drives are the real files (given to the jailed user), and after a SIGKILL
/// the jail, its sockets, the processes and any cgroup are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jailed_firecracker_runs_as_its_user_and_leaves_nothing() {
    let base = support::run_dir();
    let Some(vmm) = jailed(base.path()) else {
        return;
    };
    let run = support::run_dir();
    let cfg = config(run.path(), "earlyprintk=ttyS0");
    let ChannelEndpoint::VsockListen(listen) = vmm.channel_endpoint(&cfg) else {
        panic!("vsock expected");
    };
    let _agent = std::os::unix::net::UnixListener::bind(&listen).unwrap();

    let launched = launch(&vmm, &cfg).await.expect("jailed launch");
    let _reap = Reap(launched.processes.clone());
    let fc = vmm_of(&launched).clone();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", fc.pid))
            .unwrap()
            .trim(),
        "firecracker",
        "the recorded pid is Firecracker's"
    );
    let (uid, gid) = ids_of(fc.pid);
    assert!(
        uid.starts_with(&format!("Uid:\t{JAILED}\t{JAILED}\t")),
        "{uid}"
    );
    assert!(
        gid.starts_with(&format!("Gid:\t{JAILED}\t{JAILED}\t")),
        "{gid}"
    );

    let id = "fc-test";
    let jail = base.path().join("firecracker").join(id);
    assert_eq!(std::fs::read_link(run.path().join("jail")).unwrap(), jail);
    let root = jail.join("root");
    for f in [
        "firecracker",
        "vmlinux",
        "vda",
        "vdb",
        "vdc",
        "fc.sock",
        "vsock.sock",
    ] {
        assert!(root.join(f).exists(), "{f} in the jail");
    }
    // The drives are the real files, the writable ones given to the jailed user.
    use std::os::unix::fs::MetadataExt;
    for (disk, drive) in [
        ("base.img", "vda"),
        ("upper.img", "vdb"),
        ("work.img", "vdc"),
    ] {
        let (a, b) = (
            std::fs::metadata(run.path().join(disk)).unwrap(),
            std::fs::metadata(root.join(drive)).unwrap(),
        );
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "{drive} is {disk}");
    }
    assert_eq!(
        std::fs::metadata(run.path().join("upper.img"))
            .unwrap()
            .uid(),
        JAILED
    );
    assert_eq!(
        std::fs::metadata(run.path().join("base.img"))
            .unwrap()
            .uid(),
        0
    );
    // The run directory's socket names lead into the jail (power-down works through it).
    for s in sockets(run.path()) {
        assert!(s.exists(), "{}", s.display());
    }
    vmm.power_down(run.path()).expect("SendCtrlAltDel accepted");
    // The caller's listener is the jail's `vsock.sock_1025`; a new one (a restarted
    // daemon) is relinked on request.
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let in_jail = root.join("vsock.sock_1025");
    assert_eq!(inode(&listen), inode(&in_jail));
    drop(_agent);
    std::fs::remove_file(&listen).unwrap();
    let _agent = std::os::unix::net::UnixListener::bind(&listen).unwrap();
    assert_ne!(inode(&listen), inode(&in_jail));
    vmm.listener_rebound(run.path()).unwrap();
    assert_eq!(inode(&listen), inode(&in_jail));
    assert_eq!(std::fs::metadata(&listen).unwrap().uid(), JAILED);

    support::until(run.path(), "the kernel's first console lines", || {
        support::console(run.path()).contains("BIOS-e820")
    })
    .await;
    assert!(support::console(run.path()).contains("Linux version"));

    fc.signal(libc::SIGKILL).unwrap();
    gone(&fc, run.path()).await;
    let gone_for_good = |p: &Path| std::fs::symlink_metadata(p).is_err();
    banger_testkit::wait::until("the jail, its record and the sockets to be removed", || {
        !jail.exists()
            && gone_for_good(&run.path().join("jail"))
            && sockets(run.path()).iter().all(|s| gone_for_good(s))
    });
    assert!(listen.exists(), "the caller's listener stays");
    assert!(
        mounts_under(base.path()).is_empty(),
        "{:?}",
        mounts_under(base.path())
    );
    assert!(support::processes_mentioning(run.path()).is_empty());
    assert!(support::processes_mentioning(base.path()).is_empty());
    if let Some(cg) = cgroup_of(id) {
        assert!(!cg.exists(), "{} left", cg.display());
    }
    // A daemon that re-adopted the VM has nothing left to do; cleanup() is idempotent.
    vmm.cleanup(run.path()).unwrap();
}

/// Jailed with user networking: Firecracker joins a named network namespace holding the
/// TAP (owned by the jailed user), pasta connects it and holds the published port, and
/// killing Firecracker removes the namespace, pasta, the port and the jail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jailed_firecracker_gets_user_networking_and_it_goes_away() {
    let base = support::run_dir();
    let Some(vmm) = jailed(base.path()) else {
        return;
    };
    let run = support::run_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = VmConfig {
        name: "fc jailed net".into(),
        net: NetConfig::User {
            forwards: vec![PortForward {
                proto: Proto::Tcp,
                host_ip: "127.0.0.1".parse().unwrap(),
                host_port: port,
                guest_port: 80,
            }],
            policy: Default::default(),
        },
        ..config(run.path(), "")
    };
    let launched = launch(&vmm, &cfg)
        .await
        .expect("jailed launch with networking");
    let _reap = Reap(launched.processes.clone());
    let roles: Vec<&str> = launched.processes.iter().map(|p| p.role.as_str()).collect();
    assert_eq!(roles, [ROLE_NET, ROLE_VMM]);
    let fc = vmm_of(&launched).clone();
    let pasta = launched.processes[0].clone();
    let (uid, _) = ids_of(fc.pid);
    assert!(uid.starts_with(&format!("Uid:\t{JAILED}\t")), "{uid}");
    let netns = Path::new("/run/netns/banger-fc-jailed-net");
    assert!(netns.exists());
    // Firecracker is in the named namespace (its file is a bind mount of the nsfs inode).
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(netns).unwrap().ino();
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/ns/net", fc.pid)).unwrap(),
        PathBuf::from(format!("net:[{ino}]"))
    );
    let dev = std::fs::read_to_string(format!("/proc/{}/net/dev", fc.pid)).unwrap();
    for ifname in ["tap0", "br0", "pasta0"] {
        assert!(
            dev.contains(&format!("{ifname}:")),
            "{ifname} missing:\n{dev}"
        );
    }
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
    assert_relay(fc.pid);
    let log = std::fs::read_to_string(run.path().join("firecracker.log")).unwrap();
    assert!(log.contains("tap0"), "the NIC was configured:\n{log}");

    fc.signal(libc::SIGKILL).unwrap();
    gone(&fc, run.path()).await;
    gone(&pasta, run.path()).await;
    banger_testkit::wait::until("the namespace, the port and the jail to go", || {
        !netns.exists()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && !base.path().join("firecracker/fc-jailed-net").exists()
    });
    assert!(support::processes_mentioning(run.path()).is_empty());
    assert!(mounts_under(Path::new("/run/netns/banger-fc-jailed-net")).is_empty());
}

/// A read-only drive the jailed user cannot read is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drive_the_jailed_user_cannot_read_is_refused_first() {
    let base = support::run_dir();
    let Some(vmm) = jailed(base.path()) else {
        return;
    };
    let run = support::run_dir();
    let cfg = config(run.path(), "");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        run.path().join("base.img"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let err = launch(&vmm, &cfg).await.unwrap_err();
    assert!(
        matches!(&err, VmmError::Jail(JailError::Unreadable { uid, .. }) if *uid == JAILED),
        "{err}"
    );
    assert!(!base.path().join("firecracker/fc-test").exists());
    assert!(!run.path().join("pids.json").exists());
}

/// The (device, inode) of every file `pid` has open.
fn open_files(pid: u32) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::metadata(e.unwrap().path()).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

fn id_of(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.dev(), m.ino())
}

/// Boots `vmm` in a fresh run directory into early boot, pauses it (twice: not an
/// error), saves it (a full snapshot: the state file and a memory file of the guest's
/// size), resumes it (twice) and kills it; then launches two VMs at once from the saved
/// state, each in its own run directory over its own disks, and checks that each fork
/// runs on from the source's state (its console goes on where the source's was, no new
/// boot) with its own disks open and none of the source's or the other fork's.
async fn pause_save_and_restore(vmm: &Arc<Firecracker>, net: NetConfig) {
    let run = support::run_dir();
    let cfg = VmConfig {
        net: net.clone(),
        ..config(run.path(), "earlyprintk=ttyS0")
    };
    let launched = launch(vmm, &cfg).await.expect("launch");
    let _reap = Reap(launched.processes.clone());
    let fc = vmm_of(&launched).clone();
    support::until(run.path(), "the kernel's first console lines", || {
        support::console(run.path()).contains("Linux version")
    })
    .await;

    let snap = support::run_dir();
    let e = vmm.save_state(run.path(), snap.path()).unwrap_err();
    assert!(
        matches!(&e, VmmError::Api(ApiError::Rejected { path, .. }) if path == "/snapshot/create"),
        "a running guest cannot be saved: {e}"
    );
    eprintln!("saving a running guest: {e}");
    vmm.pause(run.path()).expect("PATCH /vm Paused");
    vmm.pause(run.path()).expect("pausing a paused guest");
    vmm.save_state(run.path(), snap.path())
        .expect("PUT /snapshot/create");
    let memory = std::fs::metadata(snap.path().join("memory")).unwrap();
    assert_eq!(memory.len(), cfg.memory_mib << 20);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(memory.permissions().mode() & 0o777, 0o600);
    assert!(
        std::fs::metadata(snap.path().join("vmstate"))
            .unwrap()
            .len()
            > 0
    );
    vmm.resume(run.path()).expect("PATCH /vm Resumed");
    vmm.resume(run.path()).expect("resuming a running guest");
    fc.signal(libc::SIGKILL).unwrap();
    gone(&fc, run.path()).await;

    // Two forks of the one saved state, launched at once.
    let networked = matches!(net, NetConfig::User { .. });
    let runs = [support::run_dir(), support::run_dir()];
    let forks: Vec<VmConfig> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| VmConfig {
            name: format!("fc fork {i}"),
            restore: Some(snap.path().to_path_buf()),
            net: net.clone(),
            ..config(r.path(), "earlyprintk=ttyS0")
        })
        .collect();
    let (a, b) = tokio::join!(launch(vmm, &forks[0]), launch(vmm, &forks[1]));
    // Every fork that started is stopped, also when the other one failed.
    let reaps: Vec<Reap> = [&a, &b]
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|l| Reap(l.processes.clone()))
        .collect();
    let mut pids = Vec::new();
    for (restored, fork_run) in [a, b].into_iter().zip(&runs) {
        let restored = restored.unwrap_or_else(|e| {
            let log = std::fs::read_to_string(fork_run.path().join("firecracker.log"));
            panic!("PUT /snapshot/load: {e}\nfirecracker's log:\n{log:?}")
        });
        pids.push(vmm_of(&restored).clone());
    }
    for (i, (fc2, fork_run)) in pids.iter().zip(&runs).enumerate() {
        let other = &runs[1 - i];
        check_fork(
            fc2.pid,
            fork_run.path(),
            &[run.path(), other.path()],
            networked,
        )
        .await;
    }
    for (fc2, fork_run) in pids.iter().zip(&runs) {
        fc2.signal(libc::SIGKILL).unwrap();
        gone(fc2, fork_run.path()).await;
        banger_testkit::wait::until("the fork's sockets to be removed", || {
            sockets(fork_run.path())
                .iter()
                .all(|s| std::fs::symlink_metadata(s).is_err())
        });
        assert!(support::processes_mentioning(fork_run.path()).is_empty());
    }
    drop(reaps);
}

/// A VM restored in `fork_run` by Firecracker `pid`: the calls it got, its disks (and
/// none of `others`'), its vsock socket and TAP, and a guest that runs on.
async fn check_fork(pid: u32, fork_run: &Path, others: &[&Path], networked: bool) {
    // Exactly these calls, as Firecracker logged them: no configuration beyond the console.
    let log = std::fs::read_to_string(fork_run.join("firecracker.log")).unwrap();
    let calls: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("The API server received a ").map(|(_, r)| r))
        .filter_map(|r| r.split(" with body").next())
        .collect();
    assert_eq!(
        calls,
        [
            r#"Get request on "/"."#,
            r#"Put request on "/serial""#,
            r#"Put request on "/snapshot/load""#
        ],
        "{log}"
    );
    let open = open_files(pid);
    for d in ["base.img", "upper.img", "work.img"] {
        assert!(open.contains(&id_of(&fork_run.join(d))), "the fork's {d}");
        for o in others {
            assert!(!open.contains(&id_of(&o.join(d))), "{d} of {}", o.display());
        }
    }
    assert!(fork_run.join("vsock.sock").exists());
    if networked {
        let tun = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .any(|t| t == Path::new("/dev/net/tun"));
        assert!(tun, "the fork's NIC has a TAP");
        assert!(log.contains(r#"\"host_dev_name\":\"tap0\""#), "{log}");
    }
    // The guest goes on writing its console, into the fork's log, without booting again.
    support::until(fork_run, "the restored guest's console output", || {
        !support::console(fork_run).is_empty()
    })
    .await;
    let console = support::console(fork_run);
    assert!(!console.contains("Linux version"), "a new boot:\n{console}");
}

/// Pause, save and restore against the real Firecracker, as far as this host lets a
/// guest run (into early boot; the load itself works here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_is_paused_saved_and_restored_into_another_vm() {
    let Some(vmm) = firecracker() else { return };
    pause_save_and_restore(&vmm, NetConfig::None).await;
}

/// The same under the jailer: the snapshot is written inside the source's jail and moved
/// out; the fork's jail gets the saved files and its own disks at the same jailed paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jailed_guest_is_paused_saved_and_restored_into_another_jail() {
    let base = support::run_dir();
    let Some(vmm) = jailed(base.path()) else {
        return;
    };
    pause_save_and_restore(&vmm, NetConfig::None).await;
    assert!(
        mounts_under(base.path()).is_empty(),
        "{:?}",
        mounts_under(base.path())
    );
}

/// With user networking the saved NIC is re-pointed at the fork's own TAP (in the fork's
/// namespace): the load is accepted and the fork's Firecracker holds a TAP open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_networked_guest_is_restored_onto_its_own_tap() {
    let Some(vmm) = firecracker() else { return };
    let net = NetConfig::User {
        forwards: vec![],
        policy: Default::default(),
    };
    pause_save_and_restore(&vmm, net).await;
}

/// A saved state the jailed user cannot read is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_state_the_jailed_user_cannot_read_is_refused_first() {
    let base = support::run_dir();
    let Some(vmm) = jailed(base.path()) else {
        return;
    };
    let run = support::run_dir();
    let snap = support::run_dir();
    use std::os::unix::fs::PermissionsExt;
    for f in ["vmstate", "memory"] {
        let p = snap.path().join(f);
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let cfg = VmConfig {
        restore: Some(snap.path().to_path_buf()),
        ..config(run.path(), "")
    };
    let err = launch(&vmm, &cfg).await.unwrap_err();
    assert!(
        matches!(&err, VmmError::Jail(JailError::UnreadableState { uid, path, .. })
            if *uid == JAILED && path.ends_with("vmstate")),
        "{err}"
    );
    assert!(!base.path().join("firecracker/fc-test").exists());
    assert!(!run.path().join("pids.json").exists());
}
