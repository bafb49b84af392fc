//! The protocol between `bangerd` (the host) and `banger-agent` (PID 1 in every guest).
#![warn(missing_docs)]
//!
//! # Transport
//! One byte stream per VM: a hybrid-vsock connection (the guest dials CID 2, port
//! [`AGENT_VSOCK_PORT`]; the VMM's backend turns that into a connection to the Unix socket
//! `<uds>_<port>` the host listens on) or, where no vsock backend exists, a virtio-serial
//! port named [`SERIAL_PORT_NAME`] (the host connects to QEMU's chardev socket). Whoever
//! dialled, **the agent is the HTTP/2 server and the host the client** over that stream
//! (`h2` through hyper): HTTP/2 gives the multiplexing, flow control and stream lifecycle;
//! this crate adds only typed messages.
//!
//! When the stream breaks (the daemon restarted), the agent opens a new one and a new
//! HTTP/2 connection starts on it; guest state (processes, mounts) is unaffected. On the
//! serial port, which outlives the host's connections and a snapshot's session, each
//! HTTP/2 connection is preceded by a session sync ([`serial_sync`]).
//!
//! # Methods
//! - [`paths::HELLO`]: `POST`, JSON [`HelloRequest`] → JSON [`Hello`]. First call on every
//!   connection; the host refuses an agent whose protocol range does not overlap its own,
//!   and one whose `proof` does not answer the request's `nonce` under the boot's secret
//!   ([`auth`]).
//! - [`paths::CLOCK`]: `POST`, JSON [`SetClock`] → JSON [`Empty`].
//! - [`paths::IDENTITY`]: `POST`, JSON [`SetIdentity`] → JSON [`IdentityTaken`]: a VM
//!   resumed from a snapshot becomes itself (hostname, entropy, clock, agent secret, SSH
//!   host keys, and the host's SSH key authorized) before anything else is asked of it. An
//!   agent older than `authorize` answers [`Empty`] (read as an `IdentityTaken` without
//!   `host_keys`): the host then authorizes and reads the keys with the calls below.
//! - [`paths::SHUTDOWN`]: `POST`, JSON [`ShutdownRequest`] → JSON [`Empty`]; the agent
//!   answers, then syncs, unmounts and reboots the guest (the VMM exits on guest reboot:
//!   QEMU runs with `-no-reboot`, Firecracker always does).
//! - [`paths::READ_FILE`]: `POST`, JSON [`ReadFile`] → JSON [`FileContent`] (404 with an
//!   [`AgentError`] when missing): small text files (host keys, `/proc/net/tcp`).
//! - [`paths::AUTHORIZED_KEY`]: `POST`, JSON [`AddAuthorizedKey`] → JSON [`Empty`]: appends the
//!   key to the user's `~/.ssh/authorized_keys` unless present (dirs 0700, file 0600, owned by
//!   the user).
//! - [`paths::FILES_PUT`]: `POST`, params in the [`PARAMS_HEADER`] header as JSON [`PutFiles`],
//!   the request body a tar stream; after the body ends the agent answers 200 with JSON
//!   [`PutResult`] (whose `error` says what failed: the status cannot, the upload came first).
//! - [`paths::FILES_GET`]: `POST`, params header JSON [`GetFiles`]; 200 and a tar stream of the
//!   path (a file or a tree, named by its base name), or 404 with an [`AgentError`].
//! - [`paths::CONNECT`]: `POST`, params header JSON [`Connect`]; the agent connects to
//!   `127.0.0.1:<port>` in the guest, answers 200 (502 with an [`AgentError`] when refused) and
//!   then pipes raw bytes: request body → socket, socket → response body. The end of the
//!   request body half-closes the socket.
//! - [`paths::EXEC`]: `POST`, both bodies are [frames](frame): the request body starts with
//!   one [`ExecRequest`] frame followed by [`ExecInput`] frames; the response body is
//!   [`ExecOutput`] frames, ending with exactly one [`ExecOutput::Exited`] or
//!   [`ExecOutput::FailedToStart`]. A non-200 status carries a JSON [`AgentError`].
//!
//! # Versioning
//! [`PROTO_VERSION`] is bumped on any incompatible change of a message or method; an agent
//! speaks `PROTO_MIN..=PROTO_VERSION`. New optional fields use `#[serde(default)]` and do
//! not bump it. The agent binary is rebuilt into every initramfs, so host and agent
//! usually match; the range matters for VMs that outlive a daemon upgrade.
//!
//! The bytes of every message kind are pinned by `tests/golden.rs` (one fixture each under
//! `tests/golden/`). When it fails, the change is on the wire: postcard encodes enum
//! variants by index and struct fields by position, so reordering, removing or inserting
//! a variant or field is incompatible (bump [`PROTO_VERSION`], keep the old encoding while
//! `PROTO_MIN` still allows it); an appended enum variant is compatible only if it is never
//! sent to a peer too old to know it. Either way: a COMPATIBILITY.md line, then the
//! fixture updated by hand.
//!
//! This protocol stays behind the daemon: clients of `bangerd` never see it (the daemon
//! translates exec streams to its own framing, `banger_api::exec`), so it may change with
//! the agent alone.

use serde::{Deserialize, Serialize};

pub mod auth;
pub mod frame;
pub mod modindex;
pub mod proc_net;
pub mod serial_sync;

/// The protocol version this crate speaks (2: the authenticated hello).
pub const PROTO_VERSION: u32 = 2;
/// The oldest protocol version this crate still speaks: an agent that cannot prove the
/// boot's secret is never accepted.
pub const PROTO_MIN: u32 = 2;

/// The vsock port the agent dials on the host (CID 2).
pub const AGENT_VSOCK_PORT: u32 = 1025;
/// The vsock context id of the host.
pub const HOST_CID: u32 = 2;
/// The vsock context id every guest gets (each VM has its own vsock device).
pub const GUEST_CID: u32 = 3;
/// The name of the virtio-serial port of the fallback channel (`/sys/class/virtio-ports/*/name`).
pub const SERIAL_PORT_NAME: &str = "org.banger.agent.0";

/// Request paths of the agent's HTTP/2 server.
pub mod paths {
    /// See the crate docs.
    pub const HELLO: &str = "/v1/hello";
    /// See the crate docs.
    pub const CLOCK: &str = "/v1/clock";
    /// See the crate docs.
    pub const IDENTITY: &str = "/v1/identity";
    /// See the crate docs.
    pub const SHUTDOWN: &str = "/v1/shutdown";
    /// See the crate docs.
    pub const EXEC: &str = "/v1/exec";
    /// See the crate docs.
    pub const READ_FILE: &str = "/v1/read-file";
    /// See the crate docs.
    pub const AUTHORIZED_KEY: &str = "/v1/authorized-key";
    /// See the crate docs.
    pub const FILES_PUT: &str = "/v1/files/put";
    /// See the crate docs.
    pub const FILES_GET: &str = "/v1/files/get";
    /// See the crate docs.
    pub const CONNECT: &str = "/v1/connect";
}

/// The request header carrying the JSON params of methods whose body is a raw stream.
pub const PARAMS_HEADER: &str = "banger-params";

/// Reads a small file in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFile {
    /// Absolute path in the guest.
    pub path: String,
    /// Refuse files larger than this (the agent answers 400).
    pub max_bytes: u64,
}

/// A small file's content (lossy UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileContent {
    /// The text.
    pub data: String,
}

/// Authorizes an SSH public key for a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddAuthorizedKey {
    /// User name (`root`).
    pub user: String,
    /// One `authorized_keys` line (`ssh-ed25519 AAAA… banger`).
    pub key: String,
}

/// Where an uploaded tar stream goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutFiles {
    /// An absolute guest directory; created (with parents) if missing. Entries are
    /// extracted below it; entries escaping it (`..`, absolute, through symlinks) are
    /// refused.
    pub dest: String,
    /// Owner of what is extracted (`uid:gid` or a user name); default root. Modes, symlinks
    /// and mtimes come from the archive.
    pub owner: Option<String>,
}

/// The outcome of an upload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    /// Entries extracted.
    pub entries: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Why the upload failed, if it did (what was extracted before stays).
    pub error: Option<String>,
}

/// What to download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetFiles {
    /// An absolute guest path: a file or a directory tree.
    pub path: String,
}

/// A TCP connection to a port inside the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    /// The guest port on 127.0.0.1.
    pub port: u16,
}

/// Kernel command-line keys the agent reads from `/proc/cmdline` (set by the host).
pub mod cmdline {
    /// `banger.channel=vsock|serial`: which transport to open.
    pub const CHANNEL: &str = "banger.channel";
    /// `banger.hostname=NAME`.
    pub const HOSTNAME: &str = "banger.hostname";
    /// `banger.init=agent|image|auto` (see [`super::InitMode`]).
    pub const INIT: &str = "banger.init";
    /// `banger.net=user|none`: with `user` the agent configures `eth0` statically
    /// (10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3).
    pub const NET: &str = "banger.net";
    /// `banger.clock=UNIX_SECONDS`: the host's wall clock when it built the command line,
    /// set before anything else runs (refined later over [`super::paths::CLOCK`]).
    pub const CLOCK: &str = "banger.clock";
    /// `banger.ready=none|sysinit|multi-user` (see [`super::Readiness`]).
    pub const READY: &str = "banger.ready";
    /// `banger.modules=1`: [`super::disks::MODULES`] is the kernel's modules disk (see
    /// [`super::modindex`]), to mount at `/lib/modules/<release>`.
    pub const MODULES: &str = "banger.modules";
}

/// Guest disks, in the order the VMM attaches them (`/dev/vda` … `/dev/vdd`).
pub mod disks {
    /// The image's `rootfs.ext4`, read-only, shared by every VM of the image.
    pub const BASE: &str = "/dev/vda";
    /// The VM's own sparse ext4 disk holding the overlay's `upper/` and `work/`.
    pub const UPPER: &str = "/dev/vdb";
    /// The VM's persistent work disk, mounted at `/root`; seeded from the image's `/root`
    /// on first boot.
    pub const WORK: &str = "/dev/vdc";
    /// The kernel's modules disk (read-only, shared by every VM of that kernel and agent),
    /// attached when the command line has [`super::cmdline::MODULES`].
    pub const MODULES: &str = "/dev/vdd";
}

/// Who runs as PID 1 once the root is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InitMode {
    /// The agent stays PID 1 (reaps zombies, serves the host). For container images.
    Agent,
    /// The image's own init (`/sbin/init`, e.g. systemd) becomes PID 1; the agent keeps
    /// serving as its child.
    Image,
    /// `Image` when the image has an executable `/sbin/init`, else `Agent`.
    #[default]
    Auto,
}

impl InitMode {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            InitMode::Agent => "agent",
            InitMode::Image => "image",
            InitMode::Auto => "auto",
        }
    }

    /// Parses the command-line spelling.
    pub fn parse(s: &str) -> Option<InitMode> {
        match s {
            "agent" => Some(InitMode::Agent),
            "image" => Some(InitMode::Image),
            "auto" => Some(InitMode::Auto),
            _ => None,
        }
    }
}

/// How far the image's own init must have come before the agent reports the guest ready
/// (with [`InitMode::Agent`] there is nothing to wait for). Without it a first command races
/// the init's early setup: systemd's tmpfiles cleaning `/tmp` under `apt-get`, devices and
/// mounts still appearing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    /// As soon as the agent runs.
    None,
    /// systemd's `sysinit.target`: devices, tmpfiles, local mounts, sysctl (the default).
    #[default]
    Sysinit,
    /// systemd's `multi-user.target`: every service the image enables (sshd, docker…).
    MultiUser,
}

impl Readiness {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::None => "none",
            Readiness::Sysinit => "sysinit",
            Readiness::MultiUser => "multi-user",
        }
    }

    /// Parses the command-line spelling.
    pub fn parse(s: &str) -> Option<Readiness> {
        match s {
            "none" => Some(Readiness::None),
            "sysinit" => Some(Readiness::Sysinit),
            "multi-user" => Some(Readiness::MultiUser),
            _ => None,
        }
    }

    /// The systemd unit to wait for.
    pub fn systemd_target(self) -> Option<&'static str> {
        match self {
            Readiness::None => None,
            Readiness::Sysinit => Some("sysinit.target"),
            Readiness::MultiUser => Some("multi-user.target"),
        }
    }
}

/// A JSON body with no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The error body of a non-200 answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    /// What went wrong, for a human.
    pub message: String,
}

/// The host's half of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloRequest {
    /// Oldest protocol version the host speaks.
    pub proto_min: u32,
    /// Newest protocol version the host speaks.
    pub proto_max: u32,
    /// The host's banger version, for the agent's log.
    pub host_version: String,
    /// A fresh random challenge, hex ([`auth::proof`]).
    #[serde(default)]
    pub nonce: String,
}

/// The agent's half of the handshake: who it is and how the boot went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version chosen for this connection (the highest both speak).
    pub proto_version: u32,
    /// Oldest protocol version the agent speaks.
    pub proto_min: u32,
    /// Newest protocol version the agent speaks.
    pub proto_max: u32,
    /// The agent's crate version.
    pub agent_version: String,
    /// `/proc/sys/kernel/random/boot_id`: tells a reconnect from a reboot.
    pub boot_id: String,
    /// The init mode in effect (never `Auto`).
    pub init: InitMode,
    /// Boot stages the guest passed, in order, with guest uptime.
    pub stages: Vec<StageTime>,
    /// The running kernel's release (`uname -r`).
    pub kernel_release: String,
    /// [`auth::proof`] of the request's nonce and this `boot_id` under the boot's secret.
    #[serde(default)]
    pub proof: String,
}

/// One boot stage reached in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageTime {
    /// Which stage.
    pub stage: GuestStage,
    /// Guest uptime (`CLOCK_BOOTTIME`) when it was reached, in milliseconds.
    pub uptime_ms: u64,
}

/// Boot stages inside the guest, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestStage {
    /// The agent runs as `/init` (pseudo-filesystems mounted).
    AgentStarted,
    /// The initramfs' kernel modules are loaded.
    ModulesLoaded,
    /// `/` is the overlay of the base image and the upper disk.
    RootAssembled,
    /// The work disk is mounted at `/root`.
    WorkMounted,
    /// Hostname, `/etc/hosts`, `resolv.conf` and the network are applied.
    Configured,
    /// PID 1 was handed to the image's init (only with [`InitMode::Image`]).
    InitHandedOver,
    /// The image's init reached the [`Readiness`] asked for (only with [`InitMode::Image`]).
    InitReady,
}

/// Sets the guest's wall clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetClock {
    /// Nanoseconds since the Unix epoch (UTC).
    pub unix_nanos: u128,
}

/// A fork's own identity, sent on its first connection after it resumed from a snapshot
/// (every fork of one snapshot starts as a copy of the same memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetIdentity {
    /// The new hostname (also written to `/etc/hostname` and `/etc/hosts`).
    pub hostname: String,
    /// Host randomness mixed into the kernel's entropy pool, which is then reseeded: no
    /// two forks produce the same random bytes (at most [`MAX_SEED`] bytes).
    pub seed: Vec<u8>,
    /// The agent secret from now on ([`auth::SECRET_LEN`] bytes): later hellos prove it.
    pub secret: Vec<u8>,
    /// The wall clock, nanoseconds since the Unix epoch (a snapshot's clock is old).
    pub unix_nanos: u128,
    /// A key to authorize as [`paths::AUTHORIZED_KEY`] would, in the same round trip.
    #[serde(default)]
    pub authorize: Option<AddAuthorizedKey>,
}

/// What a fork answers to [`SetIdentity`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityTaken {
    /// The guest's SSH host public keys after the identity (`type base64 [comment]`, one
    /// per key file present, at most [`MAX_HOST_KEY`] bytes each). `None`: an agent that
    /// predates the field (it answered [`Empty`]).
    #[serde(default)]
    pub host_keys: Option<Vec<String>>,
    /// Why `authorize` failed (the identity itself was taken).
    #[serde(default)]
    pub authorize_error: Option<String>,
}

/// The most bytes of one host public key file [`IdentityTaken`] carries.
pub const MAX_HOST_KEY: usize = 16 << 10;

/// The most seed bytes [`SetIdentity`] carries.
pub const MAX_SEED: usize = 512;

/// Asks the agent to power the guest off cleanly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownRequest {}

/// Terminal size of a pty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// The first frame of an exec request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Extra environment (`KEY`, `VALUE`), over the agent's defaults (`PATH`, `HOME`,
    /// `USER`, `TERM` when a tty is asked for).
    pub env: Vec<(String, String)>,
    /// Working directory; default the user's home.
    pub cwd: Option<String>,
    /// User name or numeric uid (`uid[:gid]`), looked up in the guest's `/etc/passwd`;
    /// default `root`.
    pub user: Option<String>,
    /// Run on a new pty of this size (stdout and stderr then arrive as stdout).
    pub tty: Option<TtySize>,
    /// `TERM` for the pty (ignored without one).
    pub term: Option<String>,
}

/// Frames after the [`ExecRequest`] in an exec request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecInput {
    /// Bytes for the process's stdin (or the pty).
    Stdin(Vec<u8>),
    /// No more stdin: the process's stdin is closed (with a pty: `^D` is sent).
    StdinEof,
    /// The pty's new size.
    Resize(TtySize),
    /// Deliver signal `N` to the process (its process group with a pty).
    Signal(i32),
}

/// Frames of an exec response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecOutput {
    /// The process runs with this guest pid.
    Started {
        /// Guest pid.
        pid: u32,
    },
    /// Bytes the process wrote to stdout (or the pty).
    Stdout(Vec<u8>),
    /// Bytes the process wrote to stderr.
    Stderr(Vec<u8>),
    /// The process ended. Last frame.
    Exited(ExitStatus),
    /// The process could not be started. Last frame.
    FailedToStart(StartFailure),
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// Why a process could not be started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFailure {
    /// What kind of failure.
    pub kind: StartFailureKind,
    /// A message naming the program and the cause, e.g.
    /// `"nosuch: command not found in PATH=/usr/bin:/bin"`.
    pub message: String,
}

/// The classes of start failures a caller may treat differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartFailureKind {
    /// ENOENT: no such program (shell convention: exit 127).
    NotFound,
    /// EACCES: not executable (shell convention: exit 126).
    PermissionDenied,
    /// No such user, bad working directory, or anything else (exit 126).
    Other,
}

impl StartFailure {
    /// The shell's exit code for this failure (127 not found, 126 otherwise).
    pub fn shell_code(&self) -> i32 {
        match self.kind {
            StartFailureKind::NotFound => 127,
            StartFailureKind::PermissionDenied | StartFailureKind::Other => 126,
        }
    }
}

/// Picks the protocol version both sides speak, if any.
pub fn negotiate(host_min: u32, host_max: u32, agent_min: u32, agent_max: u32) -> Option<u32> {
    let low = host_min.max(agent_min);
    let high = host_max.min(agent_max);
    (low <= high).then_some(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate(1, 3, 2, 5), Some(3));
        assert_eq!(negotiate(1, 1, 1, 1), Some(1));
        assert_eq!(negotiate(1, 1, 2, 2), None);
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(ExitStatus::Code(7).shell_code(), 7);
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
        let f = StartFailure {
            kind: StartFailureKind::NotFound,
            message: String::new(),
        };
        assert_eq!(f.shell_code(), 127);
    }

    #[test]
    fn init_mode_round_trips() {
        for m in [InitMode::Agent, InitMode::Image, InitMode::Auto] {
            assert_eq!(InitMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(InitMode::parse("systemd"), None);
    }
}
