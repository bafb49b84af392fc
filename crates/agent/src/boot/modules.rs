//! Loading the initramfs' kernel modules.
//!
//! `<dir>/order` lists one `.ko` file per line (relative to `<dir>`), decompressed and in
//! dependency order, so loading is one `finit_module` each, in file order. No `order`
//! file: nothing to load (a kernel with the drivers built in). `EEXIST` (built in, or
//! loaded already) is success. Other failures are logged, not fatal: a module the guest
//! does not need should not stop the boot, and one it needs shows up as the missing
//! disk or channel right after, with this line above it on the console.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

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
        match load(&path) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                log!("module {}: {e}", path.display());
            }
            _ => {}
        }
    }
}

fn load(path: &Path) -> io::Result<()> {
    let fd = sys::open(path, libc::O_RDONLY, 0)?;
    // SAFETY: finit_module(fd, params, flags) with an open fd and an empty C string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, fd.as_raw_fd(), c"".as_ptr(), 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
