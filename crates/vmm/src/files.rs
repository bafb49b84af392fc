//! The files a driver creates in a VM's run directory, named in one place.
//!
//! # Invariants
//! - Every path is a fixed name under the run directory: the layout is a pure function of
//!   it, so a daemon that restarts finds (and cleans) exactly what a launch left.
//! - The driver removes stale sockets of its own before a launch but never
//!   [`RunFiles::vsock_agent_listen`]: the caller binds that one before launching.

use std::path::{Path, PathBuf};

use banger_guest_proto::AGENT_VSOCK_PORT;

/// Paths inside one VM's run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFiles {
    /// The serial console (written by the VMM, survives it; `vm logs` reads it).
    /// Truncated at each launch, like the two stderr files.
    pub console_log: PathBuf,
    /// The VMM's stdout and stderr.
    pub vmm_stderr: PathBuf,
    /// The vsock helper's stdout and stderr.
    pub vsock_stderr: PathBuf,
    /// The vhost-user control socket between QEMU and the vsock helper.
    pub vhost_socket: PathBuf,
    /// The hybrid-vsock Unix socket the helper listens on for host-initiated connections
    /// (`CONNECT <port>\n`).
    pub vsock_uds: PathBuf,
    /// Where guest-initiated connections to host port [`AGENT_VSOCK_PORT`] arrive:
    /// `<vsock_uds>_<port>`, bound and listened on by the caller.
    pub vsock_agent_listen: PathBuf,
    /// The virtio-serial fallback channel: QEMU listens, the host connects.
    pub serial_socket: PathBuf,
    /// QEMU's QMP socket (control: status, power-down).
    pub qmp_socket: PathBuf,
    /// The launched processes as JSON ([`crate::ProcessRecord`]s).
    pub pids_json: PathBuf,
    /// Firecracker's API socket (Firecracker creates it; the driver removes it).
    pub fc_api_socket: PathBuf,
    /// QEMU's migration socket: saved state leaves and arrives through it.
    pub migrate_socket: PathBuf,
    /// Firecracker's stdout and stderr (its log; the serial console goes to
    /// [`RunFiles::console_log`]).
    pub fc_log: PathBuf,
    /// pasta's log, when Firecracker's network namespace is plumbed by it.
    pub pasta_log: PathBuf,
    /// The network policy's nftables ruleset, loaded in the VM's network namespace.
    pub net_rules: PathBuf,
    /// The DNS forwarder's configuration (`netns::forwarder::Config`) and its log.
    pub dns_config: PathBuf,
    /// See [`RunFiles::dns_config`].
    pub dns_log: PathBuf,
    /// A jailed Firecracker's jail directory, as a symlink (removed with the jail).
    pub jail_link: PathBuf,
}

impl RunFiles {
    /// The layout under `run_dir`.
    pub fn new(run_dir: &Path) -> RunFiles {
        let vsock_uds = run_dir.join("vsock.sock");
        let mut listen = vsock_uds.clone().into_os_string();
        listen.push(format!("_{AGENT_VSOCK_PORT}"));
        RunFiles {
            console_log: run_dir.join("console.log"),
            vmm_stderr: run_dir.join("qemu.stderr"),
            vsock_stderr: run_dir.join("vsock.stderr"),
            vhost_socket: run_dir.join("vhost-vsock.sock"),
            vsock_agent_listen: PathBuf::from(listen),
            vsock_uds,
            serial_socket: run_dir.join("agent.sock"),
            qmp_socket: run_dir.join("qmp.sock"),
            pids_json: run_dir.join("pids.json"),
            fc_api_socket: run_dir.join("fc.sock"),
            migrate_socket: run_dir.join("migrate.sock"),
            fc_log: run_dir.join("firecracker.log"),
            pasta_log: run_dir.join("pasta.log"),
            net_rules: run_dir.join("net-policy.nft"),
            dns_config: run_dir.join("dns.json"),
            dns_log: run_dir.join("dns.log"),
            jail_link: run_dir.join("jail"),
        }
    }

    /// Every socket path (each must fit in `sockaddr_un`).
    pub fn sockets(&self) -> Vec<PathBuf> {
        vec![
            self.vhost_socket.clone(),
            self.vsock_uds.clone(),
            self.vsock_agent_listen.clone(),
            self.serial_socket.clone(),
            self.qmp_socket.clone(),
            self.fc_api_socket.clone(),
            self.migrate_socket.clone(),
        ]
    }

    /// The sockets the driver itself creates (and may remove when stale).
    pub(crate) fn driver_sockets(&self) -> [&Path; 6] {
        [
            &self.vhost_socket,
            &self.vsock_uds,
            &self.serial_socket,
            &self.qmp_socket,
            &self.fc_api_socket,
            &self.migrate_socket,
        ]
    }

    /// Every file a launch may create, the caller's listen socket excluded.
    pub fn all(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .driver_sockets()
            .iter()
            .map(|p| p.to_path_buf())
            .collect();
        v.extend([
            self.console_log.clone(),
            self.vmm_stderr.clone(),
            self.vsock_stderr.clone(),
            self.pids_json.clone(),
            self.fc_log.clone(),
            self.pasta_log.clone(),
            self.net_rules.clone(),
            self.dns_config.clone(),
            self.dns_log.clone(),
        ]);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_fixed() {
        let f = RunFiles::new(Path::new("/run/vm"));
        assert_eq!(f.vsock_agent_listen, Path::new("/run/vm/vsock.sock_1025"));
        assert_eq!(f.console_log, Path::new("/run/vm/console.log"));
        assert!(!f.all().contains(&f.vsock_agent_listen));
    }
}
