//! E2B's REST API (the `/sandboxes` family the SDKs call, current and older paths), JSON
//! in E2B's shapes. Errors are E2B's `{code, message}` with the HTTP status as `code`.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::http::{self, Body};
use crate::sandboxes::{ENVD_VERSION, NewSandbox, RestError, Sandbox, Sandboxes, rfc3339};

/// The largest REST request body (a create with its metadata and environment).
pub const MAX_BODY: usize = 1 << 20;

/// A REST request, read whole.
pub struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

/// Routes and answers one REST request.
pub async fn handle(sandboxes: &Arc<Sandboxes>, req: Request<'_>) -> Response<Body> {
    match answer(sandboxes, &req).await {
        Ok(response) => response,
        Err(e) => error(&e),
    }
}

/// E2B's error body; 5xx answers say not to retry (the SDK retries 502-504 otherwise).
pub fn error(e: &RestError) -> Response<Body> {
    let mut response = http::json(
        e.status,
        &json!({ "code": e.status.as_u16(), "message": e.message }),
    );
    if e.status.is_server_error() {
        response
            .headers_mut()
            .insert("should-retry", HeaderValue::from_static("false"));
    }
    response
}

#[derive(Debug, Default, Deserialize)]
struct Timeout {
    timeout: Option<u64>,
}

async fn answer(
    sandboxes: &Arc<Sandboxes>,
    req: &Request<'_>,
) -> Result<Response<Body>, RestError> {
    let path = req.path.strip_prefix("/v2").unwrap_or(req.path);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method, segments.as_slice()) {
        (&Method::POST, ["sandboxes"]) => {
            let request: NewSandbox = parse(req.body)?;
            let sandbox = sandboxes.create(request).await?;
            Ok(http::json(StatusCode::CREATED, &created(&sandbox)))
        }
        (&Method::GET, ["sandboxes"]) => {
            Ok(http::json(StatusCode::OK, &list(sandboxes, req.query)?))
        }
        (&Method::GET, ["sandboxes", id]) => {
            let sandbox = sandboxes.get(id)?;
            let mut detail = listed(&sandbox);
            detail["envdAccessToken"] = json!(sandbox.token);
            Ok(http::json(StatusCode::OK, &detail))
        }
        (&Method::DELETE, ["sandboxes", id]) => {
            if sandboxes.kill(id).await? {
                Ok(http::empty(StatusCode::NO_CONTENT))
            } else {
                Err(RestError::new(
                    StatusCode::NOT_FOUND,
                    format!("sandbox {} not found", shown(id)),
                ))
            }
        }
        (&Method::GET, ["sandboxes", id, "metrics"]) => {
            let sandbox = sandboxes.get(id)?;
            Ok(http::json(
                StatusCode::OK,
                &[sandboxes.metric(&sandbox).await?],
            ))
        }
        (&Method::POST, ["sandboxes", id, "timeout"]) => {
            let Timeout { timeout } = parse(req.body)?;
            let secs = timeout.ok_or_else(|| {
                RestError::new(StatusCode::BAD_REQUEST, "timeout (seconds) is required")
            })?;
            sandboxes.set_timeout(id, secs)?;
            Ok(http::empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["sandboxes", id, "pause"]) => {
            sandboxes.pause(id).await?;
            Ok(http::empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["sandboxes", id, "connect"]) => {
            let Timeout { timeout } = parse(req.body)?;
            let (sandbox, resumed) = sandboxes.connect(id, timeout).await?;
            let status = if resumed {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(http::json(status, &created(&sandbox)))
        }
        (&Method::POST, ["sandboxes", id, "resume"]) => {
            if !sandboxes.get(id)?.paused() {
                return Err(RestError::new(
                    StatusCode::CONFLICT,
                    format!("sandbox {} is not paused", shown(id)),
                ));
            }
            let Timeout { timeout } = parse(req.body)?;
            let (sandbox, _) = sandboxes.connect(id, timeout).await?;
            Ok(http::json(StatusCode::CREATED, &created(&sandbox)))
        }
        // E2B endpoints we do not serve (metrics, logs, snapshots, templates, teams…):
        // a 404 would read as "no such sandbox" to the SDKs.
        _ => Err(RestError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "{} {} is not implemented by banger serve",
                req.method,
                shown(req.path)
            ),
        )),
    }
}

fn shown(text: &str) -> String {
    crate::shown(text, 200)
}

/// A JSON body (an empty one is `{}`).
fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, RestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| RestError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))
}

/// E2B's `Sandbox`: what create and connect answer.
fn created(sandbox: &Sandbox) -> serde_json::Value {
    json!({
        "templateID": sandbox.template,
        "sandboxID": sandbox.id,
        "alias": sandbox.image,
        "clientID": "banger",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": sandbox.token,
        "domain": null,
    })
}

/// E2B's `ListedSandbox`.
fn listed(sandbox: &Sandbox) -> serde_json::Value {
    json!({
        "templateID": sandbox.template,
        "alias": sandbox.image,
        "sandboxID": sandbox.id,
        "clientID": "banger",
        "startedAt": rfc3339(sandbox.started_at),
        "endAt": rfc3339(sandbox.end_at()),
        "cpuCount": sandbox.cpus,
        "memoryMB": sandbox.memory_mib,
        "diskSizeMB": sandbox.disk_mib,
        "metadata": sandbox.metadata,
        "state": if sandbox.paused() { "paused" } else { "running" },
        "envdVersion": ENVD_VERSION,
    })
}

/// `GET /sandboxes`: filtered by `state` (a comma list) and `metadata` (`k=v&…`,
/// URL-encoded), newest first, all on one page (no `x-next-token`).
fn list(sandboxes: &Sandboxes, query: Option<&str>) -> Result<Vec<serde_json::Value>, RestError> {
    let states: Option<Vec<String>> = http::query_param(query, "state")
        .map(|s| s.split(',').map(|s| s.trim().to_string()).collect());
    let wanted: BTreeMap<String, String> = http::query_param(query, "metadata")
        .map(|m| {
            m.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (http::percent_decode(k), http::percent_decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(sandboxes
        .all()
        .iter()
        .filter(|s| {
            let state = if s.paused() { "paused" } else { "running" };
            states
                .as_ref()
                .is_none_or(|wanted| wanted.iter().any(|w| w == state))
        })
        .filter(|s| wanted.iter().all(|(k, v)| s.metadata.get(k) == Some(v)))
        .map(|s| listed(s))
        .collect())
}
