//! The early phase's error: what failed, with the path and errno, ready for the
//! `banger-agent: FATAL: …` line.

use std::fmt;
use std::io;

/// A failed boot step.
#[derive(Debug)]
pub struct BootError(pub String);

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `io::Result` → [`BootError`] naming the step.
pub trait Context<T> {
    /// Prefixes the error with `what()`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, BootError>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, BootError> {
        self.map_err(|e| BootError(format!("{}: {e}", what())))
    }
}
