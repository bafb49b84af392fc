//! CONNECT: a TCP connection to `127.0.0.1:<port>` in the guest, piped over one HTTP/2
//! stream.
//!
//! - The connection is made before the answer: refused (or not made within
//!   [`CONNECT_TIMEOUT`]) is a 502 with the reason, and no stream.
//! - Request body → socket; the end of the request body is `shutdown(SHUT_WR)` on the
//!   socket (the guest service sees EOF and can still answer).
//! - Socket → response body; the socket's EOF ends the response body.
//! - The two directions are independent: either may end first. A socket write that fails
//!   (the service closed) makes the rest of the request body read and dropped (the host
//!   keeps relaying until its client stops; the response ends with the socket); a host that
//!   drops the response stops the reading side. The socket closes when both are done.
//! - Memory is bounded: one read buffer and [`QUEUE`] chunks per direction.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::body::AgentBody;
use crate::console::log;

/// How long a connection to a guest port may take (loopback: refused or made at once,
/// unless the listener's backlog is full).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks read from the socket before the reader waits for the host.
const QUEUE: usize = 8;
/// The socket read size.
const READ_CHUNK: usize = 64 << 10;

/// Connects, then returns the response body while the piping runs on. Err: why the
/// connection could not be made (for a 502).
pub async fn open(port: u16, body: Incoming) -> Result<AgentBody, String> {
    let addr = ("127.0.0.1", port);
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connecting to 127.0.0.1:{port}: {e}")),
        Err(_) => {
            return Err(format!(
                "connecting to 127.0.0.1:{port}: no answer within {CONNECT_TIMEOUT:?}"
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(upstream(port, body, write));
    tokio::spawn(downstream(port, read, tx));
    Ok(AgentBody::Raw(rx))
}

/// Request body → socket, then half-close.
async fn upstream(port: u16, mut body: Incoming, mut socket: OwnedWriteHalf) {
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
            // The host reset the stream: nobody is left to hear the rest.
            Err(_) => return,
        };
        if let Err(e) = socket.write_all(&data).await {
            log!("connect 127.0.0.1:{port}: writing to the socket: {e}");
            while let Some(Ok(_)) = body.frame().await {}
            return;
        }
    }
    // Dropping an OwnedWriteHalf shuts the write side down too; this says so explicitly.
    let _ = socket.shutdown().await;
}

/// Socket → response body, until the socket's EOF (or the host dropping the body).
async fn downstream(
    port: u16,
    mut socket: OwnedReadHalf,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = tokio::select! {
            r = socket.read(&mut buf) => match r {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    log!("connect 127.0.0.1:{port}: reading the socket: {e}");
                    // A reset connection: the host sees its stream reset too.
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            },
            () = tx.closed() => return,
        };
        if tx
            .send(Ok(Bytes::copy_from_slice(&buf[..n])))
            .await
            .is_err()
        {
            return;
        }
    }
}
