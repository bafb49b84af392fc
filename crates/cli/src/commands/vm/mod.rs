//! `banger vm …`: the VM lifecycle (create, start, stop, kill, delete), inspection (list,
//! show, logs, ports), running commands inside (exec, ssh, run), files (cp, diff) and TCP
//! tunnels (proxy). One module per verb.

pub mod cp;
pub mod create;
pub mod delete;
pub mod diff;
pub mod exec;
pub mod kill;
pub mod list;
pub mod logs;
pub mod pause;
pub mod ports;
pub mod proxy;
pub mod prune;
pub mod restart;
pub mod resume;
pub mod run;
pub mod show;
pub mod snapshot;
pub mod ssh;
pub mod start;
pub mod stats;
pub mod stop;

use banger_api::vm::Vm;
use clap::Subcommand;

use crate::Context;

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Run a command (or a shell) in a new VM, with a directory copied in: the one command
    /// for a disposable Linux box with your project in it.
    #[command(after_help = RUN_HELP)]
    Run(run::RunArgs),
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
    /// Stop a VM cleanly (as `vm stop`) and boot it again from the same disks: its files
    /// and /root are kept, its processes and memory are not. A VM that is not running is
    /// just started.
    #[command(
        after_help = "The boot stages are shown as they happen (on stderr; --quiet hides them).\n\nExample:\n  banger vm restart dev"
    )]
    Restart(start::StartArgs),
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
    /// Delete every VM that is not running (created, stopped or failed) with its disks.
    /// Running and paused VMs are kept.
    #[command(
        after_help = "On a terminal it lists them and asks first; --force deletes without asking (and is\nneeded when stdin is not a terminal).\n\nExamples:\n  banger vm prune\n  banger vm prune --force --json | jq -r '.deleted[]'"
    )]
    Prune(prune::PruneArgs),
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
    /// An interactive login shell (or CMD) on a pty in a running VM, over the agent: no sshd
    /// needed in the guest. Your TERM is passed on and the window size follows yours.
    #[command(
        after_help = "Exit status: the shell's (or CMD's). For real OpenSSH (scp, port forwards, an IDE's\nremote mode) see `banger ssh-config`.\n\nExamples:\n  banger vm ssh dev\n  banger vm ssh dev -- htop\n  banger vm ssh -u builder -w /srv dev"
    )]
    Ssh(ssh::SshArgs),
    /// Copy files and directory trees between the host and a VM (NAME:PATH on one side),
    /// keeping modes, mtimes and symlinks; streamed, so file size does not matter.
    #[command(after_help = CP_HELP)]
    Cp(cp::CpArgs),
    /// The guest's changes to the workspace `vm run PATH` copied in, as a git patch
    /// (binary files included) against what was copied.
    #[command(after_help = diff::DIFF_HELP)]
    Diff(diff::DiffArgs),
    /// Pipe stdin/stdout to a TCP port inside a VM, over the agent (for OpenSSH's
    /// ProxyCommand; see `banger ssh-config`).
    #[command(
        after_help = "The end of stdin half-closes the guest socket; the guest closing it ends the command.\n\nExamples:\n  ssh -o ProxyCommand='banger vm proxy %h %p' root@dev.vm\n  printf 'GET / HTTP/1.0\\r\\n\\r\\n' | banger vm proxy dev 80"
    )]
    Proxy(proxy::ProxyArgs),
    /// List a VM's published ports and the sockets listening inside it.
    #[command(
        after_help = "Published ports are set at create time with -p [IP:]HOST:GUEST[/tcp|udp] (bound to\n127.0.0.1 unless an IP is given). Listening sockets come from the running guest.\n\nExamples:\n  banger vm ports dev\n  banger vm ports dev --json | jq '.listening'"
    )]
    Ports(ports::PortsArgs),
    /// A VM's numbers: the guest's uptime, CPU time, load, memory and network bytes (read
    /// from its /proc), and the host's: the VMM's CPU time and memory (RSS, PSS), the
    /// guest's bytes on its tap, the disks' real size.
    #[command(
        after_help = "The guest's numbers come from the guest itself; the host's are measured outside it.\n\nExamples:\n  banger vm stats dev\n  banger vm stats dev --json | jq '.guest.memory_used_bytes'"
    )]
    Stats(stats::StatsArgs),
    /// Stop a running VM's vCPUs: nothing in it runs (its clock included) until `vm resume`;
    /// memory and processes are kept. exec and cp are refused while it is paused.
    #[command(after_help = "Examples:\n  banger vm pause dev\n  banger vm resume dev")]
    Pause(pause::PauseArgs),
    /// Let a paused VM run again (its clock is set from the host's).
    #[command(after_help = "Example:\n  banger vm resume dev")]
    Resume(resume::ResumeArgs),
    /// Save a running VM's memory, device state and disks as a snapshot, to fork new VMs
    /// from (`vm create NEW --from SNAP`, `vm run --from SNAP`). The VM pauses only while
    /// it is saved, then runs on (or stops with --stop).
    #[command(after_help = SNAPSHOT_HELP)]
    Snapshot(snapshot::SnapshotArgs),
}

const SNAPSHOT_HELP: &str = "\
A fork goes on from the moment of the snapshot: its processes run, their memory intact,
its files as they were. Its disks are copy-on-write over the snapshot's (nothing is
copied); it gets its own name as hostname, fresh randomness in the guest kernel's RNG, the
host's clock and its own agent secret before anything else runs in it. Many forks of one
snapshot may run at once. `banger snapshot list|show|delete` manage snapshots.

With QEMU, VMs on the vsock agent channel cannot be saved (QEMU 7.2 refuses to migrate
vhost-user-vsock): create VMs to snapshot with `--channel serial`.

Examples:
  banger vm create base --image dev --channel serial
  banger vm exec base -- sh -c 'apt-get update && apt-get install -y python3'
  banger vm snapshot base --name py
  banger vm create a --from py && banger vm create b --from py
  banger vm run --rm --from py -- python3 -c 'print(1)'";

const RUN_HELP: &str = "\
Steps: the image (without --image, the configured default image, pulled once with the
configured default kernel: see `banger config show`), a new VM, PATH copied onto the VM's
own disk as /root/<dir name>, then CMD run there (exit status, stdin, stdout and stderr
passed through; a pty when stdin is a terminal) or, without CMD, an interactive login
shell.

What is copied from PATH: in a git repository (PATH is its top level), the tracked files
plus the untracked files that are not ignored, and the whole .git (so `git status` and
`git log` work in the guest); in any other directory, everything. Modes, mtimes and
symlinks are kept. --dry-run prints the list and stops.

-d creates the VM (and copies PATH), prints its name and leaves it running; it takes no
CMD: use `banger vm exec NAME -- …` afterwards. --rm deletes the VM at the end, also after
a failure or Ctrl-C. Without --rm the VM stays (a failed run says how to delete it).
--diff FILE writes the guest's changes to PATH's copy as a git patch after CMD, before
--rm deletes the VM; without --rm, `banger vm diff NAME` gives it at any time.

Examples:
  banger vm run                               # a shell in the default image
  banger vm run ~/src/app -- make test        # the repo copied in; make's status is ours
  banger vm run --rm --image alpine-3-20 -- sh -c 'exit 7'; echo $?     # 7, nothing left
  banger vm run . --dry-run | less            # what would be copied
  banger vm run . --rm --diff fix.patch -- ./fix.sh && git apply --index fix.patch
  banger vm run -d . -p 8080:80 --name web && banger vm exec web -- ./serve";

const CP_HELP: &str = "\
NAME:PATH names a path in VM NAME; a relative PATH is under /root (`dev:` is /root).
Exactly one side is in a VM. Like `cp -r`:
  to a VM:   SRC lands inside DST when DST ends in / or is a directory in the guest,
             else SRC is copied as DST (renamed); DST's parents are created.
  from a VM: SRC lands inside DST when DST is a directory (or ends in /: then it is
             created), else SRC is written as DST (its parent must exist).
`-` on the local side is a tar stream on stdin (to a VM) or stdout (from a VM).
Entries of a downloaded archive that would land outside DST are refused.

Examples:
  banger vm cp ./file dev:/root/
  banger vm cp ./src dev:app            # ./src becomes /root/app (if that is no directory)
  banger vm cp dev:/var/log/syslog .
  banger vm cp dev:/root/app ./app-copy
  banger vm cp dev:/etc - | tar t";

pub async fn run(ctx: &Context, command: VmCommand) -> anyhow::Result<u8> {
    // `vm run` loads the config and lists the workspace before the daemon is needed (so
    // `--dry-run` never starts one).
    let command = match command {
        VmCommand::Run(args) => return run::run(ctx, args).await,
        VmCommand::Create(mut args) => {
            apply_config(&crate::config::Config::load()?, &mut args);
            VmCommand::Create(args)
        }
        other => other,
    };
    let client = ctx.client().await?;
    match command {
        VmCommand::Run(_) => unreachable!("handled above"),
        VmCommand::Create(args) => create::run(ctx, &client, args).await,
        VmCommand::Start(args) => start::run(ctx, &client, args).await,
        VmCommand::Stop(args) => stop::run(ctx, &client, args).await,
        VmCommand::Restart(args) => restart::run(ctx, &client, args).await,
        VmCommand::Prune(args) => prune::run(ctx, &client, args).await,
        VmCommand::Stats(args) => stats::run(ctx, &client, args).await,
        VmCommand::Kill(args) => kill::run(ctx, &client, args).await,
        VmCommand::Delete(args) => delete::run(ctx, &client, args).await,
        VmCommand::List => list::run(ctx, &client).await,
        VmCommand::Show(args) => show::run(ctx, &client, args).await,
        VmCommand::Logs(args) => logs::run(ctx, &client, args).await,
        VmCommand::Exec(args) => exec::run(&client, args).await,
        VmCommand::Ssh(args) => ssh::run(&client, args).await,
        VmCommand::Cp(args) => cp::run(&client, args).await,
        VmCommand::Diff(args) => diff::run(ctx, &client, args).await,
        VmCommand::Proxy(args) => proxy::run(&client, args).await,
        VmCommand::Ports(args) => ports::run(ctx, &client, args).await,
        VmCommand::Pause(args) => pause::run(ctx, &client, args).await,
        VmCommand::Resume(args) => resume::run(ctx, &client, args).await,
        VmCommand::Snapshot(args) => snapshot::run(ctx, &client, args).await,
    }
}

/// `vm create`: the config file's `[vm]` defaults where no flag was given.
pub fn apply_config(config: &crate::config::Config, args: &mut create::CreateArgs) {
    let vm = &config.vm;
    if args.from.is_some() {
        // A fork has its snapshot's resources; the network policy may differ.
        args.net = args.net.or(vm.net.as_ref().map(|s| s.value));
        return;
    }
    args.cpus = args.cpus.or(vm.cpus.as_ref().map(|s| s.value));
    args.memory = args.memory.or(vm.memory_mib.as_ref().map(|s| s.value));
    args.disk = args.disk.or(vm.disk_bytes.as_ref().map(|s| s.value));
    args.work_disk = args
        .work_disk
        .or(vm.work_disk_bytes.as_ref().map(|s| s.value));
    if args.net.is_none()
        && let Some(net) = &vm.net
    {
        args.net = Some(net.value);
        args.net_from = Some(format!("{} [vm] net", net.source));
    }
    args.allow.splice(0..0, config.net.allow.iter().cloned());
    args.deny.splice(0..0, config.net.deny.iter().cloned());
    args.init = args.init.or(vm.init.as_ref().map(|s| s.value));
    args.vmm = args.vmm.or(vm.vmm.as_ref().map(|s| s.value));
    args.console_log_max = args
        .console_log_max
        .or(vm.console_log_max.as_ref().map(|s| s.value));
}

/// Seconds from the start of the last boot to the `ready` stage, if it got there.
pub(crate) fn ready_secs(vm: &Vm) -> Option<f64> {
    vm.stages
        .iter()
        .rev()
        .find(|s| s.stage == "ready")
        .map(|s| s.at_ms as f64 / 1000.0)
}

#[cfg(test)]
pub(crate) mod testing {
    use banger_api::vm::{DiskUsage, Vm, VmStageRecord, VmState};

    /// A running VM as the daemon would describe it.
    pub fn sample_vm() -> Vm {
        Vm {
            forked_from: None,
            start: None,
            stop_idle_after_secs: Some(7200),
            idle_stop_in_secs: Some(5400),
            id: "vm-3f2a9c1d".into(),
            name: "dev".into(),
            image: "debian-bookworm".into(),
            image_id: "img-0a1b2c3d".into(),
            state: VmState::Running,
            cpus: 2,
            memory_mib: 1024,
            init: "agent".into(),
            vmm: "qemu".into(),
            vmm_reason: String::new(),
            accel: "tcg".into(),
            accel_reason: "/dev/kvm did not boot the probe guest".into(),
            channel: "vsock".into(),
            net: "public".into(),
            net_policy: None,
            published: Vec::new(),
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
            auto_remove: false,
            leased: false,
            capabilities: None,
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
            &["vm", "run"],
            &["vm", "run", ".", "--rm", "--", "make"],
            &["vm", "ssh", "dev"],
            &["vm", "cp", "./f", "dev:/root/"],
            &["vm", "proxy", "dev.vm", "22"],
            &["vm", "ports", "dev", "--json"],
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
            "create", "start", "stop", "kill", "delete", "list", "show", "logs", "exec", "run",
            "ssh", "cp", "proxy", "ports",
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
    fn vm_create_takes_the_config_defaults_under_its_flags() {
        let config = crate::config::Config::parse(
            "[vm]\ncpus = 4\nmemory = \"2GiB\"\nnet = \"none\"\n",
            std::path::Path::new("/c.toml"),
        )
        .expect("config");
        let VmCommand::Create(mut args) =
            parse(&["vm", "create", "dev", "--image", "i", "--cpus", "1"]).expect("parses")
        else {
            panic!("not create")
        };
        apply_config(&config, &mut args);
        let p = create::params(&args);
        assert_eq!(p.cpus, Some(1), "the flag wins");
        assert_eq!(p.memory_mib, Some(2048), "the file fills in");
        assert_eq!(p.net, Some(banger_api::vm::NetMode::None));
        assert_eq!(p.disk_bytes, None, "the daemon decides");
    }

    #[test]
    fn ready_time_comes_from_the_ready_stage() {
        let mut vm = testing::sample_vm();
        assert_eq!(ready_secs(&vm), Some(3.4));
        vm.stages.clear();
        assert_eq!(ready_secs(&vm), None);
    }
}
