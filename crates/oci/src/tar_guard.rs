//! [`TarGuard`]: a `Read` in front of a tar stream that refuses, while the bytes pass, the
//! extension records the tar crate would otherwise buffer whole.
//!
//! The tar crate reads the body of a GNU long name (`L`), GNU long link (`K`) or PAX
//! (`x`) header into a `Vec` before it yields the entry they describe, and keeps one list
//! item per region of a GNU sparse (`S`) file's extension blocks. A hostile archive
//! declaring a 1 GiB long name makes its reader allocate 1 GiB. The guard follows the
//! archive's layout as the bytes go by (512-byte headers, bodies rounded up to 512
//! bytes, octal or base-256 sizes, a PAX `size` record overriding the next entry's size,
//! sparse extension blocks) and fails the read that completes an offending header with
//! [`io::ErrorKind::InvalidData`], so the tar crate never sees that header.
//!
//! The layout rules mirror tar 0.4's reader (headers are parsed with `tar::Header`
//! itself, so sizes and checksums are read the same way): an all-zero block is a header
//! with no body; a block whose checksum does not match ends the tracking, because the tar
//! crate refuses such a header and reads nothing of the archive after it. `g` bodies are
//! bounded too although the tar crate does not buffer them (a consumer might).

use std::io::{self, Read};

/// The largest extension body accepted by default: real long names and PAX records are
/// a few hundred bytes; Linux paths end at 4 KiB.
pub const DEFAULT_MAX_EXTENSION: u64 = 64 * 1024;

const BLOCK: usize = 512;
/// Offset of `isextended` in a GNU sparse extension block (after 21 sparse records).
const EXT_IS_EXTENDED: usize = 504;

/// A tar stream whose extension headers are checked against a size limit as it is read.
pub struct TarGuard<R> {
    inner: R,
    max_extension: u64,
    state: State,
    /// The header or sparse extension block being assembled.
    block: tar::Header,
    filled: usize,
    /// A PAX `size` record waiting for the entry it describes.
    pax_size: Option<u64>,
    /// The body of a PAX `x` header as it passes (its declared size, at most
    /// `max_extension`, without the padding).
    pax_body: Vec<u8>,
    pax_declared: usize,
    /// The first refusal, repeated by every later read.
    failed: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Assembling a header block.
    Header,
    /// Assembling GNU sparse extension blocks; `blocks` seen so far, then `body` bytes.
    SparseExt { blocks: u64, body: u64 },
    /// Passing `left` bytes of a body (padding included); `pax` keeps them.
    Body { left: u64, pax: bool },
    /// After a header the tar crate refuses: bytes pass unexamined.
    Untracked,
}

impl<R> TarGuard<R> {
    /// Guards `inner`, refusing extension bodies (and sparse extension blocks) larger than
    /// `max_extension` bytes.
    pub fn new(inner: R, max_extension: u64) -> Self {
        TarGuard {
            inner,
            max_extension,
            state: State::Header,
            block: tar::Header::new_old(),
            filled: 0,
            pax_size: None,
            pax_body: Vec::new(),
            pax_declared: 0,
            failed: None,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Follows the archive over `bytes`, which are about to be handed to the reader.
    fn observe(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            match self.state {
                State::Untracked => return Ok(()),
                State::Header | State::SparseExt { .. } => {
                    let take = (BLOCK - self.filled).min(bytes.len());
                    self.block.as_mut_bytes()[self.filled..self.filled + take]
                        .copy_from_slice(&bytes[..take]);
                    self.filled += take;
                    bytes = &bytes[take..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.state = match self.state {
                            State::SparseExt { blocks, body } => self.sparse_block(blocks, body)?,
                            _ => self.header()?,
                        };
                    }
                }
                State::Body { left, pax } => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    if pax {
                        let want = self.pax_declared - self.pax_body.len();
                        self.pax_body.extend_from_slice(&bytes[..take.min(want)]);
                    }
                    bytes = &bytes[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        if pax {
                            self.pax_size = pax_size(&self.pax_body);
                            self.pax_body = Vec::new();
                        }
                        State::Header
                    } else {
                        State::Body { left, pax }
                    };
                }
            }
        }
        Ok(())
    }

    /// What follows the header just assembled.
    fn header(&mut self) -> Result<State, String> {
        let header = &self.block;
        if header.as_bytes().iter().all(|b| *b == 0) {
            return Ok(State::Header);
        }
        if !checksum_ok(header) {
            return Ok(State::Untracked);
        }
        let Ok(declared) = header.entry_size() else {
            return Ok(State::Untracked);
        };
        let kind = header.as_bytes()[156];
        // The tar crate applies (and buffers) extensions only in ustar or GNU headers.
        let recognized = header.as_ustar().is_some() || header.as_gnu().is_some();
        if let Some(what) = extension_name(kind)
            && declared > self.max_extension
        {
            return Err(format!(
                "tar extension header ({what}) declares {declared} bytes; limit is {}",
                self.max_extension
            ));
        }
        // A PAX size describes the next entry that is not itself an extension header;
        // an entry that is not consumed as an extension ends the set.
        let is_extension = extension_name(kind).is_some();
        let size = match self.pax_size {
            Some(pax) if !is_extension => pax,
            _ => declared,
        };
        let consumed_as_extension = recognized && matches!(kind, b'L' | b'K' | b'x');
        if !consumed_as_extension {
            self.pax_size = None;
        }
        let body = round_up(size)?;
        let pax = recognized && kind == b'x';
        if pax {
            // `declared` is at most `max_extension` here.
            self.pax_declared = usize::try_from(declared).unwrap_or(0);
            self.pax_body = Vec::with_capacity(self.pax_declared);
        }
        let sparse_ext = kind == b'S' && header.as_gnu().is_some_and(|g| g.is_extended());
        Ok(if sparse_ext {
            State::SparseExt { blocks: 0, body }
        } else {
            body_state(body, pax)
        })
    }

    /// One GNU sparse extension block assembled: another follows, or the body.
    fn sparse_block(&mut self, blocks: u64, body: u64) -> Result<State, String> {
        let blocks = blocks + 1;
        let bytes = blocks * BLOCK as u64;
        if bytes > self.max_extension {
            return Err(format!(
                "tar GNU sparse header has more than {} extension blocks ({bytes} bytes); \
                 limit is {}",
                blocks - 1,
                self.max_extension
            ));
        }
        Ok(if self.block.as_bytes()[EXT_IS_EXTENDED] == 1 {
            State::SparseExt { blocks, body }
        } else {
            body_state(body, false)
        })
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(message) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, message.clone()));
        }
        let n = self.inner.read(buf)?;
        if let Err(message) = self.observe(&buf[..n]) {
            self.failed = Some(message.clone());
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
        Ok(n)
    }
}

fn body_state(body: u64, pax: bool) -> State {
    if body == 0 {
        State::Header
    } else {
        State::Body { left: body, pax }
    }
}

fn extension_name(kind: u8) -> Option<&'static str> {
    match kind {
        b'L' => Some("GNU long name"),
        b'K' => Some("GNU long link"),
        b'x' => Some("PAX extended header"),
        b'g' => Some("PAX global header"),
        _ => None,
    }
}

fn round_up(size: u64) -> Result<u64, String> {
    size.checked_add(BLOCK as u64 - 1)
        .map(|s| s & !(BLOCK as u64 - 1))
        .ok_or_else(|| format!("tar entry size {size} overflows"))
}

/// The tar crate's checksum rule: the unsigned sum of the header with the checksum field
/// counted as spaces.
fn checksum_ok(header: &tar::Header) -> bool {
    let bytes = header.as_bytes();
    let sum = bytes[..148]
        .iter()
        .chain(&bytes[156..])
        .fold(0u32, |a, b| a + u32::from(*b))
        + 8 * 32;
    header.cksum().is_ok_and(|c| c == sum)
}

/// The `size` record of a PAX body, read as the tar crate reads it (the first malformed
/// record ends the search).
fn pax_size(body: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(body) {
        let record = record.ok()?;
        if record.key() != Ok("size") {
            continue;
        }
        return record.value().ok()?.parse().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `inner` a few bytes at a time, so headers arrive split across reads.
    struct Trickle<R>(R, usize);

    impl<R: Read> Read for Trickle<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.read(&mut buf[..n])
        }
    }

    fn header(kind: tar::EntryType, name: &str, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).expect("name");
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        h
    }

    fn padded(out: &mut Vec<u8>, body: &[u8]) {
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }

    /// An archive with long names, a long link target, PAX records, a directory, a
    /// symlink and files of several sizes, made by the tar crate.
    fn honest_archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("dir/{}/file", "n".repeat(300));
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(700);
        b.append_data(&mut h, &long, &[1u8; 700][..]).expect("long");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", "t".repeat(200))
            .expect("link");
        b.append_pax_extensions([("comment", "hello".as_bytes()), ("mtime", b"1.5")])
            .expect("pax");
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o600);
        h.set_size(512);
        b.append_data(&mut h, "exact", &[2u8; 512][..])
            .expect("file");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        b.append_data(&mut h, "d/", io::empty()).expect("dir");
        b.into_inner().expect("finish")
    }

    fn names(reader: impl Read) -> io::Result<Vec<String>> {
        let mut ar = tar::Archive::new(reader);
        let mut out = Vec::new();
        for e in ar.entries()? {
            let mut e = e?;
            out.push(e.path()?.to_string_lossy().into_owned());
            io::copy(&mut e, &mut io::sink())?;
        }
        Ok(out)
    }

    #[test]
    fn honest_archives_pass_byte_identical() {
        let archive = honest_archive();
        for step in [1, 7, 512, 4096] {
            let mut got = Vec::new();
            TarGuard::new(Trickle(&archive[..], step), DEFAULT_MAX_EXTENSION)
                .read_to_end(&mut got)
                .expect("read");
            assert_eq!(got, archive, "step {step}");
        }
        let guarded = names(TarGuard::new(&archive[..], DEFAULT_MAX_EXTENSION)).expect("parse");
        assert_eq!(guarded, names(&archive[..]).expect("parse"));
        assert_eq!(guarded.len(), 4);
    }

    /// A header of `kind` declaring `size` bytes, then zeros forever (read lazily).
    fn declared(kind: tar::EntryType, size: u64) -> Counted<impl Read> {
        let h = header(kind, "././@LongLink", size);
        Counted(
            io::Cursor::new(h.as_bytes().to_vec()).chain(io::repeat(0)),
            0,
        )
    }

    struct Counted<R>(R, u64);

    impl<R: Read> Read for Counted<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 += n as u64;
            Ok(n)
        }
    }

    #[test]
    fn oversized_extension_headers_are_refused_before_their_body() {
        for (kind, what) in [
            (tar::EntryType::GNULongName, "GNU long name"),
            (tar::EntryType::GNULongLink, "GNU long link"),
            (tar::EntryType::XHeader, "PAX extended header"),
            (tar::EntryType::XGlobalHeader, "PAX global header"),
        ] {
            let mut guard = TarGuard::new(Trickle(declared(kind, 1 << 30), 100), 4096);
            let e = names(&mut guard).expect_err(what);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}: {e}");
            assert_eq!(
                e.to_string(),
                format!("tar extension header ({what}) declares 1073741824 bytes; limit is 4096")
            );
            assert!(guard.get_ref().0.1 <= 512, "read only the header");
            // Later reads keep failing.
            assert!(guard.read(&mut [0u8; 16]).is_err());
        }
        // At the limit is fine: the tar crate gets a 4096-byte long name.
        let mut ok = Vec::new();
        let mut h = header(tar::EntryType::GNULongName, "././@LongLink", 4096);
        ok.extend_from_slice(h.as_bytes());
        padded(&mut ok, &[b'a'; 4096]);
        h = header(tar::EntryType::Regular, "short", 0);
        ok.extend_from_slice(h.as_bytes());
        ok.extend_from_slice(&[0; 1024]);
        let got = names(TarGuard::new(&ok[..], 4096)).expect("at the limit");
        assert_eq!(got, ["a".repeat(4096)]);
    }

    fn set_base256_size(h: &mut tar::Header, size: u64) {
        let field = &mut h.as_old_mut().size;
        field.fill(0);
        field[4..].copy_from_slice(&size.to_be_bytes());
        field[0] |= 0x80;
        h.set_cksum();
    }

    #[test]
    fn base256_sizes_are_followed() {
        let mut ar = Vec::new();
        let mut h = header(tar::EntryType::Regular, "big", 0);
        set_base256_size(&mut h, 1000);
        ar.extend_from_slice(h.as_bytes());
        padded(&mut ar, &[3u8; 1000]);
        let mut after = ar.clone();
        ar.extend_from_slice(header(tar::EntryType::Regular, "next", 0).as_bytes());
        ar.extend_from_slice(&[0; 1024]);
        assert_eq!(
            names(TarGuard::new(&ar[..], 4096)).expect("honest"),
            ["big", "next"]
        );
        // The guard knows where the next header is: an oversized one there is caught.
        after.extend_from_slice(header(tar::EntryType::GNULongName, "x", 1 << 20).as_bytes());
        after.extend_from_slice(&[0; 1024]);
        let e = names(TarGuard::new(&after[..], 4096)).expect_err("caught");
        assert!(e.to_string().contains("declares 1048576"), "{e}");
        // A base-256 extension size over the limit.
        let mut h = header(tar::EntryType::GNULongName, "x", 0);
        set_base256_size(&mut h, 1 << 40);
        let e = names(TarGuard::new(
            io::Cursor::new(h.as_bytes().to_vec()).chain(io::repeat(0)),
            4096,
        ))
        .expect_err("base-256 long name");
        assert!(e.to_string().contains("declares 1099511627776"), "{e}");
    }

    /// A GNU sparse file: 10 regions of 512 bytes (4 in the header, 6 in one extension
    /// block), real size 9.5 KiB.
    fn sparse_archive(ext_blocks: usize) -> Vec<u8> {
        let mut h = header(tar::EntryType::GNUSparse, "sparse", 0);
        let regions: Vec<(u64, u64)> = (0..10).map(|i| (i * 1024, 512)).collect();
        let stored: u64 = regions.iter().map(|r| r.1).sum();
        {
            let gnu = h.as_gnu_mut().expect("gnu");
            for (slot, (off, len)) in gnu.sparse.iter_mut().zip(&regions[..4]) {
                slot.set_offset(*off);
                slot.set_length(*len);
            }
            gnu.set_real_size(9 * 1024 + 512);
            gnu.set_is_extended(true);
        }
        h.set_size(stored);
        h.set_cksum();
        let mut ar = h.as_bytes().to_vec();
        for i in 0..ext_blocks {
            let mut ext = tar::GnuExtSparseHeader::new();
            if i == 0 {
                for (slot, (off, len)) in ext.sparse.iter_mut().zip(&regions[4..]) {
                    slot.set_offset(*off);
                    slot.set_length(*len);
                }
            }
            ext.isextended[0] = u8::from(i + 1 < ext_blocks);
            ar.extend_from_slice(ext.as_bytes());
        }
        padded(&mut ar, &vec![9u8; stored as usize]);
        ar
    }

    #[test]
    fn sparse_extension_blocks_are_followed_and_bounded() {
        let mut ar = sparse_archive(1);
        let mut hostile = ar.clone();
        ar.extend_from_slice(header(tar::EntryType::Regular, "next", 0).as_bytes());
        ar.extend_from_slice(&[0; 1024]);
        let mut got = Vec::new();
        TarGuard::new(Trickle(&ar[..], 100), 4096)
            .read_to_end(&mut got)
            .expect("honest");
        assert_eq!(got, ar);
        assert_eq!(
            names(TarGuard::new(&ar[..], 4096)).expect("parse"),
            ["sparse", "next"]
        );
        hostile.extend_from_slice(header(tar::EntryType::XHeader, "x", 1 << 20).as_bytes());
        let e = names(TarGuard::new(&hostile[..], 4096)).expect_err("after sparse");
        assert!(e.to_string().contains("PAX extended header"), "{e}");
        // Endless extension blocks: refused at the limit's worth.
        let e = names(TarGuard::new(&sparse_archive(20)[..], 4096)).expect_err("too many");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("GNU sparse"), "{e}");
    }

    fn pax(records: &[(&str, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = format!(" {k}={v}\n");
            let mut len = rest.len() + 1;
            while format!("{len}{rest}").len() != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len}{rest}").as_bytes());
        }
        let mut out = header(tar::EntryType::XHeader, "pax", body.len() as u64)
            .as_bytes()
            .to_vec();
        padded(&mut out, &body);
        out
    }

    #[test]
    fn a_pax_size_moves_the_next_header_as_it_does_for_the_tar_crate() {
        // The file's header says 0 bytes, the PAX record 1024: what looks like an
        // oversized long-name header at the header's offset is file data.
        let mut ar = pax(&[("size", "1024")]);
        ar.extend_from_slice(header(tar::EntryType::Regular, "f", 0).as_bytes());
        let mut data = header(tar::EntryType::GNULongName, "decoy", 1 << 30)
            .as_bytes()
            .to_vec();
        data.resize(1024, 0);
        ar.extend_from_slice(&data);
        let mut hostile = ar.clone();
        ar.extend_from_slice(&[0; 1024]);
        assert_eq!(names(TarGuard::new(&ar[..], 4096)).expect("data"), ["f"]);
        // And the real next header, after those 1024 bytes, is checked.
        hostile.extend_from_slice(header(tar::EntryType::GNULongLink, "x", 1 << 20).as_bytes());
        let e = names(TarGuard::new(&hostile[..], 4096)).expect_err("next header");
        assert!(e.to_string().contains("GNU long link"), "{e}");

        // The other way round: the header says 1024, the record 0, and the long-name
        // header right after is a header to the tar crate.
        let mut ar = pax(&[("size", "0")]);
        let h = header(tar::EntryType::Regular, "g", 1024);
        ar.extend_from_slice(h.as_bytes());
        ar.extend_from_slice(header(tar::EntryType::GNULongName, "x", 1 << 30).as_bytes());
        ar.resize(ar.len() + 2048, 0);
        let e = names(TarGuard::new(&ar[..], 4096)).expect_err("hidden header");
        assert!(e.to_string().contains("GNU long name"), "{e}");
    }

    #[test]
    fn a_bad_checksum_ends_the_tracking() {
        let mut h = header(tar::EntryType::GNULongName, "x", 1 << 30);
        h.as_old_mut().cksum = *b"0000000\0";
        let mut got = Vec::new();
        let mut guard = TarGuard::new(io::Cursor::new(h.as_bytes().to_vec()), 4096);
        guard.read_to_end(&mut got).expect("passes");
        assert_eq!(got.len(), 512);
        let e = names(TarGuard::new(&h.as_bytes()[..], 4096)).expect_err("the tar crate refuses");
        assert!(e.to_string().contains("checksum"), "{e}");
    }
}
