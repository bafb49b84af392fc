//! Parsing `--size` values.

/// `4GiB`, `512MiB`, `2G`, `1.5G`, `1073741824B`; a bare number means MiB. `K/M/G/T` and
/// `KiB…` are binary; `KB/MB/GB/TB` are decimal (as `truncate(1)`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!(
            "invalid size {text:?}: expected a number with an optional unit, e.g. 4GiB, 512MiB, 2G"
        )
    })?;
    let multiplier: f64 = match unit.trim() {
        "" => (1u64 << 20) as f64,
        "B" | "b" => 1.0,
        "K" | "k" | "KiB" => 1024.0,
        "M" | "m" | "MiB" => (1u64 << 20) as f64,
        "G" | "g" | "GiB" => (1u64 << 30) as f64,
        "T" | "t" | "TiB" => (1u64 << 40) as f64,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {text:?}: use B, K/KiB, M/MiB, G/GiB, T/TiB (binary) or KB, MB, GB, TB (decimal)"
            ));
        }
    };
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {text:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("100"), Ok(100 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("4096B"), Ok(4096));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "G", "-1G", "4 parsecs", "0", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("4XB").unwrap_err().contains("unit"));
    }
}
