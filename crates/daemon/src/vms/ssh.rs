//! banger's own SSH identity and known_hosts, so real OpenSSH reaches guests through the
//! agent (`ProxyCommand banger vm proxy %h %p`) with no prompt and no warning:
//!
//! - one ed25519 key in `<state>/ssh/id_ed25519`, made with `ssh-keygen` on first use; its
//!   public half is added to the guest's `/root/.ssh/authorized_keys` at every boot;
//! - `<state>/ssh/known_hosts` holds `NAME.vm` lines with the guest's host keys, learned over
//!   the agent channel (trusted: it is the VM's own device), replaced whenever they are
//!   learned again and removed with the VM, so a recreated VM never trips "REMOTE HOST
//!   IDENTIFICATION HAS CHANGED". The user's own known_hosts is never touched.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_api::vm::{SshInfo, SshKeys};
use banger_guest_proto::{AddAuthorizedKey, Empty, ReadFile, paths};

use super::Vms;
use super::agent::AgentConn;
use crate::error::OpError;

/// Serialises rewrites of the shared known_hosts file.
static KNOWN_HOSTS_LOCK: Mutex<()> = Mutex::new(());

const HOST_KEYS: [&str; 3] = [
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/etc/ssh/ssh_host_ecdsa_key.pub",
    "/etc/ssh/ssh_host_rsa_key.pub",
];

fn ssh_dir(state: &Path) -> PathBuf {
    state.join("ssh")
}

impl Vms {
    /// The identity and known_hosts paths, creating the key if needed.
    pub fn ssh_info(&self) -> Result<SshInfo, OpError> {
        let dir = ssh_dir(&self.layout.state_dir);
        let key = ensure_key(&dir)?;
        let public_key = std::fs::read_to_string(key.with_extension("pub"))
            .map_err(|e| OpError::io(format!("reading {}.pub", key.display()), e))?
            .trim()
            .to_string();
        let known = dir.join("known_hosts");
        if !known.exists() {
            std::fs::write(&known, b"")
                .map_err(|e| OpError::io(format!("creating {}", known.display()), e))?;
        }
        Ok(SshInfo {
            identity_file: crate::paths::to_string(&key)?,
            public_key,
            known_hosts_file: crate::paths::to_string(&known)?,
        })
    }

    /// The identity and known_hosts as text (`ssh.keys`), for a client on another machine.
    pub fn ssh_keys(&self) -> Result<SshKeys, OpError> {
        let info = self.ssh_info()?;
        // Both are banger's own small files; a bound keeps a damaged one from filling memory.
        let read = |path: &str| -> Result<String, OpError> {
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| {
                    std::io::Read::read_to_string(&mut std::io::Read::take(f, 1 << 20), &mut text)
                })
                .map_err(|e| OpError::io(format!("reading {path}"), e))?;
            Ok(text)
        };
        let _guard = KNOWN_HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        Ok(SshKeys {
            identity: read(&info.identity_file)?,
            known_hosts: read(&info.known_hosts_file)?,
        })
    }

    /// At boot: authorize banger's key in the guest (if a key exists or can be made) and
    /// learn the guest's host keys. Failures are logged: SSH is optional, exec is not.
    pub(super) async fn setup_ssh(&self, vm: &str, conn: &AgentConn) {
        // Concurrent calls on the one HTTP/2 connection: a round trip, not four.
        let authorize = async {
            if let Some(add) = self.ssh_key_to_authorize(vm)
                && let Err(e) = conn.call::<_, Empty>(paths::AUTHORIZED_KEY, &add).await
            {
                tracing::warn!(vm, error = %e, "could not authorize banger's SSH key in the guest");
            }
        };
        tokio::join!(authorize, self.refresh_known_hosts(vm, conn));
    }

    /// banger's public key for root's authorized_keys; None (logged) when there is none.
    pub(super) fn ssh_key_to_authorize(&self, vm: &str) -> Option<AddAuthorizedKey> {
        match self.ssh_info() {
            Ok(info) => Some(AddAuthorizedKey {
                user: "root".into(),
                key: info.public_key,
            }),
            Err(e) => {
                tracing::info!(vm, error = %e, "no SSH key for guests (ssh-keygen missing?)");
                None
            }
        }
    }

    /// Replaces the VM's lines in banger's known_hosts with the host keys the guest has now.
    pub(super) async fn refresh_known_hosts(&self, vm: &str, conn: &AgentConn) {
        let read = |path: &str| {
            let read = ReadFile {
                path: path.into(),
                max_bytes: 16 << 10,
            };
            async move { conn.read_file(&read).await.ok().map(|c| c.data) }
        };
        let [ed25519, ecdsa, rsa] = HOST_KEYS;
        let (a, b, c) = tokio::join!(read(ed25519), read(ecdsa), read(rsa));
        self.record_host_keys(vm, [a, b, c].iter().flatten());
    }

    /// Replaces the VM's lines in banger's known_hosts with `keys` (public key files' text
    /// from the guest: only each one's type and key are kept).
    pub(super) fn record_host_keys<'a>(
        &self,
        vm: &str,
        keys: impl IntoIterator<Item = &'a String>,
    ) {
        let keys = known_host_keys(keys);
        let known = ssh_dir(&self.layout.state_dir).join("known_hosts");
        if let Err(e) = replace_host_lines(&known, &format!("{vm}.vm"), &keys) {
            tracing::warn!(vm, error = %e, "could not update banger's known_hosts");
        }
    }

    /// Forgets a deleted VM's host keys.
    pub(super) fn forget_host_keys(&self, vm: &str) {
        let known = ssh_dir(&self.layout.state_dir).join("known_hosts");
        if known.exists()
            && let Err(e) = replace_host_lines(&known, &format!("{vm}.vm"), &[])
        {
            tracing::warn!(vm, error = %e, "could not update banger's known_hosts");
        }
    }
}

/// `<dir>/id_ed25519`, generated with `ssh-keygen` the first time (atomically: a temp name,
/// then rename, so a half-made key is never used).
fn ensure_key(dir: &Path) -> Result<PathBuf, OpError> {
    let key = dir.join("id_ed25519");
    if key.is_file() && key.with_extension("pub").is_file() {
        return Ok(key);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| OpError::io(format!("creating {}", dir.display()), e))?;
    let tmp = dir.join(format!(".id_ed25519.tmp-{}", std::process::id()));
    let tmp_pub = dir.join(format!(".id_ed25519.tmp-{}.pub", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(&tmp_pub);
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "banger"])
        .arg("-f")
        .arg(&tmp)
        .output()
        .map_err(|e| {
            OpError::Unavailable(format!(
                "cannot run ssh-keygen ({e}): install openssh-client for SSH into VMs"
            ))
        })?;
    if !out.status.success() {
        return Err(OpError::Failed(format!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&tmp_pub, key.with_extension("pub"))
        .and_then(|()| std::fs::rename(&tmp, &key))
        .map_err(|e| OpError::io(format!("installing {}", key.display()), e))?;
    Ok(key)
}

/// Rewrites `file` without the lines of `host`, then with `host KEY` for each key.
/// The `type key` pairs to record from public key files' text sent by a guest: at most
/// one per key type, so a guest cannot grow known_hosts beyond its own few lines.
fn known_host_keys<'a>(texts: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    texts
        .into_iter()
        .take(HOST_KEYS.len())
        .filter_map(|text| {
            let mut words = text.split_whitespace();
            Some(format!("{} {}", words.next()?, words.next()?))
        })
        .collect()
}

fn replace_host_lines(file: &Path, host: &str, keys: &[String]) -> std::io::Result<()> {
    let _guard = KNOWN_HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let old = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut out: String = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(host))
        .map(|l| format!("{l}\n"))
        .collect();
    for k in keys {
        out.push_str(&format!("{host} {k}\n"));
    }
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guests_key_answer_gives_type_and_key_only_and_at_most_three() {
        let mut hostile: Vec<String> = vec![
            "ssh-ed25519 AAAA root@guest\n".into(),
            "lonely-word\n".into(),
            "ssh-rsa BBBB\nother.vm ssh-rsa CCCC\n".into(),
        ];
        hostile.extend((0..100).map(|i| format!("ssh-ed25519 K{i}")));
        assert_eq!(
            known_host_keys(&hostile),
            ["ssh-ed25519 AAAA", "ssh-rsa BBBB"],
            "no comment, no second line smuggled in, nothing past three answers"
        );
    }

    #[test]
    fn host_lines_are_replaced_not_appended() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("known_hosts");
        replace_host_lines(&f, "a.vm", &["ssh-ed25519 AAA".into()]).expect("write");
        replace_host_lines(&f, "b.vm", &["ssh-ed25519 BBB".into()]).expect("write");
        replace_host_lines(&f, "a.vm", &["ssh-ed25519 CCC".into()]).expect("write");
        let text = std::fs::read_to_string(&f).expect("read");
        assert_eq!(text, "b.vm ssh-ed25519 BBB\na.vm ssh-ed25519 CCC\n");
        replace_host_lines(&f, "b.vm", &[]).expect("write");
        assert_eq!(
            std::fs::read_to_string(&f).expect("read"),
            "a.vm ssh-ed25519 CCC\n"
        );
    }
}
