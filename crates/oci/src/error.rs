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
    /// A registry body or a descriptor is (or declares itself) over a size cap; refused
    /// before it is read further, so a hostile registry cannot exhaust memory or disk.
    #[error("{what} is larger than the {} limit", human_bytes(*limit))]
    TooLarge { what: String, limit: u64 },
    /// A bearer challenge named a token endpoint we will not talk to (credentials and
    /// requests would leave TLS, or reach a host the registry has no business naming).
    #[error("refusing token endpoint {realm:?} from {registry}: {reason}")]
    RealmRefused {
        registry: String,
        realm: String,
        reason: String,
    },
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

/// `8 MiB`, `1.5 GiB`, `512 bytes`: sizes in messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return if n.is_multiple_of(size) {
                format!("{} {unit}", n / size)
            } else {
                format!("{:.1} {unit}", n as f64 / size as f64)
            };
        }
    }
    format!("{n} bytes")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(8 << 20), "8 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
