//! `banger snapshot …`: the snapshots `banger vm snapshot` takes (list, show, delete).

use banger_api::methods;
use banger_api::snapshot::{Snapshot, SnapshotDeleted, SnapshotList, SnapshotRef};
use banger_api::system::Empty;
use banger_api::text::visible;
use clap::Subcommand;

use crate::Context;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots with their source VM, image, memory and disk cost.
    #[command(
        alias = "ls",
        after_help = "SIZE is what the snapshot's files take on disk: the saved memory and device state and\nthe copies of the source VM's disks. FORKS counts the VMs made from it that still exist.\n\nExamples:\n  banger snapshot list\n  banger snapshot list --json | jq -r '.[].name'"
    )]
    List,
    /// Show one snapshot in detail (its forks included).
    Show {
        /// Snapshot name or id.
        snapshot: String,
    },
    /// Delete a snapshot and its files. Refused while VMs forked from it exist: their
    /// disks are overlays over its copies.
    #[command(alias = "rm", after_help = "Example:\n  banger snapshot delete warm-1")]
    Delete {
        /// Snapshot name or id.
        snapshot: String,
    },
}

pub async fn run(ctx: &Context, command: SnapshotCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        SnapshotCommand::List => {
            let list: SnapshotList = client.call::<methods::snapshot::List>(&Empty {}).await?;
            if ctx.json {
                return output::print_json(&list.snapshots);
            }
            if list.snapshots.is_empty() {
                println!("no snapshots yet; take one with `banger vm snapshot NAME`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .snapshots
                .iter()
                .map(|s| {
                    vec![
                        visible(&s.name).into_owned(),
                        visible(&s.source_vm).into_owned(),
                        visible(&s.image).into_owned(),
                        format!("{} MiB", s.memory_mib),
                        output::human_bytes(s.size_bytes),
                        s.forks.len().to_string(),
                        s.created_at.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &ctx.style,
                    &[
                        "NAME",
                        "SOURCE VM",
                        "IMAGE",
                        "MEMORY",
                        "SIZE",
                        "FORKS",
                        "CREATED"
                    ],
                    &rows
                )
            );
            Ok(())
        }
        SnapshotCommand::Show { snapshot } => {
            let s: Snapshot = client
                .call::<methods::snapshot::Show>(&SnapshotRef { snapshot })
                .await?;
            if ctx.json {
                return output::print_json(&s);
            }
            print!("{}", render(&s));
            Ok(())
        }
        SnapshotCommand::Delete { snapshot } => {
            let d: SnapshotDeleted = client
                .call::<methods::snapshot::Delete>(&SnapshotRef { snapshot })
                .await?;
            if ctx.json {
                return output::print_json(&d);
            }
            println!(
                "deleted snapshot {} (freed {})",
                visible(&d.name),
                output::human_bytes(d.freed_bytes)
            );
            Ok(())
        }
    }
}

/// Key/value lines of one snapshot.
pub fn render(s: &Snapshot) -> String {
    let forks = if s.forks.is_empty() {
        "-".to_string()
    } else {
        s.forks
            .iter()
            .map(|f| visible(f).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "name:       {}\nid:         {}\nkind:       {}\nsource vm:  {}\nimage:      {}\nvmm:        {}\ncpus:       {}\nmemory:     {} MiB\nsize:       {}\npaused for: {} ms\nforks:      {}\ncreated:    {}\n",
        visible(&s.name),
        s.id,
        if s.warm {
            "ready-snapshot for warm starts (deleted with its image)"
        } else {
            "snapshot"
        },
        visible(&s.source_vm),
        visible(&s.image),
        s.vmm,
        s.cpus,
        s.memory_mib,
        output::human_bytes(s.size_bytes),
        s.paused_ms,
        forks,
        s.created_at
    )
}
