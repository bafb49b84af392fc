//! Copies of sparse files (VM disks, guest memory) that keep their holes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Copies `from` to a new file `to` keeping its holes (a VM disk of 8 GiB apparent size
/// holds a few MiB): only the data ranges `SEEK_DATA`/`SEEK_HOLE` find are copied, with
/// `copy_file_range` (or, between filesystems that cannot, such as a memfd's and a
/// disk's, reads and writes that skip zero pages), and the copy is fsynced.
/// `std::fs::copy` would fill the holes.
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
        copy_range(&src, &dst, data, hole).map_err(|e| err("copying", e))?;
        at = hole;
    }
    dst.sync_all().map_err(|e| err("fsync", e))
}

/// Copies the bytes `[from, to)` of `src` to the same offsets of `dst`.
fn copy_range(src: &File, dst: &File, from: i64, to: i64) -> io::Result<()> {
    let (mut off_in, mut off_out) = (from, from);
    while off_in < to {
        let want = usize::try_from(to - off_in).unwrap_or(usize::MAX);
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
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // Another filesystem (EXDEV since Linux 5.19), or none of its own.
                Some(libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) => {
                    copy_range_by_reads(src, dst, off_in, to)
                }
                _ => Err(e),
            };
        }
        if n == 0 {
            break; // the file shrank under us
        }
    }
    Ok(())
}

/// [`copy_range`] with reads and writes, leaving pages of zeros as holes (`dst` was sized
/// with `set_len`, so it reads as zeros there).
fn copy_range_by_reads(src: &File, dst: &File, from: i64, to: i64) -> io::Result<()> {
    const PAGE: usize = 4096;
    let mut buf = vec![0u8; 1 << 20];
    let (Ok(mut at), Ok(end)) = (u64::try_from(from), u64::try_from(to)) else {
        return Err(io::Error::other("negative offset"));
    };
    while at < end {
        let want = usize::try_from(end - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = src.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break; // the file shrank under us
        }
        for (i, page) in buf[..n].chunks(PAGE).enumerate() {
            if page.iter().any(|&b| b != 0) {
                dst.write_all_at(page, at + (i * PAGE) as u64)?;
            }
        }
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn reads_and_writes_copy_the_bytes_and_leave_zero_pages_as_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        // 1 MiB data, 3 MiB of written zeros, 1 MiB data: all allocated in `from`.
        let mut bytes = vec![7u8; 1 << 20];
        bytes.extend(vec![0u8; 3 << 20]);
        bytes.extend(vec![9u8; 1 << 20]);
        std::fs::write(&from, &bytes).unwrap();
        let (src, dst) = (File::open(&from).unwrap(), File::create(&to).unwrap());
        dst.set_len(bytes.len() as u64).unwrap();
        copy_range_by_reads(&src, &dst, 0, bytes.len() as i64).unwrap();
        assert!(std::fs::read(&to).unwrap() == bytes);
        let allocated = std::fs::metadata(&to).unwrap().blocks() * 512;
        assert!(
            allocated <= (2 << 20) + (64 << 10),
            "zeros were written: {allocated}"
        );
    }

    #[test]
    fn a_sparse_copy_keeps_holes_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        let f = File::create(&from).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"end", (64 << 20) - 3).unwrap();
        copy_sparse(&from, &to).unwrap();
        assert!(std::fs::read(&to).unwrap() == std::fs::read(&from).unwrap());
        assert!(std::fs::metadata(&to).unwrap().blocks() * 512 < 1 << 20);
    }
}
