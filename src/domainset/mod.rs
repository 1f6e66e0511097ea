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

/// The address a URL host names, as browsers and curl read it (the WHATWG URL standard's
/// host parser): an IPv6 literal, or an IPv4 address also when written as fewer than four
/// parts or in hex or octal (`127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1` are all
/// 127.0.0.1). A host ending in a number that is no address is `None`, as is a name.
pub fn host_address(host: &str) -> Option<std::net::IpAddr> {
    if let Ok(addr) = host.parse::<std::net::IpAddr>() {
        return Some(addr);
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let numbers: Vec<u64> = parts
        .iter()
        .map(|p| url_ipv4_number(p))
        .collect::<Option<_>>()?;
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|&n| n > 255) || *last >= 1u64 << (8 * (5 - numbers.len())) {
        return None;
    }
    let addr = leading
        .iter()
        .enumerate()
        .fold(*last, |acc, (i, &n)| acc + (n << (8 * (3 - i))));
    Some(std::net::Ipv4Addr::from(u32::try_from(addr).ok()?).into())
}

/// One part of a WHATWG IPv4 host: decimal, `0x` hex or `0` octal.
fn url_ipv4_number(part: &str) -> Option<u64> {
    let (digits, radix) = match part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None if part.len() > 1 && part.starts_with('0') => (&part[1..], 8),
        None => (part, 10),
    };
    if digits.is_empty() {
        // "0x" alone is zero; an empty part is no number.
        return (radix == 16).then_some(0);
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Any number of leading zeros (0x00000000007f000001 is 127.0.0.1); past 12 digits the
    // rest is too large for an address anyway.
    let significant = digits.trim_start_matches('0');
    if significant.len() > 12 {
        return None;
    }
    u64::from_str_radix(
        if significant.is_empty() {
            "0"
        } else {
            significant
        },
        radix,
    )
    .ok()
}

/// The domain of a normalized email address (`John.Doe@example.com` → `example.com`).
/// `None` for text that is not a normalized address.
pub fn host_of_email(email: &str) -> Option<&str> {
    let (local, domain) = email.rsplit_once('@')?;
    (!local.is_empty() && is_host_name(domain)).then_some(domain)
}

#[cfg(test)]
mod tests;
