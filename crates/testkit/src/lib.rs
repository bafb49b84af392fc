//! Test-only harnesses shared by the workspace's integration tests.
//!
//! Everything here drives real tools (`docker-registry`, `skopeo`, `umoci`, `e2fsck`,
//! `qemu-system-x86_64`). A missing tool is a loud failure, never a silent skip: the
//! README's test command installs them all.

// Test harness code: a failed setup step panics on purpose, failing the test that called it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fake_kernel;
pub mod layers;
pub mod oci_image;
pub mod qemu;
pub mod registry;
pub mod token_auth;
pub mod tools;
pub mod tree;
pub mod vm;
pub mod wait;
