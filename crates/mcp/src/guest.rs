//! What the tools do in a sandbox, through the client crate: an exec with a deadline and
//! bounded output, one file in or out as a tar stream (`vm.cp.get` / `vm.cp.put`, as
//! `vm cp`), a directory listing by a small `sh` script.

use std::time::Duration;

use banger_api::vm::VmExecParams;
use banger_client::exec::{self, Control, ExecEnd, ExitStatus};
use banger_client::{Client, transfer};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::capture::{Capped, Captured};
use crate::params::OUTPUT_CAP;

/// Tar headers (with long-name extensions) read beyond a file's content.
const TAR_SLACK: u64 = 64 << 10;

/// A failure as the agent sees it: banger's message (controls made visible).
pub type ToolError = String;

/// The message of a client error: the daemon's own, with its code, or the context chain.
pub fn message(e: &banger_client::Error) -> ToolError {
    let text = match e.api() {
        Some(api) => format!("{} [{}]", api.message, api.code),
        None => format!("{e:#}"),
    };
    banger_api::text::visible(&text).into_owned()
}

fn failed(e: impl Into<banger_client::Error>) -> ToolError {
    message(&e.into())
}

/// What `sandbox_exec` reports.
#[derive(Debug, Serialize)]
pub struct ExecReport {
    /// The exit code; 128+N for signal N, 127/126 when the program could not start,
    /// null after a timeout.
    pub exit_code: Option<i32>,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Why the command ended unusually (timeout, failed start), for the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What to run: the checked arguments of `sandbox_exec`.
pub struct Command {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<String>,
    pub cwd: Option<String>,
    pub timeout: Duration,
}

/// Runs `command` in `vm`, with its stdin, its session dropped at the timeout.
pub async fn run(client: &Client, vm: &str, command: Command) -> Result<ExecReport, ToolError> {
    let Command {
        argv,
        env,
        stdin,
        cwd,
        timeout,
    } = command;
    let params = VmExecParams {
        vm: vm.to_string(),
        argv,
        env,
        cwd: Some(cwd.map_or_else(|| "/root".to_string(), |c| transfer::guest_absolute(&c))),
        user: None,
        tty: None,
        term: None,
    };
    let (mut out, mut err) = (Capped::new(OUTPUT_CAP), Capped::new(OUTPUT_CAP));
    let (end, timed_out) = bounded(client, &params, stdin, timeout, &mut out, &mut err).await;
    let end = end.transpose().map_err(|e| message(&e))?;
    Ok(report(end, timed_out, timeout, out.finish(), err.finish()))
}

/// The session, dropped at the deadline: closing the connection makes the daemon hang up
/// on the command, and the agent then kills its whole process group (SIGHUP, SIGKILL a
/// second later), children a SIGKILL of the command alone would leave running.
async fn bounded(
    client: &Client,
    params: &VmExecParams,
    stdin: Option<String>,
    timeout: Duration,
    out: &mut Capped,
    err: &mut Capped,
) -> (Option<Result<ExecEnd, banger_client::Error>>, bool) {
    // No signals or resizes to send: the sender only has to outlive the session.
    let (_controls, rx) = mpsc::unbounded_channel::<Control>();
    let input = stdin.as_ref().map(String::as_bytes);
    let session = exec::session(client, params, input, rx, out, err);
    match tokio::time::timeout(timeout, session).await {
        Ok(end) => (Some(end), false),
        Err(_) => (None, true),
    }
}

fn report(
    end: Option<ExecEnd>,
    timed_out: bool,
    timeout: Duration,
    out: Captured,
    err: Captured,
) -> ExecReport {
    let (exit_code, signal) = match &end {
        Some(ExecEnd::Exited(ExitStatus::Signal(s))) => (Some(128 + s), Some(*s)),
        Some(end) => (Some(end.shell_code()), None),
        None => (None, None),
    };
    let note = if timed_out {
        Some(format!(
            "timed out after {}s: the command and its process group were killed",
            timeout.as_secs()
        ))
    } else if let Some(ExecEnd::FailedToStart(f)) = &end {
        Some(banger_api::text::visible(&f.message).into_owned())
    } else {
        None
    };
    ExecReport {
        exit_code,
        signal,
        timed_out,
        stdout: out.text,
        stderr: err.text,
        stdout_bytes: out.total_bytes,
        stderr_bytes: err.total_bytes,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        note,
    }
}

/// What `sandbox_read_file` reports.
#[derive(Debug, Serialize)]
pub struct FileContent {
    pub path: String,
    pub size: u64,
    pub mode: String,
    pub content: String,
}

/// One regular file's text, refused when over `max` bytes or not UTF-8.
pub async fn read_file(
    client: &Client,
    vm: &str,
    path: &str,
    max: u64,
) -> Result<FileContent, ToolError> {
    let path = transfer::guest_absolute(path);
    let (conn, _top) = transfer::open_download(client, vm, &path)
        .await
        .map_err(|e| message(&e))?;
    let mut archive = Vec::new();
    conn.take(max + TAR_SLACK)
        .read_to_end(&mut archive)
        .await
        .map_err(|e| format!("reading {path} from {vm}: {e}"))?;
    let (size, mode, bytes) = first_file(&archive, &path, max)?;
    let content = String::from_utf8(bytes).map_err(|_| {
        format!(
            "{path} is not UTF-8 text ({size} bytes); read binary files with sandbox_exec, e.g. `base64 {path}`"
        )
    })?;
    Ok(FileContent {
        path,
        size,
        mode: format!("{mode:o}"),
        content,
    })
}

/// The size, mode and content of the archive's first entry, which must be a regular file
/// of at most `max` bytes.
fn first_file(archive: &[u8], path: &str, max: u64) -> Result<(u64, u32, Vec<u8>), ToolError> {
    let bad = |e: std::io::Error| format!("reading {path}: {e}");
    let mut tar = tar::Archive::new(archive);
    let mut entries = tar.entries().map_err(bad)?;
    let mut entry = entries
        .next()
        .ok_or_else(|| format!("{path}: the guest sent nothing"))?
        .map_err(bad)?;
    let header = entry.header();
    let mode = header.mode().map_err(bad)? & 0o7777;
    match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => {}
        tar::EntryType::Directory => {
            return Err(format!(
                "{path} is a directory: list it with sandbox_list_dir"
            ));
        }
        tar::EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            return Err(format!(
                "{path} is a symbolic link to {}: read its target",
                banger_api::text::visible(&target)
            ));
        }
        _ => return Err(format!("{path} is not a regular file")),
    }
    let size = entry.size();
    if size > max {
        return Err(format!(
            "{path} is {size} bytes, over max_bytes {max}; read a part with sandbox_exec (`head -c N`, `sed -n`)"
        ));
    }
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut content).map_err(bad)?;
    Ok((size, mode, content))
}

/// Writes `content` to `dir/name` with `mode` (one tar entry through `vm.cp.put`).
pub async fn write_file(
    client: &Client,
    vm: &str,
    dir: &str,
    name: &str,
    content: &[u8],
    mode: u32,
) -> Result<u64, ToolError> {
    let archive =
        one_file_archive(name, content, mode).map_err(|e| format!("packing {name}: {e}"))?;
    let copied = transfer::copy_in_stream(client, vm, dir, archive.as_slice())
        .await
        .map_err(failed)?;
    Ok(copied.bytes)
}

fn one_file_archive(name: &str, content: &[u8], mode: u32) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(content.len() as u64);
    header.set_mode(mode);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    header.set_mtime(now);
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(&mut header, name, content)?;
    builder.into_inner()
}

/// One directory entry of `sandbox_list_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirEntry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    /// Octal permission bits.
    pub mode: String,
}

/// Entries listed per call, at most.
const MAX_ENTRIES: usize = 10_000;

/// For each entry of the directory `$1` (dot files too), `stat`'s type/size/mode and the
/// raw name, each NUL-terminated: names may hold any byte but NUL.
const LIST_SCRIPT: &str = r#"cd -- "$1" || exit 2
for f in * .[!.]* ..?*; do
  if [ -e "$f" ] || [ -L "$f" ]; then
    printf '%s\0%s\0' "$(stat -c '%F/%s/%a' -- "$f")" "$f"
  fi
done"#;

pub async fn list_dir(client: &Client, vm: &str, path: &str) -> Result<Vec<DirEntry>, ToolError> {
    let path = transfer::guest_absolute(path);
    let argv = ["/bin/sh", "-c", LIST_SCRIPT, "sh", &path]
        .map(String::from)
        .to_vec();
    let listing = Command {
        argv,
        env: Vec::new(),
        stdin: None,
        cwd: Some("/".into()),
        timeout: Duration::from_secs(60),
    };
    let report = run(client, vm, listing).await?;
    if report.exit_code != Some(0) {
        // A failed start (an image without sh or stat) says why in the note.
        let why = match report.stderr.trim_end() {
            "" => report.note.unwrap_or_else(|| "the listing failed".into()),
            stderr => banger_api::text::visible(stderr).into_owned(),
        };
        return Err(format!("cannot list {path}: {why}"));
    }
    if report.stdout_truncated {
        return Err(format!(
            "{path} has too many entries to list; use sandbox_exec (`ls | head`)"
        ));
    }
    Ok(parse_listing(&report.stdout))
}

/// Pairs of `TYPE/SIZE/MODE` and name, NUL-terminated (see [`LIST_SCRIPT`]).
pub fn parse_listing(out: &str) -> Vec<DirEntry> {
    let mut fields = out.split('\0');
    let mut entries = Vec::new();
    while let (Some(meta), Some(name)) = (fields.next(), fields.next()) {
        if entries.len() == MAX_ENTRIES {
            break;
        }
        let mut parts = meta.rsplitn(3, '/');
        let (Some(mode), Some(size), Some(kind)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        entries.push(DirEntry {
            name: name.to_string(),
            kind: kind_of(kind).to_string(),
            size: size.parse().unwrap_or(0),
            mode: mode.to_string(),
        });
    }
    entries
}

/// `stat %F`'s words (GNU and busybox) as one short type.
fn kind_of(stat_type: &str) -> &'static str {
    match stat_type {
        "regular file" | "regular empty file" => "file",
        "directory" => "dir",
        "symbolic link" => "symlink",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_parse_names_with_any_byte_but_nul() {
        let out = "regular file/12/644\0a b\n c\0directory/4096/755\0.git\0symbolic link/3/777\0l\0fifo/0/644\0p\0";
        let got = parse_listing(out);
        let kinds: Vec<_> = got
            .iter()
            .map(|e| (e.name.as_str(), e.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("a b\n c", "file"),
                (".git", "dir"),
                ("l", "symlink"),
                ("p", "other")
            ]
        );
        assert_eq!((got[0].size, got[0].mode.as_str()), (12, "644"));
    }

    #[test]
    fn a_one_file_archive_reads_back() {
        let archive = one_file_archive("x.sh", b"echo hi\n", 0o755).expect("pack");
        let (size, mode, content) = first_file(&archive, "/root/x.sh", 100).expect("read");
        assert_eq!(
            (size, mode, content.as_slice()),
            (8, 0o755, &b"echo hi\n"[..])
        );
        let e = first_file(&archive, "/root/x.sh", 4).expect_err("over max");
        assert!(e.contains("over max_bytes 4"), "{e}");
    }

    #[test]
    fn timeouts_and_signals_are_reported() {
        let cap = |s: &str| Captured {
            text: s.into(),
            total_bytes: s.len() as u64,
            truncated: false,
        };
        let r = report(
            Some(ExecEnd::Exited(ExitStatus::Signal(9))),
            true,
            Duration::from_secs(2),
            cap(""),
            cap(""),
        );
        assert_eq!(
            (r.exit_code, r.signal, r.timed_out),
            (Some(137), Some(9), true)
        );
        assert!(r.note.is_some_and(|n| n.contains("timed out after 2s")));
        let r = report(None, true, Duration::from_secs(2), cap("x"), cap(""));
        assert_eq!((r.exit_code, r.stdout.as_str()), (None, "x"));
        let r = report(
            Some(ExecEnd::Exited(ExitStatus::Code(3))),
            false,
            Duration::from_secs(2),
            cap("out\n"),
            cap("err\n"),
        );
        assert_eq!((r.exit_code, r.signal, r.note), (Some(3), None, None));
    }
}
