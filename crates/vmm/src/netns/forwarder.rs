//! banger's DNS forwarder: one process per VM whose policy allows domains, the launching
//! program re-executed with [`ARG`] (a program launching such VMs calls
//! [`run_if_forwarder`] first thing in `main`).
//!
//! It opens its upstream sockets in the host's network namespace, then joins the VM's
//! (user and) network namespace and serves DNS on [`super::DNS`]`:53` (UDP and TCP) there:
//! the namespace set-up gives `br0` that address and keeps pasta from answering for it
//! (see `dns_intercept` in the parent module), so the guest's DNS reaches this process
//! instead of pasta's forwarder. A name the policy allows is resolved by the host's
//! resolvers (`/etc/resolv.conf`); each A/AAAA address of the answer goes into the nft
//! set of every domain entry the name matches, with a timeout ([`policy::dns_timeout`]),
//! before the answer is relayed. Other names get `REFUSED` and are never sent upstream.
//!
//! It handles one message at a time (bounded: [`dns::MAX_MESSAGE`] bytes, a rate of
//! [`RATE_PER_S`] queries, [`UPSTREAM_TIMEOUT`] upstream, [`TCP_TIMEOUT`] per TCP client):
//! a guest can slow down only its own resolution. It exits when the VMM does (a pidfd),
//! so it needs no daemon to outlive a daemon restart.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::dns::{self, Learned, Rcode, Verdict};
use super::policy::{self, Policy};

/// The first argument that makes the launching program the forwarder.
pub const ARG: &str = "__banger-dns-forwarder";
/// How long an upstream resolver may take to answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client may take to send its query and read the answer.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries per second a guest may send (a burst of twice as many); more are dropped.
pub const RATE_PER_S: u32 = 100;

/// What the forwarder of one VM needs (written as JSON into the run directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The VMM, in the namespace to serve; the forwarder exits with it.
    pub vmm_pid: u32,
    /// A named network namespace to join instead of the VMM's namespaces.
    pub named_netns: Option<PathBuf>,
    /// The VM's policy.
    pub policy: Policy,
    /// The resolvers to ask, in order.
    pub upstreams: Vec<SocketAddr>,
    /// `nft`, run inside the namespace to fill the sets.
    pub nft: PathBuf,
}

/// Runs the forwarder when this process was started as one (`argv[1] == ARG`, `argv[2]`
/// the [`Config`] file) and returns its exit code; `None` otherwise.
pub fn run_if_forwarder() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != ARG {
        return None;
    }
    let Some(config) = args.next() else {
        eprintln!("{ARG}: expected the configuration file");
        return Some(2);
    };
    Some(match run(Path::new(&config)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("banger DNS forwarder: {e}");
            1
        }
    })
}

/// The nameservers of a `resolv.conf` (port 53; at most three, as glibc), or the local
/// one when it names none.
pub fn upstreams_from(resolv_conf: &str) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (`fe80::1%eth0`) is not parsed: skipped.
            words.next()?.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .take(3)
        .collect();
    if v.is_empty() {
        v.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
    }
    v
}

fn run(config: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let cfg: Config = serde_json::from_str(&text)
        .map_err(|e| format!("{} does not parse: {e}", config.display()))?;
    let vmm = pidfd_open(cfg.vmm_pid)
        .map_err(|e| format!("the VMM (pid {}) is gone: {e}", cfg.vmm_pid))?;
    // Opened before joining the namespace: these stay in the host's.
    let up4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|e| format!("cannot open an upstream socket: {e}"))?;
    let up6 = if cfg.upstreams.iter().any(SocketAddr::is_ipv6) {
        UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).ok()
    } else {
        None
    };
    join(&cfg).map_err(|e| format!("cannot join the VM's network namespace: {e}"))?;
    let addr: IpAddr = super::DNS
        .parse()
        .map_err(|e| format!("bad DNS address: {e}"))?;
    let local = SocketAddr::new(addr, 53);
    let udp = UdpSocket::bind(local).map_err(|e| format!("cannot bind udp {local}: {e}"))?;
    let tcp = TcpListener::bind(local).map_err(|e| format!("cannot bind tcp {local}: {e}"))?;
    tcp.set_nonblocking(true)
        .map_err(|e| format!("cannot make the TCP listener non-blocking: {e}"))?;
    let mut f = Forwarder {
        cfg,
        up4,
        up6,
        bucket: Bucket::new(RATE_PER_S),
        last_log: None,
    };
    f.serve(&udp, &tcp, &vmm)
}

/// `pidfd_open(2)`: readable once the process exits.
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("bad descriptor"))?;
    // SAFETY: `fd` is a fresh descriptor this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setns(file: &File, kind: libc::c_int) -> std::io::Result<()> {
    // SAFETY: a valid namespace descriptor; this process is single-threaded here (a user
    // namespace can only be joined so).
    if unsafe { libc::setns(file.as_raw_fd(), kind) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Joins the namespace the guest's network lives in: a named one (a jailed Firecracker's,
/// in our user namespace), or the VMM's user (when not ours) and network namespaces.
fn join(cfg: &Config) -> std::io::Result<()> {
    if let Some(path) = &cfg.named_netns {
        return setns(&File::open(path)?, libc::CLONE_NEWNET);
    }
    let ns = |kind: &str| format!("/proc/{}/ns/{kind}", cfg.vmm_pid);
    let user = File::open(ns("user"))?;
    let net = File::open(ns("net"))?;
    if std::fs::read_link(ns("user"))? != std::fs::read_link("/proc/self/ns/user")? {
        setns(&user, libc::CLONE_NEWUSER)?;
    }
    setns(&net, libc::CLONE_NEWNET)
}

/// A token bucket: `rate` per second, bursts of `2 * rate`.
struct Bucket {
    rate: u32,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            rate,
            tokens: f64::from(rate) * 2.0,
            at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let cap = f64::from(self.rate) * 2.0;
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * f64::from(self.rate);
        self.tokens = (self.tokens + refill).min(cap);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Forwarder {
    cfg: Config,
    up4: UdpSocket,
    up6: Option<UdpSocket>,
    bucket: Bucket,
    last_log: Option<Instant>,
}

impl Forwarder {
    fn serve(&mut self, udp: &UdpSocket, tcp: &TcpListener, vmm: &OwnedFd) -> Result<(), String> {
        let mut buf = vec![0u8; dns::MAX_MESSAGE + 1];
        loop {
            let mut fds =
                [udp.as_raw_fd(), tcp.as_raw_fd(), vmm.as_raw_fd()].map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            // SAFETY: `fds` is a valid array of pollfd for its length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll: {e}"));
            }
            if fds[2].revents != 0 {
                return Ok(());
            }
            if fds[0].revents != 0
                && let Ok((n, from)) = udp.recv_from(&mut buf)
                && n <= dns::MAX_MESSAGE
                && self.bucket.take(Instant::now())
                && let Some(reply) = self.handle(&buf[..n])
            {
                let _ = udp.send_to(&reply, from);
            }
            if fds[1].revents != 0
                && let Ok((stream, _)) = tcp.accept()
            {
                let _ = self.serve_tcp(stream);
            }
        }
    }

    /// One length-prefixed query and its answer, then the connection is closed.
    fn serve_tcp(&mut self, mut s: TcpStream) -> std::io::Result<()> {
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(TCP_TIMEOUT))?;
        s.set_write_timeout(Some(TCP_TIMEOUT))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let len = usize::from(u16::from_be_bytes(len));
        if len > dns::MAX_MESSAGE || !self.bucket.take(Instant::now()) {
            return Ok(());
        }
        let mut msg = vec![0u8; len];
        s.read_exact(&mut msg)?;
        if let Some(reply) = self.handle(&msg) {
            let n = u16::try_from(reply.len()).map_err(std::io::Error::other)?;
            let mut out = n.to_be_bytes().to_vec();
            out.extend_from_slice(&reply);
            s.write_all(&out)?;
        }
        Ok(())
    }

    /// The answer to one query from the guest (`None`: nothing to answer).
    fn handle(&mut self, query: &[u8]) -> Option<Vec<u8>> {
        let q = match dns::parse_query(query) {
            Ok(q) => q,
            Err(_) => return dns::formerr(query),
        };
        let sets = match dns::verdict(&self.cfg.policy, q.name.as_deref()) {
            Verdict::Refuse => return Some(dns::reply_with(query, &q, Rcode::Refused)),
            Verdict::Allow(sets) => sets,
        };
        let Some((answer, learned)) = self.ask_upstream(query, &q) else {
            self.log("no upstream resolver answered");
            return Some(dns::reply_with(query, &q, Rcode::ServFail));
        };
        if let Err(e) = self.admit(&sets, &learned) {
            self.log(&format!("cannot update the ruleset: {e}"));
            return Some(dns::reply_with(query, &q, Rcode::ServFail));
        }
        Some(dns::with_id(&answer, q.id))
    }

    /// Asks each upstream resolver in turn (with an ID of ours) until one answers.
    fn ask_upstream(&self, query: &[u8], q: &dns::Question) -> Option<(Vec<u8>, Vec<Learned>)> {
        let id = random_id();
        let out = dns::with_id(query, id);
        let mut buf = vec![0u8; dns::MAX_MESSAGE + 1];
        for up in &self.cfg.upstreams {
            let sock = if up.is_ipv4() {
                &self.up4
            } else {
                match &self.up6 {
                    Some(s) => s,
                    None => continue,
                }
            };
            if sock.send_to(&out, up).is_err() {
                continue;
            }
            let deadline = Instant::now() + UPSTREAM_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
                    break;
                }
                match sock.recv_from(&mut buf) {
                    // Late answers to earlier queries have another ID: skipped.
                    Ok((n, from)) if from == *up => {
                        if let Ok(learned) = dns::parse_answer(&buf[..n], &out, q, id) {
                            return Some((buf[..n].to_vec(), learned));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        None
    }

    /// Adds `learned` to the sets of the domain entries `sets`, before the guest learns
    /// them. (An element already there keeps its timeout; packets refresh it.)
    fn admit(&self, sets: &[usize], learned: &[Learned]) -> Result<(), String> {
        let script = admit_script(sets, learned);
        if script.is_empty() {
            return Ok(());
        }
        let mut child = Command::new(&self.cfg.nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.cfg.nft.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("writing to nft: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Logs at most a line a second (a guest could otherwise fill the log).
    fn log(&mut self, line: &str) {
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_log = Some(now);
            eprintln!("banger DNS forwarder: {line}");
        }
    }
}

/// The `nft -f` script adding `learned` to the sets of the domain entries `sets`.
pub fn admit_script(sets: &[usize], learned: &[Learned]) -> String {
    let mut s = String::new();
    for &i in sets {
        for l in learned {
            s.push_str(&format!(
                "add element netdev {} {} {{ {} timeout {}s }}\n",
                policy::TABLE,
                policy::domain_set(i, l.addr.is_ipv6()),
                l.addr,
                policy::dns_timeout(l.ttl)
            ));
        }
    }
    s
}

/// A random query ID (off-path answers must guess it); 0 if the kernel has no entropy.
fn random_id() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    u16::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_resolv_conf() {
        let conf = "# comment\nsearch example\nnameserver 10.255.255.53\nnameserver ::1\n\
                    nameserver fe80::1%eth0\nnameserver bogus\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n";
        let v: Vec<String> = upstreams_from(conf).iter().map(|a| a.to_string()).collect();
        assert_eq!(v, ["10.255.255.53:53", "[::1]:53", "1.1.1.1:53"]);
        assert_eq!(upstreams_from("").len(), 1);
    }

    #[test]
    fn learnt_addresses_become_set_elements() {
        let l = |a: &str, ttl| Learned {
            addr: a.parse().unwrap(),
            ttl,
        };
        let s = admit_script(&[0, 2], &[l("192.0.2.1", 30), l("2001:db8::5", 7200)]);
        assert_eq!(
            s,
            "add element netdev banger dns0_4 { 192.0.2.1 timeout 300s }\n\
             add element netdev banger dns0_6 { 2001:db8::5 timeout 3600s }\n\
             add element netdev banger dns2_4 { 192.0.2.1 timeout 300s }\n\
             add element netdev banger dns2_6 { 2001:db8::5 timeout 3600s }\n"
        );
        assert_eq!(admit_script(&[0], &[]), "");
    }

    #[test]
    fn the_bucket_bounds_the_rate() {
        let mut b = Bucket::new(10);
        let t = Instant::now();
        let burst = (0..100).filter(|_| b.take(t)).count();
        assert_eq!(burst, 20);
        assert!(!b.take(t));
        assert!(b.take(t + Duration::from_millis(150)));
    }
}
