//! One error type for the crate, with variants the daemon maps to user-facing messages.

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error("invalid image source {0:?}: {1}")]
    Source(String, String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("platform {wanted} not available; the image provides: {}", if available.is_empty() { "(none)".to_string() } else { available.join(", ") })]
    PlatformNotAvailable {
        wanted: String,
        available: Vec<String>,
    },
    #[error("network error talking to {registry}: {message}")]
    Network { registry: String, message: String },
    #[error("registry protocol error: {0}")]
    Protocol(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid layer {layer}: entry {entry:?}: {reason}")]
    InvalidLayer {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("I/O error: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sink rejected entry {path:?}: {source}")]
    Sink {
        path: String,
        #[source]
        source: crate::entry::SinkError,
    },
    #[error("credentials: {0}")]
    Credentials(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the failure is ENOSPC (disk full), so callers can say so plainly.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
