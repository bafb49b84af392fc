//! banger's OCI side: references, registry client, content-addressed blob cache, and
//! the merge of image layers into one verified stream of filesystem entries.
//!
//! Nothing here knows about ext4 or the daemon; see `README.md` for the design.

pub mod cache;
pub mod credentials;
mod decode;
pub mod digest;
pub mod entry;
pub mod error;
pub mod flatten;
pub mod hostsink;
pub mod manifest;
pub mod pack;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod source;
pub mod tar_guard;
mod tarentry;

pub use cache::{BlobCache, BlobWriter, Lease, PruneReport};
pub use credentials::{Credential, CredentialStore};
pub use digest::Digest;
pub use entry::{CollectSink, Entry, EntryKind, EntrySink, Metadata, SinkError, Timestamp};
pub use error::{Error, Result};
pub use flatten::{FlattenStats, LayerInput, Limits, flatten, flatten_as_ready};
pub use manifest::{ImageConfig, Platform};
pub use pack::{ImageDocuments, ImageLayer, LayerEntry, PackError, PackedLayer};
pub use pull::{ImageOrigin, LayerDescriptor, Progress, ProgressFn, Puller, ResolvedImage};
pub use reference::{Reference, ReferenceError, default_image_name};
pub use registry::{RegistryClient, RegistryOptions, UploadProgress};
pub use source::{ArchiveImage, Source};
