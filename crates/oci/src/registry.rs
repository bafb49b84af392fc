//! Registry v2 client: ping, bearer-token and basic auth, manifests, and blob
//! downloads with retries, timeouts, redirects, and `Range` resume.
//!
//! Plain HTTP is used for loopback hosts and hosts listed as insecure; everything else
//! is HTTPS (rustls, bundled web PKI roots). Uploads (blobs, manifests) live in `push`.

use crate::cache::BlobWriter;
use crate::credentials::{Credential, CredentialStore, encode_base64};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{ACCEPT_MANIFESTS, MAX_MANIFEST_BYTES};
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, RANGE, WWW_AUTHENTICATE,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

mod push;
pub use push::UploadProgress;

/// Largest token-endpoint response read (real tokens are a few KiB).
pub const MAX_TOKEN_RESPONSE_BYTES: u64 = 1 << 20;
/// How much of an error response is read for its message; the rest is dropped unread.
const ERROR_BODY_BYTES: usize = 16 << 10;
/// How much of such a body the message quotes.
const ERROR_QUOTE_CHARS: usize = 300;

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
    /// Longest time to read a whole small document (manifest, index, token), so a
    /// registry trickling bytes just under `read_timeout` cannot hold a pull forever.
    pub document_timeout: Duration,
    pub user_agent: String,
    /// Fixed addresses for host names, like curl's `--resolve` (mirrors on private
    /// addresses, tests); other names go through the system resolver.
    pub resolve: Vec<(String, std::net::SocketAddr)>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            attempts: 5,
            backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            document_timeout: Duration::from_secs(120),
            user_agent: concat!("banger/", env!("CARGO_PKG_VERSION")).into(),
            resolve: Vec::new(),
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
        let mut builder = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .redirect(reqwest::redirect::Policy::limited(10));
        for (host, addr) in &opts.resolve {
            builder = builder.resolve(host, *addr);
        }
        let http = builder.build().map_err(|e| Error::Network {
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
        let scheme = if self.is_plain_http(registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}")
    }

    /// Hosts (`host[:port]`) reached over plain HTTP: loopback ones and `insecure` ones.
    fn is_plain_http(&self, host: &str) -> bool {
        is_loopback(host) || self.opts.insecure.iter().any(|h| h == host)
    }

    /// Refuses a bearer realm that would take a request (and credentials) off TLS: HTTPS
    /// realms are fine; a plain-HTTP one only when the registry itself is plain HTTP and
    /// the realm's host is one we reach over plain HTTP anyway (loopback or `insecure`).
    fn check_realm(&self, registry: &str, realm: &str) -> Result<()> {
        let refuse = |reason: &str| Error::RealmRefused {
            registry: registry.to_string(),
            realm: realm.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        let url = reqwest::Url::parse(realm).map_err(|_| refuse("not a URL"))?;
        match url.scheme() {
            "https" => Ok(()),
            "http" if !self.is_plain_http(registry) => Err(refuse(
                "the registry is reached over HTTPS, so its tokens (and any credentials) must be too",
            )),
            "http" => {
                let host = url.host_str().unwrap_or_default();
                let authority = match url.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host.to_string(),
                };
                if self.is_plain_http(&authority) {
                    Ok(())
                } else {
                    Err(refuse(
                        "plain HTTP to a host that is neither loopback nor listed as insecure",
                    ))
                }
            }
            _ => Err(refuse("only http(s) token endpoints are supported")),
        }
    }

    /// Reads a whole response body of at most `limit` bytes: a larger declared
    /// `Content-Length` fails before reading, a longer body as soon as it passes the
    /// limit, and the whole read is bounded by `document_timeout`.
    pub(crate) async fn read_capped(
        &self,
        registry: &str,
        mut resp: reqwest::Response,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        let too_large = || Error::TooLarge {
            what: what.to_string(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let read = async {
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| Self::net(registry, format!("{what}: {e}")))?
            {
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        tokio::time::timeout(self.opts.document_timeout, read)
            .await
            .map_err(|_| {
                Self::net(
                    registry,
                    format!(
                        "{what}: not received within {:?}",
                        self.opts.document_timeout
                    ),
                )
            })?
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
                // Before any request: credentials must not follow a realm off TLS.
                self.check_realm(registry, realm)?;
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
                let body = self
                    .read_capped(
                        registry,
                        resp,
                        MAX_TOKEN_RESPONSE_BYTES,
                        &format!("token response from {realm}"),
                    )
                    .await?;
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
        let body = self
            .read_capped(
                registry,
                resp,
                MAX_MANIFEST_BYTES,
                &format!("manifest {repo}:{reference}"),
            )
            .await?;
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
            let longer_than_declared = |actual: u64| Error::SizeMismatch {
                what: format!("blob {digest}"),
                expected: size.unwrap_or_default(),
                actual,
            };
            // A body announcing more than the descriptor declares is refused unread.
            if let (Some(s), Some(len)) = (size, resp.content_length())
                && w.written().saturating_add(len) > s
            {
                return Err(longer_than_declared(w.written().saturating_add(len)));
            }
            let stream_err = loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        // Checked before writing: the file never grows past the declared size.
                        let after = w.written() + c.len() as u64;
                        if size.is_some_and(|s| after > s) {
                            return Err(longer_than_declared(after));
                        }
                        w.write(&c).await?;
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

/// The start of an error response's body, for a message: at most `ERROR_BODY_BYTES` are
/// read (the rest is dropped unread), control characters are dropped, and at most
/// `ERROR_QUOTE_CHARS` are quoted. Never fails: a body that cannot be read quotes as empty.
pub(crate) async fn error_excerpt(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c[..c.len().min(ERROR_BODY_BYTES - body.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body)
        .chars()
        .filter(|c| !c.is_control())
        .take(ERROR_QUOTE_CHARS)
        .collect()
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
    fn realms_stay_on_tls_unless_both_ends_are_plain_http() {
        let opts = RegistryOptions {
            insecure: vec!["reg.lan:5000".into(), "auth.lan:5001".into()],
            ..Default::default()
        };
        let c = RegistryClient::new(opts, CredentialStore::default()).unwrap();
        let ok = |reg: &str, realm: &str| c.check_realm(reg, realm).is_ok();
        // HTTPS realms: always.
        assert!(ok("ghcr.io", "https://ghcr.io/token"));
        assert!(ok("127.0.0.1:5000", "https://auth.example/token"));
        // An HTTPS registry never sends us to plain HTTP, not even on loopback.
        assert!(!ok("ghcr.io", "http://ghcr.io/token"));
        assert!(!ok("ghcr.io", "http://127.0.0.1:8080/token"));
        // A plain-HTTP registry: realms on loopback or listed as insecure only.
        assert!(ok("127.0.0.1:5000", "http://127.0.0.1:5001/token"));
        assert!(ok("localhost:5000", "http://[::1]:5001/token"));
        assert!(ok("reg.lan:5000", "http://auth.lan:5001/token?x=1"));
        assert!(!ok("reg.lan:5000", "http://auth.lan:5002/token"));
        assert!(!ok("127.0.0.1:5000", "http://10.0.0.1/token"));
        // Other schemes and garbage.
        assert!(!ok("127.0.0.1:5000", "file:///etc/passwd"));
        assert!(!ok("127.0.0.1:5000", "ftp://127.0.0.1/token"));
        assert!(!ok("127.0.0.1:5000", "not a url"));
        let e = c.check_realm("ghcr.io", "http://x/t\n").unwrap_err();
        assert!(e.to_string().contains("over HTTPS"), "{e}");
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
