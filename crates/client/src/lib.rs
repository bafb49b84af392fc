//! banger-client: the one client engine of `bangerd`. Every front end (the `banger` CLI, and
//! later an MCP server or a remote client) stands on this crate: the socket transport and
//! typed calls ([`transport`]), starting a daemon on first use ([`autostart`]), exec
//! sessions ([`exec`]), file transfer with the host's one confined extractor
//! ([`transfer`]), workspace selection ([`workspace`]) and `vm run`'s client half
//! ([`run`]).
//!
//! What is not here: argument parsing, the terminal (raw mode, window size, signals from
//! the keyboard), rendering, and the configuration file's mapping onto options. Policy
//! (default image and kernel, VM names, `--rm`) is the daemon's.

pub mod autostart;
pub mod exec;
pub mod transfer;
pub mod transport;

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
