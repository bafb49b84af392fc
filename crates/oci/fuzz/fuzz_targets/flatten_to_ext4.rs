//! The whole conversion path: layers (separated by `--banger-layer--`) are flattened into
//! the real ext4 writer through `banger-rootfs`, the sink `image pull` uses. Whatever the
//! input, flatten or the writer must return an error or produce a finished image — never
//! panic or hang.
#![no_main]

use banger_ext4 as ext4;
use banger_oci as oci;
use banger_rootfs::Ext4Sink;
use libfuzzer_sys::fuzz_target;

const SEPARATOR: &[u8] = b"--banger-layer--";

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
    // The daemon's own entry → ext4 mapping, so what is fuzzed is what users run.
    let mut sink = Ext4Sink::new(writer);
    let limits = oci::Limits {
        max_unpacked_bytes: 16 << 20,
        max_entries: 10_000,
        blob_bytes_read: None,
    };
    if oci::flatten(&inputs, &mut sink, &limits).is_ok() {
        let _ = sink.finish();
    }
});
