//! Async I/O on raw file descriptors (pipes, ptys, vsock sockets, virtio-serial ports)
//! through tokio's `AsyncFd`: the fd is made non-blocking and registered with the
//! runtime's epoll. Only pollable fds belong here (not regular files). A read of 0 bytes
//! is end of stream; callers decide what `EIO` means (a pty whose slave closed).
//!
//! tokio keeps a hang-up (EPOLLHUP) in the fd's readiness for good, so "ready" can stay
//! true while the fd would block: a virtio-serial port whose host left and came back.
//! Such a fd would spin; instead, would-block after a hang-up is the end of the stream
//! (reads return 0, writes fail with `BrokenPipe`), and the owner reopens it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::sys;

/// A non-blocking fd usable from async code, by reference (`read`/`write`) or as a tokio
/// stream (`AsyncRead`/`AsyncWrite`).
#[derive(Debug)]
pub struct FdStream {
    fd: AsyncFd<OwnedFd>,
}

fn raw_read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` writable bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn raw_write(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` readable bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl FdStream {
    /// Makes `fd` non-blocking and registers it (call inside a runtime with I/O enabled).
    pub fn new(fd: OwnedFd) -> io::Result<FdStream> {
        sys::set_nonblocking(&fd, true)?;
        // SAFETY: the OwnedFd owns its fd and stays inside the AsyncFd, unchanged, until
        // both drop together.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(FdStream { fd })
    }

    /// The underlying fd (for ioctls).
    pub fn get_ref(&self) -> &OwnedFd {
        self.fd.get_ref()
    }

    /// Reads what is available, waiting until something is.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let hung_up = guard.ready().is_read_closed();
            match guard.try_io(|fd| raw_read(fd.get_ref(), buf)) {
                Ok(r) => return r,
                Err(_would_block) if hung_up => return Ok(0),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes some of `buf`, waiting until the fd takes at least one byte.
    pub async fn write(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            let hung_up = guard.ready().is_write_closed();
            match guard.try_io(|fd| raw_write(fd.get_ref(), buf)) {
                Ok(r) => return r,
                Err(_would_block) if hung_up => return Err(io::ErrorKind::BrokenPipe.into()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write(buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let hung_up = guard.ready().is_read_closed();
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| raw_read(fd.get_ref(), unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // End of stream: nothing is added to `buf`.
                Err(_would_block) if hung_up => return Poll::Ready(Ok(())),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            let hung_up = guard.ready().is_write_closed();
            match guard.try_io(|fd| raw_write(fd.get_ref(), buf)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) if hung_up => {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    // Closing happens on drop; a serial port has no half-close.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsRef<FdStream> for FdStream {
    fn as_ref(&self) -> &FdStream {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    /// A pty master whose slave closes and reopens goes through the same hang-up and
    /// return as a virtio-serial port whose host reconnects.
    #[test]
    fn would_block_after_a_hang_up_ends_the_stream_instead_of_spinning() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let result = rt.block_on(async {
                let master = sys::open(Path::new("/dev/ptmx"), libc::O_RDWR | libc::O_NOCTTY, 0)
                    .expect("ptmx");
                let unlock: libc::c_int = 0;
                let mut n: libc::c_uint = 0;
                // SAFETY: TIOCSPTLCK reads and TIOCGPTN writes one int at valid pointers.
                unsafe {
                    libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock);
                    libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n);
                }
                let slave_path = format!("/dev/pts/{n}");
                let slave = sys::open(Path::new(&slave_path), libc::O_RDWR | libc::O_NOCTTY, 0)
                    .expect("slave");
                let master = FdStream::new(master).expect("register");
                drop(slave);
                let mut buf = [0u8; 16];
                let hup = master.read(&mut buf).await;
                assert_eq!(hup.err().and_then(|e| e.raw_os_error()), Some(libc::EIO));
                let _again = sys::open(Path::new(&slave_path), libc::O_RDWR | libc::O_NOCTTY, 0)
                    .expect("reopen slave");
                master.read(&mut buf).await.map_err(|e| e.to_string())
            });
            let _ = tx.send(result);
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(r) => assert_eq!(r, Ok(0)),
            Err(_) => panic!("the read spun instead of ending the stream"),
        }
    }
}
