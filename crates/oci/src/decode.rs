//! Layer blob → uncompressed tar stream, with both digests computed while streaming:
//! the blob digest (catches a corrupted cache file) and the `diff_id` (catches a wrong
//! or tampered layer after decompression). Compression is detected from the magic
//! bytes (media types lie: Docker's v2s2 "tar.gzip" is sometimes plain tar).

use crate::digest::Digest;
use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

/// Running sha256 + byte count shared between a reader and its owner.
#[derive(Default)]
pub(crate) struct Tally {
    pub hasher: Sha256,
    pub bytes: u64,
}

/// Reader that feeds everything it reads into a shared [`Tally`], optionally refusing
/// to go past a byte budget (decompression-bomb guard).
pub(crate) struct TallyReader<R> {
    inner: R,
    tally: Rc<RefCell<Tally>>,
    budget: Option<Rc<RefCell<u64>>>,
}

/// Marker carried inside an `io::Error` when the byte budget ran out.
#[derive(Debug)]
pub(crate) struct BudgetExhausted;
impl std::fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unpacked size limit exceeded")
    }
}
impl std::error::Error for BudgetExhausted {}

impl<R: Read> Read for TallyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.budget {
            let mut left = b.borrow_mut();
            if n as u64 > *left {
                return Err(io::Error::other(BudgetExhausted));
            }
            *left -= n as u64;
        }
        let mut t = self.tally.borrow_mut();
        t.hasher.update(&buf[..n]);
        t.bytes += n as u64;
        Ok(n)
    }
}

/// Compression of a layer blob, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub(crate) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// zstd decoder that continues across concatenated frames (like `zstd -d` does).
struct ZstdFrames<R: BufRead> {
    current: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
    idle: Option<R>,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(dec) = &mut self.current {
                let n = dec.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                if let Some(dec) = self.current.take() {
                    self.idle = Some(dec.into_inner());
                }
            }
            let Some(mut r) = self.idle.take() else {
                return Ok(0);
            };
            if r.fill_buf()?.is_empty() {
                self.idle = Some(r);
                return Ok(0);
            }
            let dec = ruzstd::decoding::StreamingDecoder::new(r)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
            self.current = Some(dec);
        }
    }
}

/// An open layer: `reader` yields the uncompressed tar; `finish` drains the rest and
/// checks both digests.
pub(crate) struct LayerStream {
    pub reader: Box<dyn Read>,
    blob: Rc<RefCell<Tally>>,
    diff: Rc<RefCell<Tally>>,
}

impl LayerStream {
    pub fn open(
        file: impl Read + 'static,
        budget: Option<Rc<RefCell<u64>>>,
    ) -> io::Result<LayerStream> {
        let blob = Rc::new(RefCell::new(Tally::default()));
        let diff = Rc::new(RefCell::new(Tally::default()));
        let mut raw = BufReader::with_capacity(
            256 * 1024,
            TallyReader {
                inner: file,
                tally: blob.clone(),
                budget: None,
            },
        );
        let decoded: Box<dyn Read> = match sniff(raw.fill_buf()?) {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
            Compression::Zstd => Box::new(ZstdFrames {
                current: None,
                idle: Some(raw),
            }),
        };
        let reader = Box::new(TallyReader {
            inner: decoded,
            tally: diff.clone(),
            budget,
        });
        Ok(LayerStream { reader, blob, diff })
    }

    /// Reads whatever the tar reader left (padding, trailing zero blocks) so both digests
    /// cover the whole blob, then returns (blob digest, blob size, diff_id, tar size).
    pub fn finish(mut self) -> io::Result<(Digest, u64, Digest, u64)> {
        io::copy(&mut self.reader, &mut io::sink())?;
        drop(self.reader);
        let take = |t: Rc<RefCell<Tally>>| {
            let t = t.replace(Tally::default());
            (Digest::from_hasher(t.hasher), t.bytes)
        };
        let (bd, bn) = take(self.blob);
        let (dd, dn) = take(self.diff);
        Ok((bd, bn, dd, dn))
    }
}
