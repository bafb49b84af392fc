//! An image written by banger-ext4 is mounted read-write by a real Linux kernel
//! (Debian's cloud kernel under QEMU/TCG), read back with correct metadata, written
//! to by the guest, and still passes `e2fsck -fn` afterwards.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use banger_ext4::{EntryKind, Ext4Writer, Metadata, Options, SizePolicy, Timestamp, Xattr};
use banger_testkit::qemu::GuestRun;
use banger_testkit::tools::{self, debugfs, e2fsck_clean, run_stdout};

// The benchmark's tar → image converter, reused so the real-distro test below converts
// exactly as `scripts/bench-ext4.sh` measures.
#[path = "../examples/tar2ext4.rs"]
#[allow(dead_code)]
mod tar2ext4;

const MTIME: i64 = 1_700_000_000;
const MANY: usize = 500;

fn meta(uid: u32, gid: u32, mode: u16) -> Metadata {
    let t = Timestamp {
        sec: MTIME,
        nsec: 0,
    };
    Metadata {
        uid,
        gid,
        mode,
        mtime: t,
        atime: t,
        ctime: t,
        xattrs: Vec::new(),
    }
}

/// Deterministic, incompressible-ish bytes spanning many blocks (multi-extent file).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn sha256(data: &[u8], dir: &Path) -> String {
    let f = dir.join("big.bin");
    std::fs::write(&f, data).expect("write big.bin copy");
    let out = run_stdout(Command::new("sha256sum").arg(&f));
    out.split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

fn build_image(img: &Path, big: &[u8]) {
    let mut w = Ext4Writer::create(
        img,
        Options {
            size: SizePolicy::Auto {
                min_bytes: 64 << 20,
                headroom_percent: 125,
            },
            ..Default::default()
        },
    )
    .expect("create image");
    let mut add = |path: &str, m: &Metadata, kind: EntryKind<'_>| {
        w.add(Path::new(path), m, kind)
            .unwrap_or_else(|e| panic!("add {path}: {e}"));
    };
    let root = meta(0, 0, 0o755);
    for d in ["etc", "bin", "dev", "run", "many"] {
        add(d, &root, EntryKind::Directory);
    }
    add("home", &meta(1000, 1000, 0o750), EntryKind::Directory);

    let mut hello = meta(1000, 1000, 0o644);
    hello.xattrs.push(Xattr {
        name: b"user.banger".to_vec(),
        value: b"ok".to_vec(),
    });
    add(
        "etc/hello",
        &hello,
        EntryKind::File {
            size: 6,
            data: &mut &b"world\n"[..],
        },
    );
    add(
        "etc/hello-link",
        &hello,
        EntryKind::Hardlink {
            target: Path::new("etc/hello"),
        },
    );
    add(
        "etc/hello-sym",
        &meta(0, 0, 0o777),
        EntryKind::Symlink {
            target: "hello".as_ref(),
        },
    );
    add(
        "bin/suid",
        &meta(0, 0, 0o4755),
        EntryKind::File {
            size: 10,
            data: &mut &b"#!/bin/sh\n"[..],
        },
    );
    add(
        "dev/null",
        &meta(0, 0, 0o666),
        EntryKind::CharDevice { major: 1, minor: 3 },
    );
    add(
        "dev/vdz",
        &meta(0, 6, 0o660),
        EntryKind::BlockDevice {
            major: 254,
            minor: 25,
        },
    );
    add("run/fifo", &meta(0, 0, 0o644), EntryKind::Fifo);
    add(
        "home/big.bin",
        &meta(1000, 1000, 0o600),
        EntryKind::File {
            size: big.len() as u64,
            data: &mut &big[..],
        },
    );
    for i in 0..MANY {
        let body = format!("{i}\n");
        add(
            &format!("many/f{i:04}"),
            &meta(2000, 3000, 0o640),
            EntryKind::File {
                size: body.len() as u64,
                data: &mut body.as_bytes(),
            },
        );
    }
    let summary = w.finish().expect("finish image");
    eprintln!("writer summary: {summary:?}");
}

#[test]
fn kernel_mounts_reads_and_writes_our_image() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = tmp.path().join("ours.ext4");
    let big = pattern(3 << 20);
    let big_sha = sha256(&big, tmp.path());
    build_image(&img, &big);

    // Before the guest touches it, the image must already be clean.
    e2fsck_clean(&img);

    let script = format!(
        r#"set -e
fail() {{ echo "CHECK-FAILED: $*"; exit 1; }}
grep -q ' /mnt ext4 rw' /proc/mounts || fail "not mounted rw"
[ "$(cat etc/hello)" = world ] || fail "etc/hello content"
[ "$(stat -c '%u:%g:%a' etc/hello)" = 1000:1000:644 ] || fail "etc/hello owner/mode: $(stat -c '%u:%g:%a' etc/hello)"
[ "$(stat -c '%Y' etc/hello)" = {MTIME} ] || fail "etc/hello mtime"
[ "$(stat -c '%u:%g:%a' home)" = 1000:1000:750 ] || fail "home owner/mode"
[ -u bin/suid ] || fail "setuid bit"
[ "$(stat -c '%a' bin/suid)" = 4755 ] || fail "bin/suid mode $(stat -c '%a' bin/suid)"
[ -c dev/null ] || fail "dev/null not a char device"
[ "$(stat -c '%t,%T' dev/null)" = 1,3 ] || fail "dev/null numbers $(stat -c '%t,%T' dev/null)"
[ -b dev/vdz ] || fail "dev/vdz not a block device"
[ "$(stat -c '%t,%T:%g' dev/vdz)" = fe,19:6 ] || fail "dev/vdz $(stat -c '%t,%T:%g' dev/vdz)"
cat dev/null || fail "reading our /dev/null node"
[ -p run/fifo ] || fail "run/fifo"
[ "$(stat -c %i etc/hello)" = "$(stat -c %i etc/hello-link)" ] || fail "hardlink inode"
[ "$(stat -c %h etc/hello)" = 2 ] || fail "link count $(stat -c %h etc/hello)"
[ "$(readlink etc/hello-sym)" = hello ] && [ "$(cat etc/hello-sym)" = world ] || fail "symlink"
[ "$(sha256sum home/big.bin | cut -d' ' -f1)" = {big_sha} ] || fail "big.bin content"
[ "$(ls many | wc -l)" = {MANY} ] || fail "many/ count $(ls many | wc -l)"
[ "$(cat many/f0499)" = 499 ] && [ "$(stat -c '%u:%g' many/f0123)" = 2000:3000 ] || fail "many/ entries"
# Writes through the kernel: new file, new dir, unlink, append, rename.
echo written-by-guest > guest-file
mkdir -p guest-dir/sub && echo nested > guest-dir/sub/x
rm many/f0000
echo more >> etc/hello
mv many/f0001 many/renamed
dd if=/dev/zero of=guest-zeros bs=1M count=4 2>/dev/null
sync
echo GUEST-CHECKS-OK
"#
    );
    let result = GuestRun::new(&img).script(&script).run();
    eprintln!("guest boot took {:?}", result.elapsed);
    result.assert_success();
    assert!(
        result.console.contains("GUEST-CHECKS-OK"),
        "{}",
        result.console
    );

    // The kernel's writes left a consistent filesystem, visible to e2fsprogs.
    e2fsck_clean(&img);
    assert_eq!(debugfs(&img, "cat /guest-file"), "written-by-guest\n");
    assert_eq!(debugfs(&img, "cat /guest-dir/sub/x"), "nested\n");
    assert_eq!(debugfs(&img, "cat /etc/hello"), "world\nmore\n");
    let ea = debugfs(&img, "ea_get /etc/hello user.banger");
    assert!(ea.contains("ok"), "xattr user.banger: {ea:?}");
    let listing = debugfs(&img, "ls -p /many");
    assert!(
        !listing.contains("/f0000/") && listing.contains("/renamed/"),
        "{listing}"
    );
}

#[test]
fn debugfs_sees_xattr_before_boot() {
    // Cheap host-only check that keeps the xattr assertion meaningful even if the
    // guest test is what fails.
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = tmp.path().join("x.ext4");
    build_image(&img, &pattern(8192));
    e2fsck_clean(&img);
    let ea = debugfs(&img, "ea_list /etc/hello");
    assert!(ea.contains("user.banger") && ea.contains("ok"), "{ea}");
    let stat = run_stdout(
        tools::command("debugfs")
            .args(["-R", "stat /bin/suid"])
            .arg(&img),
    );
    assert!(stat.contains("Mode:  04755"), "{stat}");
}

/// `$BANGER_TEST_CACHE/bench/rootfs.tar`: a Debian bookworm minbase root, built once by
/// `scripts/bench-ext4.sh --prepare-only` (debootstrap from the configured apt mirror).
fn debian_rootfs_tar() -> PathBuf {
    tools::require("debootstrap");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench-ext4.sh");
    run_stdout(Command::new("bash").arg(&script).arg("--prepare-only"));
    let tar = tools::cache_dir().join("bench/rootfs.tar");
    assert!(tar.is_file(), "{} missing after prepare", tar.display());
    tar
}

#[test]
fn debian_rootfs_from_tar_passes_dpkg_verify_in_guest() {
    let tar = debian_rootfs_tar();
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = tmp.path().join("debian.ext4");
    let reader = std::io::BufReader::new(std::fs::File::open(&tar).expect("open rootfs.tar"));
    let summary = tar2ext4::convert(
        reader,
        &img,
        SizePolicy::Auto {
            min_bytes: 0,
            headroom_percent: 125,
        },
    )
    .expect("convert rootfs.tar");
    eprintln!("debian image: {summary:?}");
    e2fsck_clean(&img);

    // dpkg --verify re-hashes every packaged file against dpkg's md5sums: content,
    // symlinks and hardlinks of a whole distribution, read by the kernel.
    let result = GuestRun::new(&img)
        .script(
            r#"mount -t proc proc proc && mount -t devtmpfs dev dev || exit 10
chroot /mnt /bin/sh -c '
set -e
[ "$(id -u)" = 0 ]
test -u /usr/bin/passwd
out=$(dpkg --verify 2>&1) && [ -z "$out" ] || { echo "dpkg --verify: $out"; exit 1; }
echo VERIFY-OK
apt-get --version | head -n 1
echo from-debian-guest > /root/guest-note
'
rc=$?
umount dev proc
exit $rc
"#,
        )
        .run();
    eprintln!("debian guest took {:?}", result.elapsed);
    result.assert_success();
    assert!(result.console.contains("VERIFY-OK"), "{}", result.console);
    e2fsck_clean(&img);
    assert_eq!(debugfs(&img, "cat /root/guest-note"), "from-debian-guest\n");
}
