//! What a guest may reach, enforced in its network namespace (outside the guest, so root
//! in the guest cannot widen it): a typed [`Policy`] becomes an nftables ruleset
//! ([`render`]) loaded on `tap0` before the VMM runs.
//!
//! # Why `netdev` hooks on tap0
//! The guest's frames cross `br0` to pasta without touching the namespace's IP stack, so
//! `inet` hooks never see them, and this kernel family (like many) has no `reject` in the
//! `bridge` family. The `netdev` family's ingress hook on `tap0` sees every frame the guest
//! sends, before the bridge, and can `reject` there (a TCP reset or an ICMP
//! administratively-prohibited, sent straight back on tap0): denied connections fail at
//! once instead of timing out. There is no connection tracking at that hook, so replies
//! of published ports are recognised by the egress hook on tap0 recording each inbound
//! flow (peer address, peer port, guest port) in a set with a timeout.
//!
//! # Order of the rules (first match wins)
//! 1. IPv6 neighbour discovery (pasta answers it), DNS to pasta's forwarder (10.0.2.3:53),
//!    replies of published ports;
//! 2. `--deny` entries;
//! 3. the gateway (10.0.2.2, the host's loopback) in `host` and `any` modes;
//! 4. `--allow` entries given as addresses or CIDRs (the user named them: even private
//!    ones are reachable);
//! 5. the mode's baseline: in `public` and `host`, private, CGNAT, ULA, link-local,
//!    multicast and reserved ranges, the gateway and the host's own addresses;
//! 6. `--allow` entries given as domains (and `*.domain`): the addresses banger's DNS
//!    forwarder ([`super::forwarder`]) returned for them, in one set per entry
//!    ([`domain_set`]; after the baseline, so a name resolving to a private address gains
//!    nothing). `--deny` domains use the addresses resolved at launch;
//! 7. with any `--allow`: everything else is denied; otherwise accepted.
//!
//! Every denial records its destination in the `denied4`/`denied6` sets (timeout
//! [`DENIED_TIMEOUT_S`]), TCP and UDP ones with their port in `denied_ports4`/`6`, and
//! counts in the `denied` counter: [`super::read_denials`] reads them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::config::{PortForward, Proto};

/// The guest's network scope (a VM without a network has no policy: `NetConfig::None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The internet and DNS; not the host, not private or link-local ranges.
    #[default]
    Public,
    /// [`Mode::Public`] plus the host's loopback at the gateway address.
    Host,
    /// Whatever the host itself reaches.
    Any,
}

impl Mode {
    /// `public`, `host` or `any`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Public => "public",
            Mode::Host => "host",
            Mode::Any => "any",
        }
    }

    /// Whether pasta maps the gateway address to the host's loopback.
    pub fn maps_gateway(self) -> bool {
        matches!(self, Mode::Host | Mode::Any)
    }
}

/// An address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    /// The address (host bits may be set; nft masks them).
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", masked(self.addr, self.prefix), self.prefix)
        }
    }
}

/// `addr` with the bits past `prefix` cleared (nft refuses set host bits).
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// What a `--allow`/`--deny` entry names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// An address or block.
    Net(Cidr),
    /// A domain name (lowercase, no trailing dot).
    Domain(String),
    /// `*.domain`: any name under it (needs banger's DNS forwarder; see the crate README).
    Wildcard(String),
}

/// One `--allow`/`--deny` entry: `DEST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dest {
    /// What it names.
    pub target: Target,
    /// Only this port (TCP and UDP), or every port.
    pub port: Option<u16>,
}

/// Why a `DEST` did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{spec:?} is not a destination ({why}): use a domain (example.org, *.example.org), an IP \
     address or a CIDR, with an optional :PORT ([2001:db8::1]:443 for IPv6 with a port)"
)]
pub struct DestError {
    /// The entry.
    pub spec: String,
    /// What is wrong with it.
    pub why: String,
}

impl std::str::FromStr for Dest {
    type Err = DestError;

    fn from_str(spec: &str) -> Result<Dest, DestError> {
        let err = |why: &str| DestError {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let (host, port) = split_port(spec).map_err(|w| err(&w))?;
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(err(&format!("port {p:?} is not in 1..65535"))),
                Ok(n) => Some(n),
            },
        };
        Ok(Dest {
            target: parse_target(host).map_err(|w| err(&w))?,
            port,
        })
    }
}

/// `host[:port]`, `[v6]:port`, or a bare IPv6 address / CIDR (whose colons are not a port).
fn split_port(spec: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("an unclosed [")?;
        return match after {
            "" => Ok((host, None)),
            a => match a.strip_prefix(':') {
                Some(p) => Ok((host, Some(p))),
                None => Err(format!("{a:?} after ]")),
            },
        };
    }
    match spec.matches(':').count() {
        0 => Ok((spec, None)),
        1 => {
            let (h, p) = spec.split_once(':').ok_or("unreachable")?;
            Ok((h, Some(p)))
        }
        _ => Ok((spec, None)),
    }
}

fn parse_target(host: &str) -> Result<Target, String> {
    if host.is_empty() {
        return Err("it is empty".into());
    }
    if let Some((a, p)) = host.split_once('/') {
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let full = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p.parse::<u8>() {
            Ok(n) if n <= full => n,
            _ => return Err(format!("prefix {p:?} is not in 0..{full}")),
        };
        return Ok(Target::Net(Cidr { addr, prefix }));
    }
    if let Ok(addr) = host.parse::<IpAddr>() {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        return Ok(Target::Net(Cidr { addr, prefix }));
    }
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    match lower.strip_prefix("*.") {
        Some(d) => check_domain(d).map(|()| Target::Wildcard(d.to_string())),
        None => check_domain(&lower).map(|()| Target::Domain(lower)),
    }
}

/// A DNS name of letters, digits and hyphens (and `_`), labels of 1..63, 253 at most.
fn check_domain(d: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if d.len() > 253 || !d.contains('.') || !d.split('.').all(label_ok) {
        return Err(format!("{d:?} is not a domain name"));
    }
    Ok(())
}

/// What a guest may reach.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Policy {
    /// The scope.
    pub mode: Mode,
    /// With any entry, egress is denied except to these (and DNS).
    #[serde(default)]
    pub allow: Vec<Dest>,
    /// Removed from whatever the rest allows.
    #[serde(default)]
    pub deny: Vec<Dest>,
}

impl Policy {
    /// The domain names resolved at launch: those of `--deny` entries (not wildcards).
    /// `--allow` domains are learnt by the DNS forwarder as the guest resolves them.
    pub fn domains(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .deny
            .iter()
            .filter_map(|d| match &d.target {
                Target::Domain(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether the guest's DNS goes through banger's forwarder: any `--allow` domain.
    pub fn needs_dns(&self) -> bool {
        domain_allows(self).next().is_some()
    }

    /// Whether the ruleset would accept everything (then none is loaded and `nft` is not
    /// needed).
    pub fn is_open(&self) -> bool {
        self.mode == Mode::Any && self.allow.is_empty() && self.deny.is_empty()
    }
}

/// The `--allow` entries naming domains (and wildcards), in order: the `i`-th has the
/// sets [`domain_set`]`(i, …)` that the DNS forwarder fills.
pub fn domain_allows(policy: &Policy) -> impl Iterator<Item = &Dest> {
    policy
        .allow
        .iter()
        .filter(|d| !matches!(d.target, Target::Net(_)))
}

/// The set holding the addresses learnt for the `i`-th domain entry ([`domain_allows`]).
pub fn domain_set(i: usize, v6: bool) -> String {
    format!("dns{i}_{}", if v6 { 6 } else { 4 })
}

/// An address learnt from an answer stays reachable for its TTL, at least this long (a
/// TTL of 0 must still let the connection that follows start) …
pub const DNS_MIN_TIMEOUT_S: u32 = 300;
/// … and at most this long; every packet to it refreshes it to this (there is no
/// connection tracking at the hook: a long download must not be cut).
pub const DNS_MAX_TIMEOUT_S: u32 = 3600;

/// How long an address with `ttl` stays in its set.
pub fn dns_timeout(ttl: u32) -> u32 {
    ttl.clamp(DNS_MIN_TIMEOUT_S, DNS_MAX_TIMEOUT_S)
}

/// Ranges unreachable in `public` and `host` (RFC 6890 special-purpose blocks a sandbox
/// has no business reaching: private, CGNAT, loopback, link-local incl. cloud metadata,
/// multicast, reserved, broadcast; ULA, link-local and multicast for IPv6).
pub const BASELINE_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
/// See [`BASELINE_V4`].
pub const BASELINE_V6: &[&str] = &[
    "::/127",
    "::ffff:0:0/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// How long a denied destination stays in the `denied4`/`denied6` sets, in seconds.
pub const DENIED_TIMEOUT_S: u32 = 3600;
/// The nft table's name (family `netdev`).
pub const TABLE: &str = "banger";

/// Everything [`render`] needs besides the policy.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The host's own addresses (denied by the baseline).
    pub host_addrs: Vec<IpAddr>,
    /// The addresses resolved for each domain of the policy.
    pub resolved: BTreeMap<String, Vec<IpAddr>>,
    /// Published ports (their replies leave the guest).
    pub forwards: Vec<PortForward>,
}

/// The nftables ruleset enforcing `policy` on [`super::TAP_NAME`] (for `nft -f`).
pub fn render(policy: &Policy, facts: &Facts) -> String {
    let tap = super::TAP_NAME;
    let mut s = format!("table netdev {TABLE} {{\n");
    for v in ["4", "6"] {
        let ty = if v == "4" { "ipv4_addr" } else { "ipv6_addr" };
        let _ = writeln!(
            s,
            "\tset denied{v} {{ type {ty}; size 4096; flags dynamic,timeout; timeout {DENIED_TIMEOUT_S}s; }}"
        );
        let _ = writeln!(
            s,
            "\tset denied_ports{v} {{ type {ty} . inet_proto . inet_service; size 4096; flags dynamic,timeout; timeout {DENIED_TIMEOUT_S}s; }}"
        );
        for proto in ["tcp", "udp"] {
            let _ = writeln!(
                s,
                "\tset inbound_{proto}{v} {{ type {ty} . inet_service . inet_service; size 65536; flags dynamic,timeout; timeout 600s; }}"
            );
        }
    }
    for (i, _) in domain_allows(policy).enumerate() {
        for (v6, ty) in [(false, "ipv4_addr"), (true, "ipv6_addr")] {
            let _ = writeln!(
                s,
                "\tset {} {{ type {ty}; size 4096; flags dynamic,timeout; timeout {DNS_MAX_TIMEOUT_S}s; }}",
                domain_set(i, v6)
            );
        }
    }
    s.push_str("\tcounter denied { }\n");
    render_to_guest(&mut s, &facts.forwards);
    let _ = writeln!(
        s,
        "\tchain from_guest {{\n\t\ttype filter hook ingress device \"{tap}\" priority 0; policy accept;"
    );
    let rule = |s: &mut String, r: &str| {
        let _ = writeln!(s, "\t\t{r}");
    };
    rule(
        &mut s,
        "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept",
    );
    rule(
        &mut s,
        &format!(
            "ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 accept",
            super::DNS
        ),
    );
    for v in ["", "6"] {
        for proto in ["tcp", "udp"] {
            rule(
                &mut s,
                &format!(
                    "meta l4proto {proto} ip{v} daddr . {proto} dport . {proto} sport @inbound_{proto}{} accept",
                    if v.is_empty() { "4" } else { "6" }
                ),
            );
        }
    }
    for d in &policy.deny {
        for r in dest_rules(d, facts, "goto deny") {
            rule(&mut s, &r);
        }
    }
    if policy.mode.maps_gateway() {
        rule(&mut s, &format!("ip daddr {} accept", super::GATEWAY));
    }
    for d in policy
        .allow
        .iter()
        .filter(|d| matches!(d.target, Target::Net(_)))
    {
        for r in dest_rules(d, facts, "accept") {
            rule(&mut s, &r);
        }
    }
    if policy.mode != Mode::Any {
        rule(
            &mut s,
            &format!("ip daddr {{ {} }} goto deny", BASELINE_V4.join(", ")),
        );
        rule(
            &mut s,
            &format!("ip6 daddr {{ {} }} goto deny", BASELINE_V6.join(", ")),
        );
        for (v, addrs) in split_families(&facts.host_addrs) {
            rule(&mut s, &format!("ip{v} daddr {{ {addrs} }} goto deny"));
        }
    }
    for (i, d) in domain_allows(policy).enumerate() {
        for r in learnt_rules(i, d.port) {
            rule(&mut s, &r);
        }
    }
    if !policy.allow.is_empty() {
        // IP only: ARP must still find the gateway and the DNS forwarder.
        rule(&mut s, "meta protocol { ip, ip6 } goto deny");
    }
    s.push_str("\t}\n");
    s.push_str(
        "\tchain deny {\n\
         \t\tmeta protocol ip update @denied4 { ip daddr }\n\
         \t\tmeta protocol ip6 update @denied6 { ip6 daddr }\n\
         \t\tmeta protocol ip meta l4proto { tcp, udp } update @denied_ports4 { ip daddr . meta l4proto . th dport }\n\
         \t\tmeta protocol ip6 meta l4proto { tcp, udp } update @denied_ports6 { ip6 daddr . meta l4proto . th dport }\n\
         \t\tcounter name denied\n\
         \t\tmeta l4proto tcp reject with tcp reset\n\
         \t\treject with icmpx type admin-prohibited\n\
         \t}\n}\n",
    );
    s
}

/// The egress chain recording inbound flows to published ports (see the module docs).
fn render_to_guest(s: &mut String, forwards: &[PortForward]) {
    let _ = writeln!(
        s,
        "\tchain to_guest {{\n\t\ttype filter hook egress device \"{}\" priority 0; policy accept;",
        super::TAP_NAME
    );
    for (proto, name) in [(Proto::Tcp, "tcp"), (Proto::Udp, "udp")] {
        let mut ports: Vec<u16> = forwards
            .iter()
            .filter(|f| f.proto == proto)
            .map(|f| f.guest_port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() {
            continue;
        }
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        for (v, n) in [("", "4"), ("6", "6")] {
            let _ = writeln!(
                s,
                "\t\tmeta l4proto {name} {name} dport {{ {list} }} update @inbound_{name}{n} {{ ip{v} saddr . {name} sport . {name} dport }}"
            );
        }
    }
    s.push_str("\t}\n");
}

/// `("", "a, b")` for IPv4 and `("6", "c")` for IPv6, omitting an empty family.
fn split_families(addrs: &[IpAddr]) -> Vec<(&'static str, String)> {
    let join = |v4: bool| {
        let mut v: Vec<String> = addrs
            .iter()
            .filter(|a| a.is_ipv4() == v4)
            .map(IpAddr::to_string)
            .collect();
        v.sort();
        v.dedup();
        v.join(", ")
    };
    [("", join(true)), ("6", join(false))]
        .into_iter()
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

/// The rules accepting what the DNS forwarder learnt for the `i`-th domain entry (on
/// `port` only, if given); each packet refreshes its address's timeout.
fn learnt_rules(i: usize, port: Option<u16>) -> Vec<String> {
    let port = port.map_or_else(String::new, |p| {
        format!(" meta l4proto {{ tcp, udp }} th dport {p}")
    });
    [(false, ""), (true, "6")]
        .iter()
        .map(|(v6, v)| {
            let set = domain_set(i, *v6);
            format!("ip{v} daddr @{set}{port} update @{set} {{ ip{v} daddr }} accept")
        })
        .collect()
}

/// The rules matching `d` (one per address family it has addresses in), ending in
/// `verdict`. A domain that resolved to nothing (or a wildcard, whose addresses only the
/// DNS forwarder learns) matches nothing here.
fn dest_rules(d: &Dest, facts: &Facts, verdict: &str) -> Vec<String> {
    let addrs: Vec<String> = match &d.target {
        Target::Net(c) => vec![c.to_string()],
        Target::Domain(n) => facts
            .resolved
            .get(n)
            .map(|v| v.iter().map(IpAddr::to_string).collect())
            .unwrap_or_default(),
        Target::Wildcard(_) => Vec::new(),
    };
    let port = d.port.map_or_else(String::new, |p| {
        format!(" meta l4proto {{ tcp, udp }} th dport {p}")
    });
    let mut out = Vec::new();
    for v6 in [false, true] {
        let mut fam: Vec<&str> = addrs
            .iter()
            .filter(|a| a.contains(':') == v6)
            .map(String::as_str)
            .collect();
        fam.sort_unstable();
        fam.dedup();
        if fam.is_empty() {
            continue;
        }
        let v = if v6 { "6" } else { "" };
        out.push(format!(
            "ip{v} daddr {{ {} }}{port} {verdict}",
            fam.join(", ")
        ));
    }
    out
}

/// The host's own addresses (every interface's, loopback excluded: the baseline covers it).
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below by freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.retain(|a| !a.is_loopback());
    out.sort();
    out.dedup();
    out
}

/// Resolves each domain of `policy` with the host's resolver (unresolvable: no addresses,
/// so an allow rule reaches nothing and a deny rule denies nothing more).
pub fn resolve(policy: &Policy) -> BTreeMap<String, Vec<IpAddr>> {
    use std::net::ToSocketAddrs;
    policy
        .domains()
        .into_iter()
        .map(|d| {
            let mut addrs: Vec<IpAddr> = (d, 0u16)
                .to_socket_addrs()
                .map(|it| it.map(|sa| sa.ip()).collect())
                .unwrap_or_default();
            addrs.sort();
            addrs.dedup();
            (d.to_string(), addrs)
        })
        .collect()
}

/// The facts for `policy` on this host, now.
pub fn gather(policy: &Policy, forwards: &[PortForward]) -> Facts {
    Facts {
        host_addrs: if policy.mode == Mode::Any {
            Vec::new()
        } else {
            host_addresses()
        },
        resolved: resolve(policy),
        forwards: forwards.to_vec(),
    }
}

/// What the ruleset denied so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denials {
    /// Denied packets.
    pub packets: u64,
    /// Destinations denied within [`DENIED_TIMEOUT_S`], sorted.
    pub recent: Vec<IpAddr>,
    /// The same with ports, most recent first: a TCP/UDP destination per port, anything
    /// else per address.
    pub entries: Vec<Denied>,
}

/// One denied destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denied {
    /// The address.
    pub addr: IpAddr,
    /// `tcp` or `udp` (none: another protocol, or only the address is known).
    pub proto: Option<String>,
    /// The destination port.
    pub port: Option<u16>,
    /// Seconds since the last denial to it (each denial refreshes the set element).
    pub seconds_ago: Option<u64>,
}

/// `(value, seconds since the last denial)` of a set element of the JSON output.
fn element(e: &serde_json::Value) -> (&serde_json::Value, Option<u64>) {
    // An element with a timeout is `{"elem": {"val": …, "expires": …}}`.
    match e.get("elem") {
        Some(inner) => (
            &inner["val"],
            inner["expires"]
                .as_u64()
                .map(|x| u64::from(DENIED_TIMEOUT_S).saturating_sub(x)),
        ),
        None => (e, None),
    }
}

/// A `[addr, proto, port]` concatenation (`proto` a name or a number).
fn port_entry(val: &serde_json::Value, ago: Option<u64>) -> Option<Denied> {
    let parts = val.get("concat")?.as_array()?;
    let [addr, proto, port] = parts.as_slice() else {
        return None;
    };
    let proto = match proto {
        serde_json::Value::String(p) if matches!(p.as_str(), "tcp" | "udp") => p.clone(),
        serde_json::Value::Number(n) => match n.as_u64()? {
            6 => "tcp".into(),
            17 => "udp".into(),
            _ => return None,
        },
        _ => return None,
    };
    Some(Denied {
        addr: addr.as_str()?.parse().ok()?,
        proto: Some(proto),
        port: u16::try_from(port.as_u64()?).ok(),
        seconds_ago: ago,
    })
}

/// Reads [`Denials`] from `nft -j list table netdev banger`'s output.
pub fn parse_denials(json: &str) -> Result<Denials, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("nft's JSON does not parse: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or("nft's JSON has no `nftables` list")?;
    let mut d = Denials::default();
    let mut by_addr = Vec::new();
    for item in items {
        if let Some(c) = item.get("counter").filter(|c| c["name"] == "denied") {
            d.packets = c["packets"].as_u64().unwrap_or(0);
        }
        let Some(set) = item.get("set") else { continue };
        let ports = set["name"] == "denied_ports4" || set["name"] == "denied_ports6";
        if !ports && set["name"] != "denied4" && set["name"] != "denied6" {
            continue;
        }
        for e in set["elem"].as_array().into_iter().flatten() {
            let (val, ago) = element(e);
            if ports {
                d.entries.extend(port_entry(val, ago));
            } else if let Some(ip) = val.as_str().and_then(|t| t.parse().ok()) {
                d.recent.push(ip);
                by_addr.push((ip, ago));
            }
        }
    }
    // Addresses denied only for other protocols (ICMP, …) are listed on their own.
    for (addr, ago) in by_addr {
        if !d.entries.iter().any(|e| e.addr == addr) {
            d.entries.push(Denied {
                addr,
                proto: None,
                port: None,
                seconds_ago: ago,
            });
        }
    }
    d.entries
        .sort_by_key(|e| (e.seconds_ago.unwrap_or(u64::MAX), e.addr, e.port));
    d.recent.sort();
    d.recent.dedup();
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares `got` with `testdata/NAME` (`BLESS=1` rewrites it; review the diff).
    fn golden(name: &str, got: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/netns/testdata")
            .join(name);
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&path, got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            got, want,
            "{name} changed (BLESS=1 rewrites it); got:\n{got}"
        );
    }

    fn dest(s: &str) -> Dest {
        s.parse().unwrap()
    }

    #[test]
    fn destinations_parse() {
        let d = dest("Example.ORG.");
        assert_eq!(d.target, Target::Domain("example.org".into()));
        assert_eq!(d.port, None);
        let d = dest("*.example.org:443");
        assert_eq!(d.target, Target::Wildcard("example.org".into()));
        assert_eq!(d.port, Some(443));
        let d = dest("10.1.2.3/8");
        assert_eq!(
            d.target.clone(),
            Target::Net(Cidr {
                addr: "10.1.2.3".parse().unwrap(),
                prefix: 8
            })
        );
        let Target::Net(c) = d.target else { panic!() };
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert_eq!(dest("1.2.3.4:53").port, Some(53));
        assert_eq!(dest("2001:db8::1").port, None);
        assert_eq!(dest("[2001:db8::1]:443").port, Some(443));
        assert_eq!(dest("2001:db8::/32").to_owned().port, None);
        for bad in [
            "",
            ":80",
            "example.org:0",
            "example.org:99999",
            "localhost",
            "a..b",
            "-a.b",
            "1.2.3.4/33",
            "::/129",
            "[::1",
            "[::1]x",
            "ex ample.org",
            "exa$mple.org",
            "1.2.3.4:x",
            "*.",
            "*.com.-",
        ] {
            assert!(bad.parse::<Dest>().is_err(), "{bad:?} parsed");
        }
        let long = format!("{}.org", "a".repeat(64));
        assert!(long.parse::<Dest>().is_err());
    }

    #[test]
    fn public_ruleset_golden() {
        let policy = Policy::default();
        let facts = Facts {
            host_addrs: vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()],
            resolved: BTreeMap::new(),
            forwards: vec![PortForward {
                proto: Proto::Tcp,
                host_ip: "127.0.0.1".parse().unwrap(),
                host_port: 8080,
                guest_port: 80,
            }],
        };
        golden("public.nft", &render(&policy, &facts));
    }

    #[test]
    fn allow_list_ruleset_golden() {
        let policy = Policy {
            mode: Mode::Host,
            allow: vec![
                dest("deb.example.org"),
                dest("10.200.0.1:8080"),
                dest("*.wild.example"),
            ],
            deny: vec![dest("203.0.113.0/24"), dest("bad.example.org:443")],
        };
        let mut resolved = BTreeMap::new();
        resolved.insert(
            "deb.example.org".to_string(),
            vec![
                "198.51.100.5".parse().unwrap(),
                "2001:db8::5".parse().unwrap(),
            ],
        );
        resolved.insert(
            "bad.example.org".to_string(),
            vec!["198.51.100.66".parse().unwrap()],
        );
        let facts = Facts {
            host_addrs: vec!["192.0.2.7".parse().unwrap()],
            resolved,
            forwards: Vec::new(),
        };
        golden("allow.nft", &render(&policy, &facts));
        assert_eq!(policy.domains(), ["bad.example.org"]);
        assert!(policy.needs_dns());
        assert!(!Policy::default().needs_dns());
        assert_eq!(dns_timeout(0), DNS_MIN_TIMEOUT_S);
        assert_eq!(dns_timeout(900), 900);
        assert_eq!(dns_timeout(u32::MAX), DNS_MAX_TIMEOUT_S);
    }

    #[test]
    fn any_without_lists_is_open() {
        let p = Policy {
            mode: Mode::Any,
            ..Policy::default()
        };
        assert!(p.is_open());
        let r = render(&p, &Facts::default());
        assert!(
            !r.contains("10.0.0.0/8") && r.contains("ip daddr 10.0.2.2 accept"),
            "{r}"
        );
        assert!(!Policy::default().is_open());
    }

    #[test]
    fn denials_are_read_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "netdev", "name": "banger"}},
          {"set": {"family": "netdev", "name": "denied4", "table": "banger", "type": "ipv4_addr",
            "elem": [{"elem": {"val": "10.200.0.1", "timeout": 3600, "expires": 3590}}, "127.0.0.1"]}},
          {"set": {"family": "netdev", "name": "denied6", "table": "banger", "type": "ipv6_addr"}},
          {"set": {"family": "netdev", "name": "denied_ports4", "table": "banger", "elem": [
            {"elem": {"val": {"concat": ["10.200.0.1", "tcp", 8080]}, "expires": 3599}},
            {"elem": {"val": {"concat": ["10.200.0.1", 17, 53]}, "expires": 3000}},
            {"elem": {"val": {"concat": ["10.200.0.1", "sctp", 9]}, "expires": 3000}},
            {"elem": {"val": {"concat": ["bogus", "tcp", 1]}, "expires": 3000}},
            {"elem": {"val": {"concat": ["10.200.0.1", "tcp"]}, "expires": 3000}}]}},
          {"counter": {"family": "netdev", "name": "denied", "table": "banger", "packets": 7, "bytes": 420}}]}"#;
        let d = parse_denials(json).unwrap();
        assert_eq!(d.packets, 7);
        assert_eq!(
            d.recent,
            [
                "10.200.0.1".parse::<IpAddr>().unwrap(),
                "127.0.0.1".parse().unwrap()
            ]
        );
        let shown: Vec<String> = d
            .entries
            .iter()
            .map(|e| format!("{:?} {} {:?} {:?}", e.seconds_ago, e.addr, e.proto, e.port))
            .collect();
        assert_eq!(
            shown,
            [
                "Some(1) 10.200.0.1 Some(\"tcp\") Some(8080)",
                "Some(600) 10.200.0.1 Some(\"udp\") Some(53)",
                "None 127.0.0.1 None None",
            ]
        );
        for bad in ["", "{", "[]", "{\"nftables\": 3}"] {
            assert!(parse_denials(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_addresses_exclude_loopback() {
        assert!(host_addresses().iter().all(|a| !a.is_loopback()));
    }
}
