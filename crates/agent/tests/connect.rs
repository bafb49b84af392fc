//! CONNECT against TCP servers the test runs on 127.0.0.1.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use banger_guest_proto::{AgentError, Connect, paths};
use bytes::Bytes;
use common::{Guest, within};
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Reads the response body until it holds `n` bytes (or ends).
async fn read_n(body: &mut Incoming, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match within("response data", body.frame()).await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    got.extend_from_slice(&d);
                }
            }
            Some(Err(e)) => panic!("response body: {e}"),
            None => break,
        }
    }
    got
}

async fn read_to_end(body: Incoming) -> Vec<u8> {
    within("response end", body.collect())
        .await
        .expect("body")
        .to_bytes()
        .to_vec()
}

#[tokio::test]
async fn connect_pipes_both_ways_and_propagates_half_close() {
    // An echo server that says how many bytes it got once its input ends, then closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 32 << 10];
        let mut total = 0usize;
        loop {
            let n = sock.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            total += n;
            sock.write_all(&buf[..n]).await.expect("echo");
        }
        sock.write_all(format!("got {total}\n").as_bytes())
            .await
            .expect("summary");
        // Dropping the socket closes it: the agent ends the response body.
    });

    let mut g = Guest::start().await;
    let (tx, response) = g.stream(paths::CONNECT, &Connect { port });
    let resp = response.await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();

    // Bytes flow while both sides stay open.
    tx.send(Bytes::from_static(b"hello")).await.expect("send");
    assert_eq!(read_n(&mut body, 5).await, b"hello");

    // A megabyte, fed while it is read back.
    let payload: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let feed = {
        let tx = tx.clone();
        let payload = payload.clone();
        tokio::spawn(async move {
            for chunk in payload.chunks(10_000) {
                tx.send(Bytes::copy_from_slice(chunk)).await.expect("send");
            }
        })
    };
    assert!(read_n(&mut body, payload.len()).await == payload);
    within("feeder", feed).await.expect("feeder");

    // The end of the request body is the server's EOF: it answers, closes, and the
    // response body ends.
    drop(tx);
    let rest = read_to_end(body).await;
    assert_eq!(rest, format!("got {}\n", 5 + payload.len()).as_bytes());
    within("server", server).await.expect("server");
}

#[tokio::test]
async fn connect_ends_the_response_when_the_server_closes_first() {
    // A server that greets, half-closes, and still reads what comes.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        sock.write_all(b"greetings").await.expect("write");
        sock.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        sock.read_to_end(&mut got).await.expect("read");
        got
    });

    let mut g = Guest::start().await;
    let (tx, response) = g.stream(paths::CONNECT, &Connect { port });
    let resp = response.await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The response ends although the request body is still open.
    assert_eq!(read_to_end(resp.into_body()).await, b"greetings");
    tx.send(Bytes::from_static(b"late words"))
        .await
        .expect("send");
    drop(tx);
    assert_eq!(
        within("server", server).await.expect("server"),
        b"late words"
    );
}

#[tokio::test]
async fn connect_to_a_closed_port_is_a_502() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let mut g = Guest::start().await;
    let (tx, response) = g.stream(paths::CONNECT, &Connect { port });
    drop(tx);
    let resp = response.await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body = read_to_end(resp.into_body()).await;
    let err: AgentError = serde_json::from_slice(&body).expect("AgentError");
    assert!(
        err.message.contains(&format!("127.0.0.1:{port}")),
        "{}",
        err.message
    );
}
