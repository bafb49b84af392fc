//! The agent channel's authentication: a secret per boot that only the agent can read.
//!
//! Any guest process may dial the host's agent port (AF_VSOCK needs no privilege), so the
//! host must tell the real agent from an impostor. For every boot the host draws a
//! [`SECRET_LEN`]-byte secret and appends it to the guest's initramfs as [`SECRET_PATH`]
//! (mode 0400). The agent, PID 1 and still inside the initramfs, reads it and deletes it
//! before any other process exists; after the switch to the image's root the initramfs is
//! out of every process's reach. Nothing of it appears on the kernel command line, in the
//! VMM's arguments or in the guest's file systems.
//!
//! In the hello the host sends a fresh nonce; the agent answers with
//! `HMAC-SHA256(secret, DOMAIN ‖ nonce ‖ 0 ‖ boot_id)`. The secret itself never crosses the
//! channel, and a proof is worth nothing for another nonce.
//!
//! What guest root can do: read the agent's memory or replace it, and so speak for the
//! guest. That is the guest's own machine; the host treats everything an authenticated
//! agent sends as untrusted all the same.

use sha2::{Digest, Sha256};

/// Bytes of secret per boot.
pub const SECRET_LEN: usize = 32;

/// Where the host puts the secret in the initramfs (and where the agent reads it).
pub const SECRET_PATH: &str = "/banger/agent.key";

/// Separates these proofs from any other use of the key.
const DOMAIN: &[u8] = b"banger agent hello v2\0";

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) of `parts`, concatenated, under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The agent's answer to `nonce`, as lowercase hex.
pub fn proof(secret: &[u8], nonce: &str, boot_id: &str) -> String {
    hex(&hmac_sha256(
        secret,
        &[DOMAIN, nonce.as_bytes(), b"\0", boot_id.as_bytes()],
    ))
}

/// Whether `answer` proves knowledge of `secret` for `nonce` (compared in constant time).
pub fn verify(secret: &[u8], nonce: &str, boot_id: &str, answer: &str) -> bool {
    let expected = proof(secret, nonce, boot_id);
    expected.len() == answer.len()
        && expected
            .bytes()
            .zip(answer.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 (short key) and 6 (key longer than a block).
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let key = [0xaau8; 131];
        let mac = hmac_sha256(
            &key,
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_proof_holds_only_for_its_secret_nonce_and_boot() {
        let secret = [7u8; SECRET_LEN];
        let p = proof(&secret, "n1", "boot-a");
        assert!(verify(&secret, "n1", "boot-a", &p));
        assert!(!verify(&secret, "n2", "boot-a", &p));
        assert!(!verify(&secret, "n1", "boot-b", &p));
        assert!(!verify(&[8u8; SECRET_LEN], "n1", "boot-a", &p));
        assert!(!verify(&secret, "n1", "boot-a", ""));
        assert!(!verify(&secret, "n1", "boot-a", &p[..63]));
    }
}
