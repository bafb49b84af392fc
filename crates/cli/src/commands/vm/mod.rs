//! `banger vm …`: the VM lifecycle (create, start, stop, kill, delete), inspection (list,
//! show, logs) and running commands inside (exec). One module per verb.

pub mod create;
pub mod delete;
pub mod exec;
pub mod kill;
pub mod list;
pub mod logs;
pub mod show;
pub mod start;
pub mod stop;

use banger_api::vm::Vm;
use clap::Subcommand;

use crate::Context;

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM from an image and boot it. Nothing is copied: the VM gets a sparse
    /// copy-on-write disk over the image's read-only root filesystem and its own work disk
    /// for /root, so a new VM costs only the blocks it writes.
    #[command(
        after_help = "The boot stages are shown as they happen (on stderr; --quiet hides them). The command\nreturns once the guest agent reports ready: `banger vm exec` works from then on.\n\nExamples:\n  banger vm create dev --image debian-bookworm\n  banger vm create big --image dev --cpus 4 --memory 4GiB --disk 20GiB --work-disk 50GiB\n  banger vm create sys --image fedora-40 --init image      # boot the image's own systemd\n  banger vm create later --image dev --no-start && banger vm start later\n\nCtrl-C while it boots cancels the create."
    )]
    Create(create::CreateArgs),
    /// Boot a created or stopped VM. Its root filesystem changes and /root are as they were.
    #[command(
        after_help = "The boot stages are shown as they happen (on stderr; --quiet hides them).\n\nExamples:\n  banger vm start dev\n  banger vm start dev --ready-timeout 300   # a slow systemd image under emulation"
    )]
    Start(start::StartArgs),
    /// Shut a VM down cleanly: the guest syncs and unmounts its disks, then powers off
    /// (the VMM is killed if it does not within a deadline). Disks are kept.
    #[command(after_help = "Example:\n  banger vm stop dev && banger vm start dev")]
    Stop(stop::StopArgs),
    /// Kill a VM's VMM at once, without asking the guest. Disks are kept, but writes the
    /// guest had not synced are lost: prefer `banger vm stop`.
    #[command(after_help = "Example:\n  banger vm kill dev")]
    Kill(kill::KillArgs),
    /// Delete a VM and its disks (root filesystem changes and the work disk). A running VM
    /// is refused unless --force.
    #[command(
        alias = "rm",
        after_help = "Examples:\n  banger vm delete dev\n  banger vm rm --force dev   # kill it first if it runs"
    )]
    Delete(delete::DeleteArgs),
    /// List VMs with their state, size and disk use (--json: `{"vms": […]}`, each as `vm show`
    /// gives it).
    #[command(
        alias = "ls",
        after_help = "DISK is what the VM's disks really take on the host (allocated blocks of its root\nfilesystem changes and its work disk), not their apparent size.\n\nExamples:\n  banger vm list\n  banger vm list --json | jq -r '.vms[] | select(.state == \"running\") | .name'"
    )]
    List,
    /// Show one VM in detail: state, resources, VMM and acceleration, disks, boot stages
    /// with their times, and the last error.
    #[command(
        after_help = "Examples:\n  banger vm show dev\n  banger vm show dev --json | jq '.stages'"
    )]
    Show(show::ShowArgs),
    /// Print a VM's serial console output (the kernel's and the guest's boot messages).
    #[command(
        after_help = "The console is kept while the VM exists, also after it stopped or failed to boot.\n\nExamples:\n  banger vm logs dev\n  banger vm logs dev -n 50     # the last 50 lines\n  banger vm logs dev -f        # keep printing new output; Ctrl-C ends"
    )]
    Logs(logs::LogsArgs),
    /// Run a command in a running VM. Its stdout and stderr are ours, its exit status
    /// becomes banger's.
    #[command(
        after_help = "Everything after the VM name (or after `--`) is the command and its arguments, passed\nas they are, without a shell; use `sh -c '…'` for pipes and variables.\n\nExit status: the command's own; 128+N if a signal N killed it; 127 if the program was not\nfound, 126 if it could not be started (not executable, no such user or directory); 1 with\nan `error:` line if banger itself failed (no such VM, VM not running, connection lost).\n\nSignals banger gets (Ctrl-C's SIGINT, SIGTERM, SIGHUP, SIGQUIT) are passed on to the\ncommand, so Ctrl-C ends it as it would locally (exit status 130). With -t on a terminal,\nkeys go to the guest's pty as typed, Ctrl-C included, and the window size follows yours.\n\nExamples:\n  banger vm exec dev -- uname -a\n  banger vm exec dev -- sh -c 'echo $HOME; exit 7'; echo $?     # prints /root, then 7\n  banger vm exec -it dev -- bash                              # an interactive shell\n  tar c ./src | banger vm exec -i dev -- tar x -C /root       # stdin passed through\n  banger vm exec -e RUST_LOG=debug -w /root/app -u builder dev -- cargo test"
    )]
    Exec(exec::ExecArgs),
}

pub async fn run(ctx: &Context, command: VmCommand) -> anyhow::Result<u8> {
    let client = ctx.client().await?;
    match command {
        VmCommand::Create(args) => create::run(ctx, &client, args).await,
        VmCommand::Start(args) => start::run(ctx, &client, args).await,
        VmCommand::Stop(args) => stop::run(ctx, &client, args).await,
        VmCommand::Kill(args) => kill::run(ctx, &client, args).await,
        VmCommand::Delete(args) => delete::run(ctx, &client, args).await,
        VmCommand::List => list::run(ctx, &client).await,
        VmCommand::Show(args) => show::run(ctx, &client, args).await,
        VmCommand::Logs(args) => logs::run(ctx, &client, args).await,
        VmCommand::Exec(args) => exec::run(&client, args).await,
    }
}

/// Seconds from the start of the last boot to the `ready` stage, if it got there.
pub(crate) fn ready_secs(vm: &Vm) -> Option<f64> {
    vm.stages
        .iter()
        .rev()
        .find(|s| s.stage == "ready")
        .map(|s| s.at_ms as f64 / 1000.0)
}

/// What a lifecycle call answered, for the human line: the VM when the result is one
/// (the daemon's `vm.start`/`stop`/`kill` results are read leniently, so a lighter result
/// still prints a sensible line).
pub(crate) fn as_vm(value: &serde_json::Value) -> Option<Vm> {
    serde_json::from_value(value.clone()).ok()
}

#[cfg(test)]
pub(crate) mod testing {
    use banger_api::vm::{DiskUsage, Vm, VmStageRecord, VmState};

    /// A running VM as the daemon would describe it.
    pub fn sample_vm() -> Vm {
        Vm {
            id: "vm-3f2a9c1d".into(),
            name: "dev".into(),
            image: "debian-bookworm".into(),
            image_id: "img-0a1b2c3d".into(),
            state: VmState::Running,
            cpus: 2,
            memory_mib: 1024,
            init: "agent".into(),
            vmm: "qemu".into(),
            accel: "tcg".into(),
            accel_reason: "/dev/kvm did not boot the probe guest".into(),
            channel: "vsock".into(),
            last_error: None,
            stages: vec![
                VmStageRecord {
                    stage: "vmm_spawned".into(),
                    at_ms: 40,
                    guest_uptime_ms: None,
                },
                VmStageRecord {
                    stage: "root_assembled".into(),
                    at_ms: 2900,
                    guest_uptime_ms: Some(1800),
                },
                VmStageRecord {
                    stage: "ready".into(),
                    at_ms: 3400,
                    guest_uptime_ms: Some(2050),
                },
            ],
            root_disk: DiskUsage {
                apparent_bytes: 8 << 30,
                allocated_bytes: 3 << 20,
            },
            work_disk: DiskUsage {
                apparent_bytes: 8 << 30,
                allocated_bytes: 1 << 20,
            },
            pid: Some(4242),
            dir: "/home/me/.local/state/banger/vms/vm-3f2a9c1d".into(),
            created_at: "2025-05-01T10:00:00Z".into(),
            started_at: Some("2025-05-01T10:00:01Z".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(args: &[&str]) -> Result<VmCommand, clap::Error> {
        let argv = std::iter::once("banger").chain(args.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Vm(c) => Ok(c),
            other => panic!("not a vm command: {other:?}"),
        }
    }

    #[test]
    fn every_verb_parses() {
        let ok = [
            &["vm", "create", "dev", "--image", "debian"][..],
            &["vm", "start", "dev"],
            &["vm", "stop", "dev"],
            &["vm", "kill", "dev"],
            &["vm", "delete", "dev"],
            &["vm", "rm", "--force", "dev"],
            &["vm", "list"],
            &["vm", "ls", "--json"],
            &["vm", "show", "dev", "--json"],
            &["vm", "logs", "dev", "-f", "-n", "20"],
            &["vm", "exec", "dev", "--", "true"],
        ];
        for argv in ok {
            parse(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
        match parse(&["vm", "delete", "--force", "dev"]).expect("parses") {
            VmCommand::Delete(d) => assert!(d.force && d.vm == "dev"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["vm", "ls"]).expect("parses"),
            VmCommand::List
        ));
    }

    #[test]
    fn a_vm_name_is_required() {
        for verb in ["start", "stop", "kill", "delete", "show", "logs"] {
            assert!(parse(&["vm", verb]).is_err(), "{verb}");
        }
        assert!(parse(&["vm", "create", "--image", "x"]).is_err());
        assert!(
            parse(&["vm", "create", "dev"]).is_err(),
            "--image is required"
        );
    }

    #[test]
    fn help_texts_render() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        cli.build();
        let vm = cli.find_subcommand_mut("vm").expect("vm command");
        for verb in [
            "create", "start", "stop", "kill", "delete", "list", "show", "logs", "exec",
        ] {
            let sub = vm.find_subcommand_mut(verb).expect(verb);
            let help = sub.render_long_help().to_string();
            assert!(help.contains("Example"), "{verb} help has examples");
        }
        let top = Cli::command().render_long_help().to_string();
        assert!(
            top.contains("banger vm exec"),
            "top-level examples mention vm"
        );
    }

    #[test]
    fn ready_time_comes_from_the_ready_stage() {
        let mut vm = testing::sample_vm();
        assert_eq!(ready_secs(&vm), Some(3.4));
        vm.stages.clear();
        assert_eq!(ready_secs(&vm), None);
    }
}
