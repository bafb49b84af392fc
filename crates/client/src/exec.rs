//! One `vm.exec` session, driven by a front end: `POST /v1/vm.exec` asks to upgrade the
//! connection (`Upgrade: banger-exec/2`); after the daemon's `101`, the session sends
//! [`ClientFrame`]s (stdin, its EOF, signals, window sizes) and reads [`DaemonFrame`]s
//! (stdout, stderr, then exactly one `exit` or `error`): the daemon's public framing
//! (`banger_api::exec`, docs/api.md), not the guest's.
//!
//! The caller brings the byte streams (stdin, stdout, stderr) and the [`Control`] events;
//! a terminal's raw mode, its signals and window size are the front end's (the CLI's).

use anyhow::Context as _;
pub use banger_api::exec::ExitStatus;
use banger_api::exec::{
    ClientControl, ClientFrame, DaemonControl, DaemonFrame, ExecErrorCode, FrameReader, MAX_CHUNK,
};
use banger_api::methods;
use banger_api::vm::VmExecParams;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::Error;
use crate::transport::Client;

/// The largest stdin chunk a session sends in one frame: a front end reading stdin itself
/// reads at most this much at a time.
pub const STDIN_CHUNK: usize = MAX_CHUNK;

/// What a front end tells a running command besides its stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Deliver signal N (SIGINT, SIGTERM, …) to the command.
    Signal(i32),
    /// The pty's new window size.
    Resize { rows: u16, cols: u16 },
}

impl From<Control> for ClientFrame {
    fn from(control: Control) -> ClientFrame {
        ClientFrame::Control(match control {
            Control::Signal(signal) => ClientControl::Signal { signal },
            Control::Resize { rows, cols } => ClientControl::Resize { rows, cols },
        })
    }
}

/// Why a command could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    /// What kind of failure.
    pub kind: StartFailureKind,
    /// A message naming the program and the cause (written in the guest: escape it).
    pub message: String,
}

/// The classes of start failures a caller may treat differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFailureKind {
    /// No such program (exit 127).
    NotFound,
    /// Not executable (exit 126).
    PermissionDenied,
    /// No such user, bad working directory, or anything else (exit 126).
    Other,
}

impl StartFailure {
    /// The shell's exit code for this failure (127 not found, 126 otherwise).
    pub fn shell_code(&self) -> i32 {
        match self.kind {
            StartFailureKind::NotFound => 127,
            StartFailureKind::PermissionDenied | StartFailureKind::Other => 126,
        }
    }
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEnd {
    /// The command ran and ended so.
    Exited(ExitStatus),
    /// The command could not be started.
    FailedToStart(StartFailure),
    /// Our stdout or stderr was closed by its reader (`… | head`); the command is left to
    /// the daemon, which ends it when we hang up.
    OutputClosed,
}

impl ExecEnd {
    /// The shell's view: the exit code, 128+N for signal N, 127/126 for a failed start,
    /// 141 (128+SIGPIPE) when our output went away, as for a local writer.
    pub fn shell_code(&self) -> i32 {
        match self {
            ExecEnd::Exited(status) => status.shell_code(),
            ExecEnd::FailedToStart(failure) => failure.shell_code(),
            ExecEnd::OutputClosed => 128 + libc::SIGPIPE,
        }
    }
}

/// A shell code as a process exit status; anything outside 0..=255 (which no Linux
/// process can report) becomes 255 rather than wrapping around to a false success.
pub fn exit_byte(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(255)
}

/// The line a front end prints when the command could not start; the agent wrote the message, so its
/// controls are made visible.
pub fn start_failure_line(failure: &StartFailure) -> String {
    format!("banger: {}", banger_api::text::visible(&failure.message))
}

/// Connects, upgrades and pumps: one exec with the caller's streams. `stdin` of `None`
/// means EOF right away; `controls` carries signals and window sizes.
pub async fn session<I, O, E>(
    client: &Client,
    params: &VmExecParams,
    stdin: Option<I>,
    controls: mpsc::UnboundedReceiver<Control>,
    stdout: &mut O,
    stderr: &mut E,
) -> Result<ExecEnd, Error>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let conn = client.upgrade::<methods::vm::Exec>(params).await?;
    Ok(pump(conn, stdin, controls, stdout, stderr).await?)
}

/// Relays one exec over an upgraded connection until its final frame. `stdin` of `None`
/// means EOF right away; `controls` carries signals and resizes. Output is written as it
/// arrives, keeping the interleaving of stdout and stderr.
pub async fn pump<S, I, O, E>(
    conn: S,
    stdin: Option<I>,
    controls: mpsc::UnboundedReceiver<Control>,
    stdout: &mut O,
    stderr: &mut E,
) -> anyhow::Result<ExecEnd>
where
    S: AsyncRead + AsyncWrite,
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let (reader, writer) = tokio::io::split(conn);
    let input = send_inputs(writer, stdin, controls);
    let output = relay_outputs(reader, stdout, stderr);
    tokio::pin!(input, output);
    tokio::select! {
        end = &mut output => end,
        // Our side is done (or the daemon stopped reading): the answer still comes.
        _ = &mut input => output.await,
    }
}

async fn send_inputs<W, I>(
    mut conn: W,
    mut stdin: Option<I>,
    mut controls: mpsc::UnboundedReceiver<Control>,
) -> anyhow::Result<()>
where
    W: AsyncWrite + Unpin,
    I: AsyncRead + Unpin,
{
    if stdin.is_none() {
        send(&mut conn, &ClientFrame::StdinEof).await?;
    }
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut controls_open = true;
    loop {
        tokio::select! {
            read = read_opt(&mut stdin, &mut buf), if stdin.is_some() => {
                match read {
                    Ok(n) if n > 0 => send(&mut conn, &ClientFrame::Stdin(buf[..n].to_vec())).await?,
                    // EOF, or a stdin that cannot be read (a hung-up terminal): the same
                    // to the command.
                    _ => {
                        stdin = None;
                        send(&mut conn, &ClientFrame::StdinEof).await?;
                    }
                }
            }
            control = controls.recv(), if controls_open => match control {
                Some(control) => send(&mut conn, &control.into()).await?,
                None => controls_open = false,
            },
            else => return Ok(()),
        }
    }
}

async fn read_opt<I: AsyncRead + Unpin>(
    stdin: &mut Option<I>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match stdin {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn send<W: AsyncWrite + Unpin>(conn: &mut W, msg: &ClientFrame) -> anyhow::Result<()> {
    conn.write_all(&msg.encode()?).await?;
    conn.flush().await?;
    Ok(())
}

const WENT_AWAY: &str = "the VM's agent went away during exec: the connection closed before the command's exit status arrived (did the VM stop? see `banger vm show` and `banger vm logs`)";

async fn relay_outputs<R, O, E>(
    mut conn: R,
    stdout: &mut O,
    stderr: &mut E,
) -> anyhow::Result<ExecEnd>
where
    R: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut frames = FrameReader::default();
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut out = Outputs {
        stdout,
        stderr,
        unflushed: None,
    };
    loop {
        while let Some(frame) = frames.next_daemon().context("bad frame from bangerd")? {
            let written = match frame {
                DaemonFrame::Stdout(bytes) => out.write(Stream::Stdout, &bytes).await,
                DaemonFrame::Stderr(bytes) => out.write(Stream::Stderr, &bytes).await,
                DaemonFrame::Control(control) => match ending(control)? {
                    Some(end) => return out.finish(end).await,
                    None => Ok(()),
                },
            };
            if let Some(end) = output_failed(written)? {
                return Ok(end);
            }
        }
        // Everything received is written: make it visible before waiting for more.
        if let Some(end) = output_failed(out.flush().await)? {
            return Ok(end);
        }
        let n = conn.read(&mut buf).await.context(WENT_AWAY)?;
        if n == 0 {
            anyhow::bail!(WENT_AWAY);
        }
        frames.push(&buf[..n]);
    }
}

/// The end a control message announces, if any; an `error` that is not a start failure
/// is this session's error.
fn ending(control: DaemonControl) -> anyhow::Result<Option<ExecEnd>> {
    match control {
        DaemonControl::Exit {
            code: Some(code), ..
        } => Ok(Some(ExecEnd::Exited(ExitStatus::Code(code)))),
        DaemonControl::Exit {
            signal: Some(signal),
            ..
        } => Ok(Some(ExecEnd::Exited(ExitStatus::Signal(signal)))),
        DaemonControl::Exit { .. } => {
            anyhow::bail!("bangerd sent an exit with neither code nor signal")
        }
        DaemonControl::Error { code, message } => {
            let kind = match code {
                ExecErrorCode::CommandNotFound => StartFailureKind::NotFound,
                ExecErrorCode::PermissionDenied => StartFailureKind::PermissionDenied,
                ExecErrorCode::StartFailed => StartFailureKind::Other,
                ExecErrorCode::ExecFailed | ExecErrorCode::BadFrame | ExecErrorCode::Unknown => {
                    anyhow::bail!(
                        "exec failed: {} (see `banger vm show` and `banger vm logs`)",
                        banger_api::text::visible(&message)
                    )
                }
            };
            Ok(Some(ExecEnd::FailedToStart(StartFailure { kind, message })))
        }
        DaemonControl::Started { .. } | DaemonControl::Unknown => Ok(None),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// Our stdout and stderr, flushed when the command's output switches from one to the
/// other (so their interleaving is kept) and whenever no more output is at hand, not
/// after every frame.
struct Outputs<'a, O, E> {
    stdout: &'a mut O,
    stderr: &'a mut E,
    unflushed: Option<Stream>,
}

impl<O: AsyncWrite + Unpin, E: AsyncWrite + Unpin> Outputs<'_, O, E> {
    async fn write(&mut self, to: Stream, bytes: &[u8]) -> std::io::Result<()> {
        if self.unflushed.is_some_and(|s| s != to) {
            self.flush().await?;
        }
        match to {
            Stream::Stdout => self.stdout.write_all(bytes).await?,
            Stream::Stderr => self.stderr.write_all(bytes).await?,
        }
        self.unflushed = Some(to);
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self.unflushed.take() {
            Some(Stream::Stdout) => self.stdout.flush().await,
            Some(Stream::Stderr) => self.stderr.flush().await,
            None => Ok(()),
        }
    }

    /// The final frame: what came before it is flushed first.
    async fn finish(&mut self, end: ExecEnd) -> anyhow::Result<ExecEnd> {
        Ok(output_failed(self.flush().await)?.unwrap_or(end))
    }
}

/// A write to our stdout/stderr: fine, a reader that went away (`… | head`: the exec ends
/// quietly, as a local writer would by SIGPIPE), or a real error.
fn output_failed(written: std::io::Result<()>) -> anyhow::Result<Option<ExecEnd>> {
    match written {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Some(ExecEnd::OutputClosed)),
        Err(e) => Err(anyhow::Error::new(e).context("writing the command's output")),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};

    use banger_api::vm::EXEC_UPGRADE;
    use banger_api::{ApiError, ErrorBody, ErrorCode};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::upgrade::Upgraded;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::net::UnixListener;

    use super::*;
    use crate::transport::ClientError;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(ExecEnd::Exited(ExitStatus::Code(0)).shell_code(), 0);
        assert_eq!(ExecEnd::Exited(ExitStatus::Code(7)).shell_code(), 7);
        assert_eq!(ExecEnd::Exited(ExitStatus::Signal(2)).shell_code(), 130);
        let failure = |kind| {
            ExecEnd::FailedToStart(StartFailure {
                kind,
                message: String::new(),
            })
        };
        assert_eq!(failure(StartFailureKind::NotFound).shell_code(), 127);
        assert_eq!(
            failure(StartFailureKind::PermissionDenied).shell_code(),
            126
        );
        assert_eq!(failure(StartFailureKind::Other).shell_code(), 126);
        assert_eq!(ExecEnd::OutputClosed.shell_code(), 141);
        assert_eq!(exit_byte(0), 0);
        assert_eq!(exit_byte(137), 137);
        assert_eq!(exit_byte(255), 255);
        assert_eq!(exit_byte(256), 255, "never wraps to success");
        assert_eq!(exit_byte(-1), 255);
    }

    // --- A fake daemon: answers the upgrade like bangerd and hands the raw connection,
    // with the request's params, to the test, which then plays the guest.

    struct FakeDaemon {
        _dir: tempfile::TempDir,
        client: Client,
        sessions: mpsc::Receiver<(VmExecParams, Peer)>,
    }

    /// The daemon's end of one upgraded connection.
    struct Peer {
        io: TokioIo<Upgraded>,
        frames: FrameReader,
    }

    impl Peer {
        async fn recv(&mut self) -> Option<ClientFrame> {
            let mut buf = [0u8; 8192];
            loop {
                if let Some(msg) = self.frames.next_client().expect("a valid frame") {
                    return Some(msg);
                }
                let n = self.io.read(&mut buf).await.expect("read");
                if n == 0 {
                    return None;
                }
                self.frames.push(&buf[..n]);
            }
        }

        async fn send(&mut self, msg: DaemonFrame) {
            let bytes = msg.encode().expect("encode");
            self.io.write_all(&bytes).await.expect("write");
            self.io.flush().await.expect("flush");
        }
    }

    async fn fake_daemon() -> FakeDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bangerd.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (tx, sessions) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(req, tx.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeDaemon {
            _dir: dir,
            client: Client::new(&path),
            sessions,
        }
    }

    async fn answer(
        mut req: Request<Incoming>,
        tx: mpsc::Sender<(VmExecParams, Peer)>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        assert_eq!(req.uri().path(), "/v1/vm.exec");
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_ascii_lowercase)
        };
        assert_eq!(
            header(hyper::header::UPGRADE).as_deref(),
            Some(EXEC_UPGRADE)
        );
        assert_eq!(
            header(hyper::header::CONNECTION).as_deref(),
            Some("upgrade")
        );
        assert_eq!(
            header(hyper::header::CONTENT_TYPE).as_deref(),
            Some("application/json")
        );
        let on_upgrade = hyper::upgrade::on(&mut req);
        let body = req.into_body().collect().await.expect("body").to_bytes();
        let params: VmExecParams = serde_json::from_slice(&body).expect("VmExecParams");
        if params.vm == "stopped" {
            let error = ErrorBody {
                error: ApiError::new(ErrorCode::NotRunning, "vm stopped is not running"),
            };
            let body = serde_json::to_vec(&error).expect("json");
            return Ok(Response::builder()
                .status(409)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("response"));
        }
        // A daemon from before the public framing switches to the guest's frames.
        let token = if params.vm == "old-daemon" {
            "banger-exec"
        } else {
            EXEC_UPGRADE
        };
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let peer = Peer {
                    io: TokioIo::new(upgraded),
                    frames: FrameReader::default(),
                };
                let _ = tx.send((params, peer)).await;
            }
        });
        Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(hyper::header::CONNECTION, "upgrade")
            .header(hyper::header::UPGRADE, token)
            .body(Full::default())
            .expect("response"))
    }

    fn exec_params(vm: &str, argv: &[&str]) -> VmExecParams {
        VmExecParams {
            vm: vm.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            cwd: None,
            user: None,
            tty: None,
            term: None,
        }
    }

    struct Outcome {
        end: Result<ExecEnd, Error>,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    }

    /// Runs the client side of one exec against `guest`, which plays the daemon's end.
    async fn exec_against<G, F>(
        params: VmExecParams,
        stdin: Option<&[u8]>,
        controls: mpsc::UnboundedReceiver<Control>,
        guest: G,
    ) -> Outcome
    where
        G: FnOnce(VmExecParams, Peer) -> F,
        F: std::future::Future<Output = ()>,
    {
        let mut daemon = fake_daemon().await;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let client = daemon.client.clone();
        let sessions = &mut daemon.sessions;
        let (end, ()) = tokio::join!(
            session(&client, &params, stdin, controls, &mut stdout, &mut stderr),
            async move {
                let (params, peer) = sessions.recv().await.expect("a session");
                guest(params, peer).await;
            }
        );
        Outcome {
            end,
            stdout,
            stderr,
        }
    }

    fn no_controls() -> mpsc::UnboundedReceiver<Control> {
        mpsc::unbounded_channel().1
    }

    #[tokio::test]
    async fn stdout_and_stderr_stay_apart_and_the_exit_code_comes_back() {
        let out = exec_against(
            exec_params("dev", &["sh", "-c", "exit 7"]),
            None,
            no_controls(),
            |params, mut peer| async move {
                assert_eq!(params.argv, ["sh", "-c", "exit 7"]);
                assert_eq!(
                    peer.recv().await,
                    Some(ClientFrame::StdinEof),
                    "no -i: EOF at once"
                );
                peer.send(DaemonFrame::Control(DaemonControl::Started { pid: 12 }))
                    .await;
                peer.send(DaemonFrame::Stdout(b"out 1\n".to_vec())).await;
                peer.send(DaemonFrame::Stderr(b"err 1\n".to_vec())).await;
                peer.send(DaemonFrame::Stdout(b"out 2\n".to_vec())).await;
                peer.send(DaemonFrame::Control(DaemonControl::exit(ExitStatus::Code(
                    7,
                ))))
                .await;
            },
        )
        .await;
        let end = out.end.expect("ended");
        assert_eq!(end, ExecEnd::Exited(ExitStatus::Code(7)));
        assert_eq!(exit_byte(end.shell_code()), 7);
        assert_eq!(out.stdout, b"out 1\nout 2\n");
        assert_eq!(out.stderr, b"err 1\n");
    }

    #[tokio::test]
    async fn a_signal_death_is_128_plus_n() {
        let out = exec_against(
            exec_params("dev", &["sleep", "100"]),
            None,
            no_controls(),
            |_, mut peer| async move {
                peer.send(DaemonFrame::Control(DaemonControl::exit(
                    ExitStatus::Signal(9),
                )))
                .await;
            },
        )
        .await;
        assert_eq!(out.end.expect("ended").shell_code(), 137);
    }

    #[tokio::test]
    async fn a_missing_program_is_127() {
        let out = exec_against(
            exec_params("dev", &["nosuch"]),
            None,
            no_controls(),
            |_, mut peer| async move {
                peer.send(DaemonFrame::Control(DaemonControl::Error {
                    code: ExecErrorCode::CommandNotFound,
                    message: "nosuch: command not found in PATH=/usr/bin:/bin".into(),
                }))
                .await;
            },
        )
        .await;
        let end = out.end.expect("ended");
        assert_eq!(end.shell_code(), 127);
        match end {
            ExecEnd::FailedToStart(f) => assert!(f.message.starts_with("nosuch:")),
            other => panic!("{other:?}"),
        }
        assert!(out.stdout.is_empty() && out.stderr.is_empty());
    }

    #[tokio::test]
    async fn a_start_failure_quoting_escapes_prints_them_escaped() {
        let out = exec_against(
            exec_params("dev", &["x"]),
            None,
            no_controls(),
            |_, mut peer| async move {
                peer.send(DaemonFrame::Control(DaemonControl::Error {
                    code: ExecErrorCode::StartFailed,
                    message: "x: \u{1b}]52;c;Y3VybCBldmlsfHNo\u{7}denied".into(),
                }))
                .await;
            },
        )
        .await;
        let ExecEnd::FailedToStart(failure) = out.end.expect("ended") else {
            panic!("expected a start failure");
        };
        let line = start_failure_line(&failure);
        assert!(!line.contains(['\u{1b}', '\u{7}']), "{line:?}");
        assert_eq!(line, "banger: x: \\x1b]52;c;Y3VybCBldmlsfHNo\\x07denied");
    }

    #[tokio::test]
    async fn stdin_is_forwarded_in_chunks_then_eof() {
        let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let expected = input.clone();
        let out = exec_against(
            exec_params("dev", &["cat"]),
            Some(&input),
            no_controls(),
            |_, mut peer| async move {
                let mut got = Vec::new();
                loop {
                    match peer.recv().await {
                        Some(ClientFrame::Stdin(chunk)) => {
                            assert!(!chunk.is_empty() && chunk.len() <= MAX_CHUNK);
                            got.extend_from_slice(&chunk);
                        }
                        Some(ClientFrame::StdinEof) => break,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                assert_eq!(got, expected);
                peer.send(DaemonFrame::Stdout(
                    format!("{} bytes", got.len()).into_bytes(),
                ))
                .await;
                peer.send(DaemonFrame::Control(DaemonControl::exit(ExitStatus::Code(
                    0,
                ))))
                .await;
            },
        )
        .await;
        assert_eq!(out.end.expect("ended").shell_code(), 0);
        assert_eq!(out.stdout, b"200000 bytes");
    }

    #[tokio::test]
    async fn signals_reach_the_command() {
        let (tx, rx) = mpsc::unbounded_channel();
        let out = exec_against(
            exec_params("dev", &["sleep", "100"]),
            None,
            rx,
            |_, mut peer| async move {
                assert_eq!(peer.recv().await, Some(ClientFrame::StdinEof));
                tx.send(Control::Signal(libc::SIGINT)).expect("send");
                assert_eq!(
                    peer.recv().await,
                    Some(ClientFrame::Control(ClientControl::Signal {
                        signal: libc::SIGINT
                    }))
                );
                peer.send(DaemonFrame::Control(DaemonControl::exit(
                    ExitStatus::Signal(libc::SIGINT),
                )))
                .await;
            },
        )
        .await;
        assert_eq!(out.end.expect("ended").shell_code(), 130);
    }

    #[tokio::test]
    async fn a_connection_closed_without_a_status_is_an_error() {
        let out = exec_against(
            exec_params("dev", &["sleep", "100"]),
            None,
            no_controls(),
            |_, mut peer| async move {
                peer.send(DaemonFrame::Stdout(b"partial".to_vec())).await;
                drop(peer);
            },
        )
        .await;
        let err = out.end.expect_err("no final frame");
        assert!(format!("{err:#}").contains("went away"), "{err:#}");
        assert_eq!(out.stdout, b"partial");
    }

    #[tokio::test]
    async fn an_exec_failed_error_is_an_error_and_unknown_messages_are_skipped() {
        let out = exec_against(
            exec_params("dev", &["sleep", "100"]),
            None,
            no_controls(),
            |_, mut peer| async move {
                let unknown = br#"{"type":"progress","percent":50}"#;
                let bytes =
                    banger_api::exec::encode(banger_api::exec::frame_type::CONTROL, unknown)
                        .expect("encode");
                peer.io.write_all(&bytes).await.expect("write");
                peer.send(DaemonFrame::Stdout(b"partial".to_vec())).await;
                peer.send(DaemonFrame::Control(DaemonControl::Error {
                    code: ExecErrorCode::ExecFailed,
                    message: "the guest agent's stream ended".into(),
                }))
                .await;
            },
        )
        .await;
        let err = out.end.expect_err("not a command's end");
        assert!(format!("{err:#}").contains("stream ended"), "{err:#}");
        assert_eq!(out.stdout, b"partial");
    }

    #[tokio::test]
    async fn a_refused_upgrade_is_the_daemons_error() {
        let daemon = fake_daemon().await;
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let err = session(
            &daemon.client,
            &exec_params("stopped", &["true"]),
            None::<&[u8]>,
            no_controls(),
            &mut o,
            &mut e,
        )
        .await
        .expect_err("refused");
        match err {
            Error::Daemon(ClientError::Api(api)) => assert_eq!(api.code, ErrorCode::NotRunning),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_older_daemons_framing_is_refused() {
        let daemon = fake_daemon().await;
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let err = session(
            &daemon.client,
            &exec_params("old-daemon", &["true"]),
            None::<&[u8]>,
            no_controls(),
            &mut o,
            &mut e,
        )
        .await
        .expect_err("refused");
        let text = format!("{err:#}");
        assert!(text.contains("older than this client"), "{text}");
    }

    /// A reader that went away (`| head`).
    struct ClosedPipe;

    impl AsyncWrite for ClosedPipe {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
            _: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_closed_stdout_ends_quietly_with_141() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let guest = async move {
            let mut peer = theirs;
            let bytes = DaemonFrame::Stdout(b"y\n".to_vec())
                .encode()
                .expect("encode");
            peer.write_all(&bytes).await.expect("write");
            // Keep the connection open: the end must come from our side.
            let mut sink = Vec::new();
            let _ = peer.read_to_end(&mut sink).await;
        };
        let (mut stdout, mut stderr) = (ClosedPipe, Vec::new());
        let (end, ()) = tokio::join!(
            pump(ours, None::<&[u8]>, no_controls(), &mut stdout, &mut stderr),
            guest
        );
        assert_eq!(end.expect("ended"), ExecEnd::OutputClosed);
    }

    /// A writer that logs what reaches it and when it is flushed, into a log shared by
    /// "stdout" and "stderr".
    struct Logged {
        name: &'static str,
        log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl AsyncWrite for Logged {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let text = String::from_utf8_lossy(buf);
            self.log
                .lock()
                .expect("log")
                .push(format!("{} {text}", self.name));
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
            self.log
                .lock()
                .expect("log")
                .push(format!("{} flush", self.name));
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_switch_of_stream_flushes_the_other_first() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        // All frames in one write: they are decoded in one batch.
        let mut wire = Vec::new();
        for msg in [
            DaemonFrame::Stdout(b"a".to_vec()),
            DaemonFrame::Stdout(b"b".to_vec()),
            DaemonFrame::Stderr(b"c".to_vec()),
            DaemonFrame::Stdout(b"d".to_vec()),
            DaemonFrame::Control(DaemonControl::exit(ExitStatus::Code(0))),
        ] {
            wire.extend_from_slice(&msg.encode().expect("encode"));
        }
        theirs.write_all(&wire).await.expect("write");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut out = Logged {
            name: "out",
            log: log.clone(),
        };
        let mut err = Logged {
            name: "err",
            log: log.clone(),
        };
        let end = pump(ours, None::<&[u8]>, no_controls(), &mut out, &mut err).await;
        assert_eq!(end.expect("ended").shell_code(), 0);
        let log = log.lock().expect("log").clone();
        assert_eq!(
            log,
            [
                "out a",
                "out b",
                "out flush",
                "err c",
                "err flush",
                "out d",
                "out flush"
            ]
        );
    }
}
