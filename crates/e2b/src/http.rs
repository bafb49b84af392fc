//! HTTP plumbing shared by the REST and envd halves: the response body type (whole or fed
//! by a channel), bounded request bodies, query strings and the few headers we read.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

/// Every response's body.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A response with `body` as JSON.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
    with_type(status, "application/json", full(bytes))
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

pub fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A body fed by a channel: each item is a chunk, an `Err` aborts the response (the
/// client sees a broken transfer rather than a short one).
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl ChannelBody {
    /// The sender and the body; the body ends when every sender is dropped.
    pub fn channel(depth: usize) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Body) {
        let (tx, rx) = mpsc::channel(depth);
        (tx, ChannelBody { rx }.boxed())
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|chunk| chunk.map(Frame::data)))
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is over {0} bytes")]
    TooLarge(usize),
    #[error("reading the request body: {0}")]
    Read(#[from] hyper::Error),
}

/// The whole body, refused past `max` bytes (read no further than that).
pub async fn read_bounded(mut body: Incoming, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > max {
                return Err(BodyError::TooLarge(max));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// The value of query parameter `key`, percent-decoded (`+` is a space).
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// Percent-decodes `text` (`+` is a space; bad escapes are kept as they are).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

/// A header's value as text, if it has one that is.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The user of `Authorization: Basic base64(user:)`, as envd's clients name it.
pub fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = header(headers, "authorization")?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = crate::connect::b64::decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next().unwrap_or("");
    (!user.is_empty()).then(|| user.to_string())
}

/// Whether `given` equals one of `secrets`, in time independent of where they differ.
pub fn matches_secret(given: &str, secrets: &[String]) -> bool {
    use subtle::ConstantTimeEq as _;
    let mut found = subtle::Choice::from(0);
    for secret in secrets {
        found |= given.as_bytes().ct_eq(secret.as_bytes());
    }
    found.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_decoded() {
        let q = Some("path=%2Fhome%2Fuser%2Fa+b.txt&username=root&bad=%zz&end=%2");
        assert_eq!(query_param(q, "path").unwrap(), "/home/user/a b.txt");
        assert_eq!(query_param(q, "username").unwrap(), "root");
        assert_eq!(query_param(q, "bad").unwrap(), "%zz");
        assert_eq!(query_param(q, "end").unwrap(), "%2");
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "path"), None);
    }

    #[test]
    fn the_basic_user_is_the_name_before_the_colon() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Basic cm9vdDo="));
        assert_eq!(basic_user(&headers).as_deref(), Some("root"));
        headers.insert("authorization", HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_user(&headers), None);
    }

    #[test]
    fn secrets_match_exactly() {
        let keys = vec!["k1".to_string(), "other".to_string()];
        assert!(matches_secret("k1", &keys));
        assert!(matches_secret("other", &keys));
        assert!(!matches_secret("k", &keys));
        assert!(!matches_secret("k1 ", &keys));
        assert!(!matches_secret("", &[]));
    }
}
