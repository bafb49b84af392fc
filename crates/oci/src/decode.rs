//! Layer blob → uncompressed tar stream, with both digests computed while streaming:
//! the blob digest (catches a corrupted cache file) and the `diff_id` (catches a wrong
//! or tampered layer after decompression). Compression is detected from the magic
//! bytes (media types lie: Docker's v2s2 "tar.gzip" is sometimes plain tar).

use crate::digest::Digest;
use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

/// Running sha256 (unless not wanted) + byte count shared between a reader and its owner.
#[derive(Default)]
pub(crate) struct Tally {
    pub hasher: Option<Sha256>,
    pub bytes: u64,
}

impl Tally {
    fn hashing() -> Tally {
        Tally {
            hasher: Some(Sha256::new()),
            bytes: 0,
        }
    }

    fn digest(self) -> Option<Digest> {
        self.hasher.map(Digest::from_hasher)
    }
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
        if let Some(h) = &mut t.hasher {
            h.update(&buf[..n]);
        }
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

/// Size of the decompressed chunks handed from the decoding thread to the reader.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight: bounds memory (about 1 MiB) while letting both threads run.
const CHUNKS_IN_FLIGHT: usize = 4;

/// An open layer: `reader` yields the uncompressed tar; `finish` drains the rest and
/// returns both digests.
///
/// Decompression (and the blob digest) run on a thread of their own, a few chunks ahead
/// of the reader, so inflating overlaps with what the caller does with the tar (parsing,
/// the `diff_id` digest, writing the filesystem): on two cores a pull takes about the
/// time of the slower half instead of the sum.
pub(crate) struct LayerStream {
    pub reader: Box<dyn Read>,
    diff: Rc<RefCell<Tally>>,
    /// Joined by `finish`, or on drop: no decoding thread outlives its stream.
    decoder: Option<std::thread::JoinHandle<Decoded>>,
}

/// What the decoding thread returns: the blob digest (when hashed) and size.
type Decoded = io::Result<(Option<Digest>, u64)>;

impl Drop for LayerStream {
    /// A stream dropped early (an error in the caller) closes the channel first, so the
    /// decoder stops at its next chunk, then waits for it.
    fn drop(&mut self) {
        self.reader = Box::new(io::empty());
        if let Some(decoder) = self.decoder.take() {
            let _ = decoder.join();
        }
    }
}

impl LayerStream {
    /// Opens a layer; `hash_blob` false skips the blob digest (already verified).
    pub fn open(
        file: impl Read + Send + 'static,
        hash_blob: bool,
        budget: Option<Rc<RefCell<u64>>>,
    ) -> io::Result<LayerStream> {
        let (tx, rx) = std::sync::mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        let decoder = std::thread::Builder::new()
            .name("layer-decode".into())
            .spawn(move || decode(file, hash_blob, &tx))?;
        let diff = Rc::new(RefCell::new(Tally::hashing()));
        let reader = Box::new(TallyReader {
            inner: ChunkReader {
                chunks: rx,
                current: Vec::new(),
                at: 0,
            },
            tally: diff.clone(),
            budget,
        });
        Ok(LayerStream {
            reader,
            diff,
            decoder: Some(decoder),
        })
    }

    /// Reads whatever the tar reader left (padding, trailing zero blocks) so both digests
    /// cover the whole blob, then returns (blob digest if hashed, blob size, diff_id, tar
    /// size).
    pub fn finish(mut self) -> io::Result<(Option<Digest>, u64, Digest, u64)> {
        io::copy(&mut self.reader, &mut io::sink())?;
        self.reader = Box::new(io::empty());
        let decoder = self
            .decoder
            .take()
            .ok_or_else(|| io::Error::other("the layer stream was already finished"))?;
        let (bd, bn) = decoder
            .join()
            .map_err(|_| io::Error::other("the layer decoding thread panicked"))??;
        let t = self.diff.replace(Tally::default());
        let tar_bytes = t.bytes;
        let diff_id = t
            .digest()
            .ok_or_else(|| io::Error::other("the diff_id was not computed"))?;
        Ok((bd, bn, diff_id, tar_bytes))
    }
}

/// The decoding thread: blob → (digest) → decompressor → chunks. An error is sent in
/// order, where the reader would have met it; a reader that went away stops the work.
fn decode(
    file: impl Read,
    hash_blob: bool,
    chunks: &std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
) -> Decoded {
    let blob = Rc::new(RefCell::new(if hash_blob {
        Tally::hashing()
    } else {
        Tally::default()
    }));
    let result = (|| {
        let mut raw = BufReader::with_capacity(
            CHUNK,
            TallyReader {
                inner: file,
                tally: blob.clone(),
                budget: None,
            },
        );
        let mut decoded: Box<dyn Read> = match sniff(raw.fill_buf()?) {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
            Compression::Zstd => Box::new(ZstdFrames {
                current: None,
                idle: Some(raw),
            }),
        };
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                match decoded.read(&mut chunk[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Ok(true);
            }
            chunk.truncate(filled);
            if chunks.send(Ok(chunk)).is_err() {
                return Ok(false);
            }
        }
    })();
    match result {
        Ok(_) => {
            let t = blob.replace(Tally::default());
            let bytes = t.bytes;
            Ok((t.digest(), bytes))
        }
        Err(e) => {
            let kind = e.kind();
            // The reader gets the error itself; `finish` is never reached after it.
            let _ = chunks.send(Err(e));
            Err(io::Error::new(kind, "layer decoding failed"))
        }
    }
}

/// The reading end: yields the decoding thread's chunks in order; the end of the channel
/// is the end of the tar (a decoder that died says so through [`LayerStream::finish`]).
struct ChunkReader {
    chunks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.at == self.current.len() {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Several chunks' worth, not a multiple of the chunk size.
    fn sample() -> Vec<u8> {
        (0..(3 * CHUNK + 4321))
            .map(|i| (i * 7 % 251) as u8)
            .collect()
    }

    #[test]
    fn chunks_arrive_whole_and_in_order_with_both_digests() {
        let data = sample();
        let blob = gzip(&data);
        let mut s = LayerStream::open(std::io::Cursor::new(blob.clone()), true, None).unwrap();
        // Read a little, in odd sizes, then let finish drain the rest.
        let mut head = vec![0u8; 1000];
        s.reader.read_exact(&mut head).unwrap();
        assert_eq!(head, data[..1000]);
        let (bd, bn, dd, dn) = s.finish().unwrap();
        assert_eq!((bd, bn), (Some(Digest::of(&blob)), blob.len() as u64));
        assert_eq!((dd, dn), (Digest::of(&data), data.len() as u64));
    }

    #[test]
    fn a_corrupt_stream_is_an_error_not_a_short_tar() {
        let data = sample();
        let mut blob = gzip(&data);
        blob.truncate(blob.len() / 2);
        let mut s = LayerStream::open(std::io::Cursor::new(blob), true, None).unwrap();
        let mut out = Vec::new();
        assert!(s.reader.read_to_end(&mut out).is_err());
        assert!(out.len() < data.len());
    }

    #[test]
    fn the_budget_stops_a_bomb_on_the_reading_side() {
        let data = sample();
        let budget = Rc::new(RefCell::new(CHUNK as u64));
        let mut s =
            LayerStream::open(std::io::Cursor::new(gzip(&data)), true, Some(budget)).unwrap();
        let err = s.reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(
            err.get_ref().is_some_and(|e| e.is::<BudgetExhausted>()),
            "{err}"
        );
    }

    #[test]
    fn a_reader_that_stops_early_releases_the_decoder() {
        let data: Vec<u8> = (0..(64 * CHUNK)).map(|i| (i % 13) as u8).collect();
        let mut s = LayerStream::open(std::io::Cursor::new(gzip(&data)), true, None).unwrap();
        let mut head = [0u8; 10];
        s.reader.read_exact(&mut head).unwrap();
        // Dropping closes the channel, the decoder's next send fails, and drop joins it:
        // this returns (rather than hanging on a full channel) and leaves no thread behind.
        drop(s);
    }
}
