//! Layers separated by `--banger-layer--` (plain, gzip or zstd; the seed corpus holds real
//! tar layers with whiteouts, opaque dirs, hardlinks, devices and PAX xattrs): flatten must
//! return Ok or Err, never panic, hang, or allocate without bound.
#![no_main]

use banger_oci::{CollectSink, Digest, LayerInput, Limits, flatten};
use libfuzzer_sys::fuzz_target;

const SEPARATOR: &[u8] = b"--banger-layer--";

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        parts.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    parts.push(rest);
    parts.truncate(4);
    parts
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut inputs = Vec::new();
    for (i, part) in split(data).into_iter().enumerate() {
        let path = dir.path().join(format!("l{i}"));
        std::fs::write(&path, part).expect("write layer");
        inputs.push(LayerInput {
            path,
            digest: Digest::of(part),
            diff_id: None,
            verified: false,
        });
    }
    let limits = Limits {
        max_unpacked_bytes: 16 << 20,
        max_entries: 10_000,
        blob_bytes_read: None,
    };
    let _ = flatten(&inputs, &mut CollectSink::default(), &limits);
});
