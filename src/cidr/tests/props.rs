//! Property tests against a brute-force model of small address spaces.

use super::*;

/// Host bits of the small spaces of the brute-force model (1024 addresses).
const SPACE_BITS: u8 = 10;

/// Bases of the small spaces: ordinary, bottom and top of each family, and the IPv6 space
/// numerically right after the last IPv4 address.
const SPACES: [(bool, u128); 7] = [
    (false, 0x0a00_0000),
    (false, 0),
    (false, 0xffff_fc00),
    (true, 0x2001_0db8 << 96),
    (true, 0),
    (true, 1 << 32),
    (true, u128::MAX - 1023),
];

type Addrs = BTreeSet<(bool, u128)>;

/// A net in one of the two chosen spaces (one IPv4, one IPv6).
fn small_net(spaces: (usize, usize), (v6, off, host): (bool, u128, u8)) -> Net {
    let (fam, base) = SPACES[if v6 { spaces.1 } else { spaces.0 }];
    let len = family_bits(fam) - host;
    Net::new(fam, base + off, len).unwrap_or_else(|| panic!("{fam} {base} {off} {len}"))
}

fn raw_small() -> impl Strategy<Value = (bool, u128, u8)> {
    (
        any::<bool>(),
        0u128..1024,
        prop_oneof![4 => 0u8..=3, 3 => 4u8..=7, 1 => 8u8..=SPACE_BITS],
    )
}

fn space_pair() -> impl Strategy<Value = (usize, usize)> {
    (0usize..3, 3usize..7)
}

fn expand(nets: &[Net]) -> Addrs {
    let mut out = Addrs::new();
    for x in nets {
        for a in x.addr..=x.last() {
            out.insert((x.v6, a));
        }
    }
    out
}

/// The unique minimal cover: every aligned block inside `set` whose parent is not (all
/// addresses of `set` lie in the two chosen spaces, whose own parents are never full).
fn minimal_cover(set: &Addrs, spaces: (usize, usize)) -> Vec<Net> {
    let mut out = Vec::new();
    for i in [spaces.0, spaces.1] {
        let (v6, base) = SPACES[i];
        // full[h][j]: the j-th aligned block of 2^h addresses lies inside `set`.
        let mut full = vec![(0..1024u128)
            .map(|o| set.contains(&(v6, base + o)))
            .collect::<Vec<bool>>()];
        for h in 1..=usize::from(SPACE_BITS) {
            let below = &full[h - 1];
            let level = (0..below.len() / 2)
                .map(|j| below[2 * j] && below[2 * j + 1])
                .collect();
            full.push(level);
        }
        for (h, level) in full.iter().enumerate() {
            for (j, &f) in level.iter().enumerate() {
                let parent_full = full.get(h + 1).is_some_and(|p| p[j / 2]);
                if f && !parent_full {
                    out.push(Net {
                        v6,
                        addr: base + ((j as u128) << h),
                        len: family_bits(v6) - h as u8,
                    });
                }
            }
        }
    }
    out.sort();
    out
}

/// Sorted, disjoint, and no two outputs could be merged into their parent.
pub(super) fn assert_minimal(out: &[Net]) {
    for w in out.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(a < b, "not sorted: {a} {b}");
        if a.v6 == b.v6 {
            assert!(a.last() < b.addr, "overlap: {a} {b}");
            let siblings = a.len == b.len
                && a.len > 0
                && Net::new(a.v6, a.addr, a.len - 1) == Net::new(b.v6, b.addr, b.len - 1);
            assert!(!siblings, "siblings: {a} {b}");
        }
    }
}

/// A random net anywhere in its family.
fn any_net() -> impl Strategy<Value = Net> {
    (any::<bool>(), any::<u128>(), 0u8..=128).prop_map(|(v6, addr, len)| {
        let bits = family_bits(v6);
        Net::new(v6, addr & low_mask(bits), len.min(bits)).unwrap_or_else(|| panic!("{addr}"))
    })
}

/// Random nets plus siblings, children and neighbours of them, so merges happen.
fn related_nets() -> impl Strategy<Value = Vec<Net>> {
    prop::collection::vec((any_net(), 0u8..4, any::<u8>()), 0..40).prop_map(|v| {
        let mut out = Vec::new();
        for (x, how, k) in v {
            out.push(x);
            let bits = family_bits(x.v6);
            let host = bits - x.len;
            match how {
                // sibling
                1 if x.len > 0 => out.push(Net {
                    addr: x.addr ^ (1 << host),
                    ..x
                }),
                // a child somewhere inside
                2 if x.len < bits => {
                    let len = x.len + 1 + k % (bits - x.len);
                    out.extend(Net::new(x.v6, x.last() - u128::from(k), len));
                }
                // the next address after it
                3 => out.extend(
                    x.last()
                        .checked_add(1)
                        .and_then(|a| Net::new(x.v6, a, bits)),
                ),
                _ => {}
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn aggregate_is_the_minimal_cover(
        spaces in space_pair(),
        raw in prop::collection::vec(raw_small(), 0..24),
    ) {
        let nets: Vec<Net> = raw.into_iter().map(|r| small_net(spaces, r)).collect();
        let got = aggregate(nets.clone());
        let addrs = expand(&nets);
        prop_assert_eq!(&expand(&got), &addrs);
        assert_minimal(&got);
        prop_assert_eq!(&got, &minimal_cover(&addrs, spaces));
        prop_assert_eq!(IntervalSet::build(nets).to_nets(), got);
    }

    #[test]
    fn subtraction_and_queries_match_sets(
        spaces in space_pair(),
        listed in prop::collection::vec(raw_small(), 0..16),
        allowed in prop::collection::vec(raw_small(), 0..16),
        queries in prop::collection::vec(raw_small(), 1..16),
    ) {
        let listed: Vec<Net> = listed.into_iter().map(|r| small_net(spaces, r)).collect();
        let allowed: Vec<Net> = allowed.into_iter().map(|r| small_net(spaces, r)).collect();
        let set = IntervalSet::build(allowed.iter().copied());
        let a = expand(&allowed);
        prop_assert_eq!(&expand(&set.to_nets()), &a);

        let want: Addrs = expand(&listed).difference(&a).copied().collect();
        let got = difference(listed.iter().copied(), &set);
        assert_minimal(&got);
        prop_assert_eq!(&got, &minimal_cover(&want, spaces));

        for q in queries.into_iter().map(|r| small_net(spaces, r)).chain(listed) {
            let qa = expand(&[q]);
            prop_assert_eq!(set.contains_net(&q), qa.is_subset(&a), "contains {}", q);
            prop_assert_eq!(set.intersects(&q), !qa.is_disjoint(&a), "intersects {}", q);
            let rest: Addrs = qa.difference(&a).copied().collect();
            let got = set.subtract_from(&q);
            assert_minimal(&got);
            prop_assert_eq!(&got, &minimal_cover(&rest, spaces), "{} minus set", q);
        }
    }

    #[test]
    fn whole_range_invariants(nets in related_nets(), queries in prop::collection::vec(any_net(), 1..8)) {
        let got = aggregate(nets.clone());
        assert_minimal(&got);
        prop_assert_eq!(&aggregate(got.clone()), &got);
        let set = IntervalSet::build(nets.iter().copied());
        prop_assert_eq!(&IntervalSet::build(got.iter().copied()), &set);
        for x in &nets {
            prop_assert!(set.contains_net(x));
            prop_assert!(set.intersects(x));
            prop_assert!(got.iter().any(|o| o.contains(x)), "{} not covered", x);
            prop_assert!(set.subtract_from(x).is_empty());
        }
        prop_assert!(difference(nets.iter().copied(), &set).is_empty());
        for q in queries.iter().chain(&nets) {
            let rest = set.subtract_from(q);
            assert_minimal(&rest);
            for r in &rest {
                prop_assert!(q.contains(r) && !set.intersects(r), "{} minus set gave {}", q, r);
            }
            // What was removed plus what is left is the query again.
            let back = IntervalSet::build(rest.iter().copied().chain(got.iter().copied()));
            prop_assert!(back.contains_net(q));
            prop_assert_eq!(rest.is_empty(), set.contains_net(q));
            prop_assert_eq!(rest == [*q], !set.intersects(q));
        }
    }

    #[test]
    fn text_round_trips_with_normalize(x in any_net(), host_noise in any::<u128>()) {
        let text = x.to_string();
        prop_assert_eq!(normalized(x.v6, &text), Some(text.clone()));
        prop_assert_eq!(text.parse::<Net>(), Ok(x));
        // Host bits set on input: zeroed the way normalize zeroes them.
        let bits = family_bits(x.v6);
        let noisy = x.addr | (host_noise & low_mask(bits - x.len));
        let raw = if x.v6 {
            format!("{}/{}", Ipv6Addr::from(noisy), x.len)
        } else {
            format!("{}/{}", Ipv4Addr::from(noisy as u32), x.len)
        };
        prop_assert_eq!(raw.parse::<Net>(), Ok(x));
        prop_assert_eq!(normalized(x.v6, &raw), Some(text));
    }
}
