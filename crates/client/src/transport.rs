//! A small RPC client for the daemon's socket (HTTP/1.1 over a Unix stream).

use std::path::{Path, PathBuf};

use banger_api::event::{OpEvent, StreamLine};
use banger_api::layout::PrivateDirError;
use banger_api::methods::{Call, Streaming, Upgrade};
use banger_api::{ApiError, ErrorBody, NDJSON, RPC_PREFIX};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

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
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Calls `M` with `params` and decodes its result.
    pub async fn call<M: Call>(&self, params: &M::Params) -> Result<M::Result, ClientError> {
        let response = self
            .send(
                M::NAME,
                params,
                &[(hyper::header::ACCEPT, "application/json")],
            )
            .await?;
        decode_whole(response).await
    }

    /// Calls a streaming method: `on_event` sees each progress event as it arrives, then
    /// the final result is decoded. Dropping the returned future closes the connection,
    /// which the daemon treats as cancellation.
    pub async fn call_streaming<M: Streaming>(
        &self,
        params: &M::Params,
        mut on_event: impl FnMut(&OpEvent),
    ) -> Result<M::Result, ClientError> {
        let response = self
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
            let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
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
        Err(ClientError::Protocol(
            "bangerd closed the stream before the result (did it crash? see its log)".into(),
        ))
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
        let response = self.send(method, params, &headers).await?;
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

    /// Connects, and makes sure the server is us or root before anything is written.
    async fn connect(&self) -> Result<UnixStream, ClientError> {
        let stream = self.connect_unchecked().await?;
        let server_uid = stream
            .peer_cred()
            .map_err(|e| {
                ClientError::Protocol(format!("reading the socket's peer credentials: {e}"))
            })?
            .uid();
        let uid = effective_uid();
        if server_uid != uid && server_uid != 0 {
            return Err(ClientError::ForeignServer {
                socket: self.socket.clone(),
                server_uid,
                uid,
            });
        }
        Ok(stream)
    }

    async fn connect_unchecked(&self) -> Result<UnixStream, ClientError> {
        UnixStream::connect(&self.socket).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                ClientError::PermissionDenied {
                    socket: self.socket.clone(),
                }
            } else {
                ClientError::NotRunning {
                    socket: self.socket.clone(),
                    source,
                }
            }
        })
    }

    async fn send<P: Serialize>(
        &self,
        method: &str,
        params: &P,
        headers: &[(hyper::header::HeaderName, &str)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| protocol_error(&e))?;
        // `with_upgrades` lets `upgrade` take the connection over; other calls never switch.
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let body = serde_json::to_vec(params).map_err(|e| protocol_error(&e))?;
        let mut request = Request::post(format!("http://banger{RPC_PREFIX}{method}"))
            .header(hyper::header::HOST, "banger")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| protocol_error(&e))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| protocol_error(&e))
    }
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
