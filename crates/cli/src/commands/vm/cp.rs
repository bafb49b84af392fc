//! `banger vm cp SRC DST`: the arguments and the summary line; where things land and the
//! transfer itself are [`banger_client::transfer`]'s (its module docs give the rules).

use anyhow::Context as _;
use banger_client::Client;
use banger_client::transfer::{self, Location, Transfer, parse_transfer};
use clap::Args;

use crate::commands::vm::exec::ThreadStdin;

#[derive(Debug, Args)]
pub struct CpArgs {
    /// What to copy: a local path, or NAME:PATH in a VM (`-`: a tar stream on stdin).
    pub src: String,
    /// Where to: NAME:PATH in a VM, or a local path (`-`: a tar stream on stdout).
    pub dst: String,
    /// No transfer summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn run(client: &Client, args: CpArgs) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let (what, copied) = match parse_transfer(&args.src, &args.dst)? {
        Transfer::Upload { local, vm, path } => match local {
            Location::Stdio => {
                let stdin = ThreadStdin::spawn().context("reading stdin")?;
                let copied = transfer::copy_in_stream(client, &vm, &path, stdin).await?;
                ("uploaded", copied)
            }
            Location::Local(src) => (
                "uploaded",
                transfer::copy_in(client, &vm, &path, &src).await?,
            ),
            Location::Guest { .. } => unreachable!("parse_transfer"),
        },
        Transfer::Download { vm, path, local } => match local {
            Location::Stdio => {
                let (mut conn, _) = transfer::open_download(client, &vm, &path).await?;
                let bytes = tokio::io::copy(&mut conn, &mut tokio::io::stdout()).await?;
                ("downloaded", transfer::Copied { entries: 0, bytes })
            }
            Location::Local(dst) => (
                "downloaded",
                transfer::copy_out(client, &vm, &path, &dst).await?,
            ),
            Location::Guest { .. } => unreachable!("parse_transfer"),
        },
    };
    if !args.quiet {
        eprintln!(
            "{}",
            rate_line(what, copied.entries, copied.bytes, started.elapsed())
        );
    }
    Ok(0)
}

/// `copied 120 entries, 3.5 MiB in 0.4s (8.7 MiB/s)`.
pub fn rate_line(what: &str, entries: u64, bytes: u64, elapsed: std::time::Duration) -> String {
    let mib = bytes as f64 / (1u64 << 20) as f64;
    let secs = elapsed.as_secs_f64().max(1e-3);
    let count = if entries > 0 {
        format!("{entries} entr{}, ", if entries == 1 { "y" } else { "ies" })
    } else {
        String::new()
    };
    format!(
        "{what} {count}{mib:.1} MiB in {secs:.1}s ({:.1} MiB/s)",
        mib / secs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_line_is_readable() {
        let l = rate_line(
            "copied",
            12,
            3 << 20,
            std::time::Duration::from_millis(1500),
        );
        assert_eq!(l, "copied 12 entries, 3.0 MiB in 1.5s (2.0 MiB/s)");
    }
}
