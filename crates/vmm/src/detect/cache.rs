//! The KVM probe's result and the measured TSC frequency, remembered across processes
//! until the host reboots or QEMU changes, so daemons and `doctor` do not probe (or
//! measure) every time, and agree with each other.
//!
//! # Invariants
//! - An entry is used only when its whole key matches: host boot id, QEMU path and
//!   version, probe deadline. Anything unreadable is a miss, never an error.
//! - Only the probe's outcome and the TSC rate are cached; whether `/dev/kvm` opens is
//!   checked live each time.
//! - The file is replaced atomically (temporary file, then rename).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KvmStatus;

/// The file format's version; entries of another version are misses.
const VERSION: u32 = 1;

/// What a cached probe result is valid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Key {
    pub(crate) boot_id: String,
    pub(crate) qemu: Option<PathBuf>,
    pub(crate) qemu_version: Option<String>,
    pub(crate) probe_timeout_ms: u64,
}

/// What is remembered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Facts {
    /// The probe's outcome, once one ran.
    pub(crate) kvm: Option<KvmStatus>,
    /// The host's TSC rate, once measured.
    pub(crate) tsc_khz: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    version: u32,
    key: Key,
    facts: Facts,
}

/// The facts cached for `key` (empty on any miss).
pub(crate) fn load(path: &Path, key: &Key) -> Facts {
    let Ok(bytes) = std::fs::read(path) else {
        return Facts::default();
    };
    match serde_json::from_slice::<Entry>(&bytes) {
        Ok(e) if e.version == VERSION && e.key == *key => e.facts,
        _ => Facts::default(),
    }
}

/// Stores `facts` for `key`; failures are logged, not returned (the cache is an
/// optimisation).
pub(crate) fn store(path: &Path, key: &Key, facts: &Facts) {
    let entry = Entry {
        version: VERSION,
        key: key.clone(),
        facts: facts.clone(),
    };
    let write = || -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(&entry)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!("cannot write the KVM probe cache {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_their_whole_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kvm-probe.json");
        let key = Key {
            boot_id: "b".into(),
            qemu: Some("/usr/bin/qemu-system-x86_64".into()),
            qemu_version: Some("7.2.22".into()),
            probe_timeout_ms: 3000,
        };
        assert_eq!(load(&path, &key), Facts::default());
        let facts = Facts {
            kvm: Some(KvmStatus::ProbeFailed {
                detail: "timed out after 3 s".into(),
            }),
            tsc_khz: Some(2_596_122),
        };
        store(&path, &key, &facts);
        assert_eq!(load(&path, &key), facts);
        let rebooted = Key {
            boot_id: "c".into(),
            ..key.clone()
        };
        assert_eq!(load(&path, &rebooted), Facts::default());
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(load(&path, &key), Facts::default());
    }
}
