//! `vm.ports`: what a VM publishes on the host, and what listens inside it (read from the
//! guest's `/proc/net` tables through the agent, so it needs no tools in the image).

use std::sync::Arc;

use banger_api::vm::{ListeningSocket, VmPorts, VmRef, VmState};
use banger_guest_proto::{ReadFile, proc_net};

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
    proc_net::sockets_in_state(table, listen_state)
        .into_iter()
        .map(|s| ListeningSocket {
            proto: proto.to_string(),
            address: s.address.to_string(),
            port: s.port,
        })
        .collect()
}
