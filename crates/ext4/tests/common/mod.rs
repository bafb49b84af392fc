//! Shared helpers: build images, check them with e2fsck, read them back with debugfs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use banger_ext4::{EntryKind, Ext4Writer, Metadata, Options, SizePolicy, Timestamp, Xattr};

pub const E2FSCK: &str = "/usr/sbin/e2fsck";
pub const DEBUGFS: &str = "/usr/sbin/debugfs";

pub fn require_tools() {
    for t in [E2FSCK, DEBUGFS] {
        if !Path::new(t).exists() {
            panic!("{t} missing: install e2fsprogs");
        }
    }
}

pub fn small_opts() -> Options {
    Options {
        size: SizePolicy::Auto {
            min_bytes: 64 << 20,
            headroom_percent: 125,
        },
        ..Options::default()
    }
}

/// Runs `e2fsck -fn` and panics with its output unless it exits 0 with no complaints.
pub fn fsck(img: &Path) {
    require_tools();
    // Debug aid: BANGER_EXT4_KEEP=/some/dir keeps a copy of every checked image.
    if let Some(keep) = std::env::var_os("BANGER_EXT4_KEEP") {
        let name = img.file_name().unwrap_or_default();
        let _ = std::fs::copy(img, Path::new(&keep).join(name));
    }
    let out = Command::new(E2FSCK)
        .arg("-fn")
        .arg(img)
        .output()
        .expect("run e2fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "e2fsck failed ({:?}):\n{text}",
        out.status
    );
    for l in text.lines() {
        let ok = l.starts_with("Pass ")
            || l.starts_with("e2fsck ")
            || (l.contains(" files (") && l.ends_with(" blocks"))
            || l.trim().is_empty();
        assert!(ok, "unexpected e2fsck output line {l:?}:\n{text}");
    }
}

/// Runs debugfs commands (read-only) and returns stdout.
pub fn debugfs(img: &Path, cmds: &[String]) -> String {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cmds");
    std::fs::write(&f, cmds.join("\n") + "\n").unwrap();
    let out = Command::new(DEBUGFS)
        .arg("-f")
        .arg(&f)
        .arg(img)
        .output()
        .expect("run debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn debugfs1(img: &Path, cmd: &str) -> String {
    debugfs(img, &[cmd.to_string()])
}

pub fn meta(mode: u16) -> Metadata {
    Metadata {
        mode,
        ..Metadata::default()
    }
}

pub fn meta_full(mode: u16, uid: u32, gid: u32, mtime: i64, xattrs: Vec<Xattr>) -> Metadata {
    let t = Timestamp {
        sec: mtime,
        nsec: 0,
    };
    Metadata {
        uid,
        gid,
        mode,
        mtime: t,
        atime: t,
        ctime: t,
        xattrs,
    }
}

pub fn add_file(w: &mut Ext4Writer, path: &str, m: &Metadata, data: &[u8]) {
    let mut r = data;
    w.add(
        Path::new(path),
        m,
        EntryKind::File {
            size: data.len() as u64,
            data: &mut r,
        },
    )
    .unwrap();
}

pub fn img_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Parsed `ls -p` line: (inode, mode, uid, gid, name, size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsEntry {
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub size: String,
}

pub fn ls(img: &Path, dir: &str) -> Vec<LsEntry> {
    let out = debugfs1(img, &format!("ls -p \"{dir}\""));
    parse_ls(&out)
}

pub fn parse_ls(out: &str) -> Vec<LsEntry> {
    out.lines()
        .filter(|l| l.starts_with('/'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split('/').collect();
            // "/ino/mode/uid/gid/name/size/"
            if f.len() < 7 {
                return None;
            }
            Some(LsEntry {
                ino: f[1].parse().ok()?,
                mode: u32::from_str_radix(f[2], 8).ok()?,
                uid: f[3].parse().ok()?,
                gid: f[4].parse().ok()?,
                name: f[5].to_string(),
                size: f[6].to_string(),
            })
        })
        // Inode 0 marks empty slots (e.g. the fake entry of an htree index block).
        .filter(|e| e.ino != 0 && e.name != "." && e.name != "..")
        .collect()
}

/// Dumps a file's content via debugfs.
pub fn cat(img: &Path, path: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    debugfs1(img, &format!("dump \"{path}\" {}", out.display()));
    std::fs::read(out).unwrap_or_default()
}
