//! The archive between a thread and the connection: packing or extracting runs on a thread
//! of its own and hands bounded chunks to async code, so memory stays flat whatever the
//! size of the files.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use banger_api::methods;
use banger_api::text::visible;
use banger_api::vm::VmCpPutParams;
use banger_guest_proto::PutResult;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::extract::{Destination, Extracted, Limits, extract};
use super::pack::{PackStats, Tree, pack};
use crate::transport::Client;

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
        anyhow::bail!(
            "the guest could not extract the files: {}",
            quote_guest(error.as_bytes())
        );
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
        anyhow::bail!(
            "the guest could not extract the files: {}",
            quote_guest(error.as_bytes())
        );
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

/// The largest answer to an upload read from the guest (a `PutResult` is a few hundred
/// bytes).
const MAX_ANSWER: usize = 64 << 10;

/// How much of a guest's text an error quotes.
const QUOTE: usize = 1024;

/// Guest bytes for an error message: cut, control characters made visible.
fn quote_guest(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTE)]);
    let more = if bytes.len() > QUOTE { "…" } else { "" };
    format!("\"{}{more}\"", visible(&text))
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
        // One byte over the limit tells an oversized answer from one that just fits.
        (&mut rd)
            .take(MAX_ANSWER as u64 + 1)
            .read_to_end(&mut answer)
            .await
            .map(|_| answer)
    };
    tokio::pin!(send, recv);
    let (sent, answer) = tokio::select! {
        sent = &mut send => (sent, (&mut recv).await),
        // The guest answered (and closed) before we were done: no use sending more.
        answer = &mut recv => (Ok(()), answer),
    };
    let answer = answer.context("reading the guest's answer to the upload")?;
    if answer.len() > MAX_ANSWER {
        anyhow::bail!(
            "the guest's answer to the upload is over {} KiB: {}…",
            MAX_ANSWER >> 10,
            quote_guest(&answer)
        );
    }
    if answer.is_empty() {
        sent.context("sending the files")?;
        anyhow::bail!(
            "the connection closed before the guest answered the upload (did the VM stop?)"
        );
    }
    let result: PutResult = serde_json::from_slice(&answer)
        .with_context(|| format!("unexpected answer to the upload: {}", quote_guest(&answer)))?;
    if result.error.is_none() {
        sent.context("sending the files")?;
    }
    Ok(result)
}

/// Reads the tar stream from `conn` and extracts it to `dest` on a thread of its own (see
/// [`extract`]).
pub async fn download<S: AsyncRead + Unpin>(
    mut conn: S,
    dest: Destination,
    limits: Limits,
) -> anyhow::Result<Extracted> {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("extract".into())
        .spawn(move || {
            let result = extract(ChannelReader::new(rx), &dest, &limits);
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::testing::{archive_names, mode_of, sample_tree, unlock};
    use super::*;

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
        unlock(&src);
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
        let dest = Destination {
            dir: out.clone(),
            top: "tree".into(),
            name: "tree".into(),
        };
        let (got, ()) = tokio::join!(download(ours, dest, Limits::default()), guest);
        assert_eq!(got.expect("downloaded").entries, 8);
        assert_eq!(mode_of(&out.join("tree/bin/run")).expect("mode"), 0o750);
        unlock(&src);
        unlock(&out.join("tree"));
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_and_escaped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("f"), "x").expect("write");
        let tree = Tree::of(
            &tmp.path().join("f"),
            &std::fs::metadata(tmp.path().join("f")).expect("stat"),
        )
        .expect("tree");
        let (ours, mut theirs) = tokio::io::duplex(64 << 10);
        let guest = async move {
            // An escape sequence, then more than the limit, and no end.
            let mut sent = 0usize;
            let mut chunk = b"\x1b]52;c;cHduZWQ=\x07".to_vec();
            chunk.resize(8192, b'a');
            while sent < 4 * MAX_ANSWER {
                if theirs.write_all(&chunk).await.is_err() {
                    return sent;
                }
                sent += chunk.len();
            }
            sent
        };
        let (up, sent) = tokio::join!(upload_over(ours, tree, PathBuf::from("f")), guest);
        let e = format!("{:#}", up.expect_err("refused"));
        assert!(e.contains("over 64 KiB"), "{e}");
        assert!(!e.contains('\x1b'), "escaped: {e}");
        assert!(e.contains("\\x1b]52"), "{e}");
        assert!(e.len() < 2 * QUOTE, "cut: {} bytes", e.len());
        assert!(sent <= 4 * MAX_ANSWER);
    }
}
