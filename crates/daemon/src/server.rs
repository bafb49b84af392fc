//! HTTP/1.1 over the Unix socket: peer-credential check, routing, operation ids, logging.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use banger_api::event::StreamLine;
use banger_api::methods::Kind;
use banger_api::{ErrorBody, NDJSON, OPERATION_ID_HEADER, RPC_PREFIX};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tracing::Instrument;

use crate::error::OpError;
use crate::ids;
use crate::progress::OpContext;
use crate::rpc;
use crate::state::DaemonState;
use crate::vms::{RelayMode, SessionOutput, StreamSession};

/// Params are small JSON documents; anything bigger is a mistake or an attack.
const MAX_BODY_BYTES: usize = 1 << 20;
/// How long in-flight requests get to finish after a shutdown request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub type Body = BoxBody<Bytes, Infallible>;

/// What a request turns into: one JSON document, or a stream of NDJSON lines.
enum Reply {
    Json(serde_json::Value),
    Stream(tokio::sync::mpsc::UnboundedReceiver<StreamLine>),
    /// `vm.exec` and the byte streams: answer `101 Switching Protocols` with the method's
    /// `Upgrade` token, then relay.
    Upgrade(Box<(StreamSession, hyper::upgrade::OnUpgrade, &'static str)>),
}

/// Serves until `state.shutdown` is notified, then drains open connections.
pub async fn serve(listener: UnixListener, state: Arc<DaemonState>) {
    // SAFETY: geteuid has no preconditions.
    let my_uid = unsafe { libc::geteuid() };
    // Connections are tracked by hand rather than with hyper-util's GracefulShutdown,
    // which does not take upgradeable connections (`vm.exec`).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let peer_uid = stream.peer_cred().ok().map(|c| c.uid());
                let allowed = peer_uid == Some(my_uid);
                if !allowed {
                    tracing::warn!(?peer_uid, "refusing a connection from another user");
                }
                let state = state.clone();
                let service = service_fn(move |req| handle(state.clone(), allowed, peer_uid, req));
                let conn = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                let mut stop = stop_rx.clone();
                connections.spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    let result = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
                // Reap finished connection tasks as we go.
                while connections.try_join_next().is_some() {}
            }
            () = state.shutdown.notified() => break,
        }
    }
    drop(listener);
    // `vm.hold` calls last as long as their clients: end them so the drain can finish.
    state.vms.release_leases();
    let _ = stop_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
        connections.abort_all();
    }
}

async fn handle(
    state: Arc<DaemonState>,
    allowed: bool,
    peer_uid: Option<u32>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let op = ids::operation_id();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("rpc", op = %op, path = %path);
    async move {
        let started = Instant::now();
        let result = route(state, allowed, peer_uid, req, &path, &op).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let response = match result {
            Ok(Reply::Json(value)) => {
                tracing::info!(elapsed_ms, "ok");
                json_response(StatusCode::OK, &value, &op)
            }
            Ok(Reply::Stream(rx)) => stream_response(rx, &op),
            Ok(Reply::Upgrade(upgrade)) => {
                let (session, on_upgrade, token) = *upgrade;
                tokio::spawn(relay(on_upgrade, session).in_current_span());
                upgrade_response(&op, token)
            }
            Err(err) => {
                let api = err.to_api(&op);
                tracing::warn!(elapsed_ms, code = %api.code, message = %api.message, "failed");
                let status = StatusCode::from_u16(api.code.http_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                json_response(status, &ErrorBody { error: api }, &op)
            }
        };
        Ok(response)
    }
    .instrument(span)
    .await
}

async fn route(
    state: Arc<DaemonState>,
    allowed: bool,
    peer_uid: Option<u32>,
    mut req: Request<Incoming>,
    path: &str,
    op: &str,
) -> Result<Reply, OpError> {
    if !allowed {
        return Err(OpError::Unauthorized(format!(
            "this bangerd serves only its own user; connection from uid {} refused",
            peer_uid.map_or_else(|| "unknown".to_string(), |u| u.to_string())
        )));
    }
    let Some(method) = path.strip_prefix(RPC_PREFIX) else {
        return Err(OpError::UnknownMethod(format!(
            "no such endpoint {path:?}; methods are served at {RPC_PREFIX}<method>"
        )));
    };
    if req.method() != Method::POST {
        return Err(OpError::BadRequest(format!(
            "use POST for {RPC_PREFIX}{method} (got {})",
            req.method()
        )));
    }
    let method = method.to_owned();
    let kind = rpc::kind(&method);
    let upgrade = match kind {
        Some(Kind::Upgrade(token)) => {
            require_upgrade_token(&req, &method, token)?;
            Some((token, hyper::upgrade::on(&mut req)))
        }
        _ => None,
    };
    let wants_stream = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON));
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| OpError::BadRequest(format!("cannot read request body: {e}")))?
        .to_bytes();
    let params = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| OpError::BadRequest(format!("request body is not valid JSON: {e}")))?
    };
    tracing::debug!(method = %method, "dispatch");
    if let Some((token, on_upgrade)) = upgrade {
        let session = rpc::open(state, &method, params).await?;
        return Ok(Reply::Upgrade(Box::new((session, on_upgrade, token))));
    }
    if wants_stream && kind == Some(Kind::Streaming) {
        return Ok(Reply::Stream(spawn_streaming(
            state,
            method,
            params,
            op.to_string(),
        )));
    }
    rpc::dispatch(state, &method, params, OpContext::detached())
        .await
        .map(Reply::Json)
}

/// An upgrade names the stream's protocol and version (`banger-exec/2`): a client of
/// another one is refused before the switch, rather than misreading the frames after it.
fn require_upgrade_token(
    req: &Request<Incoming>,
    method: &str,
    token: &str,
) -> Result<(), OpError> {
    let asked = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if asked.eq_ignore_ascii_case(token) {
        return Ok(());
    }
    if asked.is_empty() {
        return Err(OpError::BadRequest(format!(
            "{method} needs an upgraded connection (`Connection: Upgrade`, `Upgrade: {token}`); see docs/api.md"
        )));
    }
    Err(OpError::BadRequest(format!(
        "{method} speaks `Upgrade: {token}` (see docs/api.md); this client asked for {asked:?}: \
         it is older or newer than this daemon, upgrade the one that is behind"
    )))
}

/// Runs a streaming method in its own task; the client reads events, then one result or
/// error line. When the client disconnects the receiver drops, which the operation sees
/// as cancellation.
fn spawn_streaming(
    state: Arc<DaemonState>,
    method: String,
    params: serde_json::Value,
    op: String,
) -> tokio::sync::mpsc::UnboundedReceiver<StreamLine> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = OpContext::streaming(tx.clone());
    let span = tracing::info_span!("stream", op = %op, method = %method);
    tokio::spawn(
        async move {
            let started = Instant::now();
            let line = match rpc::dispatch(state, &method, params, ctx).await {
                Ok(value) => {
                    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ok");
                    StreamLine::Result(value)
                }
                // A client that goes away ends its stream (`vm.hold`'s normal end, a
                // Ctrl-C'd pull): nothing failed on our side.
                Err(crate::error::OpError::Cancelled) => {
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "ended: the client went away"
                    );
                    StreamLine::Error(crate::error::OpError::Cancelled.to_api(&op))
                }
                Err(err) => {
                    let api = err.to_api(&op);
                    tracing::warn!(code = %api.code, message = %api.message, "failed");
                    StreamLine::Error(api)
                }
            };
            let _ = tx.send(line);
        }
        .instrument(span),
    );
    rx
}

/// A response body fed by a channel of stream lines, one JSON document per line.
struct LinesBody {
    rx: tokio::sync::mpsc::UnboundedReceiver<StreamLine>,
}

impl hyper::body::Body for LinesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|line| {
            line.map(|line| {
                let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
                bytes.push(b'\n');
                Ok(Frame::data(Bytes::from(bytes)))
            })
        })
    }
}

fn stream_response(
    rx: tokio::sync::mpsc::UnboundedReceiver<StreamLine>,
    op: &str,
) -> Response<Body> {
    let mut response = Response::new(LinesBody { rx }.boxed());
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(NDJSON),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(op) {
        headers.insert(OPERATION_ID_HEADER, v);
    }
    response
}

fn upgrade_response(op: &str, token: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    headers.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static(token),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(op) {
        headers.insert(OPERATION_ID_HEADER, v);
    }
    response
}

/// Exec is translated frame by frame (`vms::exec_relay`). Files and proxies: copies the
/// client's bytes to the agent and the agent's response body to the client, verbatim; the
/// stream ends when the agent's body ends, and the client's EOF only ends the input.
async fn relay(on_upgrade: hyper::upgrade::OnUpgrade, session: StreamSession) {
    use tokio::io::AsyncWriteExt;
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "upgrade failed");
            return;
        }
    };
    let StreamSession {
        input,
        output,
        mode,
        busy: _busy,
    } = session;
    let output = match output {
        SessionOutput::Agent(output) => output,
        SessionOutput::Host(answer) => {
            relay_to_host(TokioIo::new(upgraded), input, answer).await;
            return;
        }
    };
    if mode == RelayMode::Exec {
        crate::vms::exec_relay::relay(TokioIo::new(upgraded), input, output).await;
        return;
    }
    let (from_client, mut to_client) = tokio::io::split(TokioIo::new(upgraded));
    let client_to_agent = feed(from_client, input);
    let agent_to_client = async move {
        match output.await {
            Ok(response) => {
                let refused = response.status() != hyper::StatusCode::OK;
                let mut body = response.into_body();
                if refused && mode == RelayMode::Upload {
                    let bytes = crate::vms::agent::error_body(body).await;
                    let message = crate::vms::agent::refused("upload", &bytes).to_string();
                    let result = banger_guest_proto::PutResult {
                        error: Some(message),
                        ..Default::default()
                    };
                    let _ = to_client
                        .write_all(&serde_json::to_vec(&result).unwrap_or_default())
                        .await;
                } else {
                    while let Some(frame) = body.frame().await {
                        let Ok(frame) = frame else { break };
                        if let Ok(data) = frame.into_data()
                            && (to_client.write_all(&data).await.is_err()
                                || to_client.flush().await.is_err())
                        {
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "agent stream failed");
                if mode == RelayMode::Upload {
                    let result = banger_guest_proto::PutResult {
                        error: Some(e.to_string()),
                        ..Default::default()
                    };
                    let _ = to_client
                        .write_all(&serde_json::to_vec(&result).unwrap_or_default())
                        .await;
                }
            }
        }
        let _ = to_client.shutdown().await;
    };
    let (_, ()) = tokio::join!(client_to_agent, agent_to_client);
    tracing::info!("stream finished");
}

/// The client's bytes into `input` until the client's EOF (or its going away), or until
/// `input`'s taker wants no more (a download ignores its input); then `input` is closed.
async fn feed(
    mut from_client: impl tokio::io::AsyncRead + Unpin,
    input: tokio::sync::mpsc::Sender<Bytes>,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from_client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if input.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// A stream the daemon answers itself (an upload): the client's bytes go to `input` until
/// its EOF (or its going away), then the answer goes back and the stream closes.
async fn relay_to_host(
    upgraded: TokioIo<hyper::upgrade::Upgraded>,
    input: tokio::sync::mpsc::Sender<Bytes>,
    answer: std::pin::Pin<Box<dyn std::future::Future<Output = Bytes> + Send>>,
) {
    use tokio::io::AsyncWriteExt;
    let (from_client, mut to_client) = tokio::io::split(upgraded);
    feed(from_client, input).await;
    let bytes = answer.await;
    let _ = to_client.write_all(&bytes).await;
    let _ = to_client.shutdown().await;
    tracing::info!("stream finished");
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T, op: &str) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(op) {
        headers.insert(OPERATION_ID_HEADER, v);
    }
    response
}
