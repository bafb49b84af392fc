//! `banger vm stop NAME`

use banger_api::methods;
use banger_api::vm::VmRef;
use clap::Args;

use crate::Context;
use crate::output;
use banger_client::Client;

#[derive(Debug, Args)]
pub struct StopArgs {
    /// VM name or id.
    pub vm: String,
}

pub async fn run(ctx: &Context, client: &Client, args: StopArgs) -> anyhow::Result<u8> {
    let vm = client
        .call::<methods::vm::Stop>(&VmRef {
            vm: args.vm.clone(),
        })
        .await?;
    if ctx.json {
        output::print_json(&vm)?;
    } else {
        println!("stopped vm {}", vm.name);
    }
    Ok(0)
}
