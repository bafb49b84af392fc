//! Rootless networking end to end: as an unprivileged user (`nobody` through `setpriv`
//! when the tests run as root, else the caller), [`banger_vmm::netns::spawn`] brings up
//! the user + network namespace with tap0 on br0 and pasta, exactly as the Firecracker
//! driver does, around a QEMU guest (software emulation: it boots here) attached to
//! tap0. The guest (Debian's cloud kernel, a busybox initramfs) configures
//! 10.0.2.15/24 via 10.0.2.2, fetches a page from a server this test runs on the host's
//! 127.0.0.1, prints it on the console and serves an answer on port 80, which this test
//! fetches through two published ports: one on the host's 127.0.0.1 (which Debian 12's
//! pasta splices into the namespace's loopback, where the namespace's NAT rules relay it
//! to the guest) and one on the host's global IPv4 address (which pasta sends through its
//! interface to the guest: see [`public_address`]). Then everything goes away: QEMU,
//! pasta, the namespace.
//!
//! Needs `setpriv`/`unshare`/`nsenter` (util-linux), `ip` (iproute2), `pasta` (passt),
//! QEMU, static busybox and a `/dev/net/tun` the user may open (Debian's default 0666;
//! `scripts/install-test-deps.sh` restores it). Under `CI=true` anything missing fails the
//! test; otherwise it is skipped with a message. Every wait has a deadline; every process
//! started is stopped by its record, also when the test fails.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_testkit::qemu::Kernel;
use banger_vmm::netns::{self, Plumbed, SpawnOptions};
use banger_vmm::{Accel, PortForward, Proto};
use support::GUEST_DEADLINE;

/// The unprivileged user the plumbing runs as when the test runs as root.
const NOBODY: u32 = 65534;
/// What the host server answers (the guest prints it).
const HOST_PAGE: &str = "banger-host-page-4f1c";
/// What the guest serves on port 80.
const GUEST_PAGE: &str = "banger-guest-page-9d2e";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Fails under CI, otherwise prints why the test does not run; returns `None` to skip.
fn unavailable<T>(why: String) -> Option<T> {
    if in_ci() {
        panic!("CI=true but rootless networking cannot be tested: {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// The programs the test needs, or why not.
fn tools() -> Option<(PathBuf, PathBuf)> {
    for (tool, package) in [
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
        ("ip", "iproute2"),
        ("pasta", "passt"),
        ("nft", "nftables"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
    ] {
        if banger_testkit::tools::find(tool).is_none() {
            return unavailable(format!("{tool} is missing (apt-get install {package})"));
        }
    }
    Some((
        banger_testkit::tools::require("qemu-system-x86_64"),
        banger_testkit::tools::require("busybox"),
    ))
}

/// `setpriv` to [`NOBODY`] when root, nothing otherwise (already unprivileged); `None`
/// when that user cannot open `/dev/net/tun`.
fn as_unprivileged() -> Option<Vec<OsString>> {
    if banger_testkit::tools::is_root() {
        let mode = std::fs::metadata("/dev/net/tun")
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        if mode & 0o006 != 0o006 {
            return unavailable(format!(
                "/dev/net/tun has mode {mode:o}, so no unprivileged user can create a TAP \
                 (Debian's default is 0666; scripts/install-test-deps.sh sets it)"
            ));
        }
        let (u, g) = (format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"));
        Some(
            ["setpriv", &u, &g, "--clear-groups", "--"]
                .map(OsString::from)
                .to_vec(),
        )
    } else {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
        {
            Ok(_) => Some(Vec::new()),
            Err(e) => unavailable(format!("/dev/net/tun does not open for this user: {e}")),
        }
    }
}

/// A one-page HTTP server on 127.0.0.1 recording each request's first line and peer.
struct HostServer {
    port: u16,
    seen: Arc<Mutex<Vec<(IpAddr, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostServer {
    fn start() -> HostServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let first = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let peer = conn
                    .peer_addr()
                    .map(|a| a.ip())
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                s.lock().unwrap().push((peer, first));
                let body = format!("{HOST_PAGE}\n");
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        HostServer {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Stops the namespace's processes when dropped (a failing test leaks none).
struct Guard(Option<Plumbed>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            p.stop(Duration::from_secs(10));
        }
    }
}

/// The host's first global IPv4 address (`ip -4 -o addr show scope global`).
///
/// A port published there takes pasta's other path: a client on a non-loopback address
/// is not spliced (Debian 12's pasta, 0.0~git20230309, splices only loopback sources into
/// the namespace's loopback) but goes through pasta0 → br0 → tap0 to the guest.
fn public_address() -> Option<Ipv4Addr> {
    let out = banger_testkit::tools::run_stdout(
        banger_testkit::tools::command("ip").args(["-4", "-o", "addr", "show", "scope", "global"]),
    );
    let addr = out.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        w.find(|x| *x == "inet")?;
        w.next()?.split('/').next()?.parse().ok()
    });
    match addr {
        Some(a) => Some(a),
        None => unavailable(format!(
            "this host has no global IPv4 address to publish on:\n{out}"
        )),
    }
}

/// A free TCP port on `addr` (bound once, then released for pasta).
fn free_port(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The initramfs: static busybox, virtio_mmio + virtio_net (and dependencies), and an
/// `/init` doing the guest's part.
fn initramfs(out: &Path, busybox: &Path, host_port: u16) {
    let mods = banger_kernel::resolve_modules(
        Some(&Kernel::get().modules_dir),
        &["virtio_mmio", "virtio_net"],
    )
    .unwrap();
    let mut init = String::from(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
    );
    for m in &mods {
        init.push_str(&format!(
            "insmod /lib/modules/{0}.ko || echo BANGER-INSMOD-FAILED {0}\n",
            m.name
        ));
    }
    init.push_str(&format!(
        "ip link set lo up\n\
         ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && \
         ip route add default via 10.0.2.2 || echo BANGER-NET-FAILED\n\
         # (no `wget -T`: it segfaults in Debian 12's static busybox)\n\
         ip -4 addr show dev eth0; ip route\n\
         n=0\n\
         until got=$(timeout 10 wget -q -O - http://10.0.2.2:{host_port}/); do\n\
           echo BANGER-WGET-FAILED $?; n=$((n+1)); [ $n -ge 3 ] && break; sleep 1\n\
         done\n\
         [ -n \"$got\" ] || {{ cat /proc/net/arp; cat /proc/net/dev; }}\n\
         echo \"BANGER-GOT:$got\"\n\
         mkdir -p /www && echo {GUEST_PAGE} > /www/index.html\n\
         echo BANGER-SERVING\n\
         httpd -f -p 80 -h /www\n\
         echo BANGER-HTTPD-EXITED\n\
         poweroff -f\n"
    ));
    let file = std::fs::File::create(out).unwrap();
    let mut cpio = banger_kernel::cpio::Newc::new(std::io::BufWriter::new(file));
    for d in ["bin", "lib", "lib/modules", "proc", "sys", "dev"] {
        cpio.dir(d, 0o755).unwrap();
    }
    cpio.file("bin/busybox", 0o755, &std::fs::read(busybox).unwrap())
        .unwrap();
    for m in &mods {
        cpio.file(&format!("lib/modules/{}.ko", m.name), 0o644, &m.bytes)
            .unwrap();
    }
    cpio.file("init", 0o755, init.as_bytes()).unwrap();
    let (mut w, _) = cpio.finish().unwrap();
    w.flush().unwrap();
}

fn console(run: &Path) -> String {
    std::fs::read_to_string(run.join("console.log"))
        .unwrap_or_default()
        .replace('\r', "")
}

/// Waits until `cond` holds, the guest's QEMU died, or [`GUEST_DEADLINE`] passed.
fn until(run: &Path, p: &Plumbed, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUEST_DEADLINE;
    while !cond() {
        let tail = || {
            format!(
                "console:\n{}\nqemu:\n{}\npasta:\n{}",
                banger_testkit::tools::tail(&console(run), 40),
                std::fs::read_to_string(run.join("qemu.out")).unwrap_or_default(),
                std::fs::read_to_string(run.join("pasta.log")).unwrap_or_default(),
            )
        };
        assert!(p.vmm.is_alive(), "QEMU exited before {what}; {}", tail());
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; {}",
            tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One GET through the published port; `None` until the guest answers completely.
fn fetch(addr: Ipv4Addr, port: u16) -> Option<String> {
    let mut c = TcpStream::connect((addr, port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.write_all(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n").ok()?;
    let _ = c.shutdown(Shutdown::Write);
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    (out.starts_with("HTTP/1") && out.contains(GUEST_PAGE)).then_some(out)
}

fn uid_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default()
        .to_string()
}

/// Pids whose network namespace is `ns` (a `net:[inode]` link).
fn in_namespace(ns: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|l| l == ns))
        .collect()
}

#[test]
fn a_qemu_guest_on_the_rootless_tap_reaches_the_host_and_answers_on_a_published_port() {
    let Some((qemu, busybox)) = tools() else {
        return;
    };
    let Some(public) = public_address() else {
        return;
    };
    let Some(prefix) = as_unprivileged() else {
        return;
    };
    let Accel::Tcg { tsc_khz } = support::accel() else {
        unreachable!()
    };

    let dir = support::run_dir();
    let run = dir.path();
    // The unprivileged user writes the console here and reads the kernel and initrd.
    std::fs::set_permissions(run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let kernel = run.join("vmlinuz");
    std::fs::copy(&Kernel::get().vmlinuz, &kernel).unwrap();
    let server = HostServer::start();
    let initrd = run.join("initrd.img");
    initramfs(&initrd, &busybox, server.port);
    for f in [&kernel, &initrd] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let mut cmdline = String::from("console=ttyS0 reboot=t panic=-1 rdinit=/init");
    if let Some(k) = tsc_khz {
        cmdline.push_str(&format!(" tsc_early_khz={k}"));
    }
    let args: Vec<OsString> = [
        "-M",
        "microvm",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "1",
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-kernel",
        kernel.to_str().unwrap(),
        "-initrd",
        initrd.to_str().unwrap(),
        "-append",
        &cmdline,
        "-chardev",
        &format!("file,id=con,path={}", run.join("console.log").display()),
        "-serial",
        "chardev:con",
        "-netdev",
        &format!(
            "tap,id=n0,ifname={},script=no,downscript=no",
            netns::TAP_NAME
        ),
        "-device",
        "virtio-net-device,netdev=n0,mac=52:54:00:12:34:56",
    ]
    .map(OsString::from)
    .to_vec();
    let published = free_port(public);
    let on_loopback = free_port(Ipv4Addr::LOCALHOST);
    let opts = SpawnOptions {
        program: qemu,
        args,
        forwards: vec![
            PortForward {
                proto: Proto::Tcp,
                host_ip: IpAddr::V4(public),
                host_port: published,
                guest_port: 80,
            },
            PortForward {
                proto: Proto::Tcp,
                host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                host_port: on_loopback,
                guest_port: 80,
            },
        ],
        // `host`: the gateway reaches the host's loopback; the replies of the port
        // published on the host's global address (a host address, denied by the policy)
        // pass as replies of an inbound flow.
        policy: netns::Policy {
            mode: netns::Mode::Host,
            ..Default::default()
        },
        run_dir: run.to_path_buf(),
        output: run.join("qemu.out"),
        prefix: prefix.clone(),
    };
    let plumbed = netns::spawn(&opts).unwrap_or_else(|e| panic!("{e}"));
    let mut guard = Guard(Some(plumbed.clone()));
    let p = &plumbed;

    // The plumbing: its own namespace, as the unprivileged user, with tap0/br0/pasta0.
    let ns = std::fs::read_link(format!("/proc/{}/ns/net", p.vmm.pid)).unwrap();
    assert_ne!(ns, std::fs::read_link("/proc/self/ns/net").unwrap());
    if !prefix.is_empty() {
        for pid in [p.vmm.pid, p.net.pid] {
            let uid = uid_of(pid);
            assert!(
                uid.starts_with(&format!("Uid:\t{NOBODY}\t")),
                "pid {pid}: {uid}"
            );
        }
    }
    let dev = std::fs::read_to_string(format!("/proc/{}/net/dev", p.vmm.pid)).unwrap();
    for ifname in [netns::TAP_NAME, netns::BRIDGE_NAME, netns::PASTA_IFNAME] {
        assert!(dev.contains(&format!("{ifname}:")), "{ifname}:\n{dev}");
    }

    // The guest reaches the host's loopback through the gateway.
    until(run, p, "the guest's fetch", || {
        console(run).contains("BANGER-GOT:")
    });
    let con = console(run);
    assert!(
        con.contains(&format!("BANGER-GOT:{HOST_PAGE}")),
        "the guest did not get the host's page:\n{}",
        banger_testkit::tools::tail(&con, 40)
    );
    assert!(!con.contains("BANGER-NET-FAILED"), "{con}");
    {
        let seen = server.seen.lock().unwrap();
        assert!(
            seen.iter()
                .any(|(peer, line)| peer.is_loopback() && line.starts_with("GET / ")),
            "{seen:?}"
        );
    }

    // The guest answers on the published port.
    until(run, p, "the guest's server", || {
        console(run).contains("BANGER-SERVING")
    });
    let mut answer = None;
    until(run, p, "an answer on the published port", || {
        answer = fetch(public, published);
        answer.is_some()
    });
    let answer = answer.unwrap();
    assert!(answer.contains(GUEST_PAGE), "{answer}");
    // And on the host's loopback, through the namespace's relay (several times: the
    // guest must keep br0's MAC for the relay's address, not pasta's).
    for _ in 0..3 {
        let mut answer = None;
        until(
            run,
            p,
            "an answer on the port published on 127.0.0.1",
            || {
                answer = fetch(Ipv4Addr::LOCALHOST, on_loopback);
                answer.is_some()
            },
        );
    }
    // The public path still works after the relay's traffic (pasta kept the guest's
    // MAC and address).
    assert!(fetch(public, published).is_some(), "the public port broke");

    // Teardown: QEMU, then pasta; the namespace goes with its last process.
    let plumbed = guard.0.take().unwrap();
    assert!(plumbed.stop(Duration::from_secs(30)), "a process survived");
    assert!(!plumbed.vmm.is_alive() && !plumbed.net.is_alive());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = in_namespace(&ns);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still in the namespace: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        support::processes_mentioning(run).is_empty(),
        "{:?}",
        support::processes_mentioning(run)
    );
    assert!(
        TcpListener::bind((public, published)).is_ok(),
        "the published port is still held"
    );
    assert!(
        TcpListener::bind((Ipv4Addr::LOCALHOST, on_loopback)).is_ok(),
        "the loopback port is still held"
    );
}
