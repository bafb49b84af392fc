//! Kernel-file knowledge that needs no daemon types.
//!
//! - [`decompress`]: in-process decoders for what kernels and their modules come
//!   wrapped in (gzip, xz, zstd, the kernel's legacy lz4).
//! - [`modules`]: module dependency resolution against a `lib/modules/<release>` tree
//!   (`modules.dep`, or each module's `.modinfo`; `modules.builtin`).
//! - [`modules_disk`]: every module of a tree on a shared read-only ext4 disk, with the
//!   index the guest's on-demand `modprobe` reads.
//! - [`cpio`]: a deterministic `newc` cpio writer.
//! - [`initramfs`]: the per-VM guest initramfs (agent as `/init`, the needed modules).
//! - [`image`]: what a kernel file is (x86 bzImage, ELF `vmlinux`, arm64 `Image`, bare
//!   or compressed), its release and architecture, and extracting the uncompressed
//!   kernel.
//! - [`deb`]: reading a Debian kernel package (`ar`, then the data tar) without
//!   installing it.
//! - [`manifest`]: a stored kernel's `manifest.json` and the checksums it records.
//!
//! Errors are typed ([`KernelError`], [`cpio::CpioError`],
//! [`decompress::DecompressError`], [`image::KernelImageError`], [`deb::DebError`],
//! [`manifest::ManifestError`]) and say what failed, on which file, and what to do.

pub mod agent;
pub mod cpio;
pub mod deb;
pub mod decompress;
mod error;
pub mod image;
pub mod initramfs;
pub mod manifest;
pub mod modules;
pub mod modules_disk;
pub mod pvh;

pub use agent::needs_interpreter;
pub use error::KernelError;
pub use initramfs::{InitramfsInfo, build_guest_initramfs, guest_modules};
pub use modules::{Module, ModuleIndex, resolve_modules};
pub use modules_disk::{ModulesDiskInfo, build_modules_disk};
