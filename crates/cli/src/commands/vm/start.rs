//! `banger vm start NAME`

use banger_api::methods;
use banger_api::vm::{Vm, VmStartParams};
use clap::Args;

use crate::Context;
use crate::commands::with_progress;
use crate::output;
use banger_client::Client;

#[derive(Debug, Args)]
pub struct StartArgs {
    /// VM name or id.
    pub vm: String,
    /// Seconds the guest gets to report ready before the start counts as failed
    /// [default: 30 with KVM, 120 under software emulation].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub ready_timeout: Option<u64>,
    /// No progress output (the boot stages).
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn run(ctx: &Context, client: &Client, args: StartArgs) -> anyhow::Result<u8> {
    boot::<methods::vm::Start>(ctx, client, args, "started").await
}

/// `vm start` and `vm restart` (method `M`): the boot stages as they come, then `VERB vm
/// NAME (ready in …)`.
pub async fn boot<M>(
    ctx: &Context,
    client: &Client,
    args: StartArgs,
    verb: &str,
) -> anyhow::Result<u8>
where
    M: banger_api::methods::Streaming<Params = VmStartParams, Result = Vm>,
{
    let params = VmStartParams {
        vm: args.vm.clone(),
        ready_timeout_secs: args.ready_timeout,
    };
    let started = std::time::Instant::now();
    let vm = with_progress::<M>(
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
        println!("{verb} vm {} (ready in {ready:.1}s)", vm.name);
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
        let cli = Cli::try_parse_from([
            "banger",
            "vm",
            "start",
            "dev",
            "--ready-timeout",
            "60",
            "-q",
        ])
        .expect("parses");
        match cli.command {
            Command::Vm(VmCommand::Start(a)) => {
                assert_eq!(a.vm, "dev");
                assert_eq!(a.ready_timeout, Some(60));
                assert!(a.quiet);
            }
            other => panic!("{other:?}"),
        }
    }
}
