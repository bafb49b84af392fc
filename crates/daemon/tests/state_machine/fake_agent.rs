//! The fake guest's agent: dials the vsock listener (or serves behind the VMM's serial
//! socket), proves the boot's secret in the hello and answers what readiness and stop
//! call. It lives exactly as long as its VMM process: when that dies, every connection
//! closes, as a real VM's would. A dropped connection (a daemon that went away) is
//! redialled, as the real agent does.

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use banger_guest_proto::{self as proto, AgentError, Empty, Hello, HelloRequest, auth, paths};
use banger_vmm::{ChannelEndpoint, ProcessRecord};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixStream;
use tokio::sync::Notify;

use crate::fake_vmm::{self, Guest as Behaviour};

/// A file in the VM's directory with a line per `authorized-key` call.
pub const AUTHORIZED_NOTE: &str = "fake-agent-authorized";

/// How often a fake agent redials a listener that is not there (yet, or again).
const REDIAL: Duration = Duration::from_millis(20);

pub struct Guest {
    pub run_dir: PathBuf,
    pub endpoint: ChannelEndpoint,
    /// The VMM's listening serial socket, for the serial channel.
    pub serial: Option<std::os::unix::net::UnixListener>,
    pub vmm: ProcessRecord,
    pub behaviour: Behaviour,
    pub ignore_shutdown: bool,
}

/// Runs the guest until its VMM process is gone.
pub async fn run(guest: Guest) {
    let vmm = guest.vmm.clone();
    tokio::select! {
        () = vmm.exited() => {}
        () = boot_and_serve(guest) => {}
    }
}

async fn boot_and_serve(guest: Guest) {
    match &guest.behaviour {
        Behaviour::Silent => std::future::pending().await,
        Behaviour::DiesBeforeHello => {
            fake_vmm::crash(&guest.vmm, &guest.run_dir);
            return std::future::pending().await;
        }
        Behaviour::HelloAfter(gate) => gate.pass().await,
        Behaviour::Ready | Behaviour::DiesAfterHello | Behaviour::BeforeSerialSync => {}
    }
    let Ok(secret) = std::fs::read(guest.run_dir.join(banger_daemon::vms::boot::AGENT_KEY)) else {
        // No secret, no proof: the daemon refuses this guest and its start times out.
        return std::future::pending().await;
    };
    let session = Session {
        secret: Arc::new(std::sync::Mutex::new(secret)),
        boot_id: format!("fake-boot-{}", guest.vmm.pid),
        vmm: guest.vmm.clone(),
        dies_after_hello: matches!(guest.behaviour, Behaviour::DiesAfterHello),
        ignore_shutdown: guest.ignore_shutdown,
        run_dir: guest.run_dir.clone(),
    };
    let synced = !matches!(guest.behaviour, Behaviour::BeforeSerialSync);
    match (&guest.endpoint, guest.serial) {
        (ChannelEndpoint::VsockListen(path), _) => loop {
            match UnixStream::connect(path).await {
                Ok(stream) => session.serve(stream).await,
                Err(_) => tokio::time::sleep(REDIAL).await,
            }
        },
        (ChannelEndpoint::SerialConnect(_), Some(listener)) => {
            let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
                return;
            };
            // One host connection at a time, as a serial port carries one byte stream;
            // each starts with the serial sync, as the real agent's.
            while let Ok((stream, _)) = listener.accept().await {
                if !synced {
                    session.serve(stream).await;
                } else if let Ok(stream) = proto::serial_sync::guest_accept(stream).await {
                    session.serve(stream).await;
                }
            }
        }
        (ChannelEndpoint::SerialConnect(_), None) => {}
    }
}

#[derive(Clone)]
struct Session {
    /// Shared by the sessions of one guest: `identity` replaces it.
    secret: Arc<std::sync::Mutex<Vec<u8>>>,
    boot_id: String,
    vmm: ProcessRecord,
    dies_after_hello: bool,
    ignore_shutdown: bool,
    run_dir: PathBuf,
}

impl Session {
    /// Serves one HTTP/2 connection until the host drops it, or until the guest powers
    /// off after a `shutdown`: then the answer is flushed first (a real agent's answer is
    /// out before the guest reboots), and the VMM exits.
    async fn serve<S>(&self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let power_off = Arc::new(Notify::new());
        let (session, asked) = (self.clone(), power_off.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let (session, asked) = (session.clone(), asked.clone());
            async move { Ok::<_, Infallible>(session.answer(req, &asked).await) }
        });
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = &mut conn => {}
            () = power_off.notified() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                let _ = self.vmm.signal(libc::SIGKILL);
            }
        }
    }

    async fn answer(&self, req: Request<Incoming>, power_off: &Arc<Notify>) -> Response<AfterSent> {
        let path = req.uri().path().to_string();
        if path == paths::EXEC {
            // Streams are not faked: refused at once, before a body that may never end.
            return refuse(StatusCode::NOT_FOUND, "fake agent: no exec");
        }
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        match path.as_str() {
            paths::HELLO => match serde_json::from_slice::<HelloRequest>(&body) {
                Ok(hello) => json(&self.hello(&hello.nonce), None),
                Err(e) => refuse(StatusCode::BAD_REQUEST, &e.to_string()),
            },
            // The first call after the hello: a guest that dies here dies once the host
            // has its connection.
            paths::CLOCK if self.dies_after_hello => {
                fake_vmm::crash(&self.vmm, &self.run_dir);
                std::future::pending().await
            }
            paths::CLOCK => json(&Empty {}, None),
            paths::AUTHORIZED_KEY => {
                // Noted for the tests: an agent that answers `identity` with `{}` (as this
                // one does, like agents from before `authorize`) gets the key this way.
                let _ = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.run_dir.join(AUTHORIZED_NOTE))
                    .and_then(|mut f| std::io::Write::write_all(&mut f, b"authorized\n"));
                json(&Empty {}, None)
            }
            paths::IDENTITY => match serde_json::from_slice::<proto::SetIdentity>(&body) {
                Ok(identity) => {
                    *self.secret.lock().unwrap_or_else(|e| e.into_inner()) = identity.secret;
                    json(&Empty {}, None)
                }
                Err(e) => refuse(StatusCode::BAD_REQUEST, &e.to_string()),
            },
            paths::SHUTDOWN if self.ignore_shutdown => json(&Empty {}, None),
            paths::SHUTDOWN => {
                // The guest powers off once its answer is out (QEMU's -no-reboot exits).
                let power_off = power_off.clone();
                json(&Empty {}, Some(Box::new(move || power_off.notify_one())))
            }
            other => refuse(StatusCode::NOT_FOUND, &format!("fake agent: no {other}")),
        }
    }

    fn hello(&self, nonce: &str) -> Hello {
        Hello {
            proto_version: proto::PROTO_VERSION,
            proto_min: proto::PROTO_MIN,
            proto_max: proto::PROTO_VERSION,
            agent_version: "fake".into(),
            boot_id: self.boot_id.clone(),
            init: proto::InitMode::Agent,
            stages: Vec::new(),
            kernel_release: "fake".into(),
            proof: auth::proof(
                &self.secret.lock().unwrap_or_else(|e| e.into_inner()),
                nonce,
                &self.boot_id,
            ),
        }
    }
}

type Then = Box<dyn FnOnce() + Send + Sync>;

/// A complete body that runs `then` once hyper is done with it (the answer is sent).
pub struct AfterSent {
    body: Full<Bytes>,
    then: Option<Then>,
}

impl hyper::body::Body for AfterSent {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
}

impl Drop for AfterSent {
    fn drop(&mut self) {
        if let Some(then) = self.then.take() {
            then();
        }
    }
}

fn json(value: &impl serde::Serialize, then: Option<Then>) -> Response<AfterSent> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Response::new(AfterSent {
        body: Full::new(Bytes::from(bytes)),
        then,
    })
}

fn refuse(status: StatusCode, message: &str) -> Response<AfterSent> {
    let mut response = json(
        &AgentError {
            message: message.into(),
        },
        None,
    );
    *response.status_mut() = status;
    response
}
