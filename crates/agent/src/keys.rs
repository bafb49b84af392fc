//! AUTHORIZED_KEY: adds one line to a user's `~/.ssh/authorized_keys`.
//!
//! The user and home come from the guest's `/etc/passwd` ([`users`]; root's home is
//! `/root` even without the file), resolved under the agent's root. The home is created
//! (0755, owned by the user) if missing, `~/.ssh` is 0700 and `authorized_keys` 0600, both
//! owned by the user and put right on every call (sshd's StrictModes refuses looser ones).
//! The key is appended only when no identical line (ignoring surrounding blanks) is there,
//! then the file (and a newly made `~/.ssh`) is fsynced.
//!
//! Nothing is followed: a `~/.ssh` or `authorized_keys` that is a symlink is refused (an
//! unprivileged guest user could otherwise point root's chown and write elsewhere).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, fchown};
use std::path::Path;

use banger_guest_proto::AddAuthorizedKey;

use crate::files::guest_path;
use crate::users;

/// Why the key could not be added: whether the request was at fault, and a message.
#[derive(Debug)]
pub enum KeyError {
    /// Unknown user, a key that is not one line.
    BadRequest(String),
    /// The files could not be written.
    Failed(String),
}

fn failed(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::Failed(format!("{}: {e}", path.display()))
}

fn open_nofollow(path: &Path, opts: &mut OpenOptions) -> Result<File, KeyError> {
    opts.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => failed(path, "a symlink; refused"),
            _ => failed(path, e),
        })
}

/// Adds the key (blocking: call it off the runtime).
pub fn add(root: &Path, req: &AddAuthorizedKey) -> Result<(), KeyError> {
    let key = req.key.trim();
    if key.is_empty() || key.contains(['\n', '\r', '\0']) {
        return Err(KeyError::BadRequest(
            "the key must be one non-empty authorized_keys line".into(),
        ));
    }
    if req.user.is_empty() || req.user.contains(':') {
        return Err(KeyError::BadRequest(format!(
            "{:?} is not a user name",
            req.user
        )));
    }
    let id = users::resolve(root, Some(&req.user)).map_err(KeyError::BadRequest)?;
    let home = guest_path(root, &id.home).map_err(KeyError::BadRequest)?;
    let owner =
        |f: &File, path: &Path| fchown(f, Some(id.uid), Some(id.gid)).map_err(|e| failed(path, e));

    if fs::symlink_metadata(&home).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&home)
            .map_err(|e| failed(&home, e))?;
        let dir = open_nofollow(&home, OpenOptions::new().read(true))?;
        owner(&dir, &home)?;
    }

    let ssh = home.join(".ssh");
    let made_ssh = match fs::DirBuilder::new().mode(0o700).create(&ssh) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(failed(&ssh, e)),
    };
    let ssh_dir = open_nofollow(
        &ssh,
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY),
    )?;
    owner(&ssh_dir, &ssh)?;
    ssh_dir
        .set_permissions(Permissions::from_mode(0o700))
        .map_err(|e| failed(&ssh, e))?;

    let path = ssh.join("authorized_keys");
    let mut file = open_nofollow(
        &path,
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600),
    )?;
    if !file.metadata().map_err(|e| failed(&path, e))?.is_file() {
        return Err(failed(&path, "not a regular file"));
    }
    owner(&file, &path)?;
    file.set_permissions(Permissions::from_mode(0o600))
        .map_err(|e| failed(&path, e))?;
    let mut existing = Vec::new();
    file.read_to_end(&mut existing)
        .map_err(|e| failed(&path, e))?;
    let present = String::from_utf8_lossy(&existing)
        .lines()
        .any(|line| line.trim() == key);
    if !present {
        let mut line = String::new();
        if !existing.is_empty() && !existing.ends_with(b"\n") {
            line.push('\n');
        }
        line.push_str(key);
        line.push('\n');
        file.write_all(line.as_bytes())
            .map_err(|e| failed(&path, e))?;
        file.sync_all().map_err(|e| failed(&path, e))?;
    }
    if made_ssh || !present {
        ssh_dir.sync_all().map_err(|e| failed(&ssh, e))?;
    }
    Ok(())
}
