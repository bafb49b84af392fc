//! `banger kernel …`: the kernel store (import, list, show, delete, push, pull).

use std::path::PathBuf;

use banger_api::kernel::{
    Kernel, KernelDeleteParams, KernelDeleted, KernelImportParams, KernelList, KernelPullParams,
    KernelPushParams, KernelPushed, KernelRef,
};
use banger_api::methods;
use banger_api::system::Empty;
use clap::{Args, Subcommand};

use crate::Context;
use crate::commands::{absolute, local_source_absolute, with_progress};
use crate::output::{self, Tone};

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Import a kernel into the store: from files, a Debian/Ubuntu package, or the host.
    #[command(
        after_help = "A compressed bzImage (vmlinuz) is kept for QEMU and an uncompressed ELF vmlinux is\nextracted from it for Firecracker (gzip, xz, zstd and lz4 payloads). The kernel version\nis read from the image itself.\n\nExamples:\n  banger kernel import dev --kernel ./vmlinuz --initrd ./initrd.img --modules ./modules/6.1.0\n  banger kernel import cloud --deb ./linux-image-6.1.0-28-cloud-amd64_6.1.119-1_amd64.deb\n  banger kernel import mine --host\n\nGet a Debian cloud kernel package without installing it:\n  apt-get download linux-image-cloud-amd64   # the metapackage; its Depends names the real one"
    )]
    Import(ImportArgs),
    /// List stored kernels.
    #[command(alias = "ls")]
    List,
    /// Show one kernel: files, checksums, version, source.
    Show {
        /// Kernel name.
        name: String,
    },
    /// Delete a kernel. Images pulled with `--kernel-ref` keep their own copy and are
    /// unaffected; images registered with it point at its files, so deleting is refused
    /// unless --force.
    #[command(alias = "rm")]
    Delete {
        /// Kernel name.
        name: String,
        /// Delete even if registered images use the kernel's files in place.
        #[arg(long)]
        force: bool,
    },
    /// Push a stored kernel to an OCI registry as a one-layer image.
    #[command(
        after_help = "The image holds one layer with vmlinuz/vmlinux, initrd.img and modules/, annotated with\nthe kernel version and architecture: any registry stores it and `skopeo inspect` shows it.\nCredentials come from ~/.docker/config.json; loopback registries use plain HTTP.\n\nExample:\n  banger kernel push cloud localhost:5000/kernels/cloud:6.1"
    )]
    Push {
        /// Kernel name.
        name: String,
        /// Destination: registry/repository:tag.
        #[arg(value_name = "REF")]
        reference: String,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Pull a kernel image (made by `banger kernel push`) into the store.
    #[command(
        after_help = "REF forms: registry/repo:tag, registry/repo@sha256:<hex>, oci:/path/to/layout[:tag],\noci-archive:/path/to/image.tar\n\nExamples:\n  banger kernel pull localhost:5000/kernels/cloud:6.1 --name cloud\n  banger image pull debian:bookworm --kernel-ref cloud"
    )]
    Pull {
        #[arg(value_name = "REF")]
        reference: String,
        /// Name in the store [default: derived from REF, e.g. reg/kernels/cloud:6.1 → cloud-6-1].
        #[arg(long)]
        name: Option<String>,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["kernel", "deb", "host"])))]
pub struct ImportArgs {
    /// Name for the kernel: lower-case letters, digits, '.', '_' and '-' (max 64).
    pub name: String,
    /// Kernel image: a bzImage (vmlinuz) or an ELF vmlinux.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for the kernel.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel modules tree (the contents of /lib/modules/<version>).
    // Doc comment = clap help text, shown verbatim: not rustdoc markup.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long, value_name = "DIR", requires = "kernel")]
    pub modules: Option<PathBuf>,
    /// A Debian/Ubuntu linux-image-*.deb: kernel and modules are taken without installing it.
    #[arg(long, value_name = "FILE")]
    pub deb: Option<PathBuf>,
    /// The running host's /boot/vmlinuz-$(uname -r), initrd and /lib/modules/$(uname -r).
    #[arg(long)]
    pub host: bool,
}

pub async fn run(ctx: &Context, command: KernelCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        KernelCommand::Import(args) => {
            let opt = |p: Option<PathBuf>| p.as_deref().map(absolute).transpose();
            let params = KernelImportParams {
                name: args.name,
                kernel_path: opt(args.kernel)?,
                initrd_path: opt(args.initrd)?,
                modules_dir: opt(args.modules)?,
                deb_path: opt(args.deb)?,
                host: args.host,
            };
            let kernel: Kernel = client.call::<methods::kernel::Import>(&params).await?;
            done(ctx, "imported", &kernel)
        }
        KernelCommand::List => {
            let list: KernelList = client.call::<methods::kernel::List>(&Empty {}).await?;
            if ctx.json {
                return output::print_json(&list.kernels);
            }
            if list.kernels.is_empty() {
                println!("no kernels yet; import one with `banger kernel import --help`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .kernels
                .iter()
                .map(|k| {
                    vec![
                        k.name.clone(),
                        k.version.clone().unwrap_or_else(|| "-".into()),
                        k.arch.clone().unwrap_or_else(|| "-".into()),
                        contents(k),
                        k.source.clone().unwrap_or_else(|| "-".into()),
                        k.created_at.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &ctx.style,
                    &["NAME", "VERSION", "ARCH", "FILES", "SOURCE", "IMPORTED"],
                    &rows
                )
            );
            Ok(())
        }
        KernelCommand::Show { name } => {
            let kernel: Kernel = client
                .call::<methods::kernel::Show>(&KernelRef { kernel: name })
                .await?;
            if ctx.json {
                output::print_json(&kernel)
            } else {
                print!("{}", details(ctx, &kernel));
                Ok(())
            }
        }
        KernelCommand::Delete { name, force } => {
            let deleted: KernelDeleted = client
                .call::<methods::kernel::Delete>(&KernelDeleteParams {
                    kernel: name,
                    force,
                })
                .await?;
            if ctx.json {
                return output::print_json(&deleted);
            }
            println!("deleted kernel {}", deleted.name);
            if !deleted.images_with_copies.is_empty() {
                println!(
                    "images made from it keep their own copy and still work: {}",
                    deleted.images_with_copies.join(", ")
                );
            }
            if !deleted.images_broken.is_empty() {
                println!(
                    "{} registered images pointed at its files and need a new kernel: {}",
                    ctx.style.paint(Tone::Warn, "warning:"),
                    deleted.images_broken.join(", ")
                );
            }
            Ok(())
        }
        KernelCommand::Push {
            name,
            reference,
            quiet,
        } => {
            let params = KernelPushParams {
                kernel: name,
                reference,
            };
            let pushed: KernelPushed = with_progress::<methods::kernel::Push>(
                &client,
                &params,
                quiet || ctx.json,
                "blobs already sent stay in the registry; no tag was written",
            )
            .await?;
            if ctx.json {
                return output::print_json(&pushed);
            }
            println!(
                "pushed kernel {} to {} ({}, layer {})",
                pushed.kernel,
                pushed.reference,
                pushed.manifest_digest,
                output::human_bytes(pushed.layer_bytes)
            );
            Ok(())
        }
        KernelCommand::Pull {
            reference,
            name,
            quiet,
        } => {
            let params = KernelPullParams {
                reference: local_source_absolute(&reference)?,
                name,
            };
            let kernel: Kernel = with_progress::<methods::kernel::Pull>(
                &client,
                &params,
                quiet || ctx.json,
                "the daemon discards the partial kernel",
            )
            .await?;
            done(ctx, "pulled", &kernel)
        }
    }
}

fn done(ctx: &Context, verb: &str, k: &Kernel) -> anyhow::Result<()> {
    if ctx.json {
        return output::print_json(k);
    }
    println!(
        "{verb} kernel {} ({}, {}): {}",
        k.name,
        banger_api::text::visible(k.version.as_deref().unwrap_or("version unknown")),
        k.arch.as_deref().unwrap_or("arch unknown"),
        contents(k)
    );
    Ok(())
}

/// `vmlinuz+vmlinux+initrd+modules`.
fn contents(k: &Kernel) -> String {
    let mut parts = Vec::new();
    if k.vmlinuz_path.is_some() {
        parts.push("vmlinuz");
    }
    if k.vmlinux_path.is_some() {
        parts.push("vmlinux");
    }
    if k.initrd_path.is_some() {
        parts.push("initrd");
    }
    if k.modules_dir.is_some() {
        parts.push("modules");
    }
    parts.join("+")
}

fn details(ctx: &Context, k: &Kernel) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| ctx.style.paint(Tone::Dim, "-"));
    let mut fields: Vec<(String, String)> = vec![
        ("Name".into(), k.name.clone()),
        ("Version".into(), opt(&k.version)),
        ("Arch".into(), opt(&k.arch)),
        ("Dir".into(), k.dir.clone()),
        ("Kernel (QEMU)".into(), k.kernel_path.clone()),
        ("vmlinux".into(), opt(&k.vmlinux_path)),
        ("Initrd".into(), opt(&k.initrd_path)),
        ("Modules".into(), opt(&k.modules_dir)),
        ("Source".into(), opt(&k.source)),
        ("Imported".into(), k.created_at.clone()),
    ];
    for f in &k.files {
        let size = match f.file_count {
            Some(n) => format!("{}, {n} files", output::human_bytes(f.size_bytes)),
            None => output::human_bytes(f.size_bytes),
        };
        fields.push((format!("  {}", f.name), format!("{} ({size})", f.sha256)));
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    fields
        .into_iter()
        .map(|(k, v)| {
            format!(
                "{}{}  {}\n",
                ctx.style.paint(Tone::Bold, &k),
                " ".repeat(width - k.len()),
                // Values can come from an image, a registry or a kernel file.
                banger_api::text::visible(&v)
            )
        })
        .collect()
}
