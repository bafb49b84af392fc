//! `banger version`

use banger_api::methods;
use banger_api::system::{Empty, VersionInfo};
use serde_json::json;

use crate::Context;

pub async fn run(ctx: &Context) -> anyhow::Result<()> {
    let cli = env!("CARGO_PKG_VERSION");
    // The daemon's version is reported when one runs; `version` never starts one.
    let daemon: Option<VersionInfo> = ctx
        .plain_client()
        .call::<methods::system::Version>(&Empty {})
        .await
        .ok();
    if ctx.json {
        return crate::output::print_json(
            &json!({ "cli": cli, "api_version": banger_api::API_VERSION, "daemon": daemon }),
        );
    }
    println!("banger  {cli} (API {})", banger_api::API_VERSION);
    match daemon {
        Some(d) => println!(
            "bangerd {} (API {}, pid {})",
            d.version, d.api_version, d.pid
        ),
        None => println!("bangerd not running"),
    }
    Ok(())
}
