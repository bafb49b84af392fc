//! `bangerd` command line.

use std::path::PathBuf;

use banger_api::config::DaemonConfig;
use banger_api::layout::Layout;
use clap::Parser;
use tracing_subscriber::filter::LevelFilter;

/// The banger daemon: owns images, kernels and VMs, and serves the `banger` CLI over a
/// Unix socket. The CLI starts it on demand; run it yourself to see logs or under a
/// service manager.
#[derive(Debug, Parser)]
#[command(name = "bangerd", version)]
pub struct Args {
    /// State directory (database, images, kernels, log) [default: $XDG_STATE_HOME/banger]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Cache directory (OCI blobs) [default: $XDG_CACHE_HOME/banger]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Runtime directory holding the socket [default: $XDG_RUNTIME_DIR/banger]
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Log verbosity: error, warn, info, debug or trace.
    #[arg(long, default_value = "info", env = "BANGER_LOG")]
    pub log_level: LevelFilter,
    /// Also write logs to stderr (they always go to <state>/bangerd.log).
    // The doc comment is clap's help text, printed verbatim: `<state>` stays unescaped.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long)]
    pub log_stderr: bool,
    /// Acceleration for VMs: `auto` (KVM when a probe guest boots under it, else software
    /// emulation), `kvm` (trust /dev/kvm without probing, for hosts where the probe is
    /// wrong), `tcg` (software emulation) [default: config.toml's `daemon.accel`, else
    /// auto].
    #[arg(long, value_name = "MODE", env = "BANGER_ACCEL")]
    pub accel: Option<AccelArg>,
    /// The Firecracker binary [default: config.toml's `daemon.firecracker`, else
    /// $BANGER_FIRECRACKER, then `firecracker` on PATH].
    #[arg(long, value_name = "PATH")]
    pub firecracker: Option<PathBuf>,
    /// Run Firecracker VMs through this `jailer` (chroot under <state>/jail, uid/gid
    /// 65534, its own network namespace). Only when bangerd runs as root; ignored otherwise
    /// [default: config.toml's `daemon.jailer`, else none].
    // Clap help text, printed verbatim: `<state>` stays unescaped.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long, value_name = "PATH")]
    pub jailer: Option<PathBuf>,
}

/// `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

impl Args {
    /// How VMs are run on this host: the flags, over config.toml's `[daemon]`, over the
    /// defaults.
    pub fn vm_host(&self, file: &DaemonConfig) -> crate::vms::HostOptions {
        let accel = self.accel.unwrap_or(match file.accel.as_deref() {
            Some("kvm") => AccelArg::Kvm,
            Some("tcg") => AccelArg::Tcg,
            _ => AccelArg::Auto,
        });
        crate::vms::HostOptions {
            accel: match accel {
                AccelArg::Auto => banger_vmm::AccelChoice::Auto,
                AccelArg::Kvm => banger_vmm::AccelChoice::Kvm,
                AccelArg::Tcg => banger_vmm::AccelChoice::Tcg,
            },
            firecracker: self
                .firecracker
                .clone()
                .or_else(|| file.firecracker.clone()),
            jailer: self.jailer.clone().or_else(|| file.jailer.clone()),
        }
    }
}

impl Args {
    pub fn layout(&self) -> Layout {
        Layout::from_env().with_overrides(
            self.state_dir.as_deref(),
            self.cache_dir.as_deref(),
            self.runtime_dir.as_deref(),
        )
    }
}

/// The whole `bangerd` program; `main` only calls this.
pub fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let layout = args.layout();
    if let Err(e) = crate::logging::init(&layout.log_path(), args.log_level, args.log_stderr) {
        eprintln!("bangerd: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let config_path = banger_api::config::config_path();
    let file = match DaemonConfig::load(&config_path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("bangerd: config file {}: {e}", config_path.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(config = %config_path.display(), ?file, "[daemon] settings");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bangerd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::run::run(layout, args.vm_host(&file))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "bangerd failed");
            eprintln!("bangerd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_config_file() {
        let file = DaemonConfig {
            firecracker: Some("/opt/fc".into()),
            accel: Some("tcg".into()),
            jailer: None,
        };
        let from_file = Args::parse_from(["bangerd"]).vm_host(&file);
        assert_eq!(from_file.accel, banger_vmm::AccelChoice::Tcg);
        assert_eq!(from_file.firecracker, Some(PathBuf::from("/opt/fc")));
        assert_eq!(from_file.jailer, None);
        let flags =
            Args::parse_from(["bangerd", "--accel", "kvm", "--firecracker", "/fc"]).vm_host(&file);
        assert_eq!(flags.accel, banger_vmm::AccelChoice::Kvm);
        assert_eq!(flags.firecracker, Some(PathBuf::from("/fc")));
        let defaults = Args::parse_from(["bangerd"]).vm_host(&DaemonConfig::default());
        assert_eq!(defaults.accel, banger_vmm::AccelChoice::Auto);
    }
}
