//! The exec method: one process per HTTP/2 stream.
//!
//! Invariants of a session:
//! - The response is `Started` then data frames then exactly one `Exited`, or a lone
//!   `FailedToStart` (nothing was forked, or the child failed before its program ran).
//! - Output goes through a bounded channel: when the host reads slowly the pumps stop
//!   reading, the pipe fills and the process blocks in `write`. Memory per session is a
//!   few chunks of [`MAX_CHUNK`], whatever the process prints.
//! - `Exited` is sent after the output is drained: every byte written before the exit is
//!   read (up to EOF, or `EIO` on a pty). A background process that keeps the output open
//!   does not hold the answer hostage: once the child has exited, output idle for
//!   [`DRAIN_IDLE`] ends the drain.
//! - Input (the rest of the request body) is read concurrently: stdin data is queued to
//!   a writer (bounded too); signals and resizes act at once. The body's end is stdin EOF.
//! - When the host drops the response (client gone), the process group gets SIGHUP, then
//!   SIGKILL after [`HANGUP_GRACE`], and the session waits for the exit so nothing lingers.

mod pty;
mod spawn;

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use banger_guest_proto::frame::{self, MAX_CHUNK};
use banger_guest_proto::{
    ExecInput, ExecOutput, ExecRequest, ExitStatus, StartFailure, StartFailureKind,
};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::body::{AgentBody, FrameReader, ReadError};
use crate::console::log;
use crate::fdio::FdStream;
use crate::reaper::WaitStatus;
use crate::sys;

/// Output frames buffered per session before the pumps wait for the host.
const OUTPUT_QUEUE: usize = 8;
/// Stdin chunks buffered before the input reader waits for the process.
const STDIN_QUEUE: usize = 4;
/// After the exit, output quiet for this long is considered finished.
pub const DRAIN_IDLE: Duration = Duration::from_millis(250);
/// Between SIGHUP and SIGKILL when the host went away.
pub const HANGUP_GRACE: Duration = Duration::from_secs(1);

/// Serves one exec stream: reads the [`ExecRequest`], starts the process and returns the
/// response body. Err: the request itself was unusable (a message for a 400).
pub async fn handle(root: &Path, body: hyper::body::Incoming) -> Result<AgentBody, String> {
    let mut input = FrameReader::new(body);
    let req: ExecRequest = match input.next().await {
        Ok(Some(req)) => req,
        Ok(None) => return Err("exec: the request body ended before the ExecRequest frame".into()),
        Err(e) => return Err(format!("exec: bad ExecRequest frame: {e}")),
    };
    let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
    match Session::start(&req, root) {
        Err(failure) => {
            // A fresh channel has room: this cannot fail, and tx drops to end the body.
            let _ = tx.try_send(encode(&ExecOutput::FailedToStart(failure)));
        }
        Ok(session) => {
            let _ = tx.try_send(encode(&ExecOutput::Started {
                pid: session.pid as u32,
            }));
            tokio::spawn(session.run(input, tx));
        }
    }
    Ok(AgentBody::Frames(rx))
}

fn encode(msg: &ExecOutput) -> Bytes {
    // Our own messages always encode (no maps, no unsupported types).
    frame::encode(msg).unwrap_or_default()
}

enum Io {
    Pipes {
        stdin: FdStream,
        stdout: FdStream,
        stderr: FdStream,
    },
    Tty(Arc<FdStream>),
}

struct Session {
    pid: libc::pid_t,
    exit: oneshot::Receiver<WaitStatus>,
    io: Io,
}

impl Session {
    fn start(req: &ExecRequest, root: &Path) -> Result<Session, StartFailure> {
        let plan = spawn::plan(req, root)?;
        let io_err = |what: &str, e: std::io::Error| StartFailure {
            kind: StartFailureKind::Other,
            message: format!("{what}: {e}"),
        };
        match req.tty {
            Some(size) => {
                let pty = pty::open(size).map_err(|e| io_err("opening a pty", e))?;
                let master = FdStream::new(pty.master).map_err(|e| io_err("pty master", e))?;
                let slave = pty.slave.as_fd();
                let child = spawn::ChildIo {
                    fds: [slave, slave, slave],
                    ctty: true,
                };
                let (pid, exit) = spawn::spawn(&plan, &child)?;
                // `pty.slave` drops here: the child holds the only copies now.
                Ok(Session {
                    pid,
                    exit,
                    io: Io::Tty(Arc::new(master)),
                })
            }
            None => {
                let (stdin, child_in) =
                    spawn::stdio_pipe(false).map_err(|e| io_err("stdin pipe", e))?;
                let (stdout, child_out) =
                    spawn::stdio_pipe(true).map_err(|e| io_err("stdout pipe", e))?;
                let (stderr, child_err) =
                    spawn::stdio_pipe(true).map_err(|e| io_err("stderr pipe", e))?;
                let wrap = |fd| FdStream::new(fd).map_err(|e| io_err("pipe", e));
                let io = Io::Pipes {
                    stdin: wrap(stdin)?,
                    stdout: wrap(stdout)?,
                    stderr: wrap(stderr)?,
                };
                let child = spawn::ChildIo {
                    fds: [child_in.as_fd(), child_out.as_fd(), child_err.as_fd()],
                    ctty: false,
                };
                let (pid, exit) = spawn::spawn(&plan, &child)?;
                // The child's ends drop here, so EOF means every writer is gone.
                Ok(Session { pid, exit, io })
            }
        }
    }

    async fn run(self, input: FrameReader, tx: mpsc::Sender<Bytes>) {
        let Session { pid, mut exit, io } = self;
        let (exited_tx, exited_rx) = watch::channel(false);
        let exited = Arc::new(AtomicBool::new(false));
        let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        let mut pumps: Vec<JoinHandle<()>> = Vec::new();
        let control = match io {
            Io::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                pumps.push(tokio::spawn(pump(
                    stdout,
                    false,
                    tx.clone(),
                    exited_rx.clone(),
                )));
                pumps.push(tokio::spawn(pump(stderr, true, tx.clone(), exited_rx)));
                tasks.push(tokio::spawn(write_stdin(stdin, stdin_rx)));
                Control {
                    pid,
                    tty: None,
                    exited: exited.clone(),
                }
            }
            Io::Tty(master) => {
                pumps.push(tokio::spawn(pump(
                    master.clone(),
                    false,
                    tx.clone(),
                    exited_rx,
                )));
                tasks.push(tokio::spawn(write_stdin(master.clone(), stdin_rx)));
                Control {
                    pid,
                    tty: Some(master),
                    exited: exited.clone(),
                }
            }
        };
        tasks.push(tokio::spawn(read_input(input, stdin_tx, control)));

        let status = tokio::select! {
            status = &mut exit => status,
            () = tx.closed() => {
                log!("exec pid {pid}: the host went away; hanging up");
                hang_up(pid, &mut exit).await;
                exited.store(true, Ordering::SeqCst);
                tasks.iter().chain(&pumps).for_each(JoinHandle::abort);
                return;
            }
        };
        exited.store(true, Ordering::SeqCst);
        let _ = exited_tx.send(true);
        for p in pumps {
            let _ = p.await;
        }
        tasks.iter().for_each(JoinHandle::abort);
        let status = match status {
            Ok(raw) => exit_status(raw),
            Err(_) => {
                log!("exec pid {pid}: exit status lost; reporting SIGKILL");
                ExitStatus::Signal(libc::SIGKILL)
            }
        };
        let _ = tx.send(encode(&ExecOutput::Exited(status))).await;
    }
}

fn exit_status(raw: WaitStatus) -> ExitStatus {
    if libc::WIFSIGNALED(raw) {
        ExitStatus::Signal(libc::WTERMSIG(raw))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(raw))
    }
}

/// SIGHUP to the process group, SIGKILL after the grace period, then wait for the exit.
async fn hang_up(pid: libc::pid_t, exit: &mut oneshot::Receiver<WaitStatus>) {
    // The child called setsid: its group id is its pid and it cannot leave the group.
    let _ = sys::kill(-pid, libc::SIGHUP);
    if tokio::time::timeout(HANGUP_GRACE, &mut *exit)
        .await
        .is_err()
    {
        let _ = sys::kill(-pid, libc::SIGKILL);
        let _ = exit.await;
    }
}

/// Copies one output fd into frames until EOF (or `EIO`: a pty whose slave closed).
async fn pump(
    src: impl AsRef<FdStream>,
    stderr: bool,
    tx: mpsc::Sender<Bytes>,
    mut exited: watch::Receiver<bool>,
) {
    let src = src.as_ref();
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut after_exit = false;
    loop {
        let read = if after_exit {
            match tokio::time::timeout(DRAIN_IDLE, src.read(&mut buf)).await {
                Ok(r) => r,
                Err(_idle) => return,
            }
        } else {
            tokio::select! {
                r = src.read(&mut buf) => r,
                _ = exited.changed() => {
                    after_exit = true;
                    continue;
                }
            }
        };
        let n = match read {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return,
            Err(e) => {
                log!("exec: reading output: {e}");
                return;
            }
        };
        let data = buf[..n].to_vec();
        let msg = if stderr {
            ExecOutput::Stderr(data)
        } else {
            ExecOutput::Stdout(data)
        };
        if tx.send(encode(&msg)).await.is_err() {
            return; // host gone: the session hangs up
        }
    }
}

/// Writes queued stdin chunks; when the queue closes, the fd drops (EOF for a pipe).
async fn write_stdin(dst: impl AsRef<FdStream>, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = dst.as_ref().write_all(&chunk).await {
            if e.raw_os_error() != Some(libc::EPIPE) {
                log!("exec: writing stdin: {e}");
            }
            return; // the process closed its stdin; later input is dropped
        }
    }
}

/// What input frames act on.
struct Control {
    pid: libc::pid_t,
    tty: Option<Arc<FdStream>>,
    exited: Arc<AtomicBool>,
}

impl Control {
    fn signal(&self, sig: i32) {
        // After the exit the pid may belong to someone else.
        if self.exited.load(Ordering::SeqCst) {
            return;
        }
        let target = match &self.tty {
            Some(master) => -pty::foreground_group(master.get_ref()).unwrap_or(self.pid),
            None => self.pid,
        };
        if let Err(e) = sys::kill(target, sig) {
            log!("exec pid {}: signal {sig}: {e}", self.pid);
        }
    }
}

/// Reads the request body's input frames until it ends (= stdin EOF).
async fn read_input(mut input: FrameReader, stdin: mpsc::Sender<Vec<u8>>, control: Control) {
    let mut stdin = Some(stdin);
    let mut eof_sent = false;
    loop {
        let msg = match input.next::<ExecInput>().await {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            // A broken stream means the host is gone: the session hangs up, no need to say.
            Err(ReadError::Broken(_)) => break,
            Err(e) => {
                log!("exec pid {}: {e}; treating it as end of input", control.pid);
                break;
            }
        };
        match msg {
            ExecInput::Stdin(data) => {
                if let Some(tx) = &stdin
                    && tx.send(data).await.is_err()
                {
                    stdin = None;
                }
            }
            ExecInput::StdinEof => {
                eof_sent = true;
                end_of_input(&mut stdin, control.tty.is_some()).await;
            }
            ExecInput::Resize(size) => {
                if let Some(master) = &control.tty
                    && let Err(e) = pty::resize(master.get_ref(), size)
                {
                    log!("exec pid {}: resize: {e}", control.pid);
                }
            }
            ExecInput::Signal(sig) => control.signal(sig),
        }
    }
    if !eof_sent {
        end_of_input(&mut stdin, control.tty.is_some()).await;
    }
    // The stdin queue closes when `stdin` drops here.
}

/// A pipe is closed; a pty gets `^D` (its line discipline turns that into EOF).
async fn end_of_input(stdin: &mut Option<mpsc::Sender<Vec<u8>>>, tty: bool) {
    if !tty {
        *stdin = None;
    } else if let Some(tx) = stdin
        && tx.send(vec![0x04]).await.is_err()
    {
        *stdin = None;
    }
}
