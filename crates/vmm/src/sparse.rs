//! Copies of sparse files (VM disks, guest memory) that keep their holes.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Copies `from` to a new file `to` keeping its holes (a VM disk of 8 GiB apparent size
/// holds a few MiB): only the data ranges `SEEK_DATA`/`SEEK_HOLE` find are copied, with
/// `copy_file_range`, and the copy is fsynced. `std::fs::copy` would fill the holes.
pub fn copy_sparse(from: &Path, to: &Path) -> io::Result<()> {
    let err = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let src = std::fs::File::open(from).map_err(|e| err("opening", e))?;
    let len = src.metadata().map_err(|e| err("stat", e))?.len();
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| err("creating", e))?;
    dst.set_len(len).map_err(|e| err("sizing", e))?;
    let len = i64::try_from(len).map_err(|_| err("sizing", io::Error::other("too large")))?;
    let mut at: i64 = 0;
    while at < len {
        // SAFETY: lseek on an open fd; no memory is passed.
        let data = unsafe { libc::lseek(src.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after `at`: the rest is a hole
            }
            return Err(err("seeking", e));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(err("seeking", io::Error::last_os_error()));
        }
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            let want = usize::try_from(hole - off_in).unwrap_or(usize::MAX);
            // SAFETY: both fds are open; the offsets are valid i64s the kernel updates.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    want,
                    0,
                )
            };
            if n < 0 {
                return Err(err("copying", io::Error::last_os_error()));
            }
            if n == 0 {
                break; // the file shrank under us
            }
        }
        at = hole;
    }
    dst.sync_all().map_err(|e| err("fsync", e))
}
