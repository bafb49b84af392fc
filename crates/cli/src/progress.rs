//! Renders the progress of long operations (image pull, kernel pull and push, VM start).
//!
//! On a terminal: `indicatif` bars, as docker and podman users expect — one per layer
//! download (bytes of total, rate, time left), then one for the conversion (layer bytes
//! consumed of their known total, so the percentage and ETA mean something), then a line
//! per step. Otherwise (logs, CI): plain lines, never a control character.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use banger_api::event::OpEvent;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use banger_api::text::{cut, visible};

use crate::output::human_bytes;

pub struct PullProgress {
    /// Bars when stderr is a terminal; `None` for plain lines.
    live: Option<MultiProgress>,
    /// index → bar (live) and (done, total, cached) as last reported.
    layers: BTreeMap<usize, (Option<ProgressBar>, u64, u64)>,
    writing: Option<ProgressBar>,
    upload: Option<(String, ProgressBar)>,
    /// Blobs already reported as uploaded (a retried upload reports its bytes again).
    uploaded: Vec<String>,
    wrote_line: bool,
}

const TRANSFER: &str = "{prefix:<22} [{bar:30}] {percent:>3}% {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta}";
const CONVERT: &str = "{prefix:<22} [{bar:30}] {percent:>3}% {msg} ETA {eta}";

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a typo would show at the first test run.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl PullProgress {
    /// Bars only when stderr is a terminal; `quiet` silences everything.
    pub fn new(quiet: bool) -> Option<Self> {
        if quiet {
            return None;
        }
        let live = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        Some(PullProgress {
            live,
            layers: BTreeMap::new(),
            writing: None,
            upload: None,
            uploaded: Vec::new(),
            wrote_line: false,
        })
    }

    fn bar(&self, len: u64, template: &str, prefix: String) -> Option<ProgressBar> {
        let multi = self.live.as_ref()?;
        let bar = multi.add(ProgressBar::new(len));
        bar.set_style(style(template));
        bar.set_prefix(prefix);
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    }

    pub fn on_event(&mut self, event: &OpEvent) {
        match event {
            OpEvent::Resolving { reference } => self.line(&format!("Resolving {reference}")),
            OpEvent::Resolved {
                manifest_digest,
                platform,
                layers,
                total_bytes,
            } => self.line(&format!(
                "Resolved {manifest_digest} ({platform}, {layers} layers, {})",
                human_bytes(*total_bytes)
            )),
            OpEvent::Layer {
                index,
                digest,
                done_bytes,
                total_bytes,
                cached,
            } => self.layer(*index, digest, *done_bytes, *total_bytes, *cached),
            OpEvent::Writing {
                entries,
                bytes,
                compressed_done,
                compressed_total,
            } => {
                let msg = format!("{entries} entries, {}", human_bytes(*bytes));
                if self.live.is_none() {
                    if !self.wrote_line {
                        self.wrote_line = true;
                        self.line("Writing the root filesystem");
                    }
                    return;
                }
                if self.writing.is_none() {
                    self.writing =
                        self.bar(*compressed_total, CONVERT, "Writing rootfs".to_string());
                }
                if let Some(bar) = &self.writing {
                    bar.set_length((*compressed_total).max(1));
                    bar.set_position(*compressed_done);
                    bar.set_message(msg);
                }
            }
            OpEvent::Reused { from_image } => self.line(&format!(
                "Reusing the root filesystem of image {from_image} (same digest)"
            )),
            OpEvent::StagingKernel => self.line("Staging kernel"),
            OpEvent::FetchingKernel { name, reference } => self.line(&format!(
                "Kernel {name} is not local: fetching it from {reference}"
            )),
            OpEvent::Packing => self.line("Packing the kernel into a layer"),
            OpEvent::Uploading {
                digest,
                done_bytes,
                total_bytes,
            } => self.uploading(digest, *done_bytes, *total_bytes),
            OpEvent::Publishing => self.line("Publishing"),
            OpEvent::VmStage { stage, elapsed_ms } => self.line(&format!(
                "  {stage} (+{:.1} s)",
                *elapsed_ms as f64 / 1000.0
            )),
            OpEvent::Log { text } => {
                // Console output belongs to stdout, not to the progress on stderr; it is
                // the guest's, so its controls are shown, not obeyed.
                let text = console_text(text);
                let write = || {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                };
                match &self.live {
                    Some(multi) => multi.suspend(write),
                    None => write(),
                }
            }
            // The client reads it; nothing to show.
            OpEvent::Lease { .. } => {}
            OpEvent::Done { elapsed_ms } => {
                self.line(&format!("Done in {:.1}s", *elapsed_ms as f64 / 1000.0))
            }
        }
    }

    fn layer(&mut self, index: usize, digest: &str, done: u64, total: u64, cached: bool) {
        let short = short_digest(digest);
        if !self.layers.contains_key(&index) {
            let bar = self.bar(total, TRANSFER, format!("Layer {} {short}", index + 1));
            self.layers.insert(index, (bar, 0, total));
        }
        let Some((bar, last_done, last_total)) = self.layers.get_mut(&index) else {
            return;
        };
        let was_finished = *last_total > 0 && last_done >= last_total;
        *last_done = done;
        *last_total = total;
        let finished = done >= total;
        if let Some(bar) = bar {
            if !short.is_empty() {
                bar.set_prefix(format!("Layer {} {short}", index + 1));
            }
            bar.set_length(total.max(1));
            bar.set_position(done);
            if finished && !bar.is_finished() {
                bar.finish_with_message(if cached { "cached" } else { "downloaded" });
            }
        } else if finished && !was_finished {
            let how = if cached { "cached" } else { "downloaded" };
            self.line(&format!(
                "Layer {} {short} {how} ({})",
                index + 1,
                human_bytes(total)
            ));
        }
    }

    fn uploading(&mut self, digest: &str, done: u64, total: u64) {
        let finished = done >= total;
        if self.live.is_some() {
            if self.upload.as_ref().is_none_or(|(d, _)| d != digest) {
                let prefix = format!("Upload {}", short_digest(digest));
                self.upload = self
                    .bar(total, TRANSFER, prefix)
                    .map(|b| (digest.to_string(), b));
            }
            if let Some((_, bar)) = &self.upload {
                bar.set_length(total.max(1));
                bar.set_position(done);
                if finished {
                    bar.finish();
                }
            }
        }
        if finished && !self.uploaded.iter().any(|d| d == digest) {
            self.uploaded.push(digest.to_string());
            if self.live.is_none() {
                self.line(&format!(
                    "Uploaded layer {} ({})",
                    short_digest(digest),
                    human_bytes(total)
                ));
            }
        }
    }

    /// A permanent line, above the bars; a running conversion bar is complete by then
    /// (every step after it follows the conversion). Its text may quote a registry or a
    /// guest (references, platforms, stage names), so controls are made visible.
    fn line(&mut self, text: &str) {
        let text = visible(text);
        if let Some(bar) = self.writing.take() {
            if let Some(len) = bar.length() {
                bar.set_position(len);
            }
            bar.finish();
        }
        match &self.live {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{text}");
            }
        }
    }

    /// Leaves the terminal clean (after an error or Ctrl-C): unfinished bars are removed.
    pub fn finish(&mut self) {
        let bars = self
            .layers
            .values()
            .filter_map(|(b, _, _)| b.clone())
            .chain(self.writing.take())
            .chain(self.upload.take().map(|(_, b)| b));
        for bar in bars {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}

/// The first 12 characters of a digest's hex, printable (a registry chose it).
fn short_digest(digest: &str) -> String {
    let short = digest.strip_prefix("sha256:").unwrap_or(digest);
    visible(cut(short, 12)).into_owned()
}

/// A guest console chunk as printed: CR LF line ends become LF (a serial console sends
/// both), and every other control character is made visible.
fn console_text(text: &str) -> String {
    visible(&text.replace("\r\n", "\n")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_digests_are_twelve_hex_digits() {
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_digest("abc"), "abc");
        assert_eq!(short_digest(""), "");
        assert_eq!(short_digest("sha256:\u{1b}]0;x"), "\\x1b]0;x");
        assert_eq!(short_digest("éééééééé"), "éééééé", "cut on a char boundary");
    }

    #[test]
    fn console_output_shows_controls_instead_of_obeying_them() {
        assert_eq!(
            console_text("ok\r\n\u{1b}]52;c;Y3VybA==\u{7}\tdone\n"),
            "ok\n\\x1b]52;c;Y3VybA==\\x07\tdone\n"
        );
        assert_eq!(console_text("plain\n"), "plain\n");
    }
}
