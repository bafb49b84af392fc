//! Decoders for what kernels come wrapped in; they live in [`banger_kernel::decompress`]
//! (shared with module decompression for the guest initramfs) and are re-exported here.

pub use banger_kernel::decompress::*;
