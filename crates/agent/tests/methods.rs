//! HELLO, CLOCK, SHUTDOWN and the error answers, over a real HTTP/2 connection.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use banger_agent::MachineRequest;
use banger_guest_proto::{
    AgentError, Empty, Hello, HelloRequest, InitMode, PROTO_MIN, PROTO_VERSION, SetClock,
    ShutdownRequest, auth, paths,
};
use common::{Guest, within};
use hyper::StatusCode;

#[tokio::test]
async fn hello_negotiates_and_reports_the_guest() {
    let mut g = Guest::start().await;
    let (status, body) = g
        .post_json(
            paths::HELLO,
            &HelloRequest {
                proto_min: 1,
                proto_max: PROTO_VERSION + 5,
                host_version: "test".into(),
                nonce: "n-1".into(),
            },
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let hello: Hello = serde_json::from_slice(&body).expect("Hello");
    assert_eq!(hello.proto_version, PROTO_VERSION);
    assert_eq!(
        (hello.proto_min, hello.proto_max),
        (PROTO_MIN, PROTO_VERSION)
    );
    assert_eq!(hello.init, InitMode::Agent);
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.boot_id.len(), 36, "{:?}", hello.boot_id);
    assert!(!hello.kernel_release.is_empty());
    // The proof answers this nonce under this boot's secret, and nothing else.
    assert!(auth::verify(
        common::SECRET,
        "n-1",
        &hello.boot_id,
        &hello.proof
    ));
    assert!(!auth::verify(
        common::SECRET,
        "n-2",
        &hello.boot_id,
        &hello.proof
    ));
    assert!(!auth::verify(b"guess", "n-1", &hello.boot_id, &hello.proof));
}

#[tokio::test]
async fn hello_refuses_a_host_without_a_common_version() {
    let mut g = Guest::start().await;
    let (status, body) = g
        .post_json(
            paths::HELLO,
            &HelloRequest {
                proto_min: PROTO_VERSION + 1,
                proto_max: PROTO_VERSION + 3,
                host_version: "future".into(),
                nonce: String::new(),
            },
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let err: AgentError = serde_json::from_slice(&body).expect("AgentError");
    assert!(
        err.message.contains("no common protocol version"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn clock_and_shutdown_reach_the_machine() {
    let mut g = Guest::start().await;
    let (status, body) = g
        .post_json(
            paths::CLOCK,
            &SetClock {
                unix_nanos: 1_700_000_000_123_456_789,
            },
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let _: Empty = serde_json::from_slice(&body).expect("Empty");
    let (status, _) = g.post_json(paths::SHUTDOWN, &ShutdownRequest {}).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        within("clock", g.machine.recv()).await,
        Some(MachineRequest::SetClock(SetClock {
            unix_nanos: 1_700_000_000_123_456_789
        }))
    );
    assert_eq!(
        within("shutdown", g.machine.recv()).await,
        Some(MachineRequest::Shutdown)
    );
}

#[tokio::test]
async fn bad_requests_get_an_agent_error() {
    let mut g = Guest::start().await;
    for (method, path, body, want) in [
        ("POST", "/v1/nope", &b"{}"[..], StatusCode::NOT_FOUND),
        (
            "GET",
            paths::HELLO,
            &b""[..],
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "POST",
            paths::HELLO,
            &b"{not json"[..],
            StatusCode::BAD_REQUEST,
        ),
        ("POST", paths::EXEC, &b""[..], StatusCode::BAD_REQUEST),
        (
            "POST",
            paths::EXEC,
            &[0, 0, 0, 2, 0xff, 0xff][..],
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = g.call(method, path, body).await;
        assert_eq!(status, want, "{method} {path}");
        let err: AgentError = serde_json::from_slice(&body).expect("AgentError body");
        assert!(!err.message.is_empty());
    }
}
