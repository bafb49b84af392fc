//! One connection to a remote daemon: `ssh HOST banger daemon dial-stdio`, its stdin and
//! stdout as the byte stream (as `DOCKER_HOST=ssh://` does). Real OpenSSH does the
//! authentication with the user's config, keys and agent; banger never sees a password.
//!
//! `BANGER_SSH_COMMAND` replaces `ssh` (run through `sh -c`, as `GIT_SSH_COMMAND`), e.g.
//! `ssh -F ~/.ssh/work_config`; `BANGER_REMOTE_BANGER` names the remote `banger` when a
//! non-interactive ssh session's PATH does not hold it (e.g. `~/.cargo/bin/banger`).

use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::endpoint::SshTarget;
use crate::transport::ClientError;

/// Replaces `ssh` (a command line run by `sh -c`).
pub const SSH_COMMAND_ENV: &str = "BANGER_SSH_COMMAND";
/// The `banger` to run on the remote host.
pub const REMOTE_BANGER_ENV: &str = "BANGER_REMOTE_BANGER";
/// The exit status of `daemon dial-stdio --no-start` when no daemon runs there.
pub const EXIT_NOT_RUNNING: i32 = 3;
/// How much of ssh's stderr is kept for an error message.
const STDERR_TAIL: usize = 4096;

/// The ssh process behind one connection, kept for its exit status and stderr.
#[derive(Clone)]
pub struct Tunnel {
    target: SshTarget,
    child: Arc<tokio::sync::Mutex<Child>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// The connection's bytes: ssh's stdout and stdin. Dropping it kills ssh, which ends the
/// remote bridge, which closes the remote daemon's connection (its cancellation).
pub struct SshStream {
    stdout: ChildStdout,
    /// `None` once shut down: closing the pipe is what makes ssh send EOF.
    stdin: Option<ChildStdin>,
    tunnel: Tunnel,
}

impl Tunnel {
    /// Starts ssh. `start_daemon`: the remote side starts its daemon when none runs.
    pub fn open(target: &SshTarget, start_daemon: bool) -> Result<SshStream, ClientError> {
        let remote_banger =
            std::env::var(REMOTE_BANGER_ENV).unwrap_or_else(|_| "banger".to_string());
        let mut remote = vec![remote_banger, "daemon".into(), "dial-stdio".into()];
        if !start_daemon {
            remote.push("--no-start".into());
        }
        let ssh = std::env::var(SSH_COMMAND_ENV).unwrap_or_else(|_| "ssh".to_string());
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{ssh} \"$@\""))
            .arg("banger-ssh")
            // No tty for the remote side (the stream is binary); ssh's own prompts (a new
            // host key, a passphrase) still reach the user's terminal through /dev/tty.
            .arg("-T")
            .args(target.ssh_args())
            .args(remote.iter().map(|w| shell_word(w)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| ClientError::Ssh {
            host: target.to_string(),
            message: format!("cannot run {ssh}: {e}"),
        })?;
        let (Some(stdin), Some(stdout), Some(mut err)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ClientError::Protocol("ssh's pipes are missing".into()));
        };
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut kept = sink.lock().unwrap_or_else(|e| e.into_inner());
                kept.extend_from_slice(&buf[..n]);
                let excess = kept.len().saturating_sub(STDERR_TAIL);
                kept.drain(..excess);
            }
        });
        Ok(SshStream {
            stdout,
            stdin: Some(stdin),
            tunnel: Tunnel {
                target: target.clone(),
                child: Arc::new(tokio::sync::Mutex::new(child)),
                stderr,
            },
        })
    }

    /// Why the connection ended before the daemon answered: ssh's own failure (a wrong
    /// host, a refused key), no banger or no daemon there, or a broken bridge.
    pub async fn failure(&self) -> ClientError {
        let status = {
            let mut child = self.child.lock().await;
            tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .ok()
                .and_then(Result::ok)
        };
        let host = self.target.to_string();
        let last = self.last_stderr_line();
        match status.and_then(|s| s.code()) {
            Some(EXIT_NOT_RUNNING) => ClientError::RemoteNotRunning {
                host,
                message: last,
            },
            Some(127) => ClientError::Ssh {
                host,
                message: format!(
                    "banger is not on the PATH of a non-interactive ssh session there ({last}); \
                     install it there, or set {REMOTE_BANGER_ENV} to its path on that host"
                ),
            },
            Some(255) => ClientError::Ssh {
                host,
                message: if last.is_empty() {
                    "ssh failed".into()
                } else {
                    last
                },
            },
            code => ClientError::Ssh {
                host,
                message: format!(
                    "the bridge to the daemon ended ({}){}",
                    code.map_or("killed".to_string(), |c| format!("exit status {c}")),
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(": {last}")
                    }
                ),
            },
        }
    }

    fn last_stderr_line(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        // The remote side's words reach a terminal: controls are made visible.
        banger_api::text::visible(&last_line(&String::from_utf8_lossy(&kept))).into_owned()
    }
}

impl SshStream {
    pub fn tunnel(&self) -> Tunnel {
        self.tunnel.clone()
    }
}

/// The last line of ssh's stderr that says something (ssh prints warnings first).
fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// `word` quoted for the remote shell (ssh joins its arguments into one command line).
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-~+=:,".contains(c))
    {
        // A leading ~ stays unquoted so that `~/.cargo/bin/banger` expands there.
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

impl AsyncRead for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    /// A half-close: ssh's stdin is closed (a pipe's shutdown alone would not close it),
    /// ssh sends EOF, and the remote bridge half-closes the daemon's socket.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(stdin) = self.stdin.as_mut() {
            std::task::ready!(Pin::new(stdin).poll_flush(cx))?;
        }
        self.stdin = None;
        Poll::Ready(Ok(()))
    }
}

impl Drop for SshStream {
    fn drop(&mut self) {
        // The connection is over and ssh's stdin closes with this struct: ssh normally
        // ends on its own (the remote bridge sees EOF, the daemon closes). Give it a moment,
        // so that a failure's exit status is still ssh's own, then make sure it is gone.
        let child = self.tunnel.child.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let mut child = child.lock().await;
                    if tokio::time::timeout(Duration::from_secs(1), child.wait())
                        .await
                        .is_err()
                    {
                        let _ = child.kill().await;
                    }
                });
            }
            Err(_) => {
                if let Ok(mut child) = child.try_lock() {
                    let _ = child.start_kill();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_words_are_quoted_for_the_remote_shell() {
        assert_eq!(shell_word("banger"), "banger");
        assert_eq!(shell_word("~/.cargo/bin/banger"), "~/.cargo/bin/banger");
        assert_eq!(shell_word("/opt/my banger"), "'/opt/my banger'");
        assert_eq!(shell_word("a'b;c"), "'a'\\''b;c'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn the_last_line_that_says_something() {
        assert_eq!(
            last_line("Warning: added\nroot@h: Permission denied (publickey).\n\n"),
            "root@h: Permission denied (publickey)."
        );
        assert_eq!(last_line(""), "");
    }
}
