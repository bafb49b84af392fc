//! `vm.ports`: what a VM publishes on the host, and what listens inside it (read from the
//! guest's `/proc/net` tables through the agent, so it needs no tools in the image).

use std::sync::Arc;

use banger_api::vm::{ListeningSocket, VmPorts, VmRef, VmState};
use banger_guest_proto::ReadFile;

use super::{Vms, parse_spec, state_of};
use crate::error::OpError;

impl Vms {
    pub async fn ports(self: &Arc<Self>, p: VmRef) -> Result<VmPorts, OpError> {
        let row = self.find(&p.vm)?;
        let spec = parse_spec(&row)?;
        let published = spec.publish.iter().map(super::net::to_api).collect();
        let mut listening = Vec::new();
        if state_of(&row) == VmState::Running {
            let (_, conn) = self.agent_of(&row.id).await?;
            for (proto, file, listen_state) in [
                ("tcp", "/proc/net/tcp", "0A"),
                ("tcp", "/proc/net/tcp6", "0A"),
                ("udp", "/proc/net/udp", "07"),
                ("udp", "/proc/net/udp6", "07"),
            ] {
                let read = ReadFile {
                    path: file.into(),
                    max_bytes: 1 << 20,
                };
                if let Ok(content) = conn.read_file(&read).await {
                    listening.extend(parse_proc_net(proto, &content.data, listen_state));
                }
            }
            listening.sort_by(|a: &ListeningSocket, b| {
                (a.port, &a.proto, &a.address).cmp(&(b.port, &b.proto, &b.address))
            });
            listening.dedup();
        }
        Ok(VmPorts {
            published,
            listening,
        })
    }
}

/// Sockets in state `listen_state` from a `/proc/net/{tcp,udp}[6]` table.
fn parse_proc_net(proto: &str, table: &str, listen_state: &str) -> Vec<ListeningSocket> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (fields.get(1)?, fields.get(3)?);
            if *state != listen_state {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            Some(ListeningSocket {
                proto: proto.to_string(),
                address: hex_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
            })
        })
        .collect()
}

/// The kernel prints addresses as native-endian 32-bit words in hex. Anything else (the
/// guest may send any bytes) is no address.
fn hex_addr(hex: &str) -> Option<String> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) || !matches!(hex.len(), 8 | 32) {
        return None;
    }
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()),
        16 => {
            let arr: [u8; 16] = bytes.try_into().ok()?;
            Some(std::net::Ipv6Addr::from(arr).to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tables_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:0016 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1\n";
        let socks = parse_proc_net("tcp", tcp, "0A");
        assert_eq!(socks.len(), 1);
        assert_eq!(socks[0].port, 8000);
        assert_eq!(socks[0].address, "0.0.0.0");
        let tcp6 = "header\n   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 0\n";
        let socks = parse_proc_net("tcp", tcp6, "0A");
        assert_eq!(socks[0].address, "::1");
        assert_eq!(socks[0].port, 22);
    }
}
