//! Typed frames inside a streaming body: `tokio-util`'s length-delimited codec (4-byte
//! big-endian length) around `postcard`-encoded messages.
//!
//! It carries exec streams between the daemon and the agent (over HTTP/2 bodies) only:
//! clients of the daemon speak its own framing (`banger_api::exec`), which the daemon
//! translates to and from this one.

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// The largest frame accepted: data frames are chunks of at most [`MAX_CHUNK`].
pub const MAX_FRAME: usize = 1 << 20;
/// Senders split stdin/stdout/stderr data into chunks of at most this many bytes.
pub const MAX_CHUNK: usize = 64 << 10;

/// A frame that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes are not a message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// The stream broke or carried an oversized frame.
    #[error("frame stream: {0}")]
    Io(#[from] std::io::Error),
}

/// The codec both ends use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// One message as a complete frame (length prefix included), ready to send as a body chunk.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, FrameError> {
    let payload = postcard::to_stdvec(msg)?;
    let mut out = BytesMut::with_capacity(payload.len() + 4);
    codec().encode(Bytes::from(payload), &mut out)?;
    Ok(out.freeze())
}

/// The payload of one frame (as produced by [`codec`]'s decoder) as a message.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(payload)?)
}

/// Splits a byte stream that arrives in arbitrary chunks back into frames.
#[derive(Debug)]
pub struct FrameBuffer {
    codec: LengthDelimitedCodec,
    buf: BytesMut,
}

impl Default for FrameBuffer {
    fn default() -> Self {
        FrameBuffer {
            codec: codec(),
            buf: BytesMut::new(),
        }
    }
}

impl FrameBuffer {
    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame's payload, if one has arrived.
    pub fn next_payload(&mut self) -> Result<Option<BytesMut>, FrameError> {
        Ok(self.codec.decode(&mut self.buf)?)
    }

    /// The next complete frame as a message, if one has arrived.
    // Not `Iterator::next`: it is fallible and typed per call.
    #[allow(clippy::should_implement_trait)]
    pub fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_payload()? {
            Some(p) => decode(&p).map(Some),
            None => Ok(None),
        }
    }

    /// Bytes received that do not yet form a frame (non-zero at end of stream means the
    /// peer stopped mid-frame).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExecInput, ExecOutput, ExitStatus, TtySize};

    #[test]
    fn frames_survive_arbitrary_chunking() {
        let msgs = vec![
            ExecOutput::Started { pid: 42 },
            ExecOutput::Stdout(vec![7; 100_000]),
            ExecOutput::Stderr(b"oops".to_vec()),
            ExecOutput::Exited(ExitStatus::Signal(15)),
        ];
        let wire: Vec<u8> = msgs
            .iter()
            .flat_map(|m| encode(m).expect("encode").to_vec())
            .collect();
        for chunk in [1, 3, 4096, wire.len()] {
            let mut fb = FrameBuffer::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                fb.push(piece);
                while let Some(m) = fb.next::<ExecOutput>().expect("decode") {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs, "chunk size {chunk}");
            assert_eq!(fb.pending(), 0);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut fb = FrameBuffer::default();
        fb.push(&[0, 0, 0, 2, 0xff, 0xff]);
        assert!(fb.next::<ExecInput>().is_err());
        let mut fb = FrameBuffer::default();
        fb.push(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(fb.next_payload().is_err(), "oversized frame refused");
        // A frame declaring 4 GiB: refused from its 4-byte prefix, before any allocation.
        let mut fb = FrameBuffer::default();
        fb.push(&[0xff, 0xff, 0xff, 0xff, b'x']);
        assert!(fb.next_payload().is_err(), "a 4 GiB frame refused");
        assert!(
            fb.pending() < 16,
            "nothing buffered for it: {}",
            fb.pending()
        );
        let _ = TtySize { rows: 1, cols: 1 };
    }
}
