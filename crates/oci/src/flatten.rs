//! Merging layers into one filesystem stream, top-down.
//!
//! Layers are read newest first. An entry of a lower layer is emitted only if nothing
//! above shadows it: the same path above (a lower directory still supplies metadata if
//! the path above is only an implicit parent), a whiteout above on it or an ancestor, an
//! opaque marker above on an ancestor, or a non-directory above at an ancestor. The
//! shadow state is a map path → occupancy, so memory is proportional to the number of
//! paths, never to data, and every lookup is O(depth) hash probes.
//!
//! Whiteouts and opaque markers of a layer only affect *lower* layers (so their position
//! in the tar stream does not matter, PITFALLS #6) and are never emitted (#1). A whiteout
//! `foo` and `foo/.wh.bar` in one layer both apply to lower layers only (#5).
//!
//! Hardlinks: a link is emitted when its target's inode has been emitted. If the target
//! lives in a lower layer the link waits in `pending` until that layer is read; if the
//! target is shadowed in the final tree (#2: `t1` overwritten above, `t2` keeps the old
//! content) the first link is emitted as a copy of the target (carrying its data) and
//! the others link to it. The one case that needs a second decompression of a layer is a
//! link whose target appeared *earlier in the same layer* and is shadowed: its data has
//! already streamed past, so that layer is re-read once for those entries.

use crate::decode::{BudgetExhausted, LayerStream};
use crate::digest::Digest;
use crate::entry::{Entry, EntryKind, EntrySink, Metadata};
use crate::error::{Error, Result, human_bytes};
use crate::tar_guard::{DEFAULT_MAX_EXTENSION, TarGuard};
use crate::tarentry::{RawEntry, RawKind, read_entry};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::rc::Rc;

/// The unpacked budget of an image is this many times its layers' compressed size...
pub const UNPACKED_PER_COMPRESSED_BYTE: u64 = 20;
/// ...but at least this (small images with very compressible content)...
pub const MIN_UNPACKED_BYTES: u64 = 1 << 30;
/// ...and at most this, unless the caller sets `Limits::max_unpacked_bytes` itself.
pub const MAX_UNPACKED_BYTES: u64 = 64 << 30;
/// Tar members across all layers (each costs a map entry while merging).
pub const MAX_ENTRIES: u64 = 10_000_000;

/// Guards against decompression bombs and absurd layers.
///
/// `Default` is the absolute ceiling, for callers that know nothing of the image; pulls
/// should use [`Limits::for_compressed_size`] (what `ResolvedImage::limits` gives), which
/// ties the budget to what the image declares.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Total uncompressed tar bytes read across all layers (headers and padding included).
    pub max_unpacked_bytes: u64,
    /// Total tar members across all layers.
    pub max_entries: u64,
    /// Where to count the layer blob bytes read so far (compressed), for progress that
    /// knows its total in advance. Not a limit, but the one options struct flattening takes.
    pub blob_bytes_read: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_unpacked_bytes: MAX_UNPACKED_BYTES,
            max_entries: MAX_ENTRIES,
            blob_bytes_read: None,
        }
    }
}

impl Limits {
    /// The default for layers of `compressed` bytes in total: `UNPACKED_PER_COMPRESSED_BYTE`
    /// times that, clamped to [`MIN_UNPACKED_BYTES`, `MAX_UNPACKED_BYTES`]. Real layers
    /// unpack to 2-5× their size; a bomb (zeros, 1000× and more) stops at the budget.
    pub fn for_compressed_size(compressed: u64) -> Limits {
        Limits {
            max_unpacked_bytes: compressed
                .saturating_mul(UNPACKED_PER_COMPRESSED_BYTE)
                .clamp(MIN_UNPACKED_BYTES, MAX_UNPACKED_BYTES),
            ..Limits::default()
        }
    }
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// One layer to merge: a local blob (cache file or OCI layout blob).
#[derive(Clone, Debug)]
pub struct LayerInput {
    pub path: PathBuf,
    /// Digest of the blob itself, verified while reading unless `verified`.
    pub digest: Digest,
    /// Expected sha256 of the uncompressed tar, from the image config.
    pub diff_id: Option<Digest>,
    /// The blob was hashed against `digest` just before (the cache does so for every blob
    /// it hands out), so reading it need not hash it again.
    pub verified: bool,
}

/// What flattening did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlattenStats {
    pub entries_emitted: u64,
    pub file_bytes_emitted: u64,
    /// Layers decompressed a second time for shadowed same-layer hardlink targets.
    pub layers_reread: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Occ {
    /// Parent of some entry, never listed itself (in the layers seen so far).
    Implicit,
    Dir,
    NonDir,
    Whiteout,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    occ: Occ,
    opaque: bool,
}

/// Where the inode of a non-directory of the current layer ends up in the output.
#[derive(Clone, Debug)]
enum Holder {
    /// Not in the output (yet).
    Nowhere,
    /// Emitted at this output path.
    Emitted(String),
    /// Will be materialised at this path by a re-read after the layer.
    Deferred(String),
    /// A hardlink to this lower-layer path, resolved when that layer is read.
    Lower(String),
}

struct Inode {
    ordinal: u64,
    kind: RawKind,
    meta: Metadata,
    holder: Holder,
}

struct PendingLink {
    path: String,
    origin: usize,
}

enum Deferred {
    Materialise {
        ordinal: u64,
        path: String,
        meta: Metadata,
    },
    Link {
        path: String,
        target: String,
        meta: Metadata,
    },
}

/// Ancestors of `p`, root (`""`) first, excluding `p`.
fn ancestors(p: &str) -> impl Iterator<Item = &str> {
    std::iter::once("")
        .chain(p.match_indices('/').map(move |(i, _)| &p[..i]))
        .filter(move |a| *a != p)
}

fn kind_of(raw: &RawKind) -> EntryKind {
    match raw {
        RawKind::Dir => EntryKind::Directory,
        RawKind::File { size } => EntryKind::File { size: *size },
        RawKind::Symlink { target } => EntryKind::Symlink {
            target: target.clone(),
        },
        RawKind::Hardlink { target } => EntryKind::Hardlink {
            target: target.clone(),
        },
        RawKind::Char { major, minor } => EntryKind::CharDevice {
            major: *major,
            minor: *minor,
        },
        RawKind::Block { major, minor } => EntryKind::BlockDevice {
            major: *major,
            minor: *minor,
        },
        RawKind::Fifo => EntryKind::Fifo,
        RawKind::Whiteout | RawKind::Opaque | RawKind::Ignore => EntryKind::Fifo,
    }
}

/// Remembers the first read error so it can be reported as a layer error.
struct ErrTap<'a> {
    inner: &'a mut dyn Read,
    failed: Option<std::io::Error>,
}

impl Read for ErrTap<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if self.failed.is_none() {
                self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
                if e.get_ref().is_some_and(|i| i.is::<BudgetExhausted>()) {
                    self.failed = Some(std::io::Error::other(BudgetExhausted));
                }
            }
        })
    }
}

struct Merger<'s> {
    layer_name: String,
    sink: &'s mut dyn EntrySink,
    above: HashMap<String, Node>,
    pending: HashMap<String, Vec<PendingLink>>,
    stats: FlattenStats,
    entries_left: u64,
    blob_bytes_read: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    limits: Limits,
}

/// Per-layer state.
struct LayerState {
    index: usize,
    name: String,
    here: HashMap<String, Node>,
    names: HashMap<String, usize>,
    inodes: Vec<Inode>,
    new_pending: HashMap<String, Vec<PendingLink>>,
    deferred: Vec<Deferred>,
    /// For the message when the unpacked budget runs out.
    unpacked_limit: u64,
}

impl LayerState {
    fn invalid(&self, entry: &str, reason: impl Into<String>) -> Error {
        Error::InvalidLayer {
            layer: self.name.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }
}

impl<'s> Merger<'s> {
    fn emit(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<()> {
        let result = match data {
            Some(inner) => {
                // Read errors surfacing through the sink are the layer's fault, not the sink's.
                let mut tap = ErrTap {
                    inner,
                    failed: None,
                };
                let r = self.sink.entry(entry, Some(&mut tap));
                if let (Err(_), Some(e)) = (&r, tap.failed) {
                    return Err(classify_io(
                        &self.layer_name,
                        &entry.path,
                        e,
                        self.limits.max_unpacked_bytes,
                    ));
                }
                r
            }
            None => self.sink.entry(entry, None),
        };
        result.map_err(|source| Error::Sink {
            path: entry.path.clone(),
            source,
        })?;
        self.stats.entries_emitted += 1;
        if let EntryKind::File { size } = entry.kind {
            self.stats.file_bytes_emitted += size;
        }
        Ok(())
    }

    /// Is an entry at `p` of the current layer hidden by the layers above?
    fn shadowed(&self, p: &str, kind: &RawKind, st: &LayerState) -> Result<bool> {
        for a in ancestors(p) {
            if let Some(n) = self.above.get(a)
                && (n.opaque || matches!(n.occ, Occ::NonDir | Occ::Whiteout))
            {
                return Ok(true);
            }
        }
        Ok(match self.above.get(p).map(|n| n.occ) {
            None => false,
            Some(Occ::Implicit) if kind.is_dir() => false,
            Some(Occ::Implicit) if matches!(kind, RawKind::Symlink { .. }) => {
                return Err(st.invalid(p, "symlink is a parent of entries in an upper layer; refusing to write through it"));
            }
            Some(_) => true,
        })
    }

    fn process_layer(
        &mut self,
        layer: &LayerInput,
        st: &mut LayerState,
        budget: Rc<RefCell<u64>>,
    ) -> Result<()> {
        let file = std::fs::File::open(&layer.path)
            .map_err(|e| Error::io(format!("open layer {}", layer.path.display()), e))?;
        let opened = match &self.blob_bytes_read {
            Some(counter) => LayerStream::open(
                Counted {
                    inner: file,
                    counter: counter.clone(),
                },
                !layer.verified,
                Some(budget),
            ),
            None => LayerStream::open(file, !layer.verified, Some(budget)),
        };
        let mut stream = opened.map_err(|e| map_io(st, "", e))?;
        {
            // The guard refuses oversized extension headers before the tar crate buffers
            // them whole (a small gzip could otherwise hold a 1 GiB long name).
            let mut archive =
                tar::Archive::new(TarGuard::new(&mut stream.reader, DEFAULT_MAX_EXTENSION));
            let mut last = String::new();
            let entries = archive.entries().map_err(|e| map_io(st, "", e))?;
            for (ordinal, item) in (0u64..).zip(entries) {
                let mut e = item.map_err(|x| map_io(st, &format!("after {last:?}"), x))?;
                if self.entries_left == 0 {
                    return Err(Error::LimitExceeded(format!(
                        "layer {} takes the image past {} tar entries (Limits::max_entries)",
                        st.name, self.limits.max_entries
                    )));
                }
                self.entries_left -= 1;
                let raw = read_entry(&mut e).map_err(|reason| {
                    st.invalid(&String::from_utf8_lossy(&e.path_bytes()), reason)
                })?;
                last.clone_from(&raw.path);
                self.on_entry(raw, ordinal, &mut e, st)?;
            }
        }
        let (blob, _, diff, _) = stream
            .finish()
            .map_err(|e| map_io(st, "(end of layer)", e))?;
        if let Some(blob) = blob
            && blob != layer.digest
        {
            return Err(Error::DigestMismatch {
                what: format!("layer blob {}", layer.path.display()),
                expected: layer.digest.clone(),
                actual: blob,
            });
        }
        if let Some(want) = &layer.diff_id
            && *want != diff
        {
            return Err(Error::DigestMismatch {
                what: format!("diff_id of layer {}", layer.digest),
                expected: want.clone(),
                actual: diff,
            });
        }
        Ok(())
    }

    fn on_entry(
        &mut self,
        raw: RawEntry,
        ordinal: u64,
        data: &mut dyn Read,
        st: &mut LayerState,
    ) -> Result<()> {
        let p = raw.path;
        match raw.kind {
            RawKind::Ignore => return Ok(()),
            RawKind::Whiteout => {
                let n = st.here.entry(p).or_insert(Node {
                    occ: Occ::Whiteout,
                    opaque: false,
                });
                if matches!(n.occ, Occ::Dir | Occ::Implicit) {
                    // This layer already has `p` as a directory: hide lower content only,
                    // like an opaque marker (the lower metadata of an implicit `p` still
                    // applies, as with umoci).
                    n.opaque = true;
                }
                return Ok(());
            }
            RawKind::Opaque => {
                st.here
                    .entry(p)
                    .or_insert(Node {
                        occ: Occ::Implicit,
                        opaque: false,
                    })
                    .opaque = true;
                return Ok(());
            }
            _ => {}
        }
        if p.is_empty() {
            // The root's own entry ("./"): the root always exists; its metadata is the sink's.
            return if raw.kind.is_dir() {
                Ok(())
            } else {
                Err(st.invalid("/", "root entry is not a directory"))
            };
        }
        for a in ancestors(&p) {
            if let Some(n) = st.here.get_mut(a) {
                match n.occ {
                    Occ::NonDir => {
                        return Err(st.invalid(&p, format!("parent {a:?} is not a directory in this layer (symlink or file); refusing to write through it")));
                    }
                    // Deleted lower, re-created implicitly here: lower content stays hidden.
                    Occ::Whiteout => {
                        *n = Node {
                            occ: Occ::Dir,
                            opaque: true,
                        }
                    }
                    Occ::Dir | Occ::Implicit => {}
                }
            } else if !a.is_empty() {
                st.here.insert(
                    a.to_string(),
                    Node {
                        occ: Occ::Implicit,
                        opaque: false,
                    },
                );
            }
        }
        let prev = st.here.get(&p).copied();
        let shadowed = self.shadowed(&p, &raw.kind, st)?;
        let is_dir = raw.kind.is_dir();
        if let Some(prev) = prev
            && !shadowed
        {
            let both_dirs = is_dir && matches!(prev.occ, Occ::Dir | Occ::Implicit);
            if !both_dirs && prev.occ != Occ::Whiteout {
                // Duplicate of one path in one layer with another kind: the last one wins.
                self.sink.remove(&p).map_err(|source| Error::Sink {
                    path: p.clone(),
                    source,
                })?;
                st.names.remove(&p);
            }
        }
        let node = if is_dir {
            Node {
                occ: Occ::Dir,
                opaque: prev.is_some_and(|n| n.opaque || n.occ == Occ::Whiteout),
            }
        } else {
            Node {
                occ: Occ::NonDir,
                opaque: false,
            }
        };
        st.here.insert(p.clone(), node);
        let meta = raw.meta;
        match raw.kind {
            RawKind::Dir => {
                if let Some(links) = self.pending.get(&p) {
                    let l = links.first().map(|l| l.path.clone()).unwrap_or_default();
                    return Err(st.invalid(&l, format!("hardlink to directory {p:?}")));
                }
                if !shadowed {
                    self.emit(
                        &Entry {
                            path: p,
                            kind: EntryKind::Directory,
                            meta,
                        },
                        None,
                    )?;
                }
            }
            RawKind::Hardlink { target } => {
                if target == p {
                    return Err(st.invalid(&p, "hardlink to itself"));
                }
                let links = self.pending.remove(&p).unwrap_or_default();
                let id = match st.names.get(&target) {
                    Some(&tid) => {
                        if !shadowed {
                            self.link_into(st, tid, p.clone())?;
                        }
                        tid
                    }
                    None => {
                        if st
                            .here
                            .get(&target)
                            .is_some_and(|n| matches!(n.occ, Occ::Dir | Occ::Implicit))
                        {
                            return Err(st.invalid(&p, format!("hardlink to directory {target:?}")));
                        }
                        st.inodes.push(Inode {
                            ordinal,
                            kind: RawKind::Hardlink {
                                target: target.clone(),
                            },
                            meta,
                            holder: Holder::Lower(target.clone()),
                        });
                        if !shadowed {
                            st.new_pending.entry(target).or_default().push(PendingLink {
                                path: p.clone(),
                                origin: st.index,
                            });
                        }
                        st.inodes.len() - 1
                    }
                };
                st.names.insert(p, id);
                for l in links {
                    self.link_into(st, id, l.path)?;
                }
            }
            kind => {
                let id = st.inodes.len();
                st.inodes.push(Inode {
                    ordinal,
                    kind: kind.clone(),
                    meta: meta.clone(),
                    holder: Holder::Nowhere,
                });
                st.names.insert(p.clone(), id);
                let mut links = self.pending.remove(&p).unwrap_or_default().into_iter();
                let has_data = matches!(kind, RawKind::File { .. });
                if !shadowed {
                    let entry = Entry {
                        path: p.clone(),
                        kind: kind_of(&kind),
                        meta,
                    };
                    self.emit(&entry, if has_data { Some(data) } else { None })?;
                    st.inodes[id].holder = Holder::Emitted(p);
                } else if has_data && let Some(first) = links.next() {
                    // The target is shadowed but links from above need its content: the first
                    // link becomes a copy carrying this data (PITFALLS #2).
                    let entry = Entry {
                        path: first.path.clone(),
                        kind: kind_of(&kind),
                        meta,
                    };
                    self.emit(&entry, Some(data))?;
                    st.inodes[id].holder = Holder::Emitted(first.path);
                }
                for l in links {
                    self.link_into(st, id, l.path)?;
                }
            }
        }
        Ok(())
    }

    /// Emits (or schedules) `path` as another name of inode `id` of the current layer.
    fn link_into(&mut self, st: &mut LayerState, id: usize, path: String) -> Result<()> {
        let inode = &st.inodes[id];
        let meta = inode.meta.clone();
        match inode.holder.clone() {
            Holder::Emitted(q) => self.emit(
                &Entry {
                    path,
                    kind: EntryKind::Hardlink { target: q },
                    meta,
                },
                None,
            ),
            Holder::Deferred(q) => {
                st.deferred.push(Deferred::Link {
                    path,
                    target: q,
                    meta,
                });
                Ok(())
            }
            Holder::Lower(t) => {
                st.new_pending.entry(t).or_default().push(PendingLink {
                    path,
                    origin: st.index,
                });
                Ok(())
            }
            Holder::Nowhere => {
                if matches!(inode.kind, RawKind::File { .. }) {
                    let ordinal = inode.ordinal;
                    st.inodes[id].holder = Holder::Deferred(path.clone());
                    st.deferred.push(Deferred::Materialise {
                        ordinal,
                        path,
                        meta,
                    });
                    Ok(())
                } else {
                    let kind = kind_of(&inode.kind);
                    st.inodes[id].holder = Holder::Emitted(path.clone());
                    self.emit(&Entry { path, kind, meta }, None)
                }
            }
        }
    }

    /// Second pass over a layer for shadowed same-layer hardlink targets.
    fn reread(&mut self, layer: &LayerInput, st: &mut LayerState) -> Result<()> {
        let deferred = std::mem::take(&mut st.deferred);
        let mut wanted: HashMap<u64, Vec<(String, Metadata)>> = HashMap::new();
        let mut links = Vec::new();
        for d in deferred {
            match d {
                Deferred::Materialise {
                    ordinal,
                    path,
                    meta,
                } => wanted.entry(ordinal).or_default().push((path, meta)),
                Deferred::Link { path, target, meta } => links.push(Entry {
                    path,
                    kind: EntryKind::Hardlink { target },
                    meta,
                }),
            }
        }
        self.stats.layers_reread += 1;
        let file = std::fs::File::open(&layer.path)
            .map_err(|e| Error::io(format!("open layer {}", layer.path.display()), e))?;
        let mut stream = LayerStream::open(file, false, None).map_err(|e| map_io(st, "", e))?;
        let mut archive =
            tar::Archive::new(TarGuard::new(&mut stream.reader, DEFAULT_MAX_EXTENSION));
        let entries = archive.entries().map_err(|e| map_io(st, "", e))?;
        for (ordinal, item) in (0u64..).zip(entries) {
            if wanted.is_empty() {
                break;
            }
            let mut e = item.map_err(|x| map_io(st, "(re-read)", x))?;
            if let Some(targets) = wanted.remove(&ordinal) {
                let size = e.size();
                for (path, meta) in targets {
                    self.emit(
                        &Entry {
                            path,
                            kind: EntryKind::File { size },
                            meta,
                        },
                        Some(&mut e),
                    )?;
                }
            }
        }
        if !wanted.is_empty() {
            return Err(st.invalid("", "layer changed between reads"));
        }
        for l in links {
            self.emit(&l, None)?;
        }
        Ok(())
    }

    fn end_layer(&mut self, st: &mut LayerState) -> Result<()> {
        let hidden = |t: &str, full: bool| {
            ancestors(t).any(|a| {
                st.here.get(a).is_some_and(|n| {
                    n.opaque || n.occ == Occ::Whiteout || (full && n.occ == Occ::NonDir)
                })
            }) || st.here.get(t).is_some_and(|n| n.occ == Occ::Whiteout)
        };
        for (t, links) in self.pending.iter().chain(st.new_pending.iter()) {
            let full = links.first().is_some_and(|l| l.origin != st.index);
            if hidden(t, full)
                && let Some(l) = links.first()
            {
                return Err(st.invalid(
                    &l.path,
                    format!("hardlink target {t:?} does not exist when the link is created"),
                ));
            }
        }
        for (t, links) in st.new_pending.drain() {
            self.pending.entry(t).or_default().extend(links);
        }
        for (p, n) in st.here.drain() {
            match self.above.get_mut(&p) {
                None => {
                    self.above.insert(p, n);
                }
                Some(a) => match (a.occ, n.occ) {
                    (Occ::Implicit | Occ::Dir, Occ::Implicit | Occ::Dir) => {
                        if n.occ == Occ::Dir {
                            a.occ = Occ::Dir;
                        }
                        a.opaque |= n.opaque;
                    }
                    // Lower content at `p` was replaced or deleted here: whatever is below
                    // stays hidden under the directory from above.
                    (Occ::Implicit | Occ::Dir, Occ::NonDir | Occ::Whiteout) => {
                        *a = Node {
                            occ: Occ::Dir,
                            opaque: true,
                        }
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }
}

/// Merges `layers` (bottom first, as listed in the manifest) into `sink`.
///
/// Each layer is decompressed once, except for the rare re-read documented in the module
/// docs. Blob digests and `diff_id`s are verified at the end of each layer; on any error
/// the sink's content must be discarded.
pub fn flatten(
    layers: &[LayerInput],
    sink: &mut dyn EntrySink,
    limits: &Limits,
) -> Result<FlattenStats> {
    flatten_as_ready(layers.len(), &mut |i| Ok(layers[i].clone()), sink, limits)
}

/// Like [`flatten`], but asks `layer_at(index)` for each layer, newest first, just before
/// merging it, so a caller can start merging the top layer while lower ones are still
/// downloading (`layer_at` blocks until its layer is there).
pub fn flatten_as_ready(
    count: usize,
    layer_at: &mut dyn FnMut(usize) -> Result<LayerInput>,
    sink: &mut dyn EntrySink,
    limits: &Limits,
) -> Result<FlattenStats> {
    let mut layers: Vec<Option<LayerInput>> = vec![None; count];
    let mut m = Merger {
        layer_name: String::new(),
        sink,
        above: HashMap::new(),
        pending: HashMap::new(),
        stats: FlattenStats::default(),
        entries_left: limits.max_entries,
        blob_bytes_read: limits.blob_bytes_read.clone(),
        limits: limits.clone(),
    };
    let budget = Rc::new(RefCell::new(limits.max_unpacked_bytes));
    for index in (0..count).rev() {
        let layer = &*layers[index].insert(layer_at(index)?);
        let mut st = LayerState {
            index,
            name: layer.digest.to_string(),
            here: HashMap::new(),
            names: HashMap::new(),
            inodes: Vec::new(),
            new_pending: HashMap::new(),
            deferred: Vec::new(),
            unpacked_limit: limits.max_unpacked_bytes,
        };
        m.layer_name = st.name.clone();
        m.process_layer(layer, &mut st, budget.clone())?;
        if !st.deferred.is_empty() {
            m.reread(layer, &mut st)?;
        }
        m.end_layer(&mut st)?;
    }
    if let Some((t, links)) = m.pending.iter().next() {
        let l = links.first().map(|l| l.path.clone()).unwrap_or_default();
        let layer = links
            .first()
            .and_then(|l| layers.get(l.origin))
            .and_then(|x| x.as_ref())
            .map(|x| x.digest.to_string())
            .unwrap_or_default();
        return Err(Error::InvalidLayer {
            layer,
            entry: l,
            reason: format!("hardlink target {t:?} not found in this or any lower layer"),
        });
    }
    Ok(m.stats)
}

fn map_io(st: &LayerState, entry: &str, e: std::io::Error) -> Error {
    classify_io(&st.name, entry, e, st.unpacked_limit)
}

fn classify_io(layer: &str, entry: &str, e: std::io::Error, unpacked_limit: u64) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<BudgetExhausted>()) {
        return Error::LimitExceeded(format!(
            "layer {layer} unpacks past the image's budget of {} (Limits::max_unpacked_bytes; \
             by default {UNPACKED_PER_COMPRESSED_BYTE}× the compressed layers, between {} and {})",
            human_bytes(unpacked_limit),
            human_bytes(MIN_UNPACKED_BYTES),
            human_bytes(MAX_UNPACKED_BYTES),
        ));
    }
    Error::InvalidLayer {
        layer: layer.to_string(),
        entry: entry.to_string(),
        reason: format!("corrupt or truncated layer: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unpacked_budget_follows_the_compressed_size_within_bounds() {
        let budget = |compressed| Limits::for_compressed_size(compressed).max_unpacked_bytes;
        assert_eq!(budget(0), MIN_UNPACKED_BYTES);
        assert_eq!(budget(3 << 20), MIN_UNPACKED_BYTES);
        assert_eq!(budget(100 << 20), 2000 << 20);
        assert_eq!(budget(10 << 30), MAX_UNPACKED_BYTES);
        assert_eq!(budget(u64::MAX), MAX_UNPACKED_BYTES);
        assert_eq!(Limits::default().max_unpacked_bytes, MAX_UNPACKED_BYTES);
    }
}
