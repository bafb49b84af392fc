//! Loading the initramfs' kernel modules.
//!
//! `<dir>/order` lists one `.ko` file per line (relative to `<dir>`), decompressed and in
//! dependency order, so loading is one `finit_module` each, in file order. No `order`
//! file: nothing to load (a kernel with the drivers built in). `EEXIST` (built in, or
//! loaded already) is success. Other failures are logged, not fatal: a module the guest
//! does not need should not stop the boot, and one it needs shows up as the missing
//! disk or channel right after, with this line above it on the console.

use std::io;
use std::path::{Path, PathBuf};

use banger_guest_proto::modindex;

use crate::console::log;
use crate::sys;

/// Loads every module listed in `dir/order`.
pub fn load_all(dir: &Path) {
    let order = match std::fs::read_to_string(dir.join("order")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            log!("{}: {e}; loading no modules", dir.join("order").display());
            return;
        }
    };
    for name in order.lines().map(str::trim) {
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let path = dir.join(name);
        match sys::finit_module(&path, c"") {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                log!("module {}: {e}", path.display());
            }
            _ => {}
        }
    }
}

/// Where the modules disk goes: the kernel's own modules dir, where `modprobe` (banger's
/// or kmod's) and people look.
pub fn tree_dir() -> PathBuf {
    Path::new("/lib/modules").join(sys::kernel_release())
}

/// Mounts the modules disk at [`tree_dir`] and makes its `banger-modprobe` the kernel's
/// module loader (`/proc/sys/kernel/modprobe`), so modules load when first asked for.
/// An image that ships its own modules for this kernel keeps them: nothing is mounted.
/// With no `modprobe` in the image, `/usr/sbin/modprobe` becomes a link to banger's, for
/// programs that run it themselves (Docker runs `modprobe overlay`). Failures are logged,
/// not fatal: only workloads that need a module notice.
pub fn attach_disk() {
    let dir = tree_dir();
    let has_own = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
    if has_own {
        log!(
            "{} exists in the image: its modules are used, not banger's modules disk",
            dir.display()
        );
        return;
    }
    if let Err(e) = super::mounts::mount_modules(&dir) {
        log!("modules disk: {e}");
        return;
    }
    let helper = dir.join(modindex::MODPROBE_FILE);
    if let Err(e) = std::fs::write(
        "/proc/sys/kernel/modprobe",
        helper.as_os_str().as_encoded_bytes(),
    ) {
        log!("setting the kernel's modprobe to {}: {e}", helper.display());
    }
    let has_modprobe = ["/sbin", "/usr/sbin", "/bin", "/usr/bin"]
        .iter()
        .any(|d| std::fs::symlink_metadata(Path::new(d).join("modprobe")).is_ok());
    if !has_modprobe
        && Path::new("/usr/sbin").is_dir()
        && let Err(e) = std::os::unix::fs::symlink(&helper, "/usr/sbin/modprobe")
    {
        log!("linking /usr/sbin/modprobe to {}: {e}", helper.display());
    }
}
