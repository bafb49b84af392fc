//! `bangerd` command line.

use std::path::PathBuf;

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
    match runtime.block_on(crate::run::run(layout)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "bangerd failed");
            eprintln!("bangerd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
