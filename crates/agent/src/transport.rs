//! The byte stream to the host, opened again whenever it breaks.
//!
//! - vsock: the agent dials the host (CID [`HOST_CID`], port [`AGENT_VSOCK_PORT`]); until
//!   the host listens, every attempt fails and is retried after [`RETRY`].
//! - serial: the virtio port named [`SERIAL_PORT_NAME`]. The port outlives the host's
//!   connections (and a snapshot's session), so each session starts with the host's sync
//!   (`banger_guest_proto::serial_sync`): bytes before it are discarded. A read of 0 bytes
//!   means the host side is not (or no longer) connected: the port is reopened after
//!   [`RETRY`]. A session that ends in a protocol error (a VM resumed from a snapshot: its
//!   old session reads the new host's SYN) is followed by a new one at once.
//!
//! Failures are logged when they change, not on every retry, so a host that is slow to
//! listen does not flood the console.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use banger_guest_proto::{AGENT_VSOCK_PORT, HOST_CID, SERIAL_PORT_NAME, serial_sync};
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

/// `AsyncWrite` straight through to `inner`: the wrappers here only watch what is read.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<S: AsyncWrite + Unpin> AsyncWrite for $wrapper<S> {
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

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

write_through!(HostSpeaksFirst);

/// How a session ended: what to log, whether to wait [`RETRY`] before the next, and the
/// bytes the next serial session starts with (see [`serial_session`]).
struct Ended {
    error: Option<String>,
    retry_later: bool,
    carried: Vec<u8>,
}

impl Ended {
    fn later(error: Option<String>) -> Ended {
        Ended {
            error,
            retry_later: true,
            carried: Vec::new(),
        }
    }
}

/// How many of the last bytes a serial session's HTTP/2 read are kept: room for the SYN
/// that ends it.
const TAIL: usize = 2 * serial_sync::MARKER_LEN;

/// A serial session's stream, keeping the last [`TAIL`] bytes read.
struct Recording<S> {
    inner: S,
    tail: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
            tail.extend_from_slice(&new[new.len().saturating_sub(TAIL)..]);
            let excess = tail.len().saturating_sub(TAIL);
            tail.drain(..excess);
        }
        polled
    }
}

write_through!(Recording);

/// Whether `bytes` hold the start of a SYN marker: a new host session ended this one.
fn holds_syn(bytes: &[u8]) -> bool {
    let syn = serial_sync::encode(serial_sync::Kind::Syn, &[0; serial_sync::NONCE_LEN]);
    let lead = &syn[..serial_sync::MARKER_LEN - serial_sync::NONCE_LEN];
    bytes.windows(lead.len()).any(|w| w == lead)
}

/// Serves the host forever over `channel`.
pub async fn serve_forever(agent: Arc<Agent>, channel: Channel) -> ! {
    let mut last_error = String::new();
    let mut carried = Vec::new();
    loop {
        let ended = match channel {
            Channel::Vsock => vsock_session(&agent).await,
            Channel::Serial => match open_serial() {
                Ok(port) => serial_session(&agent, port, std::mem::take(&mut carried)).await,
                Err(e) => Ended::later(Some(format!(
                    "cannot reach the host yet ({e}); retrying every {RETRY:?}"
                ))),
            },
        };
        match ended.error {
            None => last_error.clear(),
            Some(msg) if msg != last_error => {
                log!("{msg}");
                last_error = msg;
            }
            Some(_) => {}
        }
        carried = ended.carried;
        if ended.retry_later {
            tokio::time::sleep(RETRY).await;
        }
    }
}

async fn vsock_session(agent: &Arc<Agent>) -> Ended {
    match connect_vsock().await {
        Ok(stream) => Ended::later(
            agent
                .serve(HostSpeaksFirst::new(stream))
                .await
                .err()
                .map(|e| format!("connection to the host ended: {e}")),
        ),
        Err(e) => Ended::later(Some(format!(
            "cannot reach the host yet ({e}); retrying every {RETRY:?}"
        ))),
    }
}

/// One session on the serial port: the sync, then HTTP/2 until it ends. HTTP/2 that ends
/// in an error is followed by a new session at once: that is how a snapshot's session ends
/// when the host's SYN arrives, and the host is waiting. That SYN is in the last bytes the
/// session read, which the next session scans first (`carried`): it answers at once rather
/// than wait for the host to repeat it, and the expected end is not logged. An end of
/// stream or an I/O error during the sync waits [`RETRY`] (the port reads 0 bytes while the
/// host is not connected, so reopening at once would spin).
async fn serial_session<S>(agent: &Arc<Agent>, port: S, carried: Vec<u8>) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stream = match serial_sync::guest_accept(serial_sync::Prefixed::new(carried, port)).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ended::later(None),
        Err(e) => return Ended::later(Some(format!("serial port: {e}"))),
    };
    let tail = Arc::new(std::sync::Mutex::new(Vec::with_capacity(2 * TAIL)));
    let recording = Recording {
        inner: stream,
        tail: tail.clone(),
    };
    match agent.serve(recording).await {
        Ok(()) => Ended::later(None),
        Err(e) => {
            let carried = std::mem::take(&mut *tail.lock().unwrap_or_else(|e| e.into_inner()));
            Ended {
                error: (!holds_syn(&carried)).then(|| format!("connection to the host ended: {e}")),
                retry_later: false,
                carried,
            }
        }
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
/// The port's device, looked up once (it does not change while the guest runs; a VM
/// resumed from a snapshot goes on with the same devices).
fn serial_device() -> io::Result<PathBuf> {
    static FOUND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(dev) = FOUND.get() {
        return Ok(dev.clone());
    }
    let dev = find_serial_device()?;
    Ok(FOUND.get_or_init(|| dev).clone())
}

fn find_serial_device() -> io::Result<PathBuf> {
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
    use banger_guest_proto::serial_sync::{Kind, MAX_HOST_SCAN, encode, host_open};
    use banger_guest_proto::{Hello, HelloRequest, InitMode, PROTO_MIN, PROTO_VERSION, auth};
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SECRET: &[u8] = b"the serial tests' boot secret";
    /// The HTTP/2 client preface and an empty SETTINGS frame: a session's first bytes.
    const H2_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

    fn test_agent() -> Arc<Agent> {
        let (tx, _machine) = tokio::sync::mpsc::unbounded_channel();
        let root = std::env::temp_dir();
        let mut cfg = crate::AgentConfig::new(root, InitMode::Agent, crate::Machine::Recorder(tx));
        cfg.secret = SECRET.to_vec();
        Agent::new(cfg).unwrap()
    }

    async fn hello_over<S>(stream: S) -> Hello
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let body = serde_json::to_vec(&HelloRequest {
            proto_min: PROTO_MIN,
            proto_max: PROTO_VERSION,
            host_version: "test".into(),
            nonce: "n0nce".into(),
        })
        .unwrap();
        let req = hyper::Request::post(format!("http://agent{}", banger_guest_proto::paths::HELLO))
            .body(Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let answer = sender.send_request(req).await.unwrap();
        assert_eq!(answer.status(), hyper::StatusCode::OK);
        let bytes = answer.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_serial_session_starts_behind_garbage_and_a_stale_sessions_bytes() {
        let agent = test_agent();
        let (port, mut host) = tokio::io::duplex(64 << 10);
        let session =
            tokio::spawn(async move { serial_session(&agent, port, Vec::new()).await.retry_later });
        // What a port may hold: noise, and the middle of an old session (a DATA frame).
        host.write_all(b"\x00\x00\x05\x00\x01\x00\x00\x00\x03hello\xFF\xFF junk")
            .await
            .unwrap();
        host.write_all(H2_START).await.unwrap();
        let synced = tokio::time::timeout(
            Duration::from_secs(10),
            host_open(host, &[7; 16], MAX_HOST_SCAN),
        )
        .await
        .expect("the agent answers the SYN")
        .unwrap();
        let hello = hello_over(synced).await;
        assert!(auth::verify(SECRET, "n0nce", &hello.boot_id, &hello.proof));
        session.abort();
    }

    #[tokio::test]
    async fn a_stale_session_ends_at_once_when_a_syn_arrives_and_is_followed_at_once() {
        let agent = test_agent();
        let (port, host) = tokio::io::duplex(64 << 10);
        let first = agent.clone();
        let session = tokio::spawn(async move { serial_session(&first, port, Vec::new()).await });
        let mut stale = host_open(host, &[1; 16], MAX_HOST_SCAN).await.unwrap();
        stale.write_all(H2_START).await.unwrap();
        let mut settings = [0u8; 9];
        stale.read_exact(&mut settings).await.unwrap();
        assert_eq!(settings[3], 4, "the agent's SETTINGS: the session is up");
        // The snapshot is resumed; a new host connection sends its SYN into the old session.
        let started = std::time::Instant::now();
        let nonce = [2; 16];
        stale.write_all(&encode(Kind::Syn, &nonce)).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .expect("the stale session ends")
            .unwrap();
        assert!(
            !ended.retry_later,
            "a protocol error is followed by a new session at once"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "ended without waiting for a payload or a keepalive: {:?}",
            started.elapsed()
        );
        assert_eq!(ended.error, None, "the expected end is not logged");

        // The next session answers that SYN from the carried bytes: the host never repeats it.
        let (port, mut host) = tokio::io::duplex(64 << 10);
        tokio::spawn(async move { serial_session(&agent, port, ended.carried).await });
        let mut ack = [0u8; serial_sync::MARKER_LEN];
        tokio::time::timeout(Duration::from_secs(5), host.read_exact(&mut ack))
            .await
            .expect("an ACK without a second SYN")
            .unwrap();
        assert_eq!(ack, encode(Kind::Ack, &nonce));
        host.write_all(&encode(Kind::Start, &nonce)).await.unwrap();
        let hello = hello_over(host).await;
        assert!(auth::verify(SECRET, "n0nce", &hello.boot_id, &hello.proof));
    }

    #[tokio::test]
    async fn a_session_that_fails_otherwise_is_logged() {
        let agent = test_agent();
        let (port, host) = tokio::io::duplex(64 << 10);
        let session = tokio::spawn(async move { serial_session(&agent, port, Vec::new()).await });
        let mut synced = host_open(host, &[4; 16], MAX_HOST_SCAN).await.unwrap();
        synced
            .write_all(b"not the HTTP/2 preface at all\r\n\r\n")
            .await
            .unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .expect("the session ends")
            .unwrap();
        assert!(!ended.retry_later);
        assert!(
            ended
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("connection to the host ended")),
            "{:?}",
            ended.error
        );
    }

    #[tokio::test]
    async fn an_agent_from_before_the_sync_is_recognised_by_the_host() {
        // Such an agent serves HTTP/2 at once on every session: hyper's server speaks first.
        let agent = test_agent();
        let (port, host) = tokio::io::duplex(64 << 10);
        tokio::spawn(async move { agent.serve(port).await });
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            host_open(host, &[3; 16], MAX_HOST_SCAN),
        )
        .await
        .expect("decided in time");
        assert!(
            matches!(outcome, Err(serial_sync::SyncError::Legacy)),
            "{:?}",
            outcome.err()
        );
    }

    #[tokio::test]
    async fn a_serial_port_without_a_host_is_retried_later() {
        let agent = test_agent();
        let (port, host) = tokio::io::duplex(64);
        drop(host);
        let ended = serial_session(&agent, port, Vec::new()).await;
        assert!(ended.retry_later && ended.error.is_none());
    }

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
