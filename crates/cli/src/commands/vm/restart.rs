//! `banger vm restart NAME`

use banger_api::methods;
use banger_api::vm::VmStartParams;

use crate::Context;
use crate::commands::vm::start::StartArgs;
use crate::commands::with_progress;
use crate::output;
use banger_client::Client;

pub async fn run(ctx: &Context, client: &Client, args: StartArgs) -> anyhow::Result<u8> {
    let params = VmStartParams {
        vm: args.vm.clone(),
        ready_timeout_secs: args.ready_timeout,
    };
    let started = std::time::Instant::now();
    let vm = with_progress::<methods::vm::Restart>(
        client,
        &params,
        args.quiet || ctx.json,
        "the daemon stops the VM again",
    )
    .await?;
    if ctx.json {
        output::print_json(&vm)?;
    } else {
        let ready = super::ready_secs(&vm).unwrap_or_else(|| started.elapsed().as_secs_f64());
        println!("restarted vm {} (ready in {ready:.1}s)", vm.name);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::args::{Cli, Command};
    use crate::commands::vm::VmCommand;

    #[test]
    fn parses() {
        let cli = Cli::try_parse_from(["banger", "vm", "restart", "dev", "--ready-timeout", "9"])
            .unwrap();
        let Command::Vm(VmCommand::Restart(a)) = cli.command else {
            panic!("not vm restart");
        };
        assert_eq!((a.vm.as_str(), a.ready_timeout), ("dev", Some(9)));
    }
}
