//! The `banger` CLI as a library; the binary is a one-line `main` over [`main`].

pub mod args;
pub mod commands;
pub mod config;
pub mod output;
pub mod progress;
pub mod size;
pub mod terminal;

use std::process::ExitCode;

use banger_api::layout::Layout;
use banger_api::text::visible;
use clap::Parser;

use crate::args::{Cli, Command};
use crate::output::{Style, Tone};
use banger_client::{Client, ClientError, SshTarget};

/// What every command needs.
pub struct Context {
    pub layout: Layout,
    pub json: bool,
    pub style: Style,
    /// `--host`: the daemon is on that host, reached through ssh.
    pub remote: Option<SshTarget>,
}

impl Context {
    /// A client for a running daemon, starting one if needed (here, or on `--host`).
    pub async fn client(&self) -> anyhow::Result<Client> {
        let client = match &self.remote {
            Some(target) => banger_client::autostart::ensure_remote(target).await?,
            None => {
                // The daemon reads config.toml's `[daemon]` itself; a bad file is reported
                // here first.
                let preflight = || config::Config::load().map(drop);
                banger_client::autostart::ensure_daemon(&self.layout, preflight).await?
            }
        };
        if let Some(notice) = client.notice() {
            let style = Style::detect();
            eprintln!(
                "banger: {} {}",
                style.paint(Tone::Warn, "warning:"),
                visible(notice)
            );
        }
        Ok(client)
    }

    /// A client that never starts the daemon (status, stop, version).
    pub fn plain_client(&self) -> Client {
        match &self.remote {
            Some(target) => Client::ssh(target.clone(), false),
            None => Client::new(&self.layout.socket_path()),
        }
    }
}

/// `--host` (or $BANGER_HOST), else the config file's `host`.
fn remote_target(cli: &Cli) -> anyhow::Result<Option<SshTarget>> {
    let text = match &cli.host {
        Some(h) if h.is_empty() => return Ok(None),
        Some(h) => h.clone(),
        None => match config::Config::load() {
            Ok(c) => match c.host {
                Some(h) => h.value,
                None => return Ok(None),
            },
            // A bad file is reported by the command that reads it.
            Err(_) => return Ok(None),
        },
    };
    Ok(Some(SshTarget::parse(&text)?))
}

/// The XDG layout, with the directories given on the command line (made absolute: the
/// daemon may run elsewhere) taking precedence.
fn cli_layout(cli: &Cli) -> anyhow::Result<Layout> {
    let absolute =
        |p: &Option<std::path::PathBuf>| p.as_deref().map(std::path::absolute).transpose();
    Ok(Layout::from_env().with_overrides(
        absolute(&cli.state_dir)?.as_deref(),
        absolute(&cli.cache_dir)?.as_deref(),
        absolute(&cli.runtime_dir)?.as_deref(),
    ))
}

pub fn main() -> ExitCode {
    output::end_quietly_on_broken_pipe();
    let cli = Cli::parse();
    let layout = match cli_layout(&cli) {
        Ok(layout) => layout,
        Err(e) => {
            report(&e);
            return ExitCode::FAILURE;
        }
    };
    let remote = match remote_target(&cli) {
        Ok(remote) => remote,
        Err(e) => {
            report(&e);
            return ExitCode::FAILURE;
        }
    };
    if let Some(target) = &remote {
        commands::set_daemon_host(&target.to_string());
    }
    let ctx = Context {
        layout,
        json: cli.json,
        style: Style::detect(),
        remote,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("banger: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&ctx, cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

async fn run(ctx: &Context, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Image(c) => commands::image::run(ctx, c).await.map(|()| 0),
        Command::Kernel(c) => commands::kernel::run(ctx, c).await.map(|()| 0),
        Command::Snapshot(c) => commands::snapshot::run(ctx, c).await.map(|()| 0),
        Command::Vm(c) => commands::vm::run(ctx, c).await,
        Command::Daemon(c) => commands::daemon::run(ctx, c).await,
        Command::Config(c) => commands::config::run(ctx, c).await,
        Command::SshConfig(a) => commands::ssh_config::run(ctx, a).await,
        Command::Mcp(a) => commands::mcp::run(ctx, a).await,
        Command::Serve(a) => commands::serve::run(ctx, a).await,
        Command::Version => commands::version::run(ctx).await.map(|()| 0),
        Command::Doctor => commands::doctor::run(ctx).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "banger", &mut std::io::stdout());
            Ok(0)
        }
    }
}

/// One clear line on stderr (plus the daemon's code and operation id for API errors).
fn report(e: &anyhow::Error) {
    let style = Style::detect();
    let prefix = style.paint(Tone::Bad, "error:");
    eprintln!("banger: {prefix} {}", error_text(e));
}

/// The text of an error as printed. API messages may quote a guest's console or agent, and
/// other errors a daemon's raw answer: every control character is made visible.
pub fn error_text(e: &anyhow::Error) -> String {
    let daemon_error = match e.downcast_ref::<banger_client::Error>() {
        Some(banger_client::Error::Daemon(ClientError::Api(api))) => Some(api),
        _ => match e.downcast_ref::<ClientError>() {
            Some(ClientError::Api(api)) => Some(api),
            _ => None,
        },
    };
    let text = match daemon_error {
        Some(api) => {
            let op = api
                .operation_id
                .as_deref()
                .map(|o| format!(", operation {o}"))
                .unwrap_or_default();
            format!("{} [{}{op}]", api.message, api.code)
        }
        _ => format!("{e:#}"),
    };
    visible(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_api::{ApiError, ErrorCode};

    const OSC52: &str = "\x1b]52;c;Y3VybCBldmlsfHNo\x07";

    #[test]
    fn api_errors_print_guest_escapes_visibly() {
        let mut api = ApiError::new(
            ErrorCode::OperationFailed,
            format!("the guest did not boot\nconsole tail:\n{OSC52}login:"),
        );
        api.operation_id = Some("op-1".into());
        let text = error_text(&anyhow::Error::new(ClientError::Api(api)));
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert_eq!(
            text,
            "the guest did not boot\nconsole tail:\n\\x1b]52;c;Y3VybCBldmlsfHNo\\x07login: [operation_failed, operation op-1]"
        );
    }

    #[test]
    fn other_errors_are_escaped_too() {
        let e = anyhow::Error::new(ClientError::Protocol(format!("HTTP 500: {OSC52}")))
            .context("listing VMs");
        let text = error_text(&e);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(
            text.starts_with("listing VMs: talking to bangerd: HTTP 500: \\x1b]52"),
            "{text}"
        );
    }
}
