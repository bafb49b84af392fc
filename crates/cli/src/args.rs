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
    after_help = "Examples:\n  banger image register --name dev --rootfs ./rootfs.ext4 --kernel ./vmlinux\n  banger image list\n  banger image show dev --json\n  banger doctor"
)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage images (root filesystem + kernel sets that VMs boot from).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Start, stop or inspect the bangerd daemon.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Print the CLI's and the daemon's versions.
    Version,
    /// Check this machine for what banger needs, and say how to fix what is missing.
    Doctor,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Register files you already have as an image (they stay where they are; deleting
    /// the image later removes only the record).
    #[command(
        after_help = "Example:\n  banger image register --name dev --rootfs ./rootfs.ext4 --kernel ./vmlinux --initrd ./initrd.img"
    )]
    Register(RegisterArgs),
    /// List images.
    #[command(alias = "ls")]
    List,
    /// Show one image in detail.
    Show {
        /// Image name or id.
        image: String,
    },
    /// Delete an image (a managed image's files are removed; a registered image's files
    /// are left alone).
    #[command(alias = "rm")]
    Delete {
        /// Image name or id.
        image: String,
    },
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
    /// Start the daemon in the background (commands also start it on demand).
    Start,
    /// Stop the daemon gracefully (in-flight requests finish first).
    Stop,
}
