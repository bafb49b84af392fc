//! `banger image …`

use banger_api::image::{
    CachePruneParams, CachePruned, Image, ImageDeleted, ImageDetails, ImageDisk, ImageList,
    ImageRef, ImageRegisterParams, KernelChoice,
};
use banger_api::methods;
use banger_api::pull::ImagePullParams;
use banger_api::system::Empty;

use crate::Context;
use crate::args::{CacheCommand, ImageCommand, KernelArgs, PullArgs, RegisterArgs, WarmArgs};
use crate::commands::{absolute, local_source_absolute};
use crate::output::{self, Tone};

pub async fn run(ctx: &Context, command: ImageCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        ImageCommand::Pull(args) => pull(ctx, &client, args).await,
        ImageCommand::Cache(CacheCommand::Prune { dry_run }) => {
            let pruned: CachePruned = client
                .call::<methods::image::CachePrune>(&CachePruneParams { dry_run })
                .await?;
            if ctx.json {
                return output::print_json(&pruned);
            }
            let verb = if dry_run { "would free" } else { "freed" };
            println!(
                "{verb} {} in {} blob{}",
                output::human_bytes(pruned.bytes),
                pruned.blobs,
                if pruned.blobs == 1 { "" } else { "s" }
            );
            if pruned.in_use_blobs > 0 {
                println!(
                    "kept {} in {} blob{} that pulls in flight use (prune again once they finish)",
                    output::human_bytes(pruned.in_use_bytes),
                    pruned.in_use_blobs,
                    if pruned.in_use_blobs == 1 { "" } else { "s" }
                );
            }
            Ok(())
        }
        ImageCommand::Register(args) => {
            let image: Image = client
                .call::<methods::image::Register>(&register_params(args)?)
                .await?;
            if ctx.json {
                output::print_json(&image)
            } else {
                println!("registered image {} ({})", image.name, image.id);
                Ok(())
            }
        }
        ImageCommand::List => {
            let list: ImageList = client.call::<methods::image::List>(&Empty {}).await?;
            if ctx.json {
                return output::print_json(&list.images);
            }
            if list.images.is_empty() {
                println!("no images yet; register one with `banger image register --help`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list.images.iter().map(list_row).collect();
            print!(
                "{}",
                output::table(
                    &ctx.style,
                    &["NAME", "ID", "KIND", "SIZE", "SOURCE", "CREATED"],
                    &rows
                )
            );
            Ok(())
        }
        ImageCommand::Show { image } => {
            let shown: ImageDetails = client
                .call::<methods::image::Show>(&ImageRef { image })
                .await?;
            if ctx.json {
                output::print_json(&shown)
            } else {
                print!("{}", details(ctx, &shown.image, &shown.disk));
                Ok(())
            }
        }
        ImageCommand::Delete { image } => {
            let deleted: ImageDeleted = client
                .call::<methods::image::Delete>(&ImageRef { image })
                .await?;
            if ctx.json {
                output::print_json(&deleted)
            } else {
                let what = if deleted.files_removed {
                    "record and files removed"
                } else {
                    "record removed; its files were left in place"
                };
                println!("deleted image {} ({}): {what}", deleted.name, deleted.id);
                Ok(())
            }
        }
        ImageCommand::Warm(args) => warm(ctx, &client, args).await,
    }
}

async fn warm(ctx: &Context, client: &banger_client::Client, args: WarmArgs) -> anyhow::Result<()> {
    let config = crate::config::Config::load()?;
    let mut params = crate::commands::vm::run::create_params(
        &config.vm_with_flags(&args.resources.flags()),
        &[],
        &args.resources.kernel_args,
    );
    params.image = args.image;
    params.ready = args.resources.ready.map(|r| r.as_str().to_string());
    params.allow = config.net.allow.clone();
    params.allow.extend(args.resources.allow.iter().cloned());
    params.deny = config.net.deny.clone();
    params.deny.extend(args.resources.deny.iter().cloned());
    params.warm = Some(true);
    let snap: banger_api::snapshot::Snapshot =
        crate::commands::with_progress::<methods::image::Warm>(
            client,
            &params,
            args.quiet || ctx.json,
            "the daemon discards the half-made snapshot",
        )
        .await?;
    if ctx.json {
        return output::print_json(&snap);
    }
    println!(
        "ready-snapshot {} of image {} ({}, {} CPU, {}); `banger vm run --image {}` starts from it",
        snap.name,
        snap.image,
        output::human_bytes(snap.size_bytes),
        snap.cpus,
        output::human_bytes(snap.memory_mib << 20),
        snap.image
    );
    Ok(())
}

async fn pull(ctx: &Context, client: &banger_client::Client, args: PullArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let quiet = args.quiet || ctx.json;
    // With --host, an archive on this machine is sent to the daemon's host first.
    let uploaded = match (
        client.remote(),
        banger_client::split_local_source(&args.reference),
    ) {
        (Some(target), Some(("oci-archive:" | "docker-archive:", path, _))) => {
            if !quiet {
                eprintln!("uploading {path} to {target} …");
            }
            Some(banger_client::upload::upload_file(client, std::path::Path::new(path)).await?)
        }
        _ => None,
    };
    let reference = match &uploaded {
        Some(there) => banger_client::with_source_path(&args.reference, there),
        None => local_source_absolute(&args.reference)?,
    };
    let params = ImagePullParams {
        reference,
        name: args.name,
        kernel: kernel_choice(args.kernel)?,
        size_bytes: args.size,
        platform: Some(args.platform),
    };
    let pulled = super::with_progress::<methods::image::Pull>(
        client,
        &params,
        quiet,
        "the daemon discards the partial image",
    )
    .await;
    if let Some(there) = &uploaded
        && let Err(e) = banger_client::upload::discard(client, there).await
    {
        eprintln!(
            "banger: could not remove the upload {there} (the daemon's next start does): {e}"
        );
    }
    let image: Image = pulled?;
    if ctx.json {
        return output::print_json(&image);
    }
    let size = match (image.size_bytes, image.allocated_bytes) {
        (Some(s), Some(a)) => format!(
            "rootfs {} ({} on disk)",
            output::human_bytes(s),
            output::human_bytes(a)
        ),
        _ => String::new(),
    };
    println!(
        "pulled image {} ({}) in {:.1}s: {size}",
        image.name,
        image.id,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn kernel_choice(args: KernelArgs) -> anyhow::Result<KernelChoice> {
    let opt = |p: Option<std::path::PathBuf>| p.as_deref().map(absolute).transpose();
    Ok(KernelChoice {
        kernel_path: opt(args.kernel)?,
        initrd_path: opt(args.initrd)?,
        modules_dir: opt(args.modules)?,
        kernel_ref: args.kernel_ref,
    })
}

fn register_params(args: RegisterArgs) -> anyhow::Result<ImageRegisterParams> {
    Ok(ImageRegisterParams {
        name: args.name,
        rootfs_path: absolute(&args.rootfs)?,
        kernel: kernel_choice(args.kernel)?,
    })
}

fn kind(image: &Image) -> &'static str {
    if image.managed {
        "managed"
    } else {
        "registered"
    }
}

fn list_row(image: &Image) -> Vec<String> {
    vec![
        image.name.clone(),
        image.id.clone(),
        kind(image).to_string(),
        image
            .size_bytes
            .map(output::human_bytes)
            .unwrap_or_else(|| "-".into()),
        image.source_ref.clone().unwrap_or_else(|| "-".into()),
        image.created_at.clone(),
    ]
}

fn details(ctx: &Context, image: &Image, disk: &ImageDisk) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| ctx.style.paint(Tone::Dim, "-"));
    let size = match (image.size_bytes, image.allocated_bytes) {
        (Some(s), Some(a)) => format!(
            "{} apparent, {} on disk",
            output::human_bytes(s),
            output::human_bytes(a)
        ),
        (Some(s), None) => output::human_bytes(s),
        _ => "-".into(),
    };
    let fields: Vec<(&str, String)> = vec![
        ("Name", image.name.clone()),
        ("ID", image.id.clone()),
        ("Kind", kind(image).to_string()),
        ("Rootfs", image.rootfs_path.clone()),
        ("Kernel", image.kernel_path.clone()),
        ("Initrd", opt(&image.initrd_path)),
        ("Modules", opt(&image.modules_dir)),
        ("Kernel ref", opt(&image.kernel_ref)),
        ("Artifact dir", opt(&image.artifact_dir)),
        ("Source", opt(&image.source_ref)),
        ("Digest", opt(&image.manifest_digest)),
        ("Platform", opt(&image.platform)),
        ("Size", size),
    ];
    let mut fields = fields;
    // Kernel files are stored once for all images; a reused rootfs is one inode.
    fields.push((
        "Disk",
        format!(
            "{} own, {} shared with other images or kernels",
            output::human_bytes(disk.own_bytes),
            output::human_bytes(disk.shared_bytes)
        ),
    ));
    fields.push(("Created", image.created_at.clone()));
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    fields
        .into_iter()
        .map(|(k, v)| {
            format!(
                "{}{}  {}\n",
                ctx.style.paint(Tone::Bold, k),
                " ".repeat(width - k.len()),
                // Values can come from an image, a registry or a kernel file.
                banger_api::text::visible(&v)
            )
        })
        .collect()
}
