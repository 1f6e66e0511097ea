//! The value formats of the config file: durations, byte sizes and octal permission bits,
//! parsed from and formatted back to the strings admins write.

use std::time::Duration;

use super::MAX_FILE_MODE;

pub(super) const KIB: u64 = 1 << 10;
pub(super) const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

const HOUR: u64 = 3600;
pub(super) const DAY: u64 = 24 * HOUR;

/// Parses a duration with `humantime` ("24h", "7d", "2ms", "1h30m", "0").
/// Zero is accepted here; [`Config::validate`](super::Config::validate) decides per key
/// whether it makes sense.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;
    let s = s.trim();
    humantime::parse_duration(s).map_err(|e| match e {
        E::Empty => "the value is empty".to_string(),
        E::NumberOverflow => format!("{s:?} is too large or finer than 1ns"),
        E::UnknownUnit { unit, .. } if unit.is_empty() => "a unit is needed".to_string(),
        E::UnknownUnit { unit, .. } => {
            format!("unknown unit {unit:?}; use ns, us, ms, s, m, h, d, w, M or y")
        }
        E::InvalidCharacter(at) | E::NumberExpected(at) => {
            format!("cannot read {:?}", s.get(at..).unwrap_or(s))
        }
    })
}

/// Parses a byte size: an integer optionally followed by a unit, with optional
/// spaces between. Units (case-insensitive): `B`; binary `KiB`/`MiB`/`GiB`/`TiB`
/// and the shorthands `K`/`M`/`G`/`T` (powers of 1024); decimal `KB`/`MB`/`GB`/`TB`
/// (powers of 1000). Fractions are rejected so sizes stay exact.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err("a size starts with a whole number".to_string());
    }
    if unit.starts_with(['.', ',']) {
        return Err("fractions are not accepted; use a smaller unit".to_string());
    }
    let too_large = || format!("{s:?} is too large");
    let number: u64 = number.parse().map_err(|_| too_large())?;
    let unit = unit.trim_start();
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "t" | "tib" => TIB,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit {unit:?}; use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB"
            ))
        }
    };
    number.checked_mul(multiplier).ok_or_else(too_large)
}

/// Parses permission bits written in octal: "0644", "644", "0o644"; at most 0o7777.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err("only the digits 0-7 are allowed".to_string());
    }
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= MAX_FILE_MODE => Ok(mode),
        _ => Err("at most 7777".to_string()),
    }
}

/// Compact, exact form of a duration ("1d", "1h30m", "2ms"); [`parse_duration`]
/// reads it back to the same value.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let (secs, nanos) = (d.as_secs(), u64::from(d.subsec_nanos()));
    let parts = [
        (secs / DAY, "d"),
        (secs % DAY / HOUR, "h"),
        (secs % HOUR / 60, "m"),
        (secs % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1_000 % 1_000, "us"),
        (nanos % 1_000, "ns"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// Exact form of a byte count in the largest binary unit that divides it
/// ("256MiB", "64KiB", "1000B"); [`parse_size`] reads it back to the same value.
pub fn format_size(n: u64) -> String {
    for (unit, len) in [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if n != 0 && n % len == 0 {
            return format!("{}{unit}", n / len);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn duration_parser() {
        let ok = [
            ("24h", 86_400_000),
            ("7d", 7 * 86_400_000),
            ("2ms", 2),
            ("5m", 300_000),
            ("90s", 90_000),
            ("1h30m", 5_400_000),
            ("1h 30m", 5_400_000),
            (" 60s ", 60_000),
            ("0", 0),
            ("0s", 0),
            ("1w", 7 * 86_400_000),
            ("365d", 365 * 86_400_000),
        ];
        for (text, millis) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for bad in [
            "",
            "  ",
            "-1s",
            "24",
            "24 hours please",
            "1x",
            "h",
            "1.2.3s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn size_parser() {
        let ok: [(&str, u64); 17] = [
            ("256MiB", 256 << 20),
            ("64KiB", 64 << 10),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("512B", 512),
            ("1048576", 1 << 20),
            ("0", 0),
            ("64K", 64 << 10),
            ("16M", 16 << 20),
            ("1G", 1 << 30),
            ("64KB", 64_000),
            ("1MB", 1_000_000),
            ("1GB", 1_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("256 MiB", 256 << 20),
            ("256mib", 256 << 20),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, n) in ok {
            assert_eq!(parse_size(text), Ok(n), "{text}");
        }
        let bad = [
            "",
            "MiB",
            "lots",
            "-1",
            "1.5GiB",
            "12 34",
            "1PiB",
            "1KiBs",
            "18446744073709551616",
            "16777216TiB",
            "99999999999999999999999",
        ];
        for text in bad {
            assert!(parse_size(text).is_err(), "{text:?} should be rejected");
        }
        assert!(parse_size("16777216TiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn mode_parser() {
        for (text, mode) in [
            ("0644", 0o644),
            ("644", 0o644),
            ("0o600", 0o600),
            ("7777", 0o7777),
            ("0", 0),
            ("0000440", 0o440),
        ] {
            assert_eq!(parse_mode(text), Ok(mode), "{text}");
        }
        for bad in [
            "",
            "0999",
            "rw-r--r--",
            "10000",
            "-644",
            "0x1a4",
            "64 4",
            "0o",
        ] {
            assert!(parse_mode(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formatters_round_trip() {
        let d = Config::default();
        let durations = [
            (d.retention.live_to_chaud, "1d"),
            (d.retention.chaud_to_tiede, "7d"),
            (d.retention.tiede_to_froid, "30d"),
            (d.retention.froid_retention, "365d"),
            (d.durability.batch_window, "2ms"),
            (d.durability.sync_interval, "100ms"),
            (d.durability.commit_interval, "1s"),
            (d.durability.checkpoint_interval, "5m"),
            (d.aging.interval, "1m"),
            (Duration::ZERO, "0s"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::new(90_061, 1_002_003), "1d1h1m1s1ms2us3ns"),
        ];
        for (value, text) in durations {
            assert_eq!(format_duration(value), text);
            assert_eq!(parse_duration(text), Ok(value), "{text}");
        }
        assert_eq!(
            parse_duration(&format_duration(Duration::MAX)),
            Ok(Duration::MAX)
        );

        let sizes = [
            (d.cache.size, "256MiB"),
            (d.tiers.block_size, "64KiB"),
            (d.durability.segment_size, "64MiB"),
            (0, "0B"),
            (1000, "1000B"),
            (1 << 30, "1GiB"),
            (3 << 40, "3TiB"),
            (3072, "3KiB"),
            (1536, "1536B"),
            (u64::MAX, "18446744073709551615B"),
        ];
        for (value, text) in sizes {
            assert_eq!(format_size(value), text);
            assert_eq!(parse_size(text), Ok(value), "{text}");
        }
    }
}
