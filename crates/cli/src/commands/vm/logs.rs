//! `banger vm logs NAME [-f] [-n N] [--raw]`, `banger vm logs --net NAME`
//!
//! The console is the guest's: on a terminal its control characters are shown as text
//! (`\x1b]52;…`), never obeyed. `--raw`, or stdout that is not a terminal, passes them
//! as they are.

use std::io::{IsTerminal, Write};

use banger_api::event::OpEvent;
use banger_api::methods;
use banger_api::text::visible;
use banger_api::vm::{NetDenial, VmLogs, VmLogsParams, VmRef};
use clap::Args;
use tokio::sync::mpsc;

use crate::Context;
use banger_client::Client;

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
    /// Print the guest's bytes as they are, escape sequences included. Without it, on a
    /// terminal, control characters are shown escaped (`\x1b]52;…`) so that the guest
    /// cannot drive your terminal (set the clipboard, retitle, hide lines) and carriage
    /// returns are dropped; when stdout is not a terminal (a pipe, a file) the bytes pass
    /// as they are anyway. Invalid UTF-8 is shown as U+FFFD either way.
    #[arg(long)]
    pub raw: bool,
    /// Instead of the console: what the VM's network policy denied in the last hour
    /// (time, destination, protocol/port), most recent first. With --json, the list.
    #[arg(long, conflicts_with_all = ["follow", "tail", "raw"])]
    pub net: bool,
}

pub fn params(args: &LogsArgs) -> VmLogsParams {
    VmLogsParams {
        vm: args.vm.clone(),
        follow: args.follow,
        tail_lines: args.tail,
    }
}

/// How guest text is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Render {
    /// As it is.
    Raw,
    /// Controls made visible (`\r` dropped: the console ends lines with `\r\n`).
    Escaped,
    /// One JSON line per piece.
    Json,
}

impl Render {
    fn of(args: &LogsArgs, json: bool) -> Render {
        if json {
            Render::Json
        } else if args.raw || !std::io::stdout().is_terminal() {
            Render::Raw
        } else {
            Render::Escaped
        }
    }
}

pub async fn run(ctx: &Context, client: &Client, args: LogsArgs) -> anyhow::Result<u8> {
    if args.net {
        return net(ctx, client, &args.vm).await;
    }
    let params = params(&args);
    let render = Render::of(&args, ctx.json);
    // Always streamed (the daemon sends the console in pieces, whatever its size). The
    // callback cannot fail, so pieces go through a channel to a loop that can: a closed
    // stdout (`| head`) ends the command quietly, like Ctrl-C.
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let call = client.call_streaming::<methods::vm::Logs>(&params, move |event| {
        if let OpEvent::Log { text } = event {
            let _ = tx.send(text.clone());
        }
    });
    tokio::pin!(call);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            result = &mut call => {
                while let Ok(text) = rx.try_recv() {
                    if let Err(e) = emit(&text, render) {
                        return closed_stdout(e);
                    }
                }
                // A daemon that does not stream the non-follow case answers in the result.
                let logs: VmLogs = result?;
                if !logs.text.is_empty()
                    && let Err(e) = emit(&logs.text, render)
                {
                    return closed_stdout(e);
                }
                return Ok(0);
            }
            Some(text) = rx.recv() => {
                if let Err(e) = emit(&text, render) {
                    return closed_stdout(e);
                }
            }
            _ = &mut ctrl_c => return Ok(0),
        }
    }
}

/// `vm logs --net`: the denials `vm.show` reads from the VM's namespace.
async fn net(ctx: &Context, client: &Client, vm: &str) -> anyhow::Result<u8> {
    let shown = client
        .call::<methods::vm::Show>(&VmRef { vm: vm.to_string() })
        .await?;
    let Some(policy) = shown.net_policy else {
        anyhow::bail!(
            "{} has no network (--net none): nothing to deny",
            visible(vm)
        );
    };
    if let Some(e) = &policy.denials_error {
        anyhow::bail!("cannot read {}'s denials: {}", visible(vm), visible(e));
    }
    let text = if ctx.json {
        let mut line = serde_json::to_string(&policy.denials)?;
        line.push('\n');
        line
    } else {
        denials_text(&policy.denials, shown.pid.is_some())
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) => closed_stdout(e),
    }
}

/// One line per denial: `AGO  DESTINATION  PROTO/PORT`.
fn denials_text(denials: &[NetDenial], running: bool) -> String {
    if denials.is_empty() {
        return if running {
            "nothing denied in the last hour\n".into()
        } else {
            "the VM is not running: its denials went with its network\n".into()
        };
    }
    let mut s = format!("{:<10} {:<40} {}\n", "AGO", "DESTINATION", "PORT");
    for d in denials {
        let ago = d
            .seconds_ago
            .map_or_else(|| "?".into(), |a| format!("{a}s"));
        let port = match (&d.proto, d.port) {
            (Some(p), Some(n)) => format!("{}/{n}", visible(p)),
            _ => "(other protocol)".into(),
        };
        s.push_str(&format!(
            "{ago:<10} {:<40} {port}\n",
            visible(&d.destination)
        ));
    }
    s
}

/// `text` as it is printed.
fn rendered(text: &str, render: Render) -> std::io::Result<String> {
    Ok(match render {
        Render::Raw => text.to_string(),
        Render::Escaped => banger_api::text::visible(&text.replace('\r', "")).into_owned(),
        Render::Json => {
            let mut line = serde_json::to_string(&VmLogs {
                text: text.to_string(),
            })?;
            line.push('\n');
            line
        }
    })
}

fn emit(text: &str, render: Render) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(rendered(text, render)?.as_bytes())?;
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
    fn guest_controls_are_escaped_unless_raw() {
        let guest = "boot ok\r\n\x1b]52;c;Y3VybCBldmlsfHNo\x07\tend\r\n";
        let shown = rendered(guest, Render::Escaped).expect("render");
        assert_eq!(shown, "boot ok\n\\x1b]52;c;Y3VybCBldmlsfHNo\\x07\tend\n");
        assert!(!shown.contains('\x1b'));
        assert_eq!(rendered(guest, Render::Raw).expect("render"), guest);
        let json = rendered(guest, Render::Json).expect("render");
        let back: VmLogs = serde_json::from_str(&json).expect("one JSON line");
        assert_eq!(back.text, guest);
        assert!(json.ends_with('\n') && !json.contains('\x1b'));
        let raw = parse(&["dev", "--raw"]).expect("parses");
        assert!(raw.raw);
        assert_eq!(Render::of(&raw, false), Render::Raw);
        assert_eq!(Render::of(&raw, true), Render::Json);
    }

    #[test]
    fn net_denials_are_listed_escaped() {
        let a = parse(&["--net", "dev"]).expect("parses");
        assert!(a.net);
        assert!(parse(&["--net", "-f", "dev"]).is_err());
        let d = |dest: &str, proto: Option<&str>, port, ago| NetDenial {
            destination: dest.into(),
            proto: proto.map(String::from),
            port,
            seconds_ago: ago,
        };
        let text = denials_text(
            &[
                d("10.200.0.1", Some("tcp"), Some(8080), Some(3)),
                d("169.254.99.1", None, None, None),
                d("\x1b[2J", Some("tcp\x07"), Some(1), Some(9)),
            ],
            true,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("AGO"), "{text}");
        assert!(
            lines[1].starts_with("3s")
                && lines[1].contains("10.200.0.1")
                && lines[1].ends_with("tcp/8080"),
            "{text}"
        );
        assert!(
            lines[2].contains("169.254.99.1") && lines[2].ends_with("(other protocol)"),
            "{text}"
        );
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text}");
        assert!(denials_text(&[], true).contains("nothing denied"));
        assert!(denials_text(&[], false).contains("not running"));
    }

    #[test]
    fn a_closed_pipe_is_not_an_error() {
        let broken = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(closed_stdout(broken).expect("quiet"), 0);
        let other = std::io::Error::other("disk full");
        assert!(closed_stdout(other).is_err());
    }
}
