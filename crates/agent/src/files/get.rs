//! FILES_GET: a file or a directory tree as a tar stream, written on a blocking thread
//! into the response body as it is walked (memory stays a few chunks).
//!
//! - The requested path is followed if it is a symlink (asking for `/etc/resolv.conf` gives
//!   the file), and is archived under its base name; everything below it is archived
//!   as it is: symlinks as symlinks, never followed.
//! - Entries carry mode, mtime, uid and gid; directories come before their contents, in
//!   name order. Files with several links inside the tree become hard-link entries after
//!   the first. Fifos and device nodes are archived; sockets are left out.
//! - A file is read as exactly the size its header announced (cut if it grew, padded with
//!   zeros if it shrank), so a file changing during the walk never breaks the archive. An
//!   entry that vanished during the walk is left out; any other error ends the body with an
//!   error (the host sees the stream reset, never a shortened archive that looks whole).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header, HeaderMode};

use super::bridge::BodyWriter;
use crate::console::log;

/// Archives `src` (already known to exist) as `name` into `out`; a failure ends the body
/// with the error.
pub fn archive(src: &Path, name: &OsStr, out: BodyWriter) {
    let mut builder = Builder::new(out);
    let written = walk(&mut builder, src, name).and_then(|()| builder.finish());
    match written.and_then(|()| builder.get_mut().flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {} // the host went away
        Err(e) => {
            log!("files/get {}: {e}", src.display());
            // Builder's drop would try to finish the archive; the error comes first.
            if let Ok(out) = builder.into_inner() {
                out.fail(e);
            }
        }
    }
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

struct Item {
    real: PathBuf,
    name: PathBuf,
    meta: Metadata,
}

fn walk<W: Write>(builder: &mut Builder<W>, src: &Path, name: &OsStr) -> io::Result<()> {
    let meta = fs::metadata(src).map_err(|e| annotate(e, src))?;
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![Item {
        real: src.to_path_buf(),
        name: PathBuf::from(name),
        meta,
    }];
    while let Some(item) = stack.pop() {
        append(builder, &item, &mut links)?;
        if !item.meta.is_dir() {
            continue;
        }
        let listing = match fs::read_dir(&item.real) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(annotate(e, &item.real)),
        };
        let mut children: Vec<OsString> = Vec::new();
        for entry in listing {
            children.push(entry.map_err(|e| annotate(e, &item.real))?.file_name());
        }
        children.sort();
        // Reversed onto the stack, so they come off in name order.
        for child in children.into_iter().rev() {
            let real = item.real.join(&child);
            match fs::symlink_metadata(&real) {
                Ok(meta) => stack.push(Item {
                    name: item.name.join(&child),
                    real,
                    meta,
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(annotate(e, &real)),
            }
        }
    }
    Ok(())
}

fn append<W: Write>(
    builder: &mut Builder<W>,
    item: &Item,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let Item { real, name, meta } = item;
    let mut header = Header::new_gnu();
    header.set_metadata_in_mode(meta, HeaderMode::Complete);
    // Permission bits only, as tar writes them (the file type is the entry type).
    header.set_mode(meta.mode() & 0o7777);
    let kind = meta.file_type();
    if kind.is_file() {
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                header.set_entry_type(EntryType::Link);
                header.set_size(0);
                return builder.append_link(&mut header, name, first);
            }
            links.insert(key, name.clone());
        }
        let file = match File::open(real) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(annotate(e, real)),
        };
        let size = meta.len();
        let exact = file.take(size).chain(io::repeat(0)).take(size);
        builder
            .append_data(&mut header, name, exact)
            .map_err(|e| annotate(e, real))
    } else if kind.is_dir() {
        let mut dir = name.clone().into_os_string();
        dir.push("/");
        builder.append_data(&mut header, dir, io::empty())
    } else if kind.is_symlink() {
        let target = match fs::read_link(real) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(annotate(e, real)),
        };
        builder.append_link(&mut header, name, target)
    } else if kind.is_char_device() || kind.is_block_device() || kind.is_fifo() {
        if !kind.is_fifo() {
            let rdev = meta.rdev();
            header.set_device_major(libc::major(rdev))?;
            header.set_device_minor(libc::minor(rdev))?;
        }
        builder.append_data(&mut header, name, io::empty())
    } else {
        Ok(()) // a socket: nothing tar can carry
    }
}
