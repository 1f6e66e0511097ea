use super::*;
use crate::ioc::{normalize, IocType, Limits};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn n(s: &str) -> Net {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn ns(v: &[&str]) -> Vec<Net> {
    v.iter().map(|s| n(s)).collect()
}

fn texts(v: &[Net]) -> Vec<String> {
    v.iter().map(Net::to_string).collect()
}

fn set(v: &[&str]) -> IntervalSet {
    IntervalSet::build(ns(v))
}

/// No prefix minimum: iocfs may store anything down to /0 when configured so.
fn loose() -> Limits {
    Limits {
        min_prefix_v4: 0,
        min_prefix_v6: 0,
    }
}

fn normalized(v6: bool, s: &str) -> Option<String> {
    let t = if v6 { IocType::Ipv6 } else { IocType::Ipv4 };
    normalize(t, s.as_bytes(), &loose()).ok().flatten()
}

#[test]
fn parse_and_render_table() {
    for (input, v6, addr, len, text) in [
        ("1.2.3.4", false, 0x0102_0304, 32, "1.2.3.4"),
        ("1.2.3.4/32", false, 0x0102_0304, 32, "1.2.3.4"),
        ("1.2.3.0/24", false, 0x0102_0300, 24, "1.2.3.0/24"),
        ("1.2.3.4/24", false, 0x0102_0300, 24, "1.2.3.0/24"),
        ("0.0.0.0/0", false, 0, 0, "0.0.0.0/0"),
        ("255.255.255.255", false, 0xffff_ffff, 32, "255.255.255.255"),
        (
            "2001:db8::/32",
            true,
            0x2001_0db8 << 96,
            32,
            "2001:db8::/32",
        ),
        (
            "2001:DB8::1/32",
            true,
            0x2001_0db8 << 96,
            32,
            "2001:db8::/32",
        ),
        ("::1", true, 1, 128, "::1"),
        ("::1/128", true, 1, 128, "::1"),
        ("::/0", true, 0, 0, "::/0"),
        (
            "::ffff:1.2.3.4",
            true,
            0xffff_0102_0304,
            128,
            "::ffff:1.2.3.4",
        ),
        ("::1:0:0", true, 1 << 32, 128, "::1:0:0"),
        (
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            true,
            u128::MAX,
            128,
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ),
    ] {
        let net = n(input);
        assert_eq!(
            (net.is_v6(), net.addr(), net.prefix_len()),
            (v6, addr, len),
            "{input}"
        );
        assert_eq!(net.to_string(), text, "{input}");
        assert_eq!(normalized(v6, input).as_deref(), Some(text), "{input}");
    }
    assert_eq!(n("10.0.0.0/8").last(), 0x0aff_ffff);
    assert_eq!(n("0.0.0.0/0").last(), 0xffff_ffff);
    assert_eq!(n("::/0").last(), u128::MAX);
    assert_eq!(n("::/0").max_prefix_len(), 128);
    assert_eq!(n("1.2.3.4").max_prefix_len(), 32);
    assert_eq!(Net::from(Ipv4Addr::new(1, 2, 3, 4)), n("1.2.3.4"));
    assert_eq!(Net::from(IpAddr::from(Ipv6Addr::LOCALHOST)), n("::1"));
    assert_eq!(
        Net::v4(Ipv4Addr::new(1, 2, 3, 4), 16),
        Some(n("1.2.0.0/16"))
    );
    assert_eq!(Net::v4(Ipv4Addr::new(1, 2, 3, 4), 33), None);
    assert_eq!(Net::v6(Ipv6Addr::LOCALHOST, 129), None);
    assert_eq!(Net::new(false, 1 << 32, 32), None);
    assert_eq!(Net::new(true, (1 << 32) | 5, 96), Some(n("::1:0:0/96")));
}

#[test]
fn parse_rejects() {
    for bad in [
        "",
        "/",
        "/24",
        "1.2.3",
        "1.2.3.4/",
        "1.2.3.4/33",
        "1.2.3.4/024",
        "1.2.3.4/08",
        "1.2.3.4/+8",
        "1.2.3.4/-1",
        "1.2.3.4/24/8",
        "1.2.3.4 ",
        " 1.2.3.4",
        "010.1.1.1",
        "::/129",
        "[::1]",
        "fe80::1%eth0",
        "2001:db8:::1",
        "example.com",
        "1.2.3.4/1000",
    ] {
        assert_eq!(bad.parse::<Net>(), Err(ParseNetError), "{bad:?}");
    }
    assert_eq!(
        ParseNetError.to_string(),
        "not an IPv4 or IPv6 address or network"
    );
}

#[test]
fn contains_is_per_family() {
    assert!(n("10.0.0.0/8").contains(&n("10.1.2.0/24")));
    assert!(n("10.0.0.0/8").contains(&n("10.0.0.0/8")));
    assert!(!n("10.1.2.0/24").contains(&n("10.0.0.0/8")));
    assert!(!n("0.0.0.0/0").contains(&n("::1")));
    assert!(!n("::/0").contains(&n("1.2.3.4")));
    assert!(n("::/0").contains(&n("::ffff:1.2.3.4")));
}

#[test]
fn output_order_is_numeric_v4_first() {
    let mut v = ns(&[
        "::1",
        "10.0.0.0/8",
        "9.0.0.0",
        "10.0.0.0/16",
        "2.0.0.0/8",
        "::",
    ]);
    v.sort();
    assert_eq!(
        texts(&v),
        [
            "2.0.0.0/8",
            "9.0.0.0",
            "10.0.0.0/8",
            "10.0.0.0/16",
            "::",
            "::1"
        ]
    );
}

#[test]
fn aggregate_merges_duplicates_overlaps_and_neighbours() {
    let got = aggregate(ns(&[
        "10.0.0.1",
        "10.0.0.0",
        "10.0.0.0",
        "10.0.0.2/31",
        "10.0.1.0/24",
        "10.0.1.128/25",
        "192.168.0.0/24",
        "192.168.1.0/24",
        "192.168.2.0/24",
        "1.1.1.1",
        "2001:db8::/33",
        "2001:db8:8000::/33",
        "2001:db8::1",
    ]));
    assert_eq!(
        texts(&got),
        [
            "1.1.1.1",
            "10.0.0.0/30",
            "10.0.1.0/24",
            "192.168.0.0/23",
            "192.168.2.0/24",
            "2001:db8::/32"
        ]
    );
    // Not aligned: 10.0.0.1..=10.0.0.6 needs four networks.
    let got = aggregate(ns(&["10.0.0.1", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6"]));
    assert_eq!(
        texts(&got),
        ["10.0.0.1", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6"]
    );
    assert!(aggregate(Vec::new()).is_empty());
}

#[test]
fn aggregate_full_and_top_of_range() {
    assert_eq!(
        texts(&aggregate(ns(&["128.0.0.0/1", "0.0.0.0/1"]))),
        ["0.0.0.0/0"]
    );
    assert_eq!(
        texts(&aggregate(ns(&["8000::/1", "::/1", "::1"]))),
        ["::/0"]
    );
    assert_eq!(
        texts(&aggregate(ns(&[
            "0.0.0.0/0",
            "255.255.255.255",
            "::/0",
            "::"
        ]))),
        ["0.0.0.0/0", "::/0"]
    );
    assert_eq!(
        texts(&aggregate(ns(&["255.255.255.255", "255.255.255.254"]))),
        ["255.255.255.254/31"]
    );
    assert_eq!(
        texts(&aggregate(ns(&["255.255.255.255", "255.255.255.253"]))),
        ["255.255.255.253", "255.255.255.255"]
    );
    let top = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    assert_eq!(
        texts(&aggregate(ns(&[
            top,
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
        ]))),
        ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"]
    );
    assert_eq!(
        texts(&aggregate(ns(&[
            top,
            "ffff:ffff:ffff:ffff::/64",
            "ffff::/16"
        ]))),
        ["ffff::/16"]
    );
    // Everything but the first address: one network per bit.
    let all_but_zero: Vec<Net> = (0..32)
        .map(|k| Net::new(false, 1 << k, 32 - k).unwrap_or_else(|| panic!("{k}")))
        .collect();
    let got = aggregate(all_but_zero.clone());
    assert_eq!(got.len(), 32);
    assert_eq!(got.first().map(Net::to_string).as_deref(), Some("0.0.0.1"));
    assert_eq!(
        got.last().map(Net::to_string).as_deref(),
        Some("128.0.0.0/1")
    );
    let mut with_zero = all_but_zero;
    with_zero.push(n("0.0.0.0"));
    assert_eq!(texts(&aggregate(with_zero)), ["0.0.0.0/0"]);
}

#[test]
fn families_never_merge() {
    // Numerically adjacent (2^32 - 1 and 2^32) but different families.
    let got = aggregate(ns(&["255.255.255.255", "::1:0:0", "255.255.255.254"]));
    assert_eq!(texts(&got), ["255.255.255.254/31", "::1:0:0"]);
    // The same numbers in both families stay two networks.
    let got = aggregate(ns(&["0.0.0.0/0", "::/96"]));
    assert_eq!(texts(&got), ["0.0.0.0/0", "::/96"]);
    let s = set(&["0.0.0.0/0"]);
    assert!(!s.contains_net(&n("::1")));
    assert!(!s.intersects(&n("::/0")));
    assert_eq!(texts(&s.subtract_from(&n("::/127"))), ["::/127"]);
    let s = set(&["::/0"]);
    assert!(!s.contains_net(&n("1.2.3.4")));
    assert!(!s.intersects(&n("0.0.0.0/0")));
}

#[test]
fn subtract_allowed_24_from_listed_16() {
    let allowed = set(&["10.0.5.0/24"]);
    assert_eq!(
        texts(&allowed.subtract_from(&n("10.0.0.0/16"))),
        [
            "10.0.0.0/22",
            "10.0.4.0/24",
            "10.0.6.0/23",
            "10.0.8.0/21",
            "10.0.16.0/20",
            "10.0.32.0/19",
            "10.0.64.0/18",
            "10.0.128.0/17"
        ]
    );
    assert!(allowed.subtract_from(&n("10.0.5.7")).is_empty());
    assert!(allowed.subtract_from(&n("10.0.5.0/24")).is_empty());
    assert_eq!(
        texts(&allowed.subtract_from(&n("10.0.6.0/24"))),
        ["10.0.6.0/24"]
    );
    // Several allowed pieces inside one listed network.
    let allowed = set(&["10.0.0.0", "10.0.0.5", "10.0.0.6", "10.0.0.15", "9.0.0.0/8"]);
    assert_eq!(
        texts(&allowed.subtract_from(&n("10.0.0.0/28"))),
        [
            "10.0.0.1",
            "10.0.0.2/31",
            "10.0.0.4",
            "10.0.0.7",
            "10.0.0.8/30",
            "10.0.0.12/31",
            "10.0.0.14"
        ]
    );
    let mut out = vec![n("1.1.1.1")];
    allowed.subtract_into(&n("10.0.0.4/31"), &mut out);
    assert_eq!(texts(&out), ["1.1.1.1", "10.0.0.4"]);
}

#[test]
fn subtract_at_the_edges() {
    let whole4 = n("0.0.0.0/0");
    let whole6 = n("::/0");
    let got = set(&["255.255.255.255"]).subtract_from(&whole4);
    assert_eq!(got.len(), 32);
    assert_eq!(
        got.first().map(Net::to_string).as_deref(),
        Some("0.0.0.0/1")
    );
    assert_eq!(
        got.last().map(Net::to_string).as_deref(),
        Some("255.255.255.254")
    );
    let got = set(&["0.0.0.0"]).subtract_from(&whole4);
    assert_eq!(got.len(), 32);
    assert_eq!(
        got.last().map(Net::to_string).as_deref(),
        Some("128.0.0.0/1")
    );
    let got = set(&["::1"]).subtract_from(&whole6);
    assert_eq!(got.len(), 128);
    assert_eq!(
        texts(got.get(..3).unwrap_or(&[])),
        ["::", "::2/127", "::4/126"]
    );
    assert_eq!(got.last().map(Net::to_string).as_deref(), Some("8000::/1"));
    let top = n("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    let got = IntervalSet::build([top]).subtract_from(&whole6);
    assert_eq!(got.len(), 128);
    assert_eq!(
        got.last(),
        Some(&n("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"))
    );
    assert!(set(&["0.0.0.0/0"]).subtract_from(&whole4).is_empty());
    assert!(set(&["::/0"]).subtract_from(&whole6).is_empty());
    assert!(set(&["::/0"]).subtract_from(&top).is_empty());
    assert_eq!(IntervalSet::default().subtract_from(&whole6), [whole6]);
    assert_eq!(set(&["::/1"]).subtract_from(&whole6), [n("8000::/1")]);
    assert_eq!(set(&["8000::/1"]).subtract_from(&whole6), [n("::/1")]);
}

#[test]
fn contains_and_intersects() {
    let s = set(&[
        "10.0.0.0/24",
        "10.0.1.0/24",
        "10.0.3.0/24",
        "255.255.255.255",
        "2001:db8::/32",
    ]);
    assert_eq!(s.interval_count(), 4);
    assert!(!s.is_empty());
    assert!(IntervalSet::default().is_empty());
    for (q, contains, intersects) in [
        ("10.0.0.0/23", true, true),
        ("10.0.0.0/22", false, true),
        ("10.0.2.0/24", false, false),
        ("10.0.2.255", false, false),
        ("10.0.3.0", true, true),
        ("10.0.3.255", true, true),
        ("10.0.4.0", false, false),
        ("9.255.255.255", false, false),
        ("0.0.0.0/0", false, true),
        ("255.255.255.255", true, true),
        ("255.255.255.254", false, false),
        ("255.255.255.254/31", false, true),
        ("2001:db8:1::/48", true, true),
        ("2001::/16", false, true),
        ("2001:db9::", false, false),
        ("::/0", false, true),
        ("::ffff:10.0.0.1", false, false),
    ] {
        assert_eq!(s.contains_net(&n(q)), contains, "contains {q}");
        assert_eq!(s.intersects(&n(q)), intersects, "intersects {q}");
    }
    let full = set(&["0.0.0.0/0", "::/0"]);
    for q in [
        "0.0.0.0",
        "255.255.255.255",
        "0.0.0.0/0",
        "::",
        "::/0",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ] {
        assert!(full.contains_net(&n(q)), "{q}");
    }
}

#[test]
fn difference_aggregates_listed() {
    let allowed = set(&["10.0.0.128/25", "192.168.0.0/16"]);
    let got = difference(
        ns(&[
            "10.0.0.0/25",
            "10.0.1.0/24",
            "10.0.0.0/24",
            "192.168.1.1",
            "1.2.3.4",
        ]),
        &allowed,
    );
    assert_eq!(texts(&got), ["1.2.3.4", "10.0.0.0/25", "10.0.1.0/24"]);
    assert!(difference(ns(&["192.168.1.0/24"]), &allowed).is_empty());
    assert_eq!(texts(&difference(ns(&["::1"]), &allowed)), ["::1"]);
    let a = set(&["10.0.0.0/8", "::/0"]);
    let b = set(&["10.1.0.0/16", "::1"]);
    assert_eq!(
        a.minus(&b),
        IntervalSet::build(a.to_nets().into_iter().flat_map(|x| b.subtract_from(&x)))
    );
    assert_eq!(a.to_nets(), ns(&["10.0.0.0/8", "::/0"]));
}

// Property tests against a brute-force model; large inputs against ipnet (and timing).
mod large;
mod props;

proptest! {
    /// The fast text of a network is its `Display`.
    #[test]
    fn push_text_is_display(v6 in any::<bool>(), addr in any::<u128>(), len in 0u8..=128) {
        let (addr, len) = if v6 { (addr, len) } else { (addr & u128::from(u32::MAX), len % 33) };
        let net = Net::new(v6, addr, len).unwrap();
        let mut text = Vec::new();
        net.push_text(&mut text);
        prop_assert_eq!(String::from_utf8(text).unwrap(), net.to_string());
    }
}

proptest! {
    /// Reading a stored line takes the same network as the full parser, fast path or not.
    #[test]
    fn from_line_is_parse(octets in prop::collection::vec(0u32..300, 1..6), zero in any::<bool>(),
                          len in prop::option::of(0u8..40)) {
        let mut text = octets.iter().map(|o| if zero && *o < 10 { format!("0{o}") } else { o.to_string() })
            .collect::<Vec<_>>().join(".");
        if let Some(len) = len {
            text.push_str(&format!("/{len}"));
        }
        prop_assert_eq!(Net::from_line(text.as_bytes()), text.parse::<Net>().ok(), "{}", text);
    }
}
