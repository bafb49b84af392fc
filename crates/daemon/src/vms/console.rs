//! The guest's serial console on the host, bounded in size and read in bounded pieces.
//!
//! The VMM writes the console to `<vm>/console.log` (QEMU with `append=on`; Firecracker
//! opens the file itself, at offset 0, without `O_APPEND`). Every byte of it is the guest's,
//! so nothing here trusts its size:
//!
//! - **The keeper** ([`spawn_keeper`]): one task per live VM polls the file every 250 ms.
//!   When it holds more than half the VM's cap (`console_log_max`, default
//!   [`DEFAULT_MAX_BYTES`]), the newest half is copied to `console.log.1` (replacing it)
//!   and `console.log` is truncated. On disk there are then at most `cap` bytes, plus what
//!   the guest writes within one poll (about 128 KiB a quarter second from QEMU's UART
//!   under TCG). Bytes the guest writes between the copy and the truncation are lost: the
//!   price of rotating a file another process writes.
//! - **A writer without `O_APPEND`** (Firecracker: its API offers no append mode) keeps
//!   writing at its own offset after the truncation, so the file becomes sparse: a hole,
//!   then the new output. Only the new output takes disk space, and every reader here
//!   starts at the first data (`SEEK_DATA`), so the hole is never read; `ls -l` shows the
//!   apparent size grow (`du` shows what is used).
//! - **No daemon, no keeper**: VMs outlive `bangerd`, and while none runs the file grows
//!   past the cap. The daemon that adopts the VM starts a keeper, whose first poll cuts the
//!   file back at once (readers never read more than the cap anyway).
//! - **Readers** ([`ConsoleReader`]) see `console.log.1` then `console.log` as one stream,
//!   limited to the newest `cap` bytes, and read it in [`CHUNK`]-sized pieces; the last N
//!   lines are found by reading backwards. Memory never depends on the file's size.
//!
//! Why not QEMU's `ringbuf` chardev, a true ring in QEMU's memory: it is readable only
//! through QMP (`ringbuf-read`), so the log would vanish with the VMM (`vm logs` of a
//! stopped or failed VM is the main use), Firecracker has nothing like it, and a daemon
//! restart would need QMP to get it back. A file with a keeper serves both VMMs alike.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::live::LiveVm;
use super::spec::VmSpec;
use crate::error::OpError;
use crate::store::VmRow;

/// The console log's file name in a VM's directory (what the VMM writes).
pub const CONSOLE_LOG: &str = "console.log";
/// The previous generation: the newest half of the log at its last rotation.
pub const CONSOLE_LOG_OLD: &str = "console.log.1";
/// The console kept on disk per VM when `console_log_max` is not given.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;
/// Bounds of `console_log_max`: at least a boot's worth, at most what a reply may carry.
pub const MIN_MAX_BYTES: u64 = 64 << 10;
pub const MAX_MAX_BYTES: u64 = 256 << 20;
/// The piece size of every read (and of `vm.logs` events).
pub const CHUNK: usize = 64 << 10;
const KEEPER_POLL: Duration = Duration::from_millis(250);

/// Checks `console_log_max` as asked at create (`None`: the default applies).
pub fn check_max(asked: Option<u64>) -> Result<Option<u64>, OpError> {
    match asked {
        Some(b) if !(MIN_MAX_BYTES..=MAX_MAX_BYTES).contains(&b) => {
            Err(OpError::BadRequest(format!(
                "console_log_max {b} bytes is out of range; give 64KiB to 256MiB (the default is 8MiB)"
            )))
        }
        other => Ok(other),
    }
}

/// The VM's console cap.
pub fn max_bytes(spec: &VmSpec) -> u64 {
    spec.console_log_max.unwrap_or(DEFAULT_MAX_BYTES)
}

/// [`max_bytes`] of a stored VM (the default if its spec is unreadable).
pub fn max_bytes_of(row: &VmRow) -> u64 {
    super::parse_spec(row)
        .map(|s| max_bytes(&s))
        .unwrap_or(DEFAULT_MAX_BYTES)
}

/// Whether the VMM was just launched (its console starts empty: the previous boot's old
/// generation goes) or a restarted daemon adopts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    Fresh,
    Adopted,
}

/// Starts the VM's console keeper (see the module doc); it ends with the VM's other tasks.
pub fn spawn_keeper(live: &Arc<LiveVm>, row: &VmRow, boot: Boot) {
    let dir = live.dir.clone();
    let max = max_bytes_of(row);
    if boot == Boot::Fresh {
        let _ = std::fs::remove_file(dir.join(CONSOLE_LOG_OLD));
    }
    let name = live.name.clone();
    live.add_task(tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEEPER_POLL);
        let mut warned = false;
        loop {
            tick.tick().await;
            let d = dir.clone();
            let rotated = tokio::task::spawn_blocking(move || rotate(&d, max)).await;
            // One warning per VM: a failing disk must not turn into a log flood.
            if let Ok(Err(e)) = rotated
                && !std::mem::replace(&mut warned, true)
            {
                tracing::warn!(vm = %name, error = %e, "could not rotate the console log");
            }
        }
    }));
}

/// Rotates `<dir>/console.log` if it holds more than `max / 2` bytes: its newest `max / 2`
/// bytes replace `console.log.1`, then it is truncated. Returns whether it rotated.
pub fn rotate(dir: &Path, max: u64) -> io::Result<bool> {
    let path = dir.join(CONSOLE_LOG);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let end = file.metadata()?.len();
    let start = data_start(&file, end);
    let keep = max / 2;
    if end - start <= keep {
        return Ok(false);
    }
    let tmp = dir.join("console.log.1.tmp");
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    copy_range(&file, end - keep, end, &mut out)?;
    drop(out);
    std::fs::rename(&tmp, dir.join(CONSOLE_LOG_OLD))?;
    OpenOptions::new().write(true).open(&path)?.set_len(0)?;
    Ok(true)
}

fn copy_range(from: &File, mut at: u64, end: u64, to: &mut File) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    while at < end {
        let want = usize::try_from(end - at).map_or(CHUNK, |n| n.min(CHUNK));
        let n = from.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break; // truncated under us: what was copied stands
        }
        to.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// Where data begins in `file` (of length `end`): past the hole a truncation leaves under
/// a writer that does not append. 0 where the filesystem cannot tell.
pub fn data_start(file: &File, end: u64) -> u64 {
    // SAFETY: lseek(2) on a descriptor we own; it only moves that descriptor's offset.
    let at = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_DATA) };
    if at >= 0 {
        return (at as u64).min(end);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ENXIO) => end, // nothing but a hole
        _ => 0,
    }
}

/// One file's readable range.
struct Segment {
    file: File,
    start: u64,
    end: u64,
}

/// Files read as one stream (the console: `console.log.1` then `console.log`), from a
/// position that only moves forward, in [`CHUNK`]-sized pieces.
pub struct ConsoleReader {
    segments: Vec<Segment>,
    /// Where the last of the paths ended when opened (0 if it was missing).
    last_end: u64,
    /// Position in the concatenation of the segments.
    pos: u64,
}

impl ConsoleReader {
    /// The VM's console as it is now (missing files are empty).
    pub fn console(dir: &Path) -> io::Result<ConsoleReader> {
        Self::open(&[dir.join(CONSOLE_LOG_OLD), dir.join(CONSOLE_LOG)])
    }

    /// `paths` as they are now, each from its first data (missing files are empty).
    pub fn open(paths: &[PathBuf]) -> io::Result<ConsoleReader> {
        let mut segments = Vec::new();
        let mut last_end = 0;
        for p in paths {
            last_end = 0;
            let file = match File::open(p) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let end = file.metadata()?.len();
            let start = data_start(&file, end);
            segments.push(Segment { file, start, end });
            last_end = end;
        }
        Ok(ConsoleReader {
            segments,
            last_end,
            pos: 0,
        })
    }

    fn total(&self) -> u64 {
        self.segments.iter().map(|s| s.end - s.start).sum()
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.total() - self.pos
    }

    /// Where the last of the paths ended when opened: the offset a follower of that file
    /// continues from.
    pub fn last_end(&self) -> u64 {
        self.last_end
    }

    /// Skips to `offset` in the last file (a follower's position; never backwards).
    pub fn skip_to(&mut self, offset: u64) {
        if let Some(last) = self.segments.last() {
            let left = last.end.saturating_sub(offset.max(last.start));
            self.pos = self.pos.max(self.total() - left);
        }
    }

    /// Skips all but the newest `max` bytes.
    pub fn keep_newest(&mut self, max: u64) {
        self.pos = self.pos.max(self.total().saturating_sub(max));
    }

    /// Skips all but the last `lines` lines (a final newline does not start a new line),
    /// reading backwards from the end, never before the current position.
    pub fn keep_last_lines(&mut self, lines: usize) -> io::Result<()> {
        let total = self.total();
        if lines == 0 {
            self.pos = total;
            return Ok(());
        }
        let mut buf = vec![0u8; CHUNK];
        let mut end = total;
        let mut seen = 0usize;
        while end > self.pos {
            let len = usize::try_from(end - self.pos).map_or(CHUNK, |n| n.min(CHUNK));
            let from = end - len as u64;
            let got = self.read_at(from, &mut buf[..len])?;
            for (i, b) in buf[..got].iter().enumerate().rev() {
                let at = from + i as u64;
                if *b == b'\n' && at + 1 != total {
                    seen += 1;
                    if seen == lines {
                        self.pos = at + 1;
                        return Ok(());
                    }
                }
            }
            end = from;
        }
        Ok(())
    }

    /// The next piece (at most [`CHUNK`] bytes), or `None` at the end.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let len = usize::try_from(self.remaining()).map_or(CHUNK, |n| n.min(CHUNK));
        if len == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; len];
        let got = self.read_at(self.pos, &mut buf)?;
        if got == 0 {
            // A file shrank under us (a rotation): what is left is gone.
            self.pos = self.total();
            return Ok(None);
        }
        buf.truncate(got);
        self.pos += got as u64;
        Ok(Some(buf))
    }

    /// Reads what lies at `at` in the concatenation into `buf`, across segments; fewer
    /// bytes only where a file shrank since it was opened.
    fn read_at(&self, mut at: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        for s in &self.segments {
            let len = s.end - s.start;
            if at >= len {
                at -= len;
                continue;
            }
            while filled < buf.len() && at < len {
                let want = usize::try_from(len - at)
                    .map_or(buf.len() - filled, |n| n.min(buf.len() - filled));
                let n = s
                    .file
                    .read_at(&mut buf[filled..filled + want], s.start + at)?;
                if n == 0 {
                    return Ok(filled);
                }
                filled += n;
                at += n as u64;
            }
            if filled == buf.len() {
                break;
            }
            at = 0;
        }
        Ok(filled)
    }
}

/// The last `lines` lines of `paths` read as one stream, and at most `max_bytes` of them,
/// as text for a message (`\r` dropped, invalid UTF-8 replaced). Empty if unreadable.
pub fn quote_tail(paths: &[PathBuf], lines: usize, max_bytes: usize) -> String {
    let read = || -> io::Result<Vec<u8>> {
        let mut r = ConsoleReader::open(paths)?;
        r.keep_newest(max_bytes as u64);
        r.keep_last_lines(lines)?;
        let mut bytes = Vec::new();
        while let Some(chunk) = r.next_chunk()? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    let bytes = read().unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).replace('\r', "");
    let text = text.strip_suffix('\n').unwrap_or(&text);
    banger_api::text::cut_front(text, max_bytes).to_string()
}

/// Decodes a byte stream read in pieces as UTF-8 text without splitting a character
/// across pieces; invalid sequences become U+FFFD.
#[derive(Default)]
pub struct Utf8Pieces {
    pending: Vec<u8>,
}

impl Utf8Pieces {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let keep = incomplete_suffix(&self.pending);
        let split = self.pending.len() - keep;
        let text = String::from_utf8_lossy(&self.pending[..split]).into_owned();
        self.pending.drain(..split);
        text
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Length of a trailing UTF-8 sequence that is valid so far but incomplete.
fn incomplete_suffix(bytes: &[u8]) -> usize {
    let tail = &bytes[bytes.len().saturating_sub(3)..];
    for (i, b) in tail.iter().enumerate().rev() {
        let need = match b {
            0x80..=0xbf => continue,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return 0,
        };
        let have = tail.len() - i;
        return if have < need { have } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, data: &[u8]) {
        std::fs::write(path, data).unwrap();
    }

    fn read_all(r: &mut ConsoleReader) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            assert!(c.len() <= CHUNK);
            out.extend_from_slice(&c);
        }
        out
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn rotation_keeps_the_newest_half_and_bounds_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(CONSOLE_LOG);
        let max = 64 << 10;
        write(&log, &vec![b'a'; 32 << 10]);
        assert!(!rotate(dir.path(), max).unwrap(), "at half the cap: kept");
        let mut appender = OpenOptions::new().append(true).open(&log).unwrap();
        appender.write_all(b"0123456789").unwrap();
        assert!(rotate(dir.path(), max).unwrap());
        assert_eq!(size(&log), 0);
        let old = std::fs::read(dir.path().join(CONSOLE_LOG_OLD)).unwrap();
        assert_eq!(old.len() as u64, max / 2);
        assert!(old.ends_with(b"a0123456789"), "the newest bytes");
        // The appending writer goes on at the start of the truncated file.
        appender.write_all(b"next").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"next");
        let mut r = ConsoleReader::console(dir.path()).unwrap();
        let all = read_all(&mut r);
        assert!(all.ends_with(b"0123456789next"));
        assert!(size(&log) + size(&dir.path().join(CONSOLE_LOG_OLD)) <= max);
        assert!(!rotate(dir.path(), max).unwrap());
        assert!(!rotate(&dir.path().join("missing"), max).unwrap());
    }

    #[test]
    fn a_writer_that_does_not_append_leaves_a_hole_that_readers_skip() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(CONSOLE_LOG);
        let max = 64 << 10;
        // Firecracker's way: one descriptor at its own offset, no O_APPEND.
        let mut writer = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        writer.write_all(&vec![b'x'; 40 << 10]).unwrap();
        assert!(rotate(dir.path(), max).unwrap());
        writer.write_all(&vec![b'y'; 8 << 10]).unwrap();
        let end = size(&log);
        assert_eq!(
            end,
            48 << 10,
            "the offset went on: a hole, then the new output"
        );
        let f = File::open(&log).unwrap();
        let start = data_start(&f, end);
        assert!(start > 0 && end - start >= 8 << 10, "start {start}");
        assert!(
            !rotate(dir.path(), max).unwrap(),
            "8 KiB of data is below the cap"
        );
        let mut r = ConsoleReader::open(std::slice::from_ref(&log)).unwrap();
        let bytes = read_all(&mut r);
        assert!(bytes.ends_with(&vec![b'y'; 8 << 10]));
        assert!(
            bytes.len() <= 12 << 10,
            "the hole was skipped: {}",
            bytes.len()
        );
    }

    #[test]
    fn readers_keep_the_newest_bytes_and_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join(CONSOLE_LOG_OLD), b"one\ntwo\nthr");
        write(&dir.path().join(CONSOLE_LOG), b"ee\nfour\n");
        let all = read_all(&mut ConsoleReader::console(dir.path()).unwrap());
        assert_eq!(all, b"one\ntwo\nthree\nfour\n");

        let mut r = ConsoleReader::console(dir.path()).unwrap();
        r.keep_last_lines(2).unwrap();
        assert_eq!(read_all(&mut r), b"three\nfour\n", "across the two files");
        let mut r = ConsoleReader::console(dir.path()).unwrap();
        r.keep_last_lines(10).unwrap();
        assert_eq!(read_all(&mut r), b"one\ntwo\nthree\nfour\n");
        let mut r = ConsoleReader::console(dir.path()).unwrap();
        r.keep_last_lines(0).unwrap();
        assert_eq!(read_all(&mut r), b"");
        let mut r = ConsoleReader::console(dir.path()).unwrap();
        r.keep_newest(7);
        r.keep_last_lines(5).unwrap();
        assert_eq!(read_all(&mut r), b"e\nfour\n", "bytes bound lines");
        assert!(
            ConsoleReader::console(&dir.path().join("none"))
                .unwrap()
                .next_chunk()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn one_huge_line_is_cut_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(CONSOLE_LOG);
        let mut line = vec![b'A'; 3 * CHUNK + 17];
        line.extend_from_slice("é\r\n".as_bytes());
        write(&log, &line);
        let quoted = quote_tail(std::slice::from_ref(&log), 50, 8 << 10);
        assert!(quoted.len() <= 8 << 10);
        assert!(quoted.ends_with("AAé"), "{:?}", &quoted[quoted.len() - 5..]);
        let mut r = ConsoleReader::open(std::slice::from_ref(&log)).unwrap();
        r.keep_last_lines(1).unwrap();
        assert_eq!(r.remaining(), line.len() as u64, "one line, read in pieces");
    }

    #[test]
    fn text_pieces_never_split_a_character() {
        let text = "aé€😀b";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut p = Utf8Pieces::default();
            let mut out = p.push(&bytes[..cut]);
            out += &p.push(&bytes[cut..]);
            out += &p.finish();
            assert_eq!(out, text, "cut at {cut}");
        }
        let mut p = Utf8Pieces::default();
        assert_eq!(p.push(b"a\xff\x1bb"), "a\u{fffd}\x1bb");
        assert_eq!(p.push(b"\xe2\x82"), "");
        assert_eq!(p.finish(), "\u{fffd}");
    }

    #[test]
    fn the_cap_is_checked() {
        assert_eq!(check_max(None).unwrap(), None);
        assert_eq!(check_max(Some(1 << 20)).unwrap(), Some(1 << 20));
        assert!(check_max(Some(1024)).is_err());
        assert!(check_max(Some(1 << 40)).is_err());
    }
}
