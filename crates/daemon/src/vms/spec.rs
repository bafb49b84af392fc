//! What a VM is (its spec, fixed at create) and what it is doing (its runtime, while
//! processes run), as persisted in the `vms` table; host-derived defaults and limits.

use banger_api::vm::VmStageRecord;
use banger_guest_proto::InitMode;
use banger_vmm::ProcessRecord;
use serde::{Deserialize, Serialize};

use crate::error::OpError;

/// Default apparent size of the copy-on-write root disk and of the work disk. Sparse:
/// only what the guest writes is allocated.
pub const DEFAULT_DISK_BYTES: u64 = 8 << 30;
/// Smallest disk that holds an ext4 journal and some work.
pub const MIN_DISK_BYTES: u64 = 64 << 20;
/// Default guest memory, capped at half the host's.
pub const DEFAULT_MEMORY_MIB: u64 = 1024;
/// Default vCPUs, capped at the host's.
pub const DEFAULT_CPUS: u32 = 2;

/// The user's choices, resolved to concrete values at create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
    pub work_disk_bytes: u64,
    /// As asked (`auto` until the first boot tells which one ran).
    pub init: InitMode,
    /// What the first boot resolved `auto` to.
    #[serde(default)]
    pub init_resolved: Option<InitMode>,
    /// With the image's init: how far it must be before the VM is ready.
    #[serde(default)]
    pub ready: banger_guest_proto::Readiness,
    /// `auto`, `vsock` or `serial`.
    pub channel: String,
    /// `public`, `host`, `any` or `none` (`user` in specs from before: `host`).
    #[serde(default = "default_net")]
    pub net: String,
    /// Where `net` came from (`--net`, `config.toml [vm] net`; empty: the default).
    #[serde(default)]
    pub net_from: String,
    /// `--allow` entries, checked at create.
    #[serde(default)]
    pub allow: Vec<String>,
    /// `--deny` entries, checked at create.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Published ports.
    #[serde(default)]
    pub publish: Vec<banger_vmm::PortForward>,
    /// `--vmm` as asked; resolved at every start (the host may have changed).
    #[serde(default)]
    pub vmm: banger_vmm::VmmChoice,
    /// `--kernel-arg`s, appended to banger's command line.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Bytes of serial console kept on the host (`None`: the daemon's default).
    #[serde(default)]
    pub console_log_max: Option<u64>,
    /// Deleted when it stops (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// Created under a `vm.hold` lease: also deleted when its holder goes away, and at
    /// the next daemon start.
    #[serde(default)]
    pub leased: bool,
    /// How the VM's own disks are stored: raw ext4, or (forks) qcow2 overlays over a
    /// snapshot's disks.
    #[serde(default)]
    pub disk_format: banger_vmm::DiskFormat,
    /// The snapshot a fork was made from (it cannot be deleted while the fork exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
    /// Set until a fork's first start: it goes on from the snapshot instead of booting.
    #[serde(default)]
    pub resume_pending: bool,
    /// A VM banger boots only to take an image's warm start ready-snapshot (`warm.rs`):
    /// its memory is a file (saved by copying it), and a daemon that finds one at start
    /// deletes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warm_template: bool,
    /// `[vm] stop_idle_after` when the VM was created: stopped after this many seconds
    /// without an exec, ssh, cp or proxy session (`idle.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_idle_after_secs: Option<u64>,
}

fn default_net() -> String {
    "none".into()
}

/// What runs for a started VM: enough to re-adopt it after a daemon restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRuntime {
    pub processes: Vec<ProcessRecord>,
    /// `vsock` or `serial`.
    pub channel: String,
    /// The Unix socket of the agent channel: listened on (vsock) or dialled (serial).
    #[serde(default)]
    pub channel_path: String,
    pub vmm: String,
    /// Why this VMM (`--vmm auto`'s reasoning).
    #[serde(default)]
    pub vmm_reason: String,
    pub accel: String,
    pub accel_reason: String,
    pub stages: Vec<VmStageRecord>,
    /// The agent's boot id, to tell a reconnect from a reboot.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// How this start began: `cold`, `warm` or `fork` (`api::vm::Vm::start`).
    #[serde(default)]
    pub start: String,
}

impl VmRuntime {
    pub fn vmm_process(&self) -> Option<&ProcessRecord> {
        self.processes.iter().find(|p| p.role == "vmm")
    }

    /// Where the agent channel of these processes is.
    pub fn endpoint(&self) -> banger_vmm::ChannelEndpoint {
        let path = std::path::PathBuf::from(&self.channel_path);
        if self.channel == "vsock" {
            banger_vmm::ChannelEndpoint::VsockListen(path)
        } else {
            banger_vmm::ChannelEndpoint::SerialConnect(path)
        }
    }
}

/// The host's size, for defaults and limits.
#[derive(Debug, Clone, Copy)]
pub struct HostResources {
    pub cpus: u32,
    pub memory_mib: u64,
}

impl HostResources {
    pub fn read() -> HostResources {
        let cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map(|kib| kib / 1024)
            .unwrap_or(DEFAULT_MEMORY_MIB * 2);
        HostResources { cpus, memory_mib }
    }

    pub fn default_cpus(&self) -> u32 {
        DEFAULT_CPUS.min(self.cpus).max(1)
    }

    pub fn default_memory_mib(&self) -> u64 {
        DEFAULT_MEMORY_MIB.min(self.memory_mib / 2).max(128)
    }

    /// Refuses what this host cannot give, with the numbers.
    pub fn validate(&self, cpus: u32, memory_mib: u64) -> Result<(), OpError> {
        if cpus == 0 {
            return Err(OpError::BadRequest("--cpus must be at least 1".into()));
        }
        if cpus > self.cpus {
            return Err(OpError::BadRequest(format!(
                "--cpus {cpus} is more than this host's {} CPUs; pick at most {}",
                self.cpus, self.cpus
            )));
        }
        if memory_mib < 128 {
            return Err(OpError::BadRequest(format!(
                "--memory {memory_mib} MiB is too small to boot; give at least 128MiB"
            )));
        }
        if memory_mib >= self.memory_mib {
            return Err(OpError::BadRequest(format!(
                "--memory {memory_mib} MiB is larger than this host's {} MiB of RAM; pick less (the default is {} MiB)",
                self.memory_mib,
                self.default_memory_mib()
            )));
        }
        Ok(())
    }
}

/// Checks a disk size asked for (`what` names the flag).
pub fn validate_disk(what: &str, bytes: u64) -> Result<u64, OpError> {
    if bytes < MIN_DISK_BYTES {
        return Err(OpError::BadRequest(format!(
            "{what} {bytes} bytes is too small; give at least 64MiB"
        )));
    }
    if bytes > 16 << 40 {
        return Err(OpError::BadRequest(format!(
            "{what} {bytes} bytes is larger than ext4's 16 TiB file limit"
        )));
    }
    Ok(bytes)
}

/// Checks `--kernel-arg`s: one word each (the kernel splits its command line on spaces),
/// printable, and not a key banger sets itself.
pub fn validate_kernel_args(args: &[String]) -> Result<(), OpError> {
    for a in args {
        let key = a.split('=').next().unwrap_or_default();
        if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(OpError::BadRequest(format!(
                "--kernel-arg {a:?}: give one argument per flag, without spaces"
            )));
        }
        if key.starts_with("banger.") || key == "init" || key == "--" {
            return Err(OpError::BadRequest(format!(
                "--kernel-arg {a:?}: `{key}` is set by banger (its agent must be the guest's first process)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_host() {
        let small = HostResources {
            cpus: 1,
            memory_mib: 1024,
        };
        assert_eq!(small.default_cpus(), 1);
        assert_eq!(small.default_memory_mib(), 512);
        let big = HostResources {
            cpus: 16,
            memory_mib: 65536,
        };
        assert_eq!(big.default_cpus(), 2);
        assert_eq!(big.default_memory_mib(), 1024);
    }

    #[test]
    fn limits_name_the_numbers() {
        let host = HostResources {
            cpus: 2,
            memory_mib: 4096,
        };
        assert!(host.validate(2, 1024).is_ok());
        let e = host
            .validate(3, 1024)
            .expect_err("too many cpus")
            .to_string();
        assert!(e.contains("2 CPUs"), "{e}");
        let e = host
            .validate(1, 8192)
            .expect_err("too much memory")
            .to_string();
        assert!(e.contains("4096 MiB"), "{e}");
        assert!(validate_disk("--disk", 1 << 20).is_err());
        assert!(validate_disk("--disk", 1 << 30).is_ok());
    }

    /// A spec for tests.
    pub(crate) fn sample() -> VmSpec {
        VmSpec {
            cpus: 1,
            memory_mib: 512,
            disk_bytes: 1 << 30,
            work_disk_bytes: 1 << 30,
            init: InitMode::Auto,
            init_resolved: Some(InitMode::Agent),
            ready: banger_guest_proto::Readiness::MultiUser,
            channel: "auto".into(),
            net: "user".into(),
            publish: Vec::new(),
            vmm: banger_vmm::VmmChoice::Auto,
            kernel_args: vec!["quiet".into()],
            console_log_max: Some(1 << 20),
            auto_remove: true,
            leased: true,
            net_from: "--net".into(),
            allow: vec!["example.org:443".into()],
            deny: Vec::new(),
            disk_format: banger_vmm::DiskFormat::Qcow2,
            forked_from: Some("0123456789abcdef".into()),
            resume_pending: true,
            warm_template: true,
            stop_idle_after_secs: Some(7200),
        }
    }

    #[test]
    fn spec_round_trips_and_refuses_unknown_fields() {
        let spec = sample();
        let json = serde_json::to_string(&spec).expect("encode");
        assert_eq!(serde_json::from_str::<VmSpec>(&json).expect("decode"), spec);
        assert!(serde_json::from_str::<VmSpec>("{\"cpus\":1,\"bogus\":2}").is_err());
    }
}
