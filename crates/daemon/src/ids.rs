//! Identifiers and timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// A random 16-hex-digit id (64 bits from the kernel's CSPRNG).
pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Operation ids appear in error bodies and in the log, to correlate the two.
pub fn operation_id() -> String {
    format!("op-{}", &new_id()[..12])
}

/// Fills `buf` from the kernel's CSPRNG; for secrets, where no fallback will do.
pub fn secret_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    Ok(())
}

pub fn fill_random(buf: &mut [u8]) {
    if secret_random(buf).is_err() {
        // getrandom only fails on ancient kernels; fall back to time + pid so ids stay
        // unique enough for one machine.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ (u128::from(std::process::id()) << 64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
}

/// Now, as RFC 3339 UTC with second precision (`2026-11-25T21:04:05Z`).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

pub use banger_api::time::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(operation_id().starts_with("op-"));
    }
}
