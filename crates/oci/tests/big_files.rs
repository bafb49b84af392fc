//! PITFALLS #9: files larger than 2 GiB and 4 GiB stream through with exact sizes
//! (the data is zeros, compressed by the real `zstd`, so the layer is small and fast).

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_oci::{Digest, Entry, EntryKind, EntrySink, LayerInput, Limits, SinkError, flatten};
use std::io::{Read, Write};
use std::process::{Command, Stdio};

struct Counting(Vec<(String, u64, u64)>);

impl EntrySink for Counting {
    fn entry(&mut self, e: &Entry, data: Option<&mut dyn Read>) -> Result<(), SinkError> {
        if let (EntryKind::File { size }, Some(r)) = (&e.kind, data) {
            let n = std::io::copy(r, &mut std::io::sink())?;
            self.0.push((e.path.clone(), *size, n));
        }
        Ok(())
    }
    fn remove(&mut self, _: &str) -> Result<(), SinkError> {
        Ok(())
    }
}

fn header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

#[test]
fn p09_files_over_2_and_4_gib() {
    let sizes = [(2u64 << 30) + 1, (4u64 << 30) + 4097];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.zst");
    let out = std::fs::File::create(&path).unwrap();
    let zstd = banger_testkit::tools::require("zstd");
    let mut child = Command::new(zstd)
        .args(["-1", "-q", "-c", "-T2"])
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let zeros = vec![0u8; 1 << 20];
    for (i, size) in sizes.iter().enumerate() {
        stdin.write_all(&header(&format!("big{i}"), *size)).unwrap();
        let mut left = *size;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            stdin.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
        stdin
            .write_all(&zeros[..((512 - size % 512) % 512) as usize])
            .unwrap();
    }
    stdin.write_all(&[0u8; 1024]).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let blob = std::fs::read(&path).unwrap();
    let input = LayerInput {
        path,
        digest: Digest::of(&blob),
        diff_id: None,
        verified: false,
    };
    let mut sink = Counting(Vec::new());
    flatten(&[input], &mut sink, &Limits::default()).unwrap();
    assert_eq!(
        sink.0,
        vec![
            ("big0".to_string(), sizes[0], sizes[0]),
            ("big1".to_string(), sizes[1], sizes[1])
        ]
    );
}
