//! `banger vm pause NAME`

use banger_api::methods;
use banger_api::vm::VmRef;
use clap::Args;

use crate::Context;
use crate::output;
use banger_client::Client;

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// VM name or id.
    pub vm: String,
}

pub async fn run(ctx: &Context, client: &Client, args: PauseArgs) -> anyhow::Result<u8> {
    let vm = client
        .call::<methods::vm::Pause>(&VmRef { vm: args.vm })
        .await?;
    if ctx.json {
        output::print_json(&vm)?;
    } else {
        println!("paused vm {}", vm.name);
    }
    Ok(0)
}
