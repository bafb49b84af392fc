//! Start `bangerd` on first use, and wait until it answers.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use banger_api::layout::{Layout, check_private_dir, create_private_dir};
use banger_api::methods;
use banger_api::system::{Empty, PingResult};

use crate::Error;
use crate::transport::{Client, ClientError};

/// How long a fresh daemon gets to open its socket (it migrates the database and sweeps
/// leftovers first).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns a client for a daemon that answers, starting one if none does; `preflight`
/// runs first when one is started (the CLI reports a bad config file there). The daemon's
/// version is checked first: see [`check_version`].
pub async fn ensure_daemon(
    layout: &Layout,
    preflight: impl FnOnce() -> anyhow::Result<()>,
) -> Result<Client, Error> {
    let client = Client::new(&layout.socket_path());
    let answer = match ping(&client).await {
        Ok(answer) => answer,
        Err(ClientError::NotRunning { .. }) => {
            preflight()?;
            start_daemon(layout).await?
        }
        Err(e) => return Err(e.into()),
    };
    Ok(client.with_notice(check_version(&answer, None)?))
}

/// A client of the daemon on `target`, through ssh: the remote side starts its daemon when
/// none runs (`banger daemon dial-stdio`). The same version check as locally.
pub async fn ensure_remote(target: &crate::SshTarget) -> Result<Client, Error> {
    let client = Client::ssh(target.clone(), true);
    let answer = ping(&client).await?;
    Ok(client.with_notice(check_version(&answer, Some(target))?))
}

/// The daemon's versions against this client's: another API version is an error naming
/// both; another release with the same API is a warning (returned for the front end).
pub fn check_version(
    answer: &PingResult,
    remote: Option<&crate::SshTarget>,
) -> Result<Option<String>, ClientError> {
    let ours = env!("CARGO_PKG_VERSION");
    let at = remote.map(|t| format!(" on {t}")).unwrap_or_default();
    if answer.api_version == 0 {
        return Ok(Some(format!(
            "bangerd{at} is older than this banger {ours} (it does not report its version); \
             if a command fails, update it"
        )));
    }
    if answer.api_version != banger_api::API_VERSION {
        return Err(ClientError::VersionMismatch {
            client: ours.to_string(),
            client_api: banger_api::API_VERSION,
            daemon: answer.version.clone(),
            daemon_api: answer.api_version,
            at,
        });
    }
    if answer.version != ours {
        return Ok(Some(format!(
            "bangerd{at} is version {}, this banger is {ours} (same API {}): it works, but \
             updating both to one version is safer",
            answer.version,
            banger_api::API_VERSION
        )));
    }
    Ok(None)
}

pub async fn ping(client: &Client) -> Result<PingResult, ClientError> {
    client.call::<methods::system::Ping>(&Empty {}).await
}

/// Where the daemon binary is: `$BANGER_DAEMON`, next to this executable, or on PATH.
pub fn daemon_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BANGER_DAEMON") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let sibling = dir.join("bangerd");
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from("bangerd")
}

/// Spawns a detached daemon for `layout`, with this process's environment (so it reads
/// the same config file), and waits until it answers `ping`. A front end that wants a bad
/// config file reported before a daemon is started checks it first.
pub async fn start_daemon(layout: &Layout) -> Result<PingResult, Error> {
    Ok(spawn_and_wait(layout).await?)
}

async fn spawn_and_wait(layout: &Layout) -> anyhow::Result<PingResult> {
    check_shared_tmp_dirs(layout)?;
    std::fs::create_dir_all(&layout.state_dir)
        .with_context(|| format!("creating {}", layout.state_dir.display()))?;
    let log_path = layout.log_path();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let binary = daemon_binary();
    let mut child = Command::new(&binary)
        // Explicit directories: the daemon serves exactly the layout this CLI talks to.
        .arg("--state-dir")
        .arg(&layout.state_dir)
        .arg("--cache-dir")
        .arg(&layout.cache_dir)
        .arg("--runtime-dir")
        .arg(&layout.runtime_dir)
        .env("BANGER_STARTED_BY", "cli")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a Ctrl-C aimed at this CLI must not kill the daemon.
        .process_group(0)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (set BANGER_DAEMON to its path if it is elsewhere)",
                binary.display()
            )
        })?;
    let client = Client::new(&layout.socket_path());
    let deadline = Instant::now() + START_TIMEOUT;
    let mut delay = Duration::from_millis(10);
    loop {
        match ping(&client).await {
            Ok(p) => return Ok(p),
            Err(ClientError::NotRunning { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait().context("waiting for bangerd")?
            // Another client started a daemon at the same moment and ours lost the lock to
            // it: wait for that one instead.
            && !other_daemon_holds_the_lock(layout, child.id())
        {
            bail!(
                "bangerd exited ({status}) before it was ready:\n{}",
                log_tail(&log_path)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "bangerd did not answer within {START_TIMEOUT:?}; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Whether the state dir's lock file names a live process other than `ours` (the daemon
/// writes its pid there once it holds the lock).
fn other_daemon_holds_the_lock(layout: &Layout, ours: u32) -> bool {
    let text = std::fs::read_to_string(layout.state_lock_path()).unwrap_or_default();
    match text.trim().parse::<u32>() {
        Ok(pid) if pid != ours => std::path::Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    }
}

/// Under the temp-dir fallbacks (no `XDG_RUNTIME_DIR` or `HOME`), another user may have
/// made the directories first: create them private ourselves (the daemon does the same)
/// and refuse them, and an existing socket directory, unless they are ours alone.
fn check_shared_tmp_dirs(layout: &Layout) -> Result<(), ClientError> {
    let bases = layout.shared_tmp_bases();
    if bases.is_empty() {
        return Ok(());
    }
    let uid = crate::transport::effective_uid();
    for base in &bases {
        create_private_dir(base, uid)?;
    }
    match check_private_dir(&layout.runtime_dir, uid) {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    // The log can quote guests and registries.
    banger_api::text::visible(&lines[lines.len().saturating_sub(5)..].join("\n")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(version: &str, api: u32) -> PingResult {
        PingResult {
            ok: true,
            pid: 1,
            uptime_seconds: 0,
            version: version.into(),
            api_version: api,
        }
    }

    #[test]
    fn versions_that_matter_are_errors_and_others_warnings() {
        let ours = env!("CARGO_PKG_VERSION");
        assert_eq!(
            check_version(&answer(ours, banger_api::API_VERSION), None).expect("same"),
            None
        );
        let warning = check_version(&answer("0.0.9", banger_api::API_VERSION), None)
            .expect("same API")
            .expect("a warning");
        assert!(
            warning.contains("0.0.9") && warning.contains(ours),
            "{warning}"
        );
        let target = crate::SshTarget::parse("ssh://me@box").expect("parses");
        let e = check_version(&answer("9.0.0", banger_api::API_VERSION + 1), Some(&target))
            .expect_err("another API");
        let text = e.to_string();
        assert!(
            text.contains("9.0.0") && text.contains(ours) && text.contains("ssh://me@box"),
            "{text}"
        );
        assert!(
            check_version(&answer("", 0), None)
                .expect("old daemon")
                .is_some()
        );
    }

    #[test]
    fn a_lock_file_naming_another_live_process_means_another_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout {
            state_dir: dir.path().to_path_buf(),
            cache_dir: dir.path().join("cache"),
            runtime_dir: dir.path().join("run"),
        };
        assert!(!other_daemon_holds_the_lock(&layout, 1), "no lock file");
        let me = std::process::id();
        std::fs::write(layout.state_lock_path(), me.to_string()).expect("write");
        assert!(other_daemon_holds_the_lock(&layout, me + 1));
        assert!(!other_daemon_holds_the_lock(&layout, me), "our own child");
        std::fs::write(layout.state_lock_path(), "4294967295").expect("write");
        assert!(
            !other_daemon_holds_the_lock(&layout, me),
            "a pid that is not alive"
        );
    }
}
