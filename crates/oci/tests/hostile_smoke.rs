//! Stable-toolchain stand-in for the fuzz target (`crates/oci/fuzz`): thousands of
//! deterministic mutations of valid layers (bit flips, truncation, splices, header
//! field garbage), each flattened; every outcome must be Ok or Err, never a panic.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_oci::{CollectSink, Digest, LayerInput, Limits, flatten};
use banger_testkit::layers::{LayerBuilder, Member, gzip};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let long = format!("d/{}", "x".repeat(150));
    vec![
        LayerBuilder::new()
            .dir("a", 0o755)
            .file("a/b", b"hello")
            .hardlink("a/c", "a/b")
            .symlink("s", "a")
            .finish(),
        LayerBuilder::new()
            .whiteout("a/b")
            .opaque("a")
            .fifo("p")
            .char_dev("n", 1, 3)
            .finish(),
        LayerBuilder::new()
            .member(Member {
                data: b"x".to_vec(),
                pax: vec![("SCHILY.xattr.user.a".into(), b"v".to_vec())],
                uid: 5_000_000,
                ..Member::new(&long, b'0')
            })
            .member(Member {
                gnu_long_names: true,
                link: long.clone().into_bytes(),
                ..Member::new(format!("{long}2"), b'1')
            })
            .finish(),
    ]
}

#[test]
fn mutated_layers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = seeds();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let limits = Limits {
        max_unpacked_bytes: 16 << 20,
        max_entries: 10_000,
        blob_bytes_read: None,
    };
    for case in 0..3000 {
        let mut layers = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let mut l = seeds[rng.below(seeds.len())].clone();
            match rng.below(6) {
                0 => {
                    for _ in 0..1 + rng.below(8) {
                        let i = rng.below(l.len());
                        l[i] ^= 1 << rng.below(8);
                    }
                }
                1 => l.truncate(rng.below(l.len())),
                2 => {
                    // Garbage in a header's numeric fields (size/uid/mtime at 100..157).
                    let base = 512 * rng.below(l.len() / 512);
                    for i in base + 100..(base + 157).min(l.len()) {
                        if rng.below(4) == 0 {
                            l[i] = rng.next() as u8;
                        }
                    }
                }
                3 => {
                    let other = &seeds[rng.below(seeds.len())];
                    let cut = rng.below(l.len());
                    l.truncate(cut);
                    l.extend_from_slice(&other[rng.below(other.len())..]);
                }
                4 => {
                    l = gzip(&l);
                    let i = rng.below(l.len());
                    l[i] ^= 0x55;
                }
                _ => {}
            }
            layers.push(l);
        }
        let inputs: Vec<LayerInput> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let path = dir.path().join(format!("c{case}-{i}"));
                std::fs::write(&path, l).unwrap();
                LayerInput {
                    path,
                    digest: Digest::of(l),
                    diff_id: None,
                    verified: false,
                }
            })
            .collect();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            flatten(&inputs, &mut CollectSink::default(), &limits)
        }));
        assert!(r.is_ok(), "case {case} panicked");
        for i in inputs {
            let _ = std::fs::remove_file(i.path);
        }
    }
}
