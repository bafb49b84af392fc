//! The subset of the Connect protocol (connectrpc.com/docs/protocol) that E2B's SDKs speak
//! to envd: the JSON codec only, uncompressed. Unary calls are a JSON body each way, errors
//! an HTTP status with `{"code","message"}`; server streams are 5-byte-enveloped messages
//! (a flags byte, a big-endian length) ending with an end-of-stream envelope (flag `0x02`)
//! that carries the error, if any.

use bytes::{BufMut, Bytes, BytesMut};
use hyper::StatusCode;
use serde::Serialize;

/// Content type of a unary JSON call.
pub const UNARY_JSON: &str = "application/json";
/// Content type of a streaming JSON call.
pub const STREAM_JSON: &str = "application/connect+json";
/// The largest request message we take (every envd request is small; stdin chunks are
/// the largest, and the SDKs send those in small pieces).
pub const MAX_MESSAGE: usize = 4 << 20;

const FLAG_COMPRESSED: u8 = 0x01;
const FLAG_END_STREAM: u8 = 0x02;

/// A Connect error code (the protocol's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code (the protocol's table).
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// An error as an RPC answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    /// The JSON a unary error body, or an end-of-stream's `error`, holds.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.as_str(), "message": self.message })
    }
}

/// The one message of a server-streaming request: exactly one uncompressed envelope.
pub fn single_envelope(body: &[u8]) -> Result<&[u8], RpcError> {
    let bad = |why: &str| RpcError::new(Code::InvalidArgument, format!("malformed request: {why}"));
    let header: &[u8; 5] = body
        .get(..5)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| bad("shorter than an envelope's 5-byte prefix"))?;
    if header[0] & FLAG_COMPRESSED != 0 {
        return Err(RpcError::new(
            Code::Unimplemented,
            "compressed messages are not supported: send them uncompressed",
        ));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let message = body
        .get(5..5 + len)
        .ok_or_else(|| bad("the envelope's length is past the end of the body"))?;
    if body.len() != 5 + len {
        return Err(bad("more than one message for a server-streaming call"));
    }
    Ok(message)
}

/// Splits a client stream's body into its messages as the bytes arrive.
#[derive(Default)]
pub struct Envelopes {
    pending: Vec<u8>,
}

impl Envelopes {
    /// Takes `bytes`; the whole messages they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, RpcError> {
        self.pending.extend_from_slice(bytes);
        let mut messages = Vec::new();
        while self.pending.len() >= 5 {
            if self.pending[0] & FLAG_COMPRESSED != 0 {
                return Err(RpcError::new(
                    Code::Unimplemented,
                    "compressed messages are not supported: send them uncompressed",
                ));
            }
            let len = u32::from_be_bytes([
                self.pending[1],
                self.pending[2],
                self.pending[3],
                self.pending[4],
            ]) as usize;
            if len > MAX_MESSAGE {
                return Err(RpcError::new(
                    Code::ResourceExhausted,
                    format!("a message of {len} bytes is over the {MAX_MESSAGE}-byte limit"),
                ));
            }
            if self.pending.len() < 5 + len {
                break;
            }
            messages.push(self.pending[5..5 + len].to_vec());
            self.pending.drain(..5 + len);
        }
        Ok(messages)
    }

    /// Whether the stream ended between messages (not inside one).
    pub fn is_clean(&self) -> bool {
        self.pending.is_empty()
    }
}

/// A proto-JSON integer: a number, or a string of one (parsers accept both).
pub fn uint(value: &serde_json::Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Parses a request message (protobuf JSON; unknown fields ignored, as by newer servers).
pub fn parse<T: serde::de::DeserializeOwned>(message: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(message).map_err(|e| {
        RpcError::new(
            Code::InvalidArgument,
            format!("malformed request message: {e}"),
        )
    })
}

/// One message of a stream, enveloped.
pub fn envelope<T: Serialize>(message: &T) -> Bytes {
    let json = serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec());
    frame(0, &json)
}

/// The end of a stream: `{}`, or the error.
pub fn end_of_stream(error: Option<&RpcError>) -> Bytes {
    let json = match error {
        None => serde_json::json!({}),
        Some(e) => serde_json::json!({ "error": e.json() }),
    };
    frame(FLAG_END_STREAM, json.to_string().as_bytes())
}

fn frame(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flags);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

/// Protobuf JSON's `bytes`: standard base64 with padding.
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    /// Decodes standard or URL-safe base64, padded or not (protobuf JSON parsers accept
    /// both).
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let normal: String = text
            .chars()
            .filter(|c| *c != '=')
            .map(|c| match c {
                '-' => '+',
                '_' => '/',
                c => c,
            })
            .collect();
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(normal)
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_and_bad_ones_are_invalid_arguments() {
        let framed = envelope(&serde_json::json!({"a": 1}));
        assert_eq!(single_envelope(&framed).unwrap(), br#"{"a":1}"#);
        for bad in [
            &b"\x00\x00\x00"[..],
            b"\x00\x00\x00\x00\x09{}",
            b"\x00\x00\x00\x00\x02{}extra",
        ] {
            assert_eq!(
                single_envelope(bad).unwrap_err().code,
                Code::InvalidArgument,
                "{bad:?}"
            );
        }
        assert_eq!(
            single_envelope(b"\x01\x00\x00\x00\x02{}").unwrap_err().code,
            Code::Unimplemented
        );
    }

    #[test]
    fn a_client_stream_is_split_whatever_the_chunks() {
        let mut wire = envelope(&serde_json::json!({"a": 1})).to_vec();
        wire.extend_from_slice(&envelope(&serde_json::json!({"b": 2})));
        let mut envelopes = Envelopes::default();
        let mut got = Vec::new();
        for byte in &wire {
            got.extend(envelopes.feed(std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(got, [br#"{"a":1}"#.to_vec(), br#"{"b":2}"#.to_vec()]);
        assert!(envelopes.is_clean());
        assert!(
            Envelopes::default()
                .feed(b"\x00\x00\x00\x00\x09{}")
                .unwrap()
                .is_empty()
        );
        let mut cut = Envelopes::default();
        cut.feed(b"\x00\x00\x00\x00\x09{}").unwrap();
        assert!(!cut.is_clean());
        assert_eq!(
            Envelopes::default()
                .feed(b"\x00\xff\xff\xff\xff")
                .unwrap_err()
                .code,
            Code::ResourceExhausted
        );
    }

    #[test]
    fn the_end_of_a_stream_carries_its_error() {
        let end = end_of_stream(Some(&RpcError::new(Code::NotFound, "no such process")));
        assert_eq!(end[0], FLAG_END_STREAM);
        let body: serde_json::Value = serde_json::from_slice(&end[5..]).unwrap();
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(&end_of_stream(None)[5..], b"{}");
    }

    #[test]
    fn base64_takes_both_alphabets() {
        assert_eq!(
            b64::decode(&b64::encode(b"\xfb\xff hi")).unwrap(),
            b"\xfb\xff hi"
        );
        assert_eq!(b64::decode("-_8").unwrap(), b"\xfb\xff");
        assert!(b64::decode("not base64!").is_none());
    }
}
