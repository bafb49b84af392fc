//! `banger vm create NAME --image IMG …`

use banger_api::methods;
use banger_api::vm::{ChannelChoice, InitChoice, NetMode, Vm, VmCreateParams, VmState, VmmChoice};
use clap::{Args, ValueEnum};

use crate::Context;
use crate::commands::with_progress;
use crate::output;
use banger_client::Client;

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name for the VM, also its hostname: lower-case letters, digits, '.', '_' and '-'
    /// (max 64).
    pub name: String,
    /// Image to boot (name or id; see `banger image list`).
    #[arg(long, value_name = "IMAGE", required_unless_present = "from")]
    pub image: Option<String>,
    /// Fork a snapshot instead of booting an image: the VM goes on from the snapshot's
    /// memory and disks, with its own name, randomness and agent secret (see `banger vm
    /// snapshot --help`). Its CPUs, memory and disks are the snapshot's.
    #[arg(long, value_name = "SNAP", conflicts_with_all = ["image", "cpus", "memory", "disk", "work_disk", "init", "channel", "vmm", "kernel_args"])]
    pub from: Option<String>,
    /// Virtual CPUs [default: 2, or the host's core count if lower].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus: Option<u32>,
    /// Guest memory: 2GiB, 512MiB, 1.5G; a bare number is MiB; rounded down to whole MiB
    /// [default: 1 GiB, at most half the host's RAM].
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_mib)]
    pub memory: Option<u64>,
    /// Apparent size of the root filesystem's copy-on-write disk, i.e. how much the guest
    /// may add to or change under / (sparse: only written blocks take host space)
    /// [default: 8 GiB].
    #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_size)]
    pub disk: Option<u64>,
    /// Apparent size of the work disk mounted at /root, kept across stop/start and
    /// seeded with the image's /root (sparse) [default: 8 GiB].
    #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_size)]
    pub work_disk: Option<u64>,
    /// Who runs as PID 1: `agent` (banger's agent; right for container images), `image`
    /// (the image's own /sbin/init, e.g. systemd, with the agent as a service), or `auto`
    /// (`image` when the image has an executable /sbin/init) [default: auto].
    #[arg(long, value_name = "MODE")]
    pub init: Option<InitArg>,
    /// With the image's own init (systemd): how far its boot must be before commands run:
    /// `sysinit` (devices, tmpfiles, mounts: what `apt-get` needs), `multi-user` (every
    /// enabled service, e.g. sshd or docker), or `none` [default: sysinit].
    #[arg(long, value_name = "STAGE")]
    pub ready: Option<ReadyArg>,
    /// Only make the VM (disks and record); boot it later with `banger vm start`.
    #[arg(long)]
    pub no_start: bool,
    /// Delete the VM when it stops, whatever stops it: `banger vm stop` or `vm kill`, the
    /// guest powering off, its VMM dying, a failed boot. The daemon does it, with or
    /// without this CLI.
    #[arg(long)]
    pub rm: bool,
    /// The host↔agent channel: `vsock`, or `serial` (virtio-serial; with QEMU, the one
    /// that snapshots work with) [default: vsock when the host has the helper].
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<ChannelArg>,
    /// Seconds the guest gets to report ready before the start counts as failed
    /// [default: 30 with KVM, 120 under software emulation].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub ready_timeout: Option<u64>,
    /// Networking: `public` (the internet and DNS, not the host, its LAN or link-local
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
    /// Where `net` came from (filled from the config file by `apply_config`).
    #[arg(skip)]
    pub net_from: Option<String>,
    /// Publish a guest port on the host: `[IP:]HOST:GUEST[/tcp|udp]`, e.g. `-p 8080:80`.
    /// Bound to 127.0.0.1 unless an IP is given; a taken host port is refused before boot.
    /// Repeatable.
    #[arg(long = "publish", short = 'p', value_name = "SPEC")]
    pub publish: Vec<String>,
    /// The VMM: `firecracker` (fastest; needs KVM that really runs guests), `qemu` (runs
    /// everywhere, software emulation without KVM), or `auto` (Firecracker when installed
    /// and a probe guest proved KVM, else QEMU; `vm show` says why) [default: auto].
    #[arg(long, value_name = "VMM")]
    pub vmm: Option<VmmArg>,
    /// An extra kernel command-line argument, appended after banger's own (a later
    /// `loglevel=` wins), e.g. `--kernel-arg earlyprintk=ttyS0`. Repeatable; `banger.*`
    /// and `init=` are banger's.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub kernel_args: Vec<String>,
    /// Serial console output kept on the host (`vm logs`), the newest: 64KiB to 256MiB
    /// [default: 8 MiB; config file: `[vm] console_log_max`].
    #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_size)]
    pub console_log_max: Option<u64>,
    /// Boot, even when the image has a ready-snapshot for these settings. Without it, a
    /// VM whose VMM can snapshot it (QEMU: on the serial channel, which `auto` then picks)
    /// goes on from the image's ready-snapshot when there is one, in a fraction of a boot,
    /// and the first cold boot has one made in the background (see `banger image warm
    /// --help`) [default: config `vm.warm`, else warm when possible].
    #[arg(long, conflicts_with = "from")]
    pub cold: bool,
    /// Start warm when possible even if config `vm.warm` is false.
    #[arg(long, conflicts_with_all = ["from", "cold"])]
    pub warm: bool,
    /// No progress output (the boot stages).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmmArg {
    Auto,
    Qemu,
    Firecracker,
}

impl VmmArg {
    pub fn choice(self) -> VmmChoice {
        match self {
            VmmArg::Auto => VmmChoice::Auto,
            VmmArg::Qemu => VmmChoice::Qemu,
            VmmArg::Firecracker => VmmChoice::Firecracker,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VmmArg::Auto => "auto",
            VmmArg::Qemu => "qemu",
            VmmArg::Firecracker => "firecracker",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetArg {
    Public,
    Host,
    Any,
    None,
    /// Deprecated: `host`.
    #[value(hide = true)]
    User,
}

impl NetArg {
    pub fn as_str(self) -> &'static str {
        self.mode().as_str()
    }

    pub fn mode(self) -> NetMode {
        match self {
            NetArg::Public => NetMode::Public,
            NetArg::Host | NetArg::User => NetMode::Host,
            NetArg::Any => NetMode::Any,
            NetArg::None => NetMode::None,
        }
    }

    /// Prints the deprecation notice of `user`.
    pub fn warn_if_deprecated(net: Option<NetArg>) {
        if net == Some(NetArg::User) {
            eprintln!("{}", banger_api::vm::USER_DEPRECATED);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    Auto,
    Agent,
    Image,
}

impl InitArg {
    pub fn choice(self) -> InitChoice {
        match self {
            InitArg::Auto => InitChoice::Auto,
            InitArg::Agent => InitChoice::Agent,
            InitArg::Image => InitChoice::Image,
        }
    }
}

/// `--ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadyArg {
    None,
    Sysinit,
    MultiUser,
}

impl ReadyArg {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadyArg::None => "none",
            ReadyArg::Sysinit => "sysinit",
            ReadyArg::MultiUser => "multi-user",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChannelArg {
    Auto,
    Vsock,
    Serial,
}

impl ChannelArg {
    fn choice(self) -> ChannelChoice {
        match self {
            ChannelArg::Auto => ChannelChoice::Auto,
            ChannelArg::Vsock => ChannelChoice::Vsock,
            ChannelArg::Serial => ChannelChoice::Serial,
        }
    }
}

/// `--memory`: a size (bare numbers are MiB, as everywhere) in whole MiB, as the wire wants.
pub fn parse_memory_mib(text: &str) -> Result<u64, String> {
    let bytes = crate::size::parse_size(text)?;
    let mib = bytes >> 20;
    if mib == 0 {
        return Err(format!("memory {text:?} is less than 1 MiB"));
    }
    Ok(mib)
}

pub fn params(args: &CreateArgs) -> VmCreateParams {
    VmCreateParams {
        name_hint: None,
        name: args.name.clone(),
        image: args.image.clone().unwrap_or_default(),
        from: args.from.clone(),
        cpus: args.cpus,
        memory_mib: args.memory,
        disk_bytes: args.disk,
        work_disk_bytes: args.work_disk,
        init: args.init.map(InitArg::choice),
        no_start: args.no_start,
        channel: args.channel.map(ChannelArg::choice),
        ready_timeout_secs: args.ready_timeout,
        net: args.net.map(NetArg::mode),
        net_from: args
            .net_from
            .clone()
            .or_else(|| args.net.map(|_| "--net".to_string())),
        allow: args.allow.clone(),
        deny: args.deny.clone(),
        publish: args.publish.iter().map(|p| p.as_str().into()).collect(),
        vmm: args.vmm.map(VmmArg::choice),
        kernel_args: args.kernel_args.clone(),
        console_log_max: args.console_log_max,
        ready: args.ready.map(|r| r.as_str().to_string()),
        auto_remove: args.rm,
        lease: None,
        warm: warm_choice(args.cold, args.warm),
    }
}

/// `--cold` / `--warm` as the wire's `warm` (neither: the daemon's config decides).
pub fn warm_choice(cold: bool, warm: bool) -> Option<bool> {
    match (cold, warm) {
        (true, _) => Some(false),
        (false, true) => Some(true),
        (false, false) => None,
    }
}

pub async fn run(ctx: &Context, client: &Client, args: CreateArgs) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    NetArg::warn_if_deprecated(args.net);
    let vm: Vm = with_progress::<methods::vm::Create>(
        client,
        &params(&args),
        args.quiet || ctx.json,
        "the daemon discards the half-made VM",
    )
    .await?;
    if ctx.json {
        output::print_json(&vm)?;
    } else {
        println!("{}", summary(&vm, started.elapsed().as_secs_f64()));
    }
    Ok(0)
}

/// `created vm dev (running, ready in 3.4s)`; `elapsed` stands in when the daemon
/// reported no `ready` stage.
pub fn summary(vm: &Vm, elapsed: f64) -> String {
    match vm.state {
        VmState::Running => {
            let ready = super::ready_secs(vm).unwrap_or(elapsed);
            format!("created vm {} (running, ready in {ready:.1}s)", vm.name)
        }
        VmState::Created => format!(
            "created vm {} (not started; boot it with: banger vm start {})",
            vm.name, vm.name
        ),
        other => format!("created vm {} ({})", vm.name, other.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};
    use crate::commands::vm::VmCommand;
    use crate::commands::vm::testing::sample_vm;

    fn parse(args: &[&str]) -> Result<CreateArgs, clap::Error> {
        let argv = ["banger", "vm", "create"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Vm(VmCommand::Create(a)) => Ok(a),
            other => panic!("not vm create: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_left_to_the_daemon() {
        let a = parse(&["dev", "--image", "debian-bookworm"]).expect("parses");
        let p = params(&a);
        assert_eq!(p.name, "dev");
        assert_eq!(p.image, "debian-bookworm");
        assert_eq!(
            (p.cpus, p.memory_mib, p.disk_bytes, p.work_disk_bytes),
            (None, None, None, None)
        );
        assert_eq!(
            (p.init, p.channel, p.ready_timeout_secs),
            (None, None, None)
        );
        assert!(!p.no_start && !a.quiet);
    }

    #[test]
    fn sizes_and_modes_reach_the_wire() {
        let a = parse(&[
            "dev",
            "--image",
            "img",
            "--cpus",
            "4",
            "--memory",
            "2GiB",
            "--disk",
            "20GiB",
            "--work-disk",
            "512",
            "--init",
            "image",
            "--no-start",
            "--channel",
            "serial",
            "--ready-timeout",
            "300",
            "-q",
        ])
        .expect("parses");
        let p = params(&a);
        assert_eq!(p.cpus, Some(4));
        assert_eq!(p.memory_mib, Some(2048));
        assert_eq!(p.disk_bytes, Some(20 << 30));
        assert_eq!(p.work_disk_bytes, Some(512 << 20), "a bare number is MiB");
        assert_eq!(p.init, Some(InitChoice::Image));
        assert_eq!(p.channel, Some(ChannelChoice::Serial));
        assert_eq!(p.ready_timeout_secs, Some(300));
        assert!(p.no_start && a.quiet);
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &["dev", "--image", "i", "--cpus", "0"][..],
            &["dev", "--image", "i", "--memory", "lots"],
            &["dev", "--image", "i", "--memory", "100K"],
            &["dev", "--image", "i", "--disk", "4 parsecs"],
            &["dev", "--image", "i", "--init", "systemd"],
            &["dev", "--image", "i", "--channel", "tcp"],
            &["dev", "--image", "i", "--ready-timeout", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory_is_whole_mib() {
        assert_eq!(parse_memory_mib("1.5G"), Ok(1536));
        assert_eq!(parse_memory_mib("1000"), Ok(1000));
        assert_eq!(
            parse_memory_mib("2GB"),
            Ok(1907),
            "decimal units round down"
        );
        assert!(parse_memory_mib("512K").is_err());
    }

    #[test]
    fn the_summary_says_state_and_ready_time() {
        let mut vm = sample_vm();
        assert_eq!(summary(&vm, 9.9), "created vm dev (running, ready in 3.4s)");
        vm.stages.clear();
        assert_eq!(
            summary(&vm, 5.04),
            "created vm dev (running, ready in 5.0s)"
        );
        vm.state = VmState::Created;
        assert_eq!(
            summary(&vm, 0.1),
            "created vm dev (not started; boot it with: banger vm start dev)"
        );
    }
}
