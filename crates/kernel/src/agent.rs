//! The guest agent binary as the initramfs needs it: statically linked (an initramfs has
//! no dynamic loader, so a dynamic `/init` dies before printing anything).

use std::path::{Path, PathBuf};

/// Environment variable naming the agent binary (tests, custom installs).
pub const AGENT_ENV: &str = "BANGER_AGENT";
/// The agent's file name next to `bangerd`.
pub const AGENT_FILE: &str = "banger-agent";

/// Why no usable agent was found.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{AGENT_ENV}={} is not a file; build the agent with scripts/build-agent.sh", .0.display())]
    EnvNotAFile(PathBuf),
    #[error(
        "the guest agent `{AGENT_FILE}` is not installed (looked at {0}); build and install it with scripts/build-agent.sh, or set {AGENT_ENV}"
    )]
    NotInstalled(String),
    #[error(
        "the guest agent {} is dynamically linked and cannot run as a guest's /init; build the static one with scripts/build-agent.sh",
        .0.display()
    )]
    Dynamic(PathBuf),
    #[error("reading the guest agent {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The agent binary: `$BANGER_AGENT`, else `banger-agent` in `beside` (the directory of
/// `bangerd`), checked to be a static executable.
pub fn locate(beside: Option<&Path>) -> Result<PathBuf, AgentError> {
    let agent = match std::env::var_os(AGENT_ENV) {
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                return Err(AgentError::EnvNotAFile(p));
            }
            p
        }
        None => match beside.map(|d| d.join(AGENT_FILE)) {
            Some(p) if p.is_file() => p,
            other => {
                return Err(AgentError::NotInstalled(
                    other.map(|p| p.display().to_string()).unwrap_or_default(),
                ));
            }
        },
    };
    match needs_interpreter(&agent) {
        Ok(false) => Ok(agent),
        Ok(true) => Err(AgentError::Dynamic(agent)),
        Err(source) => Err(AgentError::Read {
            path: agent,
            source,
        }),
    }
}

/// Whether an ELF file names a program interpreter (`PT_INTERP`), i.e. is dynamically linked.
pub fn needs_interpreter(path: &Path) -> std::io::Result<bool> {
    let bytes = std::fs::read(path)?;
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a 64-bit ELF executable",
        )
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Err(bad());
    }
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(bad)?);
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(bad)?;
        if kind == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_is_not_an_agent() {
        // The test binary itself is dynamically linked.
        let me = std::env::current_exe().expect("exe");
        assert!(needs_interpreter(&me).expect("elf"));
        let dir = tempfile::tempdir().expect("tmp");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"#!/bin/sh\n").expect("write");
        assert!(needs_interpreter(&junk).is_err());
    }
}
