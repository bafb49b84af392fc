//! `banger vm exec NAME [-i] [-t] [-e K=V]… [-w DIR] [-u USER] -- CMD…`: the terminal's
//! side of an exec session ([`banger_client::exec`] speaks the stream): raw mode, window
//! size, signals passed on, stdin read on a thread. The command's exit status becomes ours.

use std::io::IsTerminal;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use anyhow::Context as _;
use banger_api::vm::VmExecParams;
use banger_client::Client;
use banger_client::exec::{Control, ExecEnd, STDIN_CHUNK, exit_byte, start_failure_line};
use clap::Args;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::terminal::{self, RawMode};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// VM name or id (the VM must be running).
    pub vm: String,
    /// Pass banger's stdin on to the command. Without it the command's stdin is empty
    /// (it reads EOF at once), so a command that reads stdin does not wait for you.
    #[arg(long, short)]
    pub interactive: bool,
    /// Run the command on a new pty in the guest (its stdout and stderr then both arrive
    /// on stdout). When stdin is a terminal, it is put in raw mode for the duration, keys
    /// are passed on as typed (as with -i) and the pty follows your window's size.
    #[arg(long, short)]
    pub tty: bool,
    /// Set an environment variable for the command; repeat for more. The guest's defaults
    /// (PATH, HOME, USER, and TERM with -t) apply to the rest.
    #[arg(long = "env", short, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory in the guest [default: the user's home].
    #[arg(long, short, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Run as this user: a name from the guest's /etc/passwd, or uid[:gid] [default: root].
    // Doc comment = clap help text, shown verbatim: not rustdoc markup.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, short, value_name = "USER")]
    pub user: Option<String>,
    /// The program and its arguments (everything after the VM name or `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `-e KEY=VALUE` (the value may be empty and may itself hold `=`).
pub fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some(("", _)) => Err(format!(
            "invalid environment variable {text:?}: the name before '=' is empty"
        )),
        Some((key, value)) => Ok((key.to_string(), value.to_string())),
        None => Err(format!(
            "invalid environment variable {text:?}: expected KEY=VALUE, e.g. -e RUST_LOG=debug"
        )),
    }
}

/// The request body. `tty` is the pty size to ask for (only with `-t`); `term` is our
/// `$TERM`, passed on only with a pty.
pub fn params(args: &ExecArgs, tty: Option<(u16, u16)>, term: Option<String>) -> VmExecParams {
    let tty = if args.tty {
        tty.or(Some((24, 80)))
    } else {
        None
    };
    VmExecParams {
        vm: args.vm.clone(),
        argv: args.command.clone(),
        env: args.env.clone(),
        cwd: args.workdir.clone(),
        user: args.user.clone(),
        term: tty.and(term),
        tty,
    }
}
pub async fn run(client: &Client, args: ExecArgs) -> anyhow::Result<u8> {
    let stdin_is_tty = std::io::stdin().is_terminal();
    let size = if args.tty {
        terminal::window_size()
    } else {
        None
    };
    let params = params(&args, size, std::env::var("TERM").ok());
    let raw = args.tty && stdin_is_tty;
    let forward_stdin = args.interactive || raw;

    let (controls_tx, controls) = mpsc::unbounded_channel();
    let signals = forward_signals(controls_tx, args.tty).context("listening for signals")?;
    let raw_mode = if raw {
        Some(RawMode::enable().context("putting the terminal in raw mode")?)
    } else {
        None
    };
    let stdin = if forward_stdin {
        Some(ThreadStdin::spawn().context("reading stdin")?)
    } else {
        None
    };
    let end = banger_client::exec::session(
        client,
        &params,
        stdin,
        controls,
        &mut tokio::io::stdout(),
        &mut tokio::io::stderr(),
    )
    .await;
    drop(raw_mode);
    signals.abort();
    let end = end?;
    if let ExecEnd::FailedToStart(failure) = &end {
        eprintln!("{}", start_failure_line(failure));
    }
    Ok(exit_byte(end.shell_code()))
}
/// Passes SIGINT, SIGTERM, SIGHUP and SIGQUIT on to the command (so Ctrl-C ends the guest's
/// process and its status says so, and a raw terminal is never left behind by a killed
/// banger), and with `resize` the window size on SIGWINCH. Handlers are installed before
/// this returns.
fn forward_signals(
    tx: mpsc::UnboundedSender<Control>,
    resize: bool,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let mut forwarded = Vec::new();
    for (kind, number) in [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
        (SignalKind::quit(), libc::SIGQUIT),
    ] {
        forwarded.push((signal(kind)?, number));
    }
    let mut winch = if resize {
        Some(signal(SignalKind::window_change())?)
    } else {
        None
    };
    async fn recv_opt(s: &mut Option<Signal>) -> Option<()> {
        match s {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    }
    Ok(tokio::spawn(async move {
        loop {
            let any_signal = std::future::poll_fn(|cx| {
                for (sig, number) in forwarded.iter_mut() {
                    if let Poll::Ready(Some(())) = sig.poll_recv(cx) {
                        return Poll::Ready(*number);
                    }
                }
                Poll::Pending
            });
            let msg = tokio::select! {
                number = any_signal => Control::Signal(number),
                Some(()) = recv_opt(&mut winch) => match terminal::window_size() {
                    Some((rows, cols)) => Control::Resize { rows, cols },
                    None => continue,
                },
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    }))
}
/// Stdin read on a thread of its own, as an `AsyncRead`. (tokio's stdin reads on its
/// blocking pool, and a read there cannot be cancelled: the runtime would wait at exit until
/// the user pressed a key.) The thread stops at EOF or when this is dropped and it next
/// has something to hand over; the process exit ends it otherwise.
pub struct ThreadStdin {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ThreadStdin {
    pub fn spawn() -> std::io::Result<ThreadStdin> {
        use std::io::Read;
        let (tx, rx) = mpsc::channel(4);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buf = vec![0u8; STDIN_CHUNK];
                loop {
                    let item = match stdin.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => Ok(buf[..n].to_vec()),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => Err(e),
                    };
                    let failed = item.is_err();
                    if tx.blocking_send(item).is_err() || failed {
                        return;
                    }
                }
            })?;
        Ok(ThreadStdin {
            rx,
            chunk: Vec::new(),
            pos: 0,
        })
    }
}

impl AsyncRead for ThreadStdin {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos >= self.chunk.len() {
            match ready!(self.rx.poll_recv(cx)) {
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(self.chunk.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.chunk[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}
#[cfg(test)]
mod tests {
    use clap::Parser;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::args::{Cli, Command};
    use crate::commands::vm::VmCommand;

    fn parse(args: &[&str]) -> Result<ExecArgs, clap::Error> {
        let argv = ["banger", "vm", "exec"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Vm(VmCommand::Exec(a)) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_keeps_its_own_flags() {
        let a = parse(&["dev", "--", "sh", "-c", "exit 7"]).expect("parses");
        assert_eq!(a.vm, "dev");
        assert_eq!(a.command, ["sh", "-c", "exit 7"]);
        assert!(!a.interactive && !a.tty);
        // Without `--` too: everything from the program on is the command's.
        let a = parse(&["dev", "ls", "-la", "--color", "-t"]).expect("parses");
        assert_eq!(a.command, ["ls", "-la", "--color", "-t"]);
        assert!(!a.tty, "-t after the program is the program's");
        let a = parse(&["dev", "--", "--version"]).expect("parses");
        assert_eq!(a.command, ["--version"]);
    }

    #[test]
    fn banger_flags_before_the_command() {
        let a = parse(&[
            "-it", "-e", "A=1", "--env", "B=x=y", "-e", "EMPTY=", "-w", "/srv", "-u", "1000:100",
            "dev", "--", "env",
        ])
        .expect("parses");
        assert!(a.interactive && a.tty);
        assert_eq!(
            a.env,
            [
                ("A".to_string(), "1".to_string()),
                ("B".into(), "x=y".into()),
                ("EMPTY".into(), String::new())
            ]
        );
        assert_eq!(a.workdir.as_deref(), Some("/srv"));
        assert_eq!(a.user.as_deref(), Some("1000:100"));
        assert_eq!(a.command, ["env"]);
    }

    #[test]
    fn banger_flags_between_the_name_and_the_command() {
        let a = parse(&["dev", "-i", "-t", "-e", "A=1", "--", "cat", "-n"]).expect("parses");
        assert!(a.interactive && a.tty);
        assert_eq!(a.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(a.command, ["cat", "-n"]);
    }

    #[test]
    fn bad_env_and_missing_command_are_refused() {
        let e = parse(&["-e", "NOVALUE", "dev", "--", "env"]).expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("expected KEY=VALUE"), "{text}");
        assert!(text.contains("NOVALUE"), "{text}");
        let e = parse(&["-e", "=1", "dev", "--", "env"]).expect_err("refused");
        assert!(e.to_string().contains("name before '=' is empty"), "{e}");
        assert!(parse(&["dev"]).is_err(), "a command is required");
        assert!(parse(&["dev", "--"]).is_err(), "a command is required");
        assert!(
            parse(&["--tyy", "dev", "--", "true"]).is_err(),
            "typos are caught"
        );
    }

    #[test]
    fn params_carry_the_pty_only_with_tty() {
        let a = parse(&["-e", "K=V", "-w", "/w", "-u", "me", "dev", "--", "id"]).expect("parses");
        let p = params(&a, Some((50, 200)), Some("xterm-256color".into()));
        assert_eq!(p.vm, "dev");
        assert_eq!(p.argv, ["id"]);
        assert_eq!(p.env, [("K".to_string(), "V".to_string())]);
        assert_eq!(
            (p.cwd.as_deref(), p.user.as_deref()),
            (Some("/w"), Some("me"))
        );
        assert_eq!((p.tty, p.term), (None, None));

        let a = parse(&["-t", "dev", "--", "top"]).expect("parses");
        let p = params(&a, Some((50, 200)), Some("xterm-256color".into()));
        assert_eq!(p.tty, Some((50, 200)));
        assert_eq!(p.term.as_deref(), Some("xterm-256color"));
        let p = params(&a, None, None);
        assert_eq!(p.tty, Some((24, 80)), "no terminal: a conventional size");
    }

    #[tokio::test]
    async fn thread_stdin_reads_in_order_then_eof() {
        let (tx, rx) = mpsc::channel(4);
        let mut stdin = ThreadStdin {
            rx,
            chunk: Vec::new(),
            pos: 0,
        };
        tx.send(Ok(b"hello ".to_vec())).await.expect("send");
        tx.send(Ok(b"world".to_vec())).await.expect("send");
        drop(tx);
        let mut small = [0u8; 4];
        let n = stdin.read(&mut small).await.expect("read");
        assert_eq!(&small[..n], b"hell");
        let mut rest = Vec::new();
        stdin.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"o world");
    }
}
