//! Between async HTTP bodies and the synchronous `Read`/`Write` the tar crate works on.
//!
//! The tar side runs on a blocking thread (`spawn_blocking`); the two meet in a bounded
//! channel of chunks, so at most [`QUEUE`] chunks are in flight whatever the archive's
//! size: a slow disk stops the upload (HTTP/2 flow control pushes back on the host), a slow
//! host stops the walk.

use std::io::{self, Read, Write};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

/// Chunks buffered between the body and the blocking side.
pub const QUEUE: usize = 16;
/// Bytes a [`BodyWriter`] collects before it hands a chunk to the response body.
const CHUNK: usize = 64 << 10;

/// The blocking side of an incoming body: `read` waits for the next chunk; the end of the
/// body is EOF; a broken body is an error (so a cut upload is never taken for a complete
/// one).
pub struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl BodyReader {
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> BodyReader {
        BodyReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Copies `body` into `tx` until the body ends. When the reader is gone (it finished or
/// failed), the rest of the body is read and dropped, so this returns only once the host
/// has sent everything. A broken body is passed on to the reader and returned.
pub async fn feed(mut body: Incoming, tx: mpsc::Sender<io::Result<Bytes>>) -> Result<(), String> {
    let mut tx = Some(tx);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let (Ok(data), Some(sender)) = (frame.into_data(), &tx)
                    && sender.send(Ok(data)).await.is_err()
                {
                    tx = None;
                }
            }
            Err(e) => {
                let message = format!("the request body broke: {e}");
                if let Some(sender) = &tx {
                    let _ = sender.send(Err(io::Error::other(message.clone()))).await;
                }
                return Err(message);
            }
        }
    }
    Ok(())
}

/// The blocking side of a response body: bytes are collected into chunks and sent; a send
/// to a body the host dropped fails with `BrokenPipe`, which stops the writer.
pub struct BodyWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl BodyWriter {
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> BodyWriter {
        BodyWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    /// Ends the body with an error (the host sees the stream reset).
    pub fn fail(self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the host went away"))
    }
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}
