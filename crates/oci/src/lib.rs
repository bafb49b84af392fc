//! banger's OCI side: references, registry client, content-addressed blob cache, and
//! the merge of image layers into one verified stream of filesystem entries.
//!
//! Nothing here knows about ext4 or the daemon; see `README.md` for the design.

mod decode;
pub mod digest;
pub mod entry;
pub mod error;
pub mod flatten;
pub mod hostsink;
pub mod reference;
mod tarentry;

pub use digest::Digest;
pub use entry::{CollectSink, Entry, EntryKind, EntrySink, Metadata, SinkError, Timestamp};
pub use error::{Error, Result};
pub use flatten::{FlattenStats, LayerInput, Limits, flatten};
pub use reference::{Reference, ReferenceError, default_image_name};
