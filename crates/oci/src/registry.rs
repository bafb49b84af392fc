//! Registry v2 client: ping, bearer-token and basic auth, manifests, and blob
//! downloads with retries, timeouts, redirects, and `Range` resume.
//!
//! Plain HTTP is used for loopback hosts and hosts listed as insecure; everything else
//! is HTTPS (rustls, bundled web PKI roots). Uploads (blobs, manifests) live in `push`.

use crate::cache::BlobWriter;
use crate::credentials::{Credential, CredentialStore, encode_base64};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::ACCEPT_MANIFESTS;
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, RANGE, WWW_AUTHENTICATE,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

mod push;
pub use push::UploadProgress;

/// Client settings.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Hosts (`host:port`) reached over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Attempts per request for connection errors, 5xx and 429.
    pub attempts: u32,
    /// First retry delay; doubles each time.
    pub backoff: Duration,
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub read_timeout: Duration,
    pub user_agent: String,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            attempts: 5,
            backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            user_agent: concat!("banger/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

pub struct RegistryClient {
    http: reqwest::Client,
    opts: RegistryOptions,
    creds: CredentialStore,
    /// (registry, repository) → Authorization header value.
    auth: Mutex<HashMap<(String, String), String>>,
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (quoted or bare values, commas inside quotes).
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let key = rest[ks..i].trim().to_ascii_lowercase();
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                let ch = rest[i..].chars().next()?;
                val.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = rest[vs..i].trim().to_string();
        }
        params.insert(key, val);
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl RegistryClient {
    pub fn new(opts: RegistryOptions, creds: CredentialStore) -> Result<RegistryClient> {
        let http = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| Error::Network {
                registry: String::new(),
                message: format!("HTTP client: {e}"),
            })?;
        Ok(RegistryClient {
            http,
            opts,
            creds,
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// `http://host` or `https://host`; Docker Hub's API lives at `registry-1.docker.io`.
    pub fn base_url(&self, registry: &str) -> String {
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let plain = is_loopback(registry) || self.opts.insecure.iter().any(|h| h == registry);
        format!("{}://{host}", if plain { "http" } else { "https" })
    }

    fn net(registry: &str, e: impl std::fmt::Display) -> Error {
        Error::Network {
            registry: registry.to_string(),
            message: e.to_string(),
        }
    }

    /// Sends a GET with retries and authentication. `range_from` adds `Range: bytes=N-`.
    async fn get(
        &self,
        registry: &str,
        repo: &str,
        url: &str,
        accept: Option<&str>,
        range_from: u64,
    ) -> Result<reqwest::Response> {
        self.send_with_retries(registry, repo, url, || {
            let mut req = self.http.get(url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if range_from > 0 {
                req = req.header(RANGE, format!("bytes={range_from}-"));
            }
            req
        })
        .await
    }

    /// Sends the request `build` makes, with the cached Authorization header; retries
    /// connection errors, 5xx and 429 with backoff, and answers one 401 challenge.
    pub(crate) async fn send_with_retries(
        &self,
        registry: &str,
        repo: &str,
        url: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut authed_once = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = build();
            if let Some(h) = self.cached_auth(registry, repo) {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < self.opts.attempts => {
                    tracing::debug!(%url, error = %e, "request failed; retrying");
                    self.sleep(attempt).await;
                    continue;
                }
                Err(e) => return Err(Self::net(registry, format!("{url}: {e}"))),
            };
            let st = resp.status();
            if st == StatusCode::UNAUTHORIZED && !authed_once {
                authed_once = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                let header = self.authenticate(registry, repo, challenge).await?;
                self.auth
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((registry.to_string(), repo.to_string()), header);
                attempt -= 1;
                continue;
            }
            if (st.is_server_error() || st == StatusCode::TOO_MANY_REQUESTS)
                && attempt < self.opts.attempts
            {
                tracing::debug!(%url, status = %st, "server error; retrying");
                self.sleep(attempt).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// The Authorization header last negotiated for this repository, if any.
    fn cached_auth(&self, registry: &str, repo: &str) -> Option<String> {
        self.auth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(registry.to_string(), repo.to_string()))
            .cloned()
    }

    async fn sleep(&self, attempt: u32) {
        let f = 1u32 << attempt.saturating_sub(1).min(6);
        tokio::time::sleep(self.opts.backoff * f).await;
    }

    /// Answers a 401 challenge: fetches a bearer token (anonymously or with
    /// credentials) or builds a basic header.
    async fn authenticate(
        &self,
        registry: &str,
        repo: &str,
        ch: Option<Challenge>,
    ) -> Result<String> {
        let cred = self.creds.get(registry)?;
        let Some(ch) = ch else {
            return Err(Error::Unauthorized(format!(
                "{registry} refused access to {repo} without a challenge"
            )));
        };
        match ch.scheme.as_str() {
            "basic" => match cred {
                Some(Credential::Basic { username, password }) => Ok(format!(
                    "Basic {}",
                    encode_base64(format!("{username}:{password}").as_bytes())
                )),
                _ => Err(Error::Unauthorized(format!(
                    "{registry} requires a login (no credentials in Docker config)"
                ))),
            },
            "bearer" => {
                if let Some(Credential::Bearer(t)) = &cred {
                    return Ok(format!("Bearer {t}"));
                }
                let realm = ch
                    .params
                    .get("realm")
                    .ok_or_else(|| Error::Protocol("bearer challenge without realm".into()))?;
                let scope = ch
                    .params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{repo}:pull"));
                let service = ch.params.get("service").cloned();
                let mut req = match &cred {
                    Some(Credential::IdentityToken(rt)) => {
                        let mut form = vec![
                            ("grant_type", "refresh_token".to_string()),
                            ("refresh_token", rt.clone()),
                            ("client_id", "banger".into()),
                            ("scope", scope.clone()),
                        ];
                        if let Some(s) = &service {
                            form.push(("service", s.clone()));
                        }
                        let body: Vec<String> = form
                            .iter()
                            .map(|(k, v)| format!("{k}={}", urlencode(v)))
                            .collect();
                        self.http
                            .post(realm)
                            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                            .body(body.join("&"))
                    }
                    _ => {
                        let mut q = vec![("scope", scope.clone())];
                        if let Some(s) = &service {
                            q.push(("service", s.clone()));
                        }
                        let sep = if realm.contains('?') { '&' } else { '?' };
                        let qs: Vec<String> = q
                            .iter()
                            .map(|(k, v)| format!("{k}={}", urlencode(v)))
                            .collect();
                        self.http.get(format!("{realm}{sep}{}", qs.join("&")))
                    }
                };
                if let Some(Credential::Basic { username, password }) = &cred {
                    req = req.basic_auth(username, Some(password));
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| Self::net(registry, format!("token endpoint {realm}: {e}")))?;
                if resp.status() == StatusCode::UNAUTHORIZED
                    || resp.status() == StatusCode::FORBIDDEN
                {
                    return Err(Error::Unauthorized(format!(
                        "token endpoint {realm} refused {} for {repo}",
                        if cred.is_some() {
                            "the configured credentials"
                        } else {
                            "anonymous access"
                        }
                    )));
                }
                if !resp.status().is_success() {
                    return Err(Error::Protocol(format!(
                        "token endpoint {realm} answered {}",
                        resp.status()
                    )));
                }
                #[derive(serde::Deserialize)]
                struct Tok {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = resp.bytes().await.map_err(|e| Self::net(registry, e))?;
                let t: Tok = serde_json::from_slice(&body)
                    .map_err(|e| Error::Protocol(format!("token response: {e}")))?;
                let t = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Error::Protocol("token response without token".into()))?;
                Ok(format!("Bearer {t}"))
            }
            other => Err(Error::Unauthorized(format!(
                "unsupported auth scheme {other:?} from {registry}"
            ))),
        }
    }

    fn status_error(registry: &str, what: &str, st: StatusCode) -> Error {
        match st {
            StatusCode::NOT_FOUND => Error::NotFound(format!("{what} on {registry}")),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Error::Unauthorized(format!("{what} on {registry} ({st})"))
            }
            _ => Error::Network {
                registry: registry.to_string(),
                message: format!("{what}: HTTP {st}"),
            },
        }
    }

    /// `GET /v2/`: reachable and speaks the v2 API (401 counts: auth comes later).
    pub async fn ping(&self, registry: &str) -> Result<()> {
        let url = format!("{}/v2/", self.base_url(registry));
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| Self::net(registry, format!("{url}: {e}")))?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::UNAUTHORIZED => Ok(()),
            s => Err(Self::net(
                registry,
                format!("{url}: HTTP {s} (not a registry v2 endpoint?)"),
            )),
        }
    }

    /// Fetches a manifest or index by tag or digest; returns (body, content type, digest).
    /// A digest reference is verified against the body.
    pub async fn manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>, Digest)> {
        let url = format!(
            "{}/v2/{repo}/manifests/{reference}",
            self.base_url(registry)
        );
        let resp = self
            .get(registry, repo, &url, Some(ACCEPT_MANIFESTS), 0)
            .await?;
        if !resp.status().is_success() {
            return Err(Self::status_error(
                registry,
                &format!("manifest {repo}:{reference}"),
                resp.status(),
            ));
        }
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .bytes()
            .await
            .map_err(|e| Self::net(registry, e))?
            .to_vec();
        if body.len() > 8 << 20 {
            return Err(Error::Protocol(format!(
                "manifest {repo}:{reference} is larger than 8 MiB"
            )));
        }
        let got = Digest::of(&body);
        if let Ok(want) = Digest::parse(reference)
            && want != got
        {
            return Err(Error::DigestMismatch {
                what: format!("manifest {repo}@{reference}"),
                expected: want,
                actual: got,
            });
        }
        Ok((body, ct, got))
    }

    /// Streams a blob into `w`, resuming with `Range` after a dropped connection and
    /// starting over when the server ignores `Range`. `progress(done)` after each chunk.
    pub async fn blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        size: Option<u64>,
        w: &mut BlobWriter,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base_url(registry));
        let mut failures = 0;
        loop {
            let from = w.written();
            let mut resp = self.get(registry, repo, &url, None, from).await?;
            let st = resp.status();
            if st == StatusCode::RANGE_NOT_SATISFIABLE && from > 0 {
                w.reset().await?;
                continue;
            }
            if !st.is_success() {
                return Err(Self::status_error(
                    registry,
                    &format!("blob {digest} of {repo}"),
                    st,
                ));
            }
            let resumed = st == StatusCode::PARTIAL_CONTENT
                && resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| {
                        v.strip_prefix("bytes ")
                            .and_then(|r| r.split('-').next())
                            .and_then(|s| s.parse::<u64>().ok())
                            == Some(from)
                    });
            if from > 0 && !resumed {
                tracing::debug!(%digest, "server ignored Range; downloading from the start");
                w.reset().await?;
            }
            let stream_err = loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        w.write(&c).await?;
                        if let Some(s) = size
                            && w.written() > s
                        {
                            return Err(Error::SizeMismatch {
                                what: format!("blob {digest}"),
                                expected: s,
                                actual: w.written(),
                            });
                        }
                        progress(w.written());
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            };
            let short = size.is_some_and(|s| w.written() < s);
            match stream_err {
                None if !short => return Ok(()),
                reason => {
                    failures += 1;
                    let reason =
                        reason.unwrap_or_else(|| format!("body ended after {} bytes", w.written()));
                    if failures >= self.opts.attempts {
                        return Err(Self::net(registry, format!("blob {digest}: {reason}")));
                    }
                    tracing::debug!(%digest, %reason, "blob download interrupted; resuming");
                    self.sleep(failures).await;
                }
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull,push""#).unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["scope"], "repository:library/debian:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(
            (c.scheme.as_str(), c.params["realm"].as_str()),
            ("basic", "Registry Realm")
        );
        let c = parse_challenge("Bearer realm=http://x/t, service=s").unwrap();
        assert_eq!(
            (c.params["realm"].as_str(), c.params["service"].as_str()),
            ("http://x/t", "s")
        );
    }

    #[test]
    fn schemes() {
        let opts = RegistryOptions {
            insecure: vec!["reg.lan:5000".into()],
            ..Default::default()
        };
        let c = RegistryClient::new(opts, CredentialStore::default()).unwrap();
        assert_eq!(c.base_url("docker.io"), "https://registry-1.docker.io");
        assert_eq!(c.base_url("ghcr.io"), "https://ghcr.io");
        assert_eq!(c.base_url("reg.lan:5000"), "http://reg.lan:5000");
        assert_eq!(c.base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(c.base_url("localhost"), "http://localhost");
    }

    #[test]
    fn loopback_detection() {
        for h in [
            "127.0.0.1:5000",
            "localhost:1",
            "localhost",
            "[::1]:80",
            "127.9.9.9",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["docker.io", "10.0.0.1:5000", "ghcr.io"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
