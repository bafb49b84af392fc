//! banger-client: the one client engine of `bangerd`. Every front end (the `banger` CLI, and
//! later an MCP server or a remote client) stands on this crate: the socket transport and
//! typed calls ([`transport`]) to this machine's daemon or another host's over ssh
//! ([`endpoint`], [`ssh`]), starting a daemon on first use ([`autostart`]), exec
//! sessions ([`exec`]), file transfer with the host's one confined extractor
//! ([`transfer`]), workspace selection ([`workspace`]), `vm run`'s client half ([`run`])
//! and the guest's changes to a workspace as a patch ([`diff`]).
//!
//! What is not here: argument parsing, the terminal (raw mode, window size, signals from
//! the keyboard), rendering, and the configuration file's mapping onto options. Policy
//! (default image and kernel, VM names, `--rm`) is the daemon's.

pub mod autostart;
pub mod diff;
pub mod endpoint;
pub mod exec;
pub mod lease;
pub mod run;
pub mod ssh;
pub mod transfer;
pub mod transport;
pub mod upload;
pub mod workspace;

pub use endpoint::{Endpoint, SshTarget};
pub use transport::{Client, ClientError};

/// An error of this crate: the daemon's (typed, with its code), an interrupted step, or
/// a local or guest-side failure with its context chain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon refused or could not be reached (its [`banger_api::ApiError`] inside).
    #[error(transparent)]
    Daemon(#[from] ClientError),
    /// The front end's interrupt ended the step named here.
    #[error("interrupted while {0}")]
    Interrupted(String),
    /// Anything else: a local file, a guest's refusal, a broken stream.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl Error {
    /// The daemon's error, when that is what this is.
    pub fn api(&self) -> Option<&banger_api::ApiError> {
        match self {
            Error::Daemon(ClientError::Api(api)) => Some(api),
            Error::Failed(e) => e
                .chain()
                .find_map(|c| match c.downcast_ref::<ClientError>() {
                    Some(ClientError::Api(api)) => Some(api),
                    _ => None,
                }),
            _ => None,
        }
    }
}

/// Makes a user-typed path absolute against this process's working directory (the daemon
/// has its own), without resolving symlinks: the daemon validates and canonicalises.
pub fn absolute(path: &std::path::Path) -> Result<String, Error> {
    let abs = std::path::absolute(path).map_err(anyhow::Error::new)?;
    abs.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("path {} is not valid UTF-8", abs.display()).into())
}

/// A reference that names a path on the client's side, split: its prefix (`oci:`,
/// `oci-archive:` or `docker-archive:`), the path, and what follows it (`:TAG`, `:IMAGE`).
/// What follows the path stays as typed (paths with ':' are not supported, as in skopeo).
pub fn split_local_source(reference: &str) -> Option<(&'static str, &str, Option<&str>)> {
    for prefix in ["oci:", "oci-archive:", "docker-archive:"] {
        if let Some(rest) = reference.strip_prefix(prefix) {
            let (path, suffix) = if prefix == "docker-archive:" {
                // The image selector may itself hold ':' and '/' (`localhost:5000/app:v1`).
                match rest.split_once(':') {
                    Some((p, sel)) => (p, Some(sel)),
                    None => (rest, None),
                }
            } else {
                match rest.rsplit_once(':') {
                    Some((p, t)) if !t.contains('/') => (p, Some(t)),
                    _ => (rest, None),
                }
            };
            return Some((prefix, path, suffix));
        }
    }
    None
}

/// `reference` with its path (see [`split_local_source`]) replaced by `path`.
pub fn with_source_path(reference: &str, path: &str) -> String {
    match split_local_source(reference) {
        Some((prefix, _, Some(suffix))) => format!("{prefix}{path}:{suffix}"),
        Some((prefix, _, None)) => format!("{prefix}{path}"),
        None => reference.to_string(),
    }
}

/// `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` and `docker-archive:FILE[:IMAGE]` name paths
/// on the client's side: make them absolute, as the daemon has another working directory.
pub fn local_source_absolute(reference: &str) -> Result<String, Error> {
    match split_local_source(reference) {
        Some((_, path, _)) => Ok(with_source_path(
            reference,
            &absolute(std::path::Path::new(path))?,
        )),
        None => Ok(reference.to_string()),
    }
}

/// A byte stream to TCP `port` inside `vm` (`vm.proxy`: an ssh `ProxyCommand`'s way in,
/// through the agent's channel); the daemon ends it when either side closes.
pub async fn open_proxy(
    client: &Client,
    vm: &str,
    port: u16,
) -> Result<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + use<>, Error> {
    let params = banger_api::vm::VmProxyParams {
        vm: vm.to_string(),
        port,
    };
    Ok(client
        .upgrade::<banger_api::methods::vm::Proxy>(&params)
        .await?)
}
