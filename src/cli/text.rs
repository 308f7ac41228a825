//! Words and numbers for people: plurals, sizes, ranges. Output never shows Rust syntax.

/// `1 file`, `2 files`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Bytes as a short human size: `512 B`, `1.5 KiB`, `12.3 MiB`, `4.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_sizes() {
        assert_eq!(count(1u64, "key", "keys"), "1 key");
        assert_eq!(count(0u64, "key", "keys"), "0 keys");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(129_113), "126.1 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }
}
