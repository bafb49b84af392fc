//! `banger ssh-config [--install|--uninstall] [--print]`: real OpenSSH into VMs.
//!
//! Writes a banger-owned file, `$XDG_CONFIG_HOME/banger/ssh_config`:
//!
//! ```text
//! Host *.vm
//!     User root
//!     ProxyCommand /abs/path/banger vm proxy '%h' %p
//!     IdentityFile <banger's own key, from the daemon>
//!     IdentitiesOnly yes
//!     UserKnownHostsFile <banger's known_hosts, from the daemon>
//!     StrictHostKeyChecking yes
//!     CheckHostIP no
//!     ForwardAgent no
//!     ForwardX11 no
//! ```
//!
//! The guest is untrusted: a user's `Host *` with `ForwardAgent yes` (or X11) must not hand
//! it the ssh-agent or the display, and since ssh takes the first value it reads, ours win
//! when the file is included at the top. Port forwardings the user asks for (`ssh -L`) stay
//! possible, so no `ClearAllForwardings`. `%h` is single-quoted because ProxyCommand goes
//! through a shell (OpenSSH before 9.6 passed odd host names through as typed).
//!
//! No `HostKeyAlias`: OpenSSH does not expand `%h` there (every VM would share one alias);
//! without it the host key is looked up under the name as typed, `NAME.vm` (lower-cased by
//! ssh), which is how the daemon writes its known_hosts lines. A non-default port is looked
//! up as `[NAME.vm]:PORT`, so the daemon's lines only match port 22.
//!
//! `--install` adds one `Include <that file>` line at the top of `~/.ssh/config` (creating
//! `~/.ssh` 0700 and the file 0600 when missing; a second run changes nothing) — at the top
//! because an `Include` after a `Host` line would only apply inside that block.
//! `--uninstall` removes that line again (and leaves banger's file, which then does nothing).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use banger_api::methods;
use banger_api::system::Empty;
use banger_api::vm::{SshInfo, SshKeys};
use clap::Args;

use crate::Context;
use crate::config::{config_dir, home_dir};

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// Also add `Include <banger's ssh_config>` at the top of ~/.ssh/config (once).
    #[arg(long, conflicts_with = "uninstall")]
    pub install: bool,
    /// Remove that `Include` line from ~/.ssh/config (the daemon is not needed).
    #[arg(long)]
    pub uninstall: bool,
    /// Print the generated config on stdout instead of writing it (with --install: write,
    /// install and print).
    #[arg(long, conflicts_with = "uninstall")]
    pub print: bool,
    /// Print the daemon's known_hosts (what `KnownHostsCommand` runs with --host).
    #[arg(long, hide = true, conflicts_with_all = ["install", "uninstall", "print"])]
    pub known_hosts: bool,
}

/// The banger-owned ssh config's path.
pub fn ssh_config_path() -> PathBuf {
    config_dir().join("ssh_config")
}

/// `~/.ssh/config` (`$HOME` respected).
pub fn user_ssh_config() -> PathBuf {
    home_dir().join(".ssh").join("config")
}

/// A path or command word as ssh_config wants it: double-quoted when it holds blanks.
fn quoted(text: &str) -> String {
    if text.contains([' ', '\t', '"']) {
        format!("\"{}\"", text.replace('"', "\\\""))
    } else {
        text.to_string()
    }
}

/// `banger` as ProxyCommand's shell sees it: single-quoted when the path holds blanks or
/// shell characters.
fn shell_exe(banger: &Path) -> String {
    let exe = banger.to_string_lossy();
    if exe.contains([' ', '\t', '\'', '"', '$', '\\']) {
        format!("'{}'", exe.replace('\'', "'\\''"))
    } else {
        exe.into_owned()
    }
}

/// The file's text.
pub fn render(banger: &Path, info: &SshInfo) -> String {
    render_with(
        &shell_exe(banger),
        &quoted(&info.identity_file),
        &format!("UserKnownHostsFile {}", quoted(&info.known_hosts_file)),
    )
}

/// The file's text for a daemon on another host (`--host`): ProxyCommand goes there, the
/// identity is a local copy (`identity`), and the guests' host keys are asked of that daemon
/// on each connection (`KnownHostsCommand`), so VMs made later are known too.
pub fn render_remote(banger: &Path, target: &banger_client::SshTarget, identity: &Path) -> String {
    // The URL is checked (letters, digits, '.', '-', '_', ':', '@', '[', ']' only): no quoting.
    let command = format!("{} --host {target}", shell_exe(banger));
    render_with(
        &command,
        &quoted(&identity.to_string_lossy()),
        &format!(
            "UserKnownHostsFile /dev/null\n\x20   KnownHostsCommand {command} ssh-config --known-hosts"
        ),
    )
}

fn render_with(command: &str, identity: &str, known_hosts: &str) -> String {
    format!(
        "# Written by `banger ssh-config`; rewritten on each run, do not edit.\n\
# `ssh NAME.vm` reaches VM NAME through banger's agent channel (no guest network needed).\n\
Host *.vm\n\
\x20   User root\n\
\x20   ProxyCommand {command} vm proxy '%h' %p\n\
\x20   IdentityFile {identity}\n\
\x20   IdentitiesOnly yes\n\
\x20   {known_hosts}\n\
\x20   StrictHostKeyChecking yes\n\
\x20   CheckHostIP no\n\
\x20   ForwardAgent no\n\
\x20   ForwardX11 no\n"
    )
}

/// Where a remote daemon's identity is kept on this machine: one file per host, 0600.
fn remote_identity_path(target: &banger_client::SshTarget) -> PathBuf {
    let slug: String = target
        .to_string()
        .trim_start_matches("ssh://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    config_dir().join("remote").join(slug).join("id_ed25519")
}

/// The `Include` line for `file`.
pub fn include_line(file: &Path) -> String {
    format!("Include {}", quoted(&file.to_string_lossy()))
}

fn is_our_include(line: &str, ours: &str) -> bool {
    line.trim() == ours
}

/// `existing` with exactly one `ours` line, first.
pub fn with_include(existing: &str, ours: &str) -> String {
    let mut out = format!("{ours}\n");
    for line in existing.lines().filter(|l| !is_our_include(l, ours)) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `existing` without the `ours` line.
pub fn without_include(existing: &str, ours: &str) -> String {
    let mut out = String::new();
    for line in existing.lines().filter(|l| !is_our_include(l, ours)) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Adds the include line to `ssh_config` (made with its directory when missing). Returns
/// whether the file changed.
pub fn install(ssh_config: &Path, ours_file: &Path) -> anyhow::Result<bool> {
    let line = include_line(ours_file);
    let existing = read_or_empty(ssh_config)?;
    let wanted = with_include(&existing, &line);
    if wanted == existing {
        return Ok(false);
    }
    write_keeping_mode(ssh_config, &wanted)?;
    Ok(true)
}

/// Removes the include line. Returns whether the file changed.
pub fn uninstall(ssh_config: &Path, ours_file: &Path) -> anyhow::Result<bool> {
    let line = include_line(ours_file);
    let existing = match std::fs::read_to_string(ssh_config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", ssh_config.display())),
    };
    let wanted = without_include(&existing, &line);
    if wanted == existing {
        return Ok(false);
    }
    write_keeping_mode(ssh_config, &wanted)?;
    Ok(true)
}

fn read_or_empty(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces `path`'s content atomically (a temporary file renamed over it), keeping its
/// mode, writing through a symlink to its target (dotfile managers), creating the file
/// 0600 and its directory 0700 when missing.
fn write_keeping_mode(path: &Path, text: &str) -> anyhow::Result<()> {
    let target = match std::fs::canonicalize(path) {
        Ok(t) => t,
        Err(_) => path.to_path_buf(),
    };
    let dir = target
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", target.display()))?;
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mode = std::fs::metadata(&target)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let tmp = dir.join(format!(
        ".{}.banger-{}",
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("writing {}", target.display()))
    })
}

pub async fn run(ctx: &Context, args: SshConfigArgs) -> anyhow::Result<u8> {
    let ours = ssh_config_path();
    let user = user_ssh_config();
    if args.uninstall {
        let changed = uninstall(&user, &ours)?;
        println!(
            "{}",
            if changed {
                format!("removed `{}` from {}", include_line(&ours), user.display())
            } else {
                format!(
                    "{} has no `{}` line: nothing to do",
                    user.display(),
                    include_line(&ours)
                )
            }
        );
        return Ok(0);
    }
    let client = ctx.client().await?;
    if args.known_hosts {
        let keys: SshKeys = client.call::<methods::ssh::Keys>(&Empty {}).await?;
        print!("{}", keys.known_hosts);
        return Ok(0);
    }
    let exe = std::env::current_exe().context("finding banger's own path")?;
    let text = match client.remote() {
        None => {
            let info: SshInfo = client.call::<methods::ssh::Config>(&Empty {}).await?;
            render(&exe, &info)
        }
        Some(target) => {
            let keys: SshKeys = client.call::<methods::ssh::Keys>(&Empty {}).await?;
            let identity = remote_identity_path(target);
            write_keeping_mode(&identity, &keys.identity)?;
            render_remote(&exe, target, &identity)
        }
    };
    if args.print && !args.install {
        print!("{text}");
        return Ok(0);
    }
    write_keeping_mode(&ours, &text)?;
    if args.print {
        print!("{text}");
    } else {
        println!("wrote {}", ours.display());
    }
    if args.install {
        let changed = install(&user, &ours)?;
        let msg = if changed {
            format!(
                "added `{}` to the top of {}",
                include_line(&ours),
                user.display()
            )
        } else {
            format!("{} already includes it", user.display())
        };
        if args.print {
            eprintln!("{msg}");
        } else {
            println!("{msg}");
        }
    } else if !args.print {
        println!(
            "use it with `ssh -F {} NAME.vm`, or add it to ~/.ssh/config with `banger ssh-config --install`",
            ours.display()
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SshInfo {
        SshInfo {
            identity_file: "/home/me/.local/state/banger/ssh/id_ed25519".into(),
            public_key: "ssh-ed25519 AAAA banger".into(),
            known_hosts_file: "/home/me/.local/state/banger/ssh/known_hosts".into(),
        }
    }

    #[test]
    fn a_remote_config_goes_through_the_host_and_asks_it_for_host_keys() {
        let target = banger_client::SshTarget::parse("ssh://me@box:2222").expect("parses");
        let text = render_remote(
            Path::new("/usr/local/bin/banger"),
            &target,
            Path::new("/home/me/.config/banger/remote/me_box_2222/id_ed25519"),
        );
        for want in [
            "    ProxyCommand /usr/local/bin/banger --host ssh://me@box:2222 vm proxy '%h' %p\n",
            "    IdentityFile /home/me/.config/banger/remote/me_box_2222/id_ed25519\n",
            "    UserKnownHostsFile /dev/null\n",
            "    KnownHostsCommand /usr/local/bin/banger --host ssh://me@box:2222 ssh-config --known-hosts\n",
            "    StrictHostKeyChecking yes\n",
            "    ForwardAgent no\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(
            remote_identity_path(&target)
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str()),
            Some("me_box_2222")
        );
    }

    #[test]
    fn the_config_points_at_banger_and_its_key() {
        let text = render(Path::new("/usr/local/bin/banger"), &info());
        for want in [
            "Host *.vm\n",
            "    User root\n",
            "    ProxyCommand /usr/local/bin/banger vm proxy '%h' %p\n",
            "    IdentityFile /home/me/.local/state/banger/ssh/id_ed25519\n",
            "    IdentitiesOnly yes\n",
            "    UserKnownHostsFile /home/me/.local/state/banger/ssh/known_hosts\n",
            "    StrictHostKeyChecking yes\n",
            "    ForwardAgent no\n",
            "    ForwardX11 no\n",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        assert!(!text.contains("HostKeyAlias"));
        let spaced = render(
            Path::new("/opt/my tools/banger"),
            &SshInfo {
                identity_file: "/a b/id".into(),
                ..info()
            },
        );
        assert!(
            spaced.contains("ProxyCommand '/opt/my tools/banger' vm proxy '%h' %p"),
            "{spaced}"
        );
        assert!(spaced.contains("IdentityFile \"/a b/id\""), "{spaced}");
    }

    /// Real OpenSSH parses the file, and its settings hold against a user's `Host *` that
    /// asks for agent and X11 forwarding (included after ours, as `--install` orders it).
    #[test]
    fn openssh_accepts_the_config_and_forwards_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = dir.path().join("banger_ssh_config");
        std::fs::write(&ours, render(Path::new("/opt/my tools/banger"), &info())).expect("write");
        let user = dir.path().join("config");
        std::fs::write(
            &user,
            format!(
                "{}\nHost *\n    ForwardAgent yes\n    ForwardX11 yes\n",
                include_line(&ours)
            ),
        )
        .expect("write");
        let out = std::process::Command::new("ssh")
            .arg("-G")
            .arg("-F")
            .arg(&user)
            .arg("dev.vm")
            .output()
            .expect("running ssh -G (OpenSSH client)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ssh -G failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for want in [
            "\nforwardagent no\n",
            "\nforwardx11 no\n",
            "\nuser root\n",
            "\nproxycommand '/opt/my tools/banger' vm proxy '%h' %p\n",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }

    #[test]
    fn install_and_uninstall_are_idempotent() {
        let home = tempfile::tempdir().expect("tempdir");
        let user = home.path().join(".ssh/config");
        let ours = home.path().join(".config/banger/ssh_config");
        let line = include_line(&ours);

        // No ~/.ssh at all: made 0700, the file 0600.
        assert!(install(&user, &ours).expect("install"));
        assert_eq!(
            std::fs::read_to_string(&user).expect("read"),
            format!("{line}\n")
        );
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&home.path().join(".ssh")), 0o700);
        assert_eq!(mode(&user), 0o600);
        assert!(
            !install(&user, &ours).expect("again"),
            "a second install changes nothing"
        );

        // An existing config: the line goes first, once; the rest stays; the mode too.
        std::fs::write(&user, "Host gh\n    HostName github.com\n").expect("write");
        std::fs::set_permissions(&user, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(install(&user, &ours).expect("install"));
        assert!(!install(&user, &ours).expect("again"));
        let text = std::fs::read_to_string(&user).expect("read");
        assert_eq!(text, format!("{line}\nHost gh\n    HostName github.com\n"));
        assert_eq!(text.matches("Include").count(), 1);
        assert_eq!(mode(&user), 0o644);

        // A misplaced copy of our line (e.g. inside a Host block) moves to the top.
        std::fs::write(&user, format!("Host gh\n    {line}\n")).expect("write");
        install(&user, &ours).expect("install");
        assert_eq!(
            std::fs::read_to_string(&user).expect("read"),
            format!("{line}\nHost gh\n")
        );

        assert!(uninstall(&user, &ours).expect("uninstall"));
        assert_eq!(std::fs::read_to_string(&user).expect("read"), "Host gh\n");
        assert!(!uninstall(&user, &ours).expect("again"));
        let missing = home.path().join("nowhere/config");
        assert!(!uninstall(&missing, &ours).expect("no file"));
        assert!(!missing.exists());
    }

    #[test]
    fn a_symlinked_config_is_written_through() {
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(home.path().join(".ssh")).expect("mkdir");
        let real = home.path().join("dotfiles-ssh-config");
        std::fs::write(&real, "Host x\n").expect("write");
        let user = home.path().join(".ssh/config");
        std::os::unix::fs::symlink(&real, &user).expect("symlink");
        let ours = home.path().join("banger_ssh_config");
        install(&user, &ours).expect("install");
        assert!(
            std::fs::symlink_metadata(&user)
                .expect("stat")
                .file_type()
                .is_symlink()
        );
        assert!(
            std::fs::read_to_string(&real)
                .expect("read")
                .starts_with("Include ")
        );
    }
}
