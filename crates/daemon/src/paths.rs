//! Validation of user-supplied paths, with errors that name the path and the problem.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::OpError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    File,
    Dir,
}

/// Checks that `path` exists, has the expected type and is readable; returns it absolute
/// with symlinks resolved, so a record never depends on the client's working directory.
pub fn validate(what: &str, path: &str, expect: Expect) -> Result<PathBuf, OpError> {
    if path.is_empty() {
        return Err(OpError::BadRequest(format!("{what} path is empty")));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(OpError::BadRequest(format!(
            "{what} path {path:?} must be absolute (the CLI resolves relative paths)"
        )));
    }
    let meta = std::fs::metadata(p).map_err(|e| {
        OpError::BadRequest(match e.kind() {
            std::io::ErrorKind::NotFound => format!("{what} {path}: no such file or directory"),
            _ => format!("{what} {path}: {e}"),
        })
    })?;
    match expect {
        Expect::File if !meta.is_file() => {
            return Err(OpError::BadRequest(format!(
                "{what} {path}: not a regular file"
            )));
        }
        Expect::Dir if !meta.is_dir() => {
            return Err(OpError::BadRequest(format!(
                "{what} {path}: not a directory"
            )));
        }
        _ => {}
    }
    // Opening proves readability for this daemon's user, ACLs included.
    let readable = match expect {
        Expect::File => File::open(p).map(|_| ()),
        Expect::Dir => std::fs::read_dir(p).map(|_| ()),
    };
    readable.map_err(|e| OpError::BadRequest(format!("{what} {path}: not readable: {e}")))?;
    std::fs::canonicalize(p).map_err(|e| OpError::BadRequest(format!("{what} {path}: {e}")))
}

pub fn to_string(path: &Path) -> Result<String, OpError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| OpError::BadRequest(format!("path {path:?} is not valid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_missing_wrong_type_and_relative() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_str().expect("utf8");
        let missing = format!("{d}/nope");
        let err = validate("rootfs", &missing, Expect::File).expect_err("missing");
        assert!(err.to_string().contains(&missing), "{err}");
        assert!(err.to_string().contains("no such file"), "{err}");
        let err = validate("rootfs", d, Expect::File).expect_err("dir");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = validate("modules", "rel/x", Expect::Dir).expect_err("relative");
        assert!(err.to_string().contains("absolute"), "{err}");
        assert!(validate("modules", d, Expect::Dir).is_ok());
    }
}
