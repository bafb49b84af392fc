//! `banger vm proxy NAME[.vm] PORT`: stdin and stdout piped to a TCP port inside the guest,
//! over the agent (no guest network route needed). Made for OpenSSH's
//! `ProxyCommand banger vm proxy %h %p` (see `banger ssh-config`). The end of stdin
//! half-closes the guest socket; the guest closing it ends the command.

use anyhow::Context as _;
use clap::Args;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::commands::vm::exec::ThreadStdin;
use banger_client::Client;

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// VM name or id; a trailing `.vm` (as OpenSSH passes `%h`) is dropped.
    pub vm: String,
    /// TCP port on 127.0.0.1 inside the guest.
    pub port: u16,
}

/// `dev.vm` → `dev`.
pub fn vm_name(host: &str) -> &str {
    host.strip_suffix(".vm").unwrap_or(host)
}

pub async fn run(client: &Client, args: ProxyArgs) -> anyhow::Result<u8> {
    let conn = banger_client::open_proxy(client, vm_name(&args.vm), args.port).await?;
    let stdin = ThreadStdin::spawn().context("reading stdin")?;
    pipe(conn, stdin, tokio::io::stdout()).await?;
    Ok(0)
}

/// Copies `input` to `conn` (half-closing it at EOF) and `conn` to `output` until the
/// guest side ends.
pub async fn pipe<S, I, O>(conn: S, mut input: I, mut output: O) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite,
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    let upstream = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                wr.shutdown().await?;
                return std::io::Result::Ok(());
            }
            wr.write_all(&buf[..n]).await?;
            wr.flush().await?;
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                output.flush().await?;
                return std::io::Result::Ok(());
            }
            output.write_all(&buf[..n]).await?;
            output.flush().await?;
        }
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        // The guest closed: we are done, whatever stdin still holds.
        done = &mut downstream => done.context("reading from the guest")?,
        up = &mut upstream => {
            // A failed send (the guest went away) still lets the guest's last words out.
            let up = up.context("sending to the guest");
            downstream.await.context("reading from the guest")?;
            up?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_suffix_is_dropped() {
        assert_eq!(vm_name("dev.vm"), "dev");
        assert_eq!(vm_name("dev"), "dev");
        assert_eq!(vm_name("a.b"), "a.b");
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_stdin_eof_half_closes() {
        let (ours, mut guest) = tokio::io::duplex(1024);
        let input: &[u8] = b"SSH-2.0-client\r\n";
        let mut output = Vec::new();
        let guest_side = async move {
            // Read until our half-close, then answer and close.
            let mut got = Vec::new();
            guest.read_to_end(&mut got).await.expect("read");
            assert_eq!(got, b"SSH-2.0-client\r\n");
            guest.write_all(b"SSH-2.0-guest\r\n").await.expect("write");
            guest.shutdown().await.expect("close");
        };
        let (piped, ()) = tokio::join!(pipe(ours, input, &mut output), guest_side);
        piped.expect("piped");
        assert_eq!(output, b"SSH-2.0-guest\r\n");
    }

    #[tokio::test]
    async fn the_guest_closing_ends_it_while_stdin_stays_open() {
        let (ours, mut guest) = tokio::io::duplex(1024);
        let (_keep_open, stdin) = tokio::io::duplex(16);
        let mut output = Vec::new();
        let guest_side = async move {
            guest.write_all(b"bye").await.expect("write");
            drop(guest);
        };
        let (piped, ()) = tokio::join!(pipe(ours, stdin, &mut output), guest_side);
        piped.expect("piped");
        assert_eq!(output, b"bye");
    }
}
