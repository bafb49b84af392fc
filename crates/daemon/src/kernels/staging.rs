//! What every way into the kernel store shares: the staging directory's name and the
//! [`Staged`] result, and reading a kernel file to name it `vmlinuz` or `vmlinux`. A leaf
//! of `kernels/`, so the sources (`host`, `deb`, `registry`) need not reach into the store.

use std::path::Path;

use banger_kernel::image;

use crate::error::OpError;
use crate::fsutil;

use super::manifest::{VMLINUX, VMLINUZ};

/// Prefix of in-progress directories in the kernels dir.
pub const STAGING_PREFIX: &str = ".staging-";
/// Largest kernel file read into memory for inspection.
const MAX_KERNEL_FILE: u64 = 512 << 20;

/// What a source put in the staging directory, before `Kernels::finish` publishes it.
#[derive(Debug, Clone)]
pub struct Staged {
    pub source: String,
}

/// Copies a kernel file into `staging` as `vmlinuz` (bzImage) or `vmlinux` (ELF),
/// refusing anything else with a message naming the file.
pub fn stage_kernel_file(kernel: &Path, staging: &Path) -> Result<(), OpError> {
    let bytes = read_kernel(kernel)?;
    let info = image::inspect(&bytes)
        .map_err(|e| OpError::BadRequest(format!("{}: {e}", kernel.display())))?;
    let name = if info.format.is_uncompressed() {
        VMLINUX
    } else {
        VMLINUZ
    };
    fsutil::copy_file(kernel, &staging.join(name))
}

/// The architecture a kernel file says it is for, if it is a kernel we can read.
pub fn arch_of(path: &Path) -> Option<String> {
    image::inspect(&read_kernel(path).ok()?).ok()?.arch
}

pub(crate) fn read_kernel(path: &Path) -> Result<Vec<u8>, OpError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| OpError::BadRequest(format!("kernel {}: {e}", path.display())))?;
    if meta.len() > MAX_KERNEL_FILE {
        return Err(OpError::BadRequest(format!(
            "{}: {} bytes is too large for a kernel image",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| OpError::io(format!("reading {}", path.display()), e))
}
