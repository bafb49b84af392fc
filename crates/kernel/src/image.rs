//! What a kernel file is, read from its bytes: an x86 bzImage (setup header, compressed
//! payload, version string), an ELF `vmlinux` (machine, `Linux version` banner), or an
//! arm64 `Image` (its header's magic), bare or compressed as Debian's arm64 `vmlinuz` is;
//! and the extraction of the uncompressed kernel from the compressed ones.

use crate::decompress::{self, Compression, DecompressError};

/// Largest vmlinux we extract (real ones are tens of MiB).
const MAX_VMLINUX: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum KernelImageError {
    #[error(
        "not a Linux kernel image ({0}); expected an x86 bzImage (vmlinuz), an ELF vmlinux, or an arm64 Image (bare or compressed)"
    )]
    NotAKernel(String),
    #[error("the bzImage's setup header is damaged: {0}")]
    BadHeader(String),
    #[error("cannot extract vmlinux from the bzImage: {0}")]
    Payload(#[from] DecompressError),
    #[error("the bzImage's payload did not decompress to an ELF vmlinux")]
    PayloadNotElf,
    #[error("not a compressed kernel: a bzImage or a compressed arm64 Image is needed")]
    NotCompressed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// x86 bzImage; `payload` is the compression of the embedded vmlinux.
    BzImage {
        payload: Compression,
    },
    Elf,
    /// An arm64 `Image`: the uncompressed kernel that QEMU and Firecracker boot there.
    Arm64Image,
    /// An arm64 `Image` compressed whole (`Image.gz`; Debian's arm64 `vmlinuz`).
    CompressedArm64Image {
        compression: Compression,
    },
}

impl Format {
    /// An uncompressed kernel (stored as `vmlinux`), as opposed to a compressed one
    /// (`vmlinuz`) that one is extracted from.
    pub fn is_uncompressed(&self) -> bool {
        matches!(self, Format::Elf | Format::Arm64Image)
    }
}

/// What a kernel file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub format: Format,
    /// Release (`6.1.0-28-cloud-amd64`), when the image carries it.
    pub version: Option<String>,
    /// The full version string (`6.1.0-28-cloud-amd64 (debian-kernel@…) #1 SMP …`).
    pub banner: Option<String>,
    /// Debian/OCI architecture name, when known (ELF machine; x86-64 bzImage flag).
    pub arch: Option<String>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

pub fn is_elf(b: &[u8]) -> bool {
    b.starts_with(b"\x7fELF")
}

fn is_bzimage(b: &[u8]) -> bool {
    b.get(0x202..0x206) == Some(b"HdrS")
}

/// The arm64 boot header's magic, `ARM\x64` at offset 0x38.
fn is_arm64_image(b: &[u8]) -> bool {
    b.get(0x38..0x3c) == Some(b"ARM\x64")
}

/// Largest kernel decompressed just to find out what it is.
const MAX_SNIFF: u64 = 256 << 20;

/// Identifies a kernel file and reads its version and architecture.
pub fn inspect(b: &[u8]) -> Result<KernelInfo, KernelImageError> {
    if is_elf(b) {
        let (banner, version) = banner_of(b).unzip();
        return Ok(KernelInfo {
            format: Format::Elf,
            version,
            banner,
            arch: elf_arch(b),
        });
    }
    if is_arm64_image(b) {
        let (banner, version) = banner_of(b).unzip();
        return Ok(KernelInfo {
            format: Format::Arm64Image,
            version,
            banner,
            arch: Some("arm64".into()),
        });
    }
    if !is_bzimage(b) {
        let what = match Compression::sniff(b) {
            Compression::None => "no bzImage header, no ELF or arm64 Image magic".to_string(),
            c => {
                // A compressed arm64 Image is a kernel; any other stream is not.
                if let Ok(inner) = decompress::decode_all(b, MAX_SNIFF)
                    && is_arm64_image(&inner)
                {
                    let (banner, version) = banner_of(&inner).unzip();
                    return Ok(KernelInfo {
                        format: Format::CompressedArm64Image { compression: c },
                        version,
                        banner,
                        arch: Some("arm64".into()),
                    });
                }
                format!(
                    "a bare {} stream that holds no arm64 Image; decompress it first or pass the bzImage",
                    c.name()
                )
            }
        };
        return Err(KernelImageError::NotAKernel(what));
    }
    let payload = payload_of(b)?;
    let (banner, version) = header_version(b).unzip();
    // xloadflags bit 0: XLF_KERNEL_64 (boot protocol 2.12+).
    let protocol = u16_at(b, 0x206).unwrap_or(0);
    let arch = (protocol >= 0x020c)
        .then(|| u16_at(b, 0x236))
        .flatten()
        .map(|flags| if flags & 1 != 0 { "amd64" } else { "386" }.to_string());
    Ok(KernelInfo {
        format: Format::BzImage {
            payload: Compression::sniff(payload),
        },
        version,
        banner,
        arch,
    })
}

/// The compressed payload inside a bzImage (boot protocol 2.08+).
fn payload_of(b: &[u8]) -> Result<&[u8], KernelImageError> {
    let bad = |m: &str| KernelImageError::BadHeader(m.to_string());
    let protocol = u16_at(b, 0x206).ok_or_else(|| bad("truncated"))?;
    if protocol < 0x0208 {
        return Err(bad(&format!(
            "boot protocol {}.{:02} predates payload fields (2.08)",
            protocol >> 8,
            protocol & 0xff
        )));
    }
    let setup_sects = match b.get(0x1f1).copied() {
        Some(0) => 4,
        Some(n) => n as usize,
        None => return Err(bad("truncated")),
    };
    let start = (setup_sects + 1) * 512;
    let offset = u32_at(b, 0x248).ok_or_else(|| bad("truncated"))? as usize;
    let length = u32_at(b, 0x24c).ok_or_else(|| bad("truncated"))? as usize;
    let from = start
        .checked_add(offset)
        .ok_or_else(|| bad("payload offset"))?;
    b.get(from..from.saturating_add(length))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad("payload lies outside the file"))
}

/// The `kernel_version` string the setup header points at.
fn header_version(b: &[u8]) -> Option<(String, String)> {
    let ptr = u16_at(b, 0x20e)? as usize;
    if ptr == 0 {
        return None;
    }
    let from = ptr + 0x200;
    let tail = b.get(from..(from + 512).min(b.len()))?;
    let end = tail.iter().position(|&c| c == 0)?;
    split_banner(&tail[..end])
}

/// `Linux version 6.1.0-… (…) #1 SMP …` inside an uncompressed image.
fn banner_of(b: &[u8]) -> Option<(String, String)> {
    const NEEDLE: &[u8] = b"Linux version ";
    let mut from = 0;
    while let Some(at) = find(&b[from..], NEEDLE) {
        let start = from + at + NEEDLE.len();
        if b.get(start).is_some_and(u8::is_ascii_digit) {
            let tail = &b[start..(start + 512).min(b.len())];
            let end = tail
                .iter()
                .position(|&c| c == 0 || c == b'\n')
                .unwrap_or(tail.len());
            return split_banner(&tail[..end]);
        }
        from = start;
    }
    None
}

/// (whole banner, first word = release).
fn split_banner(s: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(s).ok()?.trim();
    let release = s.split_whitespace().next()?;
    if release.is_empty() || !release.chars().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    Some((s.to_string(), release.to_string()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn elf_arch(b: &[u8]) -> Option<String> {
    let machine = u16_at(b, 0x12)?;
    Some(
        match machine {
            0x3e => "amd64",
            0xb7 => "arm64",
            0x03 => "386",
            0xf3 => "riscv64",
            0x28 => "arm",
            0x15 => "ppc64le",
            0x16 => "s390x",
            _ => return None,
        }
        .to_string(),
    )
}

/// The uncompressed kernel inside a compressed one: the ELF `vmlinux` of a bzImage, or
/// the arm64 `Image` of an `Image.gz`.
pub fn extract_uncompressed(b: &[u8]) -> Result<Vec<u8>, KernelImageError> {
    if is_bzimage(b) {
        return extract_vmlinux(b);
    }
    if Compression::sniff(b) != Compression::None {
        let inner = decompress::decode_all(b, MAX_VMLINUX)?;
        if is_arm64_image(&inner) {
            return Ok(inner);
        }
    }
    Err(KernelImageError::NotCompressed)
}

/// Decompresses the bzImage's payload into the ELF `vmlinux`, trimmed to the ELF's own
/// extent (x86 appends relocation data after it).
pub fn extract_vmlinux(bz: &[u8]) -> Result<Vec<u8>, KernelImageError> {
    if !is_bzimage(bz) {
        return Err(KernelImageError::NotAKernel("no bzImage header".into()));
    }
    let payload = payload_of(bz)?;
    let mut elf = decompress::decode_all(payload, MAX_VMLINUX)?;
    if !is_elf(&elf) {
        return Err(KernelImageError::PayloadNotElf);
    }
    if let Some(end) = elf64_extent(&elf)
        && end <= elf.len()
    {
        elf.truncate(end);
    }
    Ok(elf)
}

/// End of the last byte an ELF64 (little-endian) file describes: headers, segments and
/// sections.
fn elf64_extent(b: &[u8]) -> Option<usize> {
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return None;
    }
    let phoff = u64_at(b, 0x20)? as usize;
    let shoff = u64_at(b, 0x28)? as usize;
    let phentsize = u16_at(b, 0x36)? as usize;
    let phnum = u16_at(b, 0x38)? as usize;
    let shentsize = u16_at(b, 0x3a)? as usize;
    let shnum = u16_at(b, 0x3c)? as usize;
    let mut end = 64usize
        .max(phoff.checked_add(phentsize.checked_mul(phnum)?)?)
        .max(shoff.checked_add(shentsize.checked_mul(shnum)?)?);
    for i in 0..phnum {
        let h = phoff + i * phentsize;
        let (off, size) = (u64_at(b, h + 8)?, u64_at(b, h + 0x20)?);
        end = end.max(off.checked_add(size)? as usize);
    }
    for i in 0..shnum {
        let h = shoff + i * shentsize;
        const SHT_NOBITS: u32 = 8;
        if u32_at(b, h + 4)? == SHT_NOBITS {
            continue;
        }
        let (off, size) = (u64_at(b, h + 0x18)?, u64_at(b, h + 0x20)?);
        end = end.max(off.checked_add(size)? as usize);
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_testkit::fake_kernel as fixture;

    #[test]
    fn gzip_bzimage_round_trip() {
        let elf = fixture::elf("6.6.6-test");
        let bz = fixture::bzimage("6.6.6-test", &fixture::gzip(&elf));
        let info = inspect(&bz).expect("inspect");
        assert_eq!(
            info.format,
            Format::BzImage {
                payload: Compression::Gzip
            }
        );
        assert_eq!(info.version.as_deref(), Some("6.6.6-test"));
        assert_eq!(info.arch.as_deref(), Some("amd64"));
        assert_eq!(extract_vmlinux(&bz).expect("extract"), elf);
        let info = inspect(&elf).expect("elf");
        assert_eq!(info.format, Format::Elf);
        assert_eq!(info.version.as_deref(), Some("6.6.6-test"));
        assert_eq!(info.arch.as_deref(), Some("amd64"));
    }

    #[test]
    fn arm64_images_bare_and_gzipped() {
        let image = fixture::arm64_image("6.1.0-30-arm64");
        let info = inspect(&image).expect("inspect");
        assert_eq!(info.format, Format::Arm64Image);
        assert_eq!(info.version.as_deref(), Some("6.1.0-30-arm64"));
        assert_eq!(info.arch.as_deref(), Some("arm64"));
        let gz = fixture::gzip(&image);
        let info = inspect(&gz).expect("inspect gzip");
        assert_eq!(
            info.format,
            Format::CompressedArm64Image {
                compression: Compression::Gzip
            }
        );
        assert_eq!(info.version.as_deref(), Some("6.1.0-30-arm64"));
        assert_eq!(extract_uncompressed(&gz).expect("extract"), image);
        // Other compressed data is still not a kernel, and says what it is.
        let err = inspect(&fixture::gzip(b"an initrd, say")).expect_err("not a kernel");
        assert!(err.to_string().contains("bare gzip stream"), "{err}");
        assert!(extract_uncompressed(&image).is_err());
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let err = inspect(b"#!/bin/sh\necho hi\n").expect_err("not a kernel");
        assert!(err.to_string().contains("not a Linux kernel"), "{err}");
        let mut fake = vec![0u8; 0x300];
        fake[0x202..0x206].copy_from_slice(b"HdrS");
        fake[0x206] = 0x0f;
        fake[0x207] = 0x02;
        fake[0x24c] = 0xff;
        assert!(inspect(&fake).is_err());
        assert!(extract_vmlinux(&fake).is_err());
    }
}
