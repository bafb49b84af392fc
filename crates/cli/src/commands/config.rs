//! `banger config show`: the effective configuration and where each value came from.

use clap::Subcommand;

use crate::Context;
use crate::commands::vm::run::ResourceArgs;
use crate::config::Config;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every configuration key with its effective value and its source: `default`,
    /// `config file <path>` or `flag` (the VM flags below show what a `banger vm run` with
    /// them would use).
    #[command(after_help = KEYS_HELP)]
    Show(ShowArgs),
    /// Print the path of the configuration file (whether it exists or not).
    #[command(after_help = "Example:\n  $EDITOR \"$(banger config path)\"")]
    Path,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub resources: ResourceArgs,
}

pub const KEYS_HELP: &str = "\
The file: $XDG_CONFIG_HOME/banger/config.toml (default ~/.config/banger/config.toml);
$BANGER_CONFIG names another. A missing file means all defaults. An unknown key or a bad
value is an error naming the key and the file. Flags beat the file, which beats defaults.

Keys:
  default_image       image reference `vm run` boots without --image; pulled on first use
                      [default: debian:bookworm]
  default_image_name  its local name, looked up before pulling [default: derived from
                      default_image like `image pull` does: debian:bookworm → debian-bookworm]
  default_kernel      kernel store name used as --kernel-ref when pulling the default image
                      [default: default]
  [vm]                defaults for `vm run` and `vm create` (unset: the daemon decides)
  cpus                virtual CPUs, a whole number >= 1
  memory              guest memory: \"2GiB\", \"512MiB\", or a number of MiB
  disk                apparent size of the copy-on-write root disk, e.g. \"20GiB\"
  work_disk           apparent size of the work disk mounted at /root
  net                 \"user\" (rootless NAT, DNS, published ports) or \"none\"
  init                \"auto\", \"agent\" or \"image\" (who runs as PID 1)
  vmm                 \"auto\", \"qemu\" or \"firecracker\" (see `banger vm create --help`)
  [daemon]            how bangerd runs VMs; read by bangerd itself when it starts, however
                      it is started (its flags win; `banger daemon stop` to apply a change)
  firecracker         absolute path of the Firecracker binary [default: $BANGER_FIRECRACKER,
                      then PATH]
  accel               \"auto\" (probe KVM), \"kvm\" (trust /dev/kvm, no probe) or \"tcg\"
  jailer              absolute path of Firecracker's jailer: Firecracker VMs run jailed
                      (bangerd as root only) [default: none]

Example config.toml:
  default_image = \"alpine:3.20\"
  default_kernel = \"cloud\"
  [vm]
  cpus = 2
  memory = \"2GiB\"
  net = \"user\"

Examples:
  banger config show
  banger config show --json | jq -r '.[] | select(.source != \"default\") | .key'
  banger config show --cpus 4      # what `banger vm run --cpus 4` would use";

pub async fn run(ctx: &Context, command: ConfigCommand) -> anyhow::Result<u8> {
    match command {
        ConfigCommand::Path => {
            println!("{}", crate::config::config_path().display());
            Ok(0)
        }
        ConfigCommand::Show(args) => {
            let config = Config::load()?;
            let rows = config.rows(&args.resources.flags());
            if ctx.json {
                output::print_json(&rows)?;
                return Ok(0);
            }
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| vec![r.key.clone(), r.display.clone(), r.source.to_string()])
                .collect();
            print!(
                "{}",
                output::table(&ctx.style, &["KEY", "VALUE", "SOURCE"], &table)
            );
            if !config.file_found {
                eprintln!("(no config file at {})", config.path.display());
            }
            Ok(0)
        }
    }
}
