//! `image.pull`'s params (its progress streams as [`crate::event::OpEvent`]s).

use serde::{Deserialize, Serialize};

use crate::image::KernelChoice;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePullParams {
    /// `debian:bookworm`, `host:port/repo@sha256:…`, `oci:DIR[:TAG]`, `oci-archive:FILE`,
    /// `docker-archive:FILE`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Defaults to a name derived from the reference (`debian:bookworm` → `debian-bookworm`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub kernel: KernelChoice,
    /// Exact filesystem size; default `max(content × 1.25, 1 GiB)`.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// `os/arch[/variant]`; default `linux/amd64`.
    #[serde(default)]
    pub platform: Option<String>,
}
