//! banger-e2b: `banger serve`, a local E2B. One HTTP port serves E2B's REST API (create,
//! list, get, kill, timeout, pause, connect) and, for every sandbox, envd's API (the
//! `process.Process` and `filesystem.Filesystem` Connect services, watches included,
//! `/files`, `/health`),
//! routed by the `E2b-Sandbox-Id` header the SDKs send on every envd request. Sandboxes
//! are ordinary banger VMs made through the client crate ([`banger_client`]) under one
//! `vm.hold` lease, so the daemon removes them when the server goes.
//!
//! Requests: REST needs `X-API-KEY` to be one of the configured keys (anything when none
//! are configured, which only a loopback listener allows); envd requests need the
//! sandbox's access token (`X-Access-Token`), handed out by create and connect.

mod connect;
mod files;
mod filesystem;
mod guest;
mod http;
mod process;
mod rest;
mod sandboxes;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use banger_api::vm::VmCreateParams;
use banger_client::Client;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::connect::{Code, RpcError};
use crate::guest::User;
use crate::http::Body;
use crate::sandboxes::{RestError, Sandboxes};

pub use sandboxes::ENVD_VERSION;

/// The envd port the SDKs name in `E2b-Sandbox-Port` (other ports are a sandbox's own
/// services, which this server does not proxy).
const ENVD_PORT: &str = "49983";

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    /// Accepted `X-API-KEY`s; empty: any key (loopback only).
    pub api_keys: Vec<String>,
    /// The `vm.create` settings every sandbox starts from (name, image and lease are the
    /// server's).
    pub defaults: VmCreateParams,
}

/// Why the server would not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {0} without an API key: anyone who can reach it could run \
         commands in your sandboxes (give --api-key or [serve] api_keys, or listen on 127.0.0.1)"
    )]
    OpenWithoutKey(SocketAddr),
}

impl Options {
    /// Refuses what the server would not run with (an open address without a key), before
    /// anything starts.
    pub fn check(&self) -> Result<(), ServeError> {
        if self.api_keys.is_empty() && !self.listen.ip().is_loopback() {
            return Err(ServeError::OpenWithoutKey(self.listen));
        }
        Ok(())
    }
}

struct Server {
    sandboxes: Arc<Sandboxes>,
    api_keys: Vec<String>,
}

/// Binds, then serves until the process ends; `on_listening` hears the bound address
/// (the port when `listen` asked for port 0).
pub async fn serve(
    client: Client,
    options: Options,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    options.check()?;
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let sandboxes = Sandboxes::new(client, options.defaults).await?;
    tokio::spawn(sandboxes.clone().reap());
    let server = Arc::new(Server {
        sandboxes,
        api_keys: options.api_keys,
    });
    on_listening(listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(server.handle(req).await) }
            });
            // A client that never finishes its headers does not hold a task for ever.
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

impl Server {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let envd = req.headers().contains_key("e2b-sandbox-id")
            || path.starts_with("/process.Process/")
            || path.starts_with("/filesystem.Filesystem/")
            || path == "/files";
        if envd {
            return self.envd(req, &path).await;
        }
        if path == "/health" {
            return http::empty(StatusCode::NO_CONTENT);
        }
        let key = http::header(req.headers(), "x-api-key").unwrap_or("");
        if !key_allowed(key, &self.api_keys) {
            return rest::error(&RestError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong X-API-KEY (set E2B_API_KEY to a key `banger serve` accepts)",
            ));
        }
        let method = req.method().clone();
        let query = req.uri().query().map(str::to_string);
        let body = match http::read_bounded(req.into_body(), rest::MAX_BODY).await {
            Ok(body) => body,
            Err(e) => return rest::error(&RestError::new(StatusCode::BAD_REQUEST, e.to_string())),
        };
        let request = rest::Request {
            method: &method,
            path: &path,
            query: query.as_deref(),
            body: &body,
        };
        rest::handle(&self.sandboxes, request).await
    }

    /// One envd request, for the sandbox its headers name.
    async fn envd(&self, req: Request<Incoming>, path: &str) -> Response<Body> {
        let headers = req.headers();
        let Some(id) = http::header(headers, "e2b-sandbox-id").map(str::to_string) else {
            return files::error(
                StatusCode::BAD_REQUEST,
                "envd requests name their sandbox in the E2b-Sandbox-Id header",
            );
        };
        // E2B's proxy answers so for a sandbox it does not know; the SDKs map it to
        // "sandbox not running".
        let Ok(sandbox) = self.sandboxes.get(&id) else {
            return files::error(
                StatusCode::BAD_GATEWAY,
                format!("The sandbox {} was not found", crate::shown(&id, 80)),
            );
        };
        if let Some(port) = http::header(headers, "e2b-sandbox-port")
            && port != ENVD_PORT
        {
            return files::error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "port {}: banger serve only serves envd (port {ENVD_PORT}), not a sandbox's own ports",
                    crate::shown(port, 20)
                ),
            );
        }
        if path == "/health" {
            return http::empty(StatusCode::NO_CONTENT);
        }
        let token = http::header(headers, "x-access-token").unwrap_or("");
        if !http::matches_secret(token, std::slice::from_ref(&sandbox.token)) {
            return unary_error(&RpcError::new(
                Code::Unauthenticated,
                "missing or wrong X-Access-Token for this sandbox",
            ));
        }
        if sandbox.paused() {
            return unary_error(&RpcError::new(
                Code::Unavailable,
                format!("sandbox {id} is paused: connect to it to resume it"),
            ));
        }
        let client = self.sandboxes.client().clone();
        if path == "/files" {
            let query = req.uri().query().map(str::to_string);
            let user = User::new(http::query_param(query.as_deref(), "username"));
            let target = http::query_param(query.as_deref(), "path");
            return match *req.method() {
                Method::GET => match target {
                    Some(target) => files::download(&client, &sandbox.id, &user, &target).await,
                    None => files::error(
                        StatusCode::BAD_REQUEST,
                        "the path query parameter is required",
                    ),
                },
                Method::POST => {
                    let content_type = http::header(headers, "content-type").map(str::to_string);
                    let gzip = files::is_gzip(headers);
                    files::upload(
                        &client,
                        &sandbox.id,
                        &user,
                        target,
                        content_type.as_deref(),
                        gzip,
                        req.into_body(),
                    )
                    .await
                }
                _ => files::error(StatusCode::METHOD_NOT_ALLOWED, "/files takes GET and POST"),
            };
        }
        rpc::call(&client, &sandbox, req, path).await
    }
}

/// Whether a REST request's key lets it in: one of the configured keys, or anything when
/// none are configured (which [`serve`] allows on loopback only).
fn key_allowed(given: &str, keys: &[String]) -> bool {
    keys.is_empty() || http::matches_secret(given, keys)
}

/// Client- or guest-given text for a message: cut to `max` bytes, controls made visible.
pub(crate) fn shown(text: &str, max: usize) -> String {
    banger_api::text::visible(banger_api::text::cut(text, max)).into_owned()
}

fn unary_error(e: &RpcError) -> Response<Body> {
    http::json(e.code.http_status(), &e.json())
}

/// The Connect calls of envd's two services.
mod rpc {
    use std::sync::Arc;
    use std::time::Duration;

    use banger_client::Client;
    use hyper::body::Incoming;
    use hyper::{Method, Request, Response, StatusCode};

    use super::unary_error;
    use crate::connect::{self, Code, RpcError};
    use crate::guest::User;
    use crate::http::{self, Body, ChannelBody};
    use crate::sandboxes::Sandbox;
    use crate::{filesystem, process, watch};

    pub async fn call(
        client: &Client,
        sandbox: &Arc<Sandbox>,
        req: Request<Incoming>,
        path: &str,
    ) -> Response<Body> {
        if req.method() != Method::POST {
            return unary_error(&RpcError::new(
                Code::Unimplemented,
                "Connect calls are POSTs",
            ));
        }
        let headers = req.headers();
        let user = User::new(http::basic_user(headers));
        let content_type = http::header(headers, "content-type")
            .unwrap_or("")
            .to_string();
        let deadline = http::header(headers, "connect-timeout-ms")
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let keepalive = process::keepalive(http::header(headers, "keepalive-ping-interval"));
        let streaming = matches!(
            path,
            "/process.Process/Start"
                | "/process.Process/Connect"
                | "/filesystem.Filesystem/WatchDir"
        );
        if path == "/process.Process/StreamInput" {
            if content_type != connect::STREAM_JSON {
                return unary_error(&RpcError::new(
                    Code::Unimplemented,
                    format!("streaming calls take {} only", connect::STREAM_JSON),
                ));
            }
            let streamed = sandbox.processes.stream_input(req.into_body());
            let streamed = match deadline {
                Some(d) => tokio::time::timeout(d, streamed).await.unwrap_or_else(|_| {
                    Err(RpcError::new(
                        Code::DeadlineExceeded,
                        "the stream's timeout passed",
                    ))
                }),
                None => streamed.await,
            };
            return match streamed {
                Ok(()) => {
                    let mut answer = connect::envelope(&serde_json::json!({})).to_vec();
                    answer.extend_from_slice(&connect::end_of_stream(None));
                    http::with_type(StatusCode::OK, connect::STREAM_JSON, http::full(answer))
                }
                Err(e) => stream_error(&e),
            };
        }
        let body = match http::read_bounded(req.into_body(), connect::MAX_MESSAGE).await {
            Ok(body) => body,
            Err(e) => return unary_error(&RpcError::new(Code::ResourceExhausted, e.to_string())),
        };
        if streaming {
            if content_type != connect::STREAM_JSON {
                return unary_error(&RpcError::new(
                    Code::Unimplemented,
                    format!("streaming calls take {} only", connect::STREAM_JSON),
                ));
            }
            let message = match connect::single_envelope(&body) {
                Ok(message) => message,
                Err(e) => return stream_error(&e),
            };
            if path == "/filesystem.Filesystem/WatchDir" {
                return match connect::parse::<watch::WatchRequest>(message) {
                    Ok(request) => {
                        let (tx, body) = ChannelBody::channel(16);
                        tokio::spawn(watch::stream(
                            client.clone(),
                            sandbox.id.clone(),
                            user,
                            request,
                            tx,
                            deadline,
                            keepalive,
                        ));
                        http::with_type(StatusCode::OK, connect::STREAM_JSON, body)
                    }
                    Err(e) => stream_error(&e),
                };
            }
            let stream = match path {
                "/process.Process/Start" => connect::parse(message)
                    .and_then(|request| process::start(client, sandbox, &user, request, keepalive)),
                _ => connect::parse(message)
                    .and_then(|request| sandbox.processes.connect(&request, keepalive)),
            };
            return match stream {
                Ok(stream) => {
                    let (tx, body) = ChannelBody::channel(16);
                    tokio::spawn(stream.pump(tx, deadline));
                    http::with_type(StatusCode::OK, connect::STREAM_JSON, body)
                }
                Err(e) => stream_error(&e),
            };
        }
        let json_type = content_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim() == connect::UNARY_JSON);
        if !json_type {
            return unary_error(&RpcError::new(
                Code::Unimplemented,
                format!(
                    "unary calls take {} only (the JSON codec)",
                    connect::UNARY_JSON
                ),
            ));
        }
        let answer = unary(client, sandbox, &user, path, &body);
        let answer = match deadline {
            Some(d) => tokio::time::timeout(d, answer).await.unwrap_or_else(|_| {
                Err(RpcError::new(
                    Code::DeadlineExceeded,
                    "the request's timeout passed",
                ))
            }),
            None => answer.await,
        };
        match answer {
            Ok(value) => http::json(StatusCode::OK, &value),
            Err(e) => unary_error(&e),
        }
    }

    async fn unary(
        client: &Client,
        sandbox: &Arc<Sandbox>,
        user: &User,
        path: &str,
        body: &[u8],
    ) -> Result<serde_json::Value, RpcError> {
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            &b"{}"[..]
        } else {
            body
        };
        let vm = sandbox.id.as_str();
        let processes = &sandbox.processes;
        let done = serde_json::json!({});
        match path {
            "/process.Process/List" => Ok(processes.list()),
            "/process.Process/SendSignal" => {
                processes.signal(&connect::parse(body)?)?;
                Ok(done)
            }
            "/process.Process/SendInput" => {
                processes.send_input(&connect::parse(body)?).await?;
                Ok(done)
            }
            "/process.Process/Update" => {
                processes.update(&connect::parse(body)?)?;
                Ok(done)
            }
            "/process.Process/CloseStdin" => {
                processes.close_stdin(&connect::parse(body)?).await?;
                Ok(done)
            }
            "/filesystem.Filesystem/Stat" => {
                filesystem::stat(client, vm, user, &connect::parse(body)?).await
            }
            "/filesystem.Filesystem/ListDir" => {
                filesystem::list_dir(client, vm, user, &connect::parse(body)?).await
            }
            "/filesystem.Filesystem/MakeDir" => {
                filesystem::make_dir(client, vm, user, &connect::parse(body)?).await
            }
            "/filesystem.Filesystem/Move" => {
                filesystem::rename(client, vm, user, &connect::parse(body)?).await
            }
            "/filesystem.Filesystem/Remove" => {
                filesystem::remove(client, vm, user, &connect::parse(body)?).await
            }
            "/filesystem.Filesystem/CreateWatcher" => {
                let request = connect::parse(body)?;
                sandbox.watchers.create(client, vm, user, &request).await
            }
            "/filesystem.Filesystem/GetWatcherEvents" => {
                sandbox
                    .watchers
                    .events(client, vm, &connect::parse(body)?)
                    .await
            }
            "/filesystem.Filesystem/RemoveWatcher" => {
                sandbox.watchers.remove(&connect::parse(body)?)
            }
            other => Err(RpcError::new(
                Code::Unimplemented,
                format!(
                    "{} is not implemented by banger serve",
                    crate::shown(other, 120)
                ),
            )),
        }
    }

    /// A streaming call that fails before its first message: 200 and the end of the
    /// stream carrying the error, as Connect servers answer.
    fn stream_error(e: &RpcError) -> Response<Body> {
        http::with_type(
            StatusCode::OK,
            connect::STREAM_JSON,
            http::full(connect::end_of_stream(Some(e))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_let_in_only_their_holders_and_none_configured_lets_in_all() {
        let keys = vec!["k1".to_string()];
        assert!(key_allowed("k1", &keys));
        assert!(!key_allowed("", &keys));
        assert!(!key_allowed("k2", &keys));
        assert!(key_allowed("", &[]));
        assert!(key_allowed("anything", &[]));
    }

    #[tokio::test]
    async fn an_open_address_without_a_key_is_refused_before_anything_starts() {
        let options = Options {
            listen: "0.0.0.0:0".parse().unwrap(),
            api_keys: Vec::new(),
            defaults: VmCreateParams::default(),
        };
        let client = Client::new(std::path::Path::new("/nonexistent/bangerd.sock"));
        let e = serve(client, options, |_| panic!("it listened"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("without an API key"), "{e}");
    }
}
