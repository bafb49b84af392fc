//! `banger vm delete NAME [--force]`

use banger_api::methods;
use banger_api::vm::VmDeleteParams;
use clap::Args;

use crate::Context;
use crate::output;
use banger_client::Client;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// VM name or id.
    pub vm: String,
    /// Delete a running VM too (it is killed first, without a clean shutdown).
    #[arg(long, short)]
    pub force: bool,
}

pub async fn run(ctx: &Context, client: &Client, args: DeleteArgs) -> anyhow::Result<u8> {
    let params = VmDeleteParams {
        vm: args.vm.clone(),
        force: args.force,
    };
    let deleted = client.call::<methods::vm::Delete>(&params).await?;
    if ctx.json {
        output::print_json(&deleted)?;
    } else {
        println!("deleted vm {} and its disks", deleted.name);
    }
    Ok(0)
}
