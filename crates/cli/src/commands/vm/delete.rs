//! `banger vm delete NAME [--force]`

use banger_api::methods;
use banger_api::vm::VmDeleteParams;
use clap::Args;

use crate::Context;
use crate::client::Client;
use crate::output;

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
    let result: serde_json::Value = client.call(methods::VM_DELETE, &params).await?;
    if ctx.json {
        output::print_json(&result)?;
    } else {
        let name = result
            .get("name")
            .and_then(|n| n.as_str())
            .map_or(args.vm, str::to_owned);
        println!("deleted vm {name} and its disks");
    }
    Ok(0)
}
