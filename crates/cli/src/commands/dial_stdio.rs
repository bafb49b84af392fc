//! `banger daemon dial-stdio [--no-start]`: one connection to this machine's daemon on
//! stdin/stdout, for `banger --host ssh://…` on another machine (which runs this through
//! ssh). Bytes pass through untouched; the client's EOF (a half-close: the end of a file
//! sent, or the client going) reaches the daemon as the socket's write side closing, and
//! the bridge ends when the daemon closes its side.

use std::io::IsTerminal;

use anyhow::bail;
use tokio::net::UnixStream;

use crate::Context;
use banger_client::ssh::EXIT_NOT_RUNNING;

pub async fn run(ctx: &Context, no_start: bool) -> anyhow::Result<u8> {
    if std::io::stdin().is_terminal() {
        bail!(
            "dial-stdio carries the daemon's protocol for `banger --host ssh://…` on another \
             machine; it is not for a terminal"
        );
    }
    if ctx.remote.is_some() {
        bail!("dial-stdio bridges to this machine's daemon: drop --host (and BANGER_HOST)");
    }
    let socket = ctx.layout.socket_path();
    if no_start {
        if let Err(e) = banger_client::autostart::ping(&ctx.plain_client()).await {
            if e.is_not_running() {
                eprintln!("bangerd is not running (socket {})", socket.display());
                return Ok(EXIT_NOT_RUNNING as u8);
            }
            return Err(e.into());
        }
    } else {
        // Starts the daemon when none runs, and checks the socket's owner.
        ctx.client().await?;
    }
    let stream = UnixStream::connect(&socket).await?;
    // The same pipe as `vm proxy`'s: stdin's EOF half-closes, the daemon's close ends it.
    let result =
        crate::commands::vm::proxy::pipe(stream, tokio::io::stdin(), tokio::io::stdout()).await;
    // Tokio reads stdin on a blocking thread that the runtime would wait for at exit, and
    // the client may never close its side: once the daemon's side ended, leave at once.
    std::process::exit(match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("banger daemon dial-stdio: {e:#}");
            1
        }
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_pass_both_ways_and_eof_half_closes() {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let (mut input_w, input_r) = tokio::io::duplex(1024);
        let (output_w, mut output_r) = tokio::io::duplex(1 << 20);
        let daemon = tokio::spawn(async move {
            let mut theirs = theirs;
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.expect("read");
            // The client's EOF arrived; the answer still goes back.
            theirs.write_all(b"answer:").await.expect("write");
            theirs.write_all(&got).await.expect("write");
        });
        let bridge = tokio::spawn(crate::commands::vm::proxy::pipe(ours, input_r, output_w));
        input_w.write_all(b"request").await.expect("write");
        drop(input_w);
        let mut out = Vec::new();
        output_r.read_to_end(&mut out).await.expect("read");
        assert_eq!(out, b"answer:request");
        daemon.await.expect("daemon");
        bridge.await.expect("join").expect("bridge");
    }
}
