//! `kernel import --deb`: [`banger_kernel::deb`] reads the package; here its kernel is
//! staged as `vmlinuz` or `vmlinux` like any imported file, and its errors become
//! [`OpError`]s (a bad package is the caller's fault, a failed write the host's).

use std::path::Path;

use banger_kernel::deb::{self, DebError};

use crate::error::OpError;

use super::manifest::{MODULES, VMLINUX, VMLINUZ};
use super::{Staged, stage_kernel_file};

/// Where the package's kernel lands before it is identified.
const KERNEL_TMP: &str = ".deb-kernel";

impl From<DebError> for OpError {
    fn from(e: DebError) -> Self {
        match e {
            DebError::Io {
                action,
                path,
                source,
            } => OpError::io(format!("{action} {}", path.display()), source),
            other => OpError::BadRequest(other.to_string()),
        }
    }
}

/// Unpacks the kernel (and its modules) from `deb` into `staging`.
pub fn import(deb: &Path, staging: &Path) -> Result<Staged, OpError> {
    let kernel_tmp = staging.join(KERNEL_TMP);
    deb::unpack(deb, &kernel_tmp, &staging.join(MODULES))?;
    stage_kernel_file(&kernel_tmp, staging)?;
    std::fs::remove_file(&kernel_tmp)
        .map_err(|e| OpError::io(format!("removing {}", kernel_tmp.display()), e))?;
    // stage_kernel_file wrote vmlinuz or vmlinux; nothing else to do here.
    debug_assert!(staging.join(VMLINUZ).exists() || staging.join(VMLINUX).exists());
    Ok(Staged {
        source: format!("deb:{}", deb.display()),
    })
}
