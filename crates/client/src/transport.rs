//! A small RPC client for the daemon (HTTP/1.1 over its Unix socket, or over an ssh
//! bridge to another host's socket: [`crate::endpoint`]).
//!
//! A connection left idle by a completed call is kept and used for the next call, so a
//! command's calls share one connection (over ssh: one ssh session instead of one each).
//! Streaming and upgraded calls take a connection for themselves and never give it back:
//! closing it is how the daemon learns that the client went.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use banger_api::event::{OpEvent, StreamLine};
use banger_api::layout::PrivateDirError;
use banger_api::methods::{Call, Streaming, Upgrade};
use banger_api::{ApiError, ErrorBody, NDJSON, RPC_PREFIX};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

use crate::endpoint::{Endpoint, SshTarget};
use crate::ssh::{SshStream, Tunnel};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens (no socket, or a stale one): the daemon is not running.
    #[error("cannot connect to bangerd at {socket}: {source}")]
    NotRunning {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("permission denied on {socket}: the daemon belongs to another user")]
    PermissionDenied { socket: PathBuf },
    /// The socket is served by another (non-root) user: not our daemon, and nothing was sent.
    #[error(
        "refusing to talk to {socket}: it is served by uid {server_uid}, not by you (uid {uid}) \
         or root, so it is not your bangerd; nothing was sent. If that user should not be \
         there, remove {dir} (or have an admin do it); or set XDG_RUNTIME_DIR (or \
         --runtime-dir) to a directory only you can write",
        dir = socket_dir(.socket)
    )]
    ForeignServer {
        socket: PathBuf,
        server_uid: u32,
        uid: u32,
    },
    /// A directory of the socket's path could be another user's (checked before starting a
    /// daemon there).
    #[error(transparent)]
    UnsafeDir(#[from] PrivateDirError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("talking to bangerd: {0}")]
    Protocol(String),
    /// ssh itself failed (a wrong host, a refused key), or the remote bridge did.
    #[error("{host}: {message}")]
    Ssh { host: String, message: String },
    /// The remote host answers, but no daemon runs there (and none was to be started).
    #[error("bangerd is not running on {host}{}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    RemoteNotRunning { host: String, message: String },
    /// The daemon speaks another version of the API.
    #[error(
        "this banger {client} (API {client_api}) cannot drive bangerd {daemon} (API {daemon_api}){at}: \
         install the same banger version on both sides (then `banger daemon stop` there, and \
         the next command starts the new daemon)"
    )]
    VersionMismatch {
        client: String,
        client_api: u32,
        daemon: String,
        daemon_api: u32,
        at: String,
    },
}

impl ClientError {
    /// No daemon answers there (locally or on the remote host).
    pub fn is_not_running(&self) -> bool {
        matches!(
            self,
            ClientError::NotRunning { .. } | ClientError::RemoteNotRunning { .. }
        )
    }
}

/// A connection's bytes: a Unix stream or an ssh bridge.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

type Sender = SendRequest<Full<Bytes>>;

#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// Over ssh: whether the remote bridge starts a daemon when none runs.
    start_remote: bool,
    /// A connection a completed call left open, for the next call.
    idle: Arc<Mutex<Option<Idle>>>,
    /// What the version check found worth a warning (for the front end to show).
    notice: Option<Arc<str>>,
}

/// An idle connection, with its ssh bridge (if any) for error reports.
struct Idle {
    sender: Sender,
    tunnel: Option<Tunnel>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of this machine's daemon at `socket`.
    pub fn new(socket: &Path) -> Self {
        Client::at(Endpoint::Local {
            socket: socket.to_path_buf(),
        })
    }

    /// A client of another host's daemon, through ssh; `start_daemon`: the remote side
    /// starts one when none runs.
    pub fn ssh(target: SshTarget, start_daemon: bool) -> Self {
        Client {
            start_remote: start_daemon,
            ..Client::at(Endpoint::Ssh(target))
        }
    }

    fn at(endpoint: Endpoint) -> Self {
        Client {
            endpoint,
            start_remote: true,
            idle: Arc::new(Mutex::new(None)),
            notice: None,
        }
    }

    /// This client with a warning for the front end to show once.
    pub fn with_notice(mut self, notice: Option<String>) -> Self {
        self.notice = notice.map(Arc::from);
        self
    }

    /// The version check's warning, if any.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The remote host, when the daemon is not this machine's.
    pub fn remote(&self) -> Option<&SshTarget> {
        match &self.endpoint {
            Endpoint::Ssh(t) => Some(t),
            Endpoint::Local { .. } => None,
        }
    }

    /// Where the daemon is, for messages: its socket, or `ssh://…`.
    pub fn location(&self) -> String {
        match &self.endpoint {
            Endpoint::Local { socket } => socket.display().to_string(),
            Endpoint::Ssh(t) => t.to_string(),
        }
    }

    /// Calls `M` with `params` and decodes its result.
    pub async fn call<M: Call>(&self, params: &M::Params) -> Result<M::Result, ClientError> {
        let (response, sender, tunnel) = self
            .send(
                M::NAME,
                params,
                &[(hyper::header::ACCEPT, "application/json")],
            )
            .await?;
        let status = response.status();
        let bytes = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return Err(self.broken(tunnel.as_ref(), e).await),
        };
        self.keep(sender, tunnel);
        decode(status, &bytes)
    }

    /// Calls a streaming method: `on_event` sees each progress event as it arrives, then
    /// the final result is decoded. Dropping the returned future closes the connection,
    /// which the daemon treats as cancellation.
    pub async fn call_streaming<M: Streaming>(
        &self,
        params: &M::Params,
        mut on_event: impl FnMut(&OpEvent),
    ) -> Result<M::Result, ClientError> {
        let (response, _sender, tunnel) = self
            .send(M::NAME, params, &[(hyper::header::ACCEPT, NDJSON)])
            .await?;
        let streaming = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(NDJSON));
        if !streaming {
            return decode_whole(response).await;
        }
        let mut body = response.into_body();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => return Err(self.broken(tunnel.as_ref(), e).await),
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                match serde_json::from_slice::<StreamLine>(&line) {
                    Ok(StreamLine::Event(event)) => on_event(&event),
                    Ok(StreamLine::Result(value)) => {
                        return serde_json::from_value(value)
                            .map_err(|e| ClientError::Protocol(format!("unexpected result: {e}")));
                    }
                    Ok(StreamLine::Error(error)) => return Err(ClientError::Api(error)),
                    Err(e) => {
                        return Err(ClientError::Protocol(format!("bad stream line: {e}")));
                    }
                }
            }
        }
        match tunnel {
            Some(t) => Err(t.failure().await),
            None => Err(ClientError::Protocol(
                "bangerd closed the stream before the result (did it crash? see its log)".into(),
            )),
        }
    }

    /// Calls a method that switches the connection to another protocol (`vm.exec`): the
    /// request carries `Connection: Upgrade` and `Upgrade: <M::PROTOCOL>`; a `101 Switching
    /// Protocols` answer hands back the raw connection. Any other answer is decoded like a
    /// plain call's, so the daemon's errors (`not_found`, `not_running`, …) surface as
    /// [`ClientError::Api`].
    pub async fn upgrade<M: Upgrade>(
        &self,
        params: &M::Params,
    ) -> Result<TokioIo<Upgraded>, ClientError> {
        let (method, protocol) = (M::NAME, M::PROTOCOL);
        let headers = [
            (hyper::header::CONNECTION, "Upgrade"),
            (hyper::header::UPGRADE, protocol),
        ];
        let (response, _sender, _tunnel) = self.send(method, params, &headers).await?;
        let status = response.status();
        if status == hyper::StatusCode::SWITCHING_PROTOCOLS {
            // An older daemon switches to an older framing of the same stream: refuse it
            // rather than misread its frames.
            let switched_to = response
                .headers()
                .get(hyper::header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if !switched_to.eq_ignore_ascii_case(protocol) {
                return Err(ClientError::Protocol(format!(
                    "bangerd switched {method} to {switched_to:?}, this client speaks {protocol:?}: the daemon is older than this client; restart it"
                )));
            }
            let upgraded = hyper::upgrade::on(response)
                .await
                .map_err(|e| protocol_error(&e))?;
            return Ok(TokioIo::new(upgraded));
        }
        decode_whole::<serde_json::Value>(response).await?;
        Err(ClientError::Protocol(format!(
            "bangerd answered HTTP {status} to {method} instead of switching to {protocol} (an older daemon?)"
        )))
    }

    /// A new connection: the local socket (checked to be served by us or root before
    /// anything is written), or a new ssh bridge.
    async fn connect(&self) -> Result<(Box<dyn Io>, Option<Tunnel>), ClientError> {
        match &self.endpoint {
            Endpoint::Local { socket } => Ok((Box::new(connect_local(socket).await?), None)),
            Endpoint::Ssh(target) => {
                let stream: SshStream = Tunnel::open(target, self.start_remote)?;
                let tunnel = stream.tunnel();
                Ok((Box::new(stream), Some(tunnel)))
            }
        }
    }

    /// The idle connection if it is still open, else a new one.
    async fn sender(&self) -> Result<(Sender, Option<Tunnel>, bool), ClientError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut idle) = idle
            && idle.sender.ready().await.is_ok()
        {
            return Ok((idle.sender, idle.tunnel, true));
        }
        let (stream, tunnel) = self.connect().await?;
        let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await;
        let (sender, conn) = match handshake {
            Ok(pair) => pair,
            Err(e) => return Err(self.broken(tunnel.as_ref(), e).await),
        };
        // `with_upgrades` lets `upgrade` take the connection over; other calls never switch.
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok((sender, tunnel, false))
    }

    /// The error for a connection that broke before the daemon answered: over ssh, what
    /// ssh or the remote bridge said.
    async fn broken(&self, tunnel: Option<&Tunnel>, e: impl ToString) -> ClientError {
        let message = e.to_string();
        match tunnel {
            Some(t) => t.failure().await,
            None => ClientError::Protocol(message),
        }
    }

    /// Puts a connection whose call completed back for the next call.
    fn keep(&self, sender: Sender, tunnel: Option<Tunnel>) {
        *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = Some(Idle { sender, tunnel });
    }

    async fn send<P: Serialize>(
        &self,
        method: &str,
        params: &P,
        headers: &[(hyper::header::HeaderName, &str)],
    ) -> Result<
        (
            hyper::Response<hyper::body::Incoming>,
            Sender,
            Option<Tunnel>,
        ),
        ClientError,
    > {
        let body = Bytes::from(serde_json::to_vec(params).map_err(|e| protocol_error(&e))?);
        let request = || {
            let mut request = Request::post(format!("http://banger{RPC_PREFIX}{method}"))
                .header(hyper::header::HOST, "banger")
                .header(hyper::header::USER_AGENT, USER_AGENT)
                .header(hyper::header::CONTENT_TYPE, "application/json");
            for (name, value) in headers {
                request = request.header(name, *value);
            }
            request
                .body(Full::new(body.clone()))
                .map_err(|e| protocol_error(&e))
        };
        let (mut sender, tunnel, reused) = self.sender().await?;
        match sender.send_request(request()?).await {
            Ok(response) => Ok((response, sender, tunnel)),
            // The daemon may close an idle connection at any moment (a restart, its idle
            // timeout): a request that never reached it goes again on a new connection.
            Err(e) if reused && (e.is_canceled() || e.is_incomplete_message()) => {
                let (mut sender, tunnel, _) = self.sender().await?;
                match sender.send_request(request()?).await {
                    Ok(response) => Ok((response, sender, tunnel)),
                    Err(e) => Err(self.broken(tunnel.as_ref(), e).await),
                }
            }
            Err(e) => Err(self.broken(tunnel.as_ref(), e).await),
        }
    }
}

/// Sent with every request: the daemon logs who talks to it.
const USER_AGENT: &str = concat!("banger/", env!("CARGO_PKG_VERSION"));

async fn connect_local(socket: &Path) -> Result<UnixStream, ClientError> {
    let stream = UnixStream::connect(socket).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::PermissionDenied {
                socket: socket.to_path_buf(),
            }
        } else {
            ClientError::NotRunning {
                socket: socket.to_path_buf(),
                source,
            }
        }
    })?;
    let server_uid = stream
        .peer_cred()
        .map_err(|e| ClientError::Protocol(format!("reading the socket's peer credentials: {e}")))?
        .uid();
    let uid = effective_uid();
    if server_uid != uid && server_uid != 0 {
        return Err(ClientError::ForeignServer {
            socket: socket.to_path_buf(),
            server_uid,
            uid,
        });
    }
    Ok(stream)
}

fn socket_dir(socket: &Path) -> std::path::Display<'_> {
    socket.parent().unwrap_or(socket).display()
}

/// The uid the daemon we start runs as, and the one it accepts.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn protocol_error(e: &dyn std::fmt::Display) -> ClientError {
    ClientError::Protocol(e.to_string())
}

/// Reads a whole (non-streamed) response and decodes it.
async fn decode_whole<R: DeserializeOwned>(
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<R, ClientError> {
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .to_bytes();
    decode(status, &bytes)
}

/// A whole (non-streamed) response: the result, or the daemon's error.
fn decode<R: DeserializeOwned>(status: hyper::StatusCode, bytes: &[u8]) -> Result<R, ClientError> {
    if status.is_success() {
        serde_json::from_slice(bytes)
            .map_err(|e| ClientError::Protocol(format!("unexpected response: {e}")))
    } else {
        match serde_json::from_slice::<ErrorBody>(bytes) {
            Ok(body) => Err(ClientError::Api(body.error)),
            Err(_) => Err(ClientError::Protocol(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(bytes)
            ))),
        }
    }
}
