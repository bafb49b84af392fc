//! A fork's own SSH host keys: every fork of a snapshot starts with the snapshot's, so the
//! `identity` call replaces the image's host keys with new ones before the VM is reported
//! ready, and tells a running sshd to load them.
//!
//! Only key types the image had are made again; an image without `ssh-keygen` is left as
//! it is (removing keys that cannot be made again would only break its sshd). Ed25519 and
//! ECDSA keys take milliseconds even under emulation and are made before the call answers;
//! an RSA key can take seconds there, so the old one is removed at once (no two VMs share
//! it) and the new one is made in the background.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use banger_guest_proto::MAX_HOST_KEY;

use crate::console::log;

/// Host key types, fast ones first.
const TYPES: [(&str, bool); 3] = [("ed25519", false), ("ecdsa", false), ("rsa", true)];

fn key_path(root: &Path, kind: &str) -> PathBuf {
    root.join(format!("etc/ssh/ssh_host_{kind}_key"))
}

/// Whether the image has any host key (a few `stat`s: [`regenerate`] has work to do).
pub fn present(root: &Path) -> bool {
    TYPES.iter().any(|(kind, _)| key_path(root, kind).exists())
}

/// The public host keys present now (`etc/ssh/ssh_host_*_key.pub`), each cut to
/// [`MAX_HOST_KEY`] bytes; the host checks their form.
pub fn public_keys(root: &Path) -> Vec<String> {
    TYPES
        .iter()
        .filter_map(|(kind, _)| {
            let file = std::fs::File::open(key_path(root, kind).with_extension("pub")).ok()?;
            let mut text = String::new();
            file.take(MAX_HOST_KEY as u64)
                .read_to_string(&mut text)
                .ok()?;
            Some(text)
        })
        .collect()
}

/// Replaces the host keys under `root`'s `etc/ssh` (`root` is `/` in the guest).
pub fn regenerate(root: &Path) {
    let Some(keygen) = ssh_keygen() else {
        return;
    };
    let mut slow = Vec::new();
    let mut made = false;
    for (kind, is_slow) in TYPES {
        let key = key_path(root, kind);
        if !key.exists() {
            continue;
        }
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        if is_slow {
            slow.push((kind, key));
        } else {
            made |= make(&keygen, kind, &key);
        }
    }
    if made {
        reload_sshd(root);
    }
    if !slow.is_empty() {
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            if slow.iter().any(|(kind, key)| make(&keygen, kind, key)) {
                reload_sshd(&root);
            }
        });
    }
}

fn ssh_keygen() -> Option<PathBuf> {
    [
        "/usr/bin/ssh-keygen",
        "/bin/ssh-keygen",
        "/usr/local/bin/ssh-keygen",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

fn make(keygen: &Path, kind: &str, key: &Path) -> bool {
    let out = Command::new(keygen)
        .args(["-q", "-N", "", "-t", kind, "-f"])
        .arg(key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            log!(
                "ssh-keygen -t {kind}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            log!("ssh-keygen -t {kind}: {e}");
            false
        }
    }
}

/// SIGHUP to the listening sshd (its pid file): it re-executes itself and reads the new
/// keys; sessions are unaffected.
fn reload_sshd(root: &Path) {
    for pidfile in ["run/sshd.pid", "var/run/sshd.pid"] {
        let Ok(text) = std::fs::read_to_string(root.join(pidfile)) else {
            continue;
        };
        if let Ok(pid) = text.trim().parse::<libc::pid_t>()
            && pid > 1
        {
            // SAFETY: kill(2) with a pid read from sshd's own pid file; no memory passed.
            unsafe { libc::kill(pid, libc::SIGHUP) };
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(root: &Path, kind: &str) -> String {
        std::fs::read_to_string(root.join(format!("etc/ssh/ssh_host_{kind}_key.pub")))
            .unwrap_or_default()
    }

    #[test]
    fn the_image_key_types_are_made_again() {
        let Some(keygen) = ssh_keygen() else {
            panic!("ssh-keygen not found: apt-get install openssh-client");
        };
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc/ssh");
        std::fs::create_dir_all(&etc).unwrap();
        assert!(!present(root.path()));
        assert!(public_keys(root.path()).is_empty());
        assert!(make(&keygen, "ed25519", &etc.join("ssh_host_ed25519_key")));
        assert!(present(root.path()));
        let before = public(root.path(), "ed25519");
        assert!(before.starts_with("ssh-ed25519 "), "{before}");
        regenerate(root.path());
        let after = public(root.path(), "ed25519");
        assert!(after.starts_with("ssh-ed25519 "), "{after}");
        assert_ne!(before, after);
        assert_eq!(public_keys(root.path()), [after]);
        // Types the image did not have are not added.
        assert!(!etc.join("ssh_host_ecdsa_key").exists());
        assert!(!etc.join("ssh_host_rsa_key").exists());
    }
}
