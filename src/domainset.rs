//! Domain suffix matching for the domain allowlist (DESIGN §9).
//!
//! An allowed `example.com` suppresses `example.com` and every name under it; an allowed
//! `*.example.com` only the names strictly under it. A listed wildcard `*.S` is suppressed by
//! an allowed rule that covers all of it; when instead some allowed name lies under `S`, the
//! wildcard cannot be subtracted (it is suppressed whole and counted as a conflict), which is
//! the range query [`DomainSet::has_rule_under`].
//!
//! Two indexes over one copy of the rule text:
//! - a hash table on the name, probed once per label boundary of a query (`x.y.example.com`
//!   probes `com`, `example.com`, `y.example.com`, `x.y.example.com`). The suffix hashes
//!   come from one right-to-left pass over the query, so a query allocates nothing;
//! - the names sorted by their labels read right to left (the key of `www.example.com` is
//!   `com.example.www.`): the names under `S` are the ones whose key starts with `S`'s key,
//!   right after `S` in that order, so the range query is one binary search (on the first 8
//!   key bytes, kept in a compact array, then on the text among ties). Closing every label
//!   with a dot is what keeps `badexample.com` and `example-x.com` apart from `example.com`.
//!
//! Matching is on label boundaries, byte for byte: rules and queries are normalized
//! (lower case, see [`crate::ioc`]); one trailing dot on either is ignored, as in DNS.
//!
//! # Memory and speed
//!
//! Per distinct name: its text plus 2 bytes (`*.` is stored in front of every name, so a plain
//! and a wildcard rule share it), an 8-byte entry, an 8-byte key prefix, and 2 to 4 hash
//! slots of 8 bytes: about `len + 34` to `len + 50` bytes.
//!
//! Measured with `cargo test --release --lib domainset::tests::perf -- --ignored --nocapture`
//! on the 2-core development VM while other builds kept it busy (load 2 to 5; ranges over
//! runs), with 1M random rules (1 to 3 labels of 3 to 10 letters under 12 TLDs, every tenth
//! a wildcard; 995,619 distinct, 18 bytes on average):
//!
//! | operation                                                        | time          |
//! |------------------------------------------------------------------|---------------|
//! | [`DomainSet::build`] (52 MB, 52.6 bytes per rule)                | 0.31 to 0.59 s|
//! | 1M [`DomainSet::covering_rule`], half of them under a rule       | 0.29 to 0.6 s |
//! | 1M [`DomainSet::covering_rule_for_wildcard`], the same names     | 0.28 to 0.7 s |
//! | 1M [`DomainSet::has_rule_under`], the same names                 | 0.9 to 1.3 s  |
//!
//! Both queries are bound by memory latency (about 190 ns per dependent cache miss on this
//! VM): a name costs one hash slot per label, plus the text of a hit.

use std::cmp::Ordering;

/// One distinct rule name, packed: text start (bits 10..48), name length (bits 2..10), a
/// wildcard rule (bit 1), a plain rule (bit 0). Never 0 (names are not empty), which marks an
/// empty hash slot; the 16 bits above it hold the hash's fingerprint there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry(u64);

/// Text is addressed with 38 bits (256 GiB, some billion rules).
const MAX_TEXT: usize = 1 << 38;

impl Entry {
    fn new(start: usize, len: u8, plain: bool, wild: bool) -> Entry {
        Entry((start as u64) << 10 | u64::from(len) << 2 | u64::from(wild) << 1 | u64::from(plain))
    }
    fn start(self) -> usize {
        (self.0 >> 10 & (MAX_TEXT as u64 - 1)) as usize
    }
    fn len(self) -> usize {
        (self.0 >> 2 & 0xff) as usize
    }
    fn wild(self) -> bool {
        self.0 & 2 != 0
    }
    fn plain(self) -> bool {
        self.0 & 1 != 0
    }
}

/// Set of allowed domain rules (`name` or `*.name`).
#[derive(Clone, Debug, Default)]
pub struct DomainSet {
    /// `*.name` of every distinct name, in reversed-label order, concatenated.
    text: String,
    /// The distinct names, in that order.
    entries: Vec<Entry>,
    /// The first 8 bytes of each entry's [`sort_key`], for a compact binary search.
    keys: Vec<u64>,
    /// Every [`BLOCK`]-th key: small enough to stay in cache, so a search in `keys` misses it
    /// only inside one block.
    top: Vec<u64>,
    /// Open addressing (linear probing) on [`name_hash`]: `fingerprint << 48 | entry`, 0 when
    /// empty, so a probe for a name that is not there reads one slot. Its length is a power of
    /// two, at least twice the entry count.
    slots: Vec<u64>,
    rules: usize,
}

/// Keys per block of the two-level search (512 bytes).
const BLOCK: usize = 64;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a step. Names are hashed from their last byte to their first, so the hashes of all
/// suffixes of a query come out of one pass.
fn fnv(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
}

fn name_hash(name: &[u8]) -> u64 {
    name.iter().rev().fold(FNV_OFFSET, |h, &b| fnv(h, b))
}

/// Slot of a hash (Fibonacci hashing: FNV's low bits are weak).
fn slot_of(h: u64, mask: usize) -> usize {
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & mask
}

fn fingerprint(h: u64) -> u64 {
    h >> 48
}

/// The order of the sorted index: the labels from the right, each followed by a dot
/// (`www.example.com` → `com.example.www.`), compared bytewise. The names under `S` are then
/// exactly those whose key starts with `S`'s key, a contiguous run right after `S`. The dot
/// closing every label is what keeps `example-x.com` (`com.example-x.`) out of that run.
fn sort_key(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.rsplit('.')
        .flat_map(|label| label.bytes().chain(std::iter::once(b'.')))
}

fn cmp_names(a: &str, b: &str) -> Ordering {
    sort_key(a).cmp(sort_key(b))
}

/// The first 8 bytes of [`sort_key`], zero-padded: ordered as the names are, ties aside.
fn key_prefix(name: &str) -> u64 {
    let mut k = [0u8; 8];
    for (d, s) in k.iter_mut().zip(sort_key(name)) {
        *d = s;
    }
    u64::from_be_bytes(k)
}

/// `name` lies strictly under `suffix` (on a label boundary).
fn strictly_under(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len()
        && name.ends_with(suffix)
        && name.as_bytes().get(name.len() - suffix.len() - 1) == Some(&b'.')
}

fn trim_dot(s: &str) -> &str {
    s.strip_suffix('.').unwrap_or(s)
}

impl DomainSet {
    /// The set of `rules`, each a normalized domain optionally starting with `*.`.
    /// Duplicates are merged. A rule whose name is empty or longer than 255 bytes is ignored:
    /// no domain is (253 at most).
    pub fn build<'a>(rules: impl IntoIterator<Item = &'a str>) -> DomainSet {
        struct Raw {
            key: u64,
            start: usize,
            len: u8,
            wild: bool,
        }
        let mut raw = String::new();
        let mut all: Vec<Raw> = Vec::new();
        for rule in rules {
            let (wild, name) = match rule.strip_prefix("*.") {
                Some(name) => (true, trim_dot(name)),
                None => (false, trim_dot(rule)),
            };
            let Ok(len) = u8::try_from(name.len()) else {
                continue;
            };
            if len == 0 {
                continue;
            }
            all.push(Raw {
                key: key_prefix(name),
                start: raw.len(),
                len,
                wild,
            });
            raw.push_str(name);
        }
        let name_of = |r: &Raw| raw.get(r.start..r.start + usize::from(r.len)).unwrap_or("");
        all.sort_unstable_by(|a, b| {
            a.key
                .cmp(&b.key)
                .then_with(|| cmp_names(name_of(a), name_of(b)))
        });

        let mut set = DomainSet::default();
        let mut prev: Option<&str> = None;
        for r in &all {
            let name = name_of(r);
            if prev == Some(name) {
                if let Some(e) = set.entries.last_mut() {
                    *e = Entry::new(e.start(), r.len, e.plain() || !r.wild, e.wild() || r.wild);
                }
                continue;
            }
            if set.text.len() + 2 + name.len() > MAX_TEXT {
                break; // unreachable in memory
            }
            prev = Some(name);
            set.entries
                .push(Entry::new(set.text.len(), r.len, !r.wild, r.wild));
            set.keys.push(r.key);
            set.text.push_str("*.");
            set.text.push_str(name);
        }
        drop(all);
        drop(raw);
        set.text.shrink_to_fit();
        set.entries.shrink_to_fit();
        set.keys.shrink_to_fit();
        set.top = set.keys.iter().step_by(BLOCK).copied().collect();
        set.rules = set
            .entries
            .iter()
            .map(|e| usize::from(e.plain()) + usize::from(e.wild()))
            .sum();

        let mask = (set.entries.len() * 2).next_power_of_two().max(2) - 1;
        set.slots = vec![0; mask + 1];
        for &e in &set.entries {
            let h = name_hash(set.name(e).as_bytes());
            let mut s = slot_of(h, mask);
            while set.slots[s] != 0 {
                s = (s + 1) & mask;
            }
            set.slots[s] = fingerprint(h) << 48 | e.0;
        }
        set
    }

    /// Number of distinct rules (a plain and a wildcard rule on one name count two).
    pub fn len(&self) -> usize {
        self.rules
    }

    /// True when there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// Heap bytes held, for the stats.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + (self.entries.capacity()
                + self.keys.capacity()
                + self.top.capacity()
                + self.slots.capacity())
                * 8
    }

    /// `*.name` of an entry.
    fn wild_text(&self, e: Entry) -> &str {
        self.text
            .get(e.start()..e.start() + 2 + e.len())
            .unwrap_or("")
    }

    fn name(&self, e: Entry) -> &str {
        self.wild_text(e).get(2..).unwrap_or("")
    }

    /// The text of a rule of `e`: `*.name` when `wild`, else `name`.
    fn rule(&self, e: Entry, wild: bool) -> &str {
        if wild {
            self.wild_text(e)
        } else {
            self.name(e)
        }
    }

    /// The entry named `name`, whose [`name_hash`] is `h`.
    fn find(&self, name: &[u8], h: u64) -> Option<Entry> {
        let mask = self.slots.len().checked_sub(1)?;
        let fp = fingerprint(h);
        let mut s = slot_of(h, mask);
        loop {
            let v = *self.slots.get(s)?;
            if v == 0 {
                return None;
            }
            let e = Entry(v & ((1 << 48) - 1));
            if v >> 48 == fp && self.name(e).as_bytes() == name {
                return Some(e);
            }
            s = (s + 1) & mask;
        }
    }

    /// The most specific rule on `name` or a parent of it that covers `name` (`self_wild`
    /// false) or everything strictly under `name` (`self_wild` true: a wildcard rule on
    /// `name` itself counts too). Probes the suffixes from the shortest; a longer hit replaces
    /// a shorter one.
    fn scan(&self, name: &str, self_wild: bool) -> Option<&str> {
        let b = name.as_bytes();
        let mut best = None;
        let mut h = FNV_OFFSET;
        for (i, &c) in b.iter().enumerate().rev() {
            if c == b'.' {
                let parent = b.get(i + 1..).unwrap_or(&[]);
                if let Some(e) = self.find(parent, h) {
                    // Anything under `parent` is covered by either rule.
                    best = Some(self.rule(e, e.wild()));
                }
            }
            h = fnv(h, c);
        }
        if let Some(e) = self.find(b, h) {
            if self_wild && e.wild() {
                best = Some(self.rule(e, true));
            } else if e.plain() {
                best = Some(self.rule(e, false));
            }
        }
        best
    }

    /// The rule that suppresses the domain `name`: `name` itself, a parent of it, or a
    /// wildcard over a parent; the most specific one (the longest name; on the same name a
    /// wildcard before a plain rule). A listed wildcard (`*.example.com`) may be given as is:
    /// it is answered as [`covering_rule_for_wildcard`](Self::covering_rule_for_wildcard).
    pub fn covering_rule(&self, name: &str) -> Option<&str> {
        match name.strip_prefix("*.") {
            Some(suffix) => self.covering_rule_for_wildcard(suffix),
            None => self.scan(trim_dot(name), false),
        }
    }

    /// The rule that suppresses the whole listed wildcard `*.suffix`: a plain or wildcard rule
    /// on `suffix` or on a parent of it (the most specific, as in
    /// [`covering_rule`](Self::covering_rule)). `suffix` may also be given with its `*.`.
    pub fn covering_rule_for_wildcard(&self, suffix: &str) -> Option<&str> {
        let suffix = suffix.strip_prefix("*.").unwrap_or(suffix);
        self.scan(trim_dot(suffix), true)
    }

    /// Index of the first key `>= p`: a binary search in `top`, then one block of `keys`.
    fn first_key_at_least(&self, p: u64) -> usize {
        let blocks_below = self.top.partition_point(|&k| k < p);
        let start = blocks_below.saturating_sub(1) * BLOCK;
        let end = (blocks_below * BLOCK).min(self.keys.len());
        let block = self.keys.get(start..end).unwrap_or(&[]);
        // Counting instead of bisecting: independent loads, so the block's 8 cache lines
        // are fetched together rather than one after the other.
        start + block.iter().map(|&k| usize::from(k < p)).sum::<usize>()
    }

    /// How many keys from `lo` on equal `p`: galloping, since there are usually few.
    fn tie_count(&self, lo: usize, p: u64) -> usize {
        let mut known = 0; // keys[lo..lo + known] equal p
        let mut step = 1;
        while self.keys.get(lo + known + step - 1) == Some(&p) {
            known += step;
            step *= 2;
        }
        let end = (lo + known + step - 1).min(self.keys.len());
        let rest = self.keys.get(lo + known..end).unwrap_or(&[]);
        known + rest.partition_point(|&k| k == p)
    }

    /// A rule whose name lies strictly under `suffix` (`www.example.com` or
    /// `*.a.example.com` under `example.com`; not `example.com` itself, nor
    /// `badexample.com`): the listed `*.suffix` then conflicts with the allowlist. Returns
    /// the first such rule in the index's order. `suffix` may also be given with its `*.`.
    pub fn has_rule_under(&self, suffix: &str) -> Option<&str> {
        let suffix = trim_dot(suffix.strip_prefix("*.").unwrap_or(suffix));
        if suffix.is_empty() {
            return None;
        }
        // The names under `suffix` directly follow it in the index: find the first name
        // after it, by key prefix, then by name among the names sharing its key prefix.
        let p = key_prefix(suffix);
        let lo = self.first_key_at_least(p);
        let ties = self.tie_count(lo, p);
        let tied = self.entries.get(lo..lo + ties).unwrap_or(&[]);
        let i =
            lo + tied.partition_point(|&e| cmp_names(self.name(e), suffix) != Ordering::Greater);
        let e = *self.entries.get(i)?;
        strictly_under(self.name(e), suffix).then(|| self.rule(e, !e.plain()))
    }
}

/// Whether `s` is a non-empty normalized host name (lower case; this also covers IPv4).
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The host of a normalized URL, as stored: lower case, without userinfo, port or the
/// brackets of an IPv6 literal (`http://u:p@[2001:db8::1]:8080/x` → `2001:db8::1`). The
/// authority is split as `ioc::normalize` splits it: it ends at the first `/`, `?` or `#`,
/// and the userinfo ends at its last `@`. A name host keeps a trailing dot if it had one
/// ([`DomainSet::covering_rule`] ignores it). `None` for text that is not a normalized URL.
pub fn host_of_url(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(inner) = hostport.strip_prefix('[') {
        let (literal, after) = inner.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        let literal_ok = !literal.is_empty()
            && literal
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b':' | b'.'));
        return (port_ok && literal_ok).then_some(literal);
    }
    let (host, port) = match hostport.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (hostport, None),
    };
    (is_host_name(host) && port.is_none_or(is_port)).then_some(host)
}

/// The domain of a normalized email address (`John.Doe@example.com` → `example.com`).
/// `None` for text that is not a normalized address.
pub fn host_of_email(email: &str) -> Option<&str> {
    let (local, domain) = email.rsplit_once('@')?;
    (!local.is_empty() && is_host_name(domain)).then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::{normalize, IocType, Limits};
    use proptest::prelude::*;
    use proptest::sample::select;
    use std::net::Ipv6Addr;

    fn set(rules: &[&str]) -> DomainSet {
        DomainSet::build(rules.iter().copied())
    }

    #[test]
    fn plain_rule_covers_itself_and_names_under_it() {
        let s = set(&["example.com"]);
        for name in [
            "example.com",
            "a.example.com",
            "x.y.example.com",
            "example.com.",
        ] {
            assert_eq!(s.covering_rule(name), Some("example.com"), "{name}");
        }
        for name in [
            "badexample.com",
            "example.co",
            "ample.com",
            "com",
            "example.com.evil",
            "example.comm",
            "a.badexample.com",
            "xexample.com",
            "",
            ".",
        ] {
            assert_eq!(s.covering_rule(name), None, "{name}");
        }
        // `ample.com` covers no `example.com`, only names under it on a label boundary.
        let s = set(&["ample.com"]);
        assert_eq!(s.covering_rule("example.com"), None);
        assert_eq!(s.covering_rule("ex.ample.com"), Some("ample.com"));
    }

    #[test]
    fn wildcard_rule_covers_only_names_under_it() {
        let s = set(&["*.example.com"]);
        assert_eq!(s.covering_rule("example.com"), None);
        assert_eq!(s.covering_rule("a.example.com"), Some("*.example.com"));
        assert_eq!(s.covering_rule("x.y.example.com"), Some("*.example.com"));
        assert_eq!(s.covering_rule("badexample.com"), None);
        assert_eq!(s.covering_rule("com"), None);
    }

    #[test]
    fn most_specific_rule_wins() {
        let s = set(&[
            "com",
            "example.com",
            "*.example.com",
            "a.example.com",
            "*.b.example.com",
        ]);
        assert_eq!(s.covering_rule("x.a.example.com"), Some("a.example.com"));
        assert_eq!(s.covering_rule("a.example.com"), Some("a.example.com"));
        // Both rules on `example.com` cover `c.example.com`; the wildcard is the narrower.
        assert_eq!(s.covering_rule("c.example.com"), Some("*.example.com"));
        assert_eq!(s.covering_rule("example.com"), Some("example.com"));
        assert_eq!(s.covering_rule("b.example.com"), Some("*.example.com"));
        assert_eq!(s.covering_rule("x.b.example.com"), Some("*.b.example.com"));
        assert_eq!(s.covering_rule("other.com"), Some("com"));
        assert_eq!(s.covering_rule("other.org"), None);
    }

    #[test]
    fn listed_wildcards() {
        let s = set(&[
            "example.com",
            "*.example.org",
            "www.example.net",
            "*.a.example.net",
        ]);
        for (suffix, want) in [
            ("example.com", Some("example.com")),
            ("a.example.com", Some("example.com")),
            ("example.org", Some("*.example.org")),
            ("a.example.org", Some("*.example.org")),
            ("example.net", None),
            ("www.example.net", Some("www.example.net")),
            ("a.example.net", Some("*.a.example.net")),
            ("b.a.example.net", Some("*.a.example.net")),
            ("badexample.com", None),
            ("org", None),
        ] {
            assert_eq!(s.covering_rule_for_wildcard(suffix), want, "*.{suffix}");
            let listed = format!("*.{suffix}");
            assert_eq!(s.covering_rule_for_wildcard(&listed), want, "{listed}");
            assert_eq!(s.covering_rule(&listed), want, "{listed}");
        }
        // On the same name, a wildcard rule is the closer match for a listed wildcard.
        let s = set(&["example.com", "*.example.com"]);
        assert_eq!(
            s.covering_rule_for_wildcard("example.com"),
            Some("*.example.com")
        );
    }

    #[test]
    fn rules_under_a_suffix() {
        let s = set(&[
            "www.example.net",
            "*.a.example.org",
            "example.com",
            "badexample.net",
            "example-x.net",
            "example.net0",
            "xample.net",
            "*.example.io",
            "ample.edu",
        ]);
        for (suffix, want) in [
            ("example.net", Some("www.example.net")),
            ("*.example.net", Some("www.example.net")),
            ("net", Some("badexample.net")),
            ("example.org", Some("*.a.example.org")),
            ("a.example.org", None),
            ("org", Some("*.a.example.org")),
            ("example.com", None),
            ("com", Some("example.com")),
            ("www.example.net", None),
            ("example.io", None),
            ("io", Some("*.example.io")),
            ("example.edu", None),
            ("le.net", None),
            ("ample.net", None),
            ("", None),
        ] {
            assert_eq!(s.has_rule_under(suffix), want, "{suffix}");
        }
        let key = |n: &str| String::from_utf8(sort_key(n).collect()).unwrap_or_default();
        assert_eq!(key("www.example.com"), "com.example.www.");
        assert_eq!(
            key_prefix("www.example.com"),
            u64::from_be_bytes(*b"com.exam")
        );
        assert_eq!(key_prefix("a.b"), u64::from_be_bytes(*b"b.a.\0\0\0\0"));
        let both = set(&["*.a.example.com", "a.example.com"]);
        assert_eq!(both.has_rule_under("example.com"), Some("a.example.com"));
        assert_eq!(DomainSet::default().has_rule_under("com"), None);
    }

    #[test]
    fn build_merges_duplicates_and_counts_rules() {
        let s = set(&[
            "example.com",
            "example.com",
            "*.example.com",
            "example.com.",
            "",
            "*.",
            "a.b",
        ]);
        assert_eq!(s.len(), 3);
        assert!(!s.is_empty());
        assert_eq!(s.covering_rule("x.example.com"), Some("*.example.com"));
        assert_eq!(s.covering_rule("a.b"), Some("a.b"));
        let empty = DomainSet::default();
        assert!(empty.is_empty());
        assert_eq!(empty.covering_rule("example.com"), None);
        assert_eq!(empty.covering_rule_for_wildcard("example.com"), None);
        assert!(set(&[]).is_empty());
        assert!(s.heap_bytes() > 0);
    }

    #[test]
    fn hosts_of_urls() {
        for (url, host) in [
            ("http://example.com", Some("example.com")),
            ("http://example.com/", Some("example.com")),
            (
                "https://www.example.com:8443/a/b?c#d",
                Some("www.example.com"),
            ),
            ("http://user:pass@evil.com/x", Some("evil.com")),
            ("http://a@b@evil.com:81/", Some("evil.com")),
            ("http://@evil.com/", Some("evil.com")),
            ("http://evil.com?q=a@b.com", Some("evil.com")),
            ("http://evil.com#a@b.com", Some("evil.com")),
            ("http://evil.com/a@b:c", Some("evil.com")),
            ("http://1.2.3.4:80/x.exe", Some("1.2.3.4")),
            ("http://[2001:db8::1]/x", Some("2001:db8::1")),
            ("http://u@[::ffff:1.2.3.4]:8443/", Some("::ffff:1.2.3.4")),
            ("http://evil_host.com./", Some("evil_host.com.")),
            ("svn+ssh://host.example/repo", Some("host.example")),
            ("http://", None),
            ("http:///x", None),
            ("http://:80/", None),
            ("http://Evil.com/", None),
            ("http://evil.com:/", None),
            ("http://evil.com:8x/", None),
            ("http://[::1", None),
            ("http://[::1]x/", None),
            ("http://[]/", None),
            ("evil.com/x", None),
        ] {
            assert_eq!(host_of_url(url), host, "{url}");
        }
    }

    #[test]
    fn hosts_of_emails() {
        assert_eq!(host_of_email("John.Doe@example.com"), Some("example.com"));
        assert_eq!(host_of_email("a@b.co"), Some("b.co"));
        assert_eq!(
            host_of_email("!#$%&'*+/=?^_`{|}~-@evil.com"),
            Some("evil.com")
        );
        assert_eq!(host_of_email("@example.com"), None);
        assert_eq!(host_of_email("a@"), None);
        assert_eq!(host_of_email("example.com"), None);
        assert_eq!(host_of_email("a@Example.com"), None);
    }

    #[test]
    fn url_and_email_hosts_meet_domain_rules() {
        let s = set(&["example.com"]);
        let url = "http://u@www.example.com.:8080/x";
        assert_eq!(
            host_of_url(url).and_then(|h| s.covering_rule(h)),
            Some("example.com")
        );
        let email = "a@mail.example.com";
        assert_eq!(
            host_of_email(email).and_then(|h| s.covering_rule(h)),
            Some("example.com")
        );
        assert_eq!(
            host_of_url("http://badexample.com/").and_then(|h| s.covering_rule(h)),
            None
        );
    }

    // ---- Property tests against a naive scan ----

    /// Labels that are prefixes and suffixes of one another, to catch non-boundary matches;
    /// the long ones make names share the 8-byte key prefix of the sorted index.
    fn small_name() -> impl Strategy<Value = String> {
        let labels = vec![
            "a",
            "b",
            "aa",
            "ab",
            "ba",
            "a-b",
            "b_",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh-i",
        ];
        prop::collection::vec(select(labels), 1..5).prop_map(|labels| labels.join("."))
    }

    fn small_rule() -> impl Strategy<Value = String> {
        (any::<bool>(), small_name()).prop_map(|(w, n)| if w { format!("*.{n}") } else { n })
    }

    /// `name` is `r` or under it (`or_self`), or strictly under it.
    fn under(name: &str, r: &str, or_self: bool) -> bool {
        (or_self && name == r) || name.ends_with(&format!(".{r}"))
    }

    /// The most specific of the rules matching: longest name, then wildcard before plain.
    fn best(rules: &[String], covers: impl Fn(&str, bool) -> bool) -> Option<&str> {
        rules
            .iter()
            .map(|r| match r.strip_prefix("*.") {
                Some(n) => (n, true, r.as_str()),
                None => (r.as_str(), false, r.as_str()),
            })
            .filter(|&(n, wild, _)| covers(n, wild))
            .max_by_key(|&(n, wild, _)| (n.len(), wild))
            .map(|(_, _, r)| r)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn queries_match_a_naive_scan(
            rules in prop::collection::vec(small_rule(), 0..20),
            queries in prop::collection::vec(small_name(), 1..20),
        ) {
            let s = DomainSet::build(rules.iter().map(String::as_str));
            let distinct: std::collections::BTreeSet<&String> = rules.iter().collect();
            prop_assert_eq!(s.len(), distinct.len());
            for q in queries.iter().chain(&rules) {
                let q = q.strip_prefix("*.").unwrap_or(q);
                let want = best(&rules, |n, wild| under(q, n, !wild));
                prop_assert_eq!(s.covering_rule(q), want, "name {}", q);
                // A listed `*.q`: covered by a rule on q or a parent, of either kind.
                let want = best(&rules, |n, _| under(q, n, true));
                prop_assert_eq!(s.covering_rule_for_wildcard(q), want, "*.{}", q);
                prop_assert_eq!(s.covering_rule(&format!("*.{q}")), want, "*.{}", q);
                let strictly: Vec<&str> = rules
                    .iter()
                    .map(|r| r.as_str())
                    .filter(|r| under(r.strip_prefix("*.").unwrap_or(r), q, false))
                    .collect();
                match s.has_rule_under(q) {
                    Some(r) => prop_assert!(strictly.contains(&r), "{} under {}?", r, q),
                    None => prop_assert!(strictly.is_empty(), "missed {:?} under {}", strictly, q),
                }
            }
        }

        #[test]
        fn url_hosts_match_normalize(
            scheme in "[a-z][a-z0-9+.-]{0,5}",
            user in proptest::option::of("[a-zA-Z0-9:@._~-]{0,8}"),
            host in prop_oneof![
                "[a-zA-Z0-9_-]{1,8}(\\.[a-zA-Z0-9_-]{1,8}){0,3}\\.?",
                any::<u128>().prop_map(|a| format!("[{}]", Ipv6Addr::from(a))),
                any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
            ],
            port in proptest::option::of(1u16..),
            tail in "([/?#][a-zA-Z0-9@:/?#.\\[\\]-]{0,12})?",
        ) {
            let mut url = format!("{scheme}://");
            if let Some(u) = &user {
                url.push_str(u);
                url.push('@');
            }
            url.push_str(&host);
            if let Some(p) = port {
                url.push_str(&format!(":{p}"));
            }
            url.push_str(&tail);
            let Ok(Some(stored)) = normalize(IocType::Url, url.as_bytes(), &Limits::default()) else {
                return Err(TestCaseError::reject("not a URL"));
            };
            let want = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(literal) => literal.parse::<Ipv6Addr>().map(|a| a.to_string()).ok(),
                None => Some(host.to_ascii_lowercase()),
            };
            prop_assert_eq!(host_of_url(&stored).map(str::to_owned), want, "{}", stored);
        }

        #[test]
        fn email_hosts_match_normalize(local in "[a-zA-Z0-9+_-]{1,10}", domain in "[a-zA-Z][a-zA-Z0-9-]{0,6}[a-zA-Z0-9]\\.[a-zA-Z]{2,4}") {
            let email = format!("{local}@{domain}");
            let stored = normalize(IocType::Email, email.as_bytes(), &Limits::default())
                .ok()
                .flatten()
                .unwrap_or_default();
            let want = domain.to_ascii_lowercase();
            prop_assert_eq!(host_of_email(&stored), Some(want.as_str()));
        }
    }

    #[test]
    fn key_searches_match_naive() {
        // Runs of equal keys of every length from 1 to 40, over several blocks.
        let keys: Vec<u64> = (1..=40u64)
            .flat_map(|n| std::iter::repeat_n(n * 2, n as usize))
            .collect();
        let s = DomainSet {
            top: keys.iter().step_by(BLOCK).copied().collect(),
            keys,
            ..DomainSet::default()
        };
        for p in 0..=82 {
            let lo = s.keys.partition_point(|&k| k < p);
            assert_eq!(s.first_key_at_least(p), lo, "{p}");
            let ties = s.keys.iter().skip(lo).take_while(|&&k| k == p).count();
            assert_eq!(s.tie_count(lo, p), ties, "{p}");
        }
    }

    /// Thousands of rules, so the two-level search crosses blocks and long runs of names
    /// share their 8-byte key prefix, against the naive scan.
    #[test]
    fn large_set_matches_naive_scan() {
        let mut rng = Rng(9);
        let labels = ["a", "ab", "abcdefgh", "abcdefghi", "b", "b-a", "ba", "c"];
        let name = |rng: &mut Rng| {
            let r = rng.next();
            let n = 1 + r % 4;
            (0..n)
                .map(|i| labels[(r >> (8 + 3 * i)) as usize % labels.len()])
                .collect::<Vec<_>>()
                .join(".")
        };
        let rules: Vec<String> = (0..3000)
            .map(|i| {
                let n = name(&mut rng);
                if i % 3 == 0 {
                    format!("*.{n}")
                } else {
                    n
                }
            })
            .collect();
        let s = DomainSet::build(rules.iter().map(String::as_str));
        assert!(s.entries.len() > 4 * BLOCK, "{}", s.entries.len());
        for _ in 0..1000 {
            let q = name(&mut rng);
            let want = best(&rules, |n, wild| under(&q, n, !wild));
            assert_eq!(s.covering_rule(&q), want, "{q}");
            let strictly: Vec<&str> = rules
                .iter()
                .map(String::as_str)
                .filter(|r| under(r.strip_prefix("*.").unwrap_or(r), &q, false))
                .collect();
            match s.has_rule_under(&q) {
                Some(r) => assert!(strictly.contains(&r), "{r} under {q}?"),
                None => assert!(strictly.is_empty(), "missed {strictly:?} under {q}"),
            }
        }
    }

    // ---- Timing (release): cargo test --release --lib domainset::tests::perf -- --ignored --nocapture

    /// splitmix64: a fixed, dependency-free input generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn label(&mut self, out: &mut String) {
            let r = self.next();
            for i in 0..3 + r % 8 {
                out.push(char::from(b'a' + (r >> (8 + 5 * i) & 31) as u8 % 26));
            }
        }

        /// 1 to 3 random labels under one of 12 TLDs.
        fn name(&mut self) -> String {
            const TLDS: [&str; 12] = [
                "com", "net", "org", "io", "ru", "cn", "de", "info", "xyz", "top", "co", "uk",
            ];
            let r = self.next();
            let mut out = String::new();
            for _ in 0..1 + r % 3 {
                self.label(&mut out);
                out.push('.');
            }
            out.push_str(TLDS[(r >> 8) as usize % TLDS.len()]);
            out
        }
    }

    #[test]
    #[ignore = "timing; run with --release"]
    fn perf() {
        use std::time::Instant;
        let mut rng = Rng(5);
        let rules: Vec<String> = (0..1_000_000)
            .map(|i| {
                let n = rng.name();
                if i % 10 == 0 {
                    format!("*.{n}")
                } else {
                    n
                }
            })
            .collect();
        let text: usize = rules.iter().map(String::len).sum();
        let t = Instant::now();
        let s = DomainSet::build(rules.iter().map(String::as_str));
        let build = t.elapsed();
        println!(
            "build {} rules ({} bytes of text): {build:?}, {} heap bytes ({:.1} per rule)",
            s.len(),
            text,
            s.heap_bytes(),
            s.heap_bytes() as f64 / s.len() as f64
        );
        // Half under a rule (hits), half random names (almost all misses).
        let queries: Vec<String> = (0..1_000_000)
            .map(|i| {
                if i % 2 == 0 {
                    let r = &rules[(rng.next() % rules.len() as u64) as usize];
                    format!("www.{}", r.strip_prefix("*.").unwrap_or(r))
                } else {
                    rng.name()
                }
            })
            .collect();
        for _ in 0..3 {
            let t = Instant::now();
            let hits = queries
                .iter()
                .filter(|q| s.covering_rule(q).is_some())
                .count();
            let cover = t.elapsed();
            let t = Instant::now();
            let under = queries
                .iter()
                .filter(|q| s.has_rule_under(q).is_some())
                .count();
            let range = t.elapsed();
            let t = Instant::now();
            let wild = queries
                .iter()
                .filter(|q| s.covering_rule_for_wildcard(q).is_some())
                .count();
            let wild_t = t.elapsed();
            println!(
                "1M covering_rule: {hits} hits, {cover:?}; 1M covering_rule_for_wildcard: {wild} hits, {wild_t:?}; 1M has_rule_under: {under} hits, {range:?}"
            );
        }
    }
}
