//! The command line, as clap types. Help texts are the user manual: keep them teaching.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// banger turns OCI/Docker images into bootable microVM images and runs disposable
/// sandboxes from them. The CLI talks to the `bangerd` daemon over a Unix socket and
/// starts it when needed.
#[derive(Debug, Parser)]
#[command(
    name = "banger",
    version,
    after_help = "Examples:\n  banger vm run ~/src/app -- make test\n  banger vm run --rm -- uname -a\n  banger image register --name dev --rootfs ./rootfs.ext4 --kernel ./vmlinux\n  banger image list\n  banger image show dev --json\n  banger vm create dev --image debian-bookworm --memory 2GiB\n  banger vm exec dev -- uname -a\n  banger vm exec -it dev -- bash\n  banger vm list\n  banger doctor"
)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// State directory: database, images, kernels, daemon log [default: $XDG_STATE_HOME/banger].
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Cache directory: downloaded image layers [default: $XDG_CACHE_HOME/banger].
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Runtime directory: the daemon's socket [default: $XDG_RUNTIME_DIR/banger]. A daemon
    /// the CLI starts gets the same three directories.
    #[arg(long, global = true, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    // Doc comment = clap help text, shown verbatim: not rustdoc markup.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Drive the daemon on another host: ssh://[user@]host[:port]. Every command goes
    /// through `ssh HOST banger daemon dial-stdio` (your OpenSSH config, keys and agent);
    /// local paths (`vm run PATH`, `vm cp`) stay on this machine. Also $BANGER_HOST, or
    /// `host = "…"` in the config file. Given before the command: `banger --host URL vm list`.
    #[arg(long, value_name = "URL", env = "BANGER_HOST")]
    pub host: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage images (root filesystem + kernel sets that VMs boot from).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage kernels (the kernel store that `--kernel-ref NAME` refers to).
    #[command(subcommand)]
    Kernel(crate::commands::kernel::KernelCommand),
    /// Create, run and inspect microVMs booted from images; run commands in them.
    #[command(subcommand)]
    Vm(crate::commands::vm::VmCommand),
    /// Snapshots of VMs (`banger vm snapshot` takes them): list, show, delete.
    #[command(subcommand)]
    Snapshot(crate::commands::snapshot::SnapshotCommand),
    /// Start, stop or inspect the bangerd daemon, or run it as a systemd service.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// The CLI's configuration file (default image and kernel, VM defaults).
    #[command(subcommand)]
    Config(crate::commands::config::ConfigCommand),
    /// Set up real OpenSSH for VMs: `ssh NAME.vm` through banger's agent channel, with
    /// banger's own key and known_hosts.
    #[command(
        name = "ssh-config",
        after_help = "Writes $XDG_CONFIG_HOME/banger/ssh_config (Host *.vm, ProxyCommand banger vm proxy %h %p,\nbanger's key and known_hosts, strict host key checking). --install adds one Include\nline for it at the top of ~/.ssh/config; --uninstall removes it. Run it again after\nmoving the banger binary.\n\nExamples:\n  banger ssh-config --install && ssh dev.vm\n  banger ssh-config --print\n  scp ./file dev.vm:/root/\n  banger ssh-config --uninstall"
    )]
    SshConfig(crate::commands::ssh_config::SshConfigArgs),
    /// Serve the Model Context Protocol on stdin/stdout, for AI agents: tools to create
    /// sandboxes (with a workspace copied in), run commands, read, write and list files,
    /// list, show and delete sandboxes. An MCP client starts it; only JSON-RPC goes to
    /// stdout.
    #[command(
        after_help = "Setup:\n  claude mcp add banger -- banger mcp\n\nOther clients (Claude Desktop, Cursor, …) take a JSON config block:\n  {\"mcpServers\": {\"banger\": {\"command\": \"banger\", \"args\": [\"mcp\"]}}}\n\nSandboxes made through MCP are ordinary VMs: `banger vm list` shows them and\n`banger vm delete --force NAME` removes one a crashed agent left. New sandboxes take\nthe config file's [vm] and [net] settings."
    )]
    Mcp(crate::commands::mcp::McpArgs),
    /// Serve E2B's sandbox API on a local port, so the unchanged E2B SDKs (and the agent
    /// frameworks built on them) create and drive banger sandboxes: commands, files,
    /// timeouts, pause and resume. Runs in the foreground; its sandboxes go with it.
    #[command(
        after_help = "Point the E2B SDK at it:\n  banger serve --api-key KEY &\n  export E2B_API_URL=http://127.0.0.1:3000 E2B_SANDBOX_URL=http://127.0.0.1:3000 E2B_API_KEY=KEY\n  python3 -c 'from e2b import Sandbox; print(Sandbox.create(template=\"base\").commands.run(\"uname -a\").stdout)'\n\nA template is a banger image name, an image reference pulled on first use\n(debian:bookworm), or `base` (the default image). Sandboxes are ordinary VMs (`banger vm\nlist` shows them) made with the config file's [vm] and [net] settings, and removed\nwhen they time out or when the server stops. Not implemented: file metadata,\nlogs, E2B's snapshot calls, template builds, a sandbox's own ports."
    )]
    Serve(crate::commands::serve::ServeArgs),
    /// Print the CLI's and the daemon's versions.
    Version,
    /// Check this machine for what banger needs, and say how to fix what is missing.
    Doctor,
    /// Print a shell completion script.
    #[command(
        after_help = "Install, e.g.:\n  banger completions bash > ~/.local/share/bash-completion/completions/banger\n  banger completions zsh > \"${fpath[1]}/_banger\"\n  banger completions fish > ~/.config/fish/completions/banger.fish"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an OCI/Docker image and turn it into a bootable image (ext4 rootfs + kernel).
    #[command(
        after_help = "REF forms:\n  debian:bookworm                      Docker Hub (docker.io/library/debian:bookworm)\n  ghcr.io/org/app:v2.1                 any registry\n  localhost:5000/app@sha256:<hex>      pinned by digest (plain HTTP on loopback)\n  oci:/path/to/layout[:tag]            an OCI layout directory\n  oci-archive:/path/to/image.tar       an OCI layout tarball\n  docker-archive:/path/to/save.tar     `docker save` output (one image)\n  docker-archive:/path/save.tar:app:v1 one image of several, by tag (or :@INDEX)\n\nExamples:\n  banger image pull debian:bookworm --kernel ./vmlinux\n  banger image pull alpine:3.20 --name tiny --kernel-ref cloud --size 2GiB\n  banger image pull ghcr.io/org/dev:latest --platform linux/arm64 --kernel ./Image.gz\n\nCredentials come from ~/.docker/config.json (auths, credsStore, credHelpers).\nCtrl-C cancels the pull; nothing half-made is kept."
    )]
    Pull(PullArgs),
    /// Register files you already have as an image (they stay where they are; deleting
    /// the image later removes only the record).
    #[command(
        after_help = "Example:\n  banger image register --name dev --rootfs ./rootfs.ext4 --kernel ./vmlinux --initrd ./initrd.img"
    )]
    Register(RegisterArgs),
    /// List images.
    #[command(alias = "ls")]
    List,
    /// Manage the download cache of image layers.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Show one image in detail.
    Show {
        /// Image name or id.
        image: String,
    },
    /// Delete an image (a managed image's files are removed; a registered image's files
    /// are left alone), with its ready-snapshots.
    #[command(alias = "rm")]
    Delete {
        /// Image name or id.
        image: String,
    },
    /// Make the image's ready-snapshot now, for VMs with these settings: `vm run` and
    /// `vm create` then start from it (a warm start) instead of booting.
    #[command(
        after_help = "A ready-snapshot is the memory, devices and disks of a VM of the image that has just
become ready (systemd images: sysinit.target reached), taken by a VM banger boots for it
and deletes. A warm start forks it: the new VM gets its own name, hostname, randomness,
agent secret, clock and SSH host keys, and disks of its own.

It is made anyway, in the background, after the first cold start with given settings.
It is found again only by VMs with the same settings (image, kernel, agent, VMM, CPUs,
memory, disks, init, --ready, network or not, kernel arguments); anything else boots
cold. `vm run --cold` and config `[vm] warm = false` skip it. Ready-snapshots are listed
by `banger snapshot list` and deleted with their image.

Examples:
  banger image warm dev
  banger image warm dev --cpus 1 --memory 512MiB --net none"
    )]
    Warm(WarmArgs),
}

#[derive(Debug, Args)]
pub struct WarmArgs {
    /// Image name or id.
    pub image: String,
    /// The VMs' settings (as `vm run` takes them; config `[vm]` defaults apply the same way).
    #[command(flatten)]
    pub resources: crate::commands::vm::run::ResourceArgs,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove cached layer blobs. Pulled images keep working: they never read the cache
    /// again; only future pulls of the same layers download them anew.
    Prune {
        /// Report what would be freed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference or local source (see below).
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Name for the image [default: derived from REF, e.g. debian:bookworm → debian-bookworm].
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Root filesystem size: 4GiB, 512MiB, 2G; a bare number is MiB
    /// [default: content × 1.25, at least 1 GiB].
    #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_size)]
    pub size: Option<u64>,
    /// Platform to pick from a multi-platform image: os/arch[/variant]. The kernel must be
    /// built for the same architecture.
    #[arg(long, value_name = "OS/ARCH", default_value = "linux/amd64")]
    pub platform: String,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Name for the image: lower-case letters, digits, '.', '_' and '-' (max 64).
    #[arg(long)]
    pub name: String,
    /// Root filesystem image (ext4).
    #[arg(long, value_name = "PATH")]
    pub rootfs: PathBuf,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

/// Kernel selection shared by the commands that create images. Not a required clap group:
/// the daemon owns that policy and explains it (one message for CLI and API users).
#[derive(Debug, Args)]
pub struct KernelArgs {
    /// Guest kernel (vmlinux for Firecracker, vmlinux or bzImage for QEMU).
    #[arg(long, value_name = "PATH", conflicts_with = "kernel_ref")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for the kernel.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel modules tree (the contents of /lib/modules/<version>).
    // Doc comment = clap help text, shown verbatim: not rustdoc markup.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long, value_name = "DIR", requires = "kernel")]
    pub modules: Option<PathBuf>,
    /// Use a kernel from the kernel store instead of paths (see `banger kernel list`).
    #[arg(long, value_name = "NAME")]
    pub kernel_ref: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Is the daemon running? Exit status 0 if so, 3 if not.
    Status,
    /// Bridge stdin/stdout to this machine's daemon (starting it when needed): what
    /// `banger --host ssh://HOST` runs on HOST through ssh. Not for a terminal.
    #[command(
        name = "dial-stdio",
        after_help = "Run by `banger --host ssh://…` as `ssh HOST banger daemon dial-stdio`; each run carries one\nconnection. To restrict an ssh key to banger alone, in ~/.ssh/authorized_keys on HOST:\n  restrict,command=\"banger daemon dial-stdio\" ssh-ed25519 AAAA… you@laptop"
    )]
    DialStdio {
        /// Do not start the daemon: exit with status 3 when none runs.
        #[arg(long)]
        no_start: bool,
    },
    /// Start the daemon in the background (commands also start it on demand).
    Start,
    /// Stop the daemon gracefully (in-flight requests finish first).
    Stop,
    /// Run bangerd as a systemd service: write its unit, enable and start it.
    #[command(
        after_help = "The user unit (default) is $XDG_CONFIG_HOME/systemd/user/bangerd.service: bangerd runs\nas you, with this CLI's directories, so every banger command finds it. Without\n`loginctl enable-linger $USER` your user manager, and the daemon, stop when you log out\nand do not start at boot.\n\nThe system unit (--system, as root) is /etc/systemd/system/bangerd.service: bangerd runs\nas root (it needs root for its network namespaces and taps), with /var/lib/banger,\n/var/cache/banger and /run/banger. Reach it as root (`banger --runtime-dir /run/banger\nvm list`) or through ssh://root@host.\n\nA daemon the CLI started on demand holds the instance lock the unit's daemon needs:\ninstall stops it first (its VMs keep running; the unit's daemon adopts them). Stopping\nor restarting the service leaves VMs running too (KillMode=process).\n\nExamples:\n  banger daemon install && loginctl enable-linger \"$USER\"\n  banger daemon install --print          # the unit, written nowhere\n  sudo banger daemon install --system\n  banger daemon install --no-start  # then: systemctl --user daemon-reload &&\n                                    #   systemctl --user enable --now bangerd.service"
    )]
    Install {
        /// The system-wide unit (root only): bangerd as root, for the whole machine.
        #[arg(long)]
        system: bool,
        /// Print the unit on stdout; write nothing, start nothing.
        #[arg(long)]
        print: bool,
        /// Write the unit but do not run `systemctl daemon-reload` and `enable --now`.
        #[arg(long, conflicts_with = "print")]
        no_start: bool,
    },
    /// Stop, disable and remove the unit `daemon install` wrote (VMs keep running).
    #[command(
        after_help = "Runs `systemctl [--user] disable --now bangerd.service`, removes the unit file and\nreloads systemd; without systemd it removes the file and says so. A second run has\nnothing to remove and exits 0. Afterwards banger commands start bangerd on demand again.\n\nExamples:\n  banger daemon uninstall\n  sudo banger daemon uninstall --system"
    )]
    Uninstall {
        /// The system-wide unit (root only).
        #[arg(long)]
        system: bool,
    },
}
