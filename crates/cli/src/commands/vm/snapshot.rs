//! `banger vm snapshot NAME [--name SNAP] [--stop]`

use banger_api::methods;
use banger_api::text::visible;
use banger_api::vm::VmSnapshotParams;
use clap::Args;

use crate::Context;
use crate::output;
use banger_client::Client;

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// VM name or id (running or paused).
    pub vm: String,
    /// The snapshot's name (default: the VM's name and four hex digits).
    #[arg(long)]
    pub name: Option<String>,
    /// Stop the VM once the snapshot is taken, instead of letting it run on.
    #[arg(long)]
    pub stop: bool,
}

pub async fn run(ctx: &Context, client: &Client, args: SnapshotArgs) -> anyhow::Result<u8> {
    let snap = client
        .call::<methods::vm::Snapshot>(&VmSnapshotParams {
            vm: args.vm,
            name: args.name,
            stop: args.stop,
        })
        .await?;
    if ctx.json {
        output::print_json(&snap)?;
    } else {
        println!(
            "snapshot {} of vm {} ({}, the VM paused {} ms); fork it with `banger vm create NAME --from {}`",
            visible(&snap.name),
            visible(&snap.source_vm),
            output::human_bytes(snap.size_bytes),
            snap.paused_ms,
            visible(&snap.name)
        );
    }
    Ok(0)
}
