//! The file methods: READ_FILE (a small text file), FILES_PUT (a tar stream extracted in
//! the guest) and FILES_GET (a file or tree as a tar stream).
//!
//! Guest paths are absolute and resolved under the agent's root (`/` in the guest, a
//! temporary directory in tests), like `/etc/passwd`. The root is not a security boundary:
//! the host may read and write anything in the guest anyway (it can exec as root).
//! File work runs on blocking threads; bodies cross over in bounded channels ([`bridge`]),
//! so an upload or download of any size holds a few chunks in memory.

mod bridge;
mod get;
mod put;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use banger_guest_proto::{FileContent, GetFiles, PutFiles, PutResult, ReadFile};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::body::AgentBody;
use crate::users;

/// Why a call failed before any streaming: an HTTP status and a message.
pub type Refusal = (hyper::StatusCode, String);

fn refuse(status: hyper::StatusCode, message: impl Into<String>) -> Refusal {
    (status, message.into())
}

/// `path` (absolute in the guest) under `root`.
pub fn guest_path(root: &Path, path: &str) -> Result<PathBuf, String> {
    match path.strip_prefix('/') {
        Some(rel) => Ok(root.join(rel)),
        None => Err(format!("guest path {path:?} is not absolute")),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the worker thread failed: {e}"))
}

/// READ_FILE: the file's text (lossy UTF-8). Missing: 404; larger than `max_bytes` (by
/// its size, or by what reading it gives, for `/proc` files that claim 0): 400.
pub async fn read_file(root: &Path, req: ReadFile) -> Result<FileContent, Refusal> {
    use hyper::StatusCode;
    let path = guest_path(root, &req.path).map_err(|m| refuse(StatusCode::BAD_REQUEST, m))?;
    let shown = req.path.clone();
    let max = req.max_bytes;
    blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| {
            let status = match e.kind() {
                io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refuse(status, format!("{shown}: {e}"))
        })?;
        let meta = file
            .metadata()
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("{shown}: {e}")))?;
        if meta.is_dir() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("{shown}: is a directory"),
            ));
        }
        let too_big = || {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("{shown}: larger than the {max} bytes asked for"),
            )
        };
        if meta.len() > max {
            return Err(too_big());
        }
        let mut data = Vec::new();
        file.take(max.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("{shown}: {e}")))?;
        if data.len() as u64 > max {
            return Err(too_big());
        }
        Ok(FileContent {
            data: String::from_utf8_lossy(&data).into_owned(),
        })
    })
    .await
    .map_err(|m| refuse(StatusCode::INTERNAL_SERVER_ERROR, m))?
}

/// FILES_PUT: extracts the body; returns once the whole body has arrived. Every failure is
/// in the result (the upload came before the answer could say anything).
pub async fn put(root: &Path, req: PutFiles, body: Incoming) -> PutResult {
    let (tx, rx) = mpsc::channel(bridge::QUEUE);
    let prepared = guest_path(root, &req.dest).and_then(|dest| {
        let owner = match req.owner.as_deref() {
            None | Some("") => put::Owner { uid: 0, gid: 0 },
            Some(spec) => users::resolve(root, Some(spec)).map(|id| put::Owner {
                uid: id.uid,
                gid: id.gid,
            })?,
        };
        Ok((dest, owner))
    });
    let job = match prepared {
        Ok((dest, owner)) => tokio::task::spawn_blocking(move || {
            put::extract(&dest, owner, bridge::BodyReader::new(rx))
        }),
        Err(message) => {
            drop(rx);
            let _ = bridge::feed(body, tx).await;
            return PutResult {
                error: Some(message),
                ..PutResult::default()
            };
        }
    };
    let fed = bridge::feed(body, tx).await;
    let mut result = job.await.unwrap_or_else(|e| PutResult {
        error: Some(format!("the extracting thread failed: {e}")),
        ..PutResult::default()
    });
    if let (Err(broken), None) = (fed, &result.error) {
        result.error = Some(broken);
    }
    result
}

/// FILES_GET: checks the path, then streams the archive. Missing: 404.
pub async fn get(root: &Path, req: GetFiles) -> Result<AgentBody, Refusal> {
    use hyper::StatusCode;
    let src = guest_path(root, &req.path).map_err(|m| refuse(StatusCode::BAD_REQUEST, m))?;
    let shown = req.path.clone();
    let checked = src.clone();
    let name = blocking(move || {
        std::fs::metadata(&checked).map_err(|e| {
            let status = match e.kind() {
                io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refuse(status, format!("{shown}: {e}"))
        })?;
        // The requested name when it has one (`/a/link` is `link`), else the real one
        // (`/a/b/..` is `a`); `/` has none.
        Path::new(&shown)
            .file_name()
            .map(ToOwned::to_owned)
            .or_else(|| {
                std::fs::canonicalize(&checked)
                    .ok()
                    .and_then(|p| p.file_name().map(ToOwned::to_owned))
            })
            .ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{shown}: has no name to archive it under (ask for a directory below /)"
                    ),
                )
            })
    })
    .await
    .map_err(|m| refuse(StatusCode::INTERNAL_SERVER_ERROR, m))??;
    let (tx, rx) = mpsc::channel(bridge::QUEUE);
    tokio::task::spawn_blocking(move || get::archive(&src, &name, bridge::BodyWriter::new(tx)));
    Ok(AgentBody::Raw(rx))
}
