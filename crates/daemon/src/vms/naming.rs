//! VM names and defaults the daemon decides: a `vm.create` without a name gets
//! `<hint>-<4 hex>`, claimed before it is used so two concurrent creates never pick the
//! same one; `vm.defaults` says which image and kernel `vm run` boots when none is given.

use banger_api::config::{DEFAULT_IMAGE, DEFAULT_KERNEL, ImageDefaults};
use banger_api::names::{MAX_NAME_LEN, validate_name};
use banger_api::vm::VmDefaults;

use crate::claims::{NameClaim, NameClaims};
use crate::error::OpError;

/// Tries before giving up on a hint: 4 hex digits are 65 536 names, so only a hint with
/// nearly all of them taken runs out.
const ATTEMPTS: usize = 64;

/// `<stem>-<4 hex>` within the naming rule: the hint lower-cased, other characters turned
/// into `-`, leading ones that may not start a name dropped, cut to fit, `run` when
/// nothing is left.
pub fn derive_name(hint: Option<&str>, suffix: u16) -> String {
    let cleaned: String = hint
        .unwrap_or("run")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut stem: String = trimmed.chars().take(MAX_NAME_LEN - 5).collect();
    if stem.is_empty() {
        stem = "run".into();
    }
    format!("{stem}-{suffix:04x}")
}

/// 16 random bits from the kernel's generator.
pub fn random_suffix() -> u16 {
    let mut bytes = [0u8; 2];
    crate::ids::fill_random(&mut bytes);
    u16::from_le_bytes(bytes)
}

/// A free name from `hint`, claimed in `claims` (so a concurrent create cannot pick it)
/// and not `taken` in the store; the claim lasts until the create is done.
pub fn claim_free_name<'a>(
    claims: &'a NameClaims,
    hint: Option<&str>,
    taken: impl Fn(&str) -> Result<bool, OpError>,
    mut suffix: impl FnMut() -> u16,
) -> Result<(String, NameClaim<'a>), OpError> {
    for _ in 0..ATTEMPTS {
        let name = derive_name(hint, suffix());
        validate_name(&name).map_err(|e| OpError::BadRequest(format!("VM {e}")))?;
        let Ok(claim) = claims.claim(&name) else {
            continue;
        };
        if !taken(&name)? {
            return Ok((name, claim));
        }
    }
    Err(OpError::AlreadyExists(format!(
        "no free VM name from {:?} after {ATTEMPTS} tries; give a name",
        hint.unwrap_or("run")
    )))
}

/// The config file's default image keys with the daemon's fallbacks; the local name is
/// the one `image pull` derives from the reference unless the file sets one.
pub fn defaults(file: ImageDefaults) -> Result<VmDefaults, OpError> {
    let image_ref = file.image.unwrap_or_else(|| DEFAULT_IMAGE.to_string());
    let image = match file.image_name {
        Some(name) => name,
        None => {
            let derived = banger_oci::reference::default_image_name_of(&image_ref);
            validate_name(&derived).map_err(|m| {
                OpError::BadRequest(format!(
                    "the name derived from default_image {image_ref:?} is not usable ({m}); set default_image_name in the config file"
                ))
            })?;
            derived
        }
    };
    Ok(VmDefaults {
        image,
        image_ref,
        kernel: file.kernel.unwrap_or_else(|| DEFAULT_KERNEL.to_string()),
    })
}

/// `vm.defaults`: read from the config file at each call, so an edit applies without a
/// restart (as it did when the CLI read it).
pub fn load_defaults() -> Result<VmDefaults, OpError> {
    let path = banger_api::config::config_path();
    let file = ImageDefaults::load(&path)
        .map_err(|e| OpError::BadRequest(format!("config file {}: {e}", path.display())))?;
    defaults(file)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier, Mutex};

    use super::*;

    #[test]
    fn names_follow_the_rule() {
        assert_eq!(derive_name(Some("proj"), 0xab), "proj-00ab");
        assert_eq!(derive_name(None, 0xffff), "run-ffff");
        assert_eq!(derive_name(Some("My App!"), 1), "my-app--0001");
        assert_eq!(derive_name(Some("..._x"), 2), "x-0002");
        assert_eq!(derive_name(Some("ü"), 3), "run-0003");
        let long = derive_name(Some(&"a".repeat(200)), 4);
        assert_eq!(long.len(), MAX_NAME_LEN);
        validate_name(&long).expect("valid");
    }

    #[test]
    fn a_taken_or_claimed_name_is_skipped() {
        let claims = NameClaims::new(|n| format!("{n} busy"));
        let held = claims.claim("w-0001").expect("claim");
        let mut next = [1u16, 2, 3].into_iter();
        let (name, _c) = claim_free_name(
            &claims,
            Some("w"),
            |n| Ok(n == "w-0002"),
            || next.next().expect("suffix"),
        )
        .expect("free");
        assert_eq!(name, "w-0003", "0001 claimed, 0002 in the store");
        drop(held);
        let e = claim_free_name(&claims, Some("w"), |_| Ok(true), || 7).err();
        assert!(matches!(e, Some(OpError::AlreadyExists(_))));
    }

    /// Many creates at once, with a suffix space small enough that they collide: every
    /// one gets a name no other holds, and names recorded are never handed out again.
    #[test]
    fn concurrent_creates_get_distinct_names() {
        let claims = Arc::new(NameClaims::new(|n| format!("{n} busy")));
        let store: Arc<Mutex<HashSet<String>>> = Arc::default();
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (claims, store, barrier) = (claims.clone(), store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut n = t as u16;
                    let mut got = Vec::new();
                    for _ in 0..4 {
                        let (name, claim) = claim_free_name(
                            &claims,
                            Some("ws"),
                            |name| Ok(store.lock().expect("store").contains(name)),
                            || {
                                n = (n + 5) % 40;
                                n
                            },
                        )
                        .expect("a free name");
                        // The create records the VM while it holds the claim.
                        assert!(
                            store.lock().expect("store").insert(name.clone()),
                            "{name} handed out twice"
                        );
                        drop(claim);
                        got.push(name);
                    }
                    got
                })
            })
            .collect();
        let all: Vec<String> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect();
        let distinct: HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), threads * 4);
    }

    #[test]
    fn defaults_come_from_the_file_or_the_fallbacks() {
        assert_eq!(
            defaults(ImageDefaults::default()).expect("fallbacks"),
            VmDefaults {
                image: "debian-bookworm".into(),
                image_ref: "debian:bookworm".into(),
                kernel: "default".into(),
            }
        );
        let d = defaults(ImageDefaults {
            image: Some("ghcr.io/org/dev:v2.1".into()),
            image_name: None,
            kernel: Some("cloud".into()),
        })
        .expect("derived");
        assert_eq!((d.image.as_str(), d.kernel.as_str()), ("dev-v2-1", "cloud"));
        let d = defaults(ImageDefaults {
            image: Some("x:y".into()),
            image_name: Some("mine".into()),
            kernel: None,
        })
        .expect("named");
        assert_eq!((d.image.as_str(), d.image_ref.as_str()), ("mine", "x:y"));
    }
}
