//! Real launches: Debian's cloud kernel under QEMU microvm (TCG), with the vsock helper
//! or the serial channel. No sleeps for timing: every wait is on observable state with a
//! deadline, and every process a test starts it stops.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;

use banger_vmm::{
    ChannelEndpoint, ChannelKind, LaunchError, Launched, NetConfig, PortError, PortForward,
    ProcessRecord, Proto, Qemu, ROLE_VMM, ROLE_VSOCK, VmConfig, Vmm, VmmError,
};
use support::{GUEST_DEADLINE, Reap};

async fn launch(vmm: &Arc<Qemu>, cfg: &VmConfig) -> Result<Launched, VmmError> {
    let (vmm, cfg) = (Arc::clone(vmm), cfg.clone());
    tokio::task::spawn_blocking(move || vmm.launch(&cfg))
        .await
        .expect("launch task")
}

fn role<'a>(l: &'a Launched, role: &str) -> &'a ProcessRecord {
    l.processes
        .iter()
        .find(|p| p.role == role)
        .unwrap_or_else(|| panic!("no {role} process in {:?}", l.processes))
}

async fn gone(p: &ProcessRecord) {
    tokio::time::timeout(GUEST_DEADLINE, p.exited())
        .await
        .unwrap_or_else(|_| panic!("{} process {} still runs", p.role, p.pid));
    assert!(!p.is_alive());
}

fn session_of(pid: u32) -> i32 {
    // SAFETY: getsid only reads the process table.
    unsafe { libc::getsid(pid as libc::pid_t) }
}

/// Without a root filesystem the kernel panics; with `panic=-1` and `-no-reboot` QEMU
/// exits by itself, and the helper follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_kernel_ends_the_vm_by_itself() {
    let run = support::run_dir();
    let vmm = Arc::new(support::qemu());
    let cfg = VmConfig {
        cpus: 2,
        ..support::config(run.path(), ChannelKind::Vsock, None, "earlyprintk=ttyS0")
    };
    let ChannelEndpoint::VsockListen(listen) = vmm.channel_endpoint(&cfg) else {
        panic!("vsock channel expected");
    };
    assert_eq!(listen, run.path().join("vsock.sock_1025"));
    let _agent = std::os::unix::net::UnixListener::bind(&listen).unwrap();

    let launched = launch(&vmm, &cfg).await.expect("launch");
    let _reap = Reap(launched.processes.clone());
    assert_eq!(launched.processes.len(), 2);
    assert_eq!(launched.processes[1].role, ROLE_VMM);
    let qemu = role(&launched, ROLE_VMM);
    let helper = role(&launched, ROLE_VSOCK);
    // Both run in sessions of their own, so they outlive the launcher.
    assert_eq!(session_of(qemu.pid), qemu.pid as i32);
    assert_eq!(session_of(helper.pid), helper.pid as i32);
    let pids: Vec<ProcessRecord> =
        serde_json::from_slice(&std::fs::read(run.path().join("pids.json")).unwrap()).unwrap();
    assert_eq!(pids, launched.processes);

    gone(qemu).await;
    gone(helper).await;
    let console = support::console(run.path());
    assert!(console.contains("Linux version"), "{console}");
    assert!(console.contains("Kernel panic"), "{console}");
    assert!(console.contains("Brought up 1 node, 2 CPUs"), "{console}");
    assert!(
        console.contains("tsc_early_khz="),
        "TCG passes the TSC rate: {console}"
    );
    assert_eq!(launched.console_log, run.path().join("console.log"));
    assert!(support::processes_mentioning(run.path()).is_empty());
}

/// A VM whose processes are killed through their records leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_records_stops_every_process() {
    let run = support::run_dir();
    let initrd = run.path().join("initrd");
    support::initramfs(&initrd, &[], "echo BANGER-IDLE\nexec sleep 100000\n", &[]);
    let vmm = Arc::new(support::qemu());
    let cfg = support::config(run.path(), ChannelKind::Vsock, Some(initrd), "");
    let launched = launch(&vmm, &cfg).await.expect("launch");
    let _reap = Reap(launched.processes.clone());
    support::until(run.path(), "the guest's init", || {
        support::console(run.path()).contains("BANGER-IDLE")
    })
    .await;
    for p in &launched.processes {
        assert!(p.is_alive(), "{p:?}");
    }
    assert_eq!(support::processes_mentioning(run.path()).len(), 2);

    // A second launch into the same run directory is refused, the first VM untouched.
    let err = launch(&vmm, &cfg).await.unwrap_err();
    assert!(
        matches!(err, VmmError::Launch(LaunchError::AlreadyRunning { .. })),
        "{err}"
    );
    // QMP answers the power-down request (this init ignores the ACPI button).
    vmm.power_down(run.path()).expect("power-down request");
    for p in &launched.processes {
        assert!(p.is_alive(), "{p:?}");
    }

    let helper = role(&launched, ROLE_VSOCK);
    let qemu = role(&launched, ROLE_VMM);
    helper.signal(libc::SIGTERM).unwrap();
    qemu.signal(libc::SIGKILL).unwrap();
    gone(helper).await;
    gone(qemu).await;
    // A dead record refuses signals (the pid may belong to someone else by now).
    let e = qemu.signal(libc::SIGTERM).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    assert!(support::processes_mentioning(run.path()).is_empty());
}

/// The guest dials host CID 2, port 1025; the connection arrives on
/// `<run>/vsock.sock_1025`, bound before launch, and carries bytes both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_connection_to_the_host_arrives_on_the_listen_socket() {
    let run = support::run_dir();
    let initrd = run.path().join("initrd");
    support::initramfs(
        &initrd,
        &["virtio_mmio", "vmw_vsock_virtio_transport"],
        // Retried: the transport may still be binding to its device when init gets here.
        "n=0; rc=1\n\
         while [ $n -lt 100 ]; do /vsock-client && { rc=0; break; }; n=$((n+1)); sleep 0.1; done\n\
         echo BANGER-CLIENT-EXIT=$rc\npoweroff -f\n",
        &[("vsock-client", support::vsock_client())],
    );
    let vmm = Arc::new(support::qemu());
    let cfg = support::config(run.path(), ChannelKind::Vsock, Some(initrd), "quiet");
    let ChannelEndpoint::VsockListen(listen) = vmm.channel_endpoint(&cfg) else {
        panic!("vsock channel expected");
    };
    let listener = tokio::net::UnixListener::bind(&listen).unwrap();
    let launched = launch(&vmm, &cfg).await.expect("launch");
    let _reap = Reap(launched.processes.clone());

    let (stream, _) = tokio::time::timeout(GUEST_DEADLINE, listener.accept())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no guest connection; console:\n{}",
                support::console(run.path())
            )
        })
        .unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    let mut hello = String::new();
    tokio::time::timeout(
        GUEST_DEADLINE,
        tokio::io::AsyncBufReadExt::read_line(&mut stream, &mut hello),
    )
    .await
    .expect("hello in time")
    .unwrap();
    assert_eq!(hello, "BANGER-VSOCK-HELLO\n");
    tokio::io::AsyncWriteExt::write_all(stream.get_mut(), b"BANGER-HOST-REPLY\n")
        .await
        .unwrap();

    gone(role(&launched, ROLE_VMM)).await;
    gone(role(&launched, ROLE_VSOCK)).await;
    let console = support::console(run.path());
    assert!(console.contains("BANGER-HOST-REPLY"), "{console}");
    assert!(console.contains("BANGER-CLIENT-EXIT=0"), "{console}");
}

/// Without vsock, the agent channel is a virtio-serial port the host connects to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serial_channel_carries_bytes_both_ways() {
    let run = support::run_dir();
    let initrd = run.path().join("initrd");
    // The port, its name and its /dev node appear asynchronously after the module loads.
    let script = r#"n=0
while :; do
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat $p/name 2>/dev/null)" = org.banger.agent.0 ] && port=/dev/${p##*/}
  done
  [ -n "$port" ] && [ -c "$port" ] && break
  n=$((n+1)); [ $n -gt 1200 ] && { echo BANGER-NO-PORT; poweroff -f; }
  sleep 0.05
done
exec 3<>$port
echo BANGER-SERIAL-HELLO >&3
read line <&3
echo "BANGER-GOT=$line"
poweroff -f
"#;
    support::initramfs(&initrd, &["virtio_mmio", "virtio_console"], script, &[]);
    let vmm = Arc::new(support::qemu());
    let cfg = support::config(run.path(), ChannelKind::Serial, Some(initrd), "quiet");
    let ChannelEndpoint::SerialConnect(socket) = vmm.channel_endpoint(&cfg) else {
        panic!("serial channel expected");
    };
    let launched = launch(&vmm, &cfg).await.expect("launch");
    let _reap = Reap(launched.processes.clone());
    assert_eq!(
        launched.processes.len(),
        1,
        "no helper for the serial channel"
    );

    let stream = std::os::unix::net::UnixStream::connect(&socket).expect("QEMU listens");
    stream.set_read_timeout(Some(GUEST_DEADLINE)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    assert_eq!(
        line,
        "BANGER-SERIAL-HELLO\n",
        "{}",
        support::console(run.path())
    );
    w.write_all(b"pong\n").unwrap();
    gone(role(&launched, ROLE_VMM)).await;
    let console = support::console(run.path());
    assert!(console.contains("BANGER-GOT=pong"), "{console}");
}

/// A taken host port is a typed error, and nothing starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_refused_before_anything_starts() {
    let run = support::run_dir();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let vmm = Arc::new(support::qemu());
    let cfg = VmConfig {
        net: NetConfig::User {
            forwards: vec![PortForward {
                proto: Proto::Tcp,
                host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                host_port: port,
                guest_port: 80,
            }],
            policy: Default::default(),
        },
        ..support::config(run.path(), ChannelKind::Vsock, None, "")
    };
    let err = launch(&vmm, &cfg).await.unwrap_err();
    assert!(
        matches!(err, VmmError::Port(PortError::InUse { host_port, .. }) if host_port == port),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(run.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "nothing may be created: {left:?}");

    // Freed, the same port is published and the guest boots with a network.
    drop(held);
    let launched = launch(&vmm, &cfg).await.expect("launch with the port free");
    let _reap = Reap(launched.processes.clone());
    let taken = TcpListener::bind(("127.0.0.1", port));
    assert!(taken.is_err(), "QEMU holds the published port");
    for p in &launched.processes {
        p.signal(libc::SIGKILL).unwrap();
        gone(p).await;
    }
}

/// QEMU failing at startup is an error carrying its stderr; the helper is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_qemu_is_reported_with_its_stderr() {
    let run = support::run_dir();
    let bogus = run.path().join("not-a-kernel");
    std::fs::write(&bogus, b"not a kernel\n").unwrap();
    let vmm = Arc::new(support::qemu());
    let cfg = VmConfig {
        kernel: bogus,
        ..support::config(run.path(), ChannelKind::Vsock, None, "")
    };
    let err = launch(&vmm, &cfg).await.unwrap_err();
    let VmmError::Launch(LaunchError::Exited { tail, log, .. }) = &err else {
        panic!("expected an early exit, got {err}");
    };
    assert!(tail.contains("invalid kernel header"), "{err}");
    assert_eq!(log, &run.path().join("qemu.stderr"));
    assert!(err.to_string().contains("invalid kernel header"), "{err}");
    assert!(!run.path().join("pids.json").exists());
    assert!(support::processes_mentioning(run.path()).is_empty());

    // The vsock channel without a helper is refused up front.
    let no_helper = Arc::new(Qemu::new(support::detection().qemu.clone().unwrap(), None));
    let err = launch(
        &no_helper,
        &support::config(run.path(), ChannelKind::Vsock, None, ""),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, VmmError::Launch(LaunchError::NoVsockBackend)),
        "{err}"
    );
}
