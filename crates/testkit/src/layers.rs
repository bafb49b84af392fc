//! Crafting tar layers byte by byte, so tests control exactly what a layer holds: entry
//! order, whiteouts, opaque markers, hardlinks, devices, FIFOs, PAX records (long names,
//! xattrs, big ids), GNU long names, base-256 numbers, and hostile names no well-behaved
//! archiver would write.

use std::io::Write;
use std::process::{Command, Stdio};

/// Deterministic incompressible bytes (xorshift from `seed`), so a layer is as big on the
/// wire and on disk as it is unpacked.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One tar member, fully specified.
#[derive(Clone, Debug)]
pub struct Member {
    pub path: Vec<u8>,
    /// ustar type flag: b'0' file, b'1' hardlink, b'2' symlink, b'3' char, b'4' block, b'5' dir, b'6' fifo.
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    pub major: u32,
    pub minor: u32,
    /// Extra PAX records (`SCHILY.xattr.user.x` …).
    pub pax: Vec<(String, Vec<u8>)>,
    /// Put an over-long name in a GNU `L`/`K` record instead of PAX.
    pub gnu_long_names: bool,
    /// Write ids that overflow octal in base-256 instead of PAX.
    pub base256_ids: bool,
}

impl Member {
    pub fn new(path: impl AsRef<[u8]>, typeflag: u8) -> Member {
        Member {
            path: path.as_ref().to_vec(),
            typeflag,
            mode: if typeflag == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            link: Vec::new(),
            data: Vec::new(),
            major: 0,
            minor: 0,
            pax: Vec::new(),
            gnu_long_names: false,
            base256_ids: false,
        }
    }
}

/// Builder for one uncompressed tar layer.
#[derive(Default, Clone)]
pub struct LayerBuilder {
    buf: Vec<u8>,
}

fn octal(field: &mut [u8], v: u64) -> bool {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    if s.len() > field.len() - 1 {
        return false;
    }
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
    true
}

fn base256(field: &mut [u8], v: u64) {
    field.fill(0);
    let n = field.len();
    for (i, b) in v.to_be_bytes().iter().rev().enumerate() {
        field[n - 1 - i] = *b;
    }
    field[0] |= 0x80;
}

fn pax_record(key: &str, val: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + val.len() + 1;
    let mut len = body_len + 1;
    while format!("{len}").len() + body_len != len {
        len += 1;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(val);
    r.push(b'\n');
    r
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder::default()
    }

    fn header(&mut self, name: &[u8], typeflag: u8, size: u64, m: &Member, link: &[u8]) {
        let mut h = [0u8; 512];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], u64::from(m.mode));
        if !octal(&mut h[108..116], m.uid) {
            base256(&mut h[108..116], m.uid);
        }
        if !octal(&mut h[116..124], m.gid) {
            base256(&mut h[116..124], m.gid);
        }
        if !octal(&mut h[124..136], size) {
            base256(&mut h[124..136], size);
        }
        octal(&mut h[136..148], m.mtime);
        h[156] = typeflag;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], u64::from(m.major));
        octal(&mut h[337..345], u64::from(m.minor));
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        octal(&mut h[148..155], u64::from(sum));
        h[155] = b' ';
        self.buf.extend_from_slice(&h);
    }

    fn data(&mut self, d: &[u8]) {
        self.buf.extend_from_slice(d);
        let pad = (512 - d.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    /// Appends a fully specified member (with whatever PAX/GNU records it needs).
    pub fn member(mut self, m: Member) -> LayerBuilder {
        let mut pax: Vec<u8> = Vec::new();
        for (k, v) in &m.pax {
            pax.extend(pax_record(k, v));
        }
        let big = |v: u64| v > 0o7777777;
        let mut hm = m.clone();
        if !m.base256_ids {
            if big(m.uid) {
                pax.extend(pax_record("uid", m.uid.to_string().as_bytes()));
                hm.uid = 0;
            }
            if big(m.gid) {
                pax.extend(pax_record("gid", m.gid.to_string().as_bytes()));
                hm.gid = 0;
            }
        }
        if m.path.len() > 100 && m.gnu_long_names {
            let mut p = m.path.clone();
            p.push(0);
            self.header(
                b"././@LongLink",
                b'L',
                p.len() as u64,
                &Member::new("", b'L'),
                b"",
            );
            self.data(&p);
        } else if m.path.len() > 100 {
            pax.extend(pax_record("path", &m.path));
        }
        if m.link.len() > 100 && m.gnu_long_names {
            let mut p = m.link.clone();
            p.push(0);
            self.header(
                b"././@LongLink",
                b'K',
                p.len() as u64,
                &Member::new("", b'K'),
                b"",
            );
            self.data(&p);
        } else if m.link.len() > 100 {
            pax.extend(pax_record("linkpath", &m.link));
        }
        if !pax.is_empty() {
            self.header(
                b"PaxHeader",
                b'x',
                pax.len() as u64,
                &Member::new("", b'x'),
                b"",
            );
            self.data(&pax);
        }
        self.header(&m.path, m.typeflag, m.data.len() as u64, &hm, &m.link);
        self.data(&m.data);
        self
    }

    pub fn dir(self, path: &str, mode: u32) -> LayerBuilder {
        self.member(Member {
            mode,
            ..Member::new(path, b'5')
        })
    }
    pub fn file(self, path: &str, data: &[u8]) -> LayerBuilder {
        self.member(Member {
            data: data.to_vec(),
            ..Member::new(path, b'0')
        })
    }
    pub fn file_with(self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> LayerBuilder {
        self.member(Member {
            data: data.to_vec(),
            mode,
            uid,
            gid,
            ..Member::new(path, b'0')
        })
    }
    pub fn symlink(self, path: &str, target: &str) -> LayerBuilder {
        self.member(Member {
            link: target.as_bytes().to_vec(),
            mode: 0o777,
            ..Member::new(path, b'2')
        })
    }
    pub fn hardlink(self, path: &str, target: &str) -> LayerBuilder {
        self.member(Member {
            link: target.as_bytes().to_vec(),
            ..Member::new(path, b'1')
        })
    }
    pub fn char_dev(self, path: &str, major: u32, minor: u32) -> LayerBuilder {
        self.member(Member {
            major,
            minor,
            mode: 0o666,
            ..Member::new(path, b'3')
        })
    }
    pub fn block_dev(self, path: &str, major: u32, minor: u32) -> LayerBuilder {
        self.member(Member {
            major,
            minor,
            mode: 0o660,
            ..Member::new(path, b'4')
        })
    }
    pub fn fifo(self, path: &str) -> LayerBuilder {
        self.member(Member::new(path, b'6'))
    }
    /// `.wh.NAME` for `path` (`a/b` → `a/.wh.b`).
    pub fn whiteout(self, path: &str) -> LayerBuilder {
        let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.member(Member {
            mode: 0,
            ..Member::new(p, b'0')
        })
    }
    /// `DIR/.wh..wh..opq`.
    pub fn opaque(self, dir: &str) -> LayerBuilder {
        let p = if dir.is_empty() {
            ".wh..wh..opq".to_string()
        } else {
            format!("{dir}/.wh..wh..opq")
        };
        self.member(Member {
            mode: 0,
            ..Member::new(p, b'0')
        })
    }
    /// Raw bytes appended as-is (corrupt headers, truncation experiments).
    pub fn raw(mut self, bytes: &[u8]) -> LayerBuilder {
        self.buf.extend_from_slice(bytes);
        self
    }
    /// The tar with its two terminating zero blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend(std::iter::repeat_n(0u8, 1024));
        self.buf
    }
    /// The tar without end-of-archive blocks.
    pub fn unterminated(self) -> Vec<u8> {
        self.buf
    }
}

fn pipe(tool: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let exe = crate::tools::require(tool);
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    writer
        .join()
        .expect("writer thread")
        .expect("write to compressor");
    assert!(out.status.success(), "{tool} {args:?} failed");
    out.stdout
}

/// gzip-compresses with the real `gzip` tool.
pub fn gzip(tar: &[u8]) -> Vec<u8> {
    pipe("gzip", &["-c", "-n"], tar)
}

/// zstd-compresses with the real `zstd` tool.
pub fn zstd(tar: &[u8]) -> Vec<u8> {
    pipe("zstd", &["-c", "-q"], tar)
}

/// A Debian package (`.deb`) as `dpkg-deb` lays it out: an `ar` archive of
/// `debian-binary`, `control.tar` and `data_member` (`data.tar`, `data.tar.zst`, …)
/// holding `data`.
pub fn deb(data_member: &str, data: &[u8]) -> Vec<u8> {
    let control = LayerBuilder::new()
        .file("control", b"Package: x\n")
        .finish();
    let mut out = b"!<arch>\n".to_vec();
    for (name, body) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar", &control[..]),
        (data_member, data),
    ] {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            "100644",
            body.len()
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        // ar pads members to an even offset.
        if body.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}
