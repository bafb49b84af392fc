//! One module per command group; each turns parsed args into RPCs and output.

pub mod daemon;
pub mod doctor;
pub mod image;
pub mod kernel;
pub mod version;

use std::path::Path;

/// Makes a user-typed path absolute against the CLI's working directory (the daemon has
/// its own), without resolving symlinks: the daemon validates and canonicalises.
pub fn absolute(path: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(path)?;
    abs.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("path {} is not valid UTF-8", abs.display()))
}
