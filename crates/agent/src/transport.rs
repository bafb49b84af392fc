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
use tokio::io::unix::AsyncFd;

use crate::cmdline::Channel;
use crate::console::log;
use crate::fdio::FdStream;
use crate::server::Agent;
use crate::sys;

/// Between a failed or ended connection and the next attempt.
pub const RETRY: Duration = Duration::from_millis(100);

/// Serves the host forever over `channel`.
pub async fn serve_forever(agent: Arc<Agent>, channel: Channel) -> ! {
    let mut last_error = String::new();
    loop {
        let opened = match channel {
            Channel::Vsock => connect_vsock().await,
            Channel::Serial => open_serial(),
        };
        let outcome = match opened {
            Ok(stream) => agent
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
