//! A guest agent on a socket pair and a hyper HTTP/2 client in front of it, the way the
//! host talks to it, plus helpers to run exec sessions. Every wait has a deadline.
#![allow(dead_code)] // each test binary uses a different part

use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use banger_agent::{Agent, AgentConfig, Machine, MachineRequest};
use banger_guest_proto::frame::{self, FrameBuffer};
use banger_guest_proto::{ExecInput, ExecOutput, ExecRequest, InitMode, PARAMS_HEADER, paths};
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

/// What any single step may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {DEADLINE:?}"),
    }
}

/// A request body fed from a channel (the host's side of a stream).
pub struct ChanBody(mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|d| d.map(|d| Ok(Frame::data(d))))
    }
}

/// The answer to a stream request, to await while its body is fed.
pub type PendingResponse =
    Pin<Box<dyn std::future::Future<Output = hyper::Response<Incoming>> + Send>>;

pub struct Guest {
    sender: SendRequest<ChanBody>,
    pub machine: mpsc::UnboundedReceiver<MachineRequest>,
    pub root: tempfile::TempDir,
}

/// A root whose `/etc/passwd` has root only (home `/root`).
pub fn default_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("etc")).expect("mkdir etc");
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    )
    .expect("write passwd");
    root
}

/// The boot secret of every test agent.
pub const SECRET: &[u8] = b"the boot secret of the test agents";

impl Guest {
    pub async fn start() -> Guest {
        Guest::with_root(default_root()).await
    }

    pub async fn with_root(root: tempfile::TempDir) -> Guest {
        let (tx, machine) = mpsc::unbounded_channel();
        let mut cfg = AgentConfig::new(root.path(), InitMode::Agent, Machine::Recorder(tx));
        cfg.secret = SECRET.to_vec();
        let agent = Agent::new(cfg).expect("agent");
        let (guest_end, host_end) = tokio::net::UnixStream::pair().expect("socketpair");
        tokio::spawn(async move {
            let _ = agent.serve(guest_end).await;
        });
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(host_end))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        Guest {
            sender,
            machine,
            root,
        }
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: ChanBody,
    ) -> hyper::Response<Incoming> {
        within("ready", self.sender.ready())
            .await
            .expect("connection alive");
        let req = Request::builder()
            .method(method)
            .uri(format!("http://agent{path}"))
            .body(body)
            .expect("request");
        within(path, self.sender.send_request(req))
            .await
            .expect("response")
    }

    /// A whole-body call: status and body bytes.
    pub async fn call(&mut self, method: &str, path: &str, body: &[u8]) -> (StatusCode, Bytes) {
        let (tx, rx) = mpsc::channel(1);
        tx.send(Bytes::copy_from_slice(body))
            .await
            .expect("queue body");
        drop(tx);
        let resp = self.request(method, path, ChanBody(rx)).await;
        let status = resp.status();
        let bytes = within("body", resp.into_body().collect())
            .await
            .expect("body")
            .to_bytes();
        (status, bytes)
    }

    pub async fn post_json<T: serde::Serialize>(
        &mut self,
        path: &str,
        v: &T,
    ) -> (StatusCode, Bytes) {
        let body = serde_json::to_vec(v).expect("json");
        self.call("POST", path, &body).await
    }

    /// Opens a raw-stream method (params in the header): a sender for the request body
    /// (dropping it ends the body) and the pending response, to await while feeding.
    pub fn stream<P: serde::Serialize>(
        &mut self,
        path: &str,
        params: &P,
    ) -> (mpsc::Sender<Bytes>, PendingResponse) {
        let (tx, rx) = mpsc::channel(16);
        let req = Request::builder()
            .method("POST")
            .uri(format!("http://agent{path}"))
            .header(PARAMS_HEADER, serde_json::to_string(params).expect("json"))
            .body(ChanBody(rx))
            .expect("request");
        let mut sender = self.sender.clone();
        let path = path.to_string();
        let response = async move {
            within("ready", sender.ready())
                .await
                .expect("connection alive");
            within(&path, sender.send_request(req))
                .await
                .expect("response")
        };
        (tx, Box::pin(response))
    }

    /// Starts an exec stream; input stays open until [`Exec::close_input`] or drop.
    pub async fn exec(&mut self, req: ExecRequest) -> Exec {
        let (tx, rx) = mpsc::channel(16);
        tx.send(frame::encode(&req).expect("encode"))
            .await
            .expect("queue request");
        let resp = self.request("POST", paths::EXEC, ChanBody(rx)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        Exec {
            input: Some(tx),
            output: resp.into_body(),
            buf: FrameBuffer::default(),
            pid: None,
        }
    }
}

pub fn req(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        cwd: None,
        user: None,
        tty: None,
        term: None,
    }
}

pub struct Exec {
    input: Option<mpsc::Sender<Bytes>>,
    output: Incoming,
    buf: FrameBuffer,
    /// From the `Started` frame, whoever read it.
    pid: Option<u32>,
}

/// Everything one exec produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub pid: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub end: Option<ExecOutput>,
}

impl Outcome {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl Exec {
    pub async fn send(&self, msg: ExecInput) {
        let tx = self.input.as_ref().expect("input still open");
        within("send input", tx.send(frame::encode(&msg).expect("encode")))
            .await
            .expect("agent reads input");
    }

    /// A sender for a task that feeds input concurrently.
    pub fn input(&self) -> mpsc::Sender<Bytes> {
        self.input.clone().expect("input still open")
    }

    /// Ends the request body (the agent treats it as stdin EOF).
    pub fn close_input(&mut self) {
        self.input = None;
    }

    /// The next output frame; None at the end of the body.
    pub async fn next(&mut self) -> Option<ExecOutput> {
        loop {
            if let Some(m) = self.buf.next::<ExecOutput>().expect("well-formed output") {
                if let ExecOutput::Started { pid } = m {
                    assert!(self.pid.is_none(), "Started twice");
                    self.pid = Some(pid);
                }
                return Some(m);
            }
            match within("output frame", self.output.frame()).await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.push(&d);
                    }
                }
                Some(Err(e)) => panic!("response body: {e}"),
                None => {
                    assert_eq!(self.buf.pending(), 0, "body ended mid-frame");
                    return None;
                }
            }
        }
    }

    /// Waits for `Started` and returns the pid.
    pub async fn started(&mut self) -> u32 {
        match self.next().await {
            Some(ExecOutput::Started { pid }) => pid,
            other => panic!("expected Started, got {other:?}"),
        }
    }

    /// Reads everything up to the last frame, checking the frame order.
    pub async fn finish(&mut self) -> Outcome {
        let mut out = Outcome::default();
        while let Some(m) = self.next().await {
            assert!(out.end.is_none(), "frame after the last one: {m:?}");
            match m {
                ExecOutput::Started { pid } => {
                    assert!(
                        out.pid.is_none() && out.stdout.is_empty(),
                        "Started twice or late"
                    );
                    out.pid = Some(pid);
                }
                ExecOutput::Stdout(d) => out.stdout.extend(d),
                ExecOutput::Stderr(d) => out.stderr.extend(d),
                end @ (ExecOutput::Exited(_) | ExecOutput::FailedToStart(_)) => {
                    out.pid = self.pid;
                    if matches!(end, ExecOutput::Exited(_)) {
                        assert!(out.pid.is_some(), "Exited without Started");
                    } else {
                        assert!(out.pid.is_none(), "FailedToStart after Started");
                    }
                    out.end = Some(end);
                }
            }
        }
        assert!(
            out.end.is_some(),
            "the stream ended without Exited/FailedToStart"
        );
        out
    }

    /// Reads stdout until it contains `needle`; returns all stdout so far.
    pub async fn stdout_until(&mut self, needle: &str) -> String {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Some(ExecOutput::Stdout(d)) => {
                    seen.extend(d);
                    if String::from_utf8_lossy(&seen).contains(needle) {
                        return String::from_utf8_lossy(&seen).into_owned();
                    }
                }
                Some(ExecOutput::Stderr(_)) | Some(ExecOutput::Started { .. }) => {}
                other => panic!(
                    "waiting for {needle:?} in {:?}, got {other:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
    }
}

/// Whether a process exists (zombies count: not yet reaped).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Polls an observable condition until it holds or the deadline passes.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: still not true after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A `Write` that sends what it gets as chunks into a request body (for a blocking thread
/// that builds an archive while the test streams it).
pub struct ChanWriter(pub mpsc::Sender<Bytes>);

impl std::io::Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::ErrorKind::BrokenPipe)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A whole response body, within the deadline.
pub async fn body_bytes(resp: hyper::Response<Incoming>) -> Bytes {
    within("body", resp.into_body().collect())
        .await
        .expect("body")
        .to_bytes()
}

/// The process's peak resident set (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}
