//! Registry v2 push: blob existence checks, monolithic blob uploads (`POST` then `PUT
//! ?digest=`), and manifest uploads. Authentication and retries work as for pulls; the
//! bearer scope comes from the registry's challenge (`repository:<repo>:pull,push`).

use super::RegistryClient;
use crate::digest::Digest;
use crate::error::{Error, Result};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};

/// What a push request is, rebuilt for every attempt.
enum Req<'a> {
    Head(&'a str),
    Post(&'a str),
    Put {
        url: &'a str,
        content_type: &'a str,
        body: &'a [u8],
    },
}

impl RegistryClient {
    /// Sends a push-side request (see [`RegistryClient::send_with_retries`]).
    async fn send(&self, registry: &str, repo: &str, r: &Req<'_>) -> Result<reqwest::Response> {
        let url = match r {
            Req::Head(url) | Req::Post(url) | Req::Put { url, .. } => *url,
        };
        self.send_with_retries(registry, repo, url, || match r {
            Req::Head(url) => self.http.head(*url),
            Req::Post(url) => self.http.post(*url).header(CONTENT_LENGTH, 0),
            Req::Put {
                url,
                content_type,
                body,
            } => self
                .http
                .put(*url)
                .header(CONTENT_TYPE, *content_type)
                .body(body.to_vec()),
        })
        .await
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: whether the registry already has the blob.
    pub async fn blob_exists(&self, registry: &str, repo: &str, digest: &Digest) -> Result<bool> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base_url(registry));
        let resp = self.send(registry, repo, &Req::Head(&url)).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(Self::status_error(
                registry,
                &format!("blob {digest} of {repo}"),
                s,
            )),
        }
    }

    /// Uploads `data` as blob `digest` (checked against the data first) unless the
    /// registry has it. Returns whether bytes were sent.
    pub async fn push_blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        data: &[u8],
    ) -> Result<bool> {
        let actual = Digest::of(data);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                what: "blob to push".into(),
                expected: digest.clone(),
                actual,
            });
        }
        if self.blob_exists(registry, repo, digest).await? {
            return Ok(false);
        }
        let base = self.base_url(registry);
        let start = format!("{base}/v2/{repo}/blobs/uploads/");
        let resp = self.send(registry, repo, &Req::Post(&start)).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(Self::status_error(
                registry,
                &format!("starting an upload to {repo}"),
                resp.status(),
            ));
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Protocol("upload started without a Location".into()))?;
        let mut url = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{base}{location}")
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", urlencode_digest(digest)));
        let put = Req::Put {
            url: &url,
            content_type: "application/octet-stream",
            body: data,
        };
        let resp = self.send(registry, repo, &put).await?;
        if resp.status() != StatusCode::CREATED {
            let st = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(Error::Protocol(format!(
                "uploading blob {digest} to {registry}/{repo}: HTTP {st}: {}",
                body.chars().take(300).collect::<String>()
            )));
        }
        Ok(true)
    }

    /// `PUT /v2/<repo>/manifests/<reference>`; returns the manifest's digest.
    pub async fn push_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Digest> {
        let url = format!(
            "{}/v2/{repo}/manifests/{reference}",
            self.base_url(registry)
        );
        let put = Req::Put {
            url: &url,
            content_type: media_type,
            body,
        };
        let resp = self.send(registry, repo, &put).await?;
        if !resp.status().is_success() {
            let st = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(match st {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    Error::Unauthorized(format!("pushing {repo}:{reference} to {registry} ({st})"))
                }
                _ => Error::Protocol(format!(
                    "pushing manifest {repo}:{reference} to {registry}: HTTP {st}: {}",
                    text.chars().take(300).collect::<String>()
                )),
            });
        }
        Ok(Digest::of(body))
    }
}

/// `sha256:<hex>` with the colon escaped for a query string.
fn urlencode_digest(d: &Digest) -> String {
    format!("sha256%3A{}", d.hex())
}
