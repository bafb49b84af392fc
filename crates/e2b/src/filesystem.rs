//! envd's `filesystem.Filesystem` service (Stat, ListDir, MakeDir, Move, Remove) as small
//! `sh` scripts in the guest: paths travel as arguments, never inside the script, and
//! entries come back NUL-separated from GNU find's `-printf` (so any byte in a name
//! survives), bounded in size. Relative paths resolve against the user's home, as envd's
//! do. Watching compares these listings (`watch.rs`).

use banger_client::Client;
use serde::Deserialize;
use serde_json::json;

use crate::connect::{Code, RpcError};
use crate::guest::{self, Captured, User};

/// The largest listing we take from a guest.
const MAX_LISTING: usize = 16 << 20;
/// Fields of one entry in [`PRINTF`].
const FIELDS: usize = 10;
/// Type, size, mode (octal), permissions, owner, group, mtime, link target, path, and the
/// path relative to where find started.
const PRINTF: &str = r"%y\0%s\0%m\0%M\0%u\0%g\0%T@\0%l\0%p\0%P\0";

/// Exit codes our scripts use for envd's errors.
const NOT_FOUND: i32 = 44;
const NOT_A_DIRECTORY: i32 = 45;
const EXISTS: i32 = 46;
const NO_FIND: i32 = 47;

/// Makes `$p` absolute from the user's home (the script's first lines).
const PROLOGUE: &str = r#"cd "${HOME:-/}" 2>/dev/null || cd /
command -v find >/dev/null 2>&1 || exit 47
abs() { case $1 in /*) printf '%s' "$1" ;; '~') printf '%s' "$PWD" ;; '~/'*) printf '%s/%s' "$PWD" "${1#\~/}" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
"#;

#[derive(Debug, Deserialize)]
pub struct PathRequest {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub depth: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct MoveRequest {
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub destination: String,
}

fn required(path: &str) -> Result<&str, RpcError> {
    if path.is_empty() {
        return Err(RpcError::new(Code::InvalidArgument, "path is required"));
    }
    if path.contains('\0') {
        return Err(RpcError::new(
            Code::InvalidArgument,
            "path contains a NUL byte",
        ));
    }
    Ok(path)
}

async fn run(
    client: &Client,
    vm: &str,
    user: &User,
    body: &str,
    args: &[&str],
    path: &str,
) -> Result<Captured, RpcError> {
    let script = format!("{PROLOGUE}{body}");
    let done = guest::script(
        client,
        vm,
        user,
        &script,
        args,
        None,
        MAX_LISTING,
        Some(guest::SCRIPT_TIME),
    )
    .await?;
    let shown = crate::shown(path, 400);
    match done.code {
        0 => Ok(done),
        NOT_FOUND => Err(RpcError::new(
            Code::NotFound,
            format!("path '{shown}' does not exist"),
        )),
        NOT_A_DIRECTORY => Err(RpcError::new(
            Code::InvalidArgument,
            format!("path '{shown}' is not a directory"),
        )),
        EXISTS => Err(RpcError::new(
            Code::AlreadyExists,
            format!("path '{shown}' already exists"),
        )),
        NO_FIND => Err(RpcError::new(
            Code::FailedPrecondition,
            "the sandbox's image has no `find`: the filesystem calls need GNU findutils",
        )),
        code => Err(RpcError::new(
            Code::Internal,
            format!("{shown}: {} (exit {code})", done.stderr_line()),
        )),
    }
}

/// Runs `body`, which ends by printing one [`PRINTF`] record: `{"entry": EntryInfo}`.
async fn entry_of(
    client: &Client,
    vm: &str,
    user: &User,
    body: &str,
    args: &[&str],
    path: &str,
) -> Result<serde_json::Value, RpcError> {
    let done = run(client, vm, user, body, args, path).await?;
    let entry = entries(&done.stdout)?
        .into_iter()
        .next()
        .ok_or_else(|| RpcError::new(Code::Internal, "the guest's find printed no entry"))?;
    Ok(json!({ "entry": entry }))
}

/// `Stat`.
pub async fn stat(
    client: &Client,
    vm: &str,
    user: &User,
    req: &PathRequest,
) -> Result<serde_json::Value, RpcError> {
    let path = required(&req.path)?;
    let body = format!(
        r#"p=$(abs "$1"); [ -e "$p" ] || [ -L "$p" ] || exit 44
find "$p" -maxdepth 0 -printf '{PRINTF}'"#
    );
    entry_of(client, vm, user, &body, &[path], path).await
}

/// `ListDir`: entries to `depth` levels below the directory (1: its children).
pub async fn list_dir(
    client: &Client,
    vm: &str,
    user: &User,
    req: &PathRequest,
) -> Result<serde_json::Value, RpcError> {
    let depth = req
        .depth
        .as_ref()
        .and_then(crate::connect::uint)
        .unwrap_or(1);
    let entries: Vec<_> = listing(client, vm, user, &req.path, depth)
        .await?
        .into_iter()
        .map(|(entry, _)| entry)
        .collect();
    Ok(json!({ "entries": entries }))
}

/// Every entry under the directory `path` to `depth` levels (1..=64), with its path
/// relative to the directory.
pub async fn listing(
    client: &Client,
    vm: &str,
    user: &User,
    path: &str,
    depth: u64,
) -> Result<Vec<(serde_json::Value, String)>, RpcError> {
    let path = required(path)?;
    let depth = depth.clamp(1, 64).to_string();
    let body = format!(
        r#"p=$(abs "$1"); [ -e "$p" ] || exit 44; [ -d "$p" ] || exit 45
find -H "$p" -mindepth 1 -maxdepth "$2" -printf '{PRINTF}'"#
    );
    let done = run(client, vm, user, &body, &[path, &depth], path).await?;
    records(&done.stdout)
}

/// `MakeDir`: with parents; already_exists when it is there.
pub async fn make_dir(
    client: &Client,
    vm: &str,
    user: &User,
    req: &PathRequest,
) -> Result<serde_json::Value, RpcError> {
    let path = required(&req.path)?;
    let body = format!(
        r#"p=$(abs "$1"); if [ -e "$p" ] || [ -L "$p" ]; then exit 46; fi
mkdir -p -- "$p" || exit 1
find "$p" -maxdepth 0 -printf '{PRINTF}'"#
    );
    entry_of(client, vm, user, &body, &[path], path).await
}

/// `Move`: a rename, parents of the destination made.
pub async fn rename(
    client: &Client,
    vm: &str,
    user: &User,
    req: &MoveRequest,
) -> Result<serde_json::Value, RpcError> {
    let (source, destination) = (required(&req.source)?, required(&req.destination)?);
    let body = format!(
        r#"s=$(abs "$1"); d=$(abs "$2"); [ -e "$s" ] || [ -L "$s" ] || exit 44
mkdir -p -- "$(dirname -- "$d")" && mv -f -- "$s" "$d" || exit 1
find "$d" -maxdepth 0 -printf '{PRINTF}'"#
    );
    entry_of(client, vm, user, &body, &[source, destination], source).await
}

/// `Remove`: a file, or a directory with everything in it.
pub async fn remove(
    client: &Client,
    vm: &str,
    user: &User,
    req: &PathRequest,
) -> Result<serde_json::Value, RpcError> {
    let path = required(&req.path)?;
    let body = r#"p=$(abs "$1"); [ -e "$p" ] || [ -L "$p" ] || exit 44
rm -rf -- "$p""#;
    run(client, vm, user, body, &[path], path).await?;
    Ok(json!({}))
}

/// envd's `EntryInfo`s from [`PRINTF`] records.
fn entries(out: &[u8]) -> Result<Vec<serde_json::Value>, RpcError> {
    Ok(records(out)?.into_iter().map(|(entry, _)| entry).collect())
}

/// Each [`PRINTF`] record as an `EntryInfo` and the path relative to find's start.
fn records(out: &[u8]) -> Result<Vec<(serde_json::Value, String)>, RpcError> {
    let fields: Vec<&[u8]> = out.split(|b| *b == 0).collect();
    // A trailing NUL leaves one empty field at the end.
    let fields = &fields[..fields.len().saturating_sub(1)];
    if !fields.len().is_multiple_of(FIELDS) {
        return Err(RpcError::new(
            Code::Internal,
            "the guest's find printed a malformed listing (is it GNU find?)",
        ));
    }
    Ok(fields
        .chunks(FIELDS)
        .map(|f| (entry(f), String::from_utf8_lossy(f[9]).into_owned()))
        .collect())
}

fn entry(f: &[&[u8]]) -> serde_json::Value {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let path = text(f[8]);
    let name = path.rsplit('/').next().unwrap_or("").to_string();
    let kind = match f[0] {
        b"d" => "FILE_TYPE_DIRECTORY",
        b"l" => "FILE_TYPE_SYMLINK",
        // Regular files and everything else (devices, sockets, fifos) are files to envd.
        _ => "FILE_TYPE_FILE",
    };
    let mode = u32::from_str_radix(&text(f[2]), 8).unwrap_or(0);
    let mtime = text(f[6]);
    let mut entry = json!({
        "name": name,
        "type": kind,
        "path": path,
        "size": text(f[1]),
        "mode": mode,
        "permissions": text(f[3]),
        "owner": text(f[4]),
        "group": text(f[5]),
        "modifiedTime": timestamp(&mtime),
    });
    if f[0] == b"l" {
        entry["symlinkTarget"] = json!(text(f[7]));
    }
    entry
}

/// find's `%T@` (seconds with a fraction) as a protobuf Timestamp (RFC 3339).
fn timestamp(epoch: &str) -> String {
    let (secs, frac) = epoch.split_once('.').unwrap_or((epoch, ""));
    let secs: u64 = secs.parse().unwrap_or(0);
    let nanos: String = frac
        .chars()
        .filter(char::is_ascii_digit)
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    let base = banger_api::time::rfc3339(secs);
    format!("{}.{nanos}Z", base.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_records_become_entry_infos() {
        let out = b"f\x005\x00644\x00-rw-r--r--\x00root\x00root\x001700000000.25\x00\x00/root/a b\nc\x00a b\nc\x00\
                    l\x004\x00777\x00lrwxrwxrwx\x00root\x00root\x001700000000.0000000000\x00a b\x00/root/d/link\x00d/link\x00";
        assert_eq!(records(out).unwrap()[1].1, "d/link");
        let all = entries(out).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0]["name"], "a b\nc");
        assert_eq!(all[0]["type"], "FILE_TYPE_FILE");
        assert_eq!(all[0]["size"], "5");
        assert_eq!(all[0]["mode"], 0o644);
        assert_eq!(all[0]["modifiedTime"], "2023-11-14T22:13:20.250000000Z");
        assert_eq!(all[1]["type"], "FILE_TYPE_SYMLINK");
        assert_eq!(all[1]["symlinkTarget"], "a b");
        assert!(entries(b"f\x005\x00").is_err());
        assert!(entries(b"").unwrap().is_empty());
    }
}
