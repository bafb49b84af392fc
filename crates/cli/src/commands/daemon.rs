//! `banger daemon status|start|stop|dial-stdio` (`install|uninstall`: [`super::daemon_service`])

use std::time::{Duration, Instant};

use anyhow::bail;
use banger_api::methods;
use banger_api::system::Empty;
use serde_json::json;

use crate::Context;
use crate::args::DaemonCommand;
use crate::commands::daemon_service::{self, Scope};
use banger_client::ClientError;
use banger_client::autostart;

/// Exit status of `daemon status` when no daemon runs (as `systemctl status`).
pub const EXIT_NOT_RUNNING: u8 = 3;

pub async fn run(ctx: &Context, command: DaemonCommand) -> anyhow::Result<u8> {
    let client = ctx.plain_client();
    match command {
        DaemonCommand::Status => match client.call::<methods::system::Version>(&Empty {}).await {
            Ok(v) => {
                let ping = autostart::ping(&client).await?;
                if ctx.json {
                    crate::output::print_json(
                        &json!({ "running": true, "uptime_seconds": ping.uptime_seconds, "daemon": v }),
                    )?;
                } else {
                    println!(
                        "bangerd {} running (pid {}, up {}s)\n  started by: {}\n  socket:     {}\n  state:      {}\n  cache:      {}",
                        v.version,
                        v.pid,
                        ping.uptime_seconds,
                        daemon_service::started_by_text(&v),
                        v.socket_path,
                        v.state_dir,
                        v.cache_dir
                    );
                }
                Ok(0)
            }
            Err(e) if e.is_not_running() => {
                if ctx.json {
                    crate::output::print_json(&json!({ "running": false }))?;
                } else {
                    println!("bangerd is not running ({})", client.location());
                }
                Ok(EXIT_NOT_RUNNING)
            }
            Err(e) => Err(e.into()),
        },
        DaemonCommand::Start if ctx.remote.is_some() => {
            // The remote bridge starts the daemon there when none runs.
            let ping = autostart::ping(&ctx.client().await?).await?;
            if ctx.json {
                crate::output::print_json(&json!({ "pid": ping.pid }))?;
            } else {
                println!(
                    "bangerd running on {} (pid {})",
                    client.location(),
                    ping.pid
                );
            }
            Ok(0)
        }
        DaemonCommand::Start => {
            let (started, ping) = match autostart::ping(&client).await {
                Ok(p) => (false, p),
                Err(ClientError::NotRunning { .. }) => {
                    {
                        // A bad config file is reported before a daemon is started.
                        crate::config::Config::load()?;
                        (true, autostart::start_daemon(&ctx.layout).await?)
                    }
                }
                Err(e) => return Err(e.into()),
            };
            if ctx.json {
                crate::output::print_json(&json!({ "started": started, "pid": ping.pid }))?;
            } else if started {
                println!("bangerd started (pid {})", ping.pid);
            } else {
                println!("bangerd already running (pid {})", ping.pid);
            }
            Ok(0)
        }
        DaemonCommand::DialStdio { no_start } => {
            crate::commands::dial_stdio::run(ctx, no_start).await
        }
        DaemonCommand::Stop => {
            match client.call::<methods::system::Shutdown>(&Empty {}).await {
                Ok(_) => {}
                Err(e) if e.is_not_running() => {
                    if !ctx.json {
                        println!("bangerd is not running");
                    } else {
                        crate::output::print_json(&json!({ "stopped": false }))?;
                    }
                    return Ok(0);
                }
                Err(e) => return Err(e.into()),
            }
            // Wait until the process is gone (its instance lock is free), so
            // `stop && start` is safe in scripts.
            let deadline = Instant::now() + Duration::from_secs(30);
            while stopping(ctx, &client).await {
                if Instant::now() > deadline {
                    bail!("bangerd did not stop within 30s; see its log");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if ctx.json {
                crate::output::print_json(&json!({ "stopped": true }))?;
            } else {
                println!("bangerd stopped");
            }
            Ok(0)
        }
        DaemonCommand::Install { .. } | DaemonCommand::Uninstall { .. }
            if let Some(target) = &ctx.remote =>
        {
            anyhow::bail!(
                "the service is installed on the machine it runs on: `ssh {} banger daemon \
                 install` (without --host)",
                target.host
            )
        }
        DaemonCommand::Install {
            system,
            print,
            no_start,
        } => daemon_service::install(ctx, Scope::new(system), print, no_start).await,
        DaemonCommand::Uninstall { system } => daemon_service::uninstall(Scope::new(system)).await,
    }
}

/// True while the daemon is still there: its instance lock held (here), or it still
/// answers (on `--host`, asked without starting one).
async fn stopping(ctx: &Context, client: &banger_client::Client) -> bool {
    match &ctx.remote {
        None => lock_is_held(&ctx.layout.state_lock_path()),
        Some(_) => !matches!(
            autostart::ping(client).await,
            Err(ref e) if e.is_not_running()
        ),
    }
}

/// True while some process holds the daemon's instance lock.
pub(crate) fn lock_is_held(path: &std::path::Path) -> bool {
    match std::fs::File::open(path) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}
