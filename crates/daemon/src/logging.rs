//! Structured logs to `<state>/bangerd.log` (and optionally stderr).

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

pub fn init(log_path: &Path, level: LevelFilter, also_stderr: bool) -> anyhow::Result<()> {
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("opening log file {}", log_path.display()))?;
    let file = Mutex::new(file);
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(level)
        .with_target(false);
    // `try_init`: a second initialisation (tests in one process) keeps the first.
    let _ = if also_stderr {
        builder.with_writer(file.and(std::io::stderr)).try_init()
    } else {
        builder.with_writer(file).try_init()
    };
    Ok(())
}
