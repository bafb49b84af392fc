//! A VM's network: its scope (`--net public|host|any|none`, `public` by default) with
//! `--allow`/`--deny` lists, enforced by `banger_vmm::netns::policy`, and the ports it
//! publishes (`-p [IP:]HOST:GUEST[/tcp|udp]`, bound to 127.0.0.1 unless an address is given).

use std::net::{IpAddr, Ipv4Addr};

use banger_api::vm::{NetDenial, NetMode, NetPolicyInfo, PublishedPort};
use banger_vmm::netns::{Dest, Mode, Policy, policy::Target};
use banger_vmm::{PortForward, Proto};

use super::spec::VmSpec;
use crate::error::OpError;

/// The stored spelling of a mode (`none`, `public`, `host`, `any`).
pub fn mode_name(mode: Option<NetMode>) -> String {
    mode.unwrap_or(NetMode::Public).as_str().to_string()
}

/// Parses `--allow`/`--deny` entries (`flag` names them in errors).
pub fn parse_dests(flag: &str, specs: &[String]) -> Result<Vec<Dest>, OpError> {
    specs
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| OpError::BadRequest(format!("{flag}: {e}")))
        })
        .collect()
}

/// Refuses a `--deny *.domain` that nothing would enforce: only banger's DNS forwarder
/// (which runs when `--allow` names a domain) knows the names under a domain.
fn check_deny_wildcards(policy: &Policy) -> Result<(), OpError> {
    if policy.needs_dns() {
        return Ok(());
    }
    match policy.deny.iter().find_map(|d| match &d.target {
        Target::Wildcard(w) => Some(w),
        _ => None,
    }) {
        Some(w) => Err(OpError::BadRequest(format!(
            "--deny \"*.{w}\" needs an --allow naming a domain (then the guest's DNS goes \
             through banger, which refuses the names under {w}); without one, deny the \
             host names (--deny www.{w}) or their addresses"
        ))),
        None => Ok(()),
    }
}

/// Checks a VM's network settings at create time.
pub fn check(net: &str, allow: &[String], deny: &[String]) -> Result<(), OpError> {
    if net == "none" && !(allow.is_empty() && deny.is_empty()) {
        return Err(OpError::BadRequest(
            "--allow/--deny need networking; drop --net none".into(),
        ));
    }
    check_deny_wildcards(&Policy {
        mode: Mode::Public,
        allow: parse_dests("--allow", allow)?,
        deny: parse_dests("--deny", deny)?,
    })
}

/// The policy of a VM with networking (`None` for `--net none`). Specs stored before
/// the policy existed say `user`: today's `host`.
pub fn policy(spec: &VmSpec) -> Result<Option<Policy>, OpError> {
    let mode = match spec.net.as_str() {
        "none" => return Ok(None),
        "public" => Mode::Public,
        "host" | "user" => Mode::Host,
        "any" => Mode::Any,
        other => {
            return Err(OpError::Failed(format!(
                "the VM's stored network mode {other:?} is unknown; recreate the VM"
            )));
        }
    };
    let policy = Policy {
        mode,
        allow: parse_dests("--allow", &spec.allow)?,
        deny: parse_dests("--deny", &spec.deny)?,
    };
    check_deny_wildcards(&policy)?;
    Ok(Some(policy))
}

/// What `vm show` says about the policy; `vmm_pid` (a running VM's) adds its denials.
pub fn policy_info(spec: &VmSpec, vmm_pid: Option<u32>) -> Option<NetPolicyInfo> {
    if spec.net == "none" {
        return None;
    }
    let mut info = NetPolicyInfo {
        from: if spec.net_from.is_empty() {
            "default".into()
        } else {
            spec.net_from.clone()
        },
        allow: spec.allow.clone(),
        deny: spec.deny.clone(),
        ..NetPolicyInfo::default()
    };
    if let Some(pid) = vmm_pid {
        match banger_vmm::netns::read_denials(pid) {
            Ok(d) => {
                info.denied_packets = Some(d.packets);
                info.recent_denials = d.recent.iter().map(IpAddr::to_string).collect();
                info.denials = d
                    .entries
                    .into_iter()
                    .map(|e| NetDenial {
                        destination: e.addr.to_string(),
                        proto: e.proto,
                        port: e.port,
                        seconds_ago: e.seconds_ago,
                    })
                    .collect();
            }
            Err(e) => info.denials_error = Some(e.to_string()),
        }
    }
    Some(info)
}

/// Parses one `-p` spec.
pub fn parse_publish(spec: &str) -> Result<PortForward, OpError> {
    let bad = |why: &str| {
        OpError::BadRequest(format!(
            "-p {spec:?}: {why}; use [IP:]HOST:GUEST[/tcp|udp], e.g. -p 8080:80"
        ))
    };
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, Proto::Tcp),
        Some((p, "udp")) => (p, Proto::Udp),
        Some((_, other)) => return Err(bad(&format!("unknown protocol {other:?}"))),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = ports.rsplitn(3, ':').collect();
    let (guest, host, ip) = match parts.as_slice() {
        [guest, host] => (*guest, *host, None),
        [guest, host, ip] => (*guest, *host, Some(*ip)),
        _ => return Err(bad("expected HOST:GUEST")),
    };
    let port = |p: &str, what: &str| -> Result<u16, OpError> {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad(&format!("{what} port {p:?} is not in 1..65535"))),
            Ok(n) => Ok(n),
        }
    };
    let host_ip = match ip {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(ip) => ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| bad(&format!("{ip:?} is not an IP address")))?,
    };
    Ok(PortForward {
        proto,
        host_ip,
        host_port: port(host, "host")?,
        guest_port: port(guest, "guest")?,
    })
}

/// Refuses a host port that is already taken (before anything is made or booted), naming it.
pub fn check_free(forwards: &[PortForward]) -> Result<(), OpError> {
    for f in forwards {
        let addr = std::net::SocketAddr::new(f.host_ip, f.host_port);
        let taken = match f.proto {
            Proto::Tcp => std::net::TcpListener::bind(addr).err(),
            Proto::Udp => std::net::UdpSocket::bind(addr).err(),
        };
        if let Some(e) = taken {
            return Err(OpError::BadRequest(format!(
                "cannot publish {}/{}: {e}; pick another host port (`-p OTHER:{}`) or stop what uses it",
                addr,
                f.proto.as_str(),
                f.guest_port
            )));
        }
    }
    Ok(())
}

pub fn to_api(f: &PortForward) -> PublishedPort {
    PublishedPort {
        proto: f.proto.as_str().to_string(),
        host_ip: f.host_ip.to_string(),
        host_port: f.host_port,
        guest_port: f.guest_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let f = parse_publish("8080:80").expect("ok");
        assert_eq!(
            (f.host_ip.to_string().as_str(), f.host_port, f.guest_port),
            ("127.0.0.1", 8080, 80)
        );
        assert_eq!(f.proto, Proto::Tcp);
        let f = parse_publish("0.0.0.0:5353:53/udp").expect("ok");
        assert_eq!(f.host_ip.to_string(), "0.0.0.0");
        assert_eq!(f.proto, Proto::Udp);
        for bad in ["80", "a:80", "8080:0", "8080:80/sctp", "x.y:1:2", "1:2:3:4"] {
            assert!(parse_publish(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(mode_name(None), "public");
        assert_eq!(mode_name(Some(NetMode::Host)), "host");
    }

    #[test]
    fn policies_from_specs() {
        assert!(check("none", &["example.org".into()], &[]).is_err());
        check(
            "public",
            &["*.example.org".into()],
            &["*.bad.example.org".into()],
        )
        .expect("ok");
        let e = check("public", &["192.0.2.1".into()], &["*.example.org".into()])
            .expect_err("a wildcard nothing enforces");
        assert!(e.to_string().contains("--allow naming a domain"), "{e}");
        assert!(check("public", &[], &["nope:0".into()]).is_err());
        check(
            "public",
            &["example.org:443".into()],
            &["10.0.0.0/8".into()],
        )
        .expect("ok");
        let mut spec = super::super::spec::tests::sample();
        spec.net = "user".into();
        spec.allow = vec!["192.0.2.1".into()];
        let p = policy(&spec).expect("ok").expect("some");
        assert_eq!(p.mode, Mode::Host);
        assert_eq!(p.allow.len(), 1);
        spec.net = "none".into();
        assert!(policy(&spec).expect("ok").is_none());
        assert!(policy_info(&spec, None).is_none());
        spec.net = "public".into();
        let info = policy_info(&spec, None).expect("some");
        assert_eq!(info.from, "--net");
        spec.net_from.clear();
        assert_eq!(policy_info(&spec, None).expect("some").from, "default");
        assert_eq!(info.denied_packets, None);
    }

    #[test]
    fn a_taken_port_is_named() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let f = parse_publish(&format!("{port}:80")).expect("spec");
        let e = check_free(&[f]).expect_err("taken").to_string();
        assert!(e.contains(&port.to_string()), "{e}");
    }
}
