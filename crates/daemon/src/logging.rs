//! Structured logs to `<state>/bangerd.log` (and optionally stderr), bounded on disk.
//!
//! Guests can make the daemon log (a failed agent handshake is a warning line), so the file
//! is rotated: past [`MAX_LOG_BYTES`] it becomes `bangerd.log.1` (replacing the previous
//! one) and a new `bangerd.log` starts; at most twice the limit is kept. An auto-started
//! daemon's stderr is the same file (`banger`'s autostart opens it for panics and early
//! errors): when fd 2 is the file being rotated away, it is moved onto the new file too, so
//! that descriptor never keeps writing to a file nobody bounds.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// Size at which `bangerd.log` is rotated.
pub const MAX_LOG_BYTES: u64 = 16 << 20;

pub fn init(log_path: &Path, level: LevelFilter, also_stderr: bool) -> anyhow::Result<()> {
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = RotatingFile::open(log_path, MAX_LOG_BYTES)
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

/// An append-only file that moves itself to `<path>.1` when it reaches `max` bytes.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    /// Bytes in the file as far as this writer knows (others, like fd 2, may add some:
    /// the real size is checked before rotating).
    written: u64,
    max: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, max: u64) -> io::Result<RotatingFile> {
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            written,
            max,
        })
    }

    /// The previous generation's path.
    pub fn old_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if std::fs::rename(&self.path, Self::old_path(&self.path)).is_err() {
            // Cannot keep a generation: losing the old lines beats growing forever.
            self.file.set_len(0)?;
            self.written = 0;
            return Ok(());
        }
        let new = open_append(&self.path)?;
        move_stderr(&self.file, &new);
        self.file = new;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written >= self.max {
            self.written = self
                .file
                .metadata()
                .map(|m| m.len())
                .unwrap_or(self.written);
            if self.written >= self.max {
                self.rotate()?;
            }
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Points fd 2 at `new` if it is `old` (same file), as an auto-started daemon's is.
fn move_stderr(old: &File, new: &File) {
    let Ok(old) = old.metadata() else { return };
    // SAFETY: fstat(2) into a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fd 2 may be closed, then fstat fails and nothing is done.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return;
    }
    if st.st_dev as u64 == old.dev() && st.st_ino as u64 == old.ino() {
        // SAFETY: dup2(2) replaces fd 2 atomically with a descriptor we own.
        unsafe { libc::dup2(new.as_raw_fd(), 2) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_to_one_old_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bangerd.log");
        std::fs::write(&path, vec![b'o'; 900]).unwrap();
        let mut log = RotatingFile::open(&path, 1000).unwrap();
        let line = [b'x'; 99];
        for _ in 0..35 {
            log.write_all(&line).unwrap();
            log.write_all(b"\n").unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        let old = RotatingFile::old_path(&path);
        assert_eq!(old, dir.path().join("bangerd.log.1"));
        assert!(size(&path) <= 1000 + 100, "current: {}", size(&path));
        assert!(size(&old) <= 1000 + 100, "old: {}", size(&old));
        let text = std::fs::read(&path).unwrap();
        assert!(text.ends_with(b"xx\n") && !text.contains(&b'o'));
        // Written elsewhere too (fd 2 of an auto-started daemon): the real size counts.
        let mut other = open_append(&path).unwrap();
        other.write_all(&vec![b'e'; 2000]).unwrap();
        log.written = 1000;
        log.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after\n");
        assert!(std::fs::read(&old).unwrap().ends_with(b"eee"));
    }
}
