//! The agent's HTTP/2 server: routing of the guest-proto methods over one connection.
//!
//! [`Agent::serve`] runs on any byte stream, so tests drive it over a socket pair on the
//! host. What touches the machine as a whole (the wall clock, power) goes through
//! [`Machine`]: the real guest, or a recorder for tests. Exec only needs a root for
//! `/etc/passwd` and the ability to fork, which works anywhere.
//!
//! Raw-stream methods (FILES_PUT, FILES_GET, CONNECT) take their JSON params from the
//! [`PARAMS_HEADER`] header; a missing or malformed one is a 400 before anything streams.
//!
//! Every non-200 answer carries a JSON [`AgentError`]; handlers never panic on input.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use banger_guest_proto::{
    AddAuthorizedKey, AgentError, Connect, Empty, GetFiles, Hello, HelloRequest, IdentityTaken,
    InitMode, MAX_SEED, PARAMS_HEADER, PROTO_MIN, PROTO_VERSION, PutFiles, ReadFile, SetClock,
    SetIdentity, ShutdownRequest, StageTime, auth, negotiate, paths,
};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::body::AgentBody;
use crate::console::log;
use crate::keys::KeyError;
use crate::{connect, exec, files, keys, power, reaper, sys};

/// JSON request bodies larger than this are refused.
const MAX_JSON: usize = 64 << 10;
/// HTTP/2 pings find a dead peer on transports that do not report one (virtio-serial).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the clock and shutdown methods act on.
#[derive(Debug, Clone)]
pub enum Machine {
    /// This guest: CLOCK sets `CLOCK_REALTIME`, SHUTDOWN powers it off.
    Guest,
    /// Nothing is touched; each request is sent here (tests on the host).
    Recorder(mpsc::UnboundedSender<MachineRequest>),
}

/// A machine-wide request, as a [`Machine::Recorder`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineRequest {
    /// CLOCK was called.
    SetClock(SetClock),
    /// IDENTITY was called (checked).
    SetIdentity(SetIdentity),
    /// SHUTDOWN was called.
    Shutdown,
}

/// What the agent knows about its guest.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where `etc/passwd` and `etc/group` are read from (`/` in the guest).
    pub root: PathBuf,
    /// The init mode in effect (not `Auto`).
    pub init: InitMode,
    /// Boot stages reached, in order.
    pub stages: Vec<StageTime>,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `uname -r`.
    pub kernel_release: String,
    /// What CLOCK and SHUTDOWN act on.
    pub machine: Machine,
    /// The boot's secret (`banger_guest_proto::auth`): the hello proves knowledge of it.
    pub secret: Vec<u8>,
}

impl AgentConfig {
    /// A config with the running kernel's boot id and release, and no stages.
    pub fn new(root: impl Into<PathBuf>, init: InitMode, machine: Machine) -> AgentConfig {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        AgentConfig {
            root: root.into(),
            init,
            stages: Vec::new(),
            boot_id,
            kernel_release: sys::kernel_release(),
            machine,
            secret: Vec::new(),
        }
    }
}

/// The agent: shared by every connection and request.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    /// The secret hellos prove: the boot's, until a fork is given its own (IDENTITY).
    secret: std::sync::Mutex<Vec<u8>>,
}

type Reply = Response<AgentBody>;

fn reply(status: StatusCode, body: AgentBody) -> Reply {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

fn json<T: serde::Serialize>(value: &T) -> Reply {
    let mut r = reply(StatusCode::OK, AgentBody::json(value));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    let mut r = json(&AgentError {
        message: message.into(),
    });
    *r.status_mut() = status;
    r
}

async fn read_json<T: serde::de::DeserializeOwned>(body: Incoming) -> Result<T, Reply> {
    let bytes = Limited::new(body, MAX_JSON)
        .collect()
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("request body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

/// The JSON params of a raw-stream method, from the [`PARAMS_HEADER`] header (Err: a
/// message for a 400).
fn read_params<T: serde::de::DeserializeOwned>(headers: &HeaderMap) -> Result<T, String> {
    let value = headers
        .get(PARAMS_HEADER)
        .ok_or_else(|| format!("the {PARAMS_HEADER} header with the JSON params is missing"))?;
    serde_json::from_slice(value.as_bytes()).map_err(|e| format!("the {PARAMS_HEADER} header: {e}"))
}

fn bad_params(message: String) -> Reply {
    error(StatusCode::BAD_REQUEST, message)
}

impl Agent {
    /// Creates the agent and starts reaping children in the current tokio runtime
    /// (call it inside one: children are reaped process-wide, from any runtime that serves).
    pub fn new(cfg: AgentConfig) -> std::io::Result<Arc<Agent>> {
        reaper::start()?;
        let secret = std::sync::Mutex::new(cfg.secret.clone());
        Ok(Arc::new(Agent { cfg, secret }))
    }

    /// Serves HTTP/2 on `io` until the connection ends. Requests still running (exec
    /// sessions) end with it: their streams are gone.
    pub async fn serve<IO>(self: &Arc<Self>, io: IO) -> Result<(), hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let agent = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let agent = agent.clone();
            async move { Ok::<_, Infallible>(agent.handle(req).await) }
        });
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .serve_connection(TokioIo::new(io), service)
            .await
    }

    async fn handle(&self, req: Request<Incoming>) -> Reply {
        if req.method() != Method::POST {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} {}: only POST is served", req.method(), req.uri().path()),
            );
        }
        let path = req.uri().path().to_string();
        let (parts, body) = req.into_parts();
        let headers = parts.headers;
        let result = match path.as_str() {
            paths::HELLO => self.hello(body).await,
            paths::CLOCK => self.clock(body).await,
            paths::IDENTITY => self.identity(body).await,
            paths::SHUTDOWN => self.shutdown(body).await,
            paths::EXEC => exec::handle(&self.cfg.root, body)
                .await
                .map(|b| reply(StatusCode::OK, b))
                .map_err(|m| error(StatusCode::BAD_REQUEST, m)),
            paths::READ_FILE => self.read_file(body).await,
            paths::AUTHORIZED_KEY => self.authorized_key(body).await,
            paths::FILES_PUT => self.files_put(&headers, body).await,
            paths::FILES_GET => self.files_get(&headers).await,
            paths::CONNECT => self.connect(&headers, body).await,
            _ => Err(error(StatusCode::NOT_FOUND, format!("no method at {path}"))),
        };
        result.unwrap_or_else(|e| e)
    }

    async fn hello(&self, body: Incoming) -> Result<Reply, Reply> {
        let req: HelloRequest = read_json(body).await?;
        let Some(version) = negotiate(req.proto_min, req.proto_max, PROTO_MIN, PROTO_VERSION)
        else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "no common protocol version: the host speaks {}..={}, this agent {}..={}",
                    req.proto_min, req.proto_max, PROTO_MIN, PROTO_VERSION
                ),
            ));
        };
        log!(
            "host banger {} connected (protocol {version})",
            req.host_version
        );
        Ok(json(&Hello {
            proto_version: version,
            proto_min: PROTO_MIN,
            proto_max: PROTO_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            boot_id: self.cfg.boot_id.clone(),
            init: self.cfg.init,
            stages: self.cfg.stages.clone(),
            kernel_release: self.cfg.kernel_release.clone(),
            proof: auth::proof(&self.secret(), &req.nonce, &self.cfg.boot_id),
        }))
    }

    fn secret(&self) -> Vec<u8> {
        self.secret
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A fork becomes itself: everything checked before anything changes.
    async fn identity(&self, body: Incoming) -> Result<Reply, Reply> {
        let req: SetIdentity = read_json(body).await?;
        if !crate::cmdline::valid_hostname(&req.hostname) {
            return Err(error(StatusCode::BAD_REQUEST, "invalid hostname"));
        }
        if req.secret.len() != auth::SECRET_LEN || req.seed.is_empty() || req.seed.len() > MAX_SEED
        {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "a secret of {} bytes and 1..={MAX_SEED} seed bytes are required",
                    auth::SECRET_LEN
                ),
            ));
        }
        let root = self.cfg.root.clone();
        match &self.cfg.machine {
            Machine::Guest => {
                sys::reseed_rng(&req.seed).map_err(|e| {
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("reseeding the kernel's RNG: {e}"),
                    )
                })?;
                if let Err(e) = sys::set_realtime(req.unix_nanos) {
                    log!("identity: clock_settime: {e}");
                }
                crate::boot::configure::rename_fork(&req.hostname);
                // Nothing to make (no image key): no worker thread either.
                if crate::hostkeys::present(&root) {
                    let root = root.clone();
                    let _ = tokio::task::spawn_blocking(move || crate::hostkeys::regenerate(&root))
                        .await;
                }
                log!("this VM is now {} (resumed from a snapshot)", req.hostname);
            }
            Machine::Recorder(tx) => {
                let _ = tx.send(MachineRequest::SetIdentity(req.clone()));
            }
        }
        *self.secret.lock().unwrap_or_else(|e| e.into_inner()) = req.secret;
        // The rest of a fork's set-up, in this round trip rather than three more. Both are
        // a few small files, done here on the runtime: nothing else runs this early.
        let authorize_error = req
            .authorize
            .as_ref()
            .and_then(|add| match keys::add(&root, add) {
                Ok(()) => {
                    log!("authorized an SSH key for {}", add.user);
                    None
                }
                Err(KeyError::BadRequest(m) | KeyError::Failed(m)) => Some(m),
            });
        Ok(json(&IdentityTaken {
            host_keys: Some(crate::hostkeys::public_keys(&root)),
            authorize_error,
        }))
    }

    async fn clock(&self, body: Incoming) -> Result<Reply, Reply> {
        let req: SetClock = read_json(body).await?;
        match &self.cfg.machine {
            Machine::Guest => sys::set_realtime(req.unix_nanos).map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("clock_settime({} ns): {e}", req.unix_nanos),
                )
            })?,
            Machine::Recorder(tx) => {
                let _ = tx.send(MachineRequest::SetClock(req));
            }
        }
        Ok(json(&Empty {}))
    }

    async fn shutdown(&self, body: Incoming) -> Result<Reply, Reply> {
        let _: ShutdownRequest = read_json(body).await?;
        match &self.cfg.machine {
            Machine::Guest => {
                log!("shutdown requested by the host");
                tokio::spawn(power::power_off(self.cfg.init));
            }
            Machine::Recorder(tx) => {
                let _ = tx.send(MachineRequest::Shutdown);
            }
        }
        Ok(json(&Empty {}))
    }

    async fn read_file(&self, body: Incoming) -> Result<Reply, Reply> {
        let req: ReadFile = read_json(body).await?;
        files::read_file(&self.cfg.root, req)
            .await
            .map(|c| json(&c))
            .map_err(|(status, m)| error(status, m))
    }

    async fn authorized_key(&self, body: Incoming) -> Result<Reply, Reply> {
        let req: AddAuthorizedKey = read_json(body).await?;
        let root = self.cfg.root.clone();
        let user = req.user.clone();
        let added = tokio::task::spawn_blocking(move || keys::add(&root, &req))
            .await
            .map_err(|e| KeyError::Failed(format!("the worker thread failed: {e}")))
            .and_then(|r| r);
        match added {
            Ok(()) => {
                log!("authorized an SSH key for {user}");
                Ok(json(&Empty {}))
            }
            Err(KeyError::BadRequest(m)) => Err(error(StatusCode::BAD_REQUEST, m)),
            Err(KeyError::Failed(m)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, m)),
        }
    }

    async fn files_put(&self, headers: &HeaderMap, body: Incoming) -> Result<Reply, Reply> {
        let req: PutFiles = read_params(headers).map_err(bad_params)?;
        let dest = req.dest.clone();
        let result = files::put(&self.cfg.root, req, body).await;
        match &result.error {
            None => log!(
                "files/put {dest}: {} entries, {} bytes",
                result.entries,
                result.bytes
            ),
            Some(e) => log!("files/put {dest}: {e}"),
        }
        Ok(json(&result))
    }

    async fn files_get(&self, headers: &HeaderMap) -> Result<Reply, Reply> {
        // The request body carries nothing; it is dropped unread.
        let req: GetFiles = read_params(headers).map_err(bad_params)?;
        files::get(&self.cfg.root, req)
            .await
            .map(|b| reply(StatusCode::OK, b))
            .map_err(|(status, m)| error(status, m))
    }

    async fn connect(&self, headers: &HeaderMap, body: Incoming) -> Result<Reply, Reply> {
        let req: Connect = read_params(headers).map_err(bad_params)?;
        if req.port == 0 {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "port 0 cannot be connected to",
            ));
        }
        connect::open(req.port, body)
            .await
            .map(|b| reply(StatusCode::OK, b))
            .map_err(|m| error(StatusCode::BAD_GATEWAY, m))
    }
}
