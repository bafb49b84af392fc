//! `banger vm restart NAME`

use banger_api::methods;

use crate::Context;
use crate::commands::vm::start::{StartArgs, boot};
use banger_client::Client;

pub async fn run(ctx: &Context, client: &Client, args: StartArgs) -> anyhow::Result<u8> {
    boot::<methods::vm::Restart>(ctx, client, args, "restarted").await
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
