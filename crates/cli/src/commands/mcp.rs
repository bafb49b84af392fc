//! `banger mcp`: the MCP server of [`banger_mcp`] on stdin/stdout, with the daemon started
//! as for any command and new sandboxes configured by the config file's `[vm]` and `[net]`.
//! Only MCP JSON-RPC goes to stdout; anything else to stderr.

use clap::Args;

use crate::Context;
use crate::commands::vm::run::create_params;
use crate::config::{Config, VmFlags};

#[derive(Debug, Args)]
pub struct McpArgs {}

pub async fn run(ctx: &Context, _args: McpArgs) -> anyhow::Result<u8> {
    let config = Config::load()?;
    let mut defaults = create_params(&config.vm_with_flags(&VmFlags::default()), &[], &[]);
    defaults.allow = config.net.allow.clone();
    defaults.deny = config.net.deny.clone();
    let client = ctx.client().await?;
    let records = banger_client::diff::Records::new(&ctx.layout.state_dir);
    banger_mcp::serve_stdio(client, defaults, Some(records)).await?;
    Ok(0)
}
