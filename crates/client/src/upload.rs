//! A local file sent to a daemon on another host (`upload`), for a call that reads a file
//! there: `--host ssh://… image pull oci-archive:./app.tar`. The daemon keeps it until
//! [`discard`] (or its next start).

use std::path::Path;

use anyhow::Context as _;
use banger_api::methods;
use banger_api::system::{UploadParams, UploadRef, UploadResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Client, Error};

/// The most the daemon's answer may be.
const MAX_ANSWER: u64 = 64 << 10;

/// Sends `path` (a regular file) and returns where the daemon keeps it.
pub async fn upload_file(client: &Client, path: &Path) -> Result<String, Error> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let meta = file
        .metadata()
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        return Err(anyhow::anyhow!("{} is not a regular file", path.display()).into());
    }
    let size = meta.len();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("{} has no UTF-8 file name", path.display()))?
        .to_string();
    let conn = client
        .upgrade::<methods::system::Upload>(&UploadParams { size, name })
        .await?;
    let (mut rd, mut wr) = tokio::io::split(conn);
    let send = async {
        let mut buf = vec![0u8; 256 << 10];
        let mut sent = 0u64;
        while sent < size {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break; // the file shrank: the daemon refuses the short upload
            }
            let n = n.min((size - sent) as usize);
            wr.write_all(&buf[..n]).await?;
            sent += n as u64;
        }
        wr.shutdown().await
    };
    let recv = async {
        let mut answer = Vec::new();
        (&mut rd)
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .map(|_| answer)
    };
    let (sent, answer) = tokio::join!(send, recv);
    let answer = answer.context("reading the daemon's answer to the upload")?;
    let result: UploadResult = serde_json::from_slice(&answer).map_err(|e| {
        anyhow::anyhow!(
            "the daemon's answer to the upload is not JSON ({e}){}",
            sent.err()
                .map(|s| format!("; sending failed: {s}"))
                .unwrap_or_default()
        )
    })?;
    match (result.path, result.error) {
        (Some(p), _) => Ok(p),
        (None, error) => Err(anyhow::anyhow!(
            "the daemon refused the upload of {}: {}",
            path.display(),
            banger_api::text::visible(error.as_deref().unwrap_or("no reason given"))
        )
        .into()),
    }
}

/// Removes an upload the daemon kept.
pub async fn discard(client: &Client, remote_path: &str) -> Result<(), Error> {
    client
        .call::<methods::system::UploadDelete>(&UploadRef {
            path: remote_path.to_string(),
        })
        .await?;
    Ok(())
}
