//! `banger vm cp SRC DST`: files and directory trees in and out of a VM, as tar streams
//! over `vm.cp.put` / `vm.cp.get` (upgraded connections, see
//! [`banger_api::vm::STREAM_UPGRADE`]). Also the tar plumbing `vm run PATH` uses to copy a
//! workspace in.
//!
//! One job per file: `pack` walks and packs local trees, `stream` moves archives
//! between a thread and the connection (bounded chunks, so memory stays flat), `extract`
//! is the host's one extractor, confined by construction (its docs give the rules).
//!
//! Where things land (as `cp -r` does, `NAME:PATH` on exactly one side):
//! - A guest PATH that is not absolute is relative to `/root` (`dev:` is `/root`).
//! - Upload `SRC` → `NAME:DST`: when DST ends in `/` or is an existing directory in the
//!   guest, SRC lands inside it as `DST/<basename of SRC>`; otherwise SRC is copied *as* DST
//!   (renamed; DST's parent is created if missing). Local `-` reads a tar stream from stdin
//!   and extracts it into DST.
//! - Download `NAME:SRC` → `DST`: when DST is an existing directory or ends in `/` (then it
//!   is created), SRC lands inside it as `DST/<basename of SRC>`; otherwise SRC is written
//!   as DST (DST's parent must exist). `.` and `..` in SRC are resolved by name before
//!   asking (`dev:/root/a/..` is `/root`). Local `-` writes the guest's tar stream to
//!   stdout as it comes.
//! - Modes, mtimes and symlinks (as symlinks) are kept both ways. A download writes only
//!   under `DST/<basename of SRC>` (or DST): any other entry, a device, a setuid bit or an
//!   oversized header ends the copy with an error naming the entry ([`extract`]).

mod extract;
mod pack;
mod stream;
#[cfg(test)]
mod testing;

use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;
use banger_api::methods;
use banger_api::vm::{VmCpGetParams, VmExecParams};
use banger_guest_proto::ExitStatus;
use clap::Args;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};
use crate::commands::vm::exec::{self, ExecEnd};

pub use extract::{Destination, Extracted, Limits, extract, guest_request};
pub use pack::{Entry, Kind, PackStats, Tree, pack};
pub use stream::{
    ChannelReader, ChannelWriter, Uploaded, download, put_stream, upload, upload_over,
};

#[derive(Debug, Args)]
pub struct CpArgs {
    /// What to copy: a local path, or NAME:PATH in a VM (`-`: a tar stream on stdin).
    pub src: String,
    /// Where to: NAME:PATH in a VM, or a local path (`-`: a tar stream on stdout).
    pub dst: String,
    /// No transfer summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Where a path lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// `-`: a tar stream on stdin or stdout.
    Stdio,
    /// `NAME:PATH`, PATH made absolute (relative to `/root`), a trailing `/` kept.
    Guest {
        vm: String,
        path: String,
    },
}

/// `NAME:PATH` when what precedes the first `:` is a valid VM name (so it has no `/`:
/// write `./a:b` for a local file with a colon); `-` is stdio; anything else is local.
pub fn parse_location(text: &str) -> Location {
    if text == "-" {
        return Location::Stdio;
    }
    if let Some((name, path)) = text.split_once(':')
        && banger_api::names::validate_name(name).is_ok()
    {
        return Location::Guest {
            vm: name.to_string(),
            path: guest_absolute(path),
        };
    }
    Location::Local(PathBuf::from(text))
}

/// A guest path made absolute: relative paths (and `~`, `~/…`) are under `/root`.
pub fn guest_absolute(path: &str) -> String {
    let rest = path
        .strip_prefix("~/")
        .or(if path == "~" { Some("") } else { None });
    match rest {
        Some(r) => format!("/root/{r}"),
        None if path.starts_with('/') => path.to_string(),
        None if path.is_empty() => "/root".to_string(),
        None => format!("/root/{path}"),
    }
}

/// What `vm cp` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    Upload {
        local: Location,
        vm: String,
        path: String,
    },
    Download {
        vm: String,
        path: String,
        local: Location,
    },
}

pub fn parse_transfer(src: &str, dst: &str) -> anyhow::Result<Transfer> {
    match (parse_location(src), parse_location(dst)) {
        (Location::Guest { .. }, Location::Guest { .. }) => anyhow::bail!(
            "both {src:?} and {dst:?} are in a VM; copy through the host: one side must be a local path"
        ),
        (local, Location::Guest { vm, path }) => Ok(Transfer::Upload { local, vm, path }),
        (Location::Guest { vm, path }, local) => Ok(Transfer::Download { vm, path, local }),
        _ => anyhow::bail!(
            "neither {src:?} nor {dst:?} names a VM path; write one side as NAME:PATH, e.g. dev:/root/"
        ),
    }
}

pub async fn run(client: &Client, args: CpArgs) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let (what, entries, bytes) = match parse_transfer(&args.src, &args.dst)? {
        Transfer::Upload { local, vm, path } => match local {
            Location::Stdio => {
                let stdin = exec::ThreadStdin::spawn().context("reading stdin")?;
                let result = put_stream(client, &vm, path.trim_end_matches('/'), stdin).await?;
                ("uploaded", result.entries, result.bytes)
            }
            Location::Local(src) => {
                let meta = std::fs::symlink_metadata(&src)
                    .with_context(|| format!("cannot copy {}", src.display()))?;
                let base = base_name(&src)?;
                let (dest, top) = upload_target(client, &vm, &path, &base).await?;
                let tree = Tree::of(&src, &meta)?;
                let result = upload(client, &vm, &dest, &top, tree).await?;
                ("uploaded", result.entries, result.bytes)
            }
            Location::Guest { .. } => unreachable!("parse_transfer"),
        },
        Transfer::Download { vm, path, local } => {
            let (path, top) = guest_request(&path);
            let top = top.ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot copy {path} from {vm}: it has no name; name a directory below /"
                )
            })?;
            let conn = client
                .upgrade::<methods::vm::CpGet>(&VmCpGetParams {
                    vm: vm.clone(),
                    path,
                })
                .await?;
            match local {
                Location::Stdio => {
                    let mut conn = conn;
                    let n = tokio::io::copy(&mut conn, &mut tokio::io::stdout()).await?;
                    ("downloaded", 0, n)
                }
                Location::Local(dst) => {
                    let dest = download_destination(&dst, top)?;
                    let stats = download(conn, dest, Limits::default()).await?;
                    ("downloaded", stats.entries, stats.bytes)
                }
                Location::Guest { .. } => unreachable!("parse_transfer"),
            }
        }
    };
    if !args.quiet {
        eprintln!("{}", rate_line(what, entries, bytes, started.elapsed()));
    }
    Ok(0)
}

/// `copied 120 entries, 3.5 MiB in 0.4s (8.7 MiB/s)`.
pub fn rate_line(what: &str, entries: u64, bytes: u64, elapsed: std::time::Duration) -> String {
    let mib = bytes as f64 / (1u64 << 20) as f64;
    let secs = elapsed.as_secs_f64().max(1e-3);
    let count = if entries > 0 {
        format!("{entries} entr{}, ", if entries == 1 { "y" } else { "ies" })
    } else {
        String::new()
    };
    format!(
        "{what} {count}{mib:.1} MiB in {secs:.1}s ({:.1} MiB/s)",
        mib / secs
    )
}

fn base_name(path: &Path) -> anyhow::Result<OsString> {
    let abs = std::path::absolute(path)?;
    // `.`, `dir/..` and the like: the name of what they point at.
    let resolved = if abs
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        || abs.file_name().is_none()
    {
        std::fs::canonicalize(&abs)?
    } else {
        abs
    };
    resolved
        .file_name()
        .map(OsStr::to_os_string)
        .ok_or_else(|| anyhow::anyhow!("cannot copy {}: it has no name", path.display()))
}

/// The guest directory to extract into and the archive's top-level name, by the rules in
/// the module docs.
async fn upload_target(
    client: &Client,
    vm: &str,
    path: &str,
    src_name: &OsStr,
) -> anyhow::Result<(String, OsString)> {
    let trimmed = path.trim_end_matches('/');
    if path.ends_with('/') || trimmed.is_empty() || guest_is_dir(client, vm, trimmed).await? {
        let dest = if trimmed.is_empty() { "/" } else { trimmed };
        return Ok((dest.to_string(), src_name.to_os_string()));
    }
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    let parent = if parent.is_empty() { "/" } else { parent };
    Ok((parent.to_string(), OsString::from(name)))
}

/// Is `path` an existing directory in the guest? Asked with `test -d`; in an image without
/// `test` (distroless), from the first entry of a `vm.cp.get` of the path.
async fn guest_is_dir(client: &Client, vm: &str, path: &str) -> anyhow::Result<bool> {
    let params = VmExecParams {
        vm: vm.to_string(),
        argv: vec!["test".into(), "-d".into(), path.into()],
        env: Vec::new(),
        cwd: None,
        user: None,
        tty: None,
        term: None,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (_keep, controls) = mpsc::unbounded_channel();
    let end = exec::session(client, &params, None::<&[u8]>, controls, &mut out, &mut err).await?;
    match end {
        ExecEnd::Exited(ExitStatus::Code(0)) => Ok(true),
        ExecEnd::Exited(_) => Ok(false),
        _ => {
            let got = client
                .upgrade::<methods::vm::CpGet>(&VmCpGetParams {
                    vm: vm.to_string(),
                    path: path.to_string(),
                })
                .await;
            let mut conn = match got {
                Ok(conn) => conn,
                Err(ClientError::Api(e)) if e.code == banger_api::ErrorCode::NotFound => {
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            };
            let mut header = [0u8; 512];
            conn.read_exact(&mut header).await?;
            // Only the header is wanted: closing the connection ends the stream.
            Ok(header[156] == b'5')
        }
    }
}

/// The local directory to extract into and the new top-level name (when DST names the
/// copy itself), by the rules in the module docs.
pub fn download_target(dst: &Path) -> anyhow::Result<(PathBuf, Option<OsString>)> {
    let text = dst.as_os_str().as_encoded_bytes();
    if dst.is_dir() {
        return Ok((dst.to_path_buf(), None));
    }
    if text.ends_with(b"/") {
        std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
        return Ok((dst.to_path_buf(), None));
    }
    let name = dst
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("cannot write to {}", dst.display()))?;
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        anyhow::bail!(
            "cannot write {}: directory {} does not exist",
            dst.display(),
            parent.display()
        );
    }
    Ok((parent, Some(name.to_os_string())))
}

/// Where a download of the guest path named `top` lands (see [`download_target`]).
pub fn download_destination(dst: &Path, top: OsString) -> anyhow::Result<Destination> {
    let (dir, rename) = download_target(dst)?;
    Ok(Destination {
        dir,
        name: rename.unwrap_or_else(|| top.clone()),
        top,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_and_local_sides_are_told_apart() {
        assert_eq!(
            parse_location("dev:/etc/hosts"),
            Location::Guest {
                vm: "dev".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(
            parse_location("dev:src"),
            Location::Guest {
                vm: "dev".into(),
                path: "/root/src".into()
            }
        );
        assert_eq!(
            parse_location("dev:"),
            Location::Guest {
                vm: "dev".into(),
                path: "/root".into()
            }
        );
        assert_eq!(
            parse_location("dev:~/x/"),
            Location::Guest {
                vm: "dev".into(),
                path: "/root/x/".into()
            }
        );
        assert_eq!(parse_location("./a:b"), Location::Local("./a:b".into()));
        assert_eq!(
            parse_location("/tmp/a:b"),
            Location::Local("/tmp/a:b".into())
        );
        assert_eq!(
            parse_location("Dev:x"),
            Location::Local("Dev:x".into()),
            "not a VM name"
        );
        assert_eq!(parse_location("file"), Location::Local("file".into()));
        assert_eq!(parse_location("-"), Location::Stdio);
    }

    #[test]
    fn exactly_one_side_is_in_a_vm() {
        assert_eq!(
            parse_transfer("./f", "dev:/root/").expect("upload"),
            Transfer::Upload {
                local: Location::Local("./f".into()),
                vm: "dev".into(),
                path: "/root/".into()
            }
        );
        assert_eq!(
            parse_transfer("dev:/var/log", ".").expect("download"),
            Transfer::Download {
                vm: "dev".into(),
                path: "/var/log".into(),
                local: Location::Local(".".into())
            }
        );
        let e = parse_transfer("a:/x", "b:/y")
            .expect_err("two VMs")
            .to_string();
        assert!(e.contains("one side must be a local path"), "{e}");
        let e = parse_transfer("a", "b").expect_err("no VM").to_string();
        assert!(e.contains("NAME:PATH"), "{e}");
    }

    #[test]
    fn download_targets_follow_cp() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path();
        assert_eq!(download_target(d).expect("dir"), (d.to_path_buf(), None));
        let new_dir = d.join("new/");
        let mut with_slash = new_dir.clone().into_os_string();
        with_slash.push("/");
        let (dir, rename) = download_target(Path::new(&with_slash)).expect("created");
        assert!(dir.is_dir() && rename.is_none());
        let (dir, rename) = download_target(&d.join("copy")).expect("renamed");
        assert_eq!(
            (dir, rename),
            (d.to_path_buf(), Some(OsString::from("copy")))
        );
        assert!(download_target(&d.join("missing/copy")).is_err());
    }

    /// A tree with a file, an executable, a read-only dir, a symlink and an empty dir.

    #[test]
    fn a_download_asks_for_a_name_and_lands_under_it() {
        assert_eq!(
            guest_request("/root/out/"),
            ("/root/out".to_string(), Some(OsString::from("out")))
        );
        assert_eq!(
            guest_request("/root/a/../b/./c"),
            ("/root/b/c".to_string(), Some(OsString::from("c")))
        );
        assert_eq!(
            guest_request("/root/.."),
            ("/".to_string(), None),
            "/ has no name"
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path();
        // An existing directory: the asked-for name lands inside it.
        assert_eq!(
            download_destination(d, "out".into()).expect("dir"),
            Destination {
                dir: d.to_path_buf(),
                top: "out".into(),
                name: "out".into()
            }
        );
        // A new name: the archive's top is renamed.
        assert_eq!(
            download_destination(&d.join("copy"), "out".into()).expect("renamed"),
            Destination {
                dir: d.to_path_buf(),
                top: "out".into(),
                name: "copy".into()
            }
        );
    }

    #[test]
    fn the_rate_line_is_readable() {
        let l = rate_line(
            "copied",
            12,
            3 << 20,
            std::time::Duration::from_millis(1500),
        );
        assert_eq!(l, "copied 12 entries, 3.0 MiB in 1.5s (2.0 MiB/s)");
    }
}
