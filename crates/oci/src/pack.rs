//! Packing an image for a push: a deterministic gzip tar layer from host files, and the
//! config and manifest that describe it.
//!
//! Deterministic means the same files give the same bytes, so pushing twice gives the
//! same digests: entries go in the order given (use [`tree_entries`] for a sorted walk),
//! owners are 0:0, times 0, modes normalised (directories and executables 0755, other
//! files 0644, symlinks 0777). The layer is streamed to a file while both its digest and
//! its `diff_id` (the digest of the uncompressed tar) are computed, so memory stays flat
//! whatever its size.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::manifest::{
    Descriptor, ImageManifest, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Platform,
};

/// Why packing failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding the image {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PackError {
    let context = context.into();
    move |source| PackError::Io { context, source }
}

/// One member of a layer: its path in the layer and the host file, directory or symlink
/// it is read from (symlinks are stored as links, never followed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LayerEntry {
    pub name: String,
    pub path: PathBuf,
}

/// A packed layer: its blob's digest and size, and the digest of the uncompressed tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedLayer {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// Appends the entries below `dir` to `out` as `<rel>/<name>…`, sorted by name, each
/// directory followed by its contents. Symlinked directories are not descended into.
pub fn tree_entries(dir: &Path, rel: &str, out: &mut Vec<LayerEntry>) -> Result<(), PackError> {
    let mut children: Vec<(String, PathBuf, bool)> = std::fs::read_dir(dir)
        .map_err(io(format!("reading {}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path(),
                is_dir,
            )
        })
        .collect();
    children.sort();
    for (name, path, is_dir) in children {
        let rel = format!("{rel}/{name}");
        out.push(LayerEntry {
            name: rel.clone(),
            path: path.clone(),
        });
        if is_dir {
            tree_entries(&path, &rel, out)?;
        }
    }
    Ok(())
}

/// Hashes and counts what goes through.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hash: Sha256::new(),
            written: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the deterministic gzip tar of `entries` to `out` (see the module docs).
pub fn pack_layer(entries: &[LayerEntry], out: &std::fs::File) -> Result<PackedLayer, PackError> {
    use std::os::unix::fs::PermissionsExt;
    let blob = HashingWriter::new(std::io::BufWriter::new(out));
    let gz = flate2::write::GzEncoder::new(blob, flate2::Compression::new(6));
    let mut tar = tar::Builder::new(HashingWriter::new(gz));
    for LayerEntry { name, path } in entries {
        let meta =
            std::fs::symlink_metadata(path).map_err(io(format!("stat {}", path.display())))?;
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let res = if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, format!("{name}/"), std::io::empty())
        } else if meta.is_symlink() {
            let target =
                std::fs::read_link(path).map_err(io(format!("readlink {}", path.display())))?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            tar.append_link(&mut h, name, target)
        } else {
            let f = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            });
            h.set_size(meta.len());
            tar.append_data(&mut h, name, f)
        };
        res.map_err(io(format!("adding {name} to the layer")))?;
    }
    let hashing = tar.into_inner().map_err(io("finishing the layer"))?;
    let diff_id = Digest::from_hasher(hashing.hash);
    let mut blob = hashing
        .inner
        .finish()
        .map_err(io("compressing the layer"))?;
    blob.flush().map_err(io("writing the layer"))?;
    Ok(PackedLayer {
        digest: Digest::from_hasher(blob.hash),
        size: blob.written,
        diff_id,
    })
}

/// A layer of an image to push, with its descriptor's annotations
/// (`org.opencontainers.image.title`, …).
#[derive(Clone, Debug)]
pub struct ImageLayer {
    pub layer: PackedLayer,
    pub annotations: BTreeMap<String, String>,
}

/// The config and manifest of an image to push.
#[derive(Clone, Debug)]
pub struct ImageDocuments {
    pub config: Vec<u8>,
    pub config_digest: Digest,
    /// An OCI image manifest ([`OCI_MANIFEST`]).
    pub manifest: Vec<u8>,
}

/// The config's JSON: fields in this order, as the earlier hand-built documents had them.
#[derive(Serialize)]
struct ConfigDoc<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    config: ConfigLabels<'a>,
    rootfs: RootFsDoc,
}

#[derive(Serialize)]
struct ConfigLabels<'a> {
    #[serde(rename = "Labels")]
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RootFsDoc {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<Digest>,
}

/// JSON with keys in serde_json's canonical (sorted) order, whatever the struct order.
fn encode(what: &'static str, doc: &impl Serialize) -> Result<Vec<u8>, PackError> {
    let json = |source| PackError::Json { what, source };
    serde_json::to_value(doc)
        .and_then(|v| serde_json::to_vec(&v))
        .map_err(json)
}

/// Builds the config (`platform`, `labels` as the config's `Labels`, the layers'
/// `diff_id`s) and the OCI manifest (the same `labels` as its annotations) of an image.
pub fn image_documents(
    platform: &Platform,
    labels: &BTreeMap<String, String>,
    layers: &[ImageLayer],
) -> Result<ImageDocuments, PackError> {
    let config = encode(
        "config",
        &ConfigDoc {
            architecture: &platform.architecture,
            os: &platform.os,
            variant: platform.variant.as_deref(),
            config: ConfigLabels { labels },
            rootfs: RootFsDoc {
                kind: "layers",
                diff_ids: layers.iter().map(|l| l.layer.diff_id.clone()).collect(),
            },
        },
    )?;
    let config_digest = Digest::of(&config);
    let descriptor = |media_type: &str, digest: &Digest, size: u64, annotations| Descriptor {
        media_type: media_type.to_string(),
        digest: digest.clone(),
        size,
        platform: None,
        urls: Vec::new(),
        annotations,
    };
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: descriptor(
            OCI_CONFIG,
            &config_digest,
            config.len() as u64,
            BTreeMap::new(),
        ),
        layers: layers
            .iter()
            .map(|l| {
                descriptor(
                    OCI_LAYER_GZIP,
                    &l.layer.digest,
                    l.layer.size,
                    l.annotations.clone(),
                )
            })
            .collect(),
        annotations: labels.clone(),
    };
    Ok(ImageDocuments {
        manifest: encode("manifest", &manifest)?,
        config,
        config_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_and_documents_are_deterministic_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("k");
        std::fs::create_dir_all(root.join("modules/kernel")).unwrap();
        std::fs::write(root.join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(root.join("modules/kernel/a.ko"), b"a").unwrap();
        std::os::unix::fs::symlink("kernel/a.ko", root.join("modules/link")).unwrap();
        let mut entries = vec![LayerEntry {
            name: "vmlinuz".into(),
            path: root.join("vmlinuz"),
        }];
        entries.push(LayerEntry {
            name: "modules".into(),
            path: root.join("modules"),
        });
        tree_entries(&root.join("modules"), "modules", &mut entries).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "vmlinuz",
                "modules",
                "modules/kernel",
                "modules/kernel/a.ko",
                "modules/link"
            ]
        );
        let pack = |n: &str| {
            let out = dir.path().join(n);
            let f = std::fs::File::create(&out).unwrap();
            let layer = pack_layer(&entries, &f).unwrap();
            (layer, std::fs::read(&out).unwrap())
        };
        let (a, bytes) = pack("a");
        let (b, _) = pack("b");
        assert_eq!(a, b);
        assert_eq!(a.digest, Digest::of(&bytes));
        assert_eq!(a.size, bytes.len() as u64);

        let labels: BTreeMap<String, String> =
            [("dev.banger.kind".to_string(), "kernel".to_string())].into();
        let layers = [ImageLayer {
            layer: a.clone(),
            annotations: [(
                "org.opencontainers.image.title".to_string(),
                "k.tar.gz".to_string(),
            )]
            .into(),
        }];
        let docs = image_documents(&Platform::linux_amd64(), &labels, &layers).unwrap();
        assert_eq!(docs.config_digest, Digest::of(&docs.config));
        let config = crate::manifest::ImageConfig::parse(&docs.config).unwrap();
        assert_eq!(
            (config.os.as_str(), config.architecture.as_str()),
            ("linux", "amd64")
        );
        assert_eq!(config.rootfs.diff_ids, vec![a.diff_id.clone()]);
        let crate::manifest::ManifestDoc::Image(m) =
            crate::manifest::ManifestDoc::parse(&docs.manifest, None).unwrap()
        else {
            panic!("not an image manifest");
        };
        assert_eq!(m.media_type.as_deref(), Some(OCI_MANIFEST));
        assert_eq!(m.config.digest, docs.config_digest);
        assert_eq!(m.layers[0].media_type, OCI_LAYER_GZIP);
        assert_eq!(m.layers[0].digest, a.digest);
        assert_eq!(m.annotations, labels);
        // Keys in canonical order, as before the move into this crate.
        let text = String::from_utf8(docs.config).unwrap();
        assert!(
            text.starts_with(r#"{"architecture":"amd64","config":{"Labels":"#),
            "{text}"
        );
    }
}
