//! Results of the daemon-level methods.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PingResult {
    pub ok: bool,
    pub pid: u32,
    pub uptime_seconds: u64,
    /// The daemon's package version (empty from daemons older than this field).
    #[serde(default)]
    pub version: String,
    /// [`crate::API_VERSION`] of the daemon (0 from daemons older than this field).
    #[serde(default)]
    pub api_version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub api_version: u32,
    pub pid: u32,
    pub state_dir: String,
    pub cache_dir: String,
    pub socket_path: String,
    /// How this daemon was started: `systemd unit NAME (user manager)` (or `system
    /// manager`), `banger CLI (on demand)` or `by hand`. Empty from daemons older than
    /// the field.
    #[serde(default)]
    pub started_by: String,
}

/// Result of `daemon.shutdown`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShutdownResult {
    pub stopping: bool,
}

/// Params of methods that take none.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Params of `upload` (see [`crate::vm::STREAM_UPGRADE`]): the client then sends exactly
/// `size` bytes and half-closes; the daemon answers with an [`UploadResult`] and closes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadParams {
    pub size: u64,
    /// The file's name on the client (a plain name: no '/'): kept, as what the daemon
    /// derives from a path (an image's default name) comes from it.
    pub name: String,
}

/// The answer of `upload`, on the stream: where the file is on the daemon's host (kept
/// until `upload.delete` or the daemon's next start), or why it is not.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Params of `upload.delete`: a path `upload` answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRef {
    pub path: String,
}
