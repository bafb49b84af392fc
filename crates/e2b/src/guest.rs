//! Running things in a sandbox's guest through the client crate: who runs them (envd's
//! user, from the request), small scripts whose output is captured with a bound, and the
//! error a failed exec becomes.

use banger_api::ErrorCode;
use banger_api::vm::VmExecParams;
use banger_client::Client;
use banger_client::exec::{self, Control, ExecEnd};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::connect::{Code, RpcError};

/// The guest user a request acts as: envd's clients name it (`Authorization: Basic`, or
/// `username=` on `/files`); none means the guest's default, root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User(pub Option<String>);

impl User {
    pub fn new(name: Option<String>) -> User {
        User(name.filter(|n| n != "root"))
    }

    /// The exec parameters for `argv` as this user; `cwd` defaults to root's home for
    /// root, the agent's choice (the user's home) for others.
    pub fn exec(
        &self,
        vm: &str,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<String>,
    ) -> VmExecParams {
        let cwd = cwd.or_else(|| self.0.is_none().then(|| "/root".to_string()));
        VmExecParams {
            vm: vm.to_string(),
            argv,
            env,
            cwd,
            user: self.0.clone(),
            tty: None,
            term: None,
        }
    }
}

/// What a captured script printed and how it ended.
#[derive(Debug)]
pub struct Captured {
    /// The exit code (128+N for signal N).
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Captured {
    /// The script's stderr as one line for an error message (controls made visible).
    pub fn stderr_line(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let text = banger_api::text::cut(text.trim(), 400);
        banger_api::text::visible(text).into_owned()
    }
}

/// How long a script with no stdin to stream may run: the guest decides how long it
/// takes, we decide how long we wait.
pub const SCRIPT_TIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `sh -c SCRIPT sh ARGS…` as `user`. Output beyond `limit` bytes ends it at once
/// with an error (the guest decides how much it prints, we decide how much we keep), as
/// does running past `within` (the session is dropped: the agent kills the script's
/// process group).
#[allow(clippy::too_many_arguments)]
pub async fn script(
    client: &Client,
    vm: &str,
    user: &User,
    script: &str,
    args: &[&str],
    stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    limit: usize,
    within: Option<std::time::Duration>,
) -> Result<Captured, RpcError> {
    let mut argv = vec!["sh".into(), "-c".into(), script.into(), "sh".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    // Paths relative to the user's home, as envd resolves them.
    let params = user.exec(vm, argv, Vec::new(), None);
    let (_controls, rx) = mpsc::unbounded_channel::<Control>();
    let mut out = Bounded::new(limit);
    let mut err = Bounded::new(64 << 10);
    let session = exec::session(client, &params, stdin, rx, &mut out, &mut err);
    let ended = match within {
        Some(within) => tokio::time::timeout(within, session).await.map_err(|_| {
            RpcError::new(
                Code::DeadlineExceeded,
                format!(
                    "the guest took longer than {} s to answer",
                    within.as_secs()
                ),
            )
        })?,
        None => session.await,
    };
    for (over, what, max) in [
        (out.over, "answer", limit),
        (err.over, "error output", err.limit),
    ] {
        if over {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                format!("the guest's {what} is over {max} bytes: refused"),
            ));
        }
    }
    let code = match ended.map_err(|e| exec_error(&e))? {
        ExecEnd::FailedToStart(f) => {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                banger_api::text::visible(&f.message).into_owned(),
            ));
        }
        end => end.shell_code(),
    };
    Ok(Captured {
        code,
        stdout: out.bytes,
        stderr: err.bytes,
    })
}

/// The RPC error for an exec that could not run.
pub fn exec_error(e: &banger_client::Error) -> RpcError {
    match e.api() {
        Some(api) => api_error(api.code, &api.message),
        None => RpcError::new(
            Code::Unavailable,
            banger_api::text::visible(&format!("{e:#}")).into_owned(),
        ),
    }
}

fn api_error(code: ErrorCode, message: &str) -> RpcError {
    let code = match code {
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::NotRunning => Code::Unavailable,
        ErrorCode::BadRequest => Code::InvalidArgument,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::Unauthorized => Code::PermissionDenied,
        _ => Code::Internal,
    };
    RpcError::new(code, banger_api::text::visible(message).into_owned())
}

/// A writer that keeps up to `limit` bytes and fails the write that would pass it.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Bounded {
    fn new(limit: usize) -> Bounded {
        Bounded {
            bytes: Vec::new(),
            limit,
            over: false,
        }
    }
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.limit {
            // Refused at once: the session ends instead of draining an endless answer.
            self.over = true;
            return std::task::Poll::Ready(Err(std::io::Error::other("over the limit")));
        }
        self.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
