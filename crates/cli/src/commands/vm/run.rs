//! `banger vm run [PATH] [--image IMG] [--rm] [-d] … [-- CMD…]`: a VM from the default (or
//! given) image, the workspace at PATH copied onto its own disk under `/root/<dir name>`,
//! then CMD run there (or a login shell) through the `vm exec` pump.
//!
//! Workspace selection: a git repository (PATH holds `.git`, or is the top level `git
//! rev-parse --show-toplevel` reports) gives its tracked files and the untracked files git
//! does not ignore (`git ls-files --cached --others --exclude-standard`; tracked files
//! deleted from the work tree are skipped) plus the whole `.git` directory; any other
//! directory gives everything in it. Symlinks stay symlinks; special files are left out.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use banger_api::ErrorCode;
use banger_api::image::{Image, ImageRef, KernelChoice};
use banger_api::methods;
use banger_api::pull::{ImagePullParams, PullEvent};
use banger_api::system::Empty;
use banger_api::vm::{VmCreateParams, VmDeleteParams, VmRef};
use clap::Args;

use crate::Context;
use crate::commands::vm::create::{InitArg, NetArg, VmmArg, parse_memory_mib};
use crate::commands::vm::exec::{self, ExecArgs};
use crate::commands::{local_source_absolute, with_progress};
use crate::config::{Config, VmDefaults, VmFlags, init_str};
use banger_client::transfer::{self as cp, Tree};
use banger_client::{Client, ClientError};

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
    /// Networking: `user` (outbound NAT and DNS, rootless) or `none` [default: config
    /// `vm.net`, else user].
    #[arg(long, value_name = "MODE")]
    pub net: Option<NetArg>,
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
    /// Image to boot (name or id) [default: config `default_image_name`, pulled from
    /// `default_image` with kernel `default_kernel` on first use].
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Name for the VM [default: <PATH's name, or "run">-<4 random hex digits>].
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

/// A workspace to copy in.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Its directory name, the name under /root in the guest.
    pub name: String,
    pub git: bool,
    pub tree: Tree,
}

/// What PATH contributes (see the module docs).
pub fn workspace(path: &Path) -> anyhow::Result<Workspace> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot copy {}", path.display()))?;
    if !meta.is_dir() {
        anyhow::bail!(
            "{} is not a directory (to copy single files, use `banger vm cp`)",
            path.display()
        );
    }
    let root = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    let name = match root.file_name() {
        Some(n) => n
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("directory name {n:?} is not valid UTF-8"))?
            .to_string(),
        None => anyhow::bail!("cannot copy / as a workspace: name a directory"),
    };
    let git = is_git_toplevel(&root);
    let mut tree = Tree {
        source: root.clone(),
        entries: Vec::new(),
        skipped: Vec::new(),
    };
    tree.add(PathBuf::new(), &std::fs::symlink_metadata(&root)?);
    if git {
        for rel in git_files(&root)? {
            let Ok(meta) = std::fs::symlink_metadata(root.join(&rel)) else {
                continue; // tracked, but deleted from the work tree
            };
            tree.add(rel.clone(), &meta);
            if meta.is_dir() {
                // A submodule's checkout: all of it.
                tree.walk(&rel)?;
            }
        }
        let dot_git = PathBuf::from(".git");
        let meta = std::fs::symlink_metadata(root.join(&dot_git))?;
        tree.add(dot_git.clone(), &meta);
        if meta.is_dir() {
            tree.walk(&dot_git)?;
        }
    } else {
        tree.walk(Path::new(""))?;
    }
    tree.sort();
    Ok(Workspace { name, git, tree })
}

/// `root` holds `.git`, or git calls it the top level of its work tree.
fn is_git_toplevel(root: &Path) -> bool {
    if std::fs::symlink_metadata(root.join(".git")).is_ok() {
        return true;
    }
    let Ok(out) = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--show-toplevel"])
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let top = std::ffi::OsStr::from_bytes(out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout));
    std::fs::canonicalize(top).is_ok_and(|t| t == root)
}

/// Tracked plus untracked-but-not-ignored paths, relative to `root`.
fn git_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .with_context(|| {
            format!(
                "{} is a git repository, but git could not be run (is it installed?)",
                root.display()
            )
        })?;
    if !out.status.success() {
        anyhow::bail!(
            "git ls-files in {} failed: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut files: Vec<PathBuf> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(OsString::from(std::ffi::OsStr::from_bytes(p))))
        .collect();
    // Unmerged paths are listed once per stage.
    files.sort();
    files.dedup();
    Ok(files)
}

/// `<base>-<4 hex>` within the naming rule: lower-cased, other characters turned into
/// `-`, leading ones that may not start a name dropped, `run` when nothing is left.
pub fn derive_vm_name(base: Option<&str>, suffix: u16) -> String {
    let cleaned: String = base
        .unwrap_or("run")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut stem: String = trimmed
        .chars()
        .take(banger_api::names::MAX_NAME_LEN - 5)
        .collect();
    if stem.is_empty() {
        stem = "run".into();
    }
    format!("{stem}-{suffix:04x}")
}

/// 16 random bits (no RNG crate needed: the standard library's hasher is randomly keyed).
fn random_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish() as u16
}

/// The `vm.create` params: flags over the config's `[vm]` over the daemon's defaults.
pub fn create_params(
    name: &str,
    image: &str,
    vm: &VmDefaults,
    publish: &[String],
    kernel_args: &[String],
) -> VmCreateParams {
    VmCreateParams {
        name: name.to_string(),
        image: image.to_string(),
        cpus: vm.cpus.as_ref().map(|s| s.value),
        memory_mib: vm.memory_mib.as_ref().map(|s| s.value),
        disk_bytes: vm.disk_bytes.as_ref().map(|s| s.value),
        work_disk_bytes: vm.work_disk_bytes.as_ref().map(|s| s.value),
        init: vm.init.as_ref().map(|s| init_str(s.value).to_string()),
        no_start: false,
        channel: None,
        ready_timeout_secs: None,
        net: vm.net.as_ref().map(|s| s.value.as_str().to_string()),
        publish: publish.to_vec(),
        vmm: vm.vmm.as_ref().map(|s| s.value.as_str().to_string()),
        kernel_args: kernel_args.to_vec(),
        console_log_max: vm.console_log_max.as_ref().map(|s| s.value),
        ready: None,
        auto_remove: false,
        lease: None,
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
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| derive_vm_name(ws.as_ref().map(|w| w.name.as_str()), random_u16()));
    // From here on Ctrl-C, SIGTERM and SIGHUP are ours: they cancel the step at hand, and
    // --rm still deletes the VM.
    let mut interrupts = Interrupts::install()?;
    let mut made = false;
    // Dropped last: the daemon's deletion of a --rm VM is the fallback of ours below.
    let mut lease = None;
    let outcome = steps(
        ctx,
        client,
        args,
        config,
        ws,
        &name,
        &mut interrupts,
        &mut made,
        &mut lease,
        run_exec,
    )
    .await;
    if args.rm && made {
        if let Err(e) = delete(client, &name).await {
            eprintln!(
                "banger: could not delete vm {name}: {e:#}; delete it with `banger vm delete --force {name}`"
            );
        }
    } else if made
        && outcome.is_err()
        && client
            .call::<methods::vm::Show>(&VmRef { vm: name.clone() })
            .await
            .is_ok()
    {
        eprintln!(
            "banger: vm {name} is kept (see `banger vm logs {name}`); `banger vm delete --force {name}` removes it"
        );
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    ctx: &Context,
    client: &Client,
    args: &RunArgs,
    config: &Config,
    ws: Option<Workspace>,
    name: &str,
    interrupts: &mut Interrupts,
    made: &mut bool,
    lease: &mut Option<Lease>,
    run_exec: impl AsyncFnOnce(&Client, ExecArgs) -> anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    let quiet = args.quiet || ctx.json;
    // 1. The image.
    let image = match &args.image {
        Some(i) => i.clone(),
        None => {
            interrupts
                .guard(
                    "pulling the default image",
                    ensure_default_image(client, config, quiet),
                )
                .await?
        }
    };
    // 2. The VM. A name already taken is refused before anything (so --rm never deletes
    // a VM that was there before).
    match client
        .call::<methods::vm::Show>(&VmRef {
            vm: name.to_string(),
        })
        .await
    {
        Ok(_) => anyhow::bail!(
            "a vm named {name} already exists; choose another --name or delete it first"
        ),
        Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let mut params = create_params(
        name,
        &image,
        &config.vm_with_flags(&args.resources.flags()),
        &args.publish,
        &args.resources.kernel_args,
    );
    params.ready = args.resources.ready.map(|r| r.as_str().to_string());
    // --rm: the daemon deletes the VM when it stops or when this process goes, however.
    if args.rm {
        let opened = interrupts
            .guard("opening a lease", Lease::open(client))
            .await?;
        params.auto_remove = true;
        params.lease = Some(opened.id.clone());
        *lease = Some(opened);
    }
    *made = true;
    let created = interrupts
        .guard(
            "creating the vm",
            with_progress::<methods::vm::Create>(
                client,
                &params,
                quiet,
                "the daemon discards the half-made VM",
            ),
        )
        .await;
    let vm = match created {
        Ok(vm) => vm,
        Err(e) => {
            // Someone else's VM of that name (a race): not ours to delete.
            if let Some(ClientError::Api(api)) = e.downcast_ref::<ClientError>()
                && api.code == ErrorCode::AlreadyExists
            {
                *made = false;
            }
            return Err(e);
        }
    };
    if !quiet {
        let ready = super::ready_secs(&vm)
            .map(|s| format!(", ready in {s:.1}s"))
            .unwrap_or_default();
        eprintln!("vm {} is running (image {}{ready})", vm.name, vm.image);
    }
    // 3. The workspace.
    if let Some(ws) = &ws {
        let started = std::time::Instant::now();
        let up = interrupts
            .guard(
                "copying the workspace",
                cp::upload(
                    client,
                    name,
                    "/root",
                    std::ffi::OsStr::new(&ws.name),
                    ws.tree.clone(),
                ),
            )
            .await?;
        if !quiet {
            eprintln!(
                "{}",
                copy_line(
                    up.packed.files,
                    up.packed.bytes,
                    started.elapsed(),
                    &ws.name
                )
            );
        }
    }
    // 4. Detached: that's all.
    if args.detach {
        println!("{name}");
        return Ok(0);
    }
    // 5. The command, or a shell.
    let exec = exec_args(
        name,
        ws.as_ref().map(|w| w.name.as_str()),
        &args.command,
        std::io::stdin().is_terminal(),
    );
    run_exec(client, exec).await
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

/// The configured default image's local name, pulled first when there is no such image.
async fn ensure_default_image(
    client: &Client,
    config: &Config,
    quiet: bool,
) -> anyhow::Result<String> {
    let name = config.default_image_name.value.clone();
    match client
        .call::<methods::image::Show>(&ImageRef {
            image: name.clone(),
        })
        .await
    {
        Ok(shown) => return Ok(shown.image.name),
        Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    if !quiet {
        eprintln!(
            "no image {name} yet: pulling {} with kernel {} (once)",
            config.default_image.value, config.default_kernel.value
        );
    }
    let params = ImagePullParams {
        reference: local_source_absolute(&config.default_image.value)?,
        name: Some(name),
        kernel: KernelChoice {
            kernel_ref: Some(config.default_kernel.value.clone()),
            ..KernelChoice::default()
        },
        ..ImagePullParams::default()
    };
    let image: Image = with_progress::<methods::image::Pull>(
        client,
        &params,
        quiet,
        "the daemon discards the partial image",
    )
    .await
    .with_context(|| {
        format!(
            "pulling the default image {} (set default_image in {}, or pass --image)",
            config.default_image.value,
            config.path.display()
        )
    })?;
    Ok(image.name)
}

/// A `vm.hold` lease, held on its own connection by a task until dropped (or until this
/// process ends, however it ends): then the daemon deletes the VMs created under it.
struct Lease {
    id: String,
    holder: tokio::task::JoinHandle<()>,
}

impl Lease {
    async fn open(client: &Client) -> anyhow::Result<Lease> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<String, ClientError>>();
        let holder_client = client.clone();
        let holder = tokio::spawn(async move {
            let mut tx = Some(tx);
            let ended = holder_client
                .call_streaming::<methods::vm::Hold>(&Empty {}, |event| {
                    if let PullEvent::Lease { id } = event
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(Ok(id.clone()));
                    }
                })
                .await;
            if let (Some(tx), Err(e)) = (tx, ended) {
                let _ = tx.send(Err(e));
            }
        });
        let id = match rx.await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => {
                return Err(anyhow::Error::new(e).context("opening a vm.hold lease for --rm"));
            }
            Err(_) => {
                anyhow::bail!("bangerd ended the vm.hold call without a lease (an older daemon?)")
            }
        };
        Ok(Lease { id, holder })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.holder.abort();
    }
}

async fn delete(client: &Client, name: &str) -> anyhow::Result<()> {
    let params = VmDeleteParams {
        vm: name.to_string(),
        force: true,
    };
    match client.call::<methods::vm::Delete>(&params).await {
        Ok(_) => Ok(()),
        Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
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

    async fn recv(&mut self) {
        std::future::poll_fn(|cx| {
            for s in self.signals.iter_mut() {
                if s.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Runs `step`, or stops it with an error when a signal arrives first.
    pub async fn guard<T>(
        &mut self,
        what: &str,
        step: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::select! {
            r = step => r,
            () = self.recv() => anyhow::bail!("interrupted while {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command as Proc;

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
    }

    #[test]
    fn names_are_derived_within_the_rule() {
        assert_eq!(derive_vm_name(None, 0xab), "run-00ab");
        assert_eq!(derive_vm_name(Some("My App"), 0x1234), "my-app-1234");
        assert_eq!(derive_vm_name(Some(".dotfiles"), 1), "dotfiles-0001");
        assert_eq!(derive_vm_name(Some("__"), 1), "run-0001");
        assert_eq!(derive_vm_name(Some("ünï"), 2), "n--0002");
        let long = derive_vm_name(Some(&"x".repeat(100)), 3);
        assert_eq!(long.len(), 64);
        for n in [&long, &derive_vm_name(Some("Ab.C_d"), 9)] {
            banger_api::names::validate_name(n).expect("valid");
        }
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
            "x",
            "img",
            &config.vm_with_flags(&a.resources.flags()),
            &a.publish,
            &a.resources.kernel_args,
        );
        assert_eq!(p.cpus, Some(1), "flag");
        assert_eq!(p.memory_mib, Some(2048), "file");
        assert_eq!(p.net.as_deref(), Some("none"), "file");
        assert_eq!(p.disk_bytes, None, "daemon");
        assert_eq!(p.publish, ["8080:80"]);
        assert_eq!(p.vmm.as_deref(), Some("qemu"), "file");
        assert_eq!(p.kernel_args, ["quiet"], "flag");
        assert!(!p.no_start);
        let a = parse(&["--vmm", "firecracker"]).expect("parses");
        let p = create_params(
            "x",
            "img",
            &config.vm_with_flags(&a.resources.flags()),
            &a.publish,
            &a.resources.kernel_args,
        );
        assert_eq!(
            p.vmm.as_deref(),
            Some("firecracker"),
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

    fn git(dir: &Path, args: &[&str]) {
        let out = Proc::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn a_git_workspace_is_tracked_plus_untracked_not_ignored_plus_dot_git() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("app");
        std::fs::create_dir(&repo).expect("mkdir");
        git(&repo, &["init", "-q"]);
        write(&repo.join(".gitignore"), "target/\n*.log\n");
        write(&repo.join("src/main.rs"), "fn main() {}\n");
        write(&repo.join("run.sh"), "#!/bin/sh\n");
        std::fs::set_permissions(repo.join("run.sh"), PermissionsExt::from_mode(0o755))
            .expect("chmod");
        write(&repo.join("gone.txt"), "deleted later\n");
        write(&repo.join("sub/.gitignore"), "secret.txt\n");
        write(&repo.join("sub/keep.txt"), "kept\n");
        symlink("src/main.rs", repo.join("link")).expect("symlink");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        std::fs::remove_file(repo.join("gone.txt")).expect("rm");
        // Untracked: one kept, the ignored ones not.
        write(&repo.join("notes.md"), "untracked\n");
        write(&repo.join("target/debug/app"), "build output\n");
        write(&repo.join("build.log"), "ignored\n");
        write(&repo.join("sub/secret.txt"), "nested-ignored\n");
        write(&repo.join("sub/new.txt"), "untracked in sub\n");

        let ws = workspace(&repo).expect("workspace");
        assert!(ws.git);
        assert_eq!(ws.name, "app");
        let listing = ws.tree.listing();
        let outside_git: Vec<&str> = listing
            .iter()
            .map(String::as_str)
            .filter(|p| !p.starts_with(".git/") || *p == ".git/")
            .collect();
        assert_eq!(
            outside_git,
            [
                ".git/",
                ".gitignore",
                "link",
                "notes.md",
                "run.sh",
                "src/",
                "src/main.rs",
                "sub/",
                "sub/.gitignore",
                "sub/keep.txt",
                "sub/new.txt"
            ]
        );
        assert!(listing.contains(&".git/HEAD".to_string()), "the whole .git");
        assert!(listing.iter().any(|p| p.starts_with(".git/objects/")));

        // The packed archive holds exactly the listing, under app/, with modes.
        let mut bytes = Vec::new();
        cp::pack(&ws.tree, Path::new("app"), &mut bytes).expect("pack");
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut names = Vec::new();
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            let mut n = e.path().expect("path").to_string_lossy().into_owned();
            if e.header().entry_type() == tar::EntryType::Directory && !n.ends_with('/') {
                n.push('/');
            }
            if n == "app/run.sh" {
                assert_eq!(e.header().mode().expect("mode") & 0o777, 0o755);
            }
            if n == "app/link" {
                assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
            }
            names.push(n);
        }
        assert_eq!(names[0], "app/");
        let packed: Vec<String> = names[1..]
            .iter()
            .map(|n| n.strip_prefix("app/").expect("prefix").to_string())
            .collect();
        assert_eq!(packed, listing, "dry-run listing = packed entries");
    }

    #[test]
    fn a_plain_directory_is_everything() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("Plain Dir");
        write(&dir.join("a.log"), "x");
        write(&dir.join("target/out"), "y");
        write(&dir.join(".hidden"), "z");
        std::fs::create_dir(dir.join("empty")).expect("mkdir");
        let ws = workspace(&dir).expect("workspace");
        assert!(!ws.git);
        assert_eq!(ws.name, "Plain Dir");
        assert_eq!(
            ws.tree.listing(),
            [".hidden", "a.log", "empty/", "target/", "target/out"]
        );
        assert_eq!((ws.tree.files(), ws.tree.bytes()), (3, 3));
        assert!(
            workspace(&dir.join("a.log")).is_err(),
            "a file is not a workspace"
        );
    }

    #[test]
    fn a_repo_subdirectory_is_a_plain_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("r");
        std::fs::create_dir(&repo).expect("mkdir");
        git(&repo, &["init", "-q"]);
        write(&repo.join("sub/f"), "x");
        let ws = workspace(&repo.join("sub")).expect("workspace");
        assert!(!ws.git);
        assert_eq!(ws.tree.listing(), ["f"]);
    }

    // --- The whole flow against a fake daemon (image.show/pull, vm.show/create/cp.put/delete).

    mod fake {
        use std::convert::Infallible;
        use std::sync::{Arc, Mutex};

        use banger_api::{ApiError, ErrorBody};
        use banger_guest_proto::PutResult;
        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        use hyper::body::Incoming;
        use hyper::{Request, Response, StatusCode};
        use hyper_util::rt::TokioIo;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::UnixListener;

        use super::*;
        use crate::commands::vm::testing::sample_vm;

        #[derive(Default)]
        pub struct Log {
            pub calls: Vec<(String, serde_json::Value)>,
            pub uploaded: Vec<String>,
        }

        pub struct Daemon {
            pub _dir: tempfile::TempDir,
            pub client: Client,
            pub log: Arc<Mutex<Log>>,
        }

        /// `put_error`: what the guest says about the upload.
        pub async fn start(has_image: bool, put_error: Option<&'static str>) -> Daemon {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("bangerd.sock");
            let listener = UnixListener::bind(&path).expect("bind");
            let log = Arc::new(Mutex::new(Log::default()));
            let shared = log.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let log = shared.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            answer(req, log.clone(), has_image, put_error)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    });
                }
            });
            Daemon {
                _dir: dir,
                client: Client::new(&path),
                log,
            }
        }

        fn json(status: u16, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
            Response::builder()
                .status(status)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(
                    serde_json::to_vec(value).expect("json"),
                )))
                .expect("response")
        }

        fn not_found(what: &str) -> Response<Full<Bytes>> {
            json(
                404,
                &ErrorBody {
                    error: ApiError::new(ErrorCode::NotFound, format!("no {what}")),
                },
            )
        }

        fn image(name: &str) -> Image {
            Image {
                id: "img-1".into(),
                name: name.into(),
                managed: true,
                artifact_dir: None,
                rootfs_path: "/r".into(),
                kernel_path: "/k".into(),
                initrd_path: None,
                modules_dir: None,
                kernel_ref: Some("default".into()),
                source_ref: None,
                manifest_digest: None,
                platform: None,
                size_bytes: None,
                allocated_bytes: None,
                created_at: "2025-01-01T00:00:00Z".into(),
            }
        }

        async fn answer(
            mut req: Request<Incoming>,
            log: Arc<Mutex<Log>>,
            has_image: bool,
            put_error: Option<&'static str>,
        ) -> Result<Response<Full<Bytes>>, Infallible> {
            let method = req.uri().path().trim_start_matches("/v1/").to_string();
            let on_upgrade = hyper::upgrade::on(&mut req);
            let body = req.into_body().collect().await.expect("body").to_bytes();
            let params: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            log.lock()
                .expect("log")
                .calls
                .push((method.clone(), params.clone()));
            Ok(match method.as_str() {
                "image.show" if has_image => json(
                    200,
                    &banger_api::image::ImageDetails {
                        image: image(params["image"].as_str().unwrap_or("")),
                        disk: Default::default(),
                    },
                ),
                "image.show" => not_found("image"),
                "image.pull" => json(200, &image(params["name"].as_str().unwrap_or(""))),
                "vm.show" => not_found("vm"),
                // The lease's event, then the end of the stream (a real daemon holds it).
                "vm.hold" => Response::builder()
                    .header(hyper::header::CONTENT_TYPE, banger_api::NDJSON)
                    .body(Full::new(Bytes::from_static(
                        b"{\"event\":{\"kind\":\"lease\",\"id\":\"lease-1\"}}\n",
                    )))
                    .expect("response"),
                "vm.create" => {
                    let mut vm = sample_vm();
                    vm.name = params["name"].as_str().unwrap_or("").into();
                    json(200, &vm)
                }
                "vm.delete" => json(
                    200,
                    &serde_json::json!({"id": "vm-1", "name": params["vm"]}),
                ),
                "vm.cp.put" => {
                    tokio::spawn(async move {
                        let Ok(upgraded) = on_upgrade.await else {
                            return;
                        };
                        let mut io = TokioIo::new(upgraded);
                        let mut tar_bytes = Vec::new();
                        if put_error.is_none() {
                            io.read_to_end(&mut tar_bytes).await.expect("read tar");
                        }
                        let mut names = Vec::new();
                        let mut ar = tar::Archive::new(&tar_bytes[..]);
                        for e in ar.entries().expect("entries") {
                            let e = e.expect("entry");
                            names.push(e.path().expect("path").to_string_lossy().into_owned());
                        }
                        let result = PutResult {
                            entries: names.len() as u64,
                            bytes: 0,
                            error: put_error.map(str::to_string),
                        };
                        log.lock().expect("log").uploaded = names;
                        io.write_all(&serde_json::to_vec(&result).expect("json"))
                            .await
                            .expect("answer");
                        let _ = io.shutdown().await;
                    });
                    Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header(hyper::header::CONNECTION, "upgrade")
                        .header(hyper::header::UPGRADE, banger_api::vm::STREAM_UPGRADE)
                        .body(Full::default())
                        .expect("response")
                }
                other => panic!("unexpected call {other}"),
            })
        }
    }

    fn ctx() -> Context {
        Context {
            layout: banger_api::layout::Layout::from_env(),
            json: false,
            style: crate::output::Style::plain(),
        }
    }

    fn calls(d: &fake::Daemon) -> Vec<String> {
        d.log
            .lock()
            .expect("log")
            .calls
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    #[tokio::test]
    async fn run_pulls_the_default_image_copies_execs_and_removes() {
        let d = fake::start(false, None).await;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("proj");
        write(&dir.join("Makefile"), "test:\n\ttrue\n");
        let config = Config::parse(
            "default_kernel = \"cloud\"\n[vm]\ncpus = 3\n",
            Path::new("/c"),
        )
        .expect("config");
        let args = parse(&[
            dir.to_str().expect("utf-8"),
            "--rm",
            "-q",
            "--",
            "make",
            "test",
        ])
        .expect("args");
        let ws = workspace(&dir).expect("workspace");
        let seen = std::sync::Mutex::new(None);
        let code = execute(
            &ctx(),
            &d.client,
            &args,
            &config,
            Some(ws),
            async |_: &Client, e: ExecArgs| {
                *seen.lock().expect("seen") = Some(e);
                Ok(7)
            },
        )
        .await
        .expect("ran");
        assert_eq!(code, 7, "the command's exit code");
        assert_eq!(
            calls(&d),
            [
                "image.show",
                "image.pull",
                "vm.show",
                "vm.hold",
                "vm.create",
                "vm.cp.put",
                "vm.delete"
            ]
        );
        let log = d.log.lock().expect("log");
        let pull = &log.calls[1].1;
        assert_eq!(pull["ref"], "debian:bookworm");
        assert_eq!(pull["name"], "debian-bookworm");
        assert_eq!(pull["kernel_ref"], "cloud");
        let create = &log.calls[4].1;
        assert_eq!(create["image"], "debian-bookworm");
        assert_eq!(create["cpus"], 3);
        assert_eq!(create["auto_remove"], true, "--rm: the daemon's too");
        assert_eq!(create["lease"], "lease-1");
        let name = create["name"].as_str().expect("name").to_string();
        assert!(name.starts_with("proj-") && name.len() == 9, "{name}");
        assert_eq!(log.calls[5].1["dest"], "/root");
        assert_eq!(
            log.calls[6].1,
            serde_json::json!({"vm": name, "force": true})
        );
        assert_eq!(log.uploaded, ["proj", "proj/Makefile"]);
        let e = seen.lock().expect("seen").take().expect("exec ran");
        assert_eq!(e.vm, name);
        assert_eq!(e.workdir.as_deref(), Some("/root/proj"));
        assert_eq!(e.command, ["make", "test"]);
    }

    #[tokio::test]
    async fn a_failed_upload_still_removes_the_vm_and_skips_the_command() {
        let d = fake::start(true, Some("/root: no space left on device")).await;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("w");
        write(&dir.join("f"), "x");
        let config = Config::parse("", Path::new("/c")).expect("config");
        let args = parse(&[
            dir.to_str().expect("utf-8"),
            "--rm",
            "-q",
            "--name",
            "w1",
            "--",
            "true",
        ])
        .expect("args");
        let ws = workspace(&dir).expect("workspace");
        let err = execute(
            &ctx(),
            &d.client,
            &args,
            &config,
            Some(ws),
            async |_: &Client, _: ExecArgs| panic!("no exec after a failed upload"),
        )
        .await
        .expect_err("failed");
        assert!(format!("{err:#}").contains("no space left"), "{err:#}");
        assert_eq!(
            calls(&d),
            [
                "image.show",
                "vm.show",
                "vm.hold",
                "vm.create",
                "vm.cp.put",
                "vm.delete"
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_command_still_removes_the_vm_and_without_rm_it_stays() {
        let d = fake::start(true, None).await;
        let config = Config::parse("", Path::new("/c")).expect("config");
        let args = parse(&["--rm", "-q", "--image", "img", "--", "false"]).expect("args");
        let err = execute(
            &ctx(),
            &d.client,
            &args,
            &config,
            None,
            async |_: &Client, _: ExecArgs| anyhow::bail!("the VM's agent went away"),
        )
        .await
        .expect_err("failed");
        assert!(err.to_string().contains("went away"));
        assert_eq!(
            calls(&d),
            ["vm.show", "vm.hold", "vm.create", "vm.delete"],
            "--image: no lookup"
        );

        let d = fake::start(true, None).await;
        let args = parse(&["-q", "--image", "img", "--", "false"]).expect("args");
        let code = execute(
            &ctx(),
            &d.client,
            &args,
            &config,
            None,
            async |_: &Client, _: ExecArgs| Ok(1),
        )
        .await
        .expect("ran");
        assert_eq!(code, 1);
        assert_eq!(calls(&d), ["vm.show", "vm.create"], "no --rm: the VM stays");
    }
}
