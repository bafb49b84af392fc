//! A small RPC client for the daemon's socket (HTTP/1.1 over a Unix stream).

use std::path::{Path, PathBuf};

use banger_api::{ApiError, ErrorBody, RPC_PREFIX};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
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

    /// Calls `method` with `params` and decodes its result.
    pub async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R, ClientError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
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
        })?;
        let protocol = |e: &dyn std::fmt::Display| ClientError::Protocol(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| protocol(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let body = serde_json::to_vec(params).map_err(|e| protocol(&e))?;
        let request = Request::post(format!("http://banger{RPC_PREFIX}{method}"))
            .header(hyper::header::HOST, "banger")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| protocol(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| protocol(&e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| protocol(&e))?
            .to_bytes();
        if status.is_success() {
            serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(format!("unexpected response: {e}")))
        } else {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => Err(ClientError::Api(body.error)),
                Err(_) => Err(ClientError::Protocol(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ))),
            }
        }
    }
}
