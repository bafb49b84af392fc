//! The naming rule shared by images, kernels and (later) VMs.

/// Longest accepted name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks `[a-z0-9][a-z0-9._-]{0,63}`, explaining what is wrong.
pub fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("name is empty".into());
    };
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name {name:?} is {} characters long; the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!(
            "name {name:?} must start with a lower-case letter or a digit"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {name:?} contains {bad:?}; use lower-case letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in [
            "a",
            "debian-bookworm",
            "alpine-3-20",
            "0x",
            "a.b_c-d",
            &"a".repeat(64),
        ] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "Debian",
            "a b",
            "a/b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_names_the_bad_character() {
        let err = validate_name("my Image").unwrap_err();
        assert!(err.contains("' '"), "{err}");
    }
}
