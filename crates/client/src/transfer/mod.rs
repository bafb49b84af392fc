//! File transfer (`banger vm cp SRC DST`): files and directory trees in and out of a VM, as
//! tar streams over `vm.cp.put` / `vm.cp.get` (upgraded connections, see
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
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::Error;
use crate::exec::{self, ExecEnd, ExitStatus};
use crate::transport::{Client, ClientError};

pub use extract::{Destination, Extracted, Limits, extract, guest_request};
pub(crate) use extract::{private_dir, remove_tree};
pub use pack::{Entry, Kind, PackStats, Tree, pack};
pub use stream::{
    ChannelReader, ChannelWriter, Uploaded, download, put_stream, upload, upload_over,
};

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

pub fn parse_transfer(src: &str, dst: &str) -> Result<Transfer, Error> {
    match (parse_location(src), parse_location(dst)) {
        (Location::Guest { .. }, Location::Guest { .. }) => Err(anyhow::anyhow!(
            "both {src:?} and {dst:?} are in a VM; copy through the host: one side must be a local path"
        )
        .into()),
        (local, Location::Guest { vm, path }) => Ok(Transfer::Upload { local, vm, path }),
        (Location::Guest { vm, path }, local) => Ok(Transfer::Download { vm, path, local }),
        _ => Err(anyhow::anyhow!(
            "neither {src:?} nor {dst:?} names a VM path; write one side as NAME:PATH, e.g. dev:/root/"
        )
        .into()),
    }
}

/// What a copy moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Archive entries (0 when a raw tar stream passed through uncounted).
    pub entries: u64,
    pub bytes: u64,
}

/// Copies the local file or tree `src` to `path` in `vm` (where it lands: the module docs).
pub async fn copy_in(client: &Client, vm: &str, path: &str, src: &Path) -> Result<Copied, Error> {
    let meta =
        std::fs::symlink_metadata(src).with_context(|| format!("cannot copy {}", src.display()))?;
    let base = base_name(src)?;
    let (dest, top) = upload_target(client, vm, path, &base).await?;
    let tree = Tree::of(src, &meta)?;
    let result = upload(client, vm, &dest, &top, tree).await?;
    Ok(Copied {
        entries: result.entries,
        bytes: result.bytes,
    })
}

/// Extracts the tar stream read from `input` into the directory `path` in `vm`, as it is.
pub async fn copy_in_stream<I: AsyncRead + Unpin>(
    client: &Client,
    vm: &str,
    path: &str,
    input: I,
) -> Result<Copied, Error> {
    let result = put_stream(client, vm, path.trim_end_matches('/'), input).await?;
    Ok(Copied {
        entries: result.entries,
        bytes: result.bytes,
    })
}

/// The guest's tar stream of `path` in `vm`, unread and unchecked (for a front end that
/// passes it on, e.g. to stdout), with the name of its top entry.
pub async fn open_download(
    client: &Client,
    vm: &str,
    path: &str,
) -> Result<(impl AsyncRead + Unpin + use<>, OsString), Error> {
    let (path, top) = guest_request(path);
    let top = top.ok_or_else(|| {
        anyhow::anyhow!("cannot copy {path} from {vm}: it has no name; name a directory below /")
    })?;
    let conn = client
        .upgrade::<methods::vm::CpGet>(&VmCpGetParams {
            vm: vm.to_string(),
            path,
        })
        .await?;
    Ok((conn, top))
}

/// Copies `path` from `vm` to the local `dst` through the confined extractor (where it
/// lands: the module docs).
pub async fn copy_out(client: &Client, vm: &str, path: &str, dst: &Path) -> Result<Copied, Error> {
    let (conn, top) = open_download(client, vm, path).await?;
    let dest = download_destination(dst, top)?;
    let stats = download(conn, dest, Limits::default()).await?;
    Ok(Copied {
        entries: stats.entries,
        bytes: stats.bytes,
    })
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
}
