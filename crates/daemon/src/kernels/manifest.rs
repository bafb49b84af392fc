//! A stored kernel's `manifest.json`. The schema, its reading and writing and the
//! checksums it records are [`banger_kernel::manifest`]'s; here its errors become
//! [`OpError`]s and its file records the API's [`KernelFile`].

use banger_api::kernel::KernelFile;
pub use banger_kernel::manifest::{
    INITRD, MANIFEST, MODULES, Manifest, ManifestError, VMLINUX, VMLINUZ, describe_files,
    file_digest, hex_digest, tree_digest,
};

use crate::error::OpError;

impl From<ManifestError> for OpError {
    fn from(e: ManifestError) -> Self {
        match e {
            ManifestError::Io {
                action,
                path,
                source,
            } => OpError::io(format!("{action} {}", path.display()), source),
            other => OpError::Failed(other.to_string()),
        }
    }
}

/// A manifest's file records as `kernel show` and `kernel list` report them.
pub fn api_files(m: &Manifest) -> Vec<KernelFile> {
    m.files
        .iter()
        .map(|f| KernelFile {
            name: f.name.clone(),
            kind: f.kind.clone(),
            sha256: f.sha256.clone(),
            size_bytes: f.size_bytes,
            file_count: f.file_count,
        })
        .collect()
}
