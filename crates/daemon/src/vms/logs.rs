//! `vm.logs`: the guest's serial console, kept in the VM's directory (see `console.rs`
//! for how it is bounded).
//!
//! Never read whole: at most the VM's console cap (the newest bytes), in
//! [`console::CHUNK`]-sized pieces, emitted as `log` events to a streaming client (a plain
//! JSON call gets them joined in `text`). `tail_lines` is found by reading backwards. With
//! `follow`, new output streams until the VM stops or the client leaves. The text is the
//! console's bytes as they are (`\r`, escape sequences: the client decides how to print
//! them); only invalid UTF-8 becomes U+FFFD.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use banger_api::event::OpEvent;
use banger_api::vm::{VmLogs, VmLogsParams, VmState};

use super::console::{self, ConsoleReader, Utf8Pieces};
use super::{Vms, state_of};
use crate::error::OpError;
use crate::progress::OpContext;

const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Where the text goes: events for a streaming client, else the reply.
struct Sink<'a> {
    ctx: &'a OpContext,
    decoder: Utf8Pieces,
    reply: String,
}

impl Sink<'_> {
    fn push(&mut self, bytes: &[u8]) {
        let text = self.decoder.push(bytes);
        self.put(text);
    }

    fn put(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        if self.ctx.is_streaming() {
            self.ctx.emit(OpEvent::Log { text });
        } else {
            self.reply.push_str(&text);
        }
    }

    fn finish(mut self) -> VmLogs {
        let rest = self.decoder.finish();
        self.put(rest);
        VmLogs { text: self.reply }
    }
}

impl Vms {
    pub async fn logs(
        self: &Arc<Self>,
        p: VmLogsParams,
        ctx: &OpContext,
    ) -> Result<VmLogs, OpError> {
        let row = self.find(&p.vm)?;
        let dir = PathBuf::from(&row.dir);
        let max = console::max_bytes_of(&row);
        let mut sink = Sink {
            ctx,
            decoder: Utf8Pieces::default(),
            reply: String::new(),
        };
        let opened = dir.clone();
        let mut reader = blocking(move || {
            let mut r = ConsoleReader::console(&opened)?;
            r.keep_newest(max);
            if let Some(n) = p.tail_lines {
                r.keep_last_lines(n)?;
            }
            Ok(r)
        })
        .await?;
        let mut offset = reader.last_end();
        loop {
            ctx.check()?;
            let (r, chunk) = blocking(move || {
                let chunk = reader.next_chunk();
                chunk.map(|c| (reader, c))
            })
            .await?;
            reader = r;
            match chunk {
                Some(bytes) => sink.push(&bytes),
                None => break,
            }
        }
        if !p.follow {
            return Ok(sink.finish());
        }
        let log = dir.join(console::CONSOLE_LOG);
        let mut tick = tokio::time::interval(FOLLOW_POLL);
        loop {
            tick.tick().await;
            ctx.check()?;
            offset = self.follow_once(&log, offset, max, &mut sink).await?;
            let running = self.store.find_vm(&row.id)?.is_some_and(|r| {
                matches!(
                    state_of(&r),
                    VmState::Running | VmState::Starting | VmState::Stopping
                )
            });
            if !running {
                return Ok(sink.finish());
            }
        }
    }

    /// Emits what `console.log` gained since `offset` (at most `max` bytes, the newest),
    /// piece by piece; returns the new offset.
    async fn follow_once(
        &self,
        log: &Path,
        offset: u64,
        max: u64,
        sink: &mut Sink<'_>,
    ) -> Result<u64, OpError> {
        let path = log.to_path_buf();
        let Some(mut reader) = blocking(move || match std::fs::metadata(&path) {
            Ok(_) => ConsoleReader::open(std::slice::from_ref(&path)).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await?
        else {
            return Ok(offset);
        };
        let end = reader.last_end();
        // Shorter than what was read: rotated by the keeper, or a new boot began.
        let from = if end < offset { 0 } else { offset };
        reader.skip_to(from);
        reader.keep_newest(max);
        loop {
            sink.ctx.check()?;
            let (r, chunk) = blocking(move || reader.next_chunk().map(|c| (reader, c))).await?;
            reader = r;
            match chunk {
                Some(bytes) => sink.push(&bytes),
                None => return Ok(end),
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OpError::Failed(format!("reading the console log aborted: {e}")))?
        .map_err(|e| OpError::io("reading the console log", e))
}
