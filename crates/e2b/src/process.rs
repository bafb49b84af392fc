//! envd's `process.Process` service over banger's exec: each started process is an exec
//! session driven by a task, known by a pid of our own numbering (envd's clients use the
//! pid only to name the process back to us). The stream that started a process gets all
//! of its output, with backpressure; streams that connect later get what comes after,
//! and are dropped from when they fall behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_client::Client;
use banger_client::exec::{self, Control, ExecEnd, ExitStatus};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::sync::mpsc;

use crate::connect::{self, Code, RpcError, b64};
use crate::guest::{self, User};
use crate::sandboxes::Sandbox;

/// Events queued for the starting stream before the process waits for it to catch up.
const PRIMARY_DEPTH: usize = 64;
/// Events queued for a connected stream before it is dropped as too slow.
const SECONDARY_DEPTH: usize = 256;
/// Bytes the output pipes buffer between the exec session and the fan-out.
const PIPE_BYTES: usize = 64 << 10;
/// The keepalive interval when the client names none (envd's clients ask for 50 s).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(50);

/// The processes of one sandbox.
#[derive(Default)]
pub struct Processes {
    next_pid: AtomicU32,
    running: Mutex<HashMap<u32, Arc<Process>>>,
}

/// One running process.
struct Process {
    pid: u32,
    tag: Option<String>,
    /// Runs on a pty: its output is `pty` data, its input the pty's.
    pty: bool,
    config: ProcessConfig,
    controls: mpsc::UnboundedSender<Control>,
    stdin: tokio::sync::Mutex<Option<DuplexStream>>,
    subscribers: Mutex<Vec<mpsc::Sender<Event>>>,
}

/// What a process stream carries (envd's `ProcessEvent`).
#[derive(Debug, Clone)]
pub enum Event {
    Stdout(Bytes),
    Stderr(Bytes),
    /// A pty's output (stdout and stderr both, as a terminal shows them).
    Pty(Bytes),
    End {
        exit_code: i32,
        exited: bool,
        status: String,
        error: Option<String>,
    },
}

impl Event {
    fn json(&self) -> serde_json::Value {
        let event = match self {
            Event::Stdout(b) => json!({"data": {"stdout": b64::encode(b)}}),
            Event::Stderr(b) => json!({"data": {"stderr": b64::encode(b)}}),
            Event::Pty(b) => json!({"data": {"pty": b64::encode(b)}}),
            Event::End {
                exit_code,
                exited,
                status,
                error,
            } => {
                let mut end = json!({"exitCode": exit_code, "exited": exited, "status": status});
                if let Some(error) = error {
                    end["error"] = json!(error);
                }
                json!({"end": end})
            }
        };
        json!({ "event": event })
    }
}

/// envd's `ProcessConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessConfig {
    #[serde(default)]
    pub cmd: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub envs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct StartRequest {
    pub process: Option<ProcessConfig>,
    #[serde(default)]
    pub pty: Option<serde_json::Value>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub stdin: Option<bool>,
}

/// envd's `ProcessSelector`: a pid or a tag.
#[derive(Debug, Default, Deserialize)]
pub struct Selector {
    #[serde(default, deserialize_with = "number_or_string")]
    pub pid: Option<u32>,
    #[serde(default)]
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Selected {
    #[serde(default)]
    pub process: Selector,
}

#[derive(Debug, Deserialize)]
pub struct SendInputRequest {
    #[serde(default)]
    pub process: Selector,
    #[serde(default)]
    pub input: Option<Input>,
}

#[derive(Debug, Deserialize)]
pub struct Input {
    #[serde(default)]
    pub stdin: Option<String>,
    #[serde(default)]
    pub pty: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct UpdateRequest {
    #[serde(default)]
    pub process: Selector,
    #[serde(default)]
    pub pty: Option<serde_json::Value>,
}

/// A `PTY` message's size as (rows, cols); proto-JSON numbers may come as strings.
fn pty_size(pty: &serde_json::Value) -> Result<(u16, u16), RpcError> {
    let dim = |name: &str| -> Result<u16, RpcError> {
        let value = &pty["size"][name];
        connect::uint(value)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                RpcError::new(
                    Code::InvalidArgument,
                    format!("pty.size.{name} must be a number from 1 to 65535"),
                )
            })
    };
    Ok((dim("rows")?, dim("cols")?))
}

#[derive(Debug, Deserialize)]
pub struct SendSignalRequest {
    #[serde(default)]
    pub process: Selector,
    #[serde(default)]
    pub signal: serde_json::Value,
}

/// Proto-JSON writes 32-bit integers as numbers, but parsers take strings too.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => connect::uint(&value)
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("pid is not a number from 0 to 2^32-1")),
    }
}

/// A process's stream as the HTTP layer sends it: the first frame, then events until
/// the end.
pub struct Stream {
    pub pid: u32,
    pub events: mpsc::Receiver<Event>,
    pub keepalive: Duration,
    /// For the stream that started the process: its controls, to kill it when the
    /// request's deadline passes (as envd does; a client that merely goes away does not
    /// end the process).
    pub owner: Option<mpsc::UnboundedSender<Control>>,
}

impl Stream {
    /// The envelopes of this stream, sent into `out` until the end or until the
    /// client goes (a send fails); keepalives in between, at the client's interval.
    pub async fn pump(
        mut self,
        out: mpsc::Sender<Result<Bytes, std::io::Error>>,
        deadline: Option<Duration>,
    ) {
        let start = connect::envelope(&json!({"event": {"start": {"pid": self.pid}}}));
        if out.send(Ok(start)).await.is_err() {
            return;
        }
        let deadline = deadline.map(|d| tokio::time::Instant::now() + d);
        let mut keepalive = tokio::time::interval(self.keepalive);
        keepalive.tick().await;
        let ended = loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => {
                        let end = matches!(event, Event::End { .. });
                        if out.send(Ok(connect::envelope(&event.json()))).await.is_err() {
                            return;
                        }
                        if end {
                            break None;
                        }
                    }
                    None => break Some(RpcError::new(
                        Code::Unavailable,
                        "the process's output ended without an exit status (was the sandbox killed?)",
                    )),
                },
                _ = keepalive.tick() => {
                    let ping = connect::envelope(&json!({"event": {"keepalive": {}}}));
                    if out.send(Ok(ping)).await.is_err() {
                        return;
                    }
                }
                () = until(deadline) => {
                    let Some(owner) = &self.owner else {
                        break Some(RpcError::new(
                            Code::DeadlineExceeded,
                            "the request's timeout passed (the process goes on)",
                        ));
                    };
                    let _ = owner.send(Control::Signal(libc::SIGKILL));
                    break Some(RpcError::new(
                        Code::DeadlineExceeded,
                        "the command's timeout passed: it was killed",
                    ));
                }
            }
        };
        let _ = out.send(Ok(connect::end_of_stream(ended.as_ref()))).await;
    }
}

async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The keepalive interval a client asked for (`Keepalive-Ping-Interval`, seconds).
pub fn keepalive(header: Option<&str>) -> Duration {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_KEEPALIVE, |s| Duration::from_secs(s.clamp(1, 3600)))
}

impl Processes {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Process>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, selector: &Selector) -> Result<Arc<Process>, RpcError> {
        let running = self.running();
        let found = match (selector.pid, &selector.tag) {
            (Some(pid), _) => running.get(&pid).cloned(),
            (None, Some(tag)) => running
                .values()
                .find(|p| p.tag.as_deref() == Some(tag))
                .cloned(),
            (None, None) => {
                return Err(RpcError::new(
                    Code::InvalidArgument,
                    "select a process by pid or tag",
                ));
            }
        };
        found.ok_or_else(|| RpcError::new(Code::NotFound, "no such process (it may have ended)"))
    }

    /// Ends every process's session (the sandbox is going).
    pub fn end_all(&self) {
        for (_, process) in self.running().drain() {
            let _ = process.controls.send(Control::Signal(libc::SIGKILL));
        }
    }

    /// `List`: the processes still running.
    pub fn list(&self) -> serde_json::Value {
        let mut all: Vec<_> = self.running().values().cloned().collect();
        all.sort_by_key(|p| p.pid);
        let processes: Vec<_> = all
            .iter()
            .map(|p| {
                let mut info = json!({"pid": p.pid, "config": p.config});
                if let Some(tag) = &p.tag {
                    info["tag"] = json!(tag);
                }
                info
            })
            .collect();
        json!({ "processes": processes })
    }

    /// `Connect`: follow a running process from now on.
    pub fn connect(&self, request: &Selected, keepalive: Duration) -> Result<Stream, RpcError> {
        let process = self.find(&request.process)?;
        let (tx, rx) = mpsc::channel(SECONDARY_DEPTH);
        process
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        Ok(Stream {
            pid: process.pid,
            events: rx,
            keepalive,
            owner: None,
        })
    }

    /// `SendSignal`: SIGKILL or SIGTERM to the process.
    pub fn signal(&self, request: &SendSignalRequest) -> Result<(), RpcError> {
        let signal = match &request.signal {
            serde_json::Value::String(s) if s == "SIGNAL_SIGKILL" => libc::SIGKILL,
            serde_json::Value::String(s) if s == "SIGNAL_SIGTERM" => libc::SIGTERM,
            serde_json::Value::Number(n) if n.as_i64() == Some(9) => libc::SIGKILL,
            serde_json::Value::Number(n) if n.as_i64() == Some(15) => libc::SIGTERM,
            other => {
                return Err(RpcError::new(
                    Code::InvalidArgument,
                    format!("unsupported signal {other}: SIGNAL_SIGKILL or SIGNAL_SIGTERM"),
                ));
            }
        };
        let process = self.find(&request.process)?;
        process
            .controls
            .send(Control::Signal(signal))
            .map_err(|_| RpcError::new(Code::NotFound, "the process has ended"))
    }

    /// `SendInput`: bytes to the process's stdin (or its pty's input: the same pipe).
    pub async fn send_input(&self, request: &SendInputRequest) -> Result<(), RpcError> {
        let input = request.input.as_ref();
        let data = input
            .and_then(|i| i.stdin.as_deref().or(i.pty.as_deref()))
            .unwrap_or("");
        let bytes = b64::decode(data)
            .ok_or_else(|| RpcError::new(Code::InvalidArgument, "the input is not base64"))?;
        let process = self.find(&request.process)?;
        let mut stdin = process.stdin.lock().await;
        let pipe = stdin.as_mut().ok_or_else(|| {
            RpcError::new(
                Code::FailedPrecondition,
                "the process has no open stdin (start it with stdin=True; it may be closed)",
            )
        })?;
        pipe.write_all(&bytes)
            .await
            .map_err(|_| RpcError::new(Code::FailedPrecondition, "the process's stdin is closed"))
    }

    /// `StreamInput`: a client stream of a `start` naming the process, then `data`
    /// messages of input (and keepalives), each written as it arrives.
    pub async fn stream_input(&self, mut body: hyper::body::Incoming) -> Result<(), RpcError> {
        use http_body_util::BodyExt as _;

        #[derive(Deserialize)]
        struct Message {
            #[serde(default)]
            start: Option<Selected>,
            #[serde(default)]
            data: Option<DataMessage>,
        }
        #[derive(Deserialize)]
        struct DataMessage {
            #[serde(default)]
            input: Option<Input>,
        }
        let mut envelopes = connect::Envelopes::default();
        let mut target: Option<Selector> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                RpcError::new(Code::InvalidArgument, format!("reading the stream: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for message in envelopes.feed(&data)? {
                let message: Message = connect::parse(&message)?;
                if let Some(start) = message.start {
                    target = Some(start.process);
                } else if let Some(data) = message.data {
                    let process = target.take().ok_or_else(|| {
                        RpcError::new(
                            Code::InvalidArgument,
                            "input before the start message that names the process",
                        )
                    })?;
                    let request = SendInputRequest {
                        process,
                        input: data.input,
                    };
                    self.send_input(&request).await?;
                    target = Some(request.process);
                }
            }
        }
        if !envelopes.is_clean() {
            return Err(RpcError::new(
                Code::InvalidArgument,
                "the stream ended inside a message",
            ));
        }
        Ok(())
    }

    /// `Update`: a pty's new window size.
    pub fn update(&self, request: &UpdateRequest) -> Result<(), RpcError> {
        let Some(pty) = &request.pty else {
            return Ok(());
        };
        let (rows, cols) = pty_size(pty)?;
        let process = self.find(&request.process)?;
        if !process.pty {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                "the process does not run on a pty",
            ));
        }
        process
            .controls
            .send(Control::Resize { rows, cols })
            .map_err(|_| RpcError::new(Code::NotFound, "the process has ended"))
    }

    /// `CloseStdin`: EOF on the process's stdin.
    pub async fn close_stdin(&self, request: &Selected) -> Result<(), RpcError> {
        let process = self.find(&request.process)?;
        if let Some(mut pipe) = process.stdin.lock().await.take() {
            let _ = pipe.shutdown().await;
        }
        Ok(())
    }
}

/// `Start`: runs the process in `sandbox`'s VM; the stream gets everything it prints.
pub fn start(
    client: &Client,
    sandbox: &Arc<Sandbox>,
    user: &User,
    request: StartRequest,
    keepalive: Duration,
) -> Result<Stream, RpcError> {
    let tty = request.pty.as_ref().map(pty_size).transpose()?;
    let config = request
        .process
        .ok_or_else(|| RpcError::new(Code::InvalidArgument, "process.cmd is required"))?;
    if config.cmd.is_empty() {
        return Err(RpcError::new(Code::InvalidArgument, "process.cmd is empty"));
    }
    let processes = &sandbox.processes;
    let pid = processes.next_pid.fetch_add(1, Ordering::Relaxed) + 1;
    let mut env: BTreeMap<String, String> = sandbox.env.clone();
    env.extend(config.envs.clone());
    let mut argv = vec![config.cmd.clone()];
    argv.extend(config.args.iter().cloned());
    let term = env.get("TERM").cloned();
    let mut params = user.exec(
        &sandbox.id,
        argv,
        env.into_iter().collect(),
        config.cwd.clone().filter(|c| !c.is_empty()),
    );
    if tty.is_some() {
        params.tty = tty;
        params.term = Some(term.unwrap_or_else(|| "xterm-256color".into()));
    }
    let (controls_tx, controls_rx) = mpsc::unbounded_channel();
    let owner = controls_tx.clone();
    // A pty always takes input (what is typed at it).
    let (stdin_ours, stdin_theirs) = if request.stdin == Some(true) || tty.is_some() {
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        (Some(ours), Some(theirs))
    } else {
        (None, None)
    };
    let (primary_tx, primary_rx) = mpsc::channel(PRIMARY_DEPTH);
    let process = Arc::new(Process {
        pid,
        tag: request.tag,
        pty: tty.is_some(),
        config,
        controls: controls_tx,
        stdin: tokio::sync::Mutex::new(stdin_ours),
        subscribers: Mutex::new(Vec::new()),
    });
    processes.running().insert(pid, process.clone());
    let client = client.clone();
    let sandbox = sandbox.clone();
    tokio::spawn(async move {
        let end = run(
            &client,
            &params,
            stdin_theirs,
            controls_rx,
            &process,
            &primary_tx,
        )
        .await;
        sandbox.processes.running().remove(&pid);
        process.broadcast(&primary_tx, end).await;
    });
    Ok(Stream {
        pid,
        events: primary_rx,
        keepalive,
        owner: Some(owner),
    })
}

impl Process {
    /// Sends `event` to the starting stream (waiting for it, unless it has gone) and to
    /// every connected one that keeps up.
    async fn broadcast(&self, primary: &mpsc::Sender<Event>, event: Event) {
        let _ = primary.send(event.clone()).await;
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.try_send(event.clone()).is_ok());
    }
}

/// The exec session, its output fanned out as it comes; the end event it makes.
async fn run(
    client: &Client,
    params: &banger_api::vm::VmExecParams,
    stdin: Option<DuplexStream>,
    controls: mpsc::UnboundedReceiver<Control>,
    process: &Process,
    primary: &mpsc::Sender<Event>,
) -> Event {
    let (mut out_w, mut out_r) = tokio::io::duplex(PIPE_BYTES);
    let (mut err_w, mut err_r) = tokio::io::duplex(PIPE_BYTES);
    let session = async {
        let end = exec::session(client, params, stdin, controls, &mut out_w, &mut err_w).await;
        drop((out_w, err_w));
        end
    };
    let fan_out = async {
        let (mut out_buf, mut err_buf) = (vec![0u8; PIPE_BYTES], vec![0u8; PIPE_BYTES]);
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            tokio::select! {
                n = out_r.read(&mut out_buf), if out_open => match n {
                    Ok(n) if n > 0 => {
                        let data = Bytes::copy_from_slice(&out_buf[..n]);
                        let event = if process.pty { Event::Pty(data) } else { Event::Stdout(data) };
                        process.broadcast(primary, event).await
                    }
                    _ => out_open = false,
                },
                n = err_r.read(&mut err_buf), if err_open => match n {
                    Ok(n) if n > 0 => process.broadcast(primary, Event::Stderr(Bytes::copy_from_slice(&err_buf[..n]))).await,
                    _ => err_open = false,
                },
            }
        }
    };
    let (end, ()) = tokio::join!(session, fan_out);
    end_event(end)
}

/// envd's end event: Go's exit code (-1 after a signal), whether it exited, and status.
fn end_event(end: Result<ExecEnd, banger_client::Error>) -> Event {
    match end {
        Ok(ExecEnd::Exited(ExitStatus::Code(code))) => Event::End {
            exit_code: code,
            exited: true,
            status: format!("exit status {code}"),
            error: None,
        },
        Ok(ExecEnd::Exited(ExitStatus::Signal(signal))) => Event::End {
            exit_code: -1,
            exited: false,
            status: format!("signal: {}", signal_name(signal)),
            error: None,
        },
        Ok(ExecEnd::FailedToStart(failure)) => Event::End {
            exit_code: failure.shell_code(),
            exited: false,
            status: "failed to start".into(),
            error: Some(banger_api::text::visible(&failure.message).into_owned()),
        },
        Ok(ExecEnd::OutputClosed) => Event::End {
            exit_code: -1,
            exited: false,
            status: "output closed".into(),
            error: None,
        },
        Err(e) => Event::End {
            exit_code: -1,
            exited: false,
            status: "lost".into(),
            error: Some(guest::exec_error(&e).message),
        },
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "killed".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGHUP => "hangup".into(),
        libc::SIGPIPE => "broken pipe".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_events_follow_go() {
        let Event::End {
            exit_code, status, ..
        } = end_event(Ok(ExecEnd::Exited(ExitStatus::Signal(libc::SIGKILL))))
        else {
            panic!("not an end")
        };
        assert_eq!((exit_code, status.as_str()), (-1, "signal: killed"));
        let json = end_event(Ok(ExecEnd::Exited(ExitStatus::Code(3)))).json();
        assert_eq!(json["event"]["end"]["exitCode"], 3);
        assert_eq!(json["event"]["end"]["status"], "exit status 3");
    }

    #[test]
    fn selectors_take_numbers_and_strings() {
        let s: Selected = serde_json::from_str(r#"{"process":{"pid":"7"}}"#).unwrap();
        assert_eq!(s.process.pid, Some(7));
        let s: Selected = serde_json::from_str(r#"{"process":{"pid":7}}"#).unwrap();
        assert_eq!(s.process.pid, Some(7));
        assert!(serde_json::from_str::<Selected>(r#"{"process":{"pid":-1}}"#).is_err());
    }

    #[test]
    fn pty_sizes_are_rows_and_cols_within_bounds() {
        let size = |v: serde_json::Value| pty_size(&v);
        assert_eq!(
            size(json!({"size": {"rows": 24, "cols": "80"}})).unwrap(),
            (24, 80)
        );
        for bad in [
            json!({"size": {"rows": 0, "cols": 80}}),
            json!({"size": {"rows": 24, "cols": 70000}}),
            json!({"size": {"rows": 24}}),
            json!({}),
        ] {
            assert_eq!(
                size(bad.clone()).unwrap_err().code,
                Code::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn output_is_base64() {
        let json = Event::Stdout(Bytes::from_static(b"hi\n")).json();
        assert_eq!(json["event"]["data"]["stdout"], "aGkK");
    }
}
