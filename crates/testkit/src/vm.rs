//! Fixtures for tests that boot banger VMs: the static guest agent and Debian images.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools;

/// The static guest agent `bangerd` puts into every initramfs: `$BANGER_AGENT` (set by
/// `scripts/test.sh`), else the release build `scripts/build-agent.sh` makes. Panics with
/// the command to run when neither exists: VM tests never skip.
pub fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BANGER_AGENT").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "BANGER_AGENT={} is not a file", p.display());
        return p;
    }
    let built = target_dir().join("x86_64-unknown-linux-gnu/release/banger-agent");
    assert!(
        built.is_file(),
        "the static guest agent is not built ({} missing): run scripts/build-agent.sh (scripts/test.sh does)",
        built.display()
    );
    built
}

/// An OCI layout (tag `t`) of a Debian bookworm root built with debootstrap, once, into
/// the test cache by `scripts/bench-pull.sh --prepare-only`: `minbase` (no init system,
/// ~200 MB) or `dev` (systemd, sshd, python3, build-essential, git).
pub fn debian_layout(name: &str) -> PathBuf {
    assert!(matches!(name, "minbase" | "dev"), "unknown image {name}");
    tools::require("debootstrap");
    tools::require("umoci");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench-pull.sh");
    tools::run(
        Command::new("bash")
            .arg(&script)
            .args(["--prepare-only", name]),
    );
    let layout = tools::cache_dir().join(format!("bench/oci-{name}"));
    assert!(
        layout.join("index.json").is_file(),
        "{} missing after prepare",
        layout.display()
    );
    layout
}

/// The impostor of the hostile-guest tests (`banger-agent`'s `examples/impostor.rs`):
/// `$BANGER_IMPOSTOR`, else the debug build `cargo test --workspace` makes (it builds every
/// example) or `cargo build -p banger-agent --example impostor`. Linked dynamically against
/// the host's glibc, which the Debian bookworm test images share. Panics with the command
/// to run when missing: the hostile-guest tests never skip.
pub fn impostor_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BANGER_IMPOSTOR").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let built = target_dir().join("debug/examples/impostor");
    assert!(
        built.is_file(),
        "the impostor is not built ({} missing): run `cargo build -p banger-agent --example impostor` (scripts/test.sh does)",
        built.display()
    );
    built
}

/// The workspace's cargo target directory (`$CARGO_TARGET_DIR`, else `target/`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}
