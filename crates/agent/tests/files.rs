//! READ_FILE, AUTHORIZED_KEY, FILES_PUT and FILES_GET over a real HTTP/2 connection, on a
//! temporary root.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use banger_guest_proto::{
    AddAuthorizedKey, AgentError, Empty, FileContent, GetFiles, PutFiles, PutResult, ReadFile,
    paths,
};
use bytes::Bytes;
use common::{ChanWriter, Guest, body_bytes, is_root, within};
use hyper::StatusCode;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

const BIG: u64 = 50 << 20;
const MTIME: u64 = 1_600_000_000;

fn root_with_alice() -> tempfile::TempDir {
    let root = common::default_root();
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(root.path().join("etc/group"), "root:x:0:\nalice:x:1000:\n").expect("group");
    root
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).expect("lstat").mode() & 0o7777
}

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn agent_error(body: &[u8]) -> String {
    serde_json::from_slice::<AgentError>(body)
        .expect("AgentError body")
        .message
}

// ---------------------------------------------------------------------------- read-file

#[tokio::test]
async fn read_file_reads_refuses_big_and_reports_missing() {
    let mut g = Guest::start().await;
    std::fs::create_dir_all(g.root.path().join("etc/ssh")).expect("mkdir");
    std::fs::write(
        g.root.path().join("etc/ssh/key.pub"),
        b"ssh-ed25519 AAAA host\n\xff",
    )
    .expect("write");
    let read = |path: &str, max_bytes| ReadFile {
        path: path.into(),
        max_bytes,
    };

    let (status, body) = g
        .post_json(paths::READ_FILE, &read("/etc/ssh/key.pub", 1024))
        .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let content: FileContent = serde_json::from_slice(&body).expect("FileContent");
    assert_eq!(content.data, "ssh-ed25519 AAAA host\n\u{fffd}");

    let (status, body) = g
        .post_json(paths::READ_FILE, &read("/etc/ssh/key.pub", 5))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(agent_error(&body).contains("larger than"), "{body:?}");

    let (status, body) = g
        .post_json(paths::READ_FILE, &read("/etc/ssh/nope", 1024))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(agent_error(&body).contains("/etc/ssh/nope"));

    // /proc files claim size 0: the limit applies to what reading gives.
    symlink("/proc", g.root.path().join("proc")).expect("symlink");
    let (status, body) = g
        .post_json(paths::READ_FILE, &read("/proc/self/status", 1 << 20))
        .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let content: FileContent = serde_json::from_slice(&body).expect("FileContent");
    assert!(content.data.contains("Pid:"), "{}", content.data);
    let (status, _) = g
        .post_json(paths::READ_FILE, &read("/proc/self/status", 10))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _) = g
        .post_json(paths::READ_FILE, &read("relative/path", 10))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = g.post_json(paths::READ_FILE, &read("/etc", 1024)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// ------------------------------------------------------------------------ authorized-key

#[tokio::test]
async fn authorized_key_is_idempotent_with_strict_modes_and_owner() {
    let mut g = Guest::with_root(root_with_alice()).await;
    let add = |user: &str, key: &str| AddAuthorizedKey {
        user: user.into(),
        key: key.into(),
    };
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBanger banger";
    for _ in 0..2 {
        let (status, body) = g
            .post_json(paths::AUTHORIZED_KEY, &add("root", &format!("{key}\n")))
            .await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        let _: Empty = serde_json::from_slice(&body).expect("Empty");
    }
    let ssh = g.root.path().join("root/.ssh");
    let file = ssh.join("authorized_keys");
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        format!("{key}\n")
    );
    assert_eq!(mode_of(&ssh), 0o700);
    assert_eq!(mode_of(&file), 0o600);

    // An existing file without a final newline, with loose modes: the key goes on a line
    // of its own and the modes are put right.
    std::fs::write(&file, format!("ssh-rsa AAAAother me\n{key}")).expect("write");
    std::fs::set_permissions(&file, PermissionsExt::from_mode(0o666)).expect("chmod");
    std::fs::set_permissions(&ssh, PermissionsExt::from_mode(0o777)).expect("chmod");
    let (status, _) = g.post_json(paths::AUTHORIZED_KEY, &add("root", key)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = g
        .post_json(
            paths::AUTHORIZED_KEY,
            &add("root", "ssh-ed25519 AAAAsecond two"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        format!("ssh-rsa AAAAother me\n{key}\nssh-ed25519 AAAAsecond two\n")
    );
    assert_eq!((mode_of(&ssh), mode_of(&file)), (0o700, 0o600));

    let (status, body) = g
        .post_json(paths::AUTHORIZED_KEY, &add("mallory", key))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(agent_error(&body).contains("mallory"));
    let (status, _) = g
        .post_json(paths::AUTHORIZED_KEY, &add("root", "two\nlines"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    if !is_root() {
        eprintln!("skipping the non-root user half: chown needs root");
        return;
    }
    let (status, body) = g.post_json(paths::AUTHORIZED_KEY, &add("alice", key)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let home = g.root.path().join("home/alice");
    for (p, mode) in [
        (home.clone(), 0o755),
        (home.join(".ssh"), 0o700),
        (home.join(".ssh/authorized_keys"), 0o600),
    ] {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{}", p.display());
        assert_eq!(m.mode() & 0o7777, mode, "{}", p.display());
    }

    // A ~/.ssh that is a symlink (an unprivileged user's trap for root) is refused.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::fs::remove_dir_all(home.join(".ssh")).expect("rm");
    symlink(elsewhere.path(), home.join(".ssh")).expect("symlink");
    let (status, body) = g.post_json(paths::AUTHORIZED_KEY, &add("alice", key)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(agent_error(&body).contains("symlink"), "{body:?}");
    assert!(!elsewhere.path().join("authorized_keys").exists());
    assert_eq!(
        std::fs::metadata(elsewhere.path()).expect("stat").uid(),
        0,
        "chowned through the symlink"
    );
}

// ------------------------------------------------------------------------------ put

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(MTIME);
    h.set_size(size);
    h.set_uid(4242); // ignored: the owner comes from the request
    h.set_gid(4242);
    h
}

/// Deterministic, incompressible-looking bytes.
struct Pattern {
    state: u64,
    left: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.state = self
                .state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.state >> 56) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn big_sha() -> String {
    let mut h = Sha256::new();
    let mut p = Pattern {
        state: 7,
        left: BIG,
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = p.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// Streams an archive made by `build` (on a thread of its own) into FILES_PUT.
async fn put(
    g: &mut Guest,
    dest: &str,
    owner: Option<&str>,
    build: impl FnOnce(&mut tar::Builder<ChanWriter>) + Send + 'static,
) -> PutResult {
    let (tx, response) = g.stream(
        paths::FILES_PUT,
        &PutFiles {
            dest: dest.into(),
            owner: owner.map(str::to_string),
        },
    );
    let producer = std::thread::spawn(move || {
        let mut b = tar::Builder::new(ChanWriter(tx));
        build(&mut b);
        let _ = b.finish();
    });
    let resp = response.await;
    assert_eq!(resp.status(), StatusCode::OK);
    let result: PutResult = serde_json::from_slice(&body_bytes(resp).await).expect("PutResult");
    within(
        "producer",
        tokio::task::spawn_blocking(move || producer.join()),
    )
    .await
    .expect("join")
    .expect("producer");
    result
}

fn sample_archive(b: &mut tar::Builder<ChanWriter>) {
    let mut h = header(EntryType::Directory, 0o750, 0);
    b.append_data(&mut h, "app/", std::io::empty())
        .expect("dir");
    let script = b"#!/bin/sh\necho hi\n";
    let mut h = header(EntryType::Regular, 0o755, script.len() as u64);
    b.append_data(&mut h, "app/bin/run", &script[..])
        .expect("file");
    let mut h = header(EntryType::Regular, 0o640, 5);
    b.append_data(&mut h, "app/a/b/c/deep.txt", &b"deep\n"[..])
        .expect("file");
    let mut h = header(EntryType::Directory, 0o555, 0);
    b.append_data(&mut h, "app/ro/", std::io::empty())
        .expect("dir");
    let mut h = header(EntryType::Regular, 0o4755, 2);
    b.append_data(&mut h, "app/ro/setuid", &b"s\n"[..])
        .expect("file");
    let mut h = header(EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "app/link", "bin/run")
        .expect("symlink");
    let mut h = header(EntryType::Link, 0o644, 0);
    b.append_link(&mut h, "app/hard", "app/bin/run")
        .expect("hard link");
    let mut h = header(EntryType::Regular, 0o600, BIG);
    b.append_data(
        &mut h,
        "app/big.bin",
        Pattern {
            state: 7,
            left: BIG,
        },
    )
    .expect("big");
    // A name longer than the 100 bytes of the old header (a GNU long-name entry).
    let long = format!("app/{}", "n".repeat(150));
    let mut h = header(EntryType::Regular, 0o644, 1);
    b.append_data(&mut h, long, &b"L"[..]).expect("long");
}

#[tokio::test]
async fn put_extracts_a_tree_with_modes_links_owner_and_a_big_file() {
    let mut g = Guest::with_root(root_with_alice()).await;
    let owner = if is_root() { Some("alice") } else { None };
    let before = common::peak_rss_bytes();
    let result = put(&mut g, "/srv/new/dest", owner, sample_archive).await;
    let grown = common::peak_rss_bytes().saturating_sub(before);
    assert!(
        grown < BIG / 2,
        "peak RSS grew by {grown} bytes for a {BIG}-byte upload: it is being buffered"
    );
    assert_eq!(result.error, None);
    assert_eq!(result.entries, 9);
    assert_eq!(result.bytes, BIG + 18 + 5 + 2 + 1);

    let app = g.root.path().join("srv/new/dest/app");
    assert_eq!(mode_of(&app), 0o750);
    assert_eq!(mode_of(&app.join("bin/run")), 0o755);
    assert_eq!(
        std::fs::read(app.join("bin/run")).expect("read"),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode_of(&app.join("a/b/c/deep.txt")), 0o640);
    assert_eq!(
        mode_of(&app.join("a/b")),
        0o755,
        "implicit parents are 0755"
    );
    assert_eq!(mode_of(&app.join("ro")), 0o555);
    assert_eq!(
        mode_of(&app.join("ro/setuid")),
        0o4755,
        "set-id bits survive chown"
    );
    assert_eq!(
        std::fs::read_link(app.join("link")).expect("readlink"),
        PathBuf::from("bin/run")
    );
    assert_eq!(
        std::fs::metadata(app.join("hard")).expect("stat").ino(),
        std::fs::metadata(app.join("bin/run")).expect("stat").ino()
    );
    assert!(app.join("n".repeat(150)).exists());
    for p in [
        "",
        "bin/run",
        "ro",
        "ro/setuid",
        "big.bin",
        "a/b/c/deep.txt",
    ] {
        let m = std::fs::symlink_metadata(app.join(p)).expect("lstat");
        assert_eq!(m.mtime() as u64, MTIME, "mtime of {p:?}");
    }
    let link = std::fs::symlink_metadata(app.join("link")).expect("lstat");
    assert_eq!(link.mtime() as u64, MTIME);

    let want = if is_root() { (1000, 1000) } else { (0, 0) };
    if is_root() {
        for p in ["", "bin", "bin/run", "link", "big.bin", "a/b"] {
            let m = std::fs::symlink_metadata(app.join(p)).expect("lstat");
            assert_eq!((m.uid(), m.gid()), want, "owner of {p:?}");
        }
        let dest = std::fs::metadata(g.root.path().join("srv/new/dest")).expect("stat");
        assert_eq!(
            (dest.uid(), dest.gid()),
            want,
            "the created dest is the owner's"
        );
    }

    let big = g.root.path().join("srv/new/dest/app/big.bin");
    let expected = tokio::task::spawn_blocking(big_sha);
    let actual = tokio::task::spawn_blocking(move || {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(big).expect("open");
        std::io::copy(&mut f, &mut h).expect("hash");
        format!("{:x}", h.finalize())
    });
    assert_eq!(
        actual.await.expect("hash"),
        expected.await.expect("hash"),
        "big.bin"
    );

    // And back out through FILES_GET, streamed: hashed as it arrives, memory flat.
    let before = common::peak_rss_bytes();
    let (tx, response) = g.stream(
        paths::FILES_GET,
        &GetFiles {
            path: "/srv/new/dest/app/big.bin".into(),
        },
    );
    drop(tx);
    let resp = response.await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (chunks, rx) = std::sync::mpsc::sync_channel::<Bytes>(8);
    let reader = std::thread::spawn(move || {
        let mut ar = tar::Archive::new(SyncChunks(rx, Bytes::new()));
        let mut entries = ar.entries().expect("entries");
        let mut e = entries.next().expect("one entry").expect("entry");
        let name = e.path().expect("path").into_owned();
        let mut h = Sha256::new();
        std::io::copy(&mut e, &mut h).expect("hash");
        (name, format!("{:x}", h.finalize()))
    });
    let mut body = resp.into_body();
    while let Some(frame) = within("get data", http_body_util::BodyExt::frame(&mut body)).await {
        if let Ok(d) = frame.expect("get body").into_data()
            && chunks.send(d).is_err()
        {
            break;
        }
    }
    drop(chunks);
    let (name, got) = within("reader", tokio::task::spawn_blocking(move || reader.join()))
        .await
        .expect("join")
        .expect("reader");
    assert_eq!(name, PathBuf::from("big.bin"));
    assert_eq!(got, big_sha(), "downloaded big.bin");
    let grown = common::peak_rss_bytes().saturating_sub(before);
    assert!(
        grown < BIG / 2,
        "peak RSS grew by {grown} bytes for a {BIG}-byte download: it is being buffered"
    );

    // Uploading again replaces files and keeps directories.
    let result = put(&mut g, "/srv/new/dest", None, |b| {
        let mut h = header(EntryType::Regular, 0o644, 3);
        b.append_data(&mut h, "app/bin/run", &b"new"[..])
            .expect("file");
    })
    .await;
    assert_eq!((result.entries, result.error), (1, None));
    assert_eq!(std::fs::read(app.join("bin/run")).expect("read"), b"new");
    assert_eq!(
        std::fs::read(app.join("hard")).expect("read"),
        b"#!/bin/sh\necho hi\n",
        "a replaced file is a new inode"
    );
}

/// A blocking reader over chunks from a channel.
struct SyncChunks(std::sync::mpsc::Receiver<Bytes>, Bytes);

impl Read for SyncChunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.1.is_empty() {
            match self.0.recv() {
                Ok(b) => self.1 = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.1.len());
        buf[..n].copy_from_slice(&self.1.split_to(n));
        Ok(n)
    }
}

/// Name, type, link target.
type RawEntry = (String, EntryType, Option<String>);

/// A raw header whose name is written as given (tar's Builder refuses `..` and `/`).
fn raw_entry(b: &mut tar::Builder<ChanWriter>, name: &str, kind: EntryType, link: Option<&str>) {
    let data: &[u8] = if kind == EntryType::Regular {
        b"pwned"
    } else {
        b""
    };
    let mut h = Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).expect("append");
}

#[tokio::test]
async fn put_refuses_entries_that_escape_the_destination() {
    let mut g = Guest::start().await;
    let outside = tempfile::tempdir().expect("tempdir");
    let out = outside.path().to_str().expect("utf-8").to_string();
    let victim = g.root.path().join("victim");
    std::fs::create_dir(&victim).expect("mkdir");
    let cases: Vec<(&str, Vec<RawEntry>)> = vec![
        (
            "`..`",
            vec![("../victim/pwned".into(), EntryType::Regular, None)],
        ),
        (
            "absolute",
            vec![(format!("{out}/pwned"), EntryType::Regular, None)],
        ),
        (
            "symlink",
            vec![
                ("out".into(), EntryType::Symlink, Some(out.clone())),
                ("out/pwned".into(), EntryType::Regular, None),
            ],
        ),
        (
            "symlink",
            vec![
                ("up".into(), EntryType::Symlink, Some("..".into())),
                ("up/victim/pwned".into(), EntryType::Regular, None),
            ],
        ),
        (
            "`..`",
            vec![("hard".into(), EntryType::Link, Some("../victim/x".into()))],
        ),
    ];
    for (i, (why, entries)) in cases.into_iter().enumerate() {
        let dest = format!("/dest{i}");
        let n = entries.len() as u64;
        let result = put(&mut g, &dest, None, move |b| {
            let mut h = header(EntryType::Regular, 0o644, 3);
            b.append_data(&mut h, "before.txt", &b"ok\n"[..])
                .expect("file");
            for (name, kind, link) in &entries {
                raw_entry(b, name, *kind, link.as_deref());
            }
            let mut h = header(EntryType::Regular, 0o644, 3);
            b.append_data(&mut h, "after.txt", &b"ok\n"[..])
                .expect("file");
        })
        .await;
        let error = result.error.clone().unwrap_or_default();
        assert!(
            error.contains(why) || error.contains("refused"),
            "case {i}: {result:?}"
        );
        // What came before the bad entry stays; nothing after it is extracted.
        assert!(
            result.entries >= 1 && result.entries < n + 1,
            "case {i}: {result:?}"
        );
        let dest_dir = g.root.path().join(&dest[1..]);
        assert!(dest_dir.join("before.txt").exists(), "case {i}");
        assert!(!dest_dir.join("after.txt").exists(), "case {i}");
        assert!(!victim.join("pwned").exists(), "case {i}");
        assert!(!outside.path().join("pwned").exists(), "case {i}");
    }

    // A symlink inside the destination may be written through (merged-/usr style).
    let result = put(&mut g, "/merged", None, |b| {
        let mut h = header(EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, "usr/bin/", std::io::empty())
            .expect("dir");
        let mut h = header(EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, "bin", "usr/bin").expect("symlink");
        let mut h = header(EntryType::Regular, 0o755, 2);
        b.append_data(&mut h, "bin/tool", &b"t\n"[..])
            .expect("file");
    })
    .await;
    assert_eq!((result.entries, result.error), (3, None));
    assert!(g.root.path().join("merged/usr/bin/tool").exists());

    // A body that is not a tar stream: an error in the result, still a 200.
    let (tx, response) = g.stream(
        paths::FILES_PUT,
        &PutFiles {
            dest: "/garbage".into(),
            owner: None,
        },
    );
    tx.send(Bytes::from(vec![b'x'; 2048])).await.expect("send");
    drop(tx);
    let resp = response.await;
    assert_eq!(resp.status(), StatusCode::OK);
    let result: PutResult = serde_json::from_slice(&body_bytes(resp).await).expect("PutResult");
    assert!(result.error.is_some(), "{result:?}");

    // An unknown owner is reported the same way, once the body is in.
    let result = put(&mut g, "/owned", Some("mallory"), |b| {
        let mut h = header(EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, "f", &b"x"[..]).expect("file");
    })
    .await;
    assert!(
        result.error.as_deref().unwrap_or("").contains("mallory"),
        "{result:?}"
    );
}

// ------------------------------------------------------------------------------ get

/// Everything a round trip must keep, by relative path.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir { mode: u32, mtime: i64 },
    File { mode: u32, mtime: i64, sha: String },
    Link { target: PathBuf },
}

fn snapshot(top: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = top.join(&rel);
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let node = if m.file_type().is_symlink() {
            Node::Link {
                target: std::fs::read_link(&p).expect("readlink"),
            }
        } else if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("readdir") {
                stack.push(rel.join(e.expect("entry").file_name()));
            }
            Node::Dir {
                mode: m.mode() & 0o7777,
                mtime: m.mtime(),
            }
        } else {
            Node::File {
                mode: m.mode() & 0o7777,
                mtime: m.mtime(),
                sha: sha(&std::fs::read(&p).expect("read")),
            }
        };
        out.insert(rel, node);
    }
    out
}

fn sample_tree(top: &Path) {
    std::fs::create_dir_all(top.join("src/deep/er")).expect("mkdir");
    std::fs::create_dir_all(top.join("empty")).expect("mkdir");
    std::fs::write(top.join("README"), "hello\n").expect("write");
    std::fs::write(top.join("src/deep/er/x.rs"), "fn main() {}\n").expect("write");
    std::fs::write(top.join("run.sh"), "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(top.join("run.sh"), PermissionsExt::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(top.join("README"), PermissionsExt::from_mode(0o640)).expect("chmod");
    std::fs::set_permissions(top.join("empty"), PermissionsExt::from_mode(0o700)).expect("chmod");
    let mut blob = std::fs::File::create(top.join("blob.bin")).expect("create");
    let mut p = Pattern {
        state: 3,
        left: 3 << 20,
    };
    std::io::copy(&mut p, &mut blob).expect("blob");
    symlink("src/deep", top.join("shortcut")).expect("symlink");
    symlink("/nonexistent/target", top.join("dangling")).expect("symlink");
    std::fs::hard_link(top.join("README"), top.join("README.hard")).expect("link");
    // Distinct mtimes, set last (deepest first) so nothing disturbs them.
    for (i, rel) in [
        "src/deep/er/x.rs",
        "src/deep/er",
        "src/deep",
        "src",
        "README",
        "run.sh",
        "blob.bin",
        "empty",
        "",
    ]
    .iter()
    .enumerate()
    {
        let t = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(MTIME + 1000 * i as u64);
        let f = std::fs::File::open(top.join(rel)).expect("open");
        f.set_modified(t).expect("mtime");
    }
}

async fn get(g: &mut Guest, path: &str) -> (StatusCode, Bytes) {
    let (tx, response) = g.stream(paths::FILES_GET, &GetFiles { path: path.into() });
    drop(tx);
    let resp = response.await;
    let status = resp.status();
    (status, body_bytes(resp).await)
}

#[tokio::test]
async fn get_streams_a_tree_and_a_file_that_round_trip() {
    let mut g = Guest::start().await;
    let tree = g.root.path().join("work/project");
    sample_tree(&tree);

    let (status, archive) = get(&mut g, "/work/project").await;
    assert_eq!(status, StatusCode::OK);
    // The archive itself: names under the base name, directories first, links kept.
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(&archive[..]);
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").to_string_lossy().into_owned();
        let h = e.header().clone();
        let meta =
            std::fs::symlink_metadata(g.root.path().join("work").join(&name)).expect("source");
        assert_eq!(h.uid().expect("uid"), u64::from(meta.uid()), "{name}");
        assert_eq!(h.gid().expect("gid"), u64::from(meta.gid()), "{name}");
        if h.entry_type() == EntryType::Regular {
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("data");
            let src = std::fs::read(g.root.path().join("work").join(&name)).expect("read");
            assert_eq!(sha(&data), sha(&src), "{name}");
        }
        names.push((name, h.entry_type()));
    }
    let kind_of = |n: &str| names.iter().find(|(x, _)| x == n).map(|(_, k)| *k);
    assert_eq!(names[0].0, "project/");
    assert_eq!(kind_of("project/shortcut"), Some(EntryType::Symlink));
    assert_eq!(kind_of("project/dangling"), Some(EntryType::Symlink));
    assert_eq!(kind_of("project/README"), Some(EntryType::Regular));
    assert_eq!(kind_of("project/README.hard"), Some(EntryType::Link));
    let pos = |n: &str| names.iter().position(|(x, _)| x == n).expect(n);
    assert!(pos("project/src/") < pos("project/src/deep/er/x.rs"));

    // Round trip through FILES_PUT: the same tree comes back.
    let result = put(&mut g, "/copy", None, move |b| {
        b.get_mut().write_all(&archive).expect("write");
    })
    .await;
    assert_eq!(result.error, None);
    assert_eq!(result.entries, 12);
    let copied = g.root.path().join("copy/project");
    assert_eq!(snapshot(&copied), snapshot(&tree));
    assert_eq!(
        std::fs::metadata(copied.join("README.hard"))
            .expect("stat")
            .ino(),
        std::fs::metadata(copied.join("README"))
            .expect("stat")
            .ino()
    );

    // One file: one entry, named by its base name.
    let (status, archive) = get(&mut g, "/work/project/src/deep/er/x.rs").await;
    assert_eq!(status, StatusCode::OK);
    let mut ar = tar::Archive::new(&archive[..]);
    let entries: Vec<_> = ar
        .entries()
        .expect("entries")
        .map(|e| {
            let mut e = e.expect("entry");
            let mut data = String::new();
            e.read_to_string(&mut data).expect("data");
            let h = e.header();
            (
                e.path().expect("path").into_owned(),
                h.mode().expect("mode"),
                h.mtime().expect("mtime"),
                data,
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![(
            PathBuf::from("x.rs"),
            0o644,
            MTIME,
            "fn main() {}\n".to_string()
        )]
    );

    // A symlink asked for by name is followed (and keeps the asked name).
    let (status, archive) = get(&mut g, "/work/project/shortcut").await;
    assert_eq!(status, StatusCode::OK);
    let mut ar = tar::Archive::new(&archive[..]);
    let first = ar
        .entries()
        .expect("entries")
        .next()
        .expect("one")
        .expect("entry");
    assert_eq!(first.path().expect("path").to_str(), Some("shortcut/"));
    assert_eq!(first.header().entry_type(), EntryType::Directory);

    // Params are JSON in a header: a non-ASCII path travels as UTF-8.
    std::fs::create_dir_all(g.root.path().join("work/été")).expect("mkdir");
    std::fs::write(g.root.path().join("work/été/ü.txt"), "ü").expect("write");
    let (status, archive) = get(&mut g, "/work/été").await;
    assert_eq!(status, StatusCode::OK);
    let mut ar = tar::Archive::new(&archive[..]);
    let names: Vec<String> = ar
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["été/", "été/ü.txt"]);

    let (status, body) = get(&mut g, "/work/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(agent_error(&body).contains("/work/nothing-here"));
}

#[tokio::test]
async fn raw_stream_methods_need_their_params_header() {
    let mut g = Guest::start().await;
    for path in [paths::FILES_PUT, paths::FILES_GET, paths::CONNECT] {
        let (status, body) = g.call("POST", path, b"").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(agent_error(&body).contains("banger-params"), "{path}");
    }
}
