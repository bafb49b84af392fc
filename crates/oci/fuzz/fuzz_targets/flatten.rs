//! Arbitrary bytes split into up to three layers (compressed or not): flatten must
//! return Ok or Err, never panic, hang, or allocate without bound.
#![no_main]

use banger_oci::{CollectSink, Digest, LayerInput, Limits, flatten};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut inputs = Vec::new();
    for (i, part) in data.chunks(data.len().div_ceil(3).max(1)).enumerate() {
        let path = dir.path().join(format!("l{i}"));
        std::fs::write(&path, part).expect("write layer");
        inputs.push(LayerInput { path, digest: Digest::of(part), diff_id: None });
    }
    let limits = Limits { max_unpacked_bytes: 64 << 20, max_entries: 100_000 };
    let _ = flatten(&inputs, &mut CollectSink::default(), &limits);
});
