//! Bounded capture of a command's output: the first bytes are kept, the rest only counted,
//! so a 10 MB output costs the server at most the cap.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// An `AsyncWrite` that keeps the first `limit` bytes and counts all of them.
#[derive(Debug)]
pub struct Capped {
    kept: Vec<u8>,
    limit: usize,
    total: u64,
}

/// One stream's capture, as the tool reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Captured {
    /// The kept bytes as UTF-8 (invalid sequences replaced), then the marker when cut.
    pub text: String,
    /// Every byte the command wrote to this stream.
    pub total_bytes: u64,
    pub truncated: bool,
}

impl Capped {
    pub fn new(limit: usize) -> Capped {
        Capped {
            kept: Vec::new(),
            limit,
            total: 0,
        }
    }

    pub fn finish(self) -> Captured {
        let truncated = self.total > self.kept.len() as u64;
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if truncated {
            text.push_str(&marker(self.kept.len(), self.total));
        }
        Captured {
            text,
            total_bytes: self.total,
            truncated,
        }
    }
}

/// The line appended to a cut stream: how much was kept of how much.
pub fn marker(kept: usize, total: u64) -> String {
    format!("\n[banger: output truncated: kept the first {kept} of {total} bytes]")
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.total += buf.len() as u64;
        let room = self.limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&buf[..room.min(buf.len())]);
        // Everything is accepted: the command must never block on a full capture.
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(std::io::Write::write(self.get_mut(), buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn output_under_the_cap_is_kept_whole_without_a_marker() {
        let mut c = Capped::new(10);
        c.write_all(b"out\n").await.expect("write");
        let got = c.finish();
        assert_eq!(got.text, "out\n");
        assert_eq!((got.total_bytes, got.truncated), (4, false));
    }

    #[tokio::test]
    async fn output_over_the_cap_is_cut_counted_and_marked() {
        let mut c = Capped::new(8);
        for _ in 0..1000 {
            c.write_all(b"aaaaa").await.expect("write");
        }
        let got = c.finish();
        assert!(got.truncated);
        assert_eq!(got.total_bytes, 5000);
        assert_eq!(
            got.text,
            "aaaaaaaa\n[banger: output truncated: kept the first 8 of 5000 bytes]"
        );
    }

    #[tokio::test]
    async fn exactly_the_cap_is_not_truncated() {
        let mut c = Capped::new(3);
        c.write_all(b"abc").await.expect("write");
        let got = c.finish();
        assert_eq!((got.text.as_str(), got.truncated), ("abc", false));
    }

    #[tokio::test]
    async fn a_cut_inside_a_utf8_character_stays_valid_text() {
        let mut c = Capped::new(1);
        c.write_all("é".as_bytes()).await.expect("write");
        let got = c.finish();
        assert!(got.truncated);
        assert!(got.text.starts_with('\u{fffd}'), "{}", got.text);
    }
}
