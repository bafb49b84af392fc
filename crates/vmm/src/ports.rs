//! Whether the host ports a VM publishes are free, checked before any process starts.
//!
//! # Invariants
//! - A port is free when this process can bind it right now (with `SO_REUSEADDR`, as
//!   QEMU's user networking binds it). The check is advisory: a port taken between the
//!   check and QEMU's own bind makes QEMU fail, and the launch reports QEMU's message.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};

use crate::config::{PortForward, Proto};

/// A published host port that cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Another process holds the port.
    #[error(
        "host port {proto} {host_ip}:{host_port} is already in use: stop whatever listens \
         there or publish another port"
    )]
    InUse {
        /// The protocol.
        proto: &'static str,
        /// Host address.
        host_ip: IpAddr,
        /// Host port.
        host_port: u16,
    },
    /// Binding failed for another reason (address not on this host, privileged port).
    #[error("cannot bind host port {proto} {host_ip}:{host_port}: {source}: check the address")]
    Bind {
        /// The protocol.
        proto: &'static str,
        /// Host address.
        host_ip: IpAddr,
        /// Host port.
        host_port: u16,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds (and releases) every forward's host side; the first that fails is the error.
pub(crate) fn check_free(forwards: &[PortForward]) -> Result<(), PortError> {
    for f in forwards {
        let addr = SocketAddr::new(f.host_ip, f.host_port);
        let bound = match f.proto {
            Proto::Tcp => TcpListener::bind(addr).map(drop),
            Proto::Udp => UdpSocket::bind(addr).map(drop),
        };
        if let Err(source) = bound {
            let proto = f.proto.as_str();
            return Err(if source.kind() == std::io::ErrorKind::AddrInUse {
                PortError::InUse {
                    proto,
                    host_ip: f.host_ip,
                    host_port: f.host_port,
                }
            } else {
                PortError::Bind {
                    proto,
                    host_ip: f.host_ip,
                    host_port: f.host_port,
                    source,
                }
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn taken_ports_are_reported() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let held = TcpListener::bind((lo, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let fwd = |proto| PortForward {
            proto,
            host_ip: lo,
            host_port: port,
            guest_port: 80,
        };
        let e = check_free(&[fwd(Proto::Tcp)]).unwrap_err();
        assert!(matches!(e, PortError::InUse { host_port, .. } if host_port == port));
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
        // The same number over UDP is another port.
        check_free(&[fwd(Proto::Udp)]).unwrap();
        drop(held);
        check_free(&[fwd(Proto::Tcp)]).unwrap();
        // An address this host does not have.
        let e = check_free(&[PortForward {
            host_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            ..fwd(Proto::Tcp)
        }])
        .unwrap_err();
        assert!(matches!(e, PortError::Bind { .. }), "{e}");
    }
}
