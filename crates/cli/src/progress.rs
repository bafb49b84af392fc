//! Renders the progress of long operations (image pull, kernel pull and push, VM start): a
//! live status line on a terminal, plain lines otherwise (logs, CI), never both.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use banger_api::pull::PullEvent;

use crate::output::human_bytes;

pub struct PullProgress {
    live: bool,
    /// index → (done, total, cached)
    layers: BTreeMap<usize, (u64, u64, bool)>,
    last_draw: Option<Instant>,
    drawn: bool,
    /// Blobs already reported as uploaded (a retried upload reports its bytes again).
    uploaded: Vec<String>,
}

impl PullProgress {
    /// Live output only when stderr is a terminal; `quiet` silences everything.
    pub fn new(quiet: bool) -> Option<Self> {
        if quiet {
            return None;
        }
        Some(PullProgress {
            live: std::io::stderr().is_terminal(),
            layers: BTreeMap::new(),
            last_draw: None,
            drawn: false,
            uploaded: Vec::new(),
        })
    }

    pub fn on_event(&mut self, event: &PullEvent) {
        match event {
            PullEvent::Resolving { reference } => self.line(&format!("Resolving {reference}")),
            PullEvent::Resolved {
                manifest_digest,
                platform,
                layers,
                total_bytes,
            } => self.line(&format!(
                "Resolved {manifest_digest} ({platform}, {layers} layers, {})",
                human_bytes(*total_bytes)
            )),
            PullEvent::Layer {
                index,
                digest,
                done_bytes,
                total_bytes,
                cached,
            } => {
                let before = self
                    .layers
                    .insert(*index, (*done_bytes, *total_bytes, *cached));
                let finished = done_bytes >= total_bytes;
                let was_finished = before.is_some_and(|(d, t, _)| d >= t);
                if self.live {
                    self.status(&self.download_summary(), finished && !was_finished);
                } else if finished && !was_finished {
                    let short = digest.strip_prefix("sha256:").unwrap_or(digest);
                    let how = if *cached { "cached" } else { "downloaded" };
                    self.line(&format!(
                        "Layer {} {} {how} ({})",
                        index + 1,
                        &short[..short.len().min(12)],
                        human_bytes(*total_bytes)
                    ));
                }
            }
            PullEvent::Writing { entries, bytes } => {
                if self.live {
                    let text =
                        format!("Writing rootfs: {entries} entries, {}", human_bytes(*bytes));
                    self.status(&text, false);
                }
            }
            PullEvent::Reused { from_image } => self.line(&format!(
                "Reusing the root filesystem of image {from_image} (same digest)"
            )),
            PullEvent::StagingKernel => self.line("Staging kernel"),
            PullEvent::FetchingKernel { name, reference } => self.line(&format!(
                "Kernel {name} is not local: fetching it from {reference}"
            )),
            PullEvent::Packing => self.line("Packing the kernel into a layer"),
            PullEvent::Uploading {
                digest,
                done_bytes,
                total_bytes,
            } => {
                let finished = done_bytes >= total_bytes;
                if self.live {
                    let text = format!(
                        "Uploading layer: {} / {}",
                        human_bytes(*done_bytes),
                        human_bytes(*total_bytes)
                    );
                    self.status(&text, finished);
                }
                if finished && !self.uploaded.contains(digest) {
                    self.uploaded.push(digest.clone());
                    let short = digest.strip_prefix("sha256:").unwrap_or(digest);
                    self.line(&format!(
                        "Uploaded layer {} ({})",
                        &short[..short.len().min(12)],
                        human_bytes(*total_bytes)
                    ));
                }
            }
            PullEvent::Publishing => self.line("Publishing"),
            PullEvent::VmStage { stage, elapsed_ms } => self.line(&format!(
                "  {stage} (+{:.1} s)",
                *elapsed_ms as f64 / 1000.0
            )),
            PullEvent::Log { text } => {
                // Console output belongs to stdout, not to the progress on stderr.
                self.finish();
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            PullEvent::Done { elapsed_ms } => {
                self.line(&format!("Done in {:.1}s", *elapsed_ms as f64 / 1000.0))
            }
        }
    }

    fn download_summary(&self) -> String {
        let (done, total) = self
            .layers
            .values()
            .fold((0, 0), |(d, t), (ld, lt, _)| (d + ld.min(lt), t + lt));
        let complete = self.layers.values().filter(|(d, t, _)| d >= t).count();
        format!(
            "Downloading layers: {complete}/{} complete, {} / {}",
            self.layers.len(),
            human_bytes(done),
            human_bytes(total)
        )
    }

    /// Rewrites the status line, at most ten times a second unless `force`.
    fn status(&mut self, text: &str, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last_draw
                .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
        self.drawn = true;
    }

    /// A permanent line (clears a live status line first).
    fn line(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.drawn {
            let _ = write!(err, "\r\x1b[2K");
            self.drawn = false;
        }
        let _ = writeln!(err, "{text}");
    }

    /// Leaves the terminal clean (after an error or Ctrl-C).
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.drawn = false;
        }
    }
}
