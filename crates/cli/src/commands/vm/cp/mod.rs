//! `banger vm cp SRC DST`: files and directory trees in and out of a VM, as tar streams
//! over `vm.cp.put` / `vm.cp.get` (upgraded connections, see
//! [`banger_api::vm::STREAM_UPGRADE`]). Also the tar plumbing `vm run PATH` uses to copy a
//! workspace in.
//!
//! Streaming: the archive is packed (or extracted) on a thread of its own and travels in
//! bounded chunks through a channel, so memory stays flat whatever the size of the files.
//!
//! Where things land (as `cp -r` does, `NAME:PATH` on exactly one side):
//! - A guest PATH that is not absolute is relative to `/root` (`dev:` is `/root`).
//! - Upload `SRC` → `NAME:DST`: when DST ends in `/` or is an existing directory in the
//!   guest, SRC lands inside it as `DST/<basename of SRC>`; otherwise SRC is copied *as* DST
//!   (renamed; DST's parent is created if missing). Local `-` reads a tar stream from stdin
//!   and extracts it into DST.
//! - Download `NAME:SRC` → `DST`: when DST is an existing directory or ends in `/` (then it
//!   is created), SRC lands inside it; otherwise SRC is written as DST (DST's parent must
//!   exist). Local `-` writes the tar stream to stdout.
//! - Modes, mtimes and symlinks (as symlinks) are kept both ways. Downloaded entries that
//!   would land outside the destination (`..`, absolute paths, writing through a symlink)
//!   are refused and end the copy with an error.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;
use banger_api::methods;
use banger_api::vm::{VmCpGetParams, VmCpPutParams, VmExecParams};
use banger_guest_proto::{ExitStatus, PutResult};
use bytes::Bytes;
use clap::Args;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::client::{Client, ClientError};
use crate::commands::vm::exec::{self, ExecEnd};

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
            let conn = client
                .upgrade::<methods::vm::CpGet>(&VmCpGetParams {
                    vm: vm.clone(),
                    path: path.trim_end_matches('/').to_string(),
                })
                .await?;
            match local {
                Location::Stdio => {
                    let mut conn = conn;
                    let n = tokio::io::copy(&mut conn, &mut tokio::io::stdout()).await?;
                    ("downloaded", 0, n)
                }
                Location::Local(dst) => {
                    let (dir, rename) = download_target(&dst)?;
                    let stats = download(conn, &dir, rename).await?;
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

// --- What to pack ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// One thing to pack, relative to the tree's source (`""` is the source itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub rel: PathBuf,
    pub kind: Kind,
    /// File bytes (0 for others).
    pub size: u64,
}

/// A local file or directory tree and the entries of it to pack, sorted so that every
/// directory comes before what is in it.
#[derive(Debug, Clone)]
pub struct Tree {
    pub source: PathBuf,
    pub entries: Vec<Entry>,
    /// Special files (sockets, fifos, devices) left out.
    pub skipped: Vec<PathBuf>,
}

impl Tree {
    /// Everything under `source` (or `source` alone when it is not a directory).
    pub fn of(source: &Path, meta: &std::fs::Metadata) -> anyhow::Result<Tree> {
        let mut tree = Tree {
            source: source.to_path_buf(),
            entries: Vec::new(),
            skipped: Vec::new(),
        };
        match kind_of(meta) {
            Some(kind) => tree.entries.push(Entry {
                rel: PathBuf::new(),
                kind,
                size: if kind == Kind::File { meta.len() } else { 0 },
            }),
            None => anyhow::bail!("{} is not a file, directory or symlink", source.display()),
        }
        if meta.is_dir() {
            tree.walk(Path::new(""))?;
        }
        tree.sort();
        Ok(tree)
    }

    /// Adds everything below `rel` (a directory), not following symlinks.
    pub fn walk(&mut self, rel: &Path) -> anyhow::Result<()> {
        let dir = self.source.join(rel);
        let read = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for item in read {
            let item = item.with_context(|| format!("reading {}", dir.display()))?;
            let child = rel.join(item.file_name());
            let meta = std::fs::symlink_metadata(self.source.join(&child))
                .with_context(|| format!("reading {}", self.source.join(&child).display()))?;
            self.add(child.clone(), &meta);
            if meta.is_dir() {
                self.walk(&child)?;
            }
        }
        Ok(())
    }

    /// Adds one path (not what is below it).
    pub fn add(&mut self, rel: PathBuf, meta: &std::fs::Metadata) {
        match kind_of(meta) {
            Some(kind) => self.entries.push(Entry {
                rel,
                kind,
                size: if kind == Kind::File { meta.len() } else { 0 },
            }),
            None => self.skipped.push(rel),
        }
    }

    /// Sorts, drops duplicates, and adds the directories that lead to each entry (so the
    /// archive carries their modes too).
    pub fn sort(&mut self) {
        let mut dirs = Vec::new();
        for e in &self.entries {
            let mut p = e.rel.parent();
            while let Some(d) = p {
                if d.as_os_str().is_empty() {
                    break;
                }
                dirs.push(d.to_path_buf());
                p = d.parent();
            }
        }
        for d in dirs {
            self.entries.push(Entry {
                rel: d,
                kind: Kind::Dir,
                size: 0,
            });
        }
        self.entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        self.entries.dedup_by(|a, b| a.rel == b.rel);
    }

    /// The relative paths, directories with a trailing `/` (what `--dry-run` prints; the
    /// source itself is not listed).
    pub fn listing(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| !e.rel.as_os_str().is_empty())
            .map(|e| {
                let mut s = e.rel.to_string_lossy().into_owned();
                if e.kind == Kind::Dir {
                    s.push('/');
                }
                s
            })
            .collect()
    }

    pub fn files(&self) -> u64 {
        self.entries.iter().filter(|e| e.kind != Kind::Dir).count() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

fn kind_of(meta: &std::fs::Metadata) -> Option<Kind> {
    let t = meta.file_type();
    if t.is_dir() {
        Some(Kind::Dir)
    } else if t.is_file() {
        Some(Kind::File)
    } else if t.is_symlink() {
        Some(Kind::Symlink)
    } else {
        None
    }
}

/// What went into an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackStats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// Writes `tree` as a tar stream with every entry under `top` (the source itself is `top`).
/// Modes and mtimes are the files'; owners are root's (the guest decides with `owner`).
pub fn pack<W: Write>(tree: &Tree, top: &Path, out: W) -> io::Result<PackStats> {
    let mut builder = tar::Builder::new(out);
    let mut stats = PackStats::default();
    for entry in &tree.entries {
        let src = if entry.rel.as_os_str().is_empty() {
            tree.source.clone()
        } else {
            tree.source.join(&entry.rel)
        };
        let name = if entry.rel.as_os_str().is_empty() {
            top.to_path_buf()
        } else {
            top.join(&entry.rel)
        };
        let meta = match std::fs::symlink_metadata(&src) {
            Ok(m) => m,
            // Gone since it was listed: left out, as rsync does.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(annotate(e, &src)),
        };
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root").map_err(|e| annotate(e, &src))?;
        header
            .set_groupname("root")
            .map_err(|e| annotate(e, &src))?;
        match kind_of(&meta) {
            Some(Kind::Dir) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, &name, io::empty())?;
            }
            Some(Kind::Symlink) => {
                let target = std::fs::read_link(&src).map_err(|e| annotate(e, &src))?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, &name, target)?;
            }
            Some(Kind::File) => {
                let file = std::fs::File::open(&src).map_err(|e| annotate(e, &src))?;
                let size = meta.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                builder.append_data(&mut header, &name, Exactly::new(file, size))?;
                stats.files += 1;
                stats.bytes += size;
            }
            None => continue,
        }
        stats.entries += 1;
    }
    builder.into_inner()?.flush()?;
    Ok(stats)
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A file read as exactly `len` bytes: cut if it grew since its size was taken, padded with
/// zeros if it shrank (the tar header already promised `len`).
struct Exactly<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Exactly<R> {
    fn new(inner: R, len: u64) -> Self {
        Exactly { inner, left: len }
    }
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

// --- Streaming between a thread and the connection -------------------------------------

/// Chunks handed from the packing thread to the connection.
const CHUNK: usize = 256 << 10;

/// A `Write` that hands bounded chunks to async code (blocking when it lags behind).
pub struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload connection closed"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A `Read` over chunks that async code hands over (EOF when the sender is gone).
pub struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        ChannelReader {
            rx,
            chunk: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// What an upload did, as the guest reports it, plus what we packed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uploaded {
    pub entries: u64,
    pub bytes: u64,
    pub packed: PackStats,
}

/// Uploads `tree` into the guest directory `dest`, named `top` there.
pub async fn upload(
    client: &Client,
    vm: &str,
    dest: &str,
    top: &OsStr,
    tree: Tree,
) -> anyhow::Result<Uploaded> {
    let conn = client
        .upgrade::<methods::vm::CpPut>(&VmCpPutParams {
            vm: vm.to_string(),
            dest: dest.to_string(),
            owner: None,
        })
        .await?;
    upload_over(conn, tree, PathBuf::from(top)).await
}

/// [`upload`] over a connection already switched to the raw stream (for tests).
pub async fn upload_over<S: AsyncRead + AsyncWrite>(
    conn: S,
    tree: Tree,
    top: PathBuf,
) -> anyhow::Result<Uploaded> {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("pack".into())
        .spawn(move || {
            let result = pack(&tree, &top, ChannelWriter::new(tx));
            let _ = done_tx.send(result);
        })?;
    let result = send_stream(conn, ChunkSource(rx)).await;
    let packed = done_rx
        .await
        .map_err(|_| anyhow::anyhow!("the packing thread died"))?;
    let result = result?;
    // A packing error (an unreadable file) is the real story even when the guest, having
    // got a truncated stream, complained too; a closed channel is only the echo of the
    // guest giving up first.
    let packed = match packed {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe || result.error.is_none() => {
            return Err(anyhow::Error::new(e).context("packing the files"));
        }
        other => other.unwrap_or_default(),
    };
    if let Some(error) = result.error {
        anyhow::bail!("the guest could not extract the files: {error}");
    }
    Ok(Uploaded {
        entries: result.entries,
        bytes: result.bytes,
        packed,
    })
}

/// Uploads a tar stream read from `input` into `dest` as it is.
pub async fn put_stream<I: AsyncRead + Unpin>(
    client: &Client,
    vm: &str,
    dest: &str,
    input: I,
) -> anyhow::Result<PutResult> {
    let conn = client
        .upgrade::<methods::vm::CpPut>(&VmCpPutParams {
            vm: vm.to_string(),
            dest: if dest.is_empty() { "/" } else { dest }.to_string(),
            owner: None,
        })
        .await?;
    let result = send_stream(conn, ReaderSource(input)).await?;
    if let Some(error) = &result.error {
        anyhow::bail!("the guest could not extract the files: {error}");
    }
    Ok(result)
}

/// Where the bytes of an upload come from.
trait Source {
    async fn next(&mut self) -> io::Result<Option<Bytes>>;
}

struct ChunkSource(mpsc::Receiver<Bytes>);

impl Source for ChunkSource {
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        Ok(self.0.recv().await)
    }
}

struct ReaderSource<R>(R);

impl<R: AsyncRead + Unpin> Source for ReaderSource<R> {
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = vec![0u8; CHUNK];
        let n = self.0.read(&mut buf).await?;
        buf.truncate(n);
        Ok((n > 0).then(|| Bytes::from(buf)))
    }
}

/// Sends the stream, half-closes, and reads the guest's [`PutResult`]. The answer is read
/// while sending: a guest that fails early answers before the stream ends.
async fn send_stream<S: AsyncRead + AsyncWrite>(
    conn: S,
    mut source: impl Source,
) -> anyhow::Result<PutResult> {
    let (mut rd, mut wr) = tokio::io::split(conn);
    let send = async {
        while let Some(chunk) = source.next().await? {
            wr.write_all(&chunk).await?;
        }
        wr.shutdown().await?;
        io::Result::Ok(())
    };
    let recv = async {
        let mut answer = Vec::new();
        rd.read_to_end(&mut answer).await.map(|_| answer)
    };
    tokio::pin!(send, recv);
    let (sent, answer) = tokio::select! {
        sent = &mut send => (sent, (&mut recv).await),
        // The guest answered (and closed) before we were done: no use sending more.
        answer = &mut recv => (Ok(()), answer),
    };
    let answer = answer.context("reading the guest's answer to the upload")?;
    if answer.is_empty() {
        sent.context("sending the files")?;
        anyhow::bail!(
            "the connection closed before the guest answered the upload (did the VM stop?)"
        );
    }
    let result: PutResult = serde_json::from_slice(&answer).with_context(|| {
        format!(
            "unexpected answer to the upload: {}",
            String::from_utf8_lossy(&answer)
        )
    })?;
    if result.error.is_none() {
        sent.context("sending the files")?;
    }
    Ok(result)
}

// --- Extracting ------------------------------------------------------------------------

/// What an extraction wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extracted {
    pub entries: u64,
    pub bytes: u64,
    /// Devices and fifos left out.
    pub skipped: u64,
}

/// Reads the tar stream from `conn` and extracts it into `dir` (see [`extract`]).
pub async fn download<S: AsyncRead + Unpin>(
    mut conn: S,
    dir: &Path,
    rename: Option<OsString>,
) -> anyhow::Result<Extracted> {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let (done_tx, done_rx) = oneshot::channel();
    let dir = dir.to_path_buf();
    std::thread::Builder::new()
        .name("extract".into())
        .spawn(move || {
            let result = extract(ChannelReader::new(rx), &dir, rename.as_deref());
            let _ = done_tx.send(result);
        })?;
    let feed = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return io::Result::Ok(());
            }
            if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                // The extractor stopped (an error it reports).
                return Ok(());
            }
        }
    };
    let fed = feed.await;
    drop(tx);
    let extracted = done_rx
        .await
        .map_err(|_| anyhow::anyhow!("the extracting thread died"))?;
    let extracted = extracted?;
    fed.context("receiving the files")?;
    Ok(extracted)
}

/// Extracts a tar stream into `dir`, replacing the first path component of every entry by
/// `rename` when given. Regular files are streamed to disk; modes and mtimes are set
/// (directories' last, so read-only ones do not block their contents); symlinks are made as
/// symlinks. An entry with an absolute path or `..`, or one that would be written through a
/// symlink, is refused with an error.
pub fn extract<R: Read>(
    reader: R,
    dir: &Path,
    rename: Option<&OsStr>,
) -> anyhow::Result<Extracted> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = Extracted::default();
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let raw = entry.path().context("an entry's path")?.into_owned();
        let rel = safe_relative(&raw, rename)?;
        let target = dir.join(&rel);
        no_symlink_between(dir, &rel)?;
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        let what = || format!("extracting {}", target.display());
        match kind {
            tar::EntryType::Directory => {
                match std::fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        std::fs::remove_file(&target).with_context(what)?;
                        std::fs::create_dir(&target).with_context(what)?;
                    }
                    Err(_) => std::fs::create_dir_all(&target).with_context(what)?,
                }
                dirs.push((target, mode, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                make_parent(&target)?;
                remove_non_dir(&target).with_context(what)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .with_context(what)?;
                stats.bytes += io::copy(&mut entry, &mut file).with_context(what)?;
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .with_context(what)?;
                file.set_modified(mtime_of(mtime)).with_context(what)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .context("a symlink's target")?
                    .ok_or_else(|| anyhow::anyhow!("symlink {} has no target", raw.display()))?
                    .into_owned();
                make_parent(&target)?;
                remove_non_dir(&target).with_context(what)?;
                std::os::unix::fs::symlink(&link, &target).with_context(what)?;
                set_symlink_mtime(&target, mtime);
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .context("a hard link's target")?
                    .ok_or_else(|| anyhow::anyhow!("hard link {} has no target", raw.display()))?
                    .into_owned();
                let link_rel = safe_relative(&link, rename)?;
                no_symlink_between(dir, &link_rel)?;
                make_parent(&target)?;
                remove_non_dir(&target).with_context(what)?;
                std::fs::hard_link(dir.join(&link_rel), &target).with_context(what)?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            _ => {
                stats.skipped += 1;
                continue;
            }
        }
        stats.entries += 1;
    }
    // Deepest first, so setting a parent's mtime comes after its children changed it.
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (path, mode, mtime) in dirs {
        let what = || format!("setting the mode of {}", path.display());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(what)?;
        if let Ok(f) = std::fs::File::open(&path) {
            let _ = f.set_modified(mtime_of(mtime));
        }
    }
    Ok(stats)
}

/// An entry's path as a relative path of plain components (renamed at the top), or an
/// error for anything that could escape.
fn safe_relative(raw: &Path, rename: Option<&OsStr>) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => {
                if out.as_os_str().is_empty()
                    && let Some(new) = rename
                {
                    out.push(new);
                } else {
                    out.push(part);
                }
            }
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => anyhow::bail!(
                "refusing archive entry {:?}: it would land outside the destination",
                raw.display().to_string()
            ),
        }
    }
    if out.as_os_str().is_empty() {
        anyhow::bail!(
            "refusing archive entry {:?}: empty path",
            raw.display().to_string()
        );
    }
    Ok(out)
}

/// Refuses `rel` when one of its parents below `dir` is a symlink (an earlier entry could
/// have planted `x -> /etc` to have `x/passwd` written outside).
fn no_symlink_between(dir: &Path, rel: &Path) -> anyhow::Result<()> {
    let mut at = dir.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        if let Ok(m) = std::fs::symlink_metadata(&at)
            && m.file_type().is_symlink()
        {
            anyhow::bail!(
                "refusing archive entry {:?}: it would be written through the symlink {}",
                rel.display().to_string(),
                at.display()
            );
        }
    }
    Ok(())
}

fn make_parent(target: &Path) -> anyhow::Result<()> {
    if let Some(parent) = target.parent()
        && !parent.is_dir()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

/// Makes room for a new file or link at `path` (never removes a directory: replacing a
/// directory by a file is an error, as in tar).
fn remove_non_dir(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a directory is in the way",
        )),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

fn mtime_of(secs: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

fn set_symlink_mtime(path: &Path, mtime: u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: a valid NUL-terminated path and two timespecs; the result is advisory.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
}

/// Mode bits of a local path (for tests and summaries).
pub fn mode_of(path: &Path) -> io::Result<u32> {
    Ok(std::fs::symlink_metadata(path)?.mode() & 0o7777)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

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
    fn sample_tree(root: &Path) {
        std::fs::create_dir_all(root.join("bin")).expect("mkdir");
        std::fs::create_dir_all(root.join("empty")).expect("mkdir");
        std::fs::create_dir_all(root.join("ro")).expect("mkdir");
        std::fs::write(root.join("a.txt"), "hello\n").expect("write");
        std::fs::write(root.join("bin/run"), "#!/bin/sh\necho hi\n").expect("write");
        std::fs::set_permissions(root.join("bin/run"), PermissionsExt::from_mode(0o750))
            .expect("chmod");
        std::fs::write(root.join("ro/file"), "x").expect("write");
        std::fs::set_permissions(root.join("ro"), PermissionsExt::from_mode(0o555)).expect("chmod");
        symlink("a.txt", root.join("link")).expect("symlink");
    }

    fn archive_names(bytes: &[u8]) -> Vec<String> {
        let mut ar = tar::Archive::new(bytes);
        ar.entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let mut name = e.path().expect("path").to_string_lossy().into_owned();
                if e.header().entry_type() == tar::EntryType::Directory && !name.ends_with('/') {
                    name.push('/');
                }
                name
            })
            .collect()
    }

    #[test]
    fn a_tree_round_trips_with_modes_and_symlinks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("proj");
        sample_tree(&src);
        let tree = Tree::of(&src, &std::fs::symlink_metadata(&src).expect("stat")).expect("tree");
        assert_eq!(
            tree.listing(),
            [
                "a.txt", "bin/", "bin/run", "empty/", "link", "ro/", "ro/file"
            ]
        );
        let mut bytes = Vec::new();
        let stats = pack(&tree, Path::new("proj"), &mut bytes).expect("pack");
        assert_eq!(stats.files, 3);
        assert_eq!(stats.entries, 8);
        let names = archive_names(&bytes);
        assert_eq!(names[0], "proj/");
        let listed: Vec<String> = names[1..]
            .iter()
            .map(|n| n.strip_prefix("proj/").expect("under proj/").to_string())
            .collect();
        assert_eq!(listed, tree.listing(), "the listing is what is packed");

        let out = tmp.path().join("out");
        std::fs::create_dir(&out).expect("mkdir");
        let got = extract(&bytes[..], &out, Some(OsStr::new("copy"))).expect("extract");
        assert_eq!(got.entries, 8);
        let copy = out.join("copy");
        assert_eq!(
            std::fs::read_to_string(copy.join("a.txt")).expect("read"),
            "hello\n"
        );
        assert_eq!(mode_of(&copy.join("bin/run")).expect("mode"), 0o750);
        assert_eq!(mode_of(&copy.join("ro")).expect("mode"), 0o555);
        assert_eq!(
            std::fs::read_link(copy.join("link")).expect("link"),
            Path::new("a.txt")
        );
        assert!(copy.join("empty").is_dir());
        let mtime = |p: &Path| std::fs::metadata(p).expect("stat").mtime();
        assert_eq!(mtime(&copy.join("a.txt")), mtime(&src.join("a.txt")));
        // Let the temp dir clean up.
        for p in [&src, &copy] {
            std::fs::set_permissions(p.join("ro"), PermissionsExt::from_mode(0o755))
                .expect("chmod");
        }
    }

    /// A hand-made archive with one entry of the given raw name and type.
    fn evil_archive(entries: &[(&str, tar::EntryType, Option<&str>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link) in entries {
            let mut h = tar::Header::new_old();
            {
                let raw = h.as_old_mut();
                raw.name[..name.len()].copy_from_slice(name.as_bytes());
                if let Some(l) = link {
                    raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
                }
            }
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            let body: &[u8] = if *kind == tar::EntryType::Regular {
                b"pwned"
            } else {
                b""
            };
            h.set_size(body.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(body);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn escaping_entries_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).expect("mkdir");
        for name in ["../escape", "a/../../escape", "/abs/escape"] {
            let ar = evil_archive(&[(name, tar::EntryType::Regular, None)]);
            let e = extract(&ar[..], &dest, None).expect_err(name).to_string();
            assert!(e.contains("refusing"), "{name}: {e}");
        }
        assert!(!tmp.path().join("escape").exists());
        // A symlink planted to lead outside, then a file through it.
        let ar = evil_archive(&[
            ("x", tar::EntryType::Symlink, Some("..")),
            ("x/escape", tar::EntryType::Regular, None),
        ]);
        let e = extract(&ar[..], &dest, None)
            .expect_err("through a symlink")
            .to_string();
        assert!(e.contains("symlink"), "{e}");
        assert!(!tmp.path().join("escape").exists());
        // A hard link to something outside.
        let ar = evil_archive(&[("h", tar::EntryType::Link, Some("../../etc/passwd"))]);
        assert!(extract(&ar[..], &dest, None).is_err());
    }

    #[tokio::test]
    async fn an_upload_streams_then_half_closes_and_reads_the_answer() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("proj");
        sample_tree(&src);
        // A file bigger than the channel's capacity of chunks.
        std::fs::write(src.join("big"), vec![7u8; 5 << 20]).expect("write");
        let tree = Tree::of(&src, &std::fs::symlink_metadata(&src).expect("stat")).expect("tree");
        let (ours, mut theirs) = tokio::io::duplex(64 << 10);
        let guest = async move {
            let mut got = Vec::new();
            theirs
                .read_to_end(&mut got)
                .await
                .expect("read until half-close");
            let names = archive_names(&got);
            let answer = PutResult {
                entries: names.len() as u64,
                bytes: 5 << 20,
                error: None,
            };
            theirs
                .write_all(&serde_json::to_vec(&answer).expect("json"))
                .await
                .expect("answer");
            theirs.shutdown().await.expect("close");
            names
        };
        let (up, names) = tokio::join!(upload_over(ours, tree, PathBuf::from("proj")), guest);
        let up = up.expect("uploaded");
        assert_eq!(up.entries, 9);
        assert!(names.contains(&"proj/big".to_string()));
        assert_eq!(up.packed.bytes, (5 << 20) + 6 + 18 + 1);
        std::fs::set_permissions(src.join("ro"), PermissionsExt::from_mode(0o755)).expect("chmod");
    }

    #[tokio::test]
    async fn a_guest_error_is_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("f"), "x").expect("write");
        let tree = Tree::of(
            &tmp.path().join("f"),
            &std::fs::metadata(tmp.path().join("f")).expect("stat"),
        )
        .expect("tree");
        let (ours, mut theirs) = tokio::io::duplex(64 << 10);
        let guest = async move {
            let answer = PutResult {
                entries: 0,
                bytes: 0,
                error: Some("/root: no space left on device".into()),
            };
            theirs
                .write_all(&serde_json::to_vec(&answer).expect("json"))
                .await
                .expect("answer");
            drop(theirs);
        };
        let (up, ()) = tokio::join!(upload_over(ours, tree, PathBuf::from("f")), guest);
        let e = format!("{:#}", up.expect_err("failed"));
        assert!(e.contains("no space left"), "{e}");
    }

    #[tokio::test]
    async fn a_download_is_extracted_as_it_streams() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("tree");
        sample_tree(&src);
        let tree = Tree::of(&src, &std::fs::symlink_metadata(&src).expect("stat")).expect("tree");
        let mut bytes = Vec::new();
        pack(&tree, Path::new("tree"), &mut bytes).expect("pack");
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).expect("mkdir");
        let (mut theirs, ours) = tokio::io::duplex(4096);
        let guest = async move {
            theirs.write_all(&bytes).await.expect("send");
            drop(theirs);
        };
        let (got, ()) = tokio::join!(download(ours, &out, None), guest);
        assert_eq!(got.expect("downloaded").entries, 8);
        assert_eq!(mode_of(&out.join("tree/bin/run")).expect("mode"), 0o750);
        for p in [&src, &out.join("tree")] {
            std::fs::set_permissions(p.join("ro"), PermissionsExt::from_mode(0o755))
                .expect("chmod");
        }
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
