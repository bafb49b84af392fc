//! `banger vm resume NAME`

use banger_api::methods;
use banger_api::vm::VmRef;
use clap::Args;

use crate::Context;
use crate::output;
use banger_client::Client;

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// VM name or id.
    pub vm: String,
}

pub async fn run(ctx: &Context, client: &Client, args: ResumeArgs) -> anyhow::Result<u8> {
    let vm = client
        .call::<methods::vm::Resume>(&VmRef { vm: args.vm })
        .await?;
    if ctx.json {
        output::print_json(&vm)?;
    } else {
        println!("resumed vm {}", vm.name);
    }
    Ok(0)
}
