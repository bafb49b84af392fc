//! HTTP bodies of the agent: one response body type for every method (a whole JSON
//! document, a stream of frames, or a raw byte stream that may fail), and a reader that
//! turns a request body back into typed frames.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use banger_guest_proto::frame::FrameBuffer;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// A response body.
#[derive(Debug)]
pub enum AgentBody {
    /// A complete body (taken on the first poll).
    Full(Option<Bytes>),
    /// Encoded frames from a bounded channel: the sender waits while the host is slow,
    /// and notices (`closed()`) when the host dropped the stream.
    Frames(mpsc::Receiver<Bytes>),
    /// Raw bytes from a bounded channel (tar streams, proxied sockets). An `Err` item resets
    /// the HTTP/2 stream, so the host sees a broken body instead of a truncated one that
    /// looks complete; the channel closing ends the body cleanly.
    Raw(mpsc::Receiver<io::Result<Bytes>>),
}

impl AgentBody {
    /// A JSON body.
    pub fn json<T: serde::Serialize>(value: &T) -> AgentBody {
        // Serializing plain derived structs into memory cannot fail.
        AgentBody::Full(Some(Bytes::from(
            serde_json::to_vec(value).unwrap_or_default(),
        )))
    }
}

impl Body for AgentBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            AgentBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            AgentBody::Frames(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
            AgentBody::Raw(rx) => rx.poll_recv(cx).map(|d| d.map(|d| d.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, AgentBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AgentBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            AgentBody::Full(None) => SizeHint::with_exact(0),
            AgentBody::Frames(_) | AgentBody::Raw(_) => SizeHint::default(),
        }
    }
}

/// Typed frames out of a request body that arrives in arbitrary chunks.
#[derive(Debug)]
pub struct FrameReader {
    body: Incoming,
    buf: FrameBuffer,
    ended: bool,
}

impl FrameReader {
    /// Reads frames from `body`.
    pub fn new(body: Incoming) -> FrameReader {
        FrameReader {
            body,
            buf: FrameBuffer::default(),
            ended: false,
        }
    }

    /// The next frame; `Ok(None)` when the body ended cleanly.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        loop {
            if let Some(msg) = self
                .buf
                .next::<T>()
                .map_err(|e| ReadError::Malformed(e.to_string()))?
            {
                return Ok(Some(msg));
            }
            if self.ended {
                return match self.buf.pending() {
                    0 => Ok(None),
                    n => Err(ReadError::Malformed(format!(
                        "the body ended inside a frame ({n} bytes left)"
                    ))),
                };
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.push(&data);
                    }
                }
                Some(Err(e)) => return Err(ReadError::Broken(e)),
                None => self.ended = true,
            }
        }
    }
}

/// Why no frame could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes are not frames of the expected message.
    Malformed(String),
    /// The stream broke (reset by the host, connection gone).
    Broken(hyper::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Malformed(m) => write!(f, "malformed request body: {m}"),
            ReadError::Broken(e) => write!(f, "request body: {e}"),
        }
    }
}
