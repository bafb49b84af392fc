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
//! 3. With published ports, [`loopback_relay`]'s NAT rules (made in step 1): pasta
//!    splices a host connection from loopback into the namespace's `127.0.0.1`, which
//!    DNATs it to the guest from [`NAMESPACE_ADDR`] on br0; `ebtables` keeps br0's own
//!    frames from pasta (it would take them for the guest's) and pasta's ARP answers for
//!    that address from the guest.
//!
//! A jailed Firecracker (root) cannot live in a user namespace (the jailer needs real
//! root for `mknod`, `chown` and dropping privileges), so [`create_named`] makes a named
//! network namespace (`/run/netns/banger-<id>`) with the same set-up, the TAP owned by
//! the jailed uid:gid; the jailer joins it with `--netns`, pasta with `--netns <path>`
//! (root's pasta drops its capabilities before joining and cannot open another root
//! process's `/proc/<pid>/ns`), and it is deleted with the jail.
//!
//! # Invariants
//! - No privilege: everything runs as the caller's user (pasta is told `--runas 0:0` when
//!   the caller is root, since it would otherwise drop to `nobody` and lose access to
//!   root's namespace).
//! - Teardown: the namespace disappears when its last process (the VMM, pasta) exits
//!   (a named one when its file is removed, which also makes pasta exit).
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

pub mod dns;
pub mod forwarder;
pub mod policy;
mod standalone;
pub use policy::{Denials, Dest, Mode, Policy};
pub use standalone::{Plumbed, SpawnError, SpawnOptions, spawn};

/// The guest's TAP inside the namespace.
pub const TAP_NAME: &str = "tap0";
/// The bridge joining the TAP and pasta's interface.
pub const BRIDGE_NAME: &str = "br0";
/// pasta's interface inside the namespace.
pub const PASTA_IFNAME: &str = "pasta0";
/// The role of pasta's [`ProcessRecord`].
pub const ROLE_NET: &str = "net";
/// The role of the DNS forwarder's [`ProcessRecord`] ([`forwarder`]).
pub const ROLE_DNS: &str = "dns";
/// How long the DNS forwarder may take to listen.
const DNS_READY: Duration = Duration::from_secs(10);
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

/// The namespace's own address on [`BRIDGE_NAME`], used only as the source of relayed
/// loopback connections (see [`loopback_relay`]). Never the guest's gateway or DNS.
pub const NAMESPACE_ADDR: &str = "10.0.2.1";

/// The namespace set-up run inside the namespace before the VMM is exec'd. `owner`
/// makes the TAP usable by that uid:gid without privileges (a jailed Firecracker);
/// `relay` adds [`loopback_relay`]'s rules; `rules` loads a [`policy`] ruleset
/// (`nft -f FILE`) once tap0 exists, before the VMM can send anything; `dns` (`ebtables`)
/// sends the guest's DNS to banger's forwarder ([`dns_intercept`]).
fn setup_script(
    owner: Option<(u32, u32)>,
    relay: Option<&Relay<'_>>,
    rules: Option<&Rules<'_>>,
    dns: Option<&Path>,
) -> String {
    let owner = owner.map_or_else(String::new, |(u, g)| format!(" user {u} group {g}"));
    let relay = relay.map_or_else(String::new, loopback_relay);
    let dns = dns.map_or_else(String::new, dns_intercept);
    let rules = rules.map_or_else(String::new, |r| {
        format!("{} -f {}\n", quote(r.nft), quote(r.file))
    });
    format!(
        "set -e\n\
         ip link set lo up\n\
         ip tuntap add dev tap0 mode tap{owner}\n\
         ip link add br0 type bridge\n\
         ip link set tap0 master br0\n\
         ip link set tap0 up\n\
         {NO_IPV6}\
         ip link set br0 up\n\
         {rules}\
         {relay}\
         {dns}\
         exec \"$@\"\n"
    )
}

/// br0 must send nothing of its own: pasta takes the source MAC and address of every
/// frame it receives for the guest's (IPv6 router solicitations from br0 would redirect
/// the guest's traffic to the namespace until the guest spoke again).
const NO_IPV6: &str = "f=/proc/sys/net/ipv6/conf/br0/disable_ipv6; [ ! -w $f ] || echo 1 > $f\n";

/// The guest's DNS server address becomes br0's, so that the guest's queries to it reach
/// the namespace's own stack, where [`forwarder`] listens, instead of pasta. As with
/// [`loopback_relay`], `ebtables` keeps br0's frames from pasta and pasta's ARP answers
/// for that address from the guest (they race br0's). The guest's frames cross tap0's
/// ingress hook first, so the policy's rules still see them.
fn dns_intercept(ebtables: &Path) -> String {
    let ebt = quote(ebtables);
    format!(
        "ip addr add {DNS}/{GUEST_PREFIX} dev br0\n\
         {ebt} -A OUTPUT -o {PASTA_IFNAME} -j DROP\n\
         {ebt} -A INPUT -i {PASTA_IFNAME} -j DROP\n\
         {ebt} -A FORWARD -i {PASTA_IFNAME} -p ARP --arp-ip-src {DNS} -j DROP\n"
    )
}

/// A policy ruleset to load: `nft` and the file [`policy::render`]ed into.
pub(crate) struct Rules<'a> {
    nft: &'a Path,
    file: &'a Path,
}

/// `p` single-quoted for `sh` (a quote in it is dropped: these are our own paths).
fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', ""))
}

/// What [`loopback_relay`] needs.
pub(crate) struct Relay<'a> {
    iptables: &'a Path,
    ebtables: &'a Path,
    forwards: &'a [PortForward],
}

/// Published ports reached from the host's loopback. pasta (Debian 12's) splices a
/// connection whose source is loopback to the *namespace's* `127.0.0.1:<guest port>`
/// instead of sending it through its interface, and nothing listens there: the guest is
/// behind br0. So the namespace NATs that traffic to the guest:
/// - `DNAT` of `127.0.0.1:<guest port>` to `10.0.2.15:<guest port>` (TCP and UDP, each
///   published guest port), `SNAT` of loopback sources leaving on br0 to
///   [`NAMESPACE_ADDR`] (on br0), `route_localnet` so loopback-addressed packets may be
///   routed at all;
/// - pasta must never see the namespace's own frames (it would take their MAC and address
///   for the guest's), and the guest must learn br0's MAC for [`NAMESPACE_ADDR`], not
///   pasta's (pasta answers every ARP request but the guest's address): `ebtables` drops
///   br0 ↔ pasta0 and pasta's ARP replies for [`NAMESPACE_ADDR`].
///
/// Connections from other host addresses are not spliced: pasta sends them through
/// pasta0 → br0 → tap0 as before, and the guest sees their real source.
fn loopback_relay(r: &Relay<'_>) -> String {
    let (ipt, ebt) = (quote(r.iptables), quote(r.ebtables));
    let mut s = format!(
        "ip addr add {NAMESPACE_ADDR}/{GUEST_PREFIX} dev br0\n\
         echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet\n\
         echo 1 > /proc/sys/net/ipv4/conf/br0/route_localnet\n\
         {ipt} -t nat -A POSTROUTING -o br0 -s 127.0.0.0/8 -j SNAT --to-source {NAMESPACE_ADDR}\n\
         {ebt} -A OUTPUT -o {PASTA_IFNAME} -j DROP\n\
         {ebt} -A INPUT -i {PASTA_IFNAME} -j DROP\n\
         {ebt} -A FORWARD -i {PASTA_IFNAME} -p ARP --arp-ip-src {NAMESPACE_ADDR} -j DROP\n"
    );
    let mut seen = std::collections::BTreeSet::new();
    for f in r.forwards {
        let proto = match f.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        if seen.insert((proto, f.guest_port)) {
            s.push_str(&format!(
                "{ipt} -t nat -A OUTPUT -o lo -d 127.0.0.1 -p {proto} --dport {port} -j DNAT \
                 --to-destination {GUEST_ADDR}:{port}\n",
                port = f.guest_port
            ));
        }
    }
    s
}

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
    /// The policy's ruleset could not be written.
    #[error("cannot write the network policy's rules to {path}: {error}")]
    Rules {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// The policy's state could not be read from the namespace.
    #[error("cannot read the network policy's denials in process {pid}'s namespace: {detail}")]
    Denials {
        /// The VMM's pid.
        pid: u32,
        /// Why.
        detail: String,
    },
    /// A named network namespace (for a jailed Firecracker) could not be made.
    #[error("cannot set up the network namespace {path}: {detail}")]
    Named {
        /// Its path (`/run/netns/<name>`).
        path: PathBuf,
        /// The error or the command's output.
        detail: String,
    },
    /// The DNS forwarder did not start.
    #[error(
        "banger's DNS forwarder did not start: {detail}: its output ({log}) ends with:\n{tail}"
    )]
    Dns {
        /// What went wrong.
        detail: String,
        /// Its log.
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
    ip: PathBuf,
    /// For published ports (see [`loopback_relay`]); looked for only when there are any.
    iptables: Option<PathBuf>,
    ebtables: Option<PathBuf>,
    /// For a policy that filters anything (see [`policy`]).
    nft: Option<PathBuf>,
    /// Whether the guest's DNS goes to banger's [`forwarder`] (then `ebtables` is set).
    dns: bool,
    /// Run before each program (tests: `setpriv --reuid=…` to act as another user).
    prefix: Vec<OsString>,
}

impl Tools {
    /// The relay rules for `forwards`, when there are any (and the tools were checked).
    fn relay<'a>(&'a self, forwards: &'a [PortForward]) -> Option<Relay<'a>> {
        match (&self.iptables, &self.ebtables, forwards.is_empty()) {
            (Some(iptables), Some(ebtables), false) => Some(Relay {
                iptables,
                ebtables,
                forwards,
            }),
            _ => None,
        }
    }

    /// The ruleset to load from `file`, when the policy needs one (and `nft` was checked).
    fn rules<'a>(&'a self, file: Option<&'a Path>) -> Option<Rules<'a>> {
        match (&self.nft, file) {
            (Some(nft), Some(file)) => Some(Rules { nft, file }),
            _ => None,
        }
    }

    /// `ebtables`, when the guest's DNS is intercepted.
    fn dns(&self) -> Option<&Path> {
        self.ebtables.as_deref().filter(|_| self.dns)
    }

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
#[cfg(test)]
pub(crate) fn check() -> Result<Tools, NetnsError> {
    check_for(
        &[],
        &Policy {
            mode: Mode::Any,
            ..Policy::default()
        },
    )
}

/// [`check`] for a VM publishing `forwards` (which need `iptables` and `ebtables`) under
/// `policy` (which needs `nft` unless it is open).
pub(crate) fn check_for(forwards: &[PortForward], policy: &Policy) -> Result<Tools, NetnsError> {
    let find = |program: &'static str, fix: &'static str| {
        host::find_program(
            program,
            &[PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")],
        )
        .ok_or(NetnsError::Missing { program, fix })
    };
    let relay_fix = "install the iptables package: published ports are relayed from the \
                     host's loopback by NAT rules in the VM's namespace";
    let dns_fix = "install the iptables package (ebtables): the guest's DNS is sent to banger's \
                   forwarder by bridge rules in the VM's namespace when --allow names domains";
    let ebtables = |fix| find("ebtables", fix).or_else(|_| find("ebtables-nft", fix));
    let (iptables, ebtables) = if !forwards.is_empty() {
        (
            Some(find("iptables", relay_fix)?),
            Some(ebtables(relay_fix)?),
        )
    } else if policy.needs_dns() {
        (None, Some(ebtables(dns_fix)?))
    } else {
        (None, None)
    };
    let nft = if policy.is_open() {
        None
    } else {
        Some(find(
            "nft",
            "install the nftables package: the VM's network policy is enforced by nftables \
             rules in its network namespace (or use --net any without --allow/--deny)",
        )?)
    };
    let tools = Tools {
        unshare: find("unshare", "install util-linux")?,
        nsenter: find("nsenter", "install util-linux")?,
        pasta: find("pasta", "install the passt package")?,
        ip: find("ip", "install iproute2")?,
        iptables,
        ebtables,
        nft,
        dns: policy.needs_dns(),
        prefix: Vec::new(),
    };
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
/// [`TAP_NAME`] on [`BRIDGE_NAME`], filtered by the ruleset in `rules` (see
/// [`write_rules`]).
pub(crate) fn wrap(
    tools: &Tools,
    program: &Path,
    args: &[OsString],
    forwards: &[PortForward],
    rules: Option<&Path>,
) -> Command {
    let mut c = tools.command(&tools.unshare);
    c.args([
        "--user",
        "--map-root-user",
        "--net",
        "--",
        "/bin/sh",
        "-c",
        &setup_script(
            None,
            tools.relay(forwards).as_ref(),
            tools.rules(rules).as_ref(),
            tools.dns(),
        ),
    ])
    .arg("banger-netns")
    .arg(program)
    .args(args);
    c
}

/// Which namespace pasta and `nsenter` join.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ns<'a> {
    /// The user + network namespace of this process ([`wrap`]).
    Process(u32),
    /// A named network namespace, in the caller's user namespace ([`create_named`]).
    Named(&'a Path),
}

/// pasta's arguments for the namespace of `pid`.
#[cfg(test)]
pub(crate) fn pasta_args(pid: u32, forwards: &[PortForward], as_root: bool) -> Vec<String> {
    pasta_args_for(Ns::Process(pid), forwards, as_root, Mode::Host)
}

/// pasta's arguments for `ns`; the gateway reaches the host's loopback only when `mode`
/// says so ([`Mode::maps_gateway`]).
pub(crate) fn pasta_args_for(
    ns: Ns<'_>,
    forwards: &[PortForward],
    as_root: bool,
    mode: Mode,
) -> Vec<String> {
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
    if !mode.maps_gateway() {
        v.push("--no-map-gw".into());
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
    match ns {
        Ns::Process(pid) => v.push(pid.to_string()),
        // Root's pasta cannot open another root process's /proc/<pid>/ns files (it drops
        // its capabilities first); a bind-mounted namespace is a plain file.
        Ns::Named(path) => v.extend(["--netns".into(), path.to_string_lossy().into_owned()]),
    }
    v
}

/// What [`attach`] started.
pub(crate) struct Attached {
    /// pasta's record ([`ROLE_NET`]).
    pub(crate) pasta: ProcessRecord,
    /// The DNS forwarder's ([`ROLE_DNS`]), when the policy allows domains.
    pub(crate) dns: Option<ProcessRecord>,
}

impl Attached {
    /// Every process started.
    pub(crate) fn records(&self) -> Vec<ProcessRecord> {
        std::iter::once(self.pasta.clone())
            .chain(self.dns.clone())
            .collect()
    }
}

/// Connects the namespace of `vmm` (started through [`wrap`]) outward with pasta.
pub(crate) fn attach(
    tools: &Tools,
    vmm: &ProcessRecord,
    forwards: &[PortForward],
    policy: &Policy,
    files: &RunFiles,
) -> Result<Attached, NetnsError> {
    attach_to(tools, Ns::Process(vmm.pid), vmm, forwards, policy, files)
}

/// Connects `ns`, where `vmm` runs, outward with pasta.
pub(crate) fn attach_to(
    tools: &Tools,
    ns: Ns<'_>,
    vmm: &ProcessRecord,
    forwards: &[PortForward],
    policy: &Policy,
    files: &RunFiles,
) -> Result<Attached, NetnsError> {
    let mode = policy.mode;
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
    cmd.args(pasta_args_for(ns, forwards, as_root, mode))
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
    let mut nsenter = tools.command(&tools.nsenter);
    match ns {
        // Keeps the caller's ids (mapped to root inside): the namespace denies setgroups.
        Ns::Process(pid) => nsenter.args([
            "-t",
            &pid.to_string(),
            "-U",
            "-n",
            "--preserve-credentials",
            "--",
        ]),
        Ns::Named(path) => nsenter.arg(net_flag(path)).arg("--"),
    };
    let out = nsenter
        .args(["ip", "link", "set"])
        .args([PASTA_IFNAME, "master", BRIDGE_NAME, "up"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let dns = match tools.dns() {
                Some(_) => Some(start_forwarder(tools, ns, vmm, policy, files).map_err(stop)?),
                None => None,
            };
            Ok(Attached { pasta, dns })
        }
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

/// Starts the DNS [`forwarder`] for the namespace `ns` of `vmm` (this program
/// re-executed) and waits until it listens there.
fn start_forwarder(
    tools: &Tools,
    ns: Ns<'_>,
    vmm: &ProcessRecord,
    policy: &Policy,
    files: &RunFiles,
) -> Result<ProcessRecord, NetnsError> {
    let err = |detail: String| NetnsError::Dns {
        detail,
        log: files.dns_log.clone(),
        tail: crate::qemu::tail(&files.dns_log),
    };
    let cfg = forwarder::Config {
        vmm_pid: vmm.pid,
        named_netns: match ns {
            Ns::Named(p) => Some(p.to_path_buf()),
            Ns::Process(_) => None,
        },
        policy: policy.clone(),
        upstreams: forwarder::upstreams_from(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        ),
        nft: tools
            .nft
            .clone()
            .ok_or_else(|| err("nft was not checked".into()))?,
    };
    let json = serde_json::to_string(&cfg).map_err(|e| err(e.to_string()))?;
    std::fs::write(&files.dns_config, json)
        .map_err(|e| err(format!("cannot write {}: {e}", files.dns_config.display())))?;
    let exe = std::env::current_exe().map_err(|e| {
        err(format!(
            "cannot find this program to run it as the forwarder: {e}"
        ))
    })?;
    let log = std::fs::File::create(&files.dns_log)
        .map_err(|e| err(format!("cannot create {}: {e}", files.dns_log.display())))?;
    let mut cmd = tools.command(&exe);
    cmd.arg(forwarder::ARG)
        .arg(&files.dns_config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let spawned = process::spawn_detached(&mut cmd, ROLE_DNS, |_| {})
        .map_err(|e| err(format!("cannot start {}: {e}", exe.display())))?;
    let deadline = Instant::now() + DNS_READY;
    while !listens_on_dns(vmm.pid) {
        if Instant::now() >= deadline {
            spawned.record.kill_now();
            return Err(err(format!("it did not listen within {DNS_READY:?}")));
        }
        if let Ok(status) = spawned.exit.recv_timeout(Duration::from_millis(5)) {
            return Err(err(format!("it exited ({status})")));
        }
    }
    Ok(spawned.record)
}

/// Whether a UDP socket is bound to [`DNS`]`:53` in the network namespace of `pid`.
fn listens_on_dns(pid: u32) -> bool {
    // /proc/net/udp writes an IPv4 address as the hex of its in-memory (big-endian) u32
    // read as a native (little-endian) one: 10.0.2.3 → 0302000A.
    let want = DNS
        .parse::<std::net::Ipv4Addr>()
        .map(|a| format!("{:08X}:0035", u32::from_le_bytes(a.octets())))
        .unwrap_or_default();
    std::fs::read_to_string(format!("/proc/{pid}/net/udp")).is_ok_and(|t| {
        t.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(&want))
    })
}

/// Where `ip netns` keeps the namespace `name`.
pub(crate) fn named_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

fn net_flag(path: &Path) -> OsString {
    let mut f = OsString::from("--net=");
    f.push(path);
    f
}

/// Makes the named network namespace `name` (root only) with [`TAP_NAME`] on
/// [`BRIDGE_NAME`], the TAP owned by `owner`. It lives until [`delete_named`].
pub(crate) fn create_named(
    tools: &Tools,
    name: &str,
    owner: (u32, u32),
    forwards: &[PortForward],
    rules: Option<&Path>,
) -> Result<PathBuf, NetnsError> {
    let path = named_path(name);
    // A stale one of the same VM (a crash before cleanup) goes first.
    delete_named(&path);
    let run = |cmd: &mut Command| -> Result<(), NetnsError> {
        let err = |detail: String| NetnsError::Named {
            path: path.clone(),
            detail,
        };
        match cmd.stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(err(format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ))),
            Err(e) => Err(err(format!("cannot run {:?}: {e}", cmd.get_program()))),
        }
    };
    run(Command::new(&tools.ip).args(["netns", "add", name]))?;
    let made = run(Command::new(&tools.nsenter).arg(net_flag(&path)).args([
        "--",
        "/bin/sh",
        "-c",
        &setup_script(
            Some(owner),
            tools.relay(forwards).as_ref(),
            tools.rules(rules).as_ref(),
            tools.dns(),
        ),
        "banger-netns",
        "true",
    ]));
    if made.is_err() {
        delete_named(&path);
    }
    made.map(|()| path)
}

/// Removes a namespace made by [`create_named`] (it ends once no process is in it; pasta
/// exits when its file goes). Missing is fine.
pub(crate) fn delete_named(path: &Path) {
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
        // SAFETY: a valid NUL-terminated path; MNT_DETACH needs nothing else.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_file(path);
}

/// Renders `policy`'s ruleset (with this host's addresses and the domains resolved now)
/// into `files.net_rules`; `None` when the policy filters nothing.
pub(crate) fn write_rules(
    policy: &Policy,
    forwards: &[PortForward],
    files: &RunFiles,
) -> Result<Option<PathBuf>, NetnsError> {
    if policy.is_open() {
        return Ok(None);
    }
    let text = policy::render(policy, &policy::gather(policy, forwards));
    std::fs::write(&files.net_rules, text).map_err(|e| NetnsError::Rules {
        path: files.net_rules.clone(),
        error: e.to_string(),
    })?;
    Ok(Some(files.net_rules.clone()))
}

/// What the policy of the VM whose VMM (in its network namespace) is `pid` denied so far.
/// A VM without a ruleset (an open policy) has none.
pub fn read_denials(pid: u32) -> Result<Denials, NetnsError> {
    let err = |detail: String| NetnsError::Denials { pid, detail };
    let find = |p: &str| {
        host::find_program(p, &[PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
            .ok_or_else(|| err(format!("{p} was not found on PATH")))
    };
    let (nsenter, nft) = (find("nsenter")?, find("nft")?);
    let ns_of = |p: &str| std::fs::read_link(p).ok();
    let same_userns = ns_of(&format!("/proc/{pid}/ns/user")) == ns_of("/proc/self/ns/user");
    let mut cmd = Command::new(nsenter);
    cmd.args(["-t", &pid.to_string(), "-n"]);
    if !same_userns {
        cmd.args(["-U", "--preserve-credentials"]);
    }
    let out = cmd
        .arg("--")
        .arg(nft)
        .args(["-j", "list", "table", "netdev", policy::TABLE])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot run nsenter: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // No table: the policy filtered nothing.
        if stderr.contains("No such file or directory") {
            return Ok(Denials::default());
        }
        return Err(err(format!("{}: {}", out.status, stderr.trim())));
    }
    policy::parse_denials(&String::from_utf8_lossy(&out.stdout)).map_err(err)
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
        let mut cmd = wrap(&tools, Path::new("/bin/sleep"), &["600".into()], &[], None);
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
        let attached = attach(
            &tools,
            &holder.record,
            &[],
            &Policy {
                mode: Mode::Host,
                ..Policy::default()
            },
            &files,
        )
        .expect("pasta attaches");
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
    fn published_ports_get_the_loopback_relay() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let f = |proto, host_port, guest_port| PortForward {
            proto,
            host_ip: lo,
            host_port,
            guest_port,
        };
        let forwards = [
            f(Proto::Tcp, 8080, 80),
            f(Proto::Tcp, 8081, 80),
            f(Proto::Udp, 5353, 53),
        ];
        let relay = Relay {
            iptables: Path::new("/usr/sbin/iptables"),
            ebtables: Path::new("/usr/sbin/ebtables"),
            forwards: &forwards,
        };
        let s = setup_script(Some((123, 100)), Some(&relay), None, None);
        assert!(
            s.contains("ip tuntap add dev tap0 mode tap user 123 group 100\n"),
            "{s}"
        );
        assert!(s.contains("ip addr add 10.0.2.1/24 dev br0\n"), "{s}");
        let dnat = "'/usr/sbin/iptables' -t nat -A OUTPUT -o lo -d 127.0.0.1 -p tcp --dport 80 \
                    -j DNAT --to-destination 10.0.2.15:80\n";
        assert_eq!(s.matches(dnat).count(), 1, "one rule per guest port:\n{s}");
        assert!(s.contains("-p udp --dport 53 -j DNAT --to-destination 10.0.2.15:53\n"));
        assert!(s.contains("-j SNAT --to-source 10.0.2.1\n"), "{s}");
        assert!(
            s.contains("'/usr/sbin/ebtables' -A OUTPUT -o pasta0 -j DROP\n"),
            "{s}"
        );
        assert!(s.contains("--arp-ip-src 10.0.2.1 -j DROP\n"), "{s}");
        assert!(s.ends_with("exec \"$@\"\n"), "{s}");
        // Without published ports: no address, no rules.
        let bare = setup_script(None, None, None, None);
        assert!(
            !bare.contains("10.0.2.1") && !bare.contains("tables"),
            "{bare}"
        );
        assert!(bare.contains("disable_ipv6"), "{bare}");
    }

    #[test]
    fn dns_goes_to_the_namespace_when_domains_are_allowed() {
        let s = setup_script(None, None, None, Some(Path::new("/usr/sbin/ebtables")));
        assert!(s.contains("ip addr add 10.0.2.3/24 dev br0\n"), "{s}");
        assert!(s.contains("--arp-ip-src 10.0.2.3 -j DROP\n"), "{s}");
        assert!(s.contains("-A OUTPUT -o pasta0 -j DROP\n"), "{s}");
        assert!(!s.contains("10.0.2.1"), "{s}");
        assert!(!listens_on_dns(std::process::id()));
    }

    #[test]
    fn interfaces_are_read_from_proc() {
        assert!(has_interface(std::process::id(), "lo"));
        assert!(!has_interface(std::process::id(), "no-such-if0"));
    }
}
