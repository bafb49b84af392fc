//! Decoders for what kernels come wrapped in: bzImage payloads (gzip, zstd, xz, lz4) and
//! `.deb` members (gzip, xz, zstd). Formats are sniffed from magic bytes; every decoder is
//! bounded, so a hostile input cannot make us allocate without limit.

use std::io::Read;

/// Compression of a byte stream, from its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    /// The LZ4 "legacy" frame the kernel build uses (`lz4 -l`).
    Lz4Legacy,
    Bzip2,
    Lzma,
    Lzo,
    None,
}

impl Compression {
    pub fn sniff(data: &[u8]) -> Compression {
        match data {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Xz,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            [0x02, 0x21, 0x4c, 0x18, ..] => Compression::Lz4Legacy,
            [b'B', b'Z', b'h', ..] => Compression::Bzip2,
            [0x5d, 0, 0, ..] => Compression::Lzma,
            [0x89, b'L', b'Z', b'O', ..] => Compression::Lzo,
            _ => Compression::None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lz4Legacy => "lz4",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Lzo => "lzo",
            Compression::None => "none",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("{0} compression is not supported (banger reads gzip, xz, zstd and lz4)")]
    Unsupported(&'static str),
    #[error("corrupt {format} data: {message}")]
    Corrupt {
        format: &'static str,
        message: String,
    },
    #[error("decompressed data exceeds {limit} bytes")]
    TooLarge { limit: u64 },
}

/// Largest xz dictionary we accept (the kernel uses 32 MiB, `xz -9` 64 MiB).
const XZ_MAX_DICT: usize = 256 << 20;

/// A streaming decoder for `.deb` members and layer-like streams. A single stream/frame
/// is decoded; trailing bytes are ignored.
pub fn reader<R: Read + Send + 'static>(
    compression: Compression,
    inner: R,
) -> Result<Box<dyn Read + Send>, DecompressError> {
    Ok(match compression {
        Compression::None => Box::new(inner),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(inner)),
        Compression::Xz => Box::new(xz4rust::XzReader::new_with_buffer_size_and_decoder(
            inner,
            std::num::NonZeroUsize::new(64 << 10).unwrap_or(std::num::NonZeroUsize::MIN),
            xz4rust::XzDecoder::in_heap_with_alloc_dict_size(1 << 20, XZ_MAX_DICT),
        )),
        Compression::Zstd => {
            Box::new(ruzstd::decoding::StreamingDecoder::new(inner).map_err(|e| {
                DecompressError::Corrupt {
                    format: "zstd",
                    message: e.to_string(),
                }
            })?)
        }
        other => return Err(DecompressError::Unsupported(other.name())),
    })
}

/// Decodes a whole in-memory buffer (a bzImage payload), at most `limit` bytes out.
pub fn decode_all(data: &[u8], limit: u64) -> Result<Vec<u8>, DecompressError> {
    let compression = Compression::sniff(data);
    if compression == Compression::Lz4Legacy {
        return lz4_legacy(data, limit);
    }
    if compression == Compression::None {
        return Err(DecompressError::Unsupported("unknown"));
    }
    let owned = data.to_vec();
    let r = reader(compression, std::io::Cursor::new(owned))?;
    let mut out = Vec::new();
    let read = r
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Corrupt {
            format: compression.name(),
            message: e.to_string(),
        })?;
    if read as u64 > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(out)
}

const LZ4_MAGIC: u32 = 0x184c_2102;
/// Uncompressed size of each legacy-frame block.
const LZ4_BLOCK: usize = 8 << 20;

/// The legacy LZ4 frame: magic, then blocks of `u32 LE compressed size` + LZ4 block, each
/// decompressing to at most 8 MiB. The kernel appends its uncompressed size as 4 more
/// bytes, which reads as an impossible block size: that (or the input's end) ends it.
fn lz4_legacy(data: &[u8], limit: u64) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |message: &str| DecompressError::Corrupt {
        format: "lz4",
        message: message.to_string(),
    };
    let mut out = Vec::new();
    let mut pos = 4;
    let bound = LZ4_BLOCK + LZ4_BLOCK / 255 + 16;
    while let Some(size_bytes) = data.get(pos..pos + 4) {
        let size = u32::from_le_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]]);
        if size == LZ4_MAGIC {
            pos += 4;
            continue;
        }
        let size = size as usize;
        let rest = data.len() - pos - 4;
        if size > rest || size > bound || size == 0 {
            if out.is_empty() {
                return Err(corrupt("first block size is out of range"));
            }
            break;
        }
        let block = &data[pos + 4..pos + 4 + size];
        pos += 4 + size;
        lz4_block(block, &mut out, LZ4_BLOCK).map_err(|m| corrupt(&m))?;
        if out.len() as u64 > limit {
            return Err(DecompressError::TooLarge { limit });
        }
    }
    if out.is_empty() {
        return Err(corrupt("no blocks"));
    }
    Ok(out)
}

/// Decodes one independent LZ4 block, appending at most `max` bytes to `out`.
fn lz4_block(src: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), String> {
    let start = out.len();
    let mut i = 0;
    let byte = |i: usize| src.get(i).copied().ok_or("block ends early");
    let length = |i: &mut usize, mut n: usize| -> Result<usize, String> {
        loop {
            let b = byte(*i)?;
            *i += 1;
            n += b as usize;
            if b != 255 {
                return Ok(n);
            }
        }
    };
    loop {
        let token = byte(i)?;
        i += 1;
        let mut literals = (token >> 4) as usize;
        if literals == 15 {
            literals = length(&mut i, literals)?;
        }
        let lit = src
            .get(i..i + literals)
            .ok_or("literals run past the block")?;
        out.extend_from_slice(lit);
        i += literals;
        if out.len() - start > max {
            return Err("block decodes to more than 8 MiB".into());
        }
        if i == src.len() {
            return Ok(());
        }
        let offset = u16::from_le_bytes([byte(i)?, byte(i + 1)?]) as usize;
        i += 2;
        let mut matched = (token & 15) as usize;
        if matched == 15 {
            matched = length(&mut i, matched)?;
        }
        matched += 4;
        if offset == 0 || offset > out.len() - start {
            return Err("match offset points before the block".into());
        }
        if out.len() - start + matched > max {
            return Err("block decodes to more than 8 MiB".into());
        }
        let from = out.len() - offset;
        if offset >= matched {
            out.extend_from_within(from..from + matched);
        } else {
            for k in 0..matched {
                let b = out[from + k];
                out.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magics() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::sniff(b"\xfd7zXZ\0"), Compression::Xz);
        assert_eq!(
            Compression::sniff(&[2, 0x21, 0x4c, 0x18]),
            Compression::Lz4Legacy
        );
        assert_eq!(Compression::sniff(b"hello"), Compression::None);
    }

    #[test]
    fn lz4_block_with_overlapping_match() {
        // "abc" literal, then a match of 9 at offset 3 → "abcabcabcabc", then literal "!".
        let block = [0x35, b'a', b'b', b'c', 3, 0, 0x10, b'!'];
        let mut out = Vec::new();
        lz4_block(&block, &mut out, 100).expect("decode");
        assert_eq!(out, b"abcabcabcabc!");
    }

    #[test]
    fn lz4_garbage_is_an_error_not_a_panic() {
        for data in [
            &[2u8, 0x21, 0x4c, 0x18][..],
            &[2, 0x21, 0x4c, 0x18, 3, 0, 0, 0, 0xff, 0xff, 0xff],
            &[2, 0x21, 0x4c, 0x18, 4, 0, 0, 0, 0x0f, 9, 0, 0],
        ] {
            assert!(decode_all(data, 1 << 20).is_err());
        }
    }

    #[test]
    fn gzip_round_trip_and_limit() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&[7u8; 10_000]).expect("write");
        let gz = e.finish().expect("finish");
        assert_eq!(decode_all(&gz, 1 << 20).expect("decode"), vec![7u8; 10_000]);
        assert!(matches!(
            decode_all(&gz, 100),
            Err(DecompressError::TooLarge { .. })
        ));
    }
}
