//! The `vm.exec` stream: the daemon's own framing, spoken on the upgraded connection
//! (`Upgrade: banger-exec/2`, see [`crate::vm::EXEC_UPGRADE`] and `docs/api.md`).
//!
//! Every frame is a 5-byte header, a type byte and the payload's length as a 4-byte
//! big-endian integer, then the payload. Data frames carry raw bytes; control frames carry
//! one JSON object with a `"type"` field. The daemon translates to and from the guest
//! agent's protocol, which stays behind it.
//!
//! | byte | name | direction | payload |
//! |---|---|---|---|
//! | 0 | stdin | client → daemon | bytes |
//! | 1 | stdout | daemon → client | bytes |
//! | 2 | stderr | daemon → client | bytes |
//! | 3 | stdin_eof | client → daemon | empty |
//! | 4 | control | both | JSON ([`ClientControl`], [`DaemonControl`]) |

use serde::{Deserialize, Serialize};

/// The largest payload either side accepts; a larger header ends the stream.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Senders split data into payloads of at most this many bytes.
pub const MAX_CHUNK: usize = 64 << 10;
/// Type byte, then a 4-byte big-endian payload length.
pub const HEADER_LEN: usize = 5;

/// The type byte of each frame.
pub mod frame_type {
    /// Bytes for the command's stdin.
    pub const STDIN: u8 = 0;
    /// Bytes the command wrote to stdout (or its pty).
    pub const STDOUT: u8 = 1;
    /// Bytes the command wrote to stderr.
    pub const STDERR: u8 = 2;
    /// The command's stdin is closed (empty payload).
    pub const STDIN_EOF: u8 = 3;
    /// One JSON control message.
    pub const CONTROL: u8 = 4;
}

/// What the client tells the running command besides its stdin. Unknown `type`s are
/// ignored by the daemon, so a newer client may send messages an older daemon skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientControl {
    /// The pty's new window size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Deliver this signal number to the command (its process group with a pty).
    Signal {
        /// The signal number (Linux numbering: 2 SIGINT, 15 SIGTERM).
        signal: i32,
    },
    /// A message this side does not know.
    #[serde(other)]
    Unknown,
}

/// What the daemon tells the client about the command. After `exit` or `error` the daemon
/// sends nothing more and closes the connection. Unknown `type`s are to be ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DaemonControl {
    /// The command runs with this guest pid.
    Started {
        /// Guest pid.
        pid: u32,
    },
    /// The command ended: exactly one of `code` (it exited) and `signal` (it was killed).
    Exit {
        /// `exit(code)`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        /// Killed by this signal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    /// The exec ended without an exit status.
    Error {
        /// Stable: clients match on it.
        code: ExecErrorCode,
        /// For people; may change.
        message: String,
    },
    /// A message this side does not know.
    #[serde(other)]
    Unknown,
}

impl DaemonControl {
    /// The `exit` message of a status.
    pub fn exit(status: ExitStatus) -> DaemonControl {
        match status {
            ExitStatus::Code(code) => DaemonControl::Exit {
                code: Some(code),
                signal: None,
            },
            ExitStatus::Signal(signal) => DaemonControl::Exit {
                code: None,
                signal: Some(signal),
            },
        }
    }
}

/// Why an exec ended without an exit status. Codes are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecErrorCode {
    /// No such program (the shell's 127).
    CommandNotFound,
    /// The program is not executable (the shell's 126).
    PermissionDenied,
    /// Any other start failure: no such user, a bad working directory (126).
    StartFailed,
    /// The guest agent refused the exec or its stream broke (the VM stopped, a malformed
    /// frame from the guest).
    ExecFailed,
    /// The client sent a frame the daemon cannot read (unknown type, oversized, bad JSON).
    BadFrame,
    /// A code this side does not know.
    #[serde(other)]
    Unknown,
}

impl ExecErrorCode {
    /// The shell's exit code for a start failure; `None` when the command may have run.
    pub fn shell_code(self) -> Option<i32> {
        match self {
            ExecErrorCode::CommandNotFound => Some(127),
            ExecErrorCode::PermissionDenied | ExecErrorCode::StartFailed => Some(126),
            ExecErrorCode::ExecFailed | ExecErrorCode::BadFrame | ExecErrorCode::Unknown => None,
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// A frame the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Bytes for stdin.
    Stdin(Vec<u8>),
    /// No more stdin.
    StdinEof,
    /// A control message.
    Control(ClientControl),
}

/// A frame the daemon sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonFrame {
    /// Bytes from stdout.
    Stdout(Vec<u8>),
    /// Bytes from stderr.
    Stderr(Vec<u8>),
    /// A control message.
    Control(DaemonControl),
}

/// A frame that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header announces more than [`MAX_PAYLOAD`] bytes.
    #[error("frame of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// A type byte this direction does not carry.
    #[error("unexpected frame type {0}")]
    UnexpectedType(u8),
    /// A control frame that is not a JSON control message, or stdin EOF with a payload.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// One frame: header and payload.
pub fn encode(frame_type: u8, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(frame_type);
    // Bounded by MAX_PAYLOAD above, so it fits in 32 bits.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

fn control<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let json = serde_json::to_vec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    encode(frame_type::CONTROL, &json)
}

fn parse_control<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(payload).map_err(|e| FrameError::Malformed(e.to_string()))
}

impl ClientFrame {
    /// The frame's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        match self {
            ClientFrame::Stdin(data) => encode(frame_type::STDIN, data),
            ClientFrame::StdinEof => encode(frame_type::STDIN_EOF, &[]),
            ClientFrame::Control(msg) => control(msg),
        }
    }

    /// A frame read by [`FrameReader`].
    pub fn decode(frame_type: u8, payload: Vec<u8>) -> Result<ClientFrame, FrameError> {
        match frame_type {
            frame_type::STDIN => Ok(ClientFrame::Stdin(payload)),
            frame_type::STDIN_EOF if payload.is_empty() => Ok(ClientFrame::StdinEof),
            frame_type::STDIN_EOF => Err(FrameError::Malformed("stdin_eof with a payload".into())),
            frame_type::CONTROL => parse_control(&payload).map(ClientFrame::Control),
            other => Err(FrameError::UnexpectedType(other)),
        }
    }
}

impl DaemonFrame {
    /// The frame's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        match self {
            DaemonFrame::Stdout(data) => encode(frame_type::STDOUT, data),
            DaemonFrame::Stderr(data) => encode(frame_type::STDERR, data),
            DaemonFrame::Control(msg) => control(msg),
        }
    }

    /// A frame read by [`FrameReader`].
    pub fn decode(frame_type: u8, payload: Vec<u8>) -> Result<DaemonFrame, FrameError> {
        match frame_type {
            frame_type::STDOUT => Ok(DaemonFrame::Stdout(payload)),
            frame_type::STDERR => Ok(DaemonFrame::Stderr(payload)),
            frame_type::CONTROL => parse_control(&payload).map(DaemonFrame::Control),
            other => Err(FrameError::UnexpectedType(other)),
        }
    }
}

/// Splits a byte stream that arrives in arbitrary chunks back into frames. An oversized
/// header is refused before its payload is buffered.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame as (type, payload), if one has arrived.
    pub fn next_raw(&mut self) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let frame_type = header[0];
        let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some((frame_type, payload)))
    }

    /// The next complete frame from a client.
    pub fn next_client(&mut self) -> Result<Option<ClientFrame>, FrameError> {
        self.next_raw()?
            .map(|(t, p)| ClientFrame::decode(t, p))
            .transpose()
    }

    /// The next complete frame from the daemon.
    pub fn next_daemon(&mut self) -> Result<Option<DaemonFrame>, FrameError> {
        self.next_raw()?
            .map(|(t, p)| DaemonFrame::decode(t, p))
            .transpose()
    }

    /// Bytes received that do not yet form a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_arbitrary_chunking() {
        let frames = vec![
            DaemonFrame::Control(DaemonControl::Started { pid: 7 }),
            DaemonFrame::Stdout(vec![9; 100_000]),
            DaemonFrame::Stderr(b"e".to_vec()),
            DaemonFrame::Control(DaemonControl::exit(ExitStatus::Signal(9))),
        ];
        let wire: Vec<u8> = frames
            .iter()
            .flat_map(|f| f.encode().expect("encode"))
            .collect();
        for chunk in [1, 4, 5, 4096, wire.len()] {
            let mut reader = FrameReader::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                reader.push(piece);
                while let Some(f) = reader.next_daemon().expect("decode") {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "chunk size {chunk}");
            assert_eq!(reader.pending(), 0);
        }
    }

    #[test]
    fn hostile_frames_are_errors() {
        let mut reader = FrameReader::default();
        reader.push(&[0, 0xff, 0xff, 0xff, 0xff, b'x']);
        assert!(matches!(reader.next_raw(), Err(FrameError::TooLarge(_))));
        let mut reader = FrameReader::default();
        reader.push(&[1, 0, 0, 0, 0]);
        assert!(matches!(
            reader.next_client(),
            Err(FrameError::UnexpectedType(1))
        ));
        let mut reader = FrameReader::default();
        reader.push(&encode(frame_type::CONTROL, b"{not json").expect("encode"));
        assert!(matches!(
            reader.next_client(),
            Err(FrameError::Malformed(_))
        ));
        assert!(encode(frame_type::STDIN, &vec![0; MAX_PAYLOAD + 1]).is_err());
    }

    #[test]
    fn unknown_control_messages_and_codes_are_tolerated() {
        let msg: ClientControl =
            serde_json::from_str(r#"{"type":"pause","for":3}"#).expect("parse");
        assert_eq!(msg, ClientControl::Unknown);
        let msg: DaemonControl =
            serde_json::from_str(r#"{"type":"error","code":"vm_melted","message":"m"}"#)
                .expect("parse");
        assert!(matches!(
            msg,
            DaemonControl::Error {
                code: ExecErrorCode::Unknown,
                ..
            }
        ));
    }
}
