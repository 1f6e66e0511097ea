//! IPv4 and IPv6 addresses and networks (the **ipv4** and **ipv6** type rules in the
//! [module documentation](super)).

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Invalid, InvalidKind};

/// Decimal prefix length `0..=max`, no sign or leading zero (also what `cidr::Net` parses:
/// stored values are what this accepted).
pub(crate) fn parse_prefix(s: &str, max: u8) -> Option<u8> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 3 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b.first() == Some(&b'0') {
        return None;
    }
    let n = b
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    u8::try_from(n).ok().filter(|&n| n <= max)
}

/// Check an optional `/prefix` against its range and the configured minimum.
/// Called after the address parsed, so garbage is not reported as "too broad".
fn check_prefix(
    prefix: Option<&str>,
    bits: u8,
    min_prefix: u8,
    bad_prefix: &'static str,
) -> Result<u8, Invalid> {
    let Some(prefix) = prefix else {
        return Ok(bits);
    };
    let prefix = parse_prefix(prefix, bits).ok_or(InvalidKind::Malformed(bad_prefix))?;
    let min_prefix = min_prefix.min(bits);
    if prefix < min_prefix {
        return Err(InvalidKind::TooBroad { min_prefix }.into());
    }
    Ok(prefix)
}

/// Whether `v` is a plain IPv4 address in its normal form ("192.0.2.1": four octets of
/// one to three digits, no leading zeros, none over 255), nearly every line of an IPv4
/// feed. Such a line is its own normalized form; anything else (a prefix, a leading zero,
/// a wrong value) goes through [`ipv4`], which decides and explains. Bulk ingest spent a
/// sixth of its time in the full parse of lines like these.
pub(super) fn is_normal_ipv4(v: &[u8]) -> bool {
    normal_ipv4(v).is_some()
}

/// The address of a plain IPv4 address in normal form (see [`is_normal_ipv4`]).
pub(crate) fn normal_ipv4(v: &[u8]) -> Option<u32> {
    let mut i = 0;
    let mut addr = 0u32;
    for octet in 0..4 {
        let start = i;
        while i < v.len() && i - start < 3 && v[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &v[start..i];
        let fits = match digits {
            [] => false,
            [_] => true,
            [b'0', ..] => false,
            [_, _] => true,
            [a, b, c] => (*a, *b, *c) <= (b'2', b'5', b'5'),
            _ => false,
        };
        if !fits {
            return None;
        }
        let value = digits
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        addr = addr << 8 | value;
        if octet < 3 {
            if v.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    (i == v.len()).then_some(addr)
}

pub(super) fn ipv4(v: &str, min_prefix: u8, out: &mut Vec<u8>) -> Result<(), Invalid> {
    let (addr, prefix) = v.split_once('/').map_or((v, None), |(a, p)| (a, Some(p)));
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| InvalidKind::Malformed("not an IPv4 address or network"))?;
    let prefix = check_prefix(
        prefix,
        32,
        min_prefix,
        "invalid IPv4 prefix length (expected /0 to /32)",
    )?;
    let mask = u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0);
    push_ipv4(out, u32::from(addr) & mask, prefix);
    Ok(())
}

/// Append `addr` as a dotted quad, and `/prefix` below 32.
pub(crate) fn push_ipv4(out: &mut Vec<u8>, addr: u32, prefix: u8) {
    let [a, b, c, d] = addr.to_be_bytes();
    push_u8(out, a);
    for octet in [b, c, d] {
        out.push(b'.');
        push_u8(out, octet);
    }
    if prefix < 32 {
        out.push(b'/');
        push_u8(out, prefix);
    }
}

pub(super) fn ipv6(v: &str, min_prefix: u8, out: &mut Vec<u8>) -> Result<(), Invalid> {
    let (addr, prefix) = v.split_once('/').map_or((v, None), |(a, p)| (a, Some(p)));
    let addr: Ipv6Addr = addr.parse().map_err(|_| {
        InvalidKind::Malformed(if v.contains('%') {
            "IPv6 zone ids (%...) are not allowed"
        } else if v.starts_with('[') {
            "remove the brackets around the IPv6 address"
        } else {
            "not an IPv6 address or network"
        })
    })?;
    let prefix = check_prefix(
        prefix,
        128,
        min_prefix,
        "invalid IPv6 prefix length (expected /0 to /128)",
    )?;
    let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
    let _ = write!(out, "{}", Ipv6Addr::from(u128::from(addr) & mask));
    if prefix < 128 {
        out.push(b'/');
        push_u8(out, prefix);
    }
    Ok(())
}

/// `n` in decimal (the octets of dotted quads, prefix lengths).
fn push_u8(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + n / 10 % 10);
    }
    out.push(b'0' + n % 10);
}

#[cfg(test)]
mod tests {
    use crate::ioc::tests::{check_invalid, check_valid};
    use crate::ioc::{normalize, IocType, Limits};

    #[test]
    fn ipv4_table() {
        let t = IocType::Ipv4;
        check_valid(
            t,
            &[
                ("1.2.3.4", "1.2.3.4"),
                ("0.0.0.0", "0.0.0.0"),
                ("255.255.255.255", "255.255.255.255"),
                ("10.0.0.1", "10.0.0.1"),
                ("1.2.3.4/24", "1.2.3.0/24"),
                ("1.2.3.0/24", "1.2.3.0/24"),
                ("1.2.3.4/32", "1.2.3.4"),
                ("1.2.3.4/31", "1.2.3.4/31"),
                ("1.2.3.5/31", "1.2.3.4/31"),
                ("192.168.255.255/16", "192.168.0.0/16"),
                ("10.255.255.255/8", "10.0.0.0/8"),
                ("255.255.255.255/9", "255.128.0.0/9"),
            ],
        );
        check_invalid(
            t,
            &[
                ("1.2.3", "not an IPv4 address or network"),
                ("1.2.3.4.5", "not an IPv4 address or network"),
                ("256.1.1.1", "not an IPv4 address or network"),
                ("010.1.1.1", "not an IPv4 address or network"),
                ("1.2.3.04", "not an IPv4 address or network"),
                ("+1.2.3.4", "not an IPv4 address or network"),
                ("1.2.3.-4", "not an IPv4 address or network"),
                ("1..2.3", "not an IPv4 address or network"),
                ("0x1.2.3.4", "not an IPv4 address or network"),
                ("16909060", "not an IPv4 address or network"),
                ("1.2.3.4/", "invalid IPv4 prefix length"),
                ("1.2.3.4/33", "invalid IPv4 prefix length"),
                ("1.2.3.4/024", "invalid IPv4 prefix length"),
                ("1.2.3.4/08", "invalid IPv4 prefix length"),
                ("1.2.3.4/+24", "invalid IPv4 prefix length"),
                ("1.2.3.4/-1", "invalid IPv4 prefix length"),
                ("1.2.3.4/24/8", "invalid IPv4 prefix length"),
                ("1.2.3.4/255.255.255.0", "invalid IPv4 prefix length"),
                ("1.2.3.4/0", "network broader than /8"),
                ("1.2.3.4/7", "network broader than /8"),
                ("/24", "not an IPv4 address"),
                ("garbage/4", "not an IPv4 address"),
                ("1.2.3/4", "not an IPv4 address"),
            ],
        );
        // The limit comes from the config.
        let loose = Limits {
            min_prefix_v4: 0,
            ..Limits::default()
        };
        assert_eq!(
            normalize(t, b"1.2.3.4/7", &loose),
            Ok(Some("0.0.0.0/7".into()))
        );
        assert_eq!(
            normalize(t, b"1.2.3.4/0", &loose),
            Ok(Some("0.0.0.0/0".into()))
        );
        let strict = Limits {
            min_prefix_v4: 24,
            ..Limits::default()
        };
        assert_eq!(
            normalize(t, b"1.2.3.4/23", &strict)
                .unwrap_err()
                .to_string(),
            "network broader than /24"
        );
        assert_eq!(
            normalize(t, b"1.2.3.4/24", &strict),
            Ok(Some("1.2.3.0/24".into()))
        );
        // Limits above 32 mean "single addresses only".
        let hosts = Limits {
            min_prefix_v4: 200,
            ..Limits::default()
        };
        assert_eq!(normalize(t, b"1.2.3.4", &hosts), Ok(Some("1.2.3.4".into())));
        assert_eq!(
            normalize(t, b"1.2.3.4/32", &hosts),
            Ok(Some("1.2.3.4".into()))
        );
        assert_eq!(
            normalize(t, b"1.2.3.4/31", &hosts).unwrap_err().to_string(),
            "network broader than /32"
        );
    }

    #[test]
    fn ipv6_table() {
        let t = IocType::Ipv6;
        check_valid(
            t,
            &[
                ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
                ("2001:db8::1", "2001:db8::1"),
                ("2001:DB8::1", "2001:db8::1"),
                ("2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
                ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
                ("::", "::"),
                ("::1", "::1"),
                ("1::", "1::"),
                ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
                ("::FFFF:102:304", "::ffff:1.2.3.4"),
                ("2001:DB8::1/32", "2001:db8::/32"),
                ("2001:db8::1/128", "2001:db8::1"),
                ("2001:db8::1/127", "2001:db8::/127"),
                ("2001:db8:ffff::/16", "2001::/16"),
                ("ffff::/16", "ffff::/16"),
                ("fe80::1", "fe80::1"),
            ],
        );
        check_invalid(
            t,
            &[
                ("2001:db8::1/15", "network broader than /16"),
                ("::/0", "network broader than /16"),
                ("2001:db8::1/129", "invalid IPv6 prefix length"),
                ("2001:db8::1/", "invalid IPv6 prefix length"),
                ("2001:db8::1/064", "invalid IPv6 prefix length"),
                ("fe80::1%eth0", "zone ids"),
                ("fe80::1%25eth0", "zone ids"),
                ("[2001:db8::1]", "brackets"),
                ("2001:db8:::1", "not an IPv6 address"),
                ("1:2:3:4:5:6:7:8:9", "not an IPv6 address"),
                ("2001:db8::g", "not an IPv6 address"),
                ("12345::", "not an IPv6 address"),
                (":", "not an IPv6 address"),
                ("::g/4", "not an IPv6 address"),
                ("1.2.3.4", "looks like an ipv4 indicator, not ipv6"),
                ("1.2.3.0/24", "looks like an ipv4 indicator, not ipv6"),
            ],
        );
        let loose = Limits {
            min_prefix_v6: 0,
            ..Limits::default()
        };
        assert_eq!(normalize(t, b"::/0", &loose), Ok(Some("::/0".into())));
        assert_eq!(
            normalize(t, b"2001:db8::1/15", &loose),
            Ok(Some("2000::/15".into()))
        );
    }
}
