//! Thin wrappers over the libc calls the agent makes: `-1`/errno becomes `io::Error`,
//! Rust strings become C strings. A leaf module: no policy, no logging.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `-1` → the current errno as an error.
pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Bytes as a C string (a NUL inside is an `InvalidInput` error, never a panic).
pub fn cstring(bytes: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

/// A path as a C string.
pub fn cpath(path: &Path) -> io::Result<CString> {
    cstring(path.as_os_str().as_bytes())
}

/// `mount(2)`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = cstring(source)?;
    let target = cpath(target)?;
    let fstype = fstype.map(cstring).transpose()?;
    let data = data.map(cstring).transpose()?;
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast::<libc::c_void>()),
        )
    };
    cvt(r).map(drop)
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `open(2)` with `O_CLOEXEC` always added.
pub fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let p = cpath(path)?;
    // SAFETY: `p` is a valid C string; the result is checked before use.
    let fd = cvt(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: open succeeded, the fd is new and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on an fd we hold; no memory is passed.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// `kill(2)`; `ESRCH` (already gone) is not an error.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    match cvt(unsafe { libc::kill(pid, sig) }) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r.map(drop),
    }
}

/// Milliseconds since boot, suspend included (`CLOCK_BOOTTIME`).
pub fn boottime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill; CLOCK_BOOTTIME always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// Sets the wall clock (`CLOCK_REALTIME`) to `unix_nanos` since the epoch.
pub fn set_realtime(unix_nanos: u128) -> io::Result<()> {
    let secs = libc::time_t::try_from(unix_nanos / 1_000_000_000)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "time out of range"))?;
    let ts = libc::timespec {
        tv_sec: secs,
        // < 10^9, fits any c_long.
        tv_nsec: (unix_nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec.
    cvt(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) }).map(drop)
}

/// Mixes `seed` into the kernel's entropy pool, credited, and forces a reseed of the
/// CRNG so that the next random bytes depend on it (`RNDADDENTROPY`, `RNDRESEEDCRNG`):
/// a VM resumed from a snapshot otherwise draws the same stream as its siblings.
pub fn reseed_rng(seed: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // _IOW('R', 0x03, int[2]) and _IO('R', 0x07), from <linux/random.h>.
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/random")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let len = libc::c_int::try_from(seed.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seed too long"))?;
    let mut info = Vec::with_capacity(8 + seed.len());
    info.extend_from_slice(&len.saturating_mul(8).to_ne_bytes());
    info.extend_from_slice(&len.to_ne_bytes());
    info.extend_from_slice(seed);
    // SAFETY: `info` is a rand_pool_info with `buf_size` bytes of buffer after the header;
    // the kernel only reads it.
    cvt(unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) })?;
    // SAFETY: takes no argument.
    cvt(unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG as _) }).map(drop)
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid utsname to fill.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `sync(2)`.
pub fn sync() {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::sync() };
}

/// Sets atime and mtime of `path` to `secs` since the epoch without following a symlink
/// (`utimensat(AT_SYMLINK_NOFOLLOW)`).
pub fn set_mtime_nofollow(path: &Path, secs: u64) -> io::Result<()> {
    let p = cpath(path)?;
    let t = libc::timespec {
        tv_sec: libc::time_t::try_from(secs)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "time out of range"))?,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: `p` is a valid C string and `times` two valid timespecs.
    cvt(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `mknod(2)`: `mode` holds the file type (`S_IFIFO`, `S_IFCHR`, `S_IFBLK`) and permissions.
pub fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: `p` is a valid C string; the rest are plain integers.
    cvt(unsafe { libc::mknod(p.as_ptr(), mode as libc::mode_t, dev) }).map(drop)
}

/// Loads the kernel module in the (uncompressed) file at `path` with `params`
/// (`key=value …`).
pub fn finit_module(path: &Path, params: &std::ffi::CStr) -> io::Result<()> {
    let fd = open(path, libc::O_RDONLY, 0)?;
    // SAFETY: finit_module(fd, params, flags) with an open fd and a valid C string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, fd.as_raw_fd(), params.as_ptr(), 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
