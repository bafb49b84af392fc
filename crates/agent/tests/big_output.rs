//! 50+ MB of output arrive intact and in order, without the agent buffering them: the
//! process's peak memory grows by a small bounded amount. A test binary of its own so
//! no other test's allocations count.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use banger_guest_proto::ExecOutput;
use banger_guest_proto::ExitStatus;
use common::{Guest, req};

const LINES: u64 = 7_000_000;

/// The peak resident set of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM value");
    kb * 1024
}

/// Compares the stream against `seq 1 LINES` as it arrives (no copy is kept).
struct Expect {
    next: u64,
    line: Vec<u8>,
    pos: usize,
    total: u64,
}

impl Expect {
    fn new() -> Expect {
        Expect {
            next: 1,
            line: b"1\n".to_vec(),
            pos: 0,
            total: 0,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            assert!(self.next <= LINES, "output past line {LINES}");
            assert_eq!(b, self.line[self.pos], "at byte {}", self.total);
            self.total += 1;
            self.pos += 1;
            if self.pos == self.line.len() {
                self.next += 1;
                self.line = format!("{}\n", self.next).into_bytes();
                self.pos = 0;
            }
        }
    }
}

#[tokio::test]
async fn fifty_megabytes_stream_through_with_bounded_memory() {
    let mut g = Guest::start().await;
    let before = peak_rss();
    let mut e = g.exec(req(&["seq", "1", &LINES.to_string()])).await;
    e.started().await;
    let mut expect = Expect::new();
    let mut frames = 0u64;
    let end = loop {
        match e.next().await {
            Some(ExecOutput::Stdout(d)) => {
                assert!(d.len() <= banger_guest_proto::frame::MAX_CHUNK);
                frames += 1;
                expect.feed(&d);
            }
            Some(other) => break other,
            None => panic!("stream ended without Exited"),
        }
    };
    assert_eq!(end, ExecOutput::Exited(ExitStatus::Code(0)));
    assert_eq!(expect.next, LINES + 1, "all lines arrived");
    assert!(expect.total > 50 * 1024 * 1024, "{} bytes", expect.total);
    let grown = peak_rss().saturating_sub(before);
    eprintln!(
        "{} bytes in {frames} frames; peak RSS grew by {} KiB",
        expect.total,
        grown / 1024
    );
    assert!(
        grown < 24 * 1024 * 1024,
        "peak RSS grew by {grown} bytes: output is being buffered"
    );
}
