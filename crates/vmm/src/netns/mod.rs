//! Rootless networking for Firecracker: a user + network namespace owned by the caller's
//! user, holding a TAP for the guest, connected outward by pasta (`passt` package) for
//! NAT, DNS and published ports, with QEMU user networking's addressing (guest
//! 10.0.2.15/24, gateway 10.0.2.2 = the host's loopback, DNS 10.0.2.3).
//!
//! # Layout
//! ```text
//! guest eth0 ─ tap0 ─┐
//!                    br0   (no address: the namespace itself stays off the guest's L2)
//! pasta ─── pasta0 ──┘
//! ```
//! 1. [`wrap`]: the VMM is started as `unshare --user --map-root-user --net -- sh -c
//!    '<make lo, tap0, br0>; exec "$@"' firecracker …`: one pid from start to end, so
//!    the namespace lives exactly as long as the VMM (and pasta, which holds it).
//! 2. [`attach`]: once the VMM answers, `pasta -f <pid>` joins its namespaces, creating
//!    `pasta0` there and binding the published host ports; `pasta0` is then added to
//!    `br0` with `nsenter`. pasta answers the guest as the gateway and as the address it
//!    was told the namespace has (10.0.2.15), which is the guest's.
//!
//! # Invariants
//! - No privilege: everything runs as the caller's user (pasta is told `--runas 0:0` when
//!   the caller is root, since it would otherwise drop to `nobody` and lose access to
//!   root's namespace).
//! - Teardown: the namespace disappears when its last process (the VMM, pasta) exits.
//!   pasta does not exit by itself while it holds the namespace: the VMM's reaper stops
//!   it, and a caller that re-adopts a VM whose `vmm` record died stops the [`ROLE_NET`]
//!   record itself.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{PortForward, Proto};
use crate::files::RunFiles;
use crate::host;
use crate::process::{self, ProcessRecord};

mod standalone;
pub use standalone::{Plumbed, SpawnError, SpawnOptions, spawn};

/// The guest's TAP inside the namespace.
pub const TAP_NAME: &str = "tap0";
/// The bridge joining the TAP and pasta's interface.
pub const BRIDGE_NAME: &str = "br0";
/// pasta's interface inside the namespace.
pub const PASTA_IFNAME: &str = "pasta0";
/// The role of pasta's [`ProcessRecord`].
pub const ROLE_NET: &str = "net";
/// The guest's address, prefix, gateway and DNS server (QEMU user networking's).
pub const GUEST_ADDR: &str = "10.0.2.15";
/// See [`GUEST_ADDR`].
pub const GUEST_PREFIX: u8 = 24;
/// See [`GUEST_ADDR`].
pub const GATEWAY: &str = "10.0.2.2";
/// See [`GUEST_ADDR`].
pub const DNS: &str = "10.0.2.3";
/// How long pasta may take to create its interface.
const PASTA_READY: Duration = Duration::from_secs(10);

/// The namespace set-up run inside `unshare` before the VMM is exec'd.
const SETUP: &str = "set -e\n\
    ip link set lo up\n\
    ip tuntap add dev tap0 mode tap\n\
    ip link add br0 type bridge\n\
    ip link set tap0 master br0\n\
    ip link set tap0 up\n\
    ip link set br0 up\n\
    exec \"$@\"\n";

/// Why rootless networking could not be set up. Whatever was started has been stopped.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A program the plumbing needs is missing.
    #[error("{program} was not found on PATH: {fix}")]
    Missing {
        /// The program.
        program: &'static str,
        /// How to get it.
        fix: &'static str,
    },
    /// `/dev/net/tun` does not open for this user.
    #[error(
        "/dev/net/tun does not open read-write for this user ({error}): rootless TAP \
         networking needs it; make it world read-write as Debian does by default \
         (`chmod 0666 /dev/net/tun`) or run without a network"
    )]
    Tun {
        /// The open error.
        error: String,
    },
    /// pasta could not be started or did not set up its interface.
    #[error(
        "pasta did not connect the VM's network namespace: {detail}: its output ({log}) ends with:\n{tail}"
    )]
    Pasta {
        /// What went wrong.
        detail: String,
        /// pasta's log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// Adding pasta's interface to the bridge failed.
    #[error("cannot add {PASTA_IFNAME} to {BRIDGE_NAME} in process {pid}'s namespace: {detail}")]
    Bridge {
        /// The VMM's pid (whose namespace it is).
        pid: u32,
        /// The error or `nsenter`'s output.
        detail: String,
    },
}

/// The programs the plumbing runs.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    unshare: PathBuf,
    pasta: PathBuf,
    nsenter: PathBuf,
    /// Run before each program (tests: `setpriv --reuid=…` to act as another user).
    prefix: Vec<OsString>,
}

impl Tools {
    fn command(&self, program: &Path) -> Command {
        match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

/// Checks, before anything starts, that the plumbing can work for this user.
pub(crate) fn check() -> Result<Tools, NetnsError> {
    let find = |program: &'static str, fix: &'static str| {
        host::find_program(
            program,
            &[PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")],
        )
        .ok_or(NetnsError::Missing { program, fix })
    };
    let tools = Tools {
        unshare: find("unshare", "install util-linux")?,
        nsenter: find("nsenter", "install util-linux")?,
        pasta: find("pasta", "install the passt package")?,
        prefix: Vec::new(),
    };
    find("ip", "install iproute2")?;
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        return Err(NetnsError::Tun {
            error: e.to_string(),
        });
    }
    Ok(tools)
}

/// The command running `program args` in a new user + network namespace holding
/// [`TAP_NAME`] on [`BRIDGE_NAME`].
pub(crate) fn wrap(tools: &Tools, program: &Path, args: &[OsString]) -> Command {
    let mut c = tools.command(&tools.unshare);
    c.args([
        "--user",
        "--map-root-user",
        "--net",
        "--",
        "/bin/sh",
        "-c",
        SETUP,
    ])
    .arg("banger-netns")
    .arg(program)
    .args(args);
    c
}

/// pasta's arguments for the namespace of `pid`.
pub(crate) fn pasta_args(pid: u32, forwards: &[PortForward], as_root: bool) -> Vec<String> {
    let mut v: Vec<String> = ["-f", "-q", "-I", PASTA_IFNAME, "-a", GUEST_ADDR, "-n"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.push(GUEST_PREFIX.to_string());
    v.extend(
        [
            "-g",
            GATEWAY,
            "--dns-forward",
            DNS,
            "-T",
            "none",
            "-U",
            "none",
        ]
        .map(String::from),
    );
    if as_root {
        v.extend(["--runas".into(), "0:0".into()]);
    }
    for (proto, flag) in [(Proto::Tcp, "-t"), (Proto::Udp, "-u")] {
        let specs: Vec<String> = forwards
            .iter()
            .filter(|f| f.proto == proto)
            .map(|f| format!("{}/{}:{}", f.host_ip, f.host_port, f.guest_port))
            .collect();
        if specs.is_empty() {
            v.extend([flag.to_string(), "none".into()]);
        }
        for s in specs {
            v.extend([flag.to_string(), s]);
        }
    }
    v.push(pid.to_string());
    v
}

/// What [`attach`] started.
pub(crate) struct Attached {
    /// pasta's record ([`ROLE_NET`]).
    pub(crate) pasta: ProcessRecord,
}

/// Connects the namespace of `vmm` (started through [`wrap`]) outward with pasta.
pub(crate) fn attach(
    tools: &Tools,
    vmm: &ProcessRecord,
    forwards: &[PortForward],
    files: &RunFiles,
) -> Result<Attached, NetnsError> {
    let pasta_err = |detail: String| NetnsError::Pasta {
        detail,
        log: files.pasta_log.clone(),
        tail: crate::qemu::tail(&files.pasta_log),
    };
    let log = std::fs::File::create(&files.pasta_log)
        .map_err(|e| pasta_err(format!("cannot create {}: {e}", files.pasta_log.display())))?;
    let out = log
        .try_clone()
        .map_err(|e| pasta_err(format!("cannot duplicate a file descriptor: {e}")))?;
    // SAFETY: geteuid has no preconditions and touches no memory.
    let as_root = unsafe { libc::geteuid() } == 0 && tools.prefix.is_empty();
    let mut cmd = tools.command(&tools.pasta);
    cmd.args(pasta_args(vmm.pid, forwards, as_root))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log);
    let spawned = process::spawn_detached(&mut cmd, ROLE_NET, |_| {})
        .map_err(|e| pasta_err(format!("cannot start {}: {e}", tools.pasta.display())))?;
    let pasta = spawned.record;
    let stop = |e: NetnsError| {
        pasta.kill_now();
        e
    };
    let deadline = Instant::now() + PASTA_READY;
    loop {
        if has_interface(vmm.pid, PASTA_IFNAME) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(stop(pasta_err(format!(
                "{PASTA_IFNAME} did not appear in process {}'s namespace within {PASTA_READY:?}",
                vmm.pid
            ))));
        }
        if let Ok(status) = spawned.exit.recv_timeout(Duration::from_millis(5)) {
            return Err(pasta_err(format!("pasta exited ({status})")));
        }
    }
    let out = tools
        .command(&tools.nsenter)
        // Keeps the caller's ids (mapped to root inside): the namespace denies setgroups.
        .args([
            "-t",
            &vmm.pid.to_string(),
            "-U",
            "-n",
            "--preserve-credentials",
            "--",
        ])
        .args(["ip", "link", "set"])
        .args([PASTA_IFNAME, "master", BRIDGE_NAME, "up"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(Attached { pasta }),
        Ok(o) => Err(stop(NetnsError::Bridge {
            pid: vmm.pid,
            detail: format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        })),
        Err(e) => Err(stop(NetnsError::Bridge {
            pid: vmm.pid,
            detail: format!("cannot run {}: {e}", tools.nsenter.display()),
        })),
    }
}

/// Whether the network namespace of `pid` has interface `name` (`/proc/<pid>/net/dev`).
pub(crate) fn has_interface(pid: u32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev")).is_ok_and(|t| {
        t.lines()
            .skip(2)
            .any(|l| l.split(':').next().is_some_and(|n| n.trim() == name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn pasta_gets_the_guest_addressing_and_the_forwards() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let f = |proto, host_port, guest_port| PortForward {
            proto,
            host_ip: lo,
            host_port,
            guest_port,
        };
        let a = pasta_args(
            42,
            &[f(Proto::Tcp, 8080, 80), f(Proto::Tcp, 2222, 22)],
            false,
        );
        let s = a.join(" ");
        assert!(
            s.starts_with("-f -q -I pasta0 -a 10.0.2.15 -n 24 -g 10.0.2.2 --dns-forward 10.0.2.3 -T none -U none "),
            "{s}"
        );
        assert!(
            s.contains("-t 127.0.0.1/8080:80 -t 127.0.0.1/2222:22 -u none 42"),
            "{s}"
        );
        assert!(!s.contains("--runas"));
        let s = pasta_args(7, &[f(Proto::Udp, 5353, 53)], true).join(" ");
        assert!(
            s.contains("--runas 0:0 -t none -u 127.0.0.1/5353:53 7"),
            "{s}"
        );
    }

    /// As an unprivileged user (`nobody`, through `setpriv`), the namespace + TAP + pasta
    /// plumbing comes up around a stand-in VMM and goes away with it. Needs root (for
    /// setpriv) and a world read-write `/dev/net/tun`; skipped with a message otherwise.
    #[test]
    fn the_plumbing_comes_up_and_goes_away_as_an_unprivileged_user() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: switching to an unprivileged user needs root");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata("/dev/net/tun")
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        if mode & 0o006 != 0o006 {
            eprintln!(
                "SKIPPED: /dev/net/tun has mode {mode:o}, not world read-write, so no \
                 unprivileged user can create a TAP here (Debian's default is 0666)"
            );
            return;
        }
        let mut tools = check().expect("unshare, nsenter, pasta and ip");
        tools.prefix = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ]
        .map(OsString::from)
        .to_vec();
        let dir = tempfile::Builder::new()
            .prefix("bnetns-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let files = RunFiles::new(dir.path());
        let mut cmd = wrap(&tools, Path::new("/bin/sleep"), &["600".into()]);
        cmd.stdin(Stdio::null());
        let holder = process::spawn_detached(&mut cmd, "vmm", |_| {}).unwrap();
        struct Kill(Vec<ProcessRecord>);
        impl Drop for Kill {
            fn drop(&mut self) {
                for p in &self.0 {
                    p.kill_now();
                }
            }
        }
        let mut guard = Kill(vec![holder.record.clone()]);
        let pid = holder.record.pid;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !has_interface(pid, BRIDGE_NAME) {
            assert!(
                Instant::now() < deadline,
                "no {BRIDGE_NAME} in the namespace"
            );
            assert!(holder.record.is_alive(), "the namespace set-up failed");
            std::thread::sleep(Duration::from_millis(5));
        }
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(uid.lines().any(|l| l.starts_with("Uid:\t65534")), "{uid}");
        let attached = attach(&tools, &holder.record, &[], &files).expect("pasta attaches");
        guard.0.push(attached.pasta.clone());
        let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
        for ifname in [TAP_NAME, BRIDGE_NAME, PASTA_IFNAME] {
            assert!(dev.contains(&format!("{ifname}:")), "{ifname}:\n{dev}");
        }
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        assert_ne!(ns, std::fs::read_link("/proc/self/ns/net").unwrap());

        // Teardown as the driver does it: the VMM ends, then pasta is told to stop.
        holder.record.kill_now();
        assert!(!holder.record.is_alive());
        attached.pasta.signal(libc::SIGTERM).unwrap();
        assert!(
            attached.pasta.wait_gone(Duration::from_secs(30)),
            "pasta stays"
        );
    }

    #[test]
    fn interfaces_are_read_from_proc() {
        assert!(has_interface(std::process::id(), "lo"));
        assert!(!has_interface(std::process::id(), "no-such-if0"));
    }
}
