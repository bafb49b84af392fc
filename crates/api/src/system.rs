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
