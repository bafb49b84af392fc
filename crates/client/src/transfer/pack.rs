//! What an upload packs: a local file or tree, walked without following symlinks, written
//! as a tar stream under the name it gets in the guest.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// One thing to pack, relative to the tree's source (`""` is the source itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub rel: PathBuf,
    pub kind: Kind,
    /// File bytes (0 for others).
    pub size: u64,
}

/// A local file or directory tree and the entries of it to pack, sorted so that every
/// directory comes before what is in it.
#[derive(Debug, Clone)]
pub struct Tree {
    pub source: PathBuf,
    pub entries: Vec<Entry>,
    /// Special files (sockets, fifos, devices) left out.
    pub skipped: Vec<PathBuf>,
}

impl Tree {
    /// Everything under `source` (or `source` alone when it is not a directory).
    pub fn of(source: &Path, meta: &std::fs::Metadata) -> anyhow::Result<Tree> {
        let mut tree = Tree {
            source: source.to_path_buf(),
            entries: Vec::new(),
            skipped: Vec::new(),
        };
        match kind_of(meta) {
            Some(kind) => tree.entries.push(Entry {
                rel: PathBuf::new(),
                kind,
                size: if kind == Kind::File { meta.len() } else { 0 },
            }),
            None => anyhow::bail!("{} is not a file, directory or symlink", source.display()),
        }
        if meta.is_dir() {
            tree.walk(Path::new(""))?;
        }
        tree.sort();
        Ok(tree)
    }

    /// Adds everything below `rel` (a directory), not following symlinks.
    pub fn walk(&mut self, rel: &Path) -> anyhow::Result<()> {
        let dir = self.source.join(rel);
        let read = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for item in read {
            let item = item.with_context(|| format!("reading {}", dir.display()))?;
            let child = rel.join(item.file_name());
            let meta = std::fs::symlink_metadata(self.source.join(&child))
                .with_context(|| format!("reading {}", self.source.join(&child).display()))?;
            self.add(child.clone(), &meta);
            if meta.is_dir() {
                self.walk(&child)?;
            }
        }
        Ok(())
    }

    /// Adds one path (not what is below it).
    pub fn add(&mut self, rel: PathBuf, meta: &std::fs::Metadata) {
        match kind_of(meta) {
            Some(kind) => self.entries.push(Entry {
                rel,
                kind,
                size: if kind == Kind::File { meta.len() } else { 0 },
            }),
            None => self.skipped.push(rel),
        }
    }

    /// Sorts, drops duplicates, and adds the directories that lead to each entry (so the
    /// archive carries their modes too).
    pub fn sort(&mut self) {
        let mut dirs = Vec::new();
        for e in &self.entries {
            let mut p = e.rel.parent();
            while let Some(d) = p {
                if d.as_os_str().is_empty() {
                    break;
                }
                dirs.push(d.to_path_buf());
                p = d.parent();
            }
        }
        for d in dirs {
            self.entries.push(Entry {
                rel: d,
                kind: Kind::Dir,
                size: 0,
            });
        }
        self.entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        self.entries.dedup_by(|a, b| a.rel == b.rel);
    }

    /// The relative paths, directories with a trailing `/` (what `--dry-run` prints; the
    /// source itself is not listed).
    pub fn listing(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| !e.rel.as_os_str().is_empty())
            .map(|e| {
                let mut s = e.rel.to_string_lossy().into_owned();
                if e.kind == Kind::Dir {
                    s.push('/');
                }
                s
            })
            .collect()
    }

    pub fn files(&self) -> u64 {
        self.entries.iter().filter(|e| e.kind != Kind::Dir).count() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

fn kind_of(meta: &std::fs::Metadata) -> Option<Kind> {
    let t = meta.file_type();
    if t.is_dir() {
        Some(Kind::Dir)
    } else if t.is_file() {
        Some(Kind::File)
    } else if t.is_symlink() {
        Some(Kind::Symlink)
    } else {
        None
    }
}

/// What went into an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackStats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// Writes `tree` as a tar stream with every entry under `top` (the source itself is `top`).
/// Modes and mtimes are the files'; owners are root's (the guest decides with `owner`).
pub fn pack<W: Write>(tree: &Tree, top: &Path, out: W) -> io::Result<PackStats> {
    let mut builder = tar::Builder::new(out);
    let mut stats = PackStats::default();
    for entry in &tree.entries {
        let src = if entry.rel.as_os_str().is_empty() {
            tree.source.clone()
        } else {
            tree.source.join(&entry.rel)
        };
        let name = if entry.rel.as_os_str().is_empty() {
            top.to_path_buf()
        } else {
            top.join(&entry.rel)
        };
        let meta = match std::fs::symlink_metadata(&src) {
            Ok(m) => m,
            // Gone since it was listed: left out, as rsync does.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(annotate(e, &src)),
        };
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root").map_err(|e| annotate(e, &src))?;
        header
            .set_groupname("root")
            .map_err(|e| annotate(e, &src))?;
        match kind_of(&meta) {
            Some(Kind::Dir) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, &name, io::empty())?;
            }
            Some(Kind::Symlink) => {
                let target = std::fs::read_link(&src).map_err(|e| annotate(e, &src))?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, &name, target)?;
            }
            Some(Kind::File) => {
                let file = std::fs::File::open(&src).map_err(|e| annotate(e, &src))?;
                let size = meta.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                builder.append_data(&mut header, &name, Exactly::new(file, size))?;
                stats.files += 1;
                stats.bytes += size;
            }
            None => continue,
        }
        stats.entries += 1;
    }
    builder.into_inner()?.flush()?;
    Ok(stats)
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A file read as exactly `len` bytes: cut if it grew since its size was taken, padded with
/// zeros if it shrank (the tar header already promised `len`).
struct Exactly<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Exactly<R> {
    fn new(inner: R, len: u64) -> Self {
        Exactly { inner, left: len }
    }
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}
