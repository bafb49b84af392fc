//! `kernel import --host`: the running kernel's `/boot/vmlinuz-$(uname -r)`, its
//! `/boot/initrd.img-…` and `/lib/modules/…` (the latter two when present).

use std::path::Path;

use crate::error::OpError;
use crate::fsutil;

use super::manifest::{INITRD, MODULES};
use super::staging::{Staged, stage_kernel_file};

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

#[cfg(test)]
mod tests {
    use super::*;
    use banger_testkit::fake_kernel;

    /// A `/`-like tree with the files a Debian host keeps for `release`.
    fn host_root(release: &str, initrd: bool, modules: bool) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let boot = root.path().join("boot");
        std::fs::create_dir_all(&boot).expect("mkdir");
        std::fs::write(
            boot.join(format!("vmlinuz-{release}")),
            fake_kernel::gzip_bzimage(release),
        )
        .expect("write");
        // Another release's files must not be picked up.
        std::fs::write(boot.join("vmlinuz-5.10.0-old"), b"other").expect("write");
        if initrd {
            std::fs::write(boot.join(format!("initrd.img-{release}")), b"initrd").expect("write");
        }
        if modules {
            let m = root.path().join(format!("lib/modules/{release}/kernel/fs"));
            std::fs::create_dir_all(&m).expect("mkdir");
            std::fs::write(m.join("ext4.ko"), b"ko").expect("write");
        }
        root
    }

    #[test]
    fn takes_the_running_release_with_initrd_and_modules() {
        let root = host_root("6.1.0-99-amd64", true, true);
        let staging = tempfile::tempdir().expect("tempdir");
        let staged = import_release(root.path(), "6.1.0-99-amd64", staging.path()).expect("ok");
        assert!(staged.source.ends_with("boot/vmlinuz-6.1.0-99-amd64"));
        assert_eq!(
            std::fs::read(staging.path().join("vmlinuz")).expect("vmlinuz"),
            fake_kernel::gzip_bzimage("6.1.0-99-amd64")
        );
        assert_eq!(
            std::fs::read(staging.path().join(INITRD)).expect("initrd"),
            b"initrd"
        );
        assert!(staging.path().join("modules/kernel/fs/ext4.ko").is_file());
    }

    #[test]
    fn initrd_and_modules_are_optional() {
        let root = host_root("6.1.0-99-amd64", false, false);
        let staging = tempfile::tempdir().expect("tempdir");
        import_release(root.path(), "6.1.0-99-amd64", staging.path()).expect("ok");
        assert!(staging.path().join("vmlinuz").is_file());
        assert!(!staging.path().join(INITRD).exists());
        assert!(!staging.path().join(MODULES).exists());
    }

    #[test]
    fn a_missing_boot_image_is_not_found_and_says_what_to_do() {
        let root = host_root("6.1.0-99-amd64", true, true);
        let staging = tempfile::tempdir().expect("tempdir");
        let err = import_release(root.path(), "6.12.0-running", staging.path())
            .expect_err("no image for this release");
        assert_eq!(err.code(), banger_api::ErrorCode::NotFound);
        let msg = err.to_string();
        assert!(
            msg.contains("boot/vmlinuz-6.12.0-running") && msg.contains("--deb"),
            "{msg}"
        );
        // Nothing was staged.
        assert_eq!(std::fs::read_dir(staging.path()).expect("ls").count(), 0);
    }

    #[test]
    fn a_boot_file_that_is_not_a_kernel_is_refused() {
        let root = host_root("6.1.0-99-amd64", false, false);
        std::fs::write(root.path().join("boot/vmlinuz-broken"), b"not a kernel").expect("w");
        let staging = tempfile::tempdir().expect("tempdir");
        let err = import_release(root.path(), "broken", staging.path()).expect_err("refused");
        assert!(
            err.to_string().contains("not a Linux kernel image"),
            "{err}"
        );
    }
}
