//! The host's agent client against an in-process hostile agent: the faults a real guest
//! cannot easily produce (endless bodies, answers that never come, HTTP/2 settings that
//! stall every stream, a hello without the boot's secret).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use banger_guest_proto::{Empty, ReadFile, SetClock};
use hyper::server::conn::http2;
use hyper::service::service_fn;

use super::*;

const SECRET: &[u8] = &[42u8; auth::SECRET_LEN];

/// How the fake agent misbehaves.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    /// Honest hello; every other call answered with an endless 200 body.
    EndlessAnswer,
    /// Honest hello; every other call answered with an endless non-200 body.
    EndlessError,
    /// Honest hello; every other call never answered.
    NeverAnswer,
    /// A hello whose proof uses another secret.
    WrongSecret,
    /// A hello with no proof at all (an agent of protocol 1, or an impostor).
    NoProof,
    /// A hello that never comes.
    SilentHello,
    /// Allows no concurrent stream at all once the hello is answered.
    NoStreams,
}

/// A body of 64 KiB chunks that never ends; counts the bytes it produced.
struct Endless {
    chunk: Bytes,
    sent: Arc<AtomicU64>,
}

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.sent
            .fetch_add(self.chunk.len() as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

fn hello_answer(req: &HelloRequest, fault: Fault) -> Bytes {
    let boot_id = "boot-1".to_string();
    let proof = match fault {
        Fault::WrongSecret => auth::proof(&[1u8; auth::SECRET_LEN], &req.nonce, &boot_id),
        Fault::NoProof => String::new(),
        _ => auth::proof(SECRET, &req.nonce, &boot_id),
    };
    let hello = Hello {
        proto_version: proto::PROTO_VERSION,
        proto_min: proto::PROTO_MIN,
        proto_max: proto::PROTO_VERSION,
        agent_version: "fake".into(),
        boot_id,
        init: proto::InitMode::Agent,
        stages: Vec::new(),
        kernel_release: "fake".into(),
        proof,
    };
    Bytes::from(serde_json::to_vec(&hello).unwrap())
}

/// Serves the fake agent on one end of an in-memory stream; returns the host's end and
/// the counter of bytes the fake pushed in endless bodies.
fn fake_agent(fault: Fault) -> (tokio::io::DuplexStream, Arc<AtomicU64>) {
    let (host, guest) = tokio::io::duplex(64 << 10);
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        let service = service_fn(move |req: Request<Incoming>| {
            let sent = counter.clone();
            async move {
                let path = req.uri().path().to_string();
                let body: BoxBody<Bytes, Infallible> = if path == paths::HELLO {
                    if fault == Fault::SilentHello {
                        std::future::pending::<()>().await;
                    }
                    let bytes = req.into_body().collect().await.unwrap().to_bytes();
                    let hello: HelloRequest = serde_json::from_slice(&bytes).unwrap();
                    Full::new(hello_answer(&hello, fault)).boxed()
                } else {
                    match fault {
                        Fault::NeverAnswer => {
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                        _ => Endless {
                            chunk: Bytes::from(vec![b'A'; 64 << 10]),
                            sent,
                        }
                        .boxed(),
                    }
                };
                let mut response = Response::new(body);
                if fault == Fault::EndlessError && path != paths::HELLO {
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                }
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = http2::Builder::new(TokioExecutor::new());
        if fault == Fault::NoStreams {
            // Room for the hello only: hyper counts it against the limit until it ends,
            // and a limit of 1 with a slow client is the closest a server gets to 0 after
            // the fact; the test below holds the one stream with a never-ending call.
            builder.max_concurrent_streams(1);
        }
        let _ = builder.serve_connection(TokioIo::new(guest), service).await;
    });
    (host, sent)
}

async fn connect(fault: Fault) -> (Result<AgentConn, AgentCallError>, Arc<AtomicU64>) {
    let (io, sent) = fake_agent(fault);
    let (closed, _closed_rx) = tokio::sync::oneshot::channel();
    (AgentConn::handshake(io, closed, SECRET).await, sent)
}

fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

#[tokio::test]
async fn an_agent_without_the_boot_secret_is_refused() {
    for fault in [Fault::WrongSecret, Fault::NoProof] {
        let (conn, _) = connect(fault).await;
        assert!(
            matches!(conn, Err(AgentCallError::Unauthenticated)),
            "{fault:?}: {:?}",
            conn.err()
        );
    }
    let (conn, _) = connect(Fault::EndlessAnswer).await;
    assert!(conn.is_ok(), "the honest hello passes: {:?}", conn.err());
}

#[tokio::test(start_paused = true)]
async fn a_hello_that_never_comes_times_out() {
    let (conn, _) = connect(Fault::SilentHello).await;
    assert!(
        matches!(conn, Err(AgentCallError::TimedOut { ref path, .. }) if path == paths::HELLO),
        "{:?}",
        conn.err()
    );
}

#[tokio::test]
async fn endless_answers_are_cut_at_their_limit_with_flat_memory() {
    let before = rss_mib();
    for fault in [Fault::EndlessAnswer, Fault::EndlessError] {
        let (conn, sent) = connect(fault).await;
        let conn = conn.unwrap();
        let clock = conn
            .call::<_, Empty>(paths::CLOCK, &SetClock { unix_nanos: 0 })
            .await;
        let read = conn
            .read_file(&ReadFile {
                path: "/proc/net/tcp".into(),
                max_bytes: 1 << 20,
            })
            .await;
        match fault {
            Fault::EndlessAnswer => {
                assert!(
                    matches!(clock, Err(AgentCallError::TooLarge { limit, .. }) if limit == MAX_ANSWER),
                    "{:?}",
                    clock.err()
                );
                assert!(
                    matches!(read, Err(AgentCallError::TooLarge { .. })),
                    "{:?}",
                    read.err()
                );
            }
            _ => {
                // An endless error body is cut at MAX_ERROR_BODY, its quote shorter still.
                let Err(AgentCallError::Refused { message, .. }) = clock else {
                    panic!("{:?}", clock.err());
                };
                assert!(message.len() <= MAX_QUOTE, "{}", message.len());
                assert!(matches!(read, Err(AgentCallError::Refused { .. })));
                let exec = conn.exec(Bytes::from_static(b"frame")).await;
                assert!(matches!(exec, Err(AgentCallError::Refused { .. })));
            }
        }
        // What the fake pushed is bounded by the limits plus HTTP/2 flow-control windows,
        // not by the fake's patience.
        let pushed = sent.load(Ordering::Relaxed);
        assert!(pushed < 64 << 20, "{fault:?}: {pushed} bytes pushed");
    }
    // The growth, not the level: the other tests of this binary run beside this one and
    // share the process (one of them had left it at 660 MiB before this test began).
    let after = rss_mib();
    assert!(
        after.saturating_sub(before) < 192,
        "RSS {after} MiB (was {before} MiB)"
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_never_comes_fails_that_call_only() {
    let (conn, _) = connect(Fault::NeverAnswer).await;
    let conn = conn.unwrap();
    let clock = conn
        .call::<_, Empty>(paths::CLOCK, &SetClock { unix_nanos: 0 })
        .await;
    assert!(
        matches!(clock, Err(AgentCallError::TimedOut { ref path, timeout }) if path == paths::CLOCK && timeout == CALL_TIMEOUT),
        "{:?}",
        clock.err()
    );
    let exec = conn.exec(Bytes::from_static(b"frame")).await;
    assert!(
        matches!(exec, Err(AgentCallError::TimedOut { .. })),
        "{:?}",
        exec.err()
    );
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_allows_no_stream_cannot_hang_a_call() {
    let (conn, _) = connect(Fault::NoStreams).await;
    let conn = conn.unwrap();
    // Every stream the fake allows is taken by a call whose answer never ends.
    let hog = conn.clone();
    let (tx, pending) = hog.stream(paths::FILES_PUT, &Empty {}).unwrap();
    let _hold = (tx, tokio::spawn(pending));
    tokio::task::yield_now().await;
    let clock = conn
        .call::<_, Empty>(paths::CLOCK, &SetClock { unix_nanos: 0 })
        .await;
    assert!(
        matches!(clock, Err(AgentCallError::TimedOut { .. })),
        "{:?}",
        clock.err()
    );
}

mod serial {
    //! The host's serial sync against guests that answer it badly or not at all.

    use super::*;
    use banger_guest_proto::serial_sync::{self, Kind, MAX_HOST_SCAN, Scanner, encode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The honest fake agent behind the guest's half of the sync, with `noise` in the port
    /// before it (what a stale session leaves).
    fn synced_fake_agent(noise: &'static [u8]) -> tokio::io::DuplexStream {
        let (mut agent, _) = fake_agent(Fault::EndlessAnswer);
        let (host, mut guest) = tokio::io::duplex(64 << 10);
        tokio::spawn(async move {
            guest.write_all(noise).await.unwrap();
            let mut guest = serial_sync::guest_accept(guest).await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut guest, &mut agent).await;
        });
        host
    }

    /// A guest that reads the host's markers and answers each SYN with `answer(nonce)`;
    /// returns its host end and a count of the SYNs and STARTs it saw.
    fn answering_guest(
        answer: fn(&serial_sync::Nonce) -> Vec<u8>,
    ) -> (tokio::io::DuplexStream, Arc<AtomicU64>, Arc<AtomicU64>) {
        let (host, mut guest) = tokio::io::duplex(64 << 10);
        let (syns, starts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, t) = (syns.clone(), starts.clone());
        tokio::spawn(async move {
            let mut scanner = Scanner::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = guest.read(&mut buf).await {
                let mut data = &buf[..n];
                while let Some(found) = scanner.feed(data) {
                    data = &data[found.end..];
                    match found.kind {
                        Kind::Syn => {
                            s.fetch_add(1, Ordering::Relaxed);
                            if guest.write_all(&answer(&found.nonce)).await.is_err() {
                                return;
                            }
                        }
                        Kind::Start => {
                            t.fetch_add(1, Ordering::Relaxed);
                        }
                        Kind::Ack => {}
                    }
                }
            }
        });
        (host, syns, starts)
    }

    #[tokio::test]
    async fn an_honest_agent_is_reached_behind_a_stale_sessions_bytes() {
        let host = synced_fake_agent(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00goaway..junk\xFF\xFF");
        let synced = tokio::time::timeout(Duration::from_secs(10), sync_serial(host))
            .await
            .expect("synced in time")
            .unwrap();
        let (closed, _closed_rx) = tokio::sync::oneshot::channel();
        let conn = AgentConn::handshake(synced, closed, SECRET).await;
        assert!(conn.is_ok(), "{:?}", conn.err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_guest_that_never_acks_is_given_syns_until_the_deadline() {
        let (host, syns, starts) = answering_guest(|_| Vec::new());
        let deadline = Duration::from_secs(1);
        let outcome = tokio::time::timeout(deadline, sync_serial(host)).await;
        assert!(outcome.is_err(), "no sync without an ACK");
        let syns = syns.load(Ordering::Relaxed);
        assert!((40..=60).contains(&syns), "a SYN every 20 ms: {syns}");
        assert_eq!(starts.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_of_another_nonce_is_not_an_answer() {
        let (host, syns, starts) = answering_guest(|nonce| {
            let mut other = *nonce;
            other[0] ^= 1;
            encode(Kind::Ack, &other).to_vec()
        });
        let outcome = tokio::time::timeout(Duration::from_secs(1), sync_serial(host)).await;
        assert!(outcome.is_err(), "a wrong nonce does not sync");
        assert!(syns.load(Ordering::Relaxed) > 1, "the host kept asking");
        assert_eq!(
            starts.load(Ordering::Relaxed),
            0,
            "no START for a wrong ACK"
        );
    }

    #[tokio::test]
    async fn a_guest_flooding_garbage_is_scanned_up_to_the_limit_only() {
        let (host, mut guest) = tokio::io::duplex(64 << 10);
        let flood = tokio::spawn(async move {
            // `FF FF FF S` over and over: every byte may start a marker.
            let garbage = b"\xFF\xFF\xFFS".repeat(16 << 10);
            let mut sent = 0usize;
            while guest.write_all(&garbage).await.is_ok() {
                sent += garbage.len();
            }
            sent
        });
        let outcome = tokio::time::timeout(Duration::from_secs(10), sync_serial(host))
            .await
            .expect("fails before its deadline");
        let err = outcome.err().expect("no ACK in garbage");
        assert!(
            err.to_string()
                .contains("no answer in the guest's first 1048576 bytes"),
            "{err}"
        );
        let sent = flood.await.unwrap();
        assert!(sent <= MAX_HOST_SCAN + (192 << 10), "read {sent} bytes");
    }
}
