//! Property tests of `normalize`, `normalize_into`, `classify` and `escape_excerpt` over
//! all types, with strategies that generate valid and near-valid values of every type.

use super::*;
use proptest::prelude::*;
use proptest::sample::select;

fn lim() -> Limits {
    Limits::default()
}

fn any_type() -> impl Strategy<Value = IocType> {
    select(IocType::ALL.to_vec())
}

/// Upper-case the ASCII letters whose bit is set in `mask`.
fn mix_case(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9_]([a-z0-9_-]{0,10}[a-z0-9_])?"
}

/// A lower-case domain without wildcard (TLD starts with a letter).
fn domain_name() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(label(), 1..4),
        "[a-z]([a-z0-9-]{0,5}[a-z0-9])?",
    )
        .prop_map(|(mut labels, tld)| {
            labels.push(tld);
            labels.join(".")
        })
}

/// (type, input, expected normalized form) for valid values.
fn valid_ipv4() -> impl Strategy<Value = (IocType, String, String)> {
    (any::<u32>(), prop::option::of(8u8..=32)).prop_map(|(a, p)| {
        let addr = std::net::Ipv4Addr::from(a);
        match p {
            None => (IocType::Ipv4, addr.to_string(), addr.to_string()),
            Some(p) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
                let net = std::net::Ipv4Addr::from(a & mask);
                let want = if p == 32 {
                    net.to_string()
                } else {
                    format!("{net}/{p}")
                };
                (IocType::Ipv4, format!("{addr}/{p}"), want)
            }
        }
    })
}

fn valid_ipv6() -> impl Strategy<Value = (IocType, String, String)> {
    (
        any::<u128>(),
        prop::option::of(16u8..=128),
        0..3u8,
        any::<u64>(),
    )
        .prop_map(|(a, p, form, mask)| {
            let addr = std::net::Ipv6Addr::from(a);
            let seg = addr.segments();
            let text = match form {
                0 => addr.to_string(),
                1 => seg.map(|s| format!("{s:x}")).join(":"),
                _ => seg.map(|s| format!("{s:04x}")).join(":"),
            };
            let text = mix_case(&text, mask);
            match p {
                None => (IocType::Ipv6, text, addr.to_string()),
                Some(p) => {
                    let m = u128::MAX.checked_shl(128 - u32::from(p)).unwrap_or(0);
                    let net = std::net::Ipv6Addr::from(a & m);
                    let want = if p == 128 {
                        net.to_string()
                    } else {
                        format!("{net}/{p}")
                    };
                    (IocType::Ipv6, format!("{text}/{p}"), want)
                }
            }
        })
}

fn valid_domain() -> impl Strategy<Value = (IocType, String, String)> {
    (domain_name(), any::<bool>(), any::<bool>(), any::<u64>()).prop_map(|(d, wild, dot, mask)| {
        let want = if wild { format!("*.{d}") } else { d };
        let mut input = mix_case(&want, mask);
        if dot {
            input.push('.');
        }
        (IocType::Domain, input, want)
    })
}

fn url_host() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        domain_name().prop_map(|d| (d.clone(), d)),
        "[a-z0-9_-]{1,8}".prop_map(|h| (h.clone(), h)),
        any::<u32>().prop_map(|a| {
            let s = std::net::Ipv4Addr::from(a).to_string();
            (s.clone(), s)
        }),
        any::<u128>().prop_map(|a| {
            let addr = std::net::Ipv6Addr::from(a);
            let full = addr.segments().map(|s| format!("{s:X}")).join(":");
            (format!("[{full}]"), format!("[{addr}]"))
        }),
    ]
}

fn valid_url() -> impl Strategy<Value = (IocType, String, String)> {
    (
        "[a-z][a-z0-9+.-]{0,6}",
        prop::option::of("[A-Za-z0-9._~!$&'()*+,;=:%-]{0,10}"),
        url_host(),
        prop::option::of((1u16..=65535, 0usize..3)),
        "(/[A-Za-z0-9._~%!$&'()*+,;=:@ü-]{0,8}){0,3}",
        prop::option::of("[A-Za-z0-9=&/?:@._%-]{0,12}"),
        prop::option::of("[A-Za-z0-9=&/?:@._%#-]{0,12}"),
        any::<u64>(),
    )
        .prop_map(
            |(scheme, user, (host_in, host_want), port, path, query, frag, mask)| {
                let user = user.map(|u| format!("{u}@")).unwrap_or_default();
                let (port_in, port_want) = match port {
                    Some((p, zeros)) => (format!(":{}{p}", "0".repeat(zeros)), format!(":{p}")),
                    None => (String::new(), String::new()),
                };
                let mut rest = path;
                if let Some(q) = query {
                    rest.push('?');
                    rest.push_str(&q);
                }
                if let Some(f) = frag {
                    rest.push('#');
                    rest.push_str(&f);
                }
                let input = format!(
                    "{}://{user}{}{port_in}{rest}",
                    mix_case(&scheme, mask),
                    mix_case(&host_in, mask.rotate_left(17))
                );
                let want = format!("{scheme}://{user}{host_want}{port_want}{rest}");
                (IocType::Url, input, want)
            },
        )
}

fn valid_email() -> impl Strategy<Value = (IocType, String, String)> {
    (
        // The first character avoids '#' and '/', which would read as a comment.
        "[A-Za-z0-9!$%&'*+=?^_`{|}~-][A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{0,15}(\\.[A-Za-z0-9_+-]{1,10}){0,2}",
        domain_name(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(local, dom, mask, dot)| {
            let input = format!("{local}@{}{}", mix_case(&dom, mask), if dot { "." } else { "" });
            (IocType::Email, input, format!("{local}@{dom}"))
        })
}

fn valid_hash() -> impl Strategy<Value = (IocType, String, String)> {
    (
        select(vec![
            IocType::Md5,
            IocType::Sha1,
            IocType::Sha256,
            IocType::Sha512,
        ]),
        prop::collection::vec(select(b"0123456789abcdefABCDEF".to_vec()), 128),
    )
        .prop_map(|(ty, digits)| {
            let n = ty.hex_len().unwrap();
            let input = String::from_utf8(digits[..n].to_vec()).unwrap();
            let want = input.to_ascii_lowercase();
            (ty, input, want)
        })
}

fn valid_any() -> impl Strategy<Value = (IocType, String, String)> {
    prop_oneof![
        valid_ipv4(),
        valid_ipv6(),
        valid_domain(),
        valid_url(),
        valid_email(),
        valid_hash(),
    ]
}

/// Inputs near the valid ones: mutated valid values and strings from
/// the characters that matter to the parsers.
fn ioc_ish() -> impl Strategy<Value = Vec<u8>> {
    let alphabet = b"0123456789abcdefxAF.:/@[]*#;%_- \t\r\0\x7f\xc3\xa9\xff\\?".to_vec();
    prop_oneof![
        valid_any().prop_map(|(_, s, _)| s.into_bytes()),
        (
            valid_any(),
            prop::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    select(alphabet.clone()),
                    0..3u8
                ),
                1..4
            )
        )
            .prop_map(|((_, s, _), edits)| {
                let mut b = s.into_bytes();
                for (at, byte, op) in edits {
                    let i = at.index(b.len() + 1);
                    match op {
                        0 => b.insert(i, byte),
                        1 if i < b.len() => b[i] = byte,
                        _ if i < b.len() => {
                            b.remove(i);
                        }
                        _ => b.push(byte),
                    }
                }
                b
            }),
        prop::collection::vec(select(alphabet), 0..48),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (1) Arbitrary bytes never panic, whatever the type.
    #[test]
    fn never_panics(raw in prop::collection::vec(any::<u8>(), 0..5000), max in 0usize..200) {
        for ty in IocType::ALL {
            let _ = normalize(ty, &raw, &lim());
        }
        let _ = classify(&raw, &lim());
        prop_assert!(escape_excerpt(&raw, max).len() <= max);
    }

    #[test]
    fn never_panics_ioc_ish(raw in ioc_ish(), v4 in 0u8..=255, v6 in 0u8..=255) {
        let limits = Limits { min_prefix_v4: v4, min_prefix_v6: v6 };
        for ty in IocType::ALL {
            let _ = normalize(ty, &raw, &limits);
        }
        let _ = classify(&raw, &limits);
    }

    /// (2) + (3): accepted values are fixed points, classify to the same
    /// type and value, and no other type accepts them (so the type
    /// order in classify cannot matter).
    #[test]
    fn accepted_values_are_canonical(raw in ioc_ish(), ty in any_type()) {
        let l = lim();
        if let Ok(Some(v)) = normalize(ty, &raw, &l) {
            prop_assert_eq!(normalize(ty, v.as_bytes(), &l), Ok(Some(v.clone())));
            prop_assert_eq!(classify(v.as_bytes(), &l), Some((ty, v.clone())));
            for other in IocType::ALL {
                if other != ty {
                    let r = normalize(other, v.as_bytes(), &l);
                    prop_assert!(r.is_err(), "{} value {:?} also accepted as {}", ty, v, other);
                }
            }
        }
    }

    /// classify agrees with normalize on raw input as well.
    #[test]
    fn classify_agrees_with_normalize(raw in ioc_ish()) {
        let l = lim();
        match classify(&raw, &l) {
            Some((ty, v)) => prop_assert_eq!(normalize(ty, &raw, &l), Ok(Some(v))),
            None => {
                for ty in IocType::ALL {
                    prop_assert!(!matches!(normalize(ty, &raw, &l), Ok(Some(_))));
                }
            }
        }
    }

    /// (4) Generated valid values are accepted with the expected form,
    /// also with surrounding noise the line rules remove.
    #[test]
    fn generated_values_accepted((ty, input, want) in valid_any(), crlf in any::<bool>(), comment in any::<bool>()) {
        let l = lim();
        prop_assert_eq!(normalize(ty, input.as_bytes(), &l), Ok(Some(want.clone())));
        let mut line = format!(" \t{input}");
        if comment {
            line.push_str(" # feed X");
        }
        if crlf {
            line.push('\r');
        }
        prop_assert_eq!(normalize(ty, line.as_bytes(), &l), Ok(Some(want.clone())));
        prop_assert_eq!(classify(input.as_bytes(), &l), Some((ty, want.clone())));
        prop_assert_eq!(normalize(ty, want.as_bytes(), &l), Ok(Some(want)));
    }

    /// normalize_into appends exactly the value, or leaves `out` alone.
    #[test]
    fn normalize_into_out_contract(raw in ioc_ish(), ty in any_type(), prefix in prop::collection::vec(any::<u8>(), 0..20)) {
        let l = lim();
        let mut out = prefix.clone();
        match normalize_into(ty, &raw, &l, &mut out) {
            Ok(Line::Value) => {
                let v = normalize(ty, &raw, &l).unwrap().unwrap();
                prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
                prop_assert_eq!(&out[prefix.len()..], v.as_bytes());
            }
            Ok(Line::Skip) | Err(_) => prop_assert_eq!(out, prefix),
        }
    }

    /// escape_excerpt stays within budget, is printable ASCII, and
    /// never splits an escape: the kept part unescapes to a prefix.
    #[test]
    fn escape_excerpt_props(raw in prop::collection::vec(any::<u8>(), 0..64), max in 0usize..300) {
        let e = escape_excerpt(&raw, max);
        prop_assert!(e.len() <= max);
        prop_assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)));
        let full = escape_excerpt(&raw, usize::MAX);
        let body = if e == full {
            prop_assert_eq!(unescape(&full), raw.clone());
            e.as_str()
        } else {
            prop_assert!(full.len() > max);
            let dots = max.min(3);
            prop_assert_eq!(&e[e.len() - dots..], &"..."[..dots]);
            &e[..e.len() - dots]
        };
        let kept = unescape(body);
        prop_assert_eq!(&raw[..kept.len()], &kept[..]);
    }
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b[i + 1] == b'\\' {
                out.push(b'\\');
                i += 2;
            } else {
                assert_eq!(b[i + 1], b'x');
                out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                i += 4;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Dotted digits: right and wrong octet counts, leading zeros, values past 255.
fn dotted_digits() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            (0u32..=255).prop_map(|n| n.to_string()),
            (0u32..10_000).prop_map(|n| n.to_string()),
            (0u32..100).prop_map(|n| format!("0{n}")),
            Just(String::new()),
        ],
        1..6,
    )
    .prop_map(|octets| octets.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The IPv4 fast path takes exactly the lines the full parser leaves unchanged.
    #[test]
    fn ipv4_fast_path_agrees_with_the_full_parser(v in dotted_digits()) {
        let mut out = Vec::new();
        let full = net::ipv4(&v, 0, &mut out).is_ok() && out == v.as_bytes();
        prop_assert_eq!(net::is_normal_ipv4(v.as_bytes()), full, "{}", v);
    }
}
