//! The whole conversion path: layers (separated by `--banger-layer--`) are flattened into
//! the real ext4 writer. Whatever the input, flatten or the writer must return an error
//! or produce a finished image — never panic or hang.
#![no_main]

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use banger_ext4 as ext4;
use banger_oci as oci;
use libfuzzer_sys::fuzz_target;

const SEPARATOR: &[u8] = b"--banger-layer--";

struct Sink(ext4::Ext4Writer);

impl oci::EntrySink for Sink {
    fn entry(&mut self, e: &oci::Entry, data: Option<&mut dyn Read>) -> Result<(), oci::SinkError> {
        let ts = |t: &oci::Timestamp| ext4::Timestamp {
            sec: t.sec,
            nsec: t.nsec,
        };
        let meta = ext4::Metadata {
            uid: e.meta.uid,
            gid: e.meta.gid,
            mode: (e.meta.mode & 0o7777) as u16,
            mtime: ts(&e.meta.mtime),
            atime: ts(&e.meta.atime),
            ctime: ts(&e.meta.ctime),
            xattrs: e
                .meta
                .xattrs
                .iter()
                .map(|(n, v)| ext4::Xattr {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect(),
        };
        let mut empty: &[u8] = &[];
        let kind = match &e.kind {
            oci::EntryKind::Directory => ext4::EntryKind::Directory,
            oci::EntryKind::File { size } => ext4::EntryKind::File {
                size: *size,
                data: match data {
                    Some(d) => d,
                    None => &mut empty,
                },
            },
            oci::EntryKind::Symlink { target } => ext4::EntryKind::Symlink {
                target: OsStr::from_bytes(target),
            },
            oci::EntryKind::Hardlink { target } => ext4::EntryKind::Hardlink {
                target: Path::new(target),
            },
            oci::EntryKind::CharDevice { major, minor } => ext4::EntryKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            oci::EntryKind::BlockDevice { major, minor } => ext4::EntryKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            oci::EntryKind::Fifo => ext4::EntryKind::Fifo,
            oci::EntryKind::Socket => ext4::EntryKind::Socket,
        };
        self.0.add(Path::new(&e.path), &meta, kind)?;
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), oci::SinkError> {
        self.0.remove(Path::new(path))?;
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut inputs = Vec::new();
    let mut rest = data;
    loop {
        let (part, next) = match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => (&rest[..at], Some(&rest[at + SEPARATOR.len()..])),
            None => (rest, None),
        };
        let path = dir.path().join(format!("l{}", inputs.len()));
        std::fs::write(&path, part).expect("write layer");
        inputs.push(oci::LayerInput {
            path,
            digest: oci::Digest::of(part),
            diff_id: None,
            verified: false,
        });
        match next {
            Some(n) if inputs.len() < 4 => rest = n,
            _ => break,
        }
    }
    let opts = ext4::Options {
        size: ext4::SizePolicy::Exact(64 << 20),
        ..Default::default()
    };
    let Ok(writer) = ext4::Ext4Writer::create(&dir.path().join("out.ext4"), opts) else {
        return;
    };
    let mut sink = Sink(writer);
    let limits = oci::Limits {
        max_unpacked_bytes: 16 << 20,
        max_entries: 10_000,
        blob_bytes_read: None,
    };
    if oci::flatten(&inputs, &mut sink, &limits).is_ok() {
        let _ = sink.0.finish();
    }
});
