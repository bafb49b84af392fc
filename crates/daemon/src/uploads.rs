//! Files a client on another machine sends for a call that reads a file on this host
//! (`banger --host ssh://… image pull oci-archive:./app.tar`): `upload` keeps one under
//! `<state>/uploads/` (0700), `upload.delete` removes it, and the daemon's start removes
//! whatever an interrupted client left there.
//!
//! The client declares the size first: a stream that ends short (the client went) is a
//! truncated file, deleted, never a smaller valid-looking one.

use std::io::Write;
use std::path::{Path, PathBuf};

use banger_api::system::{Empty, UploadParams, UploadRef, UploadResult};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::OpError;
use crate::vms::{RelayMode, SessionOutput, StreamSession};

/// The uploads directory of a state dir.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("uploads")
}

/// Opens an upload: the bytes the client sends go to `<uploads>/<id>/<name>.partial`,
/// renamed to `<name>` once exactly `size` arrived; the answer names it.
pub fn open(state_dir: &Path, p: UploadParams) -> Result<StreamSession, OpError> {
    let name = p.name.as_str();
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 200
        || name.chars().any(|c| c == '/' || c.is_control())
    {
        return Err(OpError::BadRequest(format!(
            "upload name {:?}: a plain file name (no '/', no control characters) is needed",
            banger_api::text::visible(name)
        )));
    }
    let dir = dir(state_dir).join(crate::ids::new_id());
    std::fs::create_dir_all(&dir)
        .and_then(|()| {
            let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
            std::fs::set_permissions(dir.parent().unwrap_or(&dir), private)
        })
        .map_err(|e| OpError::io(format!("creating {}", dir.display()), e))?;
    let partial = dir.join(format!("{name}.partial"));
    let done = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| OpError::io(format!("creating {}", partial.display()), e))?;
    let (input, rx) = mpsc::channel::<Bytes>(8);
    let answer = async move {
        let size = p.size;
        let result = tokio::task::spawn_blocking(move || receive(file, rx, size, &partial, &done))
            .await
            .unwrap_or_else(|e| Err(format!("the upload's writer failed: {e}")));
        let result = match result {
            Ok(path) => UploadResult {
                path: Some(path),
                error: None,
            },
            Err(error) => {
                tracing::warn!(%error, "upload refused");
                UploadResult {
                    path: None,
                    error: Some(error),
                }
            }
        };
        Bytes::from(serde_json::to_vec(&result).unwrap_or_default())
    };
    Ok(StreamSession {
        input,
        output: SessionOutput::Host(Box::pin(answer)),
        mode: RelayMode::HalfClose,
        busy: None,
    })
}

/// Writes what arrives until the client's EOF; keeps the file only if it is exactly `size`.
fn receive(
    mut file: std::fs::File,
    mut rx: mpsc::Receiver<Bytes>,
    size: u64,
    partial: &Path,
    done: &Path,
) -> Result<String, String> {
    let mut written = 0u64;
    let outcome = (|| {
        while let Some(chunk) = rx.blocking_recv() {
            written += chunk.len() as u64;
            if written > size {
                return Err(format!("more than the {size} bytes announced"));
            }
            file.write_all(&chunk)
                .map_err(|e| format!("writing {}: {e}", partial.display()))?;
        }
        if written != size {
            return Err(format!(
                "the stream ended after {written} of {size} bytes (the client went away?)"
            ));
        }
        file.sync_all()
            .map_err(|e| format!("syncing {}: {e}", partial.display()))?;
        std::fs::rename(partial, done).map_err(|e| format!("keeping the upload: {e}"))?;
        done.to_str()
            .map(str::to_owned)
            .ok_or_else(|| "the uploads directory is not valid UTF-8".to_string())
    })();
    if outcome.is_err() {
        let _ = std::fs::remove_file(partial);
        if let Some(dir) = partial.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    } else {
        tracing::info!(bytes = written, path = %done.display(), "upload kept");
    }
    outcome
}

/// `upload.delete`: only a file this daemon's `upload` made, where it puts them
/// (`<uploads>/<hex id>/<name>`), with its directory.
pub fn delete(state_dir: &Path, p: UploadRef) -> Result<Empty, OpError> {
    let path = Path::new(&p.path);
    let id_dir = path.parent();
    let ours = id_dir.and_then(Path::parent) == Some(dir(state_dir).as_path())
        && id_dir
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
        && path.file_name().is_some_and(|n| n != "." && n != "..");
    let (true, Some(id_dir)) = (ours, id_dir) else {
        return Err(OpError::BadRequest(format!(
            "{} is not an upload of this daemon",
            banger_api::text::visible(&p.path)
        )));
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(OpError::io(format!("removing {}", path.display()), e)),
    }
    let _ = std::fs::remove_dir(id_dir);
    Ok(Empty {})
}

/// At start: no client of an earlier daemon is still uploading, so everything goes.
pub fn sweep(state_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(size: u64, chunks: &[&[u8]]) -> (Result<String, String>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (partial, done) = (dir.path().join("a.tar.partial"), dir.path().join("a.tar"));
        let file = std::fs::File::create(&partial).expect("create");
        let (tx, rx) = mpsc::channel(8);
        for c in chunks {
            tx.try_send(Bytes::copy_from_slice(c)).expect("send");
        }
        drop(tx);
        (receive(file, rx, size, &partial, &done), dir)
    }

    #[test]
    fn exactly_the_announced_size_is_kept_and_anything_else_is_deleted() {
        let (ok, dir) = run(6, &[b"abc", b"def"]);
        let path = ok.expect("kept");
        assert_eq!(std::fs::read(&path).expect("read"), b"abcdef");
        assert!(!dir.path().join("a.tar.partial").exists());

        for (size, chunks) in [(10, vec![&b"abc"[..]]), (2, vec![&b"abc"[..]])] {
            let (err, dir) = run(size, &chunks);
            assert!(err.is_err(), "{size}: {err:?}");
            assert!(!dir.path().exists(), "a refused upload left its directory");
        }
    }

    #[test]
    fn only_uploads_can_be_deleted() {
        let state = tempfile::tempdir().expect("tempdir");
        let uploads = dir(state.path());
        std::fs::create_dir_all(uploads.join("0123abcd")).expect("mkdir");
        let victim = state.path().join("state.db");
        std::fs::write(&victim, b"precious").expect("write");
        for path in [
            victim.to_str().expect("utf8").to_string(),
            format!("{}/0123abcd/../../state.db", uploads.display()),
            format!("{}/x.tar", uploads.display()),
            format!("{}/not-hex!/x.tar", uploads.display()),
            format!("{}/0123abcd/..", uploads.display()),
        ] {
            assert!(
                delete(state.path(), UploadRef { path: path.clone() }).is_err(),
                "{path}"
            );
        }
        assert!(victim.exists());
        let upload = uploads.join("0123abcd/app.tar");
        std::fs::write(&upload, b"x").expect("write");
        delete(
            state.path(),
            UploadRef {
                path: upload.to_str().expect("utf8").into(),
            },
        )
        .expect("deleted");
        assert!(!upload.exists() && !uploads.join("0123abcd").exists());
    }

    #[test]
    fn an_upload_name_is_a_plain_file_name() {
        let state = tempfile::tempdir().expect("tempdir");
        for name in ["", ".", "..", "a/b", "../x", "x\ny"] {
            let p = UploadParams {
                size: 1,
                name: name.into(),
            };
            assert!(open(state.path(), p).is_err(), "{name:?}");
        }
        assert!(
            !dir(state.path()).exists(),
            "a refused name made a directory"
        );
    }
}
