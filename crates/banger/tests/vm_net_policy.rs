//! The network policy (`--net`, `--allow`, `--deny`) with real guests (QEMU under software emulation, the
//! `dev` Debian image): what each `--net` mode reaches, allow-lists, and a guest root
//! trying to widen its reach. Destinations:
//! - a TCP server on the host's 127.0.0.1 (reached through the gateway 10.0.2.2);
//! - servers on a private (10.200.0.1) and a link-local (169.254.99.1) address inside a
//!   network namespace this test creates, routed from the host through a veth pair (no
//!   real private address outside it);
//! - package registries read from this machine's own configuration: apt's mirror (from
//!   /etc/apt) and pip's index (pip's configuration, else pip's own default).
//!
//! Needs root (the namespace and its routes), `ip`, `nft`, `pasta`, python3 and pip on the
//! host; fails loudly without them.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, TcpListener, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestEnv;

/// The port every namespace server listens on.
const NS_PORT: u16 = 8080;
const PRIVATE: &str = "10.200.0.1";
const LINK_LOCAL: &str = "169.254.99.1";
/// A denied connection must fail within this (a reset or an ICMP error, not a timeout).
const FAST: f64 = 2.0;

/// Connects from the guest to each `HOST:PORT` (5 s timeout each) and reports
/// `HOST:PORT RESULT SECONDS` lines.
const PROBE: &str = r#"
import socket, sys, time
for t in sys.argv[1:]:
    h, p = t.rsplit(':', 1)
    s = time.time()
    try:
        c = socket.create_connection((h, int(p)), timeout=5)
        c.close()
        r = 'ok'
    except socket.timeout:
        r = 'timeout'
    except socket.gaierror:
        r = 'noname'
    except OSError as e:
        r = 'err:' + type(e).__name__
    print(t, r, round(time.time() - s, 3), flush=True)
"#;

/// `target -> (result, seconds)` from inside `vm`.
fn probe(env: &TestEnv, vm: &str, targets: &[String]) -> BTreeMap<String, (String, f64)> {
    let mut args = vec!["vm", "exec", vm, "--", "python3", "-c", PROBE];
    args.extend(targets.iter().map(String::as_str));
    let out = env.ok(&args);
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (t, r, s) = (w.next()?, w.next()?, w.next()?);
            Some((t.to_string(), (r.to_string(), s.parse().ok()?)))
        })
        .collect()
}

fn assert_reached(got: &BTreeMap<String, (String, f64)>, target: &str, what: &str) {
    let (r, _) = got
        .get(target)
        .unwrap_or_else(|| panic!("{target} not probed: {got:?}"));
    assert_eq!(r, "ok", "{what}: {target} should be reachable: {got:?}");
}

fn assert_denied_fast(got: &BTreeMap<String, (String, f64)>, target: &str, what: &str) {
    let (r, s) = got
        .get(target)
        .unwrap_or_else(|| panic!("{target} not probed: {got:?}"));
    assert_ne!(r, "ok", "{what}: {target} should be unreachable: {got:?}");
    assert!(
        *s < FAST,
        "{what}: {target} failed after {s} s, not fast: {got:?}"
    );
}

/// A TCP server accepting (and closing) connections until the test ends.
fn host_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(b"host\n");
        }
    });
    port
}

/// A network namespace with servers on [`PRIVATE`] and [`LINK_LOCAL`], routed from the
/// host through a veth pair; removed (with its servers) on drop.
struct PrivateNet {
    name: String,
    server: Child,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivateNet {
    fn new() -> PrivateNet {
        assert!(
            common::is_root(),
            "this test makes a network namespace: run it as root"
        );
        let name = format!("bnp{}", std::process::id());
        let (host_if, ns_if) = (format!("{name}h"), format!("{name}n"));
        run(&["ip", "netns", "add", &name]);
        let net = PrivateNet {
            name: name.clone(),
            server: Command::new("true").spawn().expect("placeholder"),
        };
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        run(&["ip", "link", "set", &ns_if, "netns", &name]);
        run(&["ip", "link", "set", &host_if, "up"]);
        for dst in [format!("{PRIVATE}/32"), format!("{LINK_LOCAL}/32")] {
            run(&["ip", "route", "add", &dst, "dev", &host_if]);
        }
        let ns = |a: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &name];
            v.extend(a);
            run(&v);
        };
        ns(&["ip", "link", "set", "lo", "up"]);
        ns(&["ip", "link", "set", &ns_if, "up"]);
        ns(&["ip", "addr", "add", &format!("{PRIVATE}/24"), "dev", &ns_if]);
        ns(&[
            "ip",
            "addr",
            "add",
            &format!("{LINK_LOCAL}/32"),
            "dev",
            &ns_if,
        ]);
        ns(&["ip", "route", "add", "default", "dev", &ns_if]);
        let server = format!(
            "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {NS_PORT})); s.listen(16)\nwhile True:\n    c, _ = s.accept(); c.close()\n"
        );
        let mut net = net;
        net.server = Command::new("ip")
            .args(["netns", "exec", &name, "python3", "-c", &server])
            .stdin(Stdio::null())
            .spawn()
            .expect("namespace server");
        // Ready when the host reaches both addresses.
        let deadline = Instant::now() + Duration::from_secs(20);
        for addr in [PRIVATE, LINK_LOCAL] {
            let sa = format!("{addr}:{NS_PORT}").parse().expect("addr");
            while std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "the host does not reach {addr} in {name}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        net
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // The veth pair and its routes go with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// apt's first mirror host and its port, from /etc/apt/sources.list{,.d/*.list,.d/*.sources}.
fn apt_mirror() -> (String, u16) {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let ext = p.extension().and_then(|e| e.to_str());
            if matches!(ext, Some("list" | "sources")) {
                texts.push(std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    for t in &texts {
        for line in t.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let uri = line
                .strip_prefix("URIs:")
                .and_then(|u| u.split_whitespace().next())
                .or_else(|| {
                    line.strip_prefix("deb ")
                        .and_then(|r| r.split_whitespace().find(|w| w.contains("://")))
                });
            if let Some(u) = uri {
                return host_port(u);
            }
        }
    }
    panic!("no apt mirror configured in /etc/apt");
}

/// pip's index host and port: PIP_INDEX_URL, pip's configuration, else pip's default.
fn pip_index() -> (String, u16) {
    if let Ok(u) = std::env::var("PIP_INDEX_URL")
        && !u.is_empty()
    {
        return host_port(&u);
    }
    let out = Command::new("python3")
        .args(["-m", "pip", "config", "list"])
        .output()
        .expect("pip");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((key, value)) = line.split_once('=')
            && key.ends_with("index-url")
        {
            return host_port(value.trim_matches('\''));
        }
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "from pip._internal.models.index import PyPI; print(PyPI.url)",
        ])
        .output()
        .expect("pip's default index");
    assert!(out.status.success(), "pip is needed on the host");
    host_port(String::from_utf8_lossy(&out.stdout).trim())
}

/// `scheme://host[:port]/…` → (host, port).
fn host_port(url: &str) -> (String, u16) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let authority = rest.split('/').next().expect("authority");
    let authority = authority.rsplit('@').next().expect("host");
    match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().expect("port")),
        None => (
            authority.to_string(),
            if scheme == "https" { 443 } else { 80 },
        ),
    }
}

fn resolve(host: &str, port: u16) -> Vec<IpAddr> {
    (host, port)
        .to_socket_addrs()
        .map(|a| a.map(|s| s.ip()).filter(IpAddr::is_ipv4).collect())
        .unwrap_or_default()
}

fn create(env: &TestEnv, name: &str, image: &str, extra: &[&str]) {
    let mut args = vec!["vm", "create", name, "--image", image, "--cpus", "1", "-q"];
    args.extend(extra);
    env.ok(&args);
}

#[test]
fn net_modes_and_allow_lists_hold_against_the_guest() {
    let env = TestEnv::new();
    let image = env.debian_image("dev");
    let private = PrivateNet::new();
    let host_port = host_server();
    let (mirror, mirror_port) = apt_mirror();
    let gateway = format!("10.0.2.2:{host_port}");
    let targets = |extra: &[String]| {
        let mut v = vec![
            gateway.clone(),
            format!("{PRIVATE}:{NS_PORT}"),
            format!("{LINK_LOCAL}:{NS_PORT}"),
            format!("{mirror}:{mirror_port}"),
        ];
        v.extend_from_slice(extra);
        v
    };

    // public (the default): the internet, not the host or private ranges.
    create(&env, "pub", &image, &[]);
    let show = env.json(&["vm", "show", "pub"]);
    assert_eq!(show["net"], "public", "{show}");
    assert_eq!(show["net_policy"]["from"], "default", "{show}");
    // The receive window the agent caps (pasta's resend storms: `agent/src/boot/net.rs`).
    let rmem = env.ok(&[
        "vm",
        "exec",
        "pub",
        "--",
        "cat",
        "/proc/sys/net/ipv4/tcp_rmem",
    ]);
    assert_eq!(rmem.split_whitespace().last(), Some("262144"), "{rmem}");
    let got = probe(&env, "pub", &targets(&[]));
    assert_denied_fast(&got, &gateway, "public: the host's loopback");
    assert_denied_fast(
        &got,
        &format!("{PRIVATE}:{NS_PORT}"),
        "public: a private address",
    );
    assert_denied_fast(
        &got,
        &format!("{LINK_LOCAL}:{NS_PORT}"),
        "public: link-local",
    );
    assert_reached(
        &got,
        &format!("{mirror}:{mirror_port}"),
        "public: apt's mirror",
    );

    // Guest root rewires its network: new routes, another resolver; nothing widens.
    let widen = "ip route replace default via 10.0.2.3 dev eth0 2>&1; \
                 ip route add 10.200.0.0/24 via 10.0.2.2 dev eth0 2>&1; \
                 echo nameserver 10.0.2.2 > /etc/resolv.conf; \
                 (iptables -F && iptables -P OUTPUT ACCEPT) 2>&1 || true";
    env.ok(&["vm", "exec", "pub", "--", "sh", "-c", widen]);
    let got = probe(
        &env,
        "pub",
        &[gateway.clone(), format!("{PRIVATE}:{NS_PORT}")],
    );
    assert_denied_fast(
        &got,
        &gateway,
        "public after guest root's changes: host loopback",
    );
    assert_denied_fast(
        &got,
        &format!("{PRIVATE}:{NS_PORT}"),
        "public after guest root's changes: private",
    );
    let show = env.json(&["vm", "show", "pub"]);
    let denied = &show["net_policy"];
    assert!(
        denied["denied_packets"].as_u64().is_some_and(|n| n > 0),
        "{show}"
    );
    let recent = denied["recent_denials"].to_string();
    for addr in ["10.0.2.2", PRIVATE, LINK_LOCAL] {
        assert!(
            recent.contains(addr),
            "{addr} not among the denials: {show}"
        );
    }
    // `vm logs --net`: the same denials with their ports, most recent first.
    let logs = env.ok(&["vm", "logs", "--net", "pub"]);
    assert!(
        logs.contains(&format!("tcp/{host_port}")) && logs.contains(&format!("tcp/{NS_PORT}")),
        "{logs}"
    );
    let listed = env.json(&["vm", "logs", "--net", "pub"]);
    assert!(
        listed.as_array().is_some_and(|v| v
            .iter()
            .any(|d| d["destination"] == PRIVATE && d["port"] == NS_PORT && d["proto"] == "tcp")),
        "{listed}"
    );
    env.ok(&["vm", "delete", "pub", "--force"]);

    // host: public plus the host's loopback.
    create(&env, "hst", &image, &["--net", "host"]);
    let got = probe(&env, "hst", &targets(&[]));
    assert_reached(&got, &gateway, "host: the host's loopback");
    assert_denied_fast(
        &got,
        &format!("{PRIVATE}:{NS_PORT}"),
        "host: a private address",
    );
    assert_reached(
        &got,
        &format!("{mirror}:{mirror_port}"),
        "host: apt's mirror",
    );
    env.ok(&["vm", "delete", "hst", "--force"]);

    // any: what the host reaches.
    create(&env, "all", &image, &["--net", "any"]);
    let got = probe(&env, "all", &targets(&[]));
    assert_reached(
        &got,
        &format!("{PRIVATE}:{NS_PORT}"),
        "any: a private address",
    );
    assert_reached(&got, &format!("{LINK_LOCAL}:{NS_PORT}"), "any: link-local");
    assert_reached(&got, &gateway, "any: the host's loopback");
    env.ok(&["vm", "delete", "all", "--force"]);

    // An allow-list naming the apt mirror's parent domain as a wildcard (its port only):
    // the guest's DNS goes through banger's forwarder, which answers names under it and
    // admits their addresses. pip's index is denied, by name (it does not even resolve)
    // and by its address hard-coded. Where both names share an address (a filtering
    // proxy in front of this host), the ports still tell them apart.
    let (index, index_port) = pip_index();
    let index_addrs = resolve(&index, index_port);
    assert!(
        !index_addrs.is_empty(),
        "{index} does not resolve on the host"
    );
    let parent = mirror
        .split_once('.')
        .map(|(_, p)| p.to_string())
        .filter(|p| p.contains('.'))
        .unwrap_or_else(|| panic!("apt's mirror {mirror} has no parent domain to allow"));
    let mirror_target = format!("{mirror}:{mirror_port}");
    let allow = format!("*.{parent}:{mirror_port}");
    if index_port == mirror_port {
        let mirror_addrs = resolve(&mirror, mirror_port);
        assert!(
            index_addrs.iter().all(|a| !mirror_addrs.contains(a)),
            "apt's mirror and pip's index share an address and a port: no address rule \
             can tell them apart"
        );
    }
    create(&env, "lst", &image, &["--allow", &allow]);
    let index_target = format!("{index}:{index_port}");
    let hard_coded = format!("{}:{index_port}", index_addrs[0]);
    let apex = format!("{parent}:{mirror_port}");
    let got = probe(
        &env,
        "lst",
        &targets(&[index_target.clone(), hard_coded.clone(), apex.clone()]),
    );
    assert_reached(
        &got,
        &mirror_target,
        "allow-list: the mirror, under the wildcard",
    );
    assert_denied_fast(&got, &index_target, "allow-list: pip's index by name");
    assert_eq!(
        got[&index_target].0, "noname",
        "allow-list: pip's index must not resolve: {got:?}"
    );
    assert_eq!(
        got[&apex].0, "noname",
        "allow-list: *.{parent} does not name {parent} itself: {got:?}"
    );
    assert_denied_fast(&got, &hard_coded, "allow-list: pip's index by address");
    assert_denied_fast(&got, &gateway, "allow-list: the host's loopback");
    assert_denied_fast(&got, &format!("{PRIVATE}:{NS_PORT}"), "allow-list: private");
    // The forwarder's answers: the allowed name resolves, the other is REFUSED (the
    // guest's resolver reports a failure, not an empty answer).
    let dig = env.ok(&[
        "vm",
        "exec",
        "lst",
        "--",
        "python3",
        "-c",
        &format!(
            "import socket\nfor n in ['{mirror}', '{index}']:\n    try:\n        \
             print(n, sorted({{a[4][0] for a in socket.getaddrinfo(n, 80)}}))\n    \
             except socket.gaierror as e:\n        print(n, 'error', e.errno)\n"
        ),
    ]);
    assert!(dig.contains(&format!("{mirror} ['")), "{dig}");
    assert!(dig.contains(&format!("{index} error")), "{dig}");
    // Guest root pointing its resolver elsewhere gains nothing: only banger's answers.
    env.ok(&[
        "vm",
        "exec",
        "lst",
        "--",
        "sh",
        "-c",
        "echo nameserver 10.0.2.2 > /etc/resolv.conf",
    ]);
    let got = probe(&env, "lst", std::slice::from_ref(&index_target));
    assert_denied_fast(&got, &index_target, "allow-list: another resolver");
    let show = env.ok(&["vm", "show", "lst"]);
    assert!(show.contains(&format!("allow {allow}")), "{show}");
    env.ok(&["vm", "delete", "lst", "--force"]);
    drop(private);
}
