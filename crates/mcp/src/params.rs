//! The tools' arguments (their JSON schemas are derived from these types, doc comments
//! included: they are what an agent reads) and the checks serde cannot express.

use std::time::Duration;

use rmcp::schemars::JsonSchema;
use serde::Deserialize;

/// Default and largest `timeout_secs` of `sandbox_exec`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;
pub const MAX_TIMEOUT_SECS: u64 = 3600;
/// Bytes kept of each of stdout and stderr.
pub const OUTPUT_CAP: usize = 1 << 20;
/// Default and largest `max_bytes` of `sandbox_read_file`.
pub const DEFAULT_READ_MAX: u64 = 1 << 20;
pub const MAX_READ_MAX: u64 = 8 << 20;
/// Largest `content` of `sandbox_write_file`.
pub const MAX_WRITE_BYTES: usize = 16 << 20;

/// A sandbox's network scope, enforced outside the guest.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// The internet and DNS; not the host, its LAN or link-local addresses (the default).
    Public,
    /// `public` plus the host's loopback at the gateway 10.0.2.2.
    Host,
    /// Whatever the host reaches.
    Any,
    /// No network device.
    None,
}

impl Net {
    pub fn mode(self) -> banger_api::vm::NetMode {
        use banger_api::vm::NetMode;
        match self {
            Net::Public => NetMode::Public,
            Net::Host => NetMode::Host,
            Net::Any => NetMode::Any,
            Net::None => NetMode::None,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    /// Image name or id (see `banger image list`); omit for banger's default image
    /// (a Debian, pulled on first use).
    pub image: Option<String>,
    /// Name for the sandbox (lowercase letters, digits, '-'); omit to let banger pick one
    /// (`<workspace dir name or "run">-<4 hex>`).
    pub name: Option<String>,
    /// What the sandbox may reach: `public` (default), `host`, `any` or `none`.
    pub net: Option<Net>,
    /// Allow only these destinations (and DNS): a domain, an IP address or a CIDR, with an
    /// optional `:PORT`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Guest ports to publish on the host: `[IP:]HOST:GUEST[/tcp|udp]` (127.0.0.1 unless
    /// an IP is given).
    #[serde(default)]
    pub ports: Vec<String>,
    /// A host directory (absolute, or relative to where `banger mcp` runs) copied into the
    /// sandbox as /root/<its name> (a git repository: its tracked and untracked-not-ignored
    /// files plus .git). Run commands there with `cwd`.
    pub workspace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct ExecArgs {
    /// The sandbox's name.
    pub sandbox: String,
    /// The program and its arguments, run as is (no shell). Give this or `command`.
    pub argv: Option<Vec<String>>,
    /// A shell command line, run with `sh -c`. Give this or `argv`.
    pub command: Option<String>,
    /// Text given to the command on its standard input (then end of input).
    pub stdin: Option<String>,
    /// Working directory in the guest [default: /root].
    pub cwd: Option<String>,
    /// Extra environment variables, NAME → value.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Seconds before the command is killed [default: 120, at most 3600].
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct ReadFileArgs {
    pub sandbox: String,
    /// Guest path; a relative path is under /root.
    pub path: String,
    /// Refuse files larger than this [default: 1 MiB, at most 8 MiB].
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct WriteFileArgs {
    pub sandbox: String,
    /// Guest path; a relative path is under /root. Missing parent directories are made;
    /// an existing file is replaced.
    pub path: String,
    /// The file's text (UTF-8), at most 16 MiB.
    pub content: String,
    /// Octal permission bits, e.g. "755" [default: "644"].
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct ListDirArgs {
    pub sandbox: String,
    /// Guest directory; a relative path is under /root [default: /root].
    pub path: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct SandboxArgs {
    /// The sandbox's name.
    pub sandbox: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct DiffArgs {
    /// The sandbox's name (one created with a `workspace`).
    pub sandbox: String,
    /// Only the summary (files changed, lines added and removed), not the patch.
    #[serde(default)]
    pub stat: bool,
}

/// The argv an exec runs: `argv` as given, or `sh -c command`; exactly one of them.
pub fn exec_argv(
    argv: Option<Vec<String>>,
    command: Option<String>,
) -> Result<Vec<String>, String> {
    match (argv, command) {
        (Some(_), Some(_)) => Err("give either argv or command, not both".into()),
        (None, None) => {
            Err("give argv (a program and its arguments) or command (a shell command line)".into())
        }
        (Some(argv), None) if argv.is_empty() => Err("argv is empty: name a program".into()),
        (Some(argv), None) => Ok(argv),
        (None, Some(command)) => Ok(vec!["/bin/sh".into(), "-c".into(), command]),
    }
}

/// `env` as the exec's pairs; a name must be non-empty, without '=' or NUL.
pub fn exec_env(
    env: std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    for (name, value) in &env {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(format!(
                "env: {name:?} is not a valid variable name (or its value holds NUL)"
            ));
        }
    }
    Ok(env.into_iter().collect())
}

/// `timeout_secs` checked against its bounds, or the default.
pub fn exec_timeout(secs: Option<u64>) -> Result<Duration, String> {
    match secs.unwrap_or(DEFAULT_TIMEOUT_SECS) {
        0 => Err("timeout_secs must be at least 1".into()),
        s if s > MAX_TIMEOUT_SECS => Err(format!(
            "timeout_secs {s} is over the limit of {MAX_TIMEOUT_SECS}; run longer jobs in the background (`nohup … &`) and poll"
        )),
        s => Ok(Duration::from_secs(s)),
    }
}

/// `max_bytes` checked against its bounds, or the default.
pub fn read_limit(max: Option<u64>) -> Result<u64, String> {
    match max.unwrap_or(DEFAULT_READ_MAX) {
        0 => Err("max_bytes must be at least 1".into()),
        m if m > MAX_READ_MAX => Err(format!("max_bytes {m} is over the limit of {MAX_READ_MAX}")),
        m => Ok(m),
    }
}

/// An octal mode such as "755" or "0644" (permission, setgid and sticky bits; no setuid).
pub fn file_mode(mode: Option<&str>) -> Result<u32, String> {
    let Some(text) = mode else {
        return Ok(0o644);
    };
    let bad = || format!("mode {text:?} is not an octal mode such as \"644\" or \"755\"");
    if text.is_empty() || text.len() > 5 {
        return Err(bad());
    }
    let mode = u32::from_str_radix(text, 8).map_err(|_| bad())?;
    if mode > 0o7777 {
        return Err(bad());
    }
    if mode & 0o4000 != 0 {
        return Err(format!("mode {text:?}: setuid files are not written"));
    }
    Ok(mode)
}

/// The guest directory and the file name a write goes to: relative paths are under
/// /root; the path must name a file (not `/`, `.`, `..` or a trailing `/`).
pub fn split_file_path(path: &str) -> Result<(String, String), String> {
    if path.is_empty() {
        return Err("path is empty: name a file".into());
    }
    let abs = banger_client::transfer::guest_absolute(path);
    if abs.ends_with('/') {
        return Err(format!("{path:?} ends with '/': name a file"));
    }
    let (dir, name) = abs.rsplit_once('/').unwrap_or(("", abs.as_str()));
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("{path:?} does not name a file"));
    }
    let dir = if dir.is_empty() { "/" } else { dir };
    Ok((dir.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_takes_argv_or_a_command_but_not_both() {
        assert_eq!(
            exec_argv(Some(vec!["ls".into(), "-l".into()]), None),
            Ok(vec!["ls".to_string(), "-l".to_string()])
        );
        assert_eq!(
            exec_argv(None, Some("echo hi".into())),
            Ok(vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                "echo hi".to_string()
            ])
        );
        assert!(exec_argv(Some(vec!["ls".into()]), Some("ls".into())).is_err());
        assert!(exec_argv(None, None).is_err());
        assert!(exec_argv(Some(vec![]), None).is_err());
    }

    #[test]
    fn env_names_are_checked() {
        let env =
            |k: &str, v: &str| std::collections::BTreeMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            exec_env(env("A_B", "x=y")),
            Ok(vec![("A_B".into(), "x=y".into())])
        );
        for (k, v) in [("", "x"), ("A=B", "x"), ("A\0", "x"), ("A", "x\0")] {
            assert!(exec_env(env(k, v)).is_err(), "{k:?}={v:?}");
        }
    }

    #[test]
    fn timeouts_default_and_are_bounded() {
        assert_eq!(
            exec_timeout(None),
            Ok(Duration::from_secs(DEFAULT_TIMEOUT_SECS))
        );
        assert_eq!(exec_timeout(Some(2)), Ok(Duration::from_secs(2)));
        assert!(exec_timeout(Some(0)).is_err());
        assert!(exec_timeout(Some(MAX_TIMEOUT_SECS + 1)).is_err());
        assert!(exec_timeout(Some(MAX_TIMEOUT_SECS)).is_ok());
    }

    #[test]
    fn read_limits_default_and_are_bounded() {
        assert_eq!(read_limit(None), Ok(DEFAULT_READ_MAX));
        assert!(read_limit(Some(0)).is_err());
        assert!(read_limit(Some(MAX_READ_MAX + 1)).is_err());
    }

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(file_mode(None), Ok(0o644));
        assert_eq!(file_mode(Some("755")), Ok(0o755));
        assert_eq!(file_mode(Some("0600")), Ok(0o600));
        assert_eq!(file_mode(Some("1777")), Ok(0o1777));
        for bad in ["", "9", "rwx", "77777", "-1", "0x1ff"] {
            assert!(file_mode(Some(bad)).is_err(), "{bad}");
        }
        assert!(file_mode(Some("4755")).unwrap_err().contains("setuid"));
    }

    #[test]
    fn write_paths_split_into_directory_and_name() {
        assert_eq!(
            split_file_path("/etc/x.conf"),
            Ok(("/etc".into(), "x.conf".into()))
        );
        assert_eq!(
            split_file_path("a/b.txt"),
            Ok(("/root/a".into(), "b.txt".into()))
        );
        assert_eq!(split_file_path("/top"), Ok(("/".into(), "top".into())));
        for bad in ["/", "/root/", "/root/..", "x/.", ""] {
            assert!(split_file_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_and_mistyped_arguments_are_refused() {
        let e = serde_json::from_value::<ExecArgs>(serde_json::json!({"sandbox": "a", "cmd": "x"}));
        assert!(e.is_err());
        let e =
            serde_json::from_value::<ExecArgs>(serde_json::json!({"sandbox": "a", "argv": "ls"}));
        assert!(e.is_err());
        let e = serde_json::from_value::<CreateArgs>(serde_json::json!({"net": "lan"}));
        assert!(e.is_err());
        let ok = serde_json::from_value::<CreateArgs>(serde_json::json!({"net": "none"}));
        assert!(matches!(ok.map(|a| a.net), Ok(Some(Net::None))));
    }
}
