//! `banger vm run [PATH] [--image IMG] [--rm] [-d] … [-- CMD…]`: flags and the config file
//! mapped onto [`banger_client::run`] (which pulls the daemon's default image, makes the VM,
//! copies the workspace at PATH to `/root/<dir name>`, and deletes a `--rm` VM), its
//! events rendered, then CMD run there (or a login shell) through the `vm exec` pump.
//! What PATH contributes: [`banger_client::workspace`].

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context as _;
use banger_api::vm::{Vm, VmCreateParams};
use banger_client::Client;
use banger_client::diff::Records;
use banger_client::run::{Interrupt, RunEvent, RunOptions};
use banger_client::workspace::{Workspace, workspace};
use clap::Args;

use crate::Context;
use crate::commands::vm::create::{InitArg, NetArg, VmmArg, parse_memory_mib};
use crate::commands::vm::exec::{self, ExecArgs};
use crate::config::{Config, VmDefaults, VmFlags};
use crate::progress::PullProgress;

/// The command of an interactive session: the guest's bash as a login shell when it has
/// one, else sh.
pub const LOGIN_SHELL: [&str; 3] = [
    "/bin/sh",
    "-c",
    "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi",
];

/// VM resources given as flags (they beat the config file's `[vm]`).
#[derive(Debug, Clone, Args)]
pub struct ResourceArgs {
    /// Virtual CPUs [default: config `vm.cpus`, else the daemon's: 2, or the host's core
    /// count if lower].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus: Option<u32>,
    /// Guest memory: 2GiB, 512MiB; a bare number is MiB [default: config `vm.memory`, else
    /// 1 GiB, at most half the host's RAM].
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_mib)]
    pub memory: Option<u64>,
    /// Apparent size of the root filesystem's copy-on-write disk (sparse) [default: config
    /// `vm.disk`, else 8 GiB].
    #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_size)]
    pub disk: Option<u64>,
    /// Apparent size of the work disk mounted at /root (sparse) [default: config
    /// `vm.work_disk`, else 8 GiB].
    #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_size)]
    pub work_disk: Option<u64>,
    /// Networking (see `banger vm create --help`): `public` (the internet and DNS, not the host, its LAN or link-local
    /// addresses), `host` (public plus the host's loopback at the gateway 10.0.2.2), `any`
    /// (whatever the host reaches) or `none` (no network device); enforced outside the
    /// guest [default: config `vm.net`, else public]. `user` is a deprecated `host`.
    #[arg(long, value_name = "MODE")]
    pub net: Option<NetArg>,
    /// Allow only these destinations (and DNS): a domain, an IP address or a CIDR, with an
    /// optional `:PORT`; a domain reaches only the addresses banger resolved for it at
    /// start. Repeatable; added to config `net.allow`.
    #[arg(long, value_name = "DEST")]
    pub allow: Vec<String>,
    /// Deny these destinations (same forms as --allow) whatever else allows them.
    /// Repeatable; added to config `net.deny`.
    #[arg(long, value_name = "DEST")]
    pub deny: Vec<String>,
    /// PID 1: `auto`, `agent` or `image` [default: config `vm.init`, else auto].
    #[arg(long, value_name = "MODE")]
    pub init: Option<InitArg>,
    /// With the image's own init: `sysinit`, `multi-user` or `none` (see `banger vm create
    /// --help`) [default: sysinit].
    #[arg(long, value_name = "STAGE")]
    pub ready: Option<super::create::ReadyArg>,
    /// The VMM: `firecracker`, `qemu` or `auto` (see `banger vm create --help`)
    /// [default: config `vm.vmm`, else auto].
    #[arg(long, value_name = "VMM")]
    pub vmm: Option<VmmArg>,
    /// An extra kernel command-line argument, appended after banger's own (a later
    /// `loglevel=` wins), e.g. `--kernel-arg earlyprintk=ttyS0`. Repeatable; `banger.*`
    /// and `init=` are banger's.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub kernel_args: Vec<String>,
}

impl ResourceArgs {
    pub fn flags(&self) -> VmFlags {
        VmFlags {
            cpus: self.cpus,
            memory_mib: self.memory,
            disk_bytes: self.disk,
            work_disk_bytes: self.work_disk,
            net: self.net,
            init: self.init,
            vmm: self.vmm,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A directory to copy into the VM as /root/<its name>; CMD then runs there.
    // Doc comment = clap help text, shown verbatim: not rustdoc markup.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Image to boot (name or id) [default: the daemon's config `default_image_name`,
    /// pulled from `default_image` with kernel `default_kernel` on first use].
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Fork this snapshot instead of booting an image (see `banger vm snapshot --help`):
    /// the VM goes on from the snapshot, with its CPUs, memory and disks.
    #[arg(long, value_name = "SNAP", conflicts_with_all = ["image", "cpus", "memory", "disk", "work_disk", "init", "vmm", "kernel_args"])]
    pub from: Option<String>,
    /// Name for the VM [default: the daemon picks <PATH's name, or "run">-<4 random hex
    /// digits>].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Delete the VM when done, whatever happened: the command failed, the copy failed,
    /// Ctrl-C, the VM stopped, or this CLI was killed or lost its output (the daemon holds
    /// a lease on this process's connection and deletes the VM when it goes).
    #[arg(long, conflicts_with = "detach")]
    pub rm: bool,
    /// Create the VM (and copy PATH in), print its name and leave it running; no command
    /// (run one later with `banger vm exec NAME -- …`).
    #[arg(long, short = 'd', conflicts_with = "command")]
    pub detach: bool,
    /// Publish a guest port on the host: `[IP:]HOST:GUEST[/tcp|udp]` (127.0.0.1 unless an
    /// IP is given). Repeatable.
    #[arg(long = "publish", short = 'p', value_name = "SPEC")]
    pub publish: Vec<String>,
    #[command(flatten)]
    pub resources: ResourceArgs,
    /// Boot, even when the image has a ready-snapshot for these settings (see `banger
    /// image warm --help`) [default: config `vm.warm`, else start warm when possible].
    #[arg(long, conflicts_with = "from")]
    pub cold: bool,
    /// Start warm when possible even if config `vm.warm` is false.
    #[arg(long, conflicts_with_all = ["from", "cold"])]
    pub warm: bool,
    /// After CMD, write the guest's changes to PATH's copy to FILE as a git patch (see
    /// `banger vm diff --help`), before --rm deletes the VM.
    #[arg(
        long,
        value_name = "FILE",
        requires = "path",
        conflicts_with = "detach"
    )]
    pub diff: Option<PathBuf>,
    /// Print what would be copied from PATH (sorted, one per line; directories end in /),
    /// with a count and the total size on stderr, and stop: no VM is made.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress (pull, boot stages) and no copy summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// The command and its arguments, after `--` [default: an interactive login shell].
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The `vm.create` params: flags over the config's `[vm]` over the daemon's defaults.
pub fn create_params(
    vm: &VmDefaults,
    publish: &[String],
    kernel_args: &[String],
) -> VmCreateParams {
    VmCreateParams {
        // Set by `banger_client::run`.
        name: String::new(),
        name_hint: None,
        image: String::new(),
        from: None,
        cpus: vm.cpus.as_ref().map(|s| s.value),
        memory_mib: vm.memory_mib.as_ref().map(|s| s.value),
        disk_bytes: vm.disk_bytes.as_ref().map(|s| s.value),
        work_disk_bytes: vm.work_disk_bytes.as_ref().map(|s| s.value),
        init: vm.init.as_ref().map(|s| s.value.choice()),
        no_start: false,
        channel: None,
        ready_timeout_secs: None,
        net: vm.net.as_ref().map(|s| s.value.mode()),
        net_from: vm.net.as_ref().map(|s| match &s.source {
            crate::config::Source::Flag => "--net".to_string(),
            other => format!("{other} [vm] net"),
        }),
        allow: Vec::new(),
        deny: Vec::new(),
        publish: publish.iter().map(|p| p.as_str().into()).collect(),
        vmm: vm.vmm.as_ref().map(|s| s.value.choice()),
        kernel_args: kernel_args.to_vec(),
        console_log_max: vm.console_log_max.as_ref().map(|s| s.value),
        ready: None,
        auto_remove: false,
        lease: None,
        warm: None,
    }
}

/// The exec that follows: CMD in the workspace (a pty when stdin is a terminal), or a login
/// shell (always a pty).
pub fn exec_args(
    vm: &str,
    workspace: Option<&str>,
    command: &[String],
    stdin_tty: bool,
) -> ExecArgs {
    let shell = command.is_empty();
    ExecArgs {
        vm: vm.to_string(),
        interactive: true,
        tty: shell || stdin_tty,
        env: Vec::new(),
        workdir: Some(match workspace {
            Some(name) => format!("/root/{name}"),
            None => "/root".to_string(),
        }),
        user: None,
        command: if shell {
            LOGIN_SHELL.iter().map(|s| s.to_string()).collect()
        } else {
            command.to_vec()
        },
    }
}

/// Prints the dry-run listing: paths on stdout, the summary on stderr.
fn print_dry_run(ws: Option<&Workspace>) {
    let Some(ws) = ws else {
        eprintln!("nothing to copy (no PATH given)");
        return;
    };
    let mut out = String::new();
    for line in ws.tree.listing() {
        out.push_str(&line);
        out.push('\n');
    }
    print!("{out}");
    eprintln!(
        "{} files, {} ({} bytes) would be copied to /root/{}{}",
        ws.tree.files(),
        crate::output::human_bytes(ws.tree.bytes()),
        ws.tree.bytes(),
        ws.name,
        if ws.git {
            " (git: tracked and untracked-not-ignored files, plus .git)"
        } else {
            ""
        }
    );
    if !ws.tree.skipped.is_empty() {
        eprintln!(
            "{} special files (sockets, fifos, devices) would be left out",
            ws.tree.skipped.len()
        );
    }
}

pub async fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<u8> {
    let config = Config::load()?;
    let ws = args.path.as_deref().map(workspace).transpose()?;
    if args.dry_run {
        print_dry_run(ws.as_ref());
        return Ok(0);
    }
    if let Some(name) = &args.name {
        banger_api::names::validate_name(name).map_err(|m| anyhow::anyhow!("--name: {m}"))?;
    }
    let client = ctx.client().await?;
    execute(
        ctx,
        &client,
        &args,
        &config,
        ws,
        async |client: &Client, exec: ExecArgs| exec::run(client, exec).await,
    )
    .await
}

/// The client's options from the flags over the config file's `[vm]`.
pub fn options(args: &RunArgs, config: &Config, ws: Option<Workspace>) -> RunOptions {
    let mut create = create_params(
        &config.vm_with_flags(&args.resources.flags()),
        &args.publish,
        &args.resources.kernel_args,
    );
    create.ready = args.resources.ready.map(|r| r.as_str().to_string());
    create.warm = super::create::warm_choice(args.cold, args.warm);
    if args.from.is_some() {
        // A fork has its snapshot's resources: the config's defaults do not apply.
        create.from = args.from.clone();
        (create.cpus, create.memory_mib) = (None, None);
        (create.disk_bytes, create.work_disk_bytes) = (None, None);
        (create.init, create.vmm) = (None, None);
        create.kernel_args.clear();
    }
    create.allow = [&config.net.allow[..], &args.resources.allow[..]].concat();
    create.deny = [&config.net.deny[..], &args.resources.deny[..]].concat();
    NetArg::warn_if_deprecated(
        args.resources
            .net
            .or(config.vm.net.as_ref().map(|s| s.value)),
    );
    RunOptions {
        image: args.image.clone(),
        name: args.name.clone(),
        rm: args.rm,
        workspace: ws,
        records: None,
        create,
    }
}

/// Everything after the daemon is reached; `run_exec` runs the final exec (the real
/// terminal pump, or a stand-in in tests).
pub async fn execute(
    ctx: &Context,
    client: &Client,
    args: &RunArgs,
    config: &Config,
    ws: Option<Workspace>,
    run_exec: impl AsyncFnOnce(&Client, ExecArgs) -> anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    let quiet = args.quiet || ctx.json;
    let ws_name = ws.as_ref().map(|w| w.name.clone());
    // A --rm VM's baseline is only wanted for --diff.
    let records = (ws.is_some() && (!args.rm || args.diff.is_some()))
        .then(|| Records::new(&ctx.layout.state_dir));
    // From here on Ctrl-C, SIGTERM and SIGHUP are ours: they cancel the step at hand, and
    // --rm still deletes the VM.
    let mut interrupts = Interrupts::install()?;
    let mut progress: Option<PullProgress> = None;
    let on_event = |event: RunEvent<'_>| render(&mut progress, quiet, event);
    let then = async |client: &Client, vm: &Vm| {
        if args.detach {
            println!("{}", vm.name);
            return Ok(0);
        }
        let exec = exec_args(
            &vm.name,
            ws_name.as_deref(),
            &args.command,
            std::io::stdin().is_terminal(),
        );
        let code = run_exec(client, exec).await?;
        if let (Some(file), Some(records)) = (&args.diff, &records) {
            super::diff::write_patch_file(client, records, &vm.name, file).await?;
        }
        Ok(code)
    };
    let mut options = options(args, config, ws);
    options.records = records.clone();
    Ok(banger_client::run::run(client, options, &mut interrupts, on_event, then).await?)
}

/// Progress and summary lines on stderr; failures to clean up always.
fn render(progress: &mut Option<PullProgress>, quiet: bool, event: RunEvent<'_>) {
    match event {
        RunEvent::PullingDefault(d) if !quiet => eprintln!(
            "no image {} yet: pulling {} with kernel {} (once)",
            d.image, d.image_ref, d.kernel
        ),
        RunEvent::Progress(e) => {
            if progress.is_none() {
                *progress = PullProgress::new(quiet);
            }
            if let Some(p) = progress.as_mut() {
                p.on_event(e);
            }
        }
        RunEvent::StepDone => {
            if let Some(mut p) = progress.take() {
                p.finish();
            }
        }
        RunEvent::Running(vm) if !quiet => {
            let ready = super::ready_secs(vm)
                .map(|s| format!(", ready in {s:.1}s"))
                .unwrap_or_default();
            eprintln!("vm {} is running (image {}{ready})", vm.name, vm.image);
        }
        RunEvent::Copied {
            files,
            bytes,
            elapsed,
            name,
        } if !quiet => eprintln!("{}", copy_line(files, bytes, elapsed, name)),
        RunEvent::NotRecorded { error } => eprintln!(
            "banger: `banger vm diff` will not work for this vm: recording the workspace failed: {}",
            banger_api::text::visible(&error)
        ),
        RunEvent::Kept { name } => eprintln!(
            "banger: vm {name} is kept (see `banger vm logs {name}`); `banger vm delete --force {name}` removes it"
        ),
        RunEvent::DeleteFailed { name, error } => eprintln!(
            "banger: could not delete vm {name}: {error}; delete it with `banger vm delete --force {name}`"
        ),
        _ => {}
    }
}

/// `copied 1234 files (56.7 MiB) to /root/app in 2.1s: 27.0 MiB/s`.
pub fn copy_line(files: u64, bytes: u64, elapsed: std::time::Duration, name: &str) -> String {
    let mib = bytes as f64 / (1u64 << 20) as f64;
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!(
        "copied {files} files ({mib:.1} MiB) to /root/{name} in {secs:.1}s: {:.1} MiB/s",
        mib / secs
    )
}

/// SIGINT, SIGTERM and SIGHUP, caught for the whole run so that none kills banger before
/// `--rm` has cleaned up. While the command runs, `vm exec`'s own handlers pass them on
/// to it instead.
pub struct Interrupts {
    signals: Vec<tokio::signal::unix::Signal>,
}

impl Interrupts {
    pub fn install() -> anyhow::Result<Interrupts> {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ]
        .into_iter()
        .map(signal)
        .collect::<Result<Vec<_>, _>>()
        .context("installing signal handlers")?;
        Ok(Interrupts { signals })
    }
}

impl Interrupt for Interrupts {
    fn interrupted(&mut self) -> impl std::future::Future<Output = ()> {
        std::future::poll_fn(|cx| {
            for s in self.signals.iter_mut() {
                if s.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};
    use crate::commands::vm::VmCommand;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = ["banger", "vm", "run"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Vm(VmCommand::Run(a)) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_and_the_command_parse() {
        let a = parse(&[]).expect("bare");
        assert!(a.path.is_none() && a.command.is_empty() && !a.rm);
        let a = parse(&["--", "sh", "-c", "exit 7"]).expect("cmd");
        assert!(a.path.is_none());
        assert_eq!(a.command, ["sh", "-c", "exit 7"]);
        let a = parse(&[
            "~/src/app",
            "--image",
            "dev",
            "--rm",
            "-p",
            "8080:80",
            "-p",
            "53:53/udp",
            "--net",
            "none",
            "--cpus",
            "2",
            "--memory",
            "2GiB",
            "--disk",
            "20G",
            "--",
            "make",
            "-j2",
            "test",
        ])
        .expect("all");
        assert_eq!(a.path.as_deref(), Some(Path::new("~/src/app")));
        assert_eq!(a.image.as_deref(), Some("dev"));
        assert_eq!(a.publish, ["8080:80", "53:53/udp"]);
        assert_eq!(a.resources.net, Some(NetArg::None));
        assert_eq!(a.resources.memory, Some(2048));
        assert_eq!(a.command, ["make", "-j2", "test"]);
        assert!(
            parse(&["-d", "--rm"]).is_err(),
            "-d leaves the VM; --rm deletes it"
        );
        assert!(parse(&["-d", "--", "true"]).is_err(), "-d takes no command");
        assert!(parse(&["-d", "."]).is_ok());
        assert!(parse(&["--cpus", "0"]).is_err());
        let a = parse(&[".", "--rm", "--diff", "out.patch", "--", "make"]).expect("--diff");
        assert_eq!(a.diff.as_deref(), Some(Path::new("out.patch")));
        assert!(
            parse(&["--diff", "p", "--", "true"]).is_err(),
            "--diff needs PATH"
        );
    }

    #[test]
    fn flags_beat_the_config_in_create_params() {
        let config = Config::parse(
            "[vm]\ncpus = 4\nmemory = \"2GiB\"\nnet = \"none\"\nvmm = \"qemu\"\n",
            Path::new("/c"),
        )
        .expect("config");
        let a = parse(&["--cpus", "1", "-p", "8080:80", "--kernel-arg", "quiet"]).expect("parses");
        let p = create_params(
            &config.vm_with_flags(&a.resources.flags()),
            &a.publish,
            &a.resources.kernel_args,
        );
        assert_eq!(p.cpus, Some(1), "flag");
        assert_eq!(p.memory_mib, Some(2048), "file");
        assert_eq!(p.net, Some(banger_api::vm::NetMode::None), "file");
        assert_eq!(p.disk_bytes, None, "daemon");
        assert_eq!(p.publish, [banger_api::vm::PortSpec::from("8080:80")]);
        assert_eq!(p.vmm, Some(banger_api::vm::VmmChoice::Qemu), "file");
        assert_eq!(p.kernel_args, ["quiet"], "flag");
        assert!(!p.no_start);
        let a = parse(&["--vmm", "firecracker"]).expect("parses");
        let p = create_params(
            &config.vm_with_flags(&a.resources.flags()),
            &a.publish,
            &a.resources.kernel_args,
        );
        assert_eq!(
            p.vmm,
            Some(banger_api::vm::VmmChoice::Firecracker),
            "the flag beats the file"
        );
    }

    #[test]
    fn the_exec_runs_in_the_workspace_or_opens_a_shell() {
        let e = exec_args("vm1", Some("app"), &["make".into()], false);
        assert_eq!(e.workdir.as_deref(), Some("/root/app"));
        assert_eq!(e.command, ["make"]);
        assert!(e.interactive && !e.tty, "no terminal: no pty");
        assert!(exec_args("vm1", None, &["make".into()], true).tty);
        let e = exec_args("vm1", None, &[], false);
        assert_eq!(e.workdir.as_deref(), Some("/root"));
        assert_eq!(e.command, LOGIN_SHELL);
        assert!(e.tty, "a shell always gets a pty");
    }
}
