//! The writer: streams file data at `add`, lays out and writes metadata at `finish`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::dir::{self, Entry};
use crate::extent::{self, Extent};
use crate::htree;
use crate::inode::{self, InodeRec};
use crate::layout::{
    Allocator, BLOCK_SIZE, BLOCKS_PER_GROUP, INODES_PER_BLOCK, MAX_INODES_PER_GROUP, gdt_blocks,
    is_backup_group, reserved_gdt_for,
};
use crate::superblock::{self, GroupDesc, SuperParams};
use crate::tree::{Body, InodeData, InodeId, NodeId, ROOT, Tree};
use crate::xattr::{self, Attr};
use crate::{EntryKind, Error, Metadata, Options, SizePolicy, Summary, Timestamp};

const BS: u64 = BLOCK_SIZE;
/// GDT room reserved behind each superblock copy when the final size is not known yet:
/// 128 blocks of 64-byte descriptors cover 8192 groups (1 TiB); what the final size does not
/// need becomes reserved GDT blocks for online growth (resize_inode).
const AUTO_GDT_AREA: u64 = 128;
/// Blocks per read of file data.
const CHUNK_BLOCKS: usize = 64;
const LOST_FOUND_BLOCKS: usize = 4;
const MAX_FILE_BLOCKS: u64 = 1 << 32;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the temporary image unless disarmed (after the final rename).
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub struct Ext4Writer {
    file: File,
    tmp: TempFile,
    dest: PathBuf,
    opts: Options,
    gdt_area: u64,
    alloc: Allocator,
    tree: Tree,
    buf: Vec<u8>,
    data_bytes: u64,
}

fn invalid(path: &Path, reason: &'static str) -> Error {
    Error::InvalidPath {
        path: path.to_path_buf(),
        reason,
    }
}

/// Splits a relative '/'-separated path; "" and "." are the root (no components).
fn components(path: &Path) -> Result<Vec<&[u8]>, Error> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.first() == Some(&b'/') {
        return Err(invalid(path, "absolute path"));
    }
    let mut out = Vec::new();
    for c in bytes.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(invalid(path, "'..' component")),
            c if c.len() > 255 => return Err(invalid(path, "name longer than 255 bytes")),
            c if c.contains(&0) => return Err(invalid(path, "NUL in name")),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn encode_attrs(path: &Path, meta: &Metadata) -> Result<Vec<Attr>, Error> {
    let mut attrs = Vec::with_capacity(meta.xattrs.len());
    for x in &meta.xattrs {
        let a = xattr::encode(&x.name, &x.value).ok_or_else(|| Error::UnsupportedXattr {
            path: path.to_path_buf(),
            name: String::from_utf8_lossy(&x.name).into_owned(),
        })?;
        // Later duplicates win, like repeated setxattr.
        attrs.retain(|o: &Attr| !(o.index == a.index && o.suffix == a.suffix));
        attrs.push(a);
    }
    xattr::sort(&mut attrs);
    if !xattr::fits_ibody(&attrs) && !xattr::fits_block(&attrs) {
        return Err(Error::XattrTooLarge(path.to_path_buf()));
    }
    Ok(attrs)
}

/// Reads until `buf` is full or EOF; returns bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

static ZERO_BLOCK: [u8; BS as usize] = [0; BS as usize];

/// Slice equality compiles to memcmp, fast even in unoptimized builds.
fn is_zero(b: &[u8]) -> bool {
    b == &ZERO_BLOCK[..b.len()]
}

impl Ext4Writer {
    /// Creates the output (nothing visible at `path` until `finish` succeeds).
    pub fn create(path: &Path, opts: Options) -> Result<Self, Error> {
        if let Some(l) = &opts.volume_label
            && l.len() > 16
        {
            return Err(Error::InvalidOptions(
                "volume label longer than 16 bytes".into(),
            ));
        }
        if opts.inode_ratio < 1024 {
            return Err(Error::InvalidOptions("inode_ratio below 1024".into()));
        }
        if let Some(j) = opts.journal_blocks
            && j < 1024
        {
            return Err(Error::InvalidOptions("journal below 1024 blocks".into()));
        }
        let gdt_area = match opts.size {
            SizePolicy::Exact(bytes) => {
                let blocks = bytes / BS;
                let reserve = if opts.online_resize {
                    reserved_gdt_for(blocks)
                } else {
                    0
                };
                gdt_blocks(blocks.div_ceil(BLOCKS_PER_GROUP).max(1)) + reserve
            }
            SizePolicy::Auto { .. } => AUTO_GDT_AREA,
        };
        let name = path
            .file_name()
            .ok_or_else(|| invalid(path, "output path has no file name"))?;
        let tmp_path = path.with_file_name(format!(
            ".{}.tmp-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp_path)?;
        let tmp = TempFile {
            path: tmp_path,
            armed: true,
        };
        let mut tree = Tree::new();
        let lf = tree.new_dir(
            Metadata {
                mode: 0o700,
                ..Metadata::default()
            },
            Vec::new(),
        );
        tree.attach(ROOT, b"lost+found", lf);
        Ok(Ext4Writer {
            file,
            tmp,
            dest: path.to_path_buf(),
            opts,
            gdt_area,
            alloc: Allocator::new(gdt_area),
            tree,
            buf: vec![0u8; CHUNK_BLOCKS * BS as usize],
            data_bytes: 0,
        })
    }

    /// Adds one entry. `path` is relative to the root, '/'-separated; "" or "." is the root
    /// itself (directory metadata only). Missing parents are created (0755, root, mtime 0);
    /// a `Directory` at an existing directory only updates its metadata; anything else at
    /// an existing path replaces it (a replaced directory drops its subtree). A `Hardlink`
    /// target must already exist and not be a directory; the link shares its inode. File
    /// data is written to its final place before this returns.
    pub fn add(&mut self, path: &Path, meta: &Metadata, kind: EntryKind<'_>) -> Result<(), Error> {
        let comps = components(path)?;
        let attrs = encode_attrs(path, meta)?;
        let mut meta = meta.clone();
        meta.mode &= 0o7777;
        meta.xattrs.clear();
        let Some((name, parents)) = comps.split_last() else {
            return match kind {
                EntryKind::Directory => {
                    let ino = self.tree.nodes[ROOT].inode;
                    self.tree.inodes[ino].meta = meta;
                    self.tree.inodes[ino].attrs = attrs;
                    Ok(())
                }
                _ => Err(Error::RootNotDirectory),
            };
        };
        let parent = self
            .tree
            .ensure_dirs(parents)
            .map_err(|()| Error::NotADirectory(path.to_path_buf()))?;
        let existing = self.tree.child(parent, name);
        let body = match kind {
            EntryKind::Directory => {
                if let Some(n) = existing
                    && self.tree.nodes[n].children.is_some()
                {
                    let ino = self.tree.nodes[n].inode;
                    self.tree.inodes[ino].meta = meta;
                    self.tree.inodes[ino].attrs = attrs;
                    return Ok(());
                }
                Body::Dir
            }
            EntryKind::File { size, data } => self.stream_file(path, size, data)?,
            EntryKind::Symlink { target } => self.symlink(path, target.as_bytes())?,
            EntryKind::Hardlink { target } => {
                let tcomps = components(target)?;
                let t = self
                    .tree
                    .lookup(&tcomps)
                    .ok()
                    .flatten()
                    .filter(|_| !tcomps.is_empty())
                    .ok_or_else(|| Error::NotFound(target.to_path_buf()))?;
                if self.tree.nodes[t].children.is_some() {
                    return Err(Error::HardlinkToDirectory(target.to_path_buf()));
                }
                if existing == Some(t) {
                    return Ok(());
                }
                let ino = self.tree.nodes[t].inode;
                let node = self.tree.new_node(ino);
                self.tree.attach(parent, name, node);
                return Ok(());
            }
            EntryKind::CharDevice { major, minor } => Body::Char { major, minor },
            EntryKind::BlockDevice { major, minor } => Body::Block { major, minor },
            EntryKind::Fifo => Body::Fifo,
            EntryKind::Socket => Body::Socket,
        };
        let ino = self.tree.new_inode(InodeData { meta, attrs, body });
        let node = self.tree.new_node(ino);
        self.tree.attach(parent, name, node);
        Ok(())
    }

    /// Removes a path (and its subtree). Missing path → `Ok(false)`.
    pub fn remove(&mut self, path: &Path) -> Result<bool, Error> {
        let comps = components(path)?;
        let Some((name, parents)) = comps.split_last() else {
            return Err(invalid(path, "cannot remove the root"));
        };
        match self.tree.lookup(parents) {
            Ok(Some(p)) => Ok(self.tree.detach(p, name)),
            _ => Ok(false),
        }
    }

    fn write_blocks(
        &mut self,
        logical: u64,
        data: &[u8],
        extents: &mut Vec<Extent>,
    ) -> Result<(), Error> {
        let mut k = 0u64;
        let n = data.len() as u64 / BS;
        while k < n {
            let (start, len) = self.alloc.alloc_run(n - k);
            let bytes = &data[(k * BS) as usize..((k + len) * BS) as usize];
            self.file.write_all_at(bytes, start * BS)?;
            extent::push(extents, (logical + k) as u32, start, len);
            self.data_bytes += bytes.len() as u64;
            k += len;
        }
        Ok(())
    }

    fn stream_file(&mut self, path: &Path, size: u64, data: &mut dyn Read) -> Result<Body, Error> {
        if size.div_ceil(BS) > MAX_FILE_BLOCKS {
            return Err(Error::FileTooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        let mut buf = std::mem::take(&mut self.buf);
        let res = self.stream_into(path, size, data, &mut buf);
        self.buf = buf;
        res.map(|extents| Body::File { size, extents })
    }

    fn stream_into(
        &mut self,
        path: &Path,
        size: u64,
        data: &mut dyn Read,
        buf: &mut [u8],
    ) -> Result<Vec<Extent>, Error> {
        let bs = BS as usize;
        let mut extents = Vec::new();
        let mut logical = 0u64;
        let mut done = 0u64;
        while done < size {
            let want = (size - done).min(buf.len() as u64) as usize;
            let got = read_full(data, &mut buf[..want])?;
            if got < want {
                return Err(Error::ShortRead {
                    path: path.to_path_buf(),
                    expected: size,
                    got: done + got as u64,
                });
            }
            let nblocks = want.div_ceil(bs);
            buf[want..nblocks * bs].fill(0);
            // Runs of non-zero blocks are written; all-zero blocks become holes.
            let mut i = 0;
            while i < nblocks {
                if is_zero(&buf[i * bs..(i + 1) * bs]) {
                    i += 1;
                    continue;
                }
                let mut j = i + 1;
                while j < nblocks && !is_zero(&buf[j * bs..(j + 1) * bs]) {
                    j += 1;
                }
                self.write_blocks(logical + i as u64, &buf[i * bs..j * bs], &mut extents)?;
                i = j;
            }
            logical += nblocks as u64;
            done += want as u64;
        }
        Ok(extents)
    }

    fn symlink(&mut self, path: &Path, target: &[u8]) -> Result<Body, Error> {
        if target.is_empty() || target.contains(&0) {
            return Err(invalid(path, "empty symlink target or NUL in it"));
        }
        if target.len() >= BS as usize {
            return Err(Error::SymlinkTooLong(path.to_path_buf()));
        }
        let mut extents = Vec::new();
        if target.len() >= 60 {
            let mut block = vec![0u8; BS as usize];
            block[..target.len()].copy_from_slice(target);
            self.write_blocks(0, &block, &mut extents)?;
        }
        Ok(Body::Symlink {
            target: target.to_vec(),
            extents,
        })
    }

    /// Lays out metadata, writes it, fsyncs, renames into place.
    pub fn finish(mut self) -> Result<Summary, Error> {
        if self.tree.child(ROOT, b"lost+found").is_none() {
            let lf = self.tree.new_dir(
                Metadata {
                    mode: 0o700,
                    ..Metadata::default()
                },
                Vec::new(),
            );
            self.tree.attach(ROOT, b"lost+found", lf);
        }
        let seeds = Seeds::derive(&self.opts.seed);
        let ns = Namespace::build(&self.tree, &seeds.hash_words())?;
        let plan = self.size_and_plan(&ns)?;
        let summary = self.write_all(&ns, &plan, &seeds)?;
        self.file.sync_all()?;
        std::fs::rename(&self.tmp.path, &self.dest)?;
        self.tmp.armed = false;
        if let Some(dir) = self.dest.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(summary)
    }

    fn size_and_plan(&self, ns: &Namespace) -> Result<Plan, Error> {
        let data_end = self.alloc.next();
        match self.opts.size {
            SizePolicy::Exact(bytes) => {
                let mut total = bytes / BS;
                let groups = total.div_ceil(BLOCKS_PER_GROUP);
                let last = total - (groups.saturating_sub(1)) * BLOCKS_PER_GROUP;
                if groups > 1 && last < 1 + self.gdt_area + 64 {
                    total -= last; // a sliver of a group is not worth its overhead
                }
                if let Some(plan) = Plan::make(self, ns, data_end, total, 100)
                    && plan.end <= total
                {
                    return Ok(plan);
                }
                let needed = self.needed_exact(ns, data_end)?;
                Err(Error::TooSmall {
                    needed_bytes: needed * BS,
                    requested_bytes: bytes,
                })
            }
            SizePolicy::Auto {
                min_bytes,
                headroom_percent,
            } => {
                let total = self.auto_total(ns, data_end, min_bytes, headroom_percent.max(100))?;
                let plan = Plan::make(self, ns, data_end, total, headroom_percent.max(100))
                    .ok_or_else(|| Error::Limit("layout did not converge".into()))?;
                if gdt_blocks(plan.groups) > self.gdt_area {
                    return Err(Error::Limit(format!(
                        "filesystem of {} groups needs more than {} GDT blocks",
                        plan.groups, self.gdt_area
                    )));
                }
                Ok(plan)
            }
        }
    }

    /// A block count that works as `SizePolicy::Exact` for this content. A larger exact
    /// size reserves more GDT blocks behind each superblock copy, which pushes the
    /// streamed data further; that shift is added on top of the tight fit.
    fn needed_exact(&self, ns: &Namespace, data_end: u64) -> Result<u64, Error> {
        let mut cand = self.auto_total(ns, data_end, 0, 100)?;
        for _ in 0..16 {
            let groups = cand.div_ceil(BLOCKS_PER_GROUP).max(1);
            let area = gdt_blocks(groups) + reserved_gdt_for(cand);
            let backups = (0..groups).filter(|&g| is_backup_group(g)).count() as u64;
            let end = Plan::make(self, ns, data_end, cand, 100)
                .map(|p| p.end)
                .unwrap_or(cand + BLOCKS_PER_GROUP);
            // + 1: the resize inode's index block, if this layout had none.
            let mut next = end + area.saturating_sub(self.gdt_area) * backups + 1;
            let last = next % BLOCKS_PER_GROUP;
            if next > BLOCKS_PER_GROUP && last != 0 && last < 1 + area + 64 {
                next += BLOCKS_PER_GROUP - last;
            }
            if next <= cand {
                return Ok(cand);
            }
            cand = next;
        }
        Ok(cand)
    }

    /// Smallest block count (rounded to avoid a tiny last group) that holds everything
    /// with the given headroom.
    fn auto_total(
        &self,
        ns: &Namespace,
        data_end: u64,
        min_bytes: u64,
        headroom: u32,
    ) -> Result<u64, Error> {
        let round = |b: u64| -> u64 {
            let b = b.max(2048);
            let last = b % BLOCKS_PER_GROUP;
            if b > BLOCKS_PER_GROUP && last != 0 && last < 1 + self.gdt_area + 64 {
                b - last + BLOCKS_PER_GROUP
            } else {
                b
            }
        };
        let mut total = round(min_bytes.div_ceil(BS).max(data_end));
        for _ in 0..64 {
            let need = match Plan::make(self, ns, data_end, total, headroom) {
                Some(p) => p.end.saturating_mul(headroom as u64).div_ceil(100),
                None => total + total / 2 + BLOCKS_PER_GROUP,
            };
            let want = round(need.max(min_bytes.div_ceil(BS)));
            if want <= total {
                return Ok(total);
            }
            total = want;
        }
        Err(Error::Limit("sizing did not converge".into()))
    }

    fn write_all(&mut self, ns: &Namespace, plan: &Plan, seeds: &Seeds) -> Result<Summary, Error> {
        let csum_seed = superblock::csum_seed(&seeds.uuid);
        let mut used = metadata_blocks(plan);
        let mut ext_of = self.write_dirs(ns, plan, &seeds.hash_words(), csum_seed)?;
        if let Some(first) = plan.journal_runs.first() {
            let jsb = crate::journal::superblock(plan.journal_blocks as u32, &seeds.uuid);
            self.file.write_all_at(&jsb, first.0 * BS)?;
        }
        ext_of[superblock::JOURNAL_INO as usize] = journal_extents(plan);
        let recs = self.write_inode_records(ns, plan, csum_seed, ext_of, &mut used)?;
        self.write_inode_tables(ns, plan, recs, csum_seed)?;
        let groups = self.write_groups(ns, plan, &used, csum_seed)?;
        let params = self.super_params(plan, seeds, &groups);
        self.write_superblocks(plan, &params, &groups.gdt)?;
        let total = plan.total;
        let size_bytes = match self.opts.size {
            SizePolicy::Exact(b) => b,
            SizePolicy::Auto { .. } => total * BS,
        };
        self.file.set_len(size_bytes)?;
        let blocks_used = total - groups.free_blocks;
        Ok(Summary {
            size_bytes,
            used_bytes: blocks_used * BS,
            inodes: ns.max_ino as u64,
            blocks_used,
            blocks_total: total,
            inodes_total: plan.groups * plan.ipg,
            data_bytes_written: self.data_bytes,
            uuid: seeds.uuid,
        })
    }

    /// Writes every directory's blocks (linear or hash-indexed); returns the extents of
    /// each directory, by inode number.
    fn write_dirs(
        &mut self,
        ns: &Namespace,
        plan: &Plan,
        hash_seed: &[u32; 4],
        csum_seed: u32,
    ) -> Result<Vec<Vec<Extent>>, Error> {
        let mut ext_of: Vec<Vec<Extent>> = vec![Vec::new(); ns.max_ino as usize + 1];
        for (di, d) in ns.dirs.iter().enumerate() {
            let ino = ns.ino_of[self.tree.nodes[d.node].inode];
            let seed = inode::inode_seed(csum_seed, ino, 0);
            let children = self.tree.nodes[d.node].children.iter().flatten();
            let entries = children.map(|(name, &child)| {
                let id = self.tree.nodes[child].inode;
                Entry {
                    ino: ns.ino_of[id],
                    name,
                    file_type: file_type(&self.tree.inodes[id].body),
                }
            });
            let blocks = if d.indexed {
                let mut hashed: Vec<htree::Hashed> = entries
                    .map(|entry| htree::Hashed {
                        hash: htree::hash(entry.name, hash_seed),
                        entry,
                    })
                    .collect();
                hashed.sort_by(|a, b| (a.hash, a.entry.name).cmp(&(b.hash, b.entry.name)));
                htree::build(ino, d.parent_ino, &hashed, seed)
            } else {
                dir::build(ino, d.parent_ino, entries, d.min_blocks, seed)
            };
            debug_assert_eq!(blocks.len() as u64, d.nblocks * BS);
            let mut off = 0usize;
            let mut exts = Vec::new();
            for &(start, len) in &plan.dir_runs[di] {
                let bytes = &blocks[off..off + (len * BS) as usize];
                self.file.write_all_at(bytes, start * BS)?;
                extent::push(&mut exts, (off as u64 / BS) as u32, start, len);
                off += bytes.len();
            }
            ext_of[ino as usize] = exts;
        }
        Ok(ext_of)
    }

    /// Builds every inode's record, writing its extent tree blocks and external xattr
    /// block and marking them (and its data) in `used`. `ext_of` holds the extents of the
    /// inodes whose data this writer placed itself (directories, the journal).
    fn write_inode_records(
        &mut self,
        ns: &Namespace,
        plan: &Plan,
        csum_seed: u32,
        mut ext_of: Vec<Vec<Extent>>,
        used: &mut Bitmap,
    ) -> Result<Vec<Option<InodeRec>>, Error> {
        let mut recs: Vec<Option<InodeRec>> = (0..ns.max_ino as usize + 1).map(|_| None).collect();
        for ino in 1..=ns.max_ino {
            let id = ns.id_of[ino as usize];
            let exts: Vec<Extent> = match id.map(|id| &self.tree.inodes[id].body) {
                Some(Body::File { extents, .. }) | Some(Body::Symlink { extents, .. }) => {
                    extents.clone()
                }
                _ => std::mem::take(&mut ext_of[ino as usize]),
            };
            for e in &exts {
                used.set_range(e.phys, e.len as u64);
            }
            let seed = inode::inode_seed(csum_seed, ino, 0);
            let tree_nrs = &plan.tree_blocks[ino as usize];
            for &b in tree_nrs {
                used.set(b);
            }
            let tree = extent::build(&exts, tree_nrs, seed);
            for (nr, block) in &tree.blocks {
                self.file.write_all_at(block, nr * BS)?;
            }
            let sectors =
                (exts.iter().map(|e| e.len as u64).sum::<u64>() + tree_nrs.len() as u64) * 8;
            let rec = if ino == superblock::JOURNAL_INO {
                journal_inode(plan, sectors, tree.root)
            } else if ino == superblock::RESIZE_INO && plan.reserved_gdt > 0 {
                self.write_resize_blocks(plan, used)?
            } else if let Some(id) = id {
                let file = InodeFile {
                    ino,
                    exts: &exts,
                    tree_root: tree.root,
                    sectors,
                };
                self.tree_inode(ns, plan, id, file, csum_seed, used)?
            } else {
                // Reserved inodes other than root and journal: empty but checksummed.
                empty_inode()
            };
            recs[ino as usize] = Some(rec);
        }
        Ok(recs)
    }

    /// The record of an inode of the tree, writing its external xattr block if it needs one.
    fn tree_inode(
        &mut self,
        ns: &Namespace,
        plan: &Plan,
        id: InodeId,
        file: InodeFile<'_>,
        csum_seed: u32,
        used: &mut Bitmap,
    ) -> Result<InodeRec, Error> {
        let InodeFile {
            ino,
            exts,
            tree_root,
            mut sectors,
        } = file;
        let data = &self.tree.inodes[id];
        let mut file_acl = 0;
        let mut ibody = None;
        if !data.attrs.is_empty() {
            if xattr::fits_ibody(&data.attrs) {
                ibody = Some(xattr::build_ibody(&data.attrs));
            } else {
                let nr = plan.xattr_blocks[ino as usize];
                used.set(nr);
                self.file
                    .write_all_at(&xattr::build_block(&data.attrs, nr, csum_seed), nr * BS)?;
                file_acl = nr;
                sectors += 8;
            }
        }
        let (mode_type, size, flags, i_block) =
            type_size_flags(&data.body, exts, ns.indexed[ino as usize], tree_root);
        // symlink(2) ignores the umask and Linux never changes a link's mode:
        // every reference extraction (umoci, GNU tar, mkfs.ext4 -d) gives 0777,
        // whatever the tar header says.
        let perm = if mode_type == inode::S_IFLNK {
            0o777
        } else {
            data.meta.mode
        };
        Ok(InodeRec {
            mode: mode_type | perm,
            uid: data.meta.uid,
            gid: data.meta.gid,
            size,
            atime: data.meta.atime,
            ctime: data.meta.ctime,
            mtime: data.meta.mtime,
            crtime: data.meta.ctime,
            links: ns.links[ino as usize],
            sectors,
            flags,
            i_block,
            file_acl,
            ibody_xattrs: ibody,
        })
    }

    /// Writes the inode tables, one block at a time.
    fn write_inode_tables(
        &mut self,
        ns: &Namespace,
        plan: &Plan,
        mut recs: Vec<Option<InodeRec>>,
        csum_seed: u32,
    ) -> Result<(), Error> {
        let ipg = plan.ipg;
        let mut block = vec![0u8; BS as usize];
        let mut cur_block: Option<u64> = None;
        for ino in 1..=ns.max_ino {
            let idx = (ino - 1) as u64;
            let g = idx / ipg;
            let nr = plan.inode_tables[g as usize] + (idx % ipg) / INODES_PER_BLOCK;
            if cur_block != Some(nr) {
                if let Some(prev) = cur_block {
                    self.file.write_all_at(&block, prev * BS)?;
                }
                block.fill(0);
                cur_block = Some(nr);
            }
            if let Some(rec) = recs[ino as usize].take() {
                let raw = inode::encode(ino, &rec, csum_seed);
                let off = ((idx % INODES_PER_BLOCK) * 256) as usize;
                block[off..off + 256].copy_from_slice(&raw);
            }
        }
        if let Some(prev) = cur_block {
            self.file.write_all_at(&block, prev * BS)?;
        }
        Ok(())
    }

    /// Writes each group's block and inode bitmaps; returns the group descriptor table and
    /// the free counts.
    fn write_groups(
        &mut self,
        ns: &Namespace,
        plan: &Plan,
        used: &Bitmap,
        csum_seed: u32,
    ) -> Result<Groups, Error> {
        let (total, ipg) = (plan.total, plan.ipg);
        let mut gdt = vec![0u8; (gdt_blocks(plan.groups) * BS) as usize];
        let mut free_blocks_total = 0u64;
        let mut free_inodes_total = 0u64;
        // Bits past the group's inodes are always set.
        let mut inode_bitmap_padding = vec![0u8; BS as usize];
        for i in ipg..BS * 8 {
            inode_bitmap_padding[(i / 8) as usize] |= 1 << (i % 8);
        }
        let mut dirs_per_group = vec![0u32; plan.groups as usize];
        for &ino in &ns.dir_inos {
            dirs_per_group[((ino as u64 - 1) / ipg) as usize] += 1;
        }
        for g in 0..plan.groups {
            let bb = used.group(g);
            let bcount = bb.iter().map(|b| b.count_ones() as u64).sum::<u64>();
            let group_blocks = (total - g * BLOCKS_PER_GROUP).min(BLOCKS_PER_GROUP);
            let free_blocks = group_blocks - (bcount - (BLOCKS_PER_GROUP - group_blocks));
            self.file
                .write_all_at(bb, plan.block_bitmaps[g as usize] * BS)?;
            let first = g * ipg + 1;
            let used_inodes = (ns.max_ino as u64 + 1).saturating_sub(first).min(ipg);
            let mut ib = inode_bitmap_padding.clone();
            for i in 0..used_inodes {
                ib[(i / 8) as usize] |= 1 << (i % 8);
            }
            self.file
                .write_all_at(&ib, plan.inode_bitmaps[g as usize] * BS)?;
            let used_dirs = dirs_per_group[g as usize];
            let desc = GroupDesc {
                block_bitmap: plan.block_bitmaps[g as usize],
                inode_bitmap: plan.inode_bitmaps[g as usize],
                inode_table: plan.inode_tables[g as usize],
                free_blocks: free_blocks as u32,
                free_inodes: (ipg - used_inodes) as u32,
                used_dirs,
                itable_unused: (ipg - used_inodes) as u32,
                block_bitmap_csum: crate::crc::crc32c_update(csum_seed, bb),
                inode_bitmap_csum: crate::crc::crc32c_update(csum_seed, &ib[..(ipg / 8) as usize]),
            };
            let raw = superblock::build_desc(&desc, g as u32, csum_seed);
            let off = (g * crate::layout::DESC_SIZE) as usize;
            gdt[off..off + raw.len()].copy_from_slice(&raw);
            free_blocks_total += free_blocks;
            free_inodes_total += ipg - used_inodes;
        }
        Ok(Groups {
            gdt,
            free_blocks: free_blocks_total,
            free_inodes: free_inodes_total,
        })
    }

    /// The superblock's fields; the journal inode's block map is copied into it as a backup.
    fn super_params(&self, plan: &Plan, seeds: &Seeds, groups: &Groups) -> SuperParams {
        let journal_rec_block = extent::build(
            &journal_extents(plan),
            &plan.tree_blocks[superblock::JOURNAL_INO as usize],
            0,
        )
        .root;
        let mut jnl_blocks = [0u32; 17];
        for (i, w) in journal_rec_block.chunks(4).enumerate() {
            jnl_blocks[i] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        }
        let jsize = plan.journal_blocks * BS;
        jnl_blocks[15] = (jsize >> 32) as u32;
        jnl_blocks[16] = jsize as u32;
        let mut label = [0u8; 16];
        if let Some(l) = &self.opts.volume_label {
            label[..l.len()].copy_from_slice(l.as_bytes());
        }
        SuperParams {
            blocks: plan.total,
            reserved_blocks: 0,
            free_blocks: groups.free_blocks,
            inodes: (plan.groups * plan.ipg) as u32,
            free_inodes: groups.free_inodes as u32,
            inodes_per_group: plan.ipg as u32,
            uuid: seeds.uuid,
            hash_seed: seeds.hash_seed,
            label,
            time: self.opts.fs_time,
            jnl_blocks,
            log_groups_per_flex: 4,
            reserved_gdt_blocks: plan.reserved_gdt as u16,
        }
    }

    /// Writes the superblock and the group descriptor table in group 0 and in every
    /// backup group.
    fn write_superblocks(
        &mut self,
        plan: &Plan,
        params: &SuperParams,
        gdt: &[u8],
    ) -> Result<(), Error> {
        for g in 0..plan.groups {
            if !is_backup_group(g) {
                continue;
            }
            let sb = superblock::build(params, g as u16);
            let base = g * BLOCKS_PER_GROUP * BS;
            self.file
                .write_all_at(&sb, if g == 0 { 1024 } else { base })?;
            self.file.write_all_at(gdt, base + BS)?;
        }
        Ok(())
    }
}

/// What [`Ext4Writer::write_groups`] leaves for the superblock.
struct Groups {
    gdt: Vec<u8>,
    free_blocks: u64,
    free_inodes: u64,
}

/// Where an inode's data went, for its record.
struct InodeFile<'a> {
    ino: u32,
    exts: &'a [Extent],
    tree_root: [u8; 60],
    sectors: u64,
}

/// The blocks every layout uses before any data: superblock copies with their GDTs, the
/// bitmaps and inode tables, and the padding bits past the end of the filesystem.
fn metadata_blocks(plan: &Plan) -> Bitmap {
    let mut used = Bitmap::new(plan.groups * BLOCKS_PER_GROUP);
    for g in 0..plan.groups {
        if is_backup_group(g) {
            used.set_range(
                g * BLOCKS_PER_GROUP,
                1 + gdt_blocks(plan.groups) + plan.reserved_gdt,
            );
        }
    }
    for g in 0..plan.groups as usize {
        used.set(plan.block_bitmaps[g]);
        used.set(plan.inode_bitmaps[g]);
        used.set_range(plan.inode_tables[g], plan.itb);
    }
    used.set_range(plan.total, plan.groups * BLOCKS_PER_GROUP - plan.total);
    used
}

/// The journal's runs as logical extents.
fn journal_extents(plan: &Plan) -> Vec<Extent> {
    let mut exts = Vec::new();
    let mut logical = 0u64;
    for &(start, len) in &plan.journal_runs {
        extent::push(&mut exts, logical as u32, start, len);
        logical += len;
    }
    exts
}

fn journal_inode(plan: &Plan, sectors: u64, i_block: [u8; 60]) -> InodeRec {
    InodeRec {
        mode: inode::S_IFREG | 0o600,
        size: plan.journal_blocks * BS,
        links: 1,
        sectors,
        flags: inode::EXTENTS_FL,
        i_block,
        ..empty_inode()
    }
}

fn empty_inode() -> InodeRec {
    InodeRec {
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        atime: Timestamp::default(),
        ctime: Timestamp::default(),
        mtime: Timestamp::default(),
        crtime: Timestamp::default(),
        links: 0,
        sectors: 0,
        flags: 0,
        i_block: [0u8; 60],
        file_acl: 0,
        ibody_xattrs: None,
    }
}

/// An inode's file type bits, size, flags and `i_block` (its extent tree root, a short
/// symlink's target, or a device number).
fn type_size_flags(
    body: &Body,
    exts: &[Extent],
    indexed: bool,
    tree_root: [u8; 60],
) -> (u16, u64, u32, [u8; 60]) {
    match body {
        Body::Dir => (
            inode::S_IFDIR,
            exts.iter().map(|e| e.len as u64).sum::<u64>() * BS,
            inode::EXTENTS_FL | if indexed { inode::INDEX_FL } else { 0 },
            tree_root,
        ),
        Body::File { size, .. } => (inode::S_IFREG, *size, inode::EXTENTS_FL, tree_root),
        Body::Symlink { target, .. } => {
            if target.len() < 60 {
                let mut ib = [0u8; 60];
                ib[..target.len()].copy_from_slice(target);
                (inode::S_IFLNK, target.len() as u64, 0, ib)
            } else {
                (
                    inode::S_IFLNK,
                    target.len() as u64,
                    inode::EXTENTS_FL,
                    tree_root,
                )
            }
        }
        Body::Char { major, minor } => (inode::S_IFCHR, 0, 0, inode::device_block(*major, *minor)),
        Body::Block { major, minor } => (inode::S_IFBLK, 0, 0, inode::device_block(*major, *minor)),
        Body::Fifo => (inode::S_IFIFO, 0, 0, [0u8; 60]),
        Body::Socket => (inode::S_IFSOCK, 0, 0, [0u8; 60]),
    }
}

impl Ext4Writer {
    /// Writes the resize inode's structures (the layout `mke2fs` uses): a double-indirect
    /// block whose slots point at the primary reserved GDT blocks, each of which lists its
    /// copies in the backup groups. Returns the inode record.
    fn write_resize_blocks(&mut self, plan: &Plan, used: &mut Bitmap) -> Result<InodeRec, Error> {
        let desc = gdt_blocks(plan.groups);
        let per_block = BS / 4;
        let backups: Vec<u64> = (1..plan.groups).filter(|&g| is_backup_group(g)).collect();
        let mut dind = vec![0u8; BS as usize];
        for r in 0..plan.reserved_gdt {
            let primary = 1 + desc + r;
            let slot = ((desc + r) % per_block) as usize;
            dind[slot * 4..slot * 4 + 4].copy_from_slice(&(primary as u32).to_le_bytes());
            let mut list = vec![0u8; BS as usize];
            for (i, g) in backups.iter().enumerate() {
                let copy = primary + g * BLOCKS_PER_GROUP;
                list[i * 4..i * 4 + 4].copy_from_slice(&(copy as u32).to_le_bytes());
            }
            self.file.write_all_at(&list, primary * BS)?;
        }
        self.file.write_all_at(&dind, plan.resize_dind * BS)?;
        used.set(plan.resize_dind);
        let blocks = 1 + plan.reserved_gdt * (1 + backups.len() as u64);
        let mut i_block = [0u8; 60];
        i_block[13 * 4..14 * 4].copy_from_slice(&(plan.resize_dind as u32).to_le_bytes());
        Ok(InodeRec {
            mode: inode::S_IFREG | 0o600,
            uid: 0,
            gid: 0,
            // What the double-indirect map could address, as mke2fs records it.
            size: (per_block * per_block + per_block + 12) * BS,
            atime: Timestamp::default(),
            ctime: Timestamp::default(),
            mtime: Timestamp::default(),
            crtime: Timestamp::default(),
            links: 1,
            sectors: blocks * 8,
            flags: 0,
            i_block,
            file_acl: 0,
            ibody_xattrs: None,
        })
    }
}

fn file_type(body: &Body) -> u8 {
    match body {
        Body::Dir => dir::FT_DIR,
        Body::File { .. } => dir::FT_REG,
        Body::Symlink { .. } => dir::FT_SYMLINK,
        Body::Char { .. } => dir::FT_CHR,
        Body::Block { .. } => dir::FT_BLK,
        Body::Fifo => dir::FT_FIFO,
        Body::Socket => dir::FT_SOCK,
    }
}

/// Identifiers derived from the caller's seed (SplitMix64; no clock, no randomness).
struct Seeds {
    uuid: [u8; 16],
    hash_seed: [u8; 16],
}

impl Seeds {
    fn derive(seed: &[u8; 16]) -> Self {
        let mut state = u64::from_le_bytes(seed[0..8].try_into().unwrap_or([0; 8]))
            ^ u64::from_le_bytes(seed[8..16].try_into().unwrap_or([0; 8])).rotate_left(29)
            ^ 0x6261_6e67_6572_3465; // "banger4e"
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut uuid = [0u8; 16];
        uuid[..8].copy_from_slice(&next().to_le_bytes());
        uuid[8..].copy_from_slice(&next().to_le_bytes());
        uuid[6] = (uuid[6] & 0x0F) | 0x40; // version 4 layout
        uuid[8] = (uuid[8] & 0x3F) | 0x80;
        let mut hash_seed = [0u8; 16];
        hash_seed[..8].copy_from_slice(&next().to_le_bytes());
        hash_seed[8..].copy_from_slice(&next().to_le_bytes());
        Seeds { uuid, hash_seed }
    }

    fn hash_words(&self) -> [u32; 4] {
        let mut w = [0u32; 4];
        for (i, c) in self.hash_seed.chunks(4).enumerate() {
            w[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        w
    }
}

struct DirInfo {
    node: NodeId,
    parent_ino: u32,
    min_blocks: usize,
    nblocks: u64,
    indexed: bool,
}

/// Inode numbering and link counts of everything reachable from the root.
struct Namespace {
    ino_of: Vec<u32>,
    /// Inode number → tree inode (None for reserved inodes).
    id_of: Vec<Option<InodeId>>,
    links: Vec<u16>,
    dirs: Vec<DirInfo>,
    dir_inos: Vec<u32>,
    /// Per inode number: directory has a hash index.
    indexed: Vec<bool>,
    max_ino: u32,
}

impl Namespace {
    fn build(tree: &Tree, hash_seed: &[u32; 4]) -> Result<Self, Error> {
        let mut ino_of = vec![0u32; tree.inodes.len()];
        let mut id_of: Vec<Option<InodeId>> = vec![None; 12];
        let mut nlinks: Vec<u32> = vec![0; 12];
        let root_id = tree.nodes[ROOT].inode;
        ino_of[root_id] = 2;
        id_of[2] = Some(root_id);
        let mut next = 11u32;
        if let Some(lf) = tree.child(ROOT, b"lost+found")
            && tree.nodes[lf].children.is_some()
        {
            let id = tree.nodes[lf].inode;
            ino_of[id] = 11;
            id_of[11] = Some(id);
            next = 12;
        }
        id_of.truncate(next as usize);
        nlinks.truncate(next as usize);
        let mut dirs = Vec::new();
        let mut queue = VecDeque::from([(ROOT, 2u32)]);
        while let Some((node, parent_ino)) = queue.pop_front() {
            let my_ino = ino_of[tree.nodes[node].inode];
            let mut subdirs = 0u32;
            let children = tree.nodes[node].children.iter().flatten();
            let mut name_lens = Vec::new();
            for (name, &child) in children {
                name_lens.push(name.len());
                let id = tree.nodes[child].inode;
                if ino_of[id] == 0 {
                    if next == u32::MAX {
                        return Err(Error::Limit("more than 2^32 inodes".into()));
                    }
                    ino_of[id] = next;
                    id_of.push(Some(id));
                    nlinks.push(0);
                    next += 1;
                }
                let ci = ino_of[id] as usize;
                if tree.nodes[child].children.is_some() {
                    subdirs += 1;
                    queue.push_back((child, my_ino));
                } else {
                    nlinks[ci] += 1;
                }
            }
            nlinks[my_ino as usize] = 2 + subdirs;
            let min_blocks = if my_ino == 11 { LOST_FOUND_BLOCKS } else { 1 };
            let mut nblocks = dir::count_blocks(name_lens.iter().copied(), min_blocks) as u64;
            // Directories of more than one block get a hash index, like the kernel builds.
            let mut indexed = false;
            if dir::count_blocks(name_lens.iter().copied(), 1) > 1 {
                let children = tree.nodes[node].children.iter().flatten();
                let mut hashed: Vec<(u32, &[u8])> = children
                    .map(|(name, _)| (htree::hash(name, hash_seed), name.as_slice()))
                    .collect();
                hashed.sort_unstable();
                if let Some(n) = htree::count_blocks(hashed.iter().map(|(_, n)| n.len())) {
                    nblocks = n as u64;
                    indexed = true;
                }
            }
            dirs.push(DirInfo {
                node,
                parent_ino,
                min_blocks,
                nblocks,
                indexed,
            });
        }
        let max_ino = next - 1;
        let mut links = vec![0u16; max_ino as usize + 1];
        for (i, &n) in nlinks.iter().enumerate() {
            let is_dir = id_of[i].is_some_and(|id| tree.inodes[id].is_dir());
            links[i] = if is_dir {
                if n >= 65000 { 1 } else { n as u16 }
            } else if n > 65000 {
                let path = PathBuf::from(format!("inode {i}"));
                return Err(Error::TooManyLinks(path));
            } else {
                n as u16
            };
        }
        links[superblock::JOURNAL_INO as usize] = 1;
        let dir_inos: Vec<u32> = dirs
            .iter()
            .map(|d| ino_of[tree.nodes[d.node].inode])
            .collect();
        let mut indexed = vec![false; max_ino as usize + 1];
        for (d, &ino) in dirs.iter().zip(&dir_inos) {
            indexed[ino as usize] = d.indexed;
        }
        Ok(Namespace {
            ino_of,
            id_of,
            links,
            dirs,
            dir_inos,
            indexed,
            max_ino,
        })
    }
}

/// Where every piece of metadata goes, for one candidate filesystem size.
struct Plan {
    total: u64,
    groups: u64,
    ipg: u64,
    itb: u64,
    journal_blocks: u64,
    block_bitmaps: Vec<u64>,
    inode_bitmaps: Vec<u64>,
    inode_tables: Vec<u64>,
    dir_runs: Vec<Vec<(u64, u64)>>,
    journal_runs: Vec<(u64, u64)>,
    /// Per inode number: extent tree blocks.
    tree_blocks: Vec<Vec<u64>>,
    /// Per inode number: external xattr block (0 = none).
    xattr_blocks: Vec<u64>,
    /// Reserved GDT blocks behind each superblock copy, and the resize inode's index block.
    reserved_gdt: u64,
    resize_dind: u64,
    /// First block after everything allocated.
    end: u64,
}

impl Plan {
    /// `None` when the inodes can not fit in `total` blocks at all.
    fn make(
        w: &Ext4Writer,
        ns: &Namespace,
        data_end: u64,
        total: u64,
        headroom: u32,
    ) -> Option<Plan> {
        let groups = total.div_ceil(BLOCKS_PER_GROUP).max(1);
        let by_ratio = (total * BS / w.opts.inode_ratio as u64).div_ceil(groups);
        let by_need = (ns.max_ino as u64 * headroom as u64 / 100).div_ceil(groups);
        let ipg = by_ratio
            .max(by_need)
            .max(INODES_PER_BLOCK)
            .next_multiple_of(INODES_PER_BLOCK)
            .min(MAX_INODES_PER_GROUP);
        if groups * ipg < ns.max_ino as u64 || groups * ipg > u32::MAX as u64 {
            return None;
        }
        let itb = ipg / INODES_PER_BLOCK;
        let journal_blocks = w
            .opts
            .journal_blocks
            .map(u64::from)
            .unwrap_or_else(|| crate::journal::default_blocks(total));
        let reserved_gdt = w.gdt_area.saturating_sub(gdt_blocks(groups)).min(1024);
        let mut a = Allocator::resume(w.gdt_area, data_end);
        let resize_dind = if reserved_gdt > 0 {
            a.alloc_contig(1)
        } else {
            0
        };
        let block_bitmaps: Vec<u64> = (0..groups).map(|_| a.alloc_contig(1)).collect();
        let inode_bitmaps: Vec<u64> = (0..groups).map(|_| a.alloc_contig(1)).collect();
        let inode_tables: Vec<u64> = (0..groups).map(|_| a.alloc_contig(itb)).collect();
        let dir_runs: Vec<Vec<(u64, u64)>> = ns
            .dirs
            .iter()
            .map(|d| {
                if d.nblocks <= 1024 {
                    vec![(a.alloc_contig(d.nblocks), d.nblocks)]
                } else {
                    a.alloc_extents(d.nblocks)
                }
            })
            .collect();
        let journal_runs = a.alloc_extents(journal_blocks);
        let n = ns.max_ino as usize + 1;
        let mut tree_blocks = vec![Vec::new(); n];
        let mut xattr_blocks = vec![0u64; n];
        let count_runs = |runs: &[(u64, u64)]| {
            let mut v = Vec::new();
            let mut l = 0u64;
            for &(s, len) in runs {
                extent::push(&mut v, l as u32, s, len);
                l += len;
            }
            v.len()
        };
        for (di, d) in ns.dirs.iter().enumerate() {
            let ino = ns.ino_of[w.tree.nodes[d.node].inode] as usize;
            let k = extent::tree_blocks(count_runs(&dir_runs[di]));
            tree_blocks[ino] = (0..k).map(|_| a.alloc_contig(1)).collect();
        }
        let jk = extent::tree_blocks(count_runs(&journal_runs));
        tree_blocks[superblock::JOURNAL_INO as usize] =
            (0..jk).map(|_| a.alloc_contig(1)).collect();
        for ino in 1..n {
            let Some(id) = ns.id_of[ino] else { continue };
            let data = &w.tree.inodes[id];
            if let Body::File { extents, .. } | Body::Symlink { extents, .. } = &data.body {
                let k = extent::tree_blocks(extents.len());
                tree_blocks[ino] = (0..k).map(|_| a.alloc_contig(1)).collect();
            }
            if !data.attrs.is_empty() && !xattr::fits_ibody(&data.attrs) {
                xattr_blocks[ino] = a.alloc_contig(1);
            }
        }
        Some(Plan {
            total,
            groups,
            ipg,
            itb,
            journal_blocks,
            block_bitmaps,
            inode_bitmaps,
            inode_tables,
            dir_runs,
            journal_runs,
            tree_blocks,
            xattr_blocks,
            reserved_gdt,
            resize_dind,
            end: a.next(),
        })
    }
}

/// Whole-filesystem block bitmap (one bit per block: O(size / 32768) bytes).
struct Bitmap {
    bits: Vec<u8>,
}

impl Bitmap {
    fn new(blocks: u64) -> Self {
        Bitmap {
            bits: vec![0u8; blocks.div_ceil(8) as usize],
        }
    }
    fn set(&mut self, b: u64) {
        if let Some(byte) = self.bits.get_mut((b / 8) as usize) {
            *byte |= 1 << (b % 8);
        }
    }
    fn set_range(&mut self, start: u64, len: u64) {
        let mut b = start;
        let end = start + len;
        while b < end && !b.is_multiple_of(8) {
            self.set(b);
            b += 1;
        }
        while b + 8 <= end {
            if let Some(byte) = self.bits.get_mut((b / 8) as usize) {
                *byte = 0xFF;
            }
            b += 8;
        }
        while b < end {
            self.set(b);
            b += 1;
        }
    }
    fn group(&self, g: u64) -> &[u8] {
        let per = (BLOCKS_PER_GROUP / 8) as usize;
        &self.bits[g as usize * per..(g as usize + 1) * per]
    }
}
