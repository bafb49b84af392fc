//! Registry v2 push: blob existence checks, monolithic blob uploads (`POST` then `PUT
//! ?digest=`), and manifest uploads. Authentication and retries work as for pulls; the
//! bearer scope comes from the registry's challenge (`repository:<repo>:pull,push`).
//!
//! Blobs can come from memory (configs, manifests) or from a file, which is streamed in
//! chunks so a large layer is never held in memory; every attempt re-reads it from byte 0.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{RegistryClient, error_excerpt};
use crate::digest::Digest;
use crate::error::{Error, Result};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};

/// Bytes of a file upload sent so far (restarts at 0 when an attempt is retried).
pub type UploadProgress = Arc<dyn Fn(u64) + Send + Sync>;

/// Chunk size of file uploads.
const CHUNK: usize = 1 << 20;

/// What an upload sends.
#[derive(Clone)]
enum Payload<'a> {
    Memory(&'a [u8]),
    File {
        file: Arc<File>,
        len: u64,
        progress: Option<UploadProgress>,
    },
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Memory(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }

    fn body(&self) -> reqwest::Body {
        match self {
            Payload::Memory(b) => reqwest::Body::from(b.to_vec()),
            Payload::File {
                file,
                len,
                progress,
            } => reqwest::Body::wrap(FileBody {
                file: file.clone(),
                offset: 0,
                len: *len,
                progress: progress.clone(),
            }),
        }
    }
}

/// A file's bytes as an HTTP body, read with positional reads (no shared file offset, so
/// each attempt gets its own body over the same open file).
struct FileBody {
    file: Arc<File>,
    offset: u64,
    len: u64,
    progress: Option<UploadProgress>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let left = this.len - this.offset;
        if left == 0 {
            return Poll::Ready(None);
        }
        // A local, usually page-cached read of at most one chunk: short enough to do
        // inline rather than bouncing each chunk through a blocking thread.
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
        let n = match this.file.read_at(&mut buf, this.offset) {
            Ok(0) => {
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file to upload shrank while being sent",
                ))));
            }
            Ok(n) => n,
            Err(e) => return Poll::Ready(Some(Err(e))),
        };
        buf.truncate(n);
        this.offset += n as u64;
        if let Some(p) = &this.progress {
            p(this.offset);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset == self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.offset)
    }
}

/// What a push request is, rebuilt for every attempt.
enum Req<'a> {
    Head(&'a str),
    Post(&'a str),
    Put {
        url: &'a str,
        content_type: &'a str,
        body: Payload<'a>,
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
                .header(CONTENT_LENGTH, body.len())
                .body(body.body()),
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
        self.upload(registry, repo, digest, Payload::Memory(data))
            .await
    }

    /// Uploads the file at `path` as blob `digest` unless the registry has it, streaming it
    /// in chunks; `progress` hears the bytes sent. The caller computed `digest` while
    /// writing the file; the registry checks it again when the upload completes. Returns
    /// whether bytes were sent.
    pub async fn push_blob_file(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        path: &Path,
        progress: Option<UploadProgress>,
    ) -> Result<bool> {
        let io = |e| Error::io(format!("reading {} to upload it", path.display()), e);
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let payload = Payload::File {
            file: Arc::new(file),
            len,
            progress,
        };
        self.upload(registry, repo, digest, payload).await
    }

    async fn upload(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        payload: Payload<'_>,
    ) -> Result<bool> {
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
            body: payload,
        };
        let resp = self.send(registry, repo, &put).await?;
        if resp.status() != StatusCode::CREATED {
            let st = resp.status();
            let body = error_excerpt(resp).await;
            return Err(Error::Protocol(format!(
                "uploading blob {digest} to {registry}/{repo}: HTTP {st}: {body}"
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
            body: Payload::Memory(body),
        };
        let resp = self.send(registry, repo, &put).await?;
        if !resp.status().is_success() {
            let st = resp.status();
            let text = error_excerpt(resp).await;
            return Err(match st {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    Error::Unauthorized(format!("pushing {repo}:{reference} to {registry} ({st})"))
                }
                _ => Error::Protocol(format!(
                    "pushing manifest {repo}:{reference} to {registry}: HTTP {st}: {text}"
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
