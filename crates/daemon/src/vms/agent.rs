//! The host's side of the agent protocol (`banger-guest-proto`): an HTTP/2 client over
//! the VM's one byte stream, the handshake, JSON calls, and exec streams.
//!
//! The other end is untrusted (guest root can replace the agent, see `SECURITY.md`):
//! the handshake checks the boot secret's proof ([`auth`]); every answer the daemon reads
//! is bounded in size ([`MAX_ANSWER`], [`MAX_ERROR_BODY`]) and every call in time
//! ([`CALL_TIMEOUT`]), so one guest can stall or bloat only its own requests. Streams the
//! daemon relays (exec frames, tar, connect) are passed through in bounded chunks and
//! limited by their consumers.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use banger_guest_proto::{
    self as proto, AgentError, Hello, HelloRequest, auth, paths, serial_sync,
};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;

/// How long one agent call may take, answer included. Generous for a guest under
/// emulation; a guest that does not answer fails that call only.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest JSON answer read from an agent (a [`proto::ReadFile`] answer may be
/// larger: its own `max_bytes`, JSON-escaped).
pub const MAX_ANSWER: usize = 64 << 10;
/// The largest error body read from an agent.
pub const MAX_ERROR_BODY: usize = 64 << 10;
/// How much of an agent's error message is quoted.
const MAX_QUOTE: usize = 2 << 10;
/// The longest identity strings a hello may carry.
const MAX_HELLO_FIELD: usize = 256;
/// The most boot stages a hello may report.
const MAX_HELLO_STAGES: usize = 64;

/// The agent's answer to a stream, possibly still to come (an upload is answered after its
/// body).
pub type PendingResponse =
    Pin<Box<dyn std::future::Future<Output = Result<Response<Incoming>, AgentCallError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    #[error("the guest agent connection failed: {0}")]
    Transport(String),
    #[error("the guest agent refused {path}: {message}")]
    Refused { path: String, message: String },
    #[error("the guest agent did not answer {path} within {}s", timeout.as_secs())]
    TimedOut { path: String, timeout: Duration },
    #[error("the guest agent's answer to {path} exceeds the {limit}-byte limit")]
    TooLarge { path: String, limit: usize },
    #[error(
        "a guest process that cannot prove this boot's agent secret tried to take the agent channel"
    )]
    Unauthenticated,
    #[error("the guest agent predates the serial channel's session sync")]
    BeforeSerialSync,
    #[error("the guest agent's hello is malformed: {0}")]
    BadHello(String),
    #[error(
        "the guest agent speaks protocol {agent_min}..={agent_max}, this bangerd {host_min}..={host_max}: restart the VM (`banger vm stop NAME && banger vm start NAME` boots the current agent) or upgrade banger"
    )]
    Incompatible {
        agent_min: u32,
        agent_max: u32,
        host_min: u32,
        host_max: u32,
    },
}

/// One live HTTP/2 connection to a VM's agent. Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct AgentConn {
    sender: SendRequest<Body>,
    pub hello: Hello,
}

impl AgentConn {
    /// Runs the HTTP/2 handshake and the protocol hello over `io`. The connection is
    /// driven by a task that ends when the stream breaks; `closed` fires then.
    pub async fn handshake<T>(
        io: T,
        closed: tokio::sync::oneshot::Sender<()>,
        secret: &[u8],
    ) -> Result<AgentConn, AgentCallError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            // Header blocks are the one part of an answer hyper buffers whole.
            .max_header_list_size(16 << 10)
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|e| AgentCallError::Transport(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "agent connection ended");
            }
            let _ = closed.send(());
        });
        let mut conn = AgentConn {
            sender,
            hello: placeholder_hello(),
        };
        let mut nonce = [0u8; 16];
        crate::ids::secret_random(&mut nonce)
            .map_err(|e| AgentCallError::Transport(format!("drawing a nonce: {e}")))?;
        let nonce = auth::hex(&nonce);
        let hello: Hello = conn
            .call(
                paths::HELLO,
                &HelloRequest {
                    proto_min: proto::PROTO_MIN,
                    proto_max: proto::PROTO_VERSION,
                    host_version: env!("CARGO_PKG_VERSION").to_string(),
                    nonce: nonce.clone(),
                },
            )
            .await?;
        check_hello(&hello)?;
        if proto::negotiate(
            proto::PROTO_MIN,
            proto::PROTO_VERSION,
            hello.proto_min,
            hello.proto_max,
        )
        .is_none()
        {
            return Err(AgentCallError::Incompatible {
                agent_min: hello.proto_min,
                agent_max: hello.proto_max,
                host_min: proto::PROTO_MIN,
                host_max: proto::PROTO_VERSION,
            });
        }
        if secret.is_empty() || !auth::verify(secret, &nonce, &hello.boot_id, &hello.proof) {
            return Err(AgentCallError::Unauthenticated);
        }
        conn.hello = hello;
        Ok(conn)
    }

    /// A JSON request/response call: answers up to [`MAX_ANSWER`] bytes, within
    /// [`CALL_TIMEOUT`].
    pub async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        req: &Q,
    ) -> Result<R, AgentCallError> {
        self.call_limited(path, req, MAX_ANSWER).await
    }

    /// Reads a small guest file: the answer may be the file's `max_bytes`, JSON-escaped
    /// (six bytes for a control character at worst).
    pub async fn read_file(
        &self,
        req: &proto::ReadFile,
    ) -> Result<proto::FileContent, AgentCallError> {
        let limit = usize::try_from(req.max_bytes)
            .unwrap_or(usize::MAX)
            .saturating_mul(6)
            .saturating_add(MAX_ANSWER);
        self.call_limited(paths::READ_FILE, req, limit).await
    }

    async fn call_limited<Q: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        req: &Q,
        limit: usize,
    ) -> Result<R, AgentCallError> {
        let body = serde_json::to_vec(req).map_err(|e| AgentCallError::Transport(e.to_string()))?;
        let call = async {
            let response = self
                .send(path, Full::new(Bytes::from(body)).boxed())
                .await?;
            let status = response.status();
            if status != StatusCode::OK {
                return Err(refused(path, &error_body(response.into_body()).await));
            }
            read_limited(path, response.into_body(), limit).await
        };
        let bytes = within(path, CALL_TIMEOUT, call).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            AgentCallError::Transport(format!(
                "bad answer to {path}: {}",
                banger_api::text::cut(&e.to_string(), MAX_QUOTE)
            ))
        })
    }

    /// Opens an exec stream: `first` (an encoded `ExecRequest` frame) is sent at once;
    /// more frames go through the returned sender; the response body carries the
    /// `ExecOutput` frames.
    pub async fn exec(
        &self,
        first: Bytes,
    ) -> Result<(mpsc::Sender<Bytes>, Response<Incoming>), AgentCallError> {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        tx.send(first)
            .await
            .map_err(|_| AgentCallError::Transport("exec input closed".into()))?;
        let response = within(
            paths::EXEC,
            CALL_TIMEOUT,
            self.send(paths::EXEC, ChannelBody { rx }.boxed()),
        )
        .await?;
        if response.status() != StatusCode::OK {
            let bytes = error_body(response.into_body()).await;
            return Err(refused(paths::EXEC, &bytes));
        }
        Ok((tx, response))
    }

    /// Starts a raw-stream request (`FILES_PUT`, `FILES_GET`, `CONNECT`): `params` go in the
    /// params header, the body comes from the returned sender. The response future is
    /// returned unawaited: an upload is answered only after its body ends.
    pub fn stream<P: Serialize>(
        &self,
        path: &str,
        params: &P,
    ) -> Result<(mpsc::Sender<Bytes>, PendingResponse), AgentCallError> {
        let json =
            serde_json::to_string(params).map_err(|e| AgentCallError::Transport(e.to_string()))?;
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let req = Request::post(format!("http://agent{path}"))
            .header(proto::PARAMS_HEADER, json)
            .body(ChannelBody { rx }.boxed())
            .map_err(|e| AgentCallError::Transport(e.to_string()))?;
        Ok((tx, Box::pin(dispatch(self.sender.clone(), req))))
    }

    async fn send(&self, path: &str, body: Body) -> Result<Response<Incoming>, AgentCallError> {
        let req = Request::post(format!("http://agent{path}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| AgentCallError::Transport(e.to_string()))?;
        dispatch(self.sender.clone(), req).await
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// The serial channel's session sync (`banger_guest_proto::serial_sync`) with a fresh
/// nonce: SYN until the guest's ACK, then START. Scans at most
/// [`serial_sync::MAX_HOST_SCAN`] guest bytes; the caller bounds it in time. Framing only:
/// the hello that follows authenticates the agent. [`AgentCallError::BeforeSerialSync`]:
/// the guest's agent predates the sync; connect again without it.
pub async fn sync_serial<S>(io: S) -> Result<serial_sync::Prefixed<S>, AgentCallError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut nonce = [0u8; serial_sync::NONCE_LEN];
    crate::ids::secret_random(&mut nonce)
        .map_err(|e| AgentCallError::Transport(format!("drawing a nonce: {e}")))?;
    serial_sync::host_open(io, &nonce, serial_sync::MAX_HOST_SCAN)
        .await
        .map_err(|e| match e {
            serial_sync::SyncError::Legacy => AgentCallError::BeforeSerialSync,
            e => AgentCallError::Transport(e.to_string()),
        })
}

/// Sends one request on the connection once it can take another stream (within
/// [`CALL_TIMEOUT`]: an agent that allows no stream, `SETTINGS_MAX_CONCURRENT_STREAMS=0`,
/// must not hang the caller).
async fn dispatch(
    mut sender: SendRequest<Body>,
    req: Request<Body>,
) -> Result<Response<Incoming>, AgentCallError> {
    let path = req.uri().path().to_string();
    within(&path, CALL_TIMEOUT, async {
        sender
            .ready()
            .await
            .map_err(|e| AgentCallError::Transport(e.to_string()))
    })
    .await?;
    sender
        .send_request(req)
        .await
        .map_err(|e| AgentCallError::Transport(e.to_string()))
}

/// The agent's error message in a non-200 body, cut to a quote's length.
pub fn refused(path: &str, body: &[u8]) -> AgentCallError {
    let message = serde_json::from_slice::<AgentError>(body)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    AgentCallError::Refused {
        path: path.to_string(),
        message: banger_api::text::cut(&message, MAX_QUOTE).to_string(),
    }
}

/// A non-200 body, at most [`MAX_ERROR_BODY`] bytes of it, within [`CALL_TIMEOUT`]
/// (whatever came by then; an endless or stalled body is cut, not waited for).
pub async fn error_body(body: Incoming) -> Bytes {
    let mut out = Vec::new();
    let mut body = body;
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                let room = MAX_ERROR_BODY - out.len();
                out.extend_from_slice(&data[..data.len().min(room)]);
                if out.len() >= MAX_ERROR_BODY {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(CALL_TIMEOUT, read).await;
    Bytes::from(out)
}

/// A whole answer body of at most `limit` bytes.
async fn read_limited(path: &str, body: Incoming, limit: usize) -> Result<Bytes, AgentCallError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(AgentCallError::TooLarge {
            path: path.to_string(),
            limit,
        }),
        Err(e) => Err(AgentCallError::Transport(e.to_string())),
    }
}

/// `fut`, or [`AgentCallError::TimedOut`] after `timeout`.
pub async fn within<T>(
    path: &str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, AgentCallError>>,
) -> Result<T, AgentCallError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(AgentCallError::TimedOut {
                path: path.to_string(),
                timeout,
            })
        })
}

/// Bounds the guest-chosen parts of a hello before anything logs or stores them.
fn check_hello(hello: &Hello) -> Result<(), AgentCallError> {
    for (field, value) in [
        ("agent_version", &hello.agent_version),
        ("boot_id", &hello.boot_id),
        ("kernel_release", &hello.kernel_release),
    ] {
        if value.len() > MAX_HELLO_FIELD || value.chars().any(char::is_control) {
            return Err(AgentCallError::BadHello(format!(
                "{field} is longer than {MAX_HELLO_FIELD} bytes or holds control characters"
            )));
        }
    }
    if hello.stages.len() > MAX_HELLO_STAGES {
        return Err(AgentCallError::BadHello(format!(
            "{} boot stages (at most {MAX_HELLO_STAGES})",
            hello.stages.len()
        )));
    }
    Ok(())
}

fn placeholder_hello() -> Hello {
    Hello {
        proto_version: 0,
        proto_min: 0,
        proto_max: 0,
        agent_version: String::new(),
        boot_id: String::new(),
        init: proto::InitMode::Agent,
        stages: Vec::new(),
        kernel_release: String::new(),
        proof: String::new(),
    }
}

/// A request body fed by a channel: each message is one data frame; the body ends when
/// every sender is dropped.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
