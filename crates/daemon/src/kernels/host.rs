//! `kernel import --host`: the running kernel's `/boot/vmlinuz-$(uname -r)`, its
//! `/boot/initrd.img-…` and `/lib/modules/…` (the latter two when present).

use std::path::Path;

use crate::error::OpError;
use crate::fsutil;

use super::manifest::{INITRD, MODULES};
use super::{Staged, stage_kernel_file};

/// The running kernel's release (`uname -r`).
pub fn release() -> Result<String, OpError> {
    // SAFETY: utsname is plain data; uname fills it or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(OpError::io("uname", std::io::Error::last_os_error()));
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8(bytes).map_err(|_| OpError::Failed("uname -r is not UTF-8".into()))
}

/// Stages the host kernel found under `root` (`/` in production) for `release()`.
pub fn import(root: &Path, staging: &Path) -> Result<Staged, OpError> {
    import_release(root, &release()?, staging)
}

pub fn import_release(root: &Path, release: &str, staging: &Path) -> Result<Staged, OpError> {
    let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
    match std::fs::File::open(&vmlinuz) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OpError::NotFound(format!(
                "the running kernel's image {} does not exist (containers and some distributions keep no /boot); import a kernel with --kernel or --deb instead",
                vmlinuz.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(OpError::BadRequest(format!(
                "{} is not readable by the daemon's user ({e}); make it readable (e.g. `sudo chmod a+r {}`) or import a copy with --kernel",
                vmlinuz.display(),
                vmlinuz.display()
            )));
        }
        Err(e) => return Err(OpError::io(format!("opening {}", vmlinuz.display()), e)),
    }
    stage_kernel_file(&vmlinuz, staging)?;
    let initrd = root.join(format!("boot/initrd.img-{release}"));
    if initrd.is_file() {
        fsutil::copy_file(&initrd, &staging.join(INITRD))?;
    } else {
        tracing::info!(path = %initrd.display(), "no initrd for the host kernel");
    }
    let modules = root.join(format!("lib/modules/{release}"));
    if modules.is_dir() {
        fsutil::copy_tree(&modules, &staging.join(MODULES))?;
    } else {
        tracing::info!(path = %modules.display(), "no modules for the host kernel");
    }
    Ok(Staged {
        source: format!("host:{}", vmlinuz.display()),
    })
}
