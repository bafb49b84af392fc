//! The session sync in front of HTTP/2 on the serial channel.
//!
//! A virtio-serial port is one byte stream that outlives the host's connections to it: a
//! VM resumed from a snapshot still serves the snapshot's HTTP/2 session, and whatever the
//! host sends first would be eaten by it. So every serial session starts with a sync:
//!
//! 1. host → guest [`Kind::Syn`] with a fresh nonce, repeated every [`SYN_INTERVAL`] until
//!    answered (earlier copies may be eaten by a stale session or a port nobody reads yet);
//! 2. guest → host [`Kind::Ack`] echoing that nonce, once per nonce;
//! 3. host → guest [`Kind::Start`] with the same nonce; HTTP/2 starts on the next byte both
//!    ways (the guest writes nothing between its ACK and the START).
//!
//! Each side discards whatever else it reads before its marker. A marker is [`MARKER_LEN`]
//! bytes: `FF FF FF`, a 5-byte ASCII tag, the 16-byte nonce. An HTTP/2 parser that reads a
//! marker as a frame header sees a 16 MiB length (more than any maximum frame size): a stale
//! session fails at once with `FRAME_SIZE_ERROR` instead of waiting for a payload.
//!
//! This is framing, not security: any guest process that can write the port can answer a
//! SYN. The agent proves itself afterwards, in the HMAC hello ([`crate::auth`]).
//!
//! vsock does not need this: each vsock connection is a fresh stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Bytes in a marker: `FF FF FF`, a 5-byte tag, a 16-byte nonce.
pub const MARKER_LEN: usize = 3 + TAG_LEN + NONCE_LEN;
/// Bytes in a nonce.
pub const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 5;
const LEAD: [u8; 3] = [0xFF; 3];
/// How often the host repeats its SYN until the guest answers.
pub const SYN_INTERVAL: Duration = Duration::from_millis(20);
/// The most guest bytes the host scans for the ACK in one sync (the guest is untrusted).
pub const MAX_HOST_SCAN: usize = 1 << 20;

/// A sync's nonce: drawn by the host per connection, so an ACK left in the port by an
/// earlier connection is told apart from the answer to this one.
pub type Nonce = [u8; NONCE_LEN];

/// The three markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Host → guest: "start a session with this nonce".
    Syn,
    /// Guest → host: "ready, send START".
    Ack,
    /// Host → guest: HTTP/2 follows.
    Start,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Syn, Kind::Ack, Kind::Start];

    fn tag(self) -> &'static [u8; TAG_LEN] {
        match self {
            Kind::Syn => b"SYN  ",
            Kind::Ack => b"ACK  ",
            Kind::Start => b"START",
        }
    }
}

/// One marker as it goes on the wire.
pub fn encode(kind: Kind, nonce: &Nonce) -> [u8; MARKER_LEN] {
    let mut out = [0u8; MARKER_LEN];
    out[..3].copy_from_slice(&LEAD);
    out[3..3 + TAG_LEN].copy_from_slice(kind.tag());
    out[3 + TAG_LEN..].copy_from_slice(nonce);
    out
}

/// A marker found by a [`Scanner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Which marker.
    pub kind: Kind,
    /// Its nonce.
    pub nonce: Nonce,
    /// Offset in the fed slice of the first byte after the marker.
    pub end: usize,
}

/// Finds markers in a byte stream fed in pieces. Keeps at most `MARKER_LEN - 1` bytes (a
/// marker's beginning at the end of a piece); everything else is discarded as it is fed.
#[derive(Debug, Default)]
pub struct Scanner {
    carry: Vec<u8>,
}

impl Scanner {
    /// A scanner that has seen nothing.
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// The first marker that ends in `data` (it may have begun in earlier pieces), or None
    /// when `data` holds none: then a marker's beginning at its end is kept for the next
    /// piece. After a marker the scanner starts afresh: feed `data[found.end..]` to go on.
    pub fn feed(&mut self, data: &[u8]) -> Option<Found> {
        let carried = self.carry.len();
        // The carry and the start of `data`: where a marker may straddle the two.
        let mut joined = std::mem::take(&mut self.carry);
        joined.extend_from_slice(&data[..data.len().min(MARKER_LEN - 1)]);
        for start in 0..carried {
            match parse(&joined[start..]) {
                Parse::Marker(kind, nonce) => {
                    return Some(Found {
                        kind,
                        nonce,
                        end: start + MARKER_LEN - carried,
                    });
                }
                // Shorter than a marker, so `joined` holds all of `data`: keep the lot.
                Parse::Partial => {
                    self.carry = joined[start..].to_vec();
                    return None;
                }
                Parse::No => {}
            }
        }
        for start in 0..data.len() {
            match parse(&data[start..]) {
                Parse::Marker(kind, nonce) => {
                    return Some(Found {
                        kind,
                        nonce,
                        end: start + MARKER_LEN,
                    });
                }
                Parse::Partial => {
                    self.carry = data[start..].to_vec();
                    return None;
                }
                Parse::No => {}
            }
        }
        None
    }
}

enum Parse {
    Marker(Kind, Nonce),
    /// Too short to tell, and consistent with a marker so far.
    Partial,
    No,
}

fn parse(bytes: &[u8]) -> Parse {
    let head = &bytes[..bytes.len().min(3 + TAG_LEN)];
    let lead = head.len().min(3);
    if head[..lead] != LEAD[..lead] {
        return Parse::No;
    }
    let tag = &head[lead..];
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.tag().starts_with(tag)) else {
        return Parse::No;
    };
    if bytes.len() < MARKER_LEN {
        return Parse::Partial;
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[3 + TAG_LEN..MARKER_LEN]);
    Parse::Marker(kind, nonce)
}

/// Why the host's sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading or writing the stream failed.
    #[error("serial sync: {0}")]
    Io(#[from] io::Error),
    /// The guest closed the stream before answering.
    #[error("serial sync: the guest closed the stream before answering")]
    Closed,
    /// The guest sent this many bytes without the answer.
    #[error("serial sync: no answer in the guest's first {0} bytes")]
    TooMuch(usize),
    /// The guest sent an HTTP/2 server's SETTINGS frame instead of an answer: an agent
    /// from before the sync, which serves HTTP/2 at once on every session it opens.
    #[error("serial sync: the guest speaks HTTP/2 without the sync (an older agent)")]
    Legacy,
}

/// Spots the first frame an HTTP/2 server sends (SETTINGS: type 4, no flags, stream 0,
/// a length of whole 6-byte settings) in bytes fed in pieces. An agent that knows the sync
/// writes nothing before its ACK, and a stale session of one ends with a GOAWAY, not this.
#[derive(Debug, Default)]
pub struct LegacyDetector {
    tail: Vec<u8>,
}

impl LegacyDetector {
    const HEADER: usize = 9;
    /// More settings than any HTTP/2 server sends at once (there are 6 kinds, plus a few
    /// extensions).
    const MAX_SETTINGS: u32 = 16;

    /// Whether a SETTINGS frame header ends in `data` (it may begin in earlier pieces).
    pub fn feed(&mut self, data: &[u8]) -> bool {
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(data);
        let found = joined.windows(Self::HEADER).any(|h| {
            let length = u32::from_be_bytes([0, h[0], h[1], h[2]]);
            h[3..] == [4, 0, 0, 0, 0, 0]
                && length.is_multiple_of(6)
                && length <= 6 * Self::MAX_SETTINGS
        });
        let keep = joined.len().min(Self::HEADER - 1);
        self.tail = joined[joined.len() - keep..].to_vec();
        found
    }
}

/// The host's side: sends SYN(`nonce`) every [`SYN_INTERVAL`] until the guest's
/// ACK(`nonce`), then START(`nonce`). Scans at most `max_scan` guest bytes; the caller
/// bounds it in time. Returns the stream, positioned at the start of the guest's HTTP/2.
/// [`SyncError::Legacy`] when the guest's agent predates the sync: then the caller
/// connects again without it.
pub async fn host_open<S>(
    mut io: S,
    nonce: &Nonce,
    max_scan: usize,
) -> Result<Prefixed<S>, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let syn = encode(Kind::Syn, nonce);
    let mut scanner = Scanner::new();
    let mut old_agent = LegacyDetector::default();
    let mut scanned = 0usize;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        io.write_all(&syn).await?;
        io.flush().await?;
        let next_syn = tokio::time::Instant::now() + SYN_INTERVAL;
        while let Ok(read) = tokio::time::timeout_at(next_syn, io.read(&mut buf)).await {
            let n = read?;
            if n == 0 {
                return Err(SyncError::Closed);
            }
            let mut data = &buf[..n.min(max_scan - scanned)];
            scanned += data.len();
            let seen_old_agent = old_agent.feed(data);
            while let Some(found) = scanner.feed(data) {
                data = &data[found.end..];
                if found.kind == Kind::Ack && found.nonce == *nonce {
                    let rest = data.to_vec();
                    io.write_all(&encode(Kind::Start, nonce)).await?;
                    io.flush().await?;
                    return Ok(Prefixed::new(rest, io));
                }
            }
            if seen_old_agent {
                return Err(SyncError::Legacy);
            }
            if scanned >= max_scan {
                return Err(SyncError::TooMuch(scanned));
            }
        }
    }
}

/// The guest's side: discards everything up to a SYN, answers its ACK, then discards up to
/// the START of the same nonce. A SYN of another nonce (a newer host connection) is
/// answered in turn; repeats of the answered one are not (the host reads HTTP/2 right after
/// the one ACK). Returns the stream, positioned at the start of the host's HTTP/2. An
/// `UnexpectedEof` error means the host side is not connected.
pub async fn guest_accept<S>(mut io: S) -> io::Result<Prefixed<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut scanner = Scanner::new();
    let mut answered: Option<Nonce> = None;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut data = &buf[..n];
        while let Some(found) = scanner.feed(data) {
            data = &data[found.end..];
            match found.kind {
                Kind::Syn if answered != Some(found.nonce) => {
                    io.write_all(&encode(Kind::Ack, &found.nonce)).await?;
                    io.flush().await?;
                    answered = Some(found.nonce);
                }
                Kind::Start if answered == Some(found.nonce) => {
                    return Ok(Prefixed::new(data.to_vec(), io));
                }
                _ => {}
            }
        }
    }
}

/// A stream whose reads return `prefix` first (bytes read past a marker), then the stream's.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `prefix` to be read before it.
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The bytes still to be read before the stream's own.
    pub fn pending(&self) -> &[u8] {
        &self.prefix[self.pos..]
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let pos = self.pos;
            buf.put_slice(&self.prefix[pos..pos + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "serial_sync_tests.rs"]
mod tests;
