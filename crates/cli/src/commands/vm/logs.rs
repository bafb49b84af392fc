//! `banger vm logs NAME [-f] [-n N]`

use std::io::Write;

use banger_api::methods;
use banger_api::pull::PullEvent;
use banger_api::vm::{VmLogs, VmLogsParams};
use clap::Args;
use tokio::sync::mpsc;

use crate::Context;
use crate::client::Client;
use crate::output;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// VM name or id.
    pub vm: String,
    /// Keep printing new console output as it comes, until the VM stops or Ctrl-C.
    /// With --json, each chunk is one JSON line {"text": …}.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines of what is there now (with --follow: then the new output).
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<usize>,
}

pub fn params(args: &LogsArgs) -> VmLogsParams {
    VmLogsParams {
        vm: args.vm.clone(),
        follow: args.follow,
        tail_lines: args.tail,
    }
}

pub async fn run(ctx: &Context, client: &Client, args: LogsArgs) -> anyhow::Result<u8> {
    let params = params(&args);
    if !args.follow {
        let logs: VmLogs = client.call::<methods::vm::Logs>(&params).await?;
        if ctx.json {
            output::print_json(&logs)?;
        } else {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out
                .write_all(logs.text.as_bytes())
                .and_then(|()| out.flush())
            {
                return closed_stdout(e);
            }
        }
        return Ok(0);
    }
    // The streaming callback cannot fail, so chunks go through a channel to a loop that
    // can: a closed stdout (`| head`) ends the command quietly, like Ctrl-C.
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let call = client.call_streaming::<methods::vm::Logs>(&params, move |event| {
        if let PullEvent::Log { text } = event {
            let _ = tx.send(text.clone());
        }
    });
    tokio::pin!(call);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let json = ctx.json;
    loop {
        tokio::select! {
            result = &mut call => {
                while let Ok(text) = rx.try_recv() {
                    if let Err(e) = emit(&text, json) {
                        return closed_stdout(e);
                    }
                }
                result?;
                return Ok(0);
            }
            Some(text) = rx.recv() => {
                if let Err(e) = emit(&text, json) {
                    return closed_stdout(e);
                }
            }
            _ = &mut ctrl_c => return Ok(0),
        }
    }
}

fn emit(text: &str, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let line = serde_json::to_string(&VmLogs {
            text: text.to_string(),
        })?;
        writeln!(out, "{line}")?;
    } else {
        out.write_all(text.as_bytes())?;
    }
    out.flush()
}

/// A reader that went away (`banger vm logs dev | head`) is not an error.
fn closed_stdout(e: std::io::Error) -> anyhow::Result<u8> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(0)
    } else {
        Err(anyhow::Error::new(e).context("writing the logs to stdout"))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};
    use crate::commands::vm::VmCommand;

    fn parse(args: &[&str]) -> Result<LogsArgs, clap::Error> {
        let argv = ["banger", "vm", "logs"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Vm(VmCommand::Logs(a)) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn follow_and_tail() {
        let p = params(&parse(&["dev"]).expect("parses"));
        assert_eq!(
            (p.vm.as_str(), p.follow, p.tail_lines),
            ("dev", false, None)
        );
        let p = params(&parse(&["dev", "-f", "-n", "50"]).expect("parses"));
        assert_eq!((p.follow, p.tail_lines), (true, Some(50)));
        let p = params(&parse(&["--follow", "--tail", "5", "dev"]).expect("parses"));
        assert_eq!((p.follow, p.tail_lines), (true, Some(5)));
        assert!(parse(&["dev", "-n", "-3"]).is_err());
        assert!(parse(&["dev", "-n", "many"]).is_err());
    }

    #[test]
    fn a_closed_pipe_is_not_an_error() {
        let broken = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(closed_stdout(broken).expect("quiet"), 0);
        let other = std::io::Error::other("disk full");
        assert!(closed_stdout(other).is_err());
    }
}
