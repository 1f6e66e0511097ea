//! The special-purpose address ranges no view serves (`[views] suppress_reserved`, on by
//! default): a block list that lists 127.0.0.1 or 10.0.0.0/8 breaks the network it
//! protects. This is the one place they are kept.
//!
//! Sources: the IANA IPv4 and IPv6 Special-Purpose Address Registries
//! (<https://www.iana.org/assignments/iana-ipv4-special-registry>,
//! <https://www.iana.org/assignments/iana-ipv6-special-registry>, RFC 6890 and its
//! updates), every entry marked "Globally Reachable: False", plus the multicast ranges
//! (224.0.0.0/4, RFC 5771; ff00::/8, RFC 4291). Entries the registries mark globally
//! reachable inside a larger reserved block are cut out of it, so a real anycast service
//! listed by a feed still reaches the firewall.

use std::sync::OnceLock;

use crate::cidr::{IntervalSet, Net};

/// (range, registry name).
pub const RANGES: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"This network\" (RFC 791)"),
    ("10.0.0.0/8", "Private-Use (RFC 1918)"),
    ("100.64.0.0/10", "Shared Address Space (RFC 6598)"),
    ("127.0.0.0/8", "Loopback (RFC 1122)"),
    ("169.254.0.0/16", "Link Local (RFC 3927)"),
    ("172.16.0.0/12", "Private-Use (RFC 1918)"),
    ("192.0.0.0/24", "IETF Protocol Assignments (RFC 6890)"),
    ("192.0.2.0/24", "Documentation (TEST-NET-1, RFC 5737)"),
    ("192.168.0.0/16", "Private-Use (RFC 1918)"),
    ("198.18.0.0/15", "Benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "Documentation (TEST-NET-2, RFC 5737)"),
    ("203.0.113.0/24", "Documentation (TEST-NET-3, RFC 5737)"),
    ("224.0.0.0/4", "Multicast (RFC 5771)"),
    (
        "240.0.0.0/4",
        "Reserved (RFC 1112), with Limited Broadcast 255.255.255.255",
    ),
    ("::/128", "Unspecified Address (RFC 4291)"),
    ("::1/128", "Loopback Address (RFC 4291)"),
    ("::ffff:0:0/96", "IPv4-mapped Address (RFC 4291)"),
    (
        "64:ff9b:1::/48",
        "IPv4-IPv6 Translation, local use (RFC 8215)",
    ),
    ("100::/64", "Discard-Only Address Block (RFC 6666)"),
    ("2001::/23", "IETF Protocol Assignments (RFC 2928)"),
    ("2001:db8::/32", "Documentation (RFC 3849)"),
    ("3fff::/20", "Documentation (RFC 9637)"),
    ("5f00::/16", "Segment Routing SIDs (RFC 9602)"),
    ("fc00::/7", "Unique-Local (RFC 4193)"),
    ("fe80::/10", "Link-Local Unicast (RFC 4291)"),
    ("ff00::/8", "Multicast (RFC 4291)"),
];

/// Globally reachable entries inside the blocks above: they stay servable.
pub const EXCEPTIONS: &[&str] = &[
    "192.0.0.9/32",    // Port Control Protocol Anycast (RFC 7723)
    "192.0.0.10/32",   // Traversal Using Relays around NAT Anycast (RFC 8155)
    "2001:1::1/128",   // Port Control Protocol Anycast (RFC 7723)
    "2001:1::2/128",   // TURN Anycast (RFC 8155)
    "2001:1::3/128",   // DNS-SD Service Registration Protocol Anycast (RFC 9665)
    "2001:3::/32",     // AMT (RFC 7450)
    "2001:4:112::/48", // AS112-v6 (RFC 7535)
    "2001:20::/28",    // ORCHIDv2 (RFC 7343)
    "2001:30::/28",    // Drone Remote ID Protocol Entity Tags (RFC 9374)
];

fn nets(list: impl IntoIterator<Item = &'static str>) -> impl Iterator<Item = Net> {
    list.into_iter().filter_map(|r| r.parse().ok())
}

/// Every reserved address, as an interval set.
pub fn set() -> IntervalSet {
    let all = IntervalSet::build(nets(RANGES.iter().map(|(r, _)| *r)));
    all.minus(&IntervalSet::build(nets(EXCEPTIONS.iter().copied())))
}

/// The lists above parsed, for lookups.
struct Parsed {
    exceptions: IntervalSet,
    /// (range, as written, registry name).
    ranges: Vec<(Net, &'static str, &'static str)>,
}

/// The registry entry that makes `net` reserved, if it lies in one (for lookups).
pub fn entry_covering(net: &Net) -> Option<(&'static str, &'static str)> {
    // Parsed once: every lookup of an address asks.
    static PARSED: OnceLock<Parsed> = OnceLock::new();
    let parsed = PARSED.get_or_init(|| Parsed {
        exceptions: IntervalSet::build(nets(EXCEPTIONS.iter().copied())),
        ranges: RANGES
            .iter()
            .filter_map(|&(r, name)| Some((r.parse::<Net>().ok()?, r, name)))
            .collect(),
    });
    if parsed.exceptions.intersects(net) {
        return None;
    }
    parsed
        .ranges
        .iter()
        .filter(|(range, _, _)| range.contains(net))
        .max_by_key(|(range, _, _)| range.prefix_len())
        .map(|&(_, r, name)| (r, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        s.parse().unwrap()
    }

    #[test]
    fn every_range_parses_and_the_set_has_them() {
        for (r, _) in RANGES {
            assert!(r.parse::<Net>().is_ok(), "{r}");
        }
        for e in EXCEPTIONS {
            assert!(e.parse::<Net>().is_ok(), "{e}");
        }
        let s = set();
        for reserved in [
            "127.0.0.1",
            "10.1.2.3",
            "10.0.0.0/8",
            "100.64.1.1",
            "169.254.9.9",
            "172.31.255.255",
            "192.168.1.0/24",
            "192.0.2.55",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.251",
            "239.255.255.250",
            "255.255.255.255",
            "0.0.0.0",
            "::1",
            "::",
            "::ffff:1.2.3.4",
            "2001:db8::1",
            "fc00::1",
            "fd12::/16",
            "fe80::1",
            "ff02::1",
            "100::1",
            "2001:2::1",
            "3fff::1",
        ] {
            assert!(
                s.contains_net(&net(reserved)),
                "{reserved} should be reserved"
            );
        }
        for global in [
            "1.1.1.1",
            "8.8.8.8",
            "192.0.0.9",
            "192.0.0.10",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "2606:4700::1111",
            "2001:4:112::1",
            "2001:20::1",
            "2001:3::1",
            "64:ff9b::1.2.3.4",
        ] {
            assert!(
                !s.contains_net(&net(global)),
                "{global} is globally reachable"
            );
        }
        // A listed network that straddles a reserved range intersects it.
        assert!(s.intersects(&net("192.168.0.0/15")) && !s.contains_net(&net("192.168.0.0/15")));
    }

    #[test]
    fn lookups_name_the_most_specific_registry_entry() {
        assert_eq!(
            entry_covering(&net("192.0.2.7")).map(|e| e.0),
            Some("192.0.2.0/24")
        );
        assert_eq!(
            entry_covering(&net("2001:db8::1")).map(|e| e.0),
            Some("2001:db8::/32")
        );
        assert_eq!(entry_covering(&net("192.0.0.9")), None);
        assert_eq!(entry_covering(&net("8.8.8.8")), None);
    }
}
