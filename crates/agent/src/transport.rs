//! The byte stream to the host, opened again whenever it breaks.
//!
//! - vsock: the agent dials the host (CID [`HOST_CID`], port [`AGENT_VSOCK_PORT`]); until
//!   the host listens, every attempt fails and is retried after [`RETRY`].
//! - serial: the virtio port named [`SERIAL_PORT_NAME`]. A read of 0 bytes means the host
//!   side is not (or no longer) connected: the stream ends, and the port is reopened after
//!   [`RETRY`].
//!
//! Failures are logged when they change, not on every retry, so a host that is slow to
//! listen does not flood the console.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use banger_guest_proto::{AGENT_VSOCK_PORT, HOST_CID, SERIAL_PORT_NAME};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::cmdline::Channel;
use crate::console::log;
use crate::fdio::FdStream;
use crate::server::Agent;
use crate::sys;

/// Between a failed or ended connection and the next attempt.
pub const RETRY: Duration = Duration::from_millis(100);

/// How long a new vsock connection may stay silent. The host speaks first, at once (the
/// HTTP/2 preface and the hello); silence means nobody will — a daemon that died after
/// the connection was queued — and the agent dials again rather than wait forever.
const HOST_SILENCE: Duration = Duration::from_secs(10);

enum Opened {
    Vsock(FdStream),
    Serial(FdStream),
}

/// A stream whose reads fail with `TimedOut` if no byte arrives within [`HOST_SILENCE`]
/// of its opening; after the first byte it is the stream itself.
struct HostSpeaksFirst<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> HostSpeaksFirst<S> {
    fn new(inner: S) -> Self {
        Self::within(inner, HOST_SILENCE)
    }

    fn within(inner: S, silence: Duration) -> Self {
        HostSpeaksFirst {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(silence))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HostSpeaksFirst<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.deadline = None;
        } else if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the host said nothing on a new connection",
            )));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HostSpeaksFirst<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves the host forever over `channel`.
pub async fn serve_forever(agent: Arc<Agent>, channel: Channel) -> ! {
    let mut last_error = String::new();
    loop {
        let opened = match channel {
            Channel::Vsock => connect_vsock().await.map(Opened::Vsock),
            Channel::Serial => open_serial().map(Opened::Serial),
        };
        let outcome = match opened {
            Ok(Opened::Vsock(stream)) => agent
                .serve(HostSpeaksFirst::new(stream))
                .await
                .map_err(|e| format!("connection to the host ended: {e}")),
            Ok(Opened::Serial(stream)) => agent
                .serve(stream)
                .await
                .map_err(|e| format!("connection to the host ended: {e}")),
            Err(e) => Err(format!(
                "cannot reach the host yet ({e}); retrying every {RETRY:?}"
            )),
        };
        match outcome {
            Ok(()) => last_error.clear(),
            Err(msg) if msg != last_error => {
                log!("{msg}");
                last_error = msg;
            }
            Err(_) => {}
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Dials the host's agent port, as any guest process may: the real agent does, and so
/// does the impostor of the hostile-guest tests (`examples/impostor.rs`).
pub async fn dial_host_vsock()
-> io::Result<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> {
    connect_vsock().await
}

async fn connect_vsock() -> io::Result<FdStream> {
    // SAFETY: socket takes plain integers; the result is checked.
    let fd = sys::cvt(unsafe {
        libc::socket(
            libc::AF_VSOCK,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: a new fd that nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = HOST_CID;
    addr.svm_port = AGENT_VSOCK_PORT;
    // SAFETY: `addr` is a valid sockaddr_vm of the given length.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        // Non-blocking connect: writable means decided, SO_ERROR says how.
        // SAFETY: the OwnedFd owns its fd and is only taken back out by into_inner.
        let fd = unsafe { AsyncFd::register(fd)? };
        drop(fd.writable().await?);
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes one int into a buffer of the given length.
        sys::cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        return FdStream::new(fd.into_inner());
    }
    FdStream::new(fd)
}

/// `/dev/vportNpM` of the port called [`SERIAL_PORT_NAME`].
fn serial_device() -> io::Result<PathBuf> {
    for entry in std::fs::read_dir("/sys/class/virtio-ports")?.flatten() {
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim() == SERIAL_PORT_NAME {
            return Ok(Path::new("/dev").join(entry.file_name()));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no virtio-serial port named {SERIAL_PORT_NAME}"),
    ))
}

fn open_serial() -> io::Result<FdStream> {
    let dev = serial_device()?;
    let fd = sys::open(&dev, libc::O_RDWR | libc::O_NONBLOCK | libc::O_NOCTTY, 0)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dev.display())))?;
    FdStream::new(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_host_is_given_up_on_and_a_speaking_one_is_not() {
        let (ours, _silent_host) = tokio::io::duplex(64);
        let mut stream = HostSpeaksFirst::within(ours, Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let err = stream.read(&mut buf).await.expect_err("a silent host");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (ours, mut host) = tokio::io::duplex(64);
        let mut stream = HostSpeaksFirst::within(ours, Duration::from_millis(50));
        host.write_all(b"PRI").await.unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 3);
        // Past the limit, after the first words: the stream waits as long as it takes.
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            host.write_all(b"*").await.unwrap();
            host
        });
        assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
        drop(later.await.unwrap());
    }
}
