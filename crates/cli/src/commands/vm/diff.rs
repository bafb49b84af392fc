//! `banger vm diff NAME [PATH]`: the guest's changes to the workspace `vm run PATH` copied
//! in, as a git patch (or its `--stat`); the engine is [`banger_client::diff`].

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use banger_client::Client;
use banger_client::diff::{Format, Records, prepare};
use clap::Args;

use crate::Context;

pub const DIFF_HELP: &str = "\
The baseline is what `banger vm run PATH` copied in (recorded on this host at copy time):
for a git repository its HEAD commit (so changes not committed on the host when it was
copied are part of the patch), for any other directory a snapshot of its files.
The guest's copy is fetched (as `vm cp` does) and compared with it: modified, added
(untracked too, unless the workspace's .gitignore ignores them), deleted, renamed and
mode-changed files, symlinks as symlinks, binary files as git binary patches. .git
directories, empty directories and special files are not part of a patch. No change: an
empty patch and exit status 0.

Applying it on the host:
  git repository:   git apply --index changes.patch   (in a clone at the copied commit)
  plain directory:  git apply changes.patch           (works outside a repository too)
                    patch -p1 < changes.patch         (GNU patch: text changes only; it
                                                       cannot apply git binary patches)

On a terminal, a patch holding control bytes is shown escaped (a note says so): write it
with --output or through a pipe to get it exactly.

Examples:
  banger vm run -d ~/src/app --name work && banger vm exec work -- make fix
  banger vm diff work --stat
  banger vm diff work --output fix.patch && git -C ~/src/app apply --index fix.patch
  banger vm diff work /root/other-checkout > other.patch
  banger vm run ~/src/app --rm --diff fix.patch -- sh -c './agent-task'";

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The VM.
    pub vm: String,
    /// The workspace's path in the guest (default: where `vm run` copied it, `/root/<dir
    /// name>`).
    pub path: Option<String>,
    /// Write the patch to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// A summary (git's --stat) instead of the patch.
    #[arg(long)]
    pub stat: bool,
}

pub async fn run(ctx: &Context, client: &Client, args: DiffArgs) -> anyhow::Result<u8> {
    let records = Records::new(&ctx.layout.state_dir);
    let prepared = prepare(client, &records, &args.vm, args.path.as_deref()).await?;
    let format = if args.stat {
        Format::Stat
    } else {
        Format::Patch
    };
    if let Some(file) = &args.output {
        let mut out =
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
        prepared.write(format, &mut out)?;
        out.flush()?;
    } else if std::io::stdout().is_terminal() {
        let mut text = Vec::new();
        prepared.write(format, &mut text)?;
        let (shown, escaped) = for_terminal(&text);
        std::io::stdout().write_all(shown.as_bytes())?;
        if escaped {
            eprintln!(
                "banger: the patch holds control bytes, shown escaped here; use --output FILE or a pipe for the exact patch"
            );
        }
    } else {
        let mut out = std::io::stdout().lock();
        prepared.write(format, &mut out)?;
        out.flush()?;
    }
    if prepared.is_empty() {
        eprintln!("no changes in {}", prepared.baseline.guest_path);
    }
    Ok(0)
}

/// Writes VM `vm`'s workspace patch to `file` (`vm run --diff`).
pub async fn write_patch_file(
    client: &Client,
    records: &Records,
    vm: &str,
    file: &Path,
) -> anyhow::Result<()> {
    let prepared = prepare(client, records, vm, None).await?;
    let mut out =
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    prepared.write(Format::Patch, &mut out)?;
    out.flush()?;
    Ok(())
}

/// The patch as a terminal may show it: control bytes (but newline and tab) escaped, and
/// whether any were.
fn for_terminal(patch: &[u8]) -> (String, bool) {
    let text = String::from_utf8_lossy(patch);
    let shown = banger_api::text::visible(&text);
    let escaped = shown.len() != text.len();
    (shown.into_owned(), escaped)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};
    use crate::commands::vm::VmCommand;

    #[test]
    fn arguments_parse() {
        let cli = Cli::try_parse_from([
            "banger", "vm", "diff", "dev", "/root/x", "--stat", "-o", "p",
        ])
        .expect("parses");
        match cli.command {
            Command::Vm(VmCommand::Diff(a)) => {
                assert_eq!(a.vm, "dev");
                assert_eq!(a.path.as_deref(), Some("/root/x"));
                assert!(a.stat);
                assert_eq!(a.output.as_deref(), Some(Path::new("p")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_terminal_sees_control_bytes_escaped() {
        let (shown, escaped) = for_terminal(b"+plain\n\t+tab\n");
        assert_eq!((shown.as_str(), escaped), ("+plain\n\t+tab\n", false));
        let (shown, escaped) = for_terminal(b"+\x1b]52;c;aGk=\x07\n");
        assert!(escaped);
        assert!(
            !shown.contains('\x1b') && shown.contains("\\x1b]52"),
            "{shown}"
        );
    }
}
