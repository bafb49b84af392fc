//! `vm.*`: params and results of the VM lifecycle.
//!
//! `vm.create` and `vm.start` stream [`crate::event::OpEvent::VmStage`] events while the
//! guest comes up; `vm.logs` with `follow` streams [`crate::event::OpEvent::Log`] chunks.
//! `vm.exec` upgrades the HTTP/1.1 connection (`Upgrade: banger-exec/2`, answered with
//! `101 Switching Protocols`); after that both directions carry the daemon's own frames
//! ([`crate::exec`]), which it translates to and from the guest agent's protocol.

use serde::{Deserialize, Serialize};

/// The `Upgrade` token of `vm.exec`: the stream's framing ([`crate::exec`]) and its
/// version. The daemon refuses any other token, so a client of another framing gets an
/// error instead of bytes it misreads.
pub const EXEC_UPGRADE: &str = "banger-exec/2";
/// The `Upgrade` token of the raw byte streams: `vm.cp.put`, `vm.cp.get`, `vm.proxy`.
///
/// - `vm.cp.put`: after `101` the client sends a tar stream and half-closes its side
///   (`shutdown(SHUT_WR)`); the daemon answers one JSON `banger_guest_proto::PutResult` and
///   closes.
/// - `vm.cp.get`: after `101` the daemon sends a tar stream of the path and closes (errors,
///   e.g. a missing path, come before the upgrade as ordinary JSON errors).
/// - `vm.proxy`: raw TCP bytes both ways to `127.0.0.1:<port>` in the guest; the client's
///   half-close half-closes the guest socket; the guest closing ends the stream.
pub const STREAM_UPGRADE: &str = "banger-stream";

/// Declares a `vm.create` choice: an enum spelled in lowercase on the wire (the strings
/// sent before it was typed), `auto` by default.
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            /// The daemon decides (see the variants).
            #[default]
            Auto,
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $name::Auto => "auto",
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<$name, String> {
                match s {
                    "auto" => Ok($name::Auto),
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "{other:?}: use {}",
                        ["auto", $($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

choice! {
    /// The host↔agent channel (`--channel`); `auto`: vsock when its backend is installed.
    ChannelChoice {
        /// vsock (vhost-user with QEMU, hybrid with Firecracker).
        Vsock = "vsock",
        /// virtio-serial (QEMU only).
        Serial = "serial",
    }
}

choice! {
    /// The VMM (`--vmm`); `auto`: Firecracker where installed and KVM proven, else QEMU.
    VmmChoice {
        /// QEMU.
        Qemu = "qemu",
        /// Firecracker (needs KVM).
        Firecracker = "firecracker",
    }
}

choice! {
    /// Who is PID 1 (`--init`); `auto`: the image's `/sbin/init` when it has one.
    InitChoice {
        /// The agent stays PID 1 (container images).
        Agent = "agent",
        /// The image's own init (systemd).
        Image = "image",
    }
}

/// A VM's network scope (`--net`), enforced outside the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// No network device.
    None,
    /// The internet and DNS; not the host, private or link-local ranges (the default).
    Public,
    /// `public` plus the host's loopback at the gateway 10.0.2.2 (`user`, deprecated, is
    /// read as this).
    #[serde(alias = "user")]
    Host,
    /// Whatever the host itself reaches.
    Any,
}

impl NetMode {
    /// `none`, `public`, `host` or `any`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Public => "public",
            NetMode::Host => "host",
            NetMode::Any => "any",
        }
    }
}

impl std::str::FromStr for NetMode {
    type Err = String;

    /// Also accepts the deprecated `user` (as `host`); callers print [`USER_DEPRECATED`].
    fn from_str(s: &str) -> Result<NetMode, String> {
        match s {
            "none" => Ok(NetMode::None),
            "public" => Ok(NetMode::Public),
            "host" | "user" => Ok(NetMode::Host),
            "any" => Ok(NetMode::Any),
            other => Err(format!(
                "--net {other:?}: use public (the internet, not the host: the default), host \
                 (public plus the host's loopback at 10.0.2.2), any (whatever the host \
                 reaches) or none"
            )),
        }
    }
}

/// The notice for `--net user`.
pub const USER_DEPRECATED: &str =
    "note: --net user is deprecated: it now means --net host (public plus the host's loopback)";

/// A VM's effective network policy, for `vm show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPolicyInfo {
    /// Where the mode came from (`--net`, `config.toml [vm] net`, `default`).
    pub from: String,
    /// `--allow` entries (and `[net] allow`).
    pub allow: Vec<String>,
    /// `--deny` entries (and `[net] deny`).
    pub deny: Vec<String>,
    /// Denied packets since the VM started (when running and readable).
    pub denied_packets: Option<u64>,
    /// Destinations denied within the last hour (when running and readable).
    pub recent_denials: Vec<String>,
    /// Why the denials could not be read, if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denials_error: Option<String>,
    /// The recent denials with ports and times, most recent first (`vm logs --net`).
    #[serde(default)]
    pub denials: Vec<NetDenial>,
}

/// One destination the policy denied (within the last hour).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetDenial {
    /// The address.
    pub destination: String,
    /// `tcp` or `udp`; none for another protocol.
    pub proto: Option<String>,
    /// The destination port (TCP and UDP).
    pub port: Option<u16>,
    /// Seconds since the last denial to it.
    pub seconds_ago: Option<u64>,
}

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Disks made, never started (`vm create --no-start`).
    Created,
    /// The VMM runs; the agent has not reported ready yet.
    Starting,
    /// The agent reported ready; exec works.
    Running,
    /// A stop is in progress.
    Stopping,
    /// No process runs; disks kept.
    Stopped,
    /// The last start or run failed; see `last_error`. Disks and logs kept.
    Error,
    /// The VMM runs, the guest's vCPUs are stopped (`vm pause`); memory kept.
    Paused,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Error => "error",
            VmState::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<VmState> {
        Some(match s {
            "created" => VmState::Created,
            "starting" => VmState::Starting,
            "running" => VmState::Running,
            "stopping" => VmState::Stopping,
            "stopped" => VmState::Stopped,
            "error" => VmState::Error,
            "paused" => VmState::Paused,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmCreateParams {
    /// The VM's name; empty (or absent): the daemon picks a free one, `<name_hint>-<4 hex
    /// digits>`.
    #[serde(default)]
    pub name: String,
    /// The stem of a name the daemon picks (a workspace directory's name, say); made to fit
    /// the naming rule, `run` when absent or when nothing usable is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_hint: Option<String>,
    /// Image name or id (empty with `from`: the snapshot's image).
    #[serde(default)]
    pub image: String,
    /// A snapshot (name or id) to fork: the VM goes on from the snapshot's memory and
    /// disks instead of booting (`vm create --from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default)]
    pub cpus: Option<u32>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Apparent size of the copy-on-write root disk (what `/` can grow by).
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    /// Apparent size of the work disk mounted at `/root`.
    #[serde(default)]
    pub work_disk_bytes: Option<u64>,
    /// `auto` (default), `agent` or `image`.
    #[serde(default)]
    pub init: Option<InitChoice>,
    /// Only make the VM; `vm start` boots it.
    #[serde(default)]
    pub no_start: bool,
    /// `auto` (default: vsock when its backend is installed), `vsock` or `serial`.
    #[serde(default)]
    pub channel: Option<ChannelChoice>,
    /// Seconds the guest gets to report ready (default 120 under software emulation,
    /// 30 with KVM).
    #[serde(default)]
    pub ready_timeout_secs: Option<u64>,
    /// What the guest may reach (default [`NetMode::Public`]).
    #[serde(default)]
    pub net: Option<NetMode>,
    /// Where `net` came from (`--net`, `config.toml [vm] net`), for `vm show`.
    #[serde(default)]
    pub net_from: Option<String>,
    /// `--allow DEST` entries (domain, `*.domain`, IP or CIDR, optional `:PORT`): with
    /// any, egress is denied except to these.
    #[serde(default)]
    pub allow: Vec<String>,
    /// `--deny DEST` entries, removed from whatever the mode allows.
    #[serde(default)]
    pub deny: Vec<String>,
    /// `auto` (default: Firecracker where installed and KVM proven, else QEMU), `qemu` or
    /// `firecracker`.
    #[serde(default)]
    pub vmm: Option<VmmChoice>,
    /// Published ports (IP defaults to 127.0.0.1).
    #[serde(default)]
    pub publish: Vec<PortSpec>,
    /// Extra kernel command-line arguments, appended after banger's own (so a later
    /// `loglevel=` wins); `banger.*` keys are reserved.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Bytes of serial console output kept on the host, the newest (default 8 MiB; 64 KiB
    /// to 256 MiB).
    #[serde(default)]
    pub console_log_max: Option<u64>,
    /// With the image's own init: how far it must be before the VM counts as ready,
    /// `none`, `sysinit` (default: systemd's sysinit.target) or `multi-user`.
    #[serde(default)]
    pub ready: Option<String>,
    /// Delete the VM when it stops, for whatever reason (`vm stop`, `vm kill`, the guest
    /// powering off, its VMM dying, a failed boot): Docker's `--rm`.
    #[serde(default)]
    pub auto_remove: bool,
    /// A lease from `vm.hold` (needs `auto_remove`): the VM is also killed and deleted
    /// when the client holding the lease goes away, and when the daemon restarts.
    #[serde(default)]
    pub lease: Option<String>,
    /// Warm start: the VM goes on from the image's ready-snapshot for these settings
    /// when there is one, and one is made in the background after a cold boot when there
    /// is not. `false` (`--cold`): always boot. Absent: `config.toml`'s `[vm] warm`
    /// (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<bool>,
}

/// `vm.defaults`: what `vm run` boots when no image is given, from the daemon's config file
/// (`default_image`, `default_image_name`, `default_kernel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDefaults {
    /// The local image name to boot (`debian-bookworm`).
    pub image: String,
    /// The reference it is pulled from when there is no such image yet (`debian:bookworm`).
    pub image_ref: String,
    /// The kernel that pull uses (`default`).
    pub kernel: String,
}

/// A port to publish: the text `-p` takes, `[IP:]HOST:GUEST[/tcp|udp]`, or the structured
/// form (the shape `vm.ports` reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// `[IP:]HOST:GUEST[/tcp|udp]`.
    Text(String),
    /// `{"host_port", "guest_port", "proto"?, "host_ip"?}`.
    Port(PortForwardSpec),
}

/// The structured form of a [`PortSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForwardSpec {
    /// The host port (1..65535).
    pub host_port: u16,
    /// The guest port (1..65535).
    pub guest_port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub proto: PortProto,
    /// The host address to bind (default 127.0.0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// A published port's protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProto {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl PortSpec {
    /// The text form, which the daemon validates whichever form came.
    pub fn text(&self) -> String {
        match self {
            PortSpec::Text(text) => text.clone(),
            PortSpec::Port(p) => {
                let ip = p
                    .host_ip
                    .as_deref()
                    .map(|ip| format!("[{ip}]:"))
                    .unwrap_or_default();
                let proto = match p.proto {
                    PortProto::Tcp => "tcp",
                    PortProto::Udp => "udp",
                };
                format!("{ip}{}:{}/{proto}", p.host_port, p.guest_port)
            }
        }
    }
}

impl From<&str> for PortSpec {
    fn from(text: &str) -> PortSpec {
        PortSpec::Text(text.to_string())
    }
}

/// A guest port published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// `tcp` or `udp`.
    pub proto: String,
    pub host_ip: String,
    pub host_port: u16,
    pub guest_port: u16,
}

/// A socket listening inside the guest (from its `/proc/net/{tcp,tcp6,udp,udp6}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListeningSocket {
    pub proto: String,
    pub address: String,
    pub port: u16,
}

/// Result of `vm.ports`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmPorts {
    pub published: Vec<PublishedPort>,
    /// Empty when the VM is not running.
    pub listening: Vec<ListeningSocket>,
}

/// Params of `vm.cp.put` (see [`STREAM_UPGRADE`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmCpPutParams {
    pub vm: String,
    /// Absolute guest directory the archive is extracted into (created if missing).
    pub dest: String,
    #[serde(default)]
    pub owner: Option<String>,
}

/// Params of `vm.cp.get` (see [`STREAM_UPGRADE`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmCpGetParams {
    pub vm: String,
    /// Absolute guest path (file or directory).
    pub path: String,
}

/// Params of `vm.proxy` (see [`STREAM_UPGRADE`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmProxyParams {
    pub vm: String,
    pub port: u16,
}

/// Result of `ssh.keys`: what `ssh.config` names, as text, for a client on another machine
/// (the private key is the daemon owner's own, sent only to that owner).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SshKeys {
    /// The private key (OpenSSH format).
    pub identity: String,
    /// `NAME.vm` lines with the running VMs' host keys.
    pub known_hosts: String,
}

/// Result of `ssh.config`: banger's own SSH identity and known_hosts (the daemon creates
/// the key on first use; known_hosts holds `NAME.vm` lines for running VMs whose host keys
/// the agent reported).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SshInfo {
    pub identity_file: String,
    pub public_key: String,
    pub known_hosts_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRef {
    pub vm: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStartParams {
    pub vm: String,
    #[serde(default)]
    pub ready_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDeleteParams {
    pub vm: String,
    /// Kill a running VM first instead of refusing.
    #[serde(default)]
    pub force: bool,
}

/// Result of `vm.hold`: the lease ended cleanly (the daemon is shutting down). A client
/// that goes away instead ends it by vanishing, which kills and deletes its VMs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VmHoldEnded {
    pub lease: String,
}

/// Result of `vm.delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmDeleted {
    pub id: String,
    pub name: String,
}

/// `vm.prune`: delete the VMs that are not up (created, stopped, failed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmPruneParams {
    /// Name them, delete nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Only these (names or ids), and only if they are still not up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
}

/// Result of `vm.prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VmPruned {
    /// The VMs deleted (with `dry_run`: that would be), by name.
    pub deleted: Vec<String>,
    /// Host bytes their directories held (0 with `dry_run`).
    #[serde(default)]
    pub freed_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmLogsParams {
    pub vm: String,
    /// Keep streaming new console output until the VM stops or the client leaves.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines of what is there now.
    #[serde(default)]
    pub tail_lines: Option<usize>,
}

/// Params of `vm.exec` (the request body before the upgrade).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmExecParams {
    pub vm: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Allocate a pty of this size (`[rows, cols]`).
    #[serde(default)]
    pub tty: Option<(u16, u16)>,
    #[serde(default)]
    pub term: Option<String>,
}

/// One readiness stage as the daemon saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStageRecord {
    /// `vmm_spawned`, `kernel_started`, `agent_connected`, the guest's own stages
    /// (`modules_loaded`, `root_assembled`, …), `ready`.
    pub stage: String,
    /// Milliseconds since the start began (host clock).
    pub at_ms: u64,
    /// Guest uptime at that stage, for stages the guest reported.
    #[serde(default)]
    pub guest_uptime_ms: Option<u64>,
}

/// Result of `vm.stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmStats {
    pub vm: String,
    pub state: VmState,
    /// What the guest's kernel reports (`/proc`, read through the agent): only while the
    /// VM runs. The guest is its own witness here; the host's numbers are below.
    pub guest: Option<GuestStats>,
    pub host: HostStats,
}

/// `VmStats::guest`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestStats {
    /// `/proc/uptime`.
    pub uptime_secs: f64,
    /// CPU time of all the guest's CPUs, in seconds (`/proc/stat`): user (with nice),
    /// system (with interrupts), idle (with I/O wait).
    pub cpu_user_secs: f64,
    pub cpu_system_secs: f64,
    pub cpu_idle_secs: f64,
    /// `/proc/loadavg`: 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// `/proc/meminfo`: `MemTotal`, `MemAvailable`, and used = total − available.
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_used_bytes: u64,
    /// Bytes received and sent by the guest's interfaces other than `lo` (`/proc/net/dev`).
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}

/// `VmStats::host`: measured on the host, out of the guest's reach.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostStats {
    /// CPU time the VMM process used (user + system), while it runs.
    pub vmm_cpu_secs: Option<f64>,
    /// The VMM's resident and proportional set sizes (`/proc/PID/smaps_rollup`).
    pub vmm_rss_bytes: Option<u64>,
    pub vmm_pss_bytes: Option<u64>,
    pub root_disk: DiskUsage,
    pub work_disk: DiskUsage,
    /// Bytes the guest received and sent, counted on its tap device on the host side
    /// (absent without a network).
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
}

/// Apparent and allocated bytes of one disk file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub apparent_bytes: u64,
    pub allocated_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vm {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: VmState,
    pub cpus: u32,
    pub memory_mib: u64,
    /// `agent` or `image` once resolved at first start; `auto` before.
    pub init: String,
    /// `qemu` or `firecracker`.
    pub vmm: String,
    /// Why that VMM (for `--vmm auto`, what decided it).
    #[serde(default)]
    pub vmm_reason: String,
    /// `kvm` or `tcg`, and why.
    pub accel: String,
    pub accel_reason: String,
    /// `vsock` or `serial`.
    pub channel: String,
    /// `public`, `host`, `any` or `none`.
    #[serde(default)]
    pub net: String,
    /// The policy behind `net` (not for `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_policy: Option<NetPolicyInfo>,
    #[serde(default)]
    pub published: Vec<PublishedPort>,
    pub last_error: Option<String>,
    /// Stages of the last start, in order.
    pub stages: Vec<VmStageRecord>,
    pub root_disk: DiskUsage,
    pub work_disk: DiskUsage,
    /// Process id of the VMM while running.
    pub pid: Option<u32>,
    pub dir: String,
    pub created_at: String,
    pub started_at: Option<String>,
    /// Deleted when it stops (`vm.create`'s `auto_remove`).
    #[serde(default)]
    pub auto_remove: bool,
    /// Also deleted when the client holding its lease goes away (`vm.hold`).
    #[serde(default)]
    pub leased: bool,
    /// The snapshot this VM was forked from (`vm create --from`), by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
    /// How its last start began: `cold` (a boot), `warm` (from its image's
    /// ready-snapshot) or `fork` (from a snapshot, `--from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// What the VM's VMM offers; absent until the daemon has looked at this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<VmCapabilities>,
    /// `[vm] stop_idle_after` when the VM was created: it is stopped after this many
    /// seconds without an exec, ssh, cp or proxy session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_idle_after_secs: Option<u64>,
    /// While it runs with no session open: seconds until that stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop_in_secs: Option<u64>,
}

/// `Vm::capabilities`: `pause`, `snapshot`, `shared_folders` and `hot_plug` are each
/// `yes` (banger does it with this VMM), `vmm_only` (the VMM can, banger does not yet) or
/// `no`; `vsock` is `none`, `vhost_user` or `hybrid` (Firecracker's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCapabilities {
    pub pause: String,
    pub snapshot: String,
    pub shared_folders: String,
    pub hot_plug: String,
    pub vsock: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmList {
    pub vms: Vec<Vm>,
}

/// Result of `vm.logs` without `follow` (with `follow`, the text streams as events and
/// this is the final result with empty `text`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmLogs {
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_keep_the_strings_sent_before_they_were_typed() {
        let p: VmCreateParams = serde_json::from_str(
            r#"{"image":"x","init":"image","channel":"serial","vmm":"firecracker"}"#,
        )
        .expect("parse");
        assert_eq!(p.init, Some(InitChoice::Image));
        assert_eq!(p.channel, Some(ChannelChoice::Serial));
        assert_eq!(p.vmm, Some(VmmChoice::Firecracker));
        let back = serde_json::to_value(&p).expect("json");
        assert_eq!(back["init"], "image");
        assert_eq!(back["channel"], "serial");
        assert_eq!(back["vmm"], "firecracker");
        for bad in [
            r#"{"image":"x","vmm":"kvmtool"}"#,
            r#"{"image":"x","init":"Agent"}"#,
        ] {
            assert!(
                serde_json::from_str::<VmCreateParams>(bad).is_err(),
                "{bad}"
            );
        }
        assert_eq!("qemu".parse::<VmmChoice>(), Ok(VmmChoice::Qemu));
        assert_eq!(ChannelChoice::default().as_str(), "auto");
        assert!("x".parse::<InitChoice>().is_err());
    }

    #[test]
    fn ports_come_as_text_or_structured() {
        let p: VmCreateParams = serde_json::from_str(
            r#"{"image":"x","publish":["8080:80",{"host_port":53,"guest_port":5353,"proto":"udp","host_ip":"::1"},{"host_port":1,"guest_port":2}]}"#,
        )
        .expect("parse");
        let texts: Vec<String> = p.publish.iter().map(PortSpec::text).collect();
        assert_eq!(texts, ["8080:80", "[::1]:53:5353/udp", "1:2/tcp"]);
        let typo = r#"{"image":"x","publish":[{"host_port":1,"guest_prot":2}]}"#;
        assert!(serde_json::from_str::<VmCreateParams>(typo).is_err());
    }
}

/// `vm.snapshot`'s params.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSnapshotParams {
    /// The running (or paused) VM.
    pub vm: String,
    /// The snapshot's name; absent: `<vm>-<4 hex digits>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stop the VM once its state is saved (instead of letting it run on).
    #[serde(default)]
    pub stop: bool,
}
