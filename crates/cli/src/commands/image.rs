//! `banger image …`

use banger_api::image::{Image, ImageDeleted, ImageList, ImageRef, ImageRegisterParams};
use banger_api::methods;
use banger_api::system::Empty;

use crate::Context;
use crate::args::{ImageCommand, RegisterArgs};
use crate::commands::absolute;
use crate::output::{self, Tone};

pub async fn run(ctx: &Context, command: ImageCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        ImageCommand::Register(args) => {
            let image: Image = client
                .call(methods::IMAGE_REGISTER, &register_params(args)?)
                .await?;
            if ctx.json {
                output::print_json(&image)
            } else {
                println!("registered image {} ({})", image.name, image.id);
                Ok(())
            }
        }
        ImageCommand::List => {
            let list: ImageList = client.call(methods::IMAGE_LIST, &Empty {}).await?;
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
            let image: Image = client
                .call(methods::IMAGE_SHOW, &ImageRef { image })
                .await?;
            if ctx.json {
                output::print_json(&image)
            } else {
                print!("{}", details(ctx, &image));
                Ok(())
            }
        }
        ImageCommand::Delete { image } => {
            let deleted: ImageDeleted = client
                .call(methods::IMAGE_DELETE, &ImageRef { image })
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
    }
}

fn register_params(args: RegisterArgs) -> anyhow::Result<ImageRegisterParams> {
    let opt = |p: Option<std::path::PathBuf>| p.as_deref().map(absolute).transpose();
    Ok(ImageRegisterParams {
        name: args.name,
        rootfs_path: absolute(&args.rootfs)?,
        kernel_path: opt(args.kernel.kernel)?,
        initrd_path: opt(args.kernel.initrd)?,
        modules_dir: opt(args.kernel.modules)?,
        kernel_ref: args.kernel.kernel_ref,
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

fn details(ctx: &Context, image: &Image) -> String {
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
        ("Created", image.created_at.clone()),
    ];
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    fields
        .into_iter()
        .map(|(k, v)| {
            format!(
                "{}{}  {v}\n",
                ctx.style.paint(Tone::Bold, k),
                " ".repeat(width - k.len())
            )
        })
        .collect()
}
