//! A `newc` cpio writer: the archive format the Linux kernel unpacks as an initramfs.
//!
//! Every member is written with mtime 0, uid/gid 0 and inode numbers counting up from 1
//! in the order members are added, so the same calls always give the same bytes. The
//! kernel's unpacker does not create missing parents, so add directories before what
//! they hold. Names are stored relative (a leading `/` is dropped); the fields are 32-bit,
//! so a member of 4 GiB or more is an error rather than a corrupt archive.
//!
//! Format: per member, the magic `070701`, thirteen 8-digit hex fields (ino, mode, uid,
//! gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize,
//! check), the NUL-terminated name padded to 4 bytes, the data padded to 4 bytes; the
//! archive ends with a member named `TRAILER!!!`.

use std::io::Write;

/// Why a member could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error(
        "cpio member name {name:?} is invalid: {reason}; use a non-empty relative path without NUL bytes"
    )]
    BadName { name: String, reason: &'static str },
    #[error(
        "cpio member {name:?}: {field} {value} does not fit the format's 32-bit field; keep initramfs members under 4 GiB"
    )]
    Overflow {
        name: String,
        field: &'static str,
        value: u64,
    },
    #[error("writing cpio member {name:?} failed: {source}")]
    Write {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// File-type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const PERM_MASK: u32 = 0o7777;
const TRAILER: &str = "TRAILER!!!";

/// Streams a `newc` archive into `W`. Call [`Newc::finish`] to write the trailer.
#[derive(Debug)]
pub struct Newc<W: Write> {
    out: W,
    /// Bytes written so far (for the 4-byte alignment).
    written: u64,
    /// Inode of the last member.
    ino: u32,
}

/// The fixed fields of one member header.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    size: u64,
    rdev: (u32, u32),
}

impl<W: Write> Newc<W> {
    pub fn new(out: W) -> Newc<W> {
        Newc {
            out,
            written: 0,
            ino: 0,
        }
    }

    /// A directory with permission bits `perm` (e.g. `0o755`).
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<(), CpioError> {
        self.member(
            Header {
                name,
                mode: S_IFDIR | (perm & PERM_MASK),
                nlink: 2,
                size: 0,
                rdev: (0, 0),
            },
            &[],
        )
    }

    /// A regular file holding `data`, with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<(), CpioError> {
        self.member(
            Header {
                name,
                mode: S_IFREG | (perm & PERM_MASK),
                nlink: 1,
                size: data.len() as u64,
                rdev: (0, 0),
            },
            data,
        )
    }

    /// A symbolic link `name` → `target` (mode `0777`, as `ln -s` makes them).
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<(), CpioError> {
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::BadName {
                name: format!("{name} -> {target}"),
                reason: "a symlink target must be non-empty and free of NUL bytes",
            });
        }
        self.member(
            Header {
                name,
                mode: S_IFLNK | 0o777,
                nlink: 1,
                size: target.len() as u64,
                rdev: (0, 0),
            },
            target.as_bytes(),
        )
    }

    /// A character device node `major:minor` (e.g. `dev/console`, 5:1).
    pub fn char_device(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.member(
            Header {
                name,
                mode: S_IFCHR | (perm & PERM_MASK),
                nlink: 1,
                size: 0,
                rdev: (major, minor),
            },
            &[],
        )
    }

    /// Writes the trailer and returns the writer (not flushed) and the archive's length.
    pub fn finish(mut self) -> Result<(W, u64), CpioError> {
        let header = Header {
            name: TRAILER,
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        };
        let bytes = self.encode(&header, 0)?;
        self.write(&bytes)
            .and_then(|()| self.pad())
            .map_err(|source| CpioError::Write {
                name: TRAILER.into(),
                source,
            })?;
        Ok((self.out, self.written))
    }

    fn member(&mut self, mut header: Header<'_>, data: &[u8]) -> Result<(), CpioError> {
        let name = header.name.trim_start_matches('/');
        let bad = |reason| CpioError::BadName {
            name: header.name.to_string(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("it is empty (or only slashes)"));
        }
        if name.contains('\0') {
            return Err(bad("it contains a NUL byte"));
        }
        if name == TRAILER {
            return Err(bad("it is the end-of-archive marker"));
        }
        header.name = name;
        let ino = self.ino.checked_add(1).ok_or_else(|| CpioError::Overflow {
            name: name.to_string(),
            field: "inode number",
            value: u64::from(self.ino) + 1,
        })?;
        let bytes = self.encode(&header, ino)?;
        self.write(&bytes)
            .and_then(|()| self.pad())
            .and_then(|()| self.write(data))
            .and_then(|()| self.pad())
            .map_err(|source| CpioError::Write {
                name: name.to_string(),
                source,
            })?;
        self.ino = ino;
        Ok(())
    }

    /// The header and name (unpadded) of one member.
    fn encode(&self, h: &Header<'_>, ino: u32) -> Result<Vec<u8>, CpioError> {
        let fit = |field: &'static str, value: u64| {
            u32::try_from(value).map_err(|_| CpioError::Overflow {
                name: h.name.to_string(),
                field,
                value,
            })
        };
        let size = fit("file size", h.size)?;
        let namesize = fit("name length", h.name.len() as u64 + 1)?;
        let fields = [
            ino, h.mode, 0, 0, h.nlink, 0, size, 0, 0, h.rdev.0, h.rdev.1, namesize, 0,
        ];
        let mut buf = Vec::with_capacity(6 + 13 * 8 + h.name.len() + 1);
        buf.extend_from_slice(b"070701");
        for f in fields {
            buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        buf.extend_from_slice(h.name.as_bytes());
        buf.push(0);
        Ok(buf)
    }

    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.write(&[0u8; 3][..n])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One parsed member: name, ino, mode, nlink, mtime, rdev, data.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Member {
        pub name: String,
        pub ino: u32,
        pub mode: u32,
        pub nlink: u32,
        pub mtime: u32,
        pub rdev: (u32, u32),
        pub data: Vec<u8>,
    }

    /// A strict newc reader for checking what the writer produced.
    pub(crate) fn parse(mut b: &[u8]) -> Vec<Member> {
        let total = b.len();
        let mut out = Vec::new();
        loop {
            let at = total - b.len();
            assert_eq!(at % 4, 0, "member at {at} is not aligned");
            assert_eq!(&b[..6], b"070701", "magic at {at}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).expect("hex");
                u32::from_str_radix(s, 16).expect("hex field")
            };
            let (ino, mode, nlink, mtime, size) =
                (field(0), field(1), field(4), field(5), field(6));
            let rdev = (field(9), field(10));
            let namesize = field(11) as usize;
            let name_end = 110 + namesize;
            assert_eq!(b[name_end - 1], 0, "name NUL");
            let name = String::from_utf8(b[110..name_end - 1].to_vec()).expect("utf8 name");
            let data_at = name_end.div_ceil(4) * 4;
            let data = b[data_at..data_at + size as usize].to_vec();
            b = &b[(data_at + size as usize).div_ceil(4) * 4..];
            if name == TRAILER {
                assert!(b.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push(Member {
                name,
                ino,
                mode,
                nlink,
                mtime,
                rdev,
                data,
            });
        }
    }

    fn sample() -> Vec<u8> {
        let mut c = Newc::new(Vec::new());
        c.dir("/bin", 0o755).expect("dir");
        c.file("bin/tool", 0o755, b"#!/bin/sh\necho hi\n")
            .expect("file");
        c.file("etc-motd", 0o644, b"x").expect("file");
        c.symlink("sbin", "bin").expect("symlink");
        c.dir("tmp", 0o1777).expect("dir");
        c.char_device("console", 0o600, 5, 1).expect("dev");
        let (out, len) = c.finish().expect("finish");
        assert_eq!(len, out.len() as u64);
        out
    }

    #[test]
    fn members_round_trip_with_modes_inodes_and_zero_mtime() {
        let out = sample();
        assert_eq!(out.len() % 4, 0);
        let members = parse(&out);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/tool", "etc-motd", "sbin", "tmp", "console"]
        );
        for (i, m) in members.iter().enumerate() {
            assert_eq!(m.ino, i as u32 + 1, "{m:?}");
            assert_eq!(m.mtime, 0);
        }
        assert_eq!(members[0].mode, 0o040755);
        assert_eq!(members[0].nlink, 2);
        assert_eq!(members[1].mode, 0o100755);
        assert_eq!(members[1].data, b"#!/bin/sh\necho hi\n");
        assert_eq!(members[2].mode, 0o100644);
        assert_eq!(members[3].mode, 0o120777);
        assert_eq!(members[3].data, b"bin");
        assert_eq!(members[4].mode, 0o041777);
        assert_eq!(members[5].mode, 0o020600);
        assert_eq!(members[5].rdev, (5, 1));
        assert_eq!(sample(), out, "same calls, same bytes");
    }

    #[test]
    fn gnu_cpio_extracts_files_modes_and_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let mut c = Newc::new(Vec::new());
        c.dir("bin", 0o755).expect("dir");
        c.file("bin/tool", 0o750, b"tool bytes").expect("file");
        c.file("data", 0o600, &[0u8; 4097]).expect("file");
        c.symlink("sbin", "bin").expect("symlink");
        c.symlink("link-to-tool", "bin/tool").expect("symlink");
        let (archive, _) = c.finish().expect("finish");

        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("cpio")
            .args(["-i", "-d", "--no-absolute-filenames", "--quiet"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cpio (GNU cpio is needed for this test)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&archive)
            .expect("feed cpio");
        assert!(child.wait().expect("cpio").success());

        let mode = |p: &str| {
            std::fs::symlink_metadata(dir.path().join(p))
                .expect("extracted")
                .permissions()
                .mode()
        };
        assert_eq!(mode("bin") & 0o170777, 0o040755);
        assert_eq!(mode("bin/tool") & 0o170777, 0o100750);
        assert_eq!(mode("data") & 0o170777, 0o100600);
        assert_eq!(
            std::fs::read(dir.path().join("bin/tool")).expect("read"),
            b"tool bytes"
        );
        assert_eq!(
            std::fs::read(dir.path().join("data")).expect("read"),
            vec![0u8; 4097]
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("sbin")).expect("link"),
            std::path::Path::new("bin")
        );
        assert_eq!(
            std::fs::read(dir.path().join("link-to-tool")).expect("through link"),
            b"tool bytes"
        );

        // The listing agrees, device nodes included.
        let mut c = Newc::new(Vec::new());
        c.char_device("console", 0o600, 5, 1).expect("dev");
        let (archive, _) = c.finish().expect("finish");
        let listing = list_verbose(&archive);
        assert!(
            listing.starts_with("crw-------")
                && listing.contains("5,   1")
                && listing.contains("console"),
            "{listing}"
        );
    }

    /// `cpio -tv` of an archive.
    pub(crate) fn list_verbose(archive: &[u8]) -> String {
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cpio");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = archive.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().expect("cpio -t");
        feeder.join().expect("feeder").expect("feed cpio");
        assert!(out.status.success());
        String::from_utf8(out.stdout).expect("utf8 listing")
    }

    #[test]
    fn bad_names_are_errors() {
        let mut c = Newc::new(Vec::new());
        for name in ["", "/", "a\0b", "TRAILER!!!"] {
            let err = c.file(name, 0o644, b"").expect_err(name);
            assert!(matches!(err, CpioError::BadName { .. }), "{err}");
        }
        assert!(c.symlink("l", "").is_err());
    }

    #[test]
    fn fields_past_u32_are_errors() {
        let c = Newc::new(Vec::new());
        let err = c
            .encode(
                &Header {
                    name: "huge",
                    mode: S_IFREG | 0o644,
                    nlink: 1,
                    size: 4 << 30,
                    rdev: (0, 0),
                },
                1,
            )
            .expect_err("4 GiB member");
        let msg = err.to_string();
        assert!(
            msg.contains("huge") && msg.contains("4294967296") && msg.contains("file size"),
            "{msg}"
        );

        let mut c = Newc::new(Vec::new());
        c.ino = u32::MAX;
        let err = c
            .file("one-too-many", 0o644, b"")
            .expect_err("inode overflow");
        assert!(err.to_string().contains("inode number"), "{err}");
    }

    #[test]
    fn write_errors_name_the_member() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut c = Newc::new(Full);
        let err = c.file("init", 0o755, b"x").expect_err("full");
        assert!(
            err.to_string().contains("\"init\"") && err.to_string().contains("disk full"),
            "{err}"
        );
    }
}
