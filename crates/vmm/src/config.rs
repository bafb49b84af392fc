//! What a VM is made of, as the caller describes it: CPUs, memory, kernel, disks, the agent
//! channel, networking and the accelerator.
//!
//! # Invariants
//! - A [`VmConfig`] is plain data; [`VmConfig::validate`] is the one place that decides
//!   whether a driver may launch it. Drivers call it first, so every check here happens
//!   before any process starts.
//! - Disks are attached in [`VmConfig::disks`] order (`/dev/vda`, `/dev/vdb`, …, see
//!   [`banger_guest_proto::disks`]); read-write disks get discard so freed blocks return to
//!   the host.
//! - Everything the driver creates lives in [`VmConfig::run_dir`] (see
//!   [`crate::RunFiles`]); the caller owns that directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::RunFiles;

/// How guest code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// Software emulation (QEMU's TCG).
    Tcg {
        /// The host's TSC frequency in kHz, passed to the guest as `tsc_early_khz=` so its
        /// kernel does not calibrate the TSC (which can hang under emulation on a loaded
        /// host). `None` when it could not be determined: the guest then calibrates.
        tsc_khz: Option<u64>,
    },
}

impl Accel {
    /// `"kvm"` or `"tcg"`, as QEMU spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg { .. } => "tcg",
        }
    }
}

/// The transport of the agent channel (both carry the same protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Hybrid vsock: the guest dials CID 2, the host sees a Unix-socket connection.
    Vsock,
    /// A virtio-serial port carrying the same protocol over one stream.
    Serial,
}

impl ChannelKind {
    /// `"vsock"` or `"serial"` (the `banger.channel=` spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Vsock => "vsock",
            ChannelKind::Serial => "serial",
        }
    }
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `"tcp"` or `"udp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A host port forwarded to a guest port (`-p [IP:]HOST:GUEST`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// TCP or UDP.
    pub proto: Proto,
    /// The host address to bind (the caller defaults it to 127.0.0.1).
    pub host_ip: IpAddr,
    /// The host port (not 0).
    pub host_port: u16,
    /// The guest port (not 0).
    pub guest_port: u16,
}

/// The guest's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetConfig {
    /// No network device at all.
    None,
    /// Rootless user-mode networking (10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3)
    /// through a network namespace and pasta, filtered by `policy` (`crate::netns`).
    User {
        /// Published ports.
        forwards: Vec<PortForward>,
        /// What the guest may reach.
        #[serde(default)]
        policy: crate::netns::Policy,
    },
}

/// One raw disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskConfig {
    /// An image file (or block device).
    pub path: PathBuf,
    /// Attach read-only (the shared base image); read-write disks get discard.
    pub read_only: bool,
    /// How the file holds the disk. Never probed: a guest could write any header into a
    /// raw disk.
    #[serde(default)]
    pub format: DiskFormat,
}

/// The format of a disk file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFormat {
    /// The disk's bytes as they are (every driver).
    #[default]
    Raw,
    /// A QEMU copy-on-write overlay over a backing file (a fork's disk; QEMU only).
    Qcow2,
}

impl DiskFormat {
    /// QEMU's name of the format.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// Everything a driver needs to launch one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// The VM's name (for logs and process titles only).
    pub name: String,
    /// An existing, private directory: the driver puts sockets, logs and pid files here.
    pub run_dir: PathBuf,
    /// Virtual CPUs (1..=[`MAX_CPUS`]).
    pub cpus: u32,
    /// Guest memory in MiB ([`MIN_MEMORY_MIB`]..).
    pub memory_mib: u64,
    /// The kernel image (bzImage or ELF vmlinux).
    pub kernel: PathBuf,
    /// The initramfs, if any.
    pub initrd: Option<PathBuf>,
    /// The caller's part of the kernel command line; the driver appends the console,
    /// panic and reboot settings and, under TCG, `tsc_early_khz=`.
    pub cmdline: String,
    /// Disks in attach order (`/dev/vda` first).
    pub disks: Vec<DiskConfig>,
    /// How the agent channel is carried.
    pub channel: ChannelKind,
    /// Networking.
    pub net: NetConfig,
    /// Accelerator.
    pub accel: Accel,
    /// A directory [`crate::Vmm::save_state`] wrote: the VM does not boot but goes on
    /// from that state (the rest of the configuration must match the saved VM's, except
    /// the run directory, the disks' paths and the network's host side).
    pub restore: Option<PathBuf>,
    /// Fresh boots (QEMU): guest memory is a shared memfd instead of anonymous memory. A
    /// save then leaves memory out of the state stream and copies the memfd (sparse: what
    /// the guest touched) into a file beside it; a VM restored from such a save maps that
    /// file privately: it starts without loading its memory, and the VMs restored from one
    /// save share every page none of them wrote. The price: shared memory gets no
    /// transparent huge pages (under KVM, a few per cent of the guest's speed). Ignored on
    /// restores (the saved directory says how memory was saved) and by Firecracker (whose
    /// saves always write a memory file that restores map privately).
    #[serde(default, alias = "memory_file")]
    pub shared_memory: bool,
}

/// The most vCPUs a VM may have (QEMU microvm's limit is far higher; this bounds typos).
pub const MAX_CPUS: u32 = 64;
/// The least memory a VM may have: a Linux guest with an initramfs needs more than this.
pub const MIN_MEMORY_MIB: u64 = 32;
/// The most disks: `vda`..`vdz`.
pub const MAX_DISKS: usize = 26;
/// x86 `COMMAND_LINE_SIZE` minus its terminating NUL.
pub const MAX_CMDLINE: usize = 2047;
/// `sizeof(sockaddr_un.sun_path)` minus the NUL: longer socket paths cannot be bound.
const MAX_SOCKET_PATH: usize = 107;

/// Why a [`VmConfig`] cannot be launched. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A count or size outside what a VM can have.
    #[error("{what} = {value} is out of range ({range}): pick a value in range")]
    OutOfRange {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The accepted range, for the message.
        range: String,
    },
    /// A file the VM needs does not exist or is not a file.
    #[error("{what} {path}: {problem}: check the path")]
    BadFile {
        /// `"kernel"`, `"initrd"`, `"disk 1"`, `"run directory"`.
        what: String,
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The run directory's path is so long that a socket in it cannot be bound.
    #[error(
        "socket path {path} is {len} bytes, longer than the {MAX_SOCKET_PATH} a Unix socket \
         allows: use a shorter run directory"
    )]
    RunDirTooLong {
        /// The longest socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The full kernel command line is longer than the kernel accepts.
    #[error(
        "the kernel command line would be {len} bytes, more than the kernel's \
         {MAX_CMDLINE}: shorten it"
    )]
    CmdlineTooLong {
        /// Its length with the driver's additions.
        len: usize,
    },
    /// A published port with port 0 on either side.
    #[error(
        "published port {proto} {host_ip}:{host_port} -> {guest_port} uses port 0: give \
         explicit ports"
    )]
    ZeroPort {
        /// The protocol.
        proto: &'static str,
        /// Host address.
        host_ip: IpAddr,
        /// Host port.
        host_port: u16,
        /// Guest port.
        guest_port: u16,
    },
    /// The same host address, port and protocol published twice.
    #[error("host port {proto} {host_ip}:{host_port} is published twice: publish it once")]
    DuplicatePort {
        /// The protocol.
        proto: &'static str,
        /// Host address.
        host_ip: IpAddr,
        /// Host port.
        host_port: u16,
    },
    /// Something this driver cannot do (Firecracker: software emulation, the serial
    /// channel, a compressed kernel).
    #[error("{vmm} does not support {what}: {fix}")]
    Unsupported {
        /// The driver (`"firecracker"`).
        vmm: &'static str,
        /// What it cannot do, with the value at fault.
        what: String,
        /// What to do instead.
        fix: &'static str,
    },
    /// QEMU's user networking (7.2) cannot forward from an IPv6 address.
    #[error(
        "published port {proto} [{host_ip}]:{host_port}: user-mode networking cannot \
         forward from an IPv6 address: publish on an IPv4 address such as 127.0.0.1"
    )]
    Ipv6Forward {
        /// The protocol.
        proto: &'static str,
        /// The IPv6 host address.
        host_ip: IpAddr,
        /// Host port.
        host_port: u16,
    },
}

impl VmConfig {
    /// Checks everything that can be checked without starting a process: ranges, that the
    /// kernel, initrd and disks exist, that `run_dir` is a directory whose socket paths fit,
    /// that published ports are well-formed. (Whether a port is free is checked by the
    /// driver right before launch.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_CPUS).contains(&self.cpus) {
            return Err(ConfigError::OutOfRange {
                what: "cpus",
                value: u64::from(self.cpus),
                range: format!("1..={MAX_CPUS}"),
            });
        }
        // 1 TiB: beyond any host banger runs on; keeps `memory_mib << 20` far from overflow.
        const MAX_MEMORY_MIB: u64 = 1 << 20;
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::OutOfRange {
                what: "memory_mib",
                value: self.memory_mib,
                range: format!("{MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}"),
            });
        }
        if self.disks.len() > MAX_DISKS {
            return Err(ConfigError::OutOfRange {
                what: "number of disks",
                value: self.disks.len() as u64,
                range: format!("0..={MAX_DISKS}"),
            });
        }
        match std::fs::metadata(&self.run_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(bad_file("run directory", &self.run_dir, "not a directory")),
            Err(e) => return Err(bad_file("run directory", &self.run_dir, &e.to_string())),
        }
        let files = RunFiles::new(&self.run_dir);
        if let Some(longest) = files.sockets().into_iter().max_by_key(|p| path_len(p)) {
            let len = path_len(&longest);
            if len > MAX_SOCKET_PATH {
                return Err(ConfigError::RunDirTooLong { path: longest, len });
            }
        }
        check_file("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file("initrd", initrd)?;
        }
        for (i, d) in self.disks.iter().enumerate() {
            check_file(&format!("disk {i}"), &d.path)?;
        }
        if let NetConfig::User { forwards, .. } = &self.net {
            check_forwards(forwards)?;
        }
        Ok(())
    }
}

fn path_len(p: &Path) -> usize {
    p.as_os_str().len()
}

fn bad_file(what: &str, path: &Path, problem: &str) -> ConfigError {
    ConfigError::BadFile {
        what: what.to_string(),
        path: path.to_path_buf(),
        problem: problem.to_string(),
    }
}

/// A regular file or a block device, readable by metadata at least.
fn check_file(what: &str, path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() || m.file_type().is_block_device() => Ok(()),
        Ok(_) => Err(bad_file(what, path, "not a file")),
        Err(e) => Err(bad_file(what, path, &e.to_string())),
    }
}

fn check_forwards(forwards: &[PortForward]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for f in forwards {
        let proto = f.proto.as_str();
        if f.host_port == 0 || f.guest_port == 0 {
            return Err(ConfigError::ZeroPort {
                proto,
                host_ip: f.host_ip,
                host_port: f.host_port,
                guest_port: f.guest_port,
            });
        }
        if f.host_ip.is_ipv6() {
            return Err(ConfigError::Ipv6Forward {
                proto,
                host_ip: f.host_ip,
                host_port: f.host_port,
            });
        }
        if !seen.insert((f.proto, f.host_ip, f.host_port)) {
            return Err(ConfigError::DuplicatePort {
                proto,
                host_ip: f.host_ip,
                host_port: f.host_port,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn config(dir: &Path) -> VmConfig {
        let kernel = dir.join("vmlinuz");
        std::fs::write(&kernel, b"k").unwrap();
        VmConfig {
            name: "t".into(),
            run_dir: dir.to_path_buf(),
            cpus: 1,
            memory_mib: 256,
            kernel,
            initrd: None,
            cmdline: String::new(),
            disks: vec![],
            channel: ChannelKind::Serial,
            net: NetConfig::None,
            accel: Accel::Kvm,
            restore: None,
            shared_memory: false,
        }
    }

    fn fwd(proto: Proto, ip: IpAddr, host_port: u16, guest_port: u16) -> PortForward {
        PortForward {
            proto,
            host_ip: ip,
            host_port,
            guest_port,
        }
    }

    #[test]
    fn ranges_and_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ok = config(dir.path());
        ok.validate().unwrap();

        let e = VmConfig {
            cpus: 0,
            ..ok.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("cpus = 0"), "{e}");
        let e = VmConfig {
            memory_mib: 4,
            ..ok.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("memory_mib = 4"), "{e}");

        let e = VmConfig {
            kernel: dir.path().join("nope"),
            ..ok.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().starts_with("kernel "), "{e}");
        assert!(e.to_string().contains("nope"), "{e}");

        let e = VmConfig {
            disks: vec![DiskConfig {
                path: dir.path().to_path_buf(),
                read_only: true,
                format: Default::default(),
            }],
            ..ok.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("disk 0") && e.to_string().contains("not a file"));
    }

    #[test]
    fn long_run_dirs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("x".repeat(100));
        std::fs::create_dir(&deep).unwrap();
        let cfg = VmConfig {
            run_dir: deep,
            ..config(dir.path())
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::RunDirTooLong { .. })
        ));
    }

    #[test]
    fn forwards_are_checked() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let check = |f: Vec<PortForward>| check_forwards(&f);
        check(vec![
            fwd(Proto::Tcp, lo, 8080, 80),
            fwd(Proto::Udp, lo, 8080, 80),
        ])
        .unwrap();
        assert!(matches!(
            check(vec![
                fwd(Proto::Tcp, lo, 8080, 80),
                fwd(Proto::Tcp, lo, 8080, 81)
            ]),
            Err(ConfigError::DuplicatePort { .. })
        ));
        assert!(matches!(
            check(vec![fwd(Proto::Tcp, lo, 0, 80)]),
            Err(ConfigError::ZeroPort { .. })
        ));
        let e = check(vec![fwd(Proto::Tcp, "::1".parse().unwrap(), 8080, 80)]).unwrap_err();
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
    }
}
