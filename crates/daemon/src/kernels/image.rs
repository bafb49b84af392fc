//! What a kernel file is (bzImage, ELF vmlinux, arm64 Image, bare or compressed) and the
//! extraction of the uncompressed kernel; this lives in [`banger_kernel::image`] and is
//! re-exported here.

pub use banger_kernel::image::*;
