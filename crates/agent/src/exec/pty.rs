//! Pseudo-terminals for exec with a tty.
//!
//! The master stays with the agent; the slave is handed to the child and **every copy of
//! it in the agent is closed right after fork** (the caller drops the [`Pty::slave`] fd),
//! otherwise reading the master never ends with `EIO` when the child exits. Needs devpts
//! mounted at `/dev/pts` (the boot code does that before serving).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use banger_guest_proto::TtySize;

use crate::sys;

/// Both ends of a new pty.
pub struct Pty {
    /// The agent's end.
    pub master: OwnedFd,
    /// The child's end (its controlling terminal).
    pub slave: OwnedFd,
}

/// Opens a pty of `size`.
pub fn open(size: TtySize) -> io::Result<Pty> {
    let master = sys::open(
        Path::new("/dev/ptmx"),
        libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK,
        0,
    )?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from a valid pointer.
    sys::cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    let slave = open_peer(&master)?;
    resize(&master, size)?;
    Ok(Pty { master, slave })
}

/// The slave of `master`: `TIOCGPTPEER` (no path lookup, right devpts instance), else the
/// classic `/dev/pts/N`.
fn open_peer(master: &OwnedFd) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags by value and returns a new fd.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd >= 0 {
        // SAFETY: the ioctl returned a new fd that nobody else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int to a valid pointer.
    sys::cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) })?;
    sys::open(
        Path::new(&format!("/dev/pts/{n}")),
        libc::O_RDWR | libc::O_NOCTTY,
        0,
    )
}

/// Sets the terminal size (the kernel sends SIGWINCH to the foreground group).
pub fn resize(master: &impl AsRawFd, size: TtySize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    sys::cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// The terminal's foreground process group (what a keyboard signal would reach).
pub fn foreground_group(master: &impl AsRawFd) -> Option<libc::pid_t> {
    let mut pgrp: libc::pid_t = 0;
    // SAFETY: TIOCGPGRP writes one pid_t to a valid pointer.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPGRP, &mut pgrp) };
    (r == 0 && pgrp > 0).then_some(pgrp)
}
