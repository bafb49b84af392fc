//! `banger serve`: the local E2B API of [`banger_e2b`] on one TCP port, with the daemon
//! started as for any command and new sandboxes configured by the config file's `[vm]` and
//! `[net]`. Runs in the foreground until interrupted; its sandboxes go with it.

use std::net::SocketAddr;

use clap::Args;

use crate::Context;
use crate::commands::vm::run::create_params;
use crate::config::{Config, VmFlags};

/// Where `banger serve` listens when neither the flag nor the config file say.
const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to serve on [default: config `serve.listen`, else 127.0.0.1:3000].
    /// Port 0 picks a free port (printed). An address other than loopback needs an API key.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// An `X-API-KEY` (`E2B_API_KEY`) to accept; repeatable, added to config
    /// `serve.api_keys`. With none, any key is accepted, on loopback only.
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,
}

pub async fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<u8> {
    let config = Config::load()?;
    let mut defaults = create_params(&config.vm_with_flags(&VmFlags::default()), &[], &[]);
    defaults.allow = config.net.allow.clone();
    defaults.deny = config.net.deny.clone();
    let listen = match (args.listen, &config.serve.listen) {
        (Some(listen), _) => listen,
        (None, Some(setting)) => setting.value,
        (None, None) => DEFAULT_LISTEN.parse()?,
    };
    let mut api_keys = config.serve.api_keys.clone();
    api_keys.extend(args.api_keys.into_iter().filter(|k| !k.trim().is_empty()));
    let options = banger_e2b::Options {
        listen,
        api_keys,
        defaults,
    };
    options.check()?;
    let client = ctx.client().await?;
    let serve = banger_e2b::serve(client, options, |addr| {
        eprintln!("banger serve: E2B API on http://{addr}");
        eprintln!(
            "  point the E2B SDK here: E2B_API_URL=http://{addr} E2B_SANDBOX_URL=http://{addr} E2B_API_KEY=<key>"
        );
        eprintln!("  templates are banger image names or references (`base`: the default image)");
    });
    tokio::select! {
        served = serve => served?,
        _ = tokio::signal::ctrl_c() => eprintln!("banger serve: stopping; its sandboxes are removed"),
    }
    Ok(0)
}
