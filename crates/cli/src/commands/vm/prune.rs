//! `banger vm prune [--force]`

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use banger_api::methods;
use banger_api::text::visible;
use banger_api::vm::VmPruneParams;
use clap::Args;

use crate::Context;
use crate::output;
use banger_client::Client;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask (needed when stdin is not a terminal).
    #[arg(long, short)]
    pub force: bool,
}

pub async fn run(ctx: &Context, client: &Client, args: PruneArgs) -> anyhow::Result<u8> {
    let mut params = VmPruneParams::default();
    if !args.force {
        if !std::io::stdin().is_terminal() {
            bail!("vm prune deletes VMs and their disks: confirm on a terminal, or pass --force");
        }
        let listed = client
            .call::<methods::vm::Prune>(&VmPruneParams {
                dry_run: true,
                only: None,
            })
            .await?;
        if listed.deleted.is_empty() {
            println!("no VM to prune (every VM is running)");
            return Ok(0);
        }
        let names: Vec<String> = listed
            .deleted
            .iter()
            .map(|n| visible(n).into_owned())
            .collect();
        eprint!(
            "Delete {} VM(s) that are not running, with their disks: {}? [y/N] ",
            names.len(),
            names.join(", ")
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing deleted");
            return Ok(1);
        }
        // Only what the user saw: a VM created since is not theirs to lose.
        params.only = Some(listed.deleted);
    }
    let pruned = client.call::<methods::vm::Prune>(&params).await?;
    if ctx.json {
        output::print_json(&pruned)?;
    } else if pruned.deleted.is_empty() {
        println!("no VM to prune (every VM is running)");
    } else {
        for name in &pruned.deleted {
            println!("deleted vm {}", visible(name));
        }
        println!(
            "{} VM(s) deleted, {} freed",
            pruned.deleted.len(),
            output::human_bytes(pruned.freed_bytes)
        );
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
        let cli = Cli::try_parse_from(["banger", "vm", "prune", "-f"]).unwrap();
        let Command::Vm(VmCommand::Prune(a)) = cli.command else {
            panic!("not vm prune");
        };
        assert!(a.force);
    }
}
