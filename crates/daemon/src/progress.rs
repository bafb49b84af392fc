//! Progress and cancellation of long operations.
//!
//! An operation reports [`OpEvent`]s through [`OpContext::emit`] and polls
//! [`OpContext::check`] at safe points. When the client goes away (Ctrl-C closes the
//! stream), the next emit or check sees it and the operation unwinds, cleaning up as on any
//! other error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use banger_api::event::{OpEvent, StreamLine};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::OpError;

#[derive(Clone, Default)]
pub struct OpContext {
    cancelled: Arc<AtomicBool>,
    events: Option<UnboundedSender<StreamLine>>,
    /// Events are dropped, but a client leaving still cancels (a nested operation).
    quiet: bool,
}

impl OpContext {
    /// No listener: events are dropped, only explicit cancellation stops the operation.
    pub fn detached() -> Self {
        OpContext::default()
    }

    /// Events go to `events`; a closed receiver means the client left.
    pub fn streaming(events: UnboundedSender<StreamLine>) -> Self {
        OpContext {
            cancelled: Arc::new(AtomicBool::new(false)),
            events: Some(events),
            quiet: false,
        }
    }

    /// The same operation without its events: for a step whose own progress would only
    /// confuse the client's display (a kernel fetched on the way to an image).
    pub fn quiet(&self) -> Self {
        OpContext {
            quiet: true,
            ..self.clone()
        }
    }

    pub fn emit(&self, event: OpEvent) {
        if self.quiet {
            return;
        }
        if let Some(tx) = &self.events
            && tx.send(StreamLine::Event(event)).is_err()
        {
            self.cancel();
        }
    }

    /// Whether a client reads the events (a plain JSON call reads only the result).
    pub fn is_streaming(&self) -> bool {
        self.events.is_some() && !self.quiet
    }

    /// Resolves once the client has gone away (never for a detached operation).
    pub async fn closed(&self) {
        match &self.events {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
            || self.events.as_ref().is_some_and(|tx| tx.is_closed())
    }

    /// `Err(Cancelled)` once the operation should stop.
    pub fn check(&self) -> Result<(), OpError> {
        if self.is_cancelled() {
            Err(OpError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Runs `fut` unless the client goes away first (polled: cancellation is rare and a
/// tenth of a second is prompt enough).
pub async fn until_cancelled<T>(
    ctx: &OpContext,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, OpError> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Ok(out),
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                if ctx.is_cancelled() {
                    return Err(OpError::Cancelled);
                }
            }
        }
    }
}
