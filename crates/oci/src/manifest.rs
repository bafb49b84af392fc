//! OCI and Docker v2 schema 2 manifests, indexes / manifest lists, image configs, and
//! platform selection.

use crate::digest::Digest;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Largest manifest or index accepted, from a registry or a layout (distribution refuses
/// pushes over 4 MiB; real ones are a few KiB).
pub const MAX_MANIFEST_BYTES: u64 = 8 << 20;
/// Largest image config accepted (real ones are at most a few hundred KiB, history included).
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// `Accept` header for manifest requests: everything we can read.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            Error::Source(
                s.to_string(),
                "platform must be os/arch[/variant], e.g. linux/amd64".into(),
            )
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    fn norm_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            (_, v) => v,
        }
    }

    /// Whether an image for `other` satisfies a request for `self`. A request without
    /// variant accepts any variant.
    pub fn satisfied_by(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.norm_variant() == other.norm_variant())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageIndex {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A manifest document of either kind.
#[derive(Clone, Debug)]
pub enum ManifestDoc {
    Image(ImageManifest),
    Index(ImageIndex),
}

impl ManifestDoc {
    /// Parses a manifest body; `content_type` (from HTTP or a descriptor) wins over the
    /// document's own `mediaType`, which wins over shape sniffing.
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<ManifestDoc> {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Error::Protocol(format!("manifest is not JSON: {e}")))?;
        let declared = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(str::to_string);
        let ct = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
            .filter(|c| {
                [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&c.as_str())
            });
        let kind = ct.or(declared).unwrap_or_else(|| {
            if v.get("manifests").is_some() {
                OCI_INDEX.into()
            } else {
                OCI_MANIFEST.into()
            }
        });
        if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
            return Err(Error::Protocol(
                "Docker schema 1 manifests are not supported".into(),
            ));
        }
        let de = |e: serde_json::Error| Error::Protocol(format!("invalid {kind}: {e}"));
        Ok(match kind.as_str() {
            OCI_INDEX | DOCKER_LIST => ManifestDoc::Index(serde_json::from_value(v).map_err(de)?),
            OCI_MANIFEST | DOCKER_MANIFEST => {
                ManifestDoc::Image(serde_json::from_value(v).map_err(de)?)
            }
            other => {
                return Err(Error::Protocol(format!(
                    "unsupported manifest media type {other:?}"
                )));
            }
        })
    }
}

/// The subset of the image config banger uses.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
    pub rootfs: RootFs,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    pub fn parse(body: &[u8]) -> Result<ImageConfig> {
        serde_json::from_slice(body)
            .map_err(|e| Error::Protocol(format!("invalid image config: {e}")))
    }
}

/// Picks the manifest for `want` from an index. Entries for `unknown/unknown`
/// (attestations) and entries without platform are never chosen; among matches an
/// exact variant match wins, then the first listed.
pub fn select_platform<'a>(index: &'a ImageIndex, want: &Platform) -> Result<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os != "unknown" && p.architecture != "unknown")
        })
        .collect();
    let mut matching = candidates
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| want.satisfied_by(p)));
    let first = matching.next();
    let exact = candidates
        .iter()
        .find(|d| d.platform.as_ref() == Some(want));
    exact.or(first).copied().ok_or_else(|| {
        let mut available: Vec<String> = candidates
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        available.dedup();
        Error::PlatformNotAvailable {
            wanted: want.to_string(),
            available,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(p: Option<(&str, &str, Option<&str>)>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: p.map(|(o, a, v)| Platform {
                os: o.into(),
                architecture: a.into(),
                variant: v.map(Into::into),
            }),
            urls: vec![],
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn platform_selection() {
        let idx = ImageIndex {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                desc(Some(("unknown", "unknown", None)), 0),
                desc(Some(("linux", "arm", Some("v6"))), 1),
                desc(Some(("linux", "arm", Some("v7"))), 2),
                desc(Some(("linux", "arm64", None)), 3),
                desc(Some(("linux", "amd64", None)), 4),
            ],
        };
        assert_eq!(
            select_platform(&idx, &Platform::linux_amd64())
                .unwrap()
                .digest,
            Digest::of(&[4])
        );
        assert_eq!(
            select_platform(&idx, &Platform::parse("linux/arm/v7").unwrap())
                .unwrap()
                .digest,
            Digest::of(&[2])
        );
        assert_eq!(
            select_platform(&idx, &Platform::parse("linux/arm64/v8").unwrap())
                .unwrap()
                .digest,
            Digest::of(&[3])
        );
        let e = select_platform(&idx, &Platform::parse("linux/s390x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux/s390x")
                && e.contains("linux/arm/v7")
                && e.contains("linux/amd64")
                && !e.contains("unknown"),
            "{e}"
        );
        assert!(Platform::parse("linux").is_err());
    }

    #[test]
    fn manifest_kinds() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            ManifestDoc::parse(idx, None).unwrap(),
            ManifestDoc::Index(_)
        ));
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{}","size":1}},"layers":[]}}"#,
            Digest::of(b"")
        );
        assert!(matches!(
            ManifestDoc::parse(m.as_bytes(), Some("application/json")).unwrap(),
            ManifestDoc::Image(_)
        ));
        assert!(ManifestDoc::parse(br#"{"schemaVersion":1}"#, None).is_err());
    }
}
