//! Synthetic kernel images for tests (here and in the end-to-end tests): a minimal ELF64
//! x86-64 `vmlinux` carrying a `Linux version` banner, a bzImage wrapping a compressed
//! payload the way the kernel build does (setup header, payload fields, size appended),
//! and an arm64 `Image` (its 64-byte boot header, then the banner).
//! They do not boot; they are exactly what the store's inspection reads.

/// A minimal ELF64 x86-64 executable: one PT_LOAD segment holding the banner and filler.
pub fn elf(version: &str) -> Vec<u8> {
    let mut body = format!("Linux version {version} (banger@test) (gcc) #1 SMP\n\0").into_bytes();
    // Filler that compresses well but not trivially.
    body.extend((0..8192u32).map(|i| (i * 7 % 251) as u8));
    let total = 64 + 56 + body.len();
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    b.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&0x100_0000u64.to_le_bytes()); // entry
    b.extend_from_slice(&64u64.to_le_bytes()); // phoff
    b.extend_from_slice(&0u64.to_le_bytes()); // shoff
    b.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 1, 64, 0, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    b.extend_from_slice(&5u32.to_le_bytes()); // R+X
    b.extend_from_slice(&0u64.to_le_bytes()); // offset
    b.extend_from_slice(&0x100_0000u64.to_le_bytes()); // vaddr
    b.extend_from_slice(&0x100_0000u64.to_le_bytes()); // paddr
    b.extend_from_slice(&(total as u64).to_le_bytes()); // filesz
    b.extend_from_slice(&(total as u64).to_le_bytes()); // memsz
    b.extend_from_slice(&0x1000u64.to_le_bytes()); // align
    b.extend_from_slice(&body);
    b
}

/// A bzImage (boot protocol 2.15, 64-bit) around an already-compressed `payload`, with
/// `version` as the setup header's kernel_version string.
pub fn bzimage(version: &str, payload: &[u8]) -> Vec<u8> {
    let setup_sects = 4usize;
    let start = (setup_sects + 1) * 512;
    let mut b = vec![0u8; start];
    b[0x1f1] = setup_sects as u8;
    b[0x1fe] = 0x55;
    b[0x1ff] = 0xaa;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x20e..0x210].copy_from_slice(&0x0200u16.to_le_bytes()); // string at 0x400
    b[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    b[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
    b[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
    let s = format!("{version} (banger@test) #1 SMP\0");
    b[0x400..0x400 + s.len()].copy_from_slice(s.as_bytes());
    b.extend_from_slice(payload);
    // The kernel build appends the uncompressed size; decoders must ignore it.
    b.extend_from_slice(&0x0123_4567u32.to_le_bytes());
    b
}

/// An arm64 `Image`: the boot header (branch, text offset, image size, flags, the
/// `ARM\x64` magic at 0x38), then code-like filler with the banner.
pub fn arm64_image(version: &str) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // b #0x40
    b[8..16].copy_from_slice(&0u64.to_le_bytes()); // text_offset
    b[24..32].copy_from_slice(&0xau64.to_le_bytes()); // flags: LE, 4K pages
    b[0x38..0x3c].copy_from_slice(b"ARM\x64");
    b.extend((0..8192u32).map(|i| (i * 11 % 253) as u8));
    b.extend_from_slice(
        format!("Linux version {version} (banger@test) (gcc) #1 SMP\n\0").as_bytes(),
    );
    b.extend((0..4096u32).map(|i| (i * 3 % 241) as u8));
    let len = b.len() as u64;
    b[16..24].copy_from_slice(&len.to_le_bytes()); // image_size
    b
}

/// gzip through the real tool (as the kernel build compresses its payload).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    crate::layers::gzip(data)
}

/// A gzip-payload bzImage for `version`.
pub fn gzip_bzimage(version: &str) -> Vec<u8> {
    bzimage(version, &gzip(&elf(version)))
}
