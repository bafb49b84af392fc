//! A VM's network: `user` (rootless user-mode NAT, the default) or `none`, and the ports it
//! publishes (`-p [IP:]HOST:GUEST[/tcp|udp]`, bound to 127.0.0.1 unless an address is given).

use std::net::{IpAddr, Ipv4Addr};

use banger_api::vm::PublishedPort;
use banger_vmm::{PortForward, Proto};

use crate::error::OpError;

/// Parses `--net`.
pub fn parse_mode(mode: Option<&str>) -> Result<String, OpError> {
    match mode.unwrap_or("user") {
        m @ ("user" | "none") => Ok(m.to_string()),
        other => Err(OpError::BadRequest(format!(
            "--net {other:?}: use user (NAT, the default) or none"
        ))),
    }
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
        assert!(parse_mode(Some("bridge")).is_err());
        assert_eq!(parse_mode(None).expect("default"), "user");
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
