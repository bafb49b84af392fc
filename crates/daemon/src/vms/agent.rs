//! The host's side of the agent protocol (`banger-guest-proto`): an HTTP/2 client over
//! the VM's one byte stream, the handshake, JSON calls, and exec streams.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use banger_guest_proto::{self as proto, AgentError, Hello, HelloRequest, paths};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;

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
    #[error(
        "the guest agent speaks protocol {agent_min}..={agent_max}, this bangerd {host_min}..={host_max}; recreate the VM or upgrade banger"
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
    ) -> Result<AgentConn, AgentCallError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
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
        let hello: Hello = conn
            .call(
                paths::HELLO,
                &HelloRequest {
                    proto_min: proto::PROTO_MIN,
                    proto_max: proto::PROTO_VERSION,
                    host_version: env!("CARGO_PKG_VERSION").to_string(),
                },
            )
            .await?;
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
        conn.hello = hello;
        Ok(conn)
    }

    /// A JSON request/response call.
    pub async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        req: &Q,
    ) -> Result<R, AgentCallError> {
        let body = serde_json::to_vec(req).map_err(|e| AgentCallError::Transport(e.to_string()))?;
        let response = self
            .send(path, Full::new(Bytes::from(body)).boxed())
            .await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| AgentCallError::Transport(e.to_string()))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(refused(path, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| AgentCallError::Transport(format!("bad answer to {path}: {e}")))
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
        let response = self.send(paths::EXEC, ChannelBody { rx }.boxed()).await?;
        if response.status() != StatusCode::OK {
            let path = paths::EXEC;
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(refused(path, &bytes));
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

/// Sends one request on the connection once it can take another stream.
async fn dispatch(
    mut sender: SendRequest<Body>,
    req: Request<Body>,
) -> Result<Response<Incoming>, AgentCallError> {
    sender
        .ready()
        .await
        .map_err(|e| AgentCallError::Transport(e.to_string()))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| AgentCallError::Transport(e.to_string()))
}

/// The agent's error message in a non-200 body.
pub fn refused(path: &str, body: &[u8]) -> AgentCallError {
    let message = serde_json::from_slice::<AgentError>(body)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    AgentCallError::Refused {
        path: path.to_string(),
        message,
    }
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
