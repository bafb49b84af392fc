//! Assembling OCI image layouts from layer tars (written directly: `oci-layout`,
//! `index.json`, content-addressed blobs), unpacking them with the real `umoci` for
//! reference trees, and pushing them with the real `skopeo`.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A layer to put in an image: the uncompressed tar and how to store it.
pub struct Layer {
    pub tar: Vec<u8>,
    pub compression: Compression,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    pub manifest_digest: String,
    pub manifest_size: usize,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
}

/// Writes blobs into `layout/blobs/sha256`, returns the digest.
pub fn put_blob(layout: &Path, data: &[u8]) -> String {
    let d = sha256(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).expect("mkdir blobs");
    std::fs::write(dir.join(&d[7..]), data).expect("write blob");
    d
}

/// Writes an image (config + manifest + layers) for `os/arch` into the layout's blobs;
/// does not touch `index.json`.
pub fn write_image(layout: &Path, layers: &[Layer], arch: &str) -> Written {
    std::fs::create_dir_all(layout).expect("mkdir layout");
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let mut descs = Vec::new();
    let mut layer_digests = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(sha256(&l.tar));
        let (blob, mt) = match l.compression {
            Compression::None => (l.tar.clone(), MT_LAYER_TAR),
            Compression::Gzip => (crate::layers::gzip(&l.tar), MT_LAYER_GZIP),
            Compression::Zstd => (crate::layers::zstd(&l.tar), MT_LAYER_ZSTD),
        };
        let d = put_blob(layout, &blob);
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": blob.len()}));
        layer_digests.push(d);
    }
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).expect("config json");
    let config_digest = put_blob(layout, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": descs,
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest json");
    let manifest_digest = put_blob(layout, &manifest);
    Written {
        manifest_digest,
        manifest_size: manifest.len(),
        config_digest,
        layer_digests,
        diff_ids,
    }
}

/// Writes `index.json` with the given top-level descriptors.
pub fn write_index(layout: &Path, manifests: Vec<serde_json::Value>) {
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec_pretty(&index).expect("json"),
    )
    .expect("index.json");
}

/// A single-platform (linux/amd64) layout tagged `tag`.
pub fn single(layout: &Path, tag: &str, layers: &[Layer]) -> Written {
    let w = write_image(layout, layers, "amd64");
    write_index(
        layout,
        vec![serde_json::json!({
            "mediaType": MT_MANIFEST, "digest": w.manifest_digest, "size": w.manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })],
    );
    w
}

/// A multi-arch layout: `tag` points at an image index with amd64 `layers`, an arm64
/// decoy, and an `unknown/unknown` attestation-like entry. Returns (index digest, amd64).
pub fn multi_arch(
    layout: &Path,
    tag: &str,
    layers: &[Layer],
    decoy: &[Layer],
) -> (String, Written) {
    let amd = write_image(layout, layers, "amd64");
    let arm = write_image(layout, decoy, "arm64");
    let att = write_image(layout, decoy, "unknown");
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [
        {"mediaType": MT_MANIFEST, "digest": arm.manifest_digest, "size": arm.manifest_size,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"mediaType": MT_MANIFEST, "digest": amd.manifest_digest, "size": amd.manifest_size,
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": MT_MANIFEST, "digest": att.manifest_digest, "size": att.manifest_size,
         "platform": {"os": "unknown", "architecture": "unknown"}},
    ]});
    let index = serde_json::to_vec(&index).expect("json");
    let index_digest = put_blob(layout, &index);
    write_index(
        layout,
        vec![serde_json::json!({
            "mediaType": MT_INDEX, "digest": index_digest, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })],
    );
    (index_digest, amd)
}

/// Unpacks `layout:tag` with the real `umoci` and returns the rootfs path (under `work`).
pub fn umoci_unpack(layout: &Path, tag: &str, work: &Path) -> PathBuf {
    let bundle = work.join("umoci-bundle");
    let mut cmd = crate::tools::command("umoci");
    cmd.arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle);
    crate::tools::run(&mut cmd);
    bundle.join("rootfs")
}

/// Copies `oci:layout:tag` to `docker://registry/repo:tag` over plain HTTP with `skopeo`.
/// `extra` are extra `skopeo copy` flags (`--dest-compress-format zstd`, `--format v2s2`, …).
pub fn skopeo_push(layout: &Path, tag: &str, registry: &str, repo: &str, extra: &[&str]) {
    let mut cmd = crate::tools::command("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{registry}/{repo}:{tag}"));
    crate::tools::run(&mut cmd);
}
