//! Address-set arithmetic on IPv4 and IPv6 networks: aggregation, allowlist subtraction and
//! containment (DESIGN §9, views with `aggregate = true` and the CIDR-aware allowlist).
//!
//! A set of addresses is kept as sorted, disjoint, non-adjacent inclusive intervals per family;
//! every operation is interval arithmetic followed by the one canonical decomposition of an
//! interval into maximal aligned blocks. That decomposition is the unique minimal CIDR cover
//! (any cover must contain each maximal block whole, since aligned blocks are nested or
//! disjoint), so "fewest networks" needs no search.
//!
//! The two families never meet: IPv4 `255.255.255.255` and IPv6 `::1:0:0` are neighbours as
//! numbers but not as addresses. An IPv4 interval is stored packed in a `u64` (8 bytes), an
//! IPv6 one as a pair of `u128` (32 bytes).
//!
//! # Performance
//!
//! Measured with `cargo test --release --lib cidr::tests::perf -- --ignored --nocapture` on
//! the 2-core development VM while other builds ran on it (best of 5 within a run, range over
//! 3 runs). Input: random IPv4, 80% single addresses, 20% networks /16 to /31.
//!
//! | operation                                                   | time         |
//! |-------------------------------------------------------------|--------------|
//! | [`aggregate`] of 1,000,000 networks (→ 688,205)             | 19 to 23 ms  |
//! | `ipnet::IpNet::aggregate` of the same input                 | 30 to 38 ms  |
//! | [`aggregate`] of 1,000,000 single addresses                 | 25 to 35 ms  |
//! | parse 1M normalized lines, aggregate, render them as text   | 114 to 117 ms|
//! | [`IntervalSet::build`] of 100,000 networks                  | 0.5 ms       |
//! | 1,000,000 [`IntervalSet::contains_net`] against that set    | 27 to 31 ms  |
//! | 1,000,000 [`IntervalSet::intersects`] against that set      | 26 to 30 ms  |
//! | [`difference`] of the 1M networks minus that set            | 43 to 46 ms  |
//!
//! ipnet 2.12 uses the same interval algorithm; most of the difference is the radix sort of
//! packed IPv4 intervals (with `sort_unstable` instead, ours took 27 to 30 ms). Timings on
//! this VM vary by some 30% from run to run.

mod sort;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub use sort::sort_dedup_v4;

/// One IPv4 or IPv6 network. An address is a network of full length (/32, /128).
///
/// The address is stored in a `u128` (IPv4 in the low 32 bits) with its host bits zero.
/// The derived order is the canonical output order: IPv4 before IPv6, then numerically by
/// address, then by prefix length (a network before the smaller ones at the same address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    v6: bool,
    addr: u128,
    len: u8,
}

/// The text was not an IPv4 or IPv6 address with an optional decimal `/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseNetError;

impl fmt::Display for ParseNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an IPv4 or IPv6 address or network")
    }
}

impl std::error::Error for ParseNetError {}

/// Address bits of the family.
fn family_bits(v6: bool) -> u8 {
    if v6 {
        128
    } else {
        32
    }
}

/// Mask of the `host` low bits (`host` in 0..=128).
fn low_mask(host: u8) -> u128 {
    if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    }
}

impl Net {
    /// The network of `addr/len` in the given family, host bits zeroed (as
    /// [`crate::ioc::normalize`] does). `None` when `len` exceeds the family's width or an
    /// IPv4 `addr` does not fit 32 bits.
    pub fn new(v6: bool, addr: u128, len: u8) -> Option<Net> {
        let bits = family_bits(v6);
        if len > bits || addr > low_mask(bits) {
            return None;
        }
        Some(Net {
            v6,
            addr: addr & !low_mask(bits - len),
            len,
        })
    }

    /// An IPv4 network, host bits zeroed; `None` when `len > 32`.
    pub fn v4(addr: Ipv4Addr, len: u8) -> Option<Net> {
        Net::new(false, u128::from(u32::from(addr)), len)
    }

    /// An IPv6 network, host bits zeroed; `None` when `len > 128`.
    pub fn v6(addr: Ipv6Addr, len: u8) -> Option<Net> {
        Net::new(true, u128::from(addr), len)
    }

    /// True for IPv6.
    pub fn is_v6(&self) -> bool {
        self.v6
    }

    /// The first address (IPv4 in the low 32 bits).
    pub fn addr(&self) -> u128 {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// 32 or 128.
    pub fn max_prefix_len(&self) -> u8 {
        family_bits(self.v6)
    }

    /// The last address of the network, inclusive.
    pub fn last(&self) -> u128 {
        self.addr | low_mask(family_bits(self.v6) - self.len)
    }

    /// Whether every address of `other` is in `self` (same family only).
    pub fn contains(&self, other: &Net) -> bool {
        self.v6 == other.v6 && self.addr <= other.addr && other.last() <= self.last()
    }

    /// An IPv4 network packed in a `u64` (`addr << 6 | len`), ordered as the `Net`s are;
    /// `None` for IPv6.
    pub fn v4_key(&self) -> Option<u64> {
        (!self.v6).then_some((self.addr as u64) << 6 | u64::from(self.len))
    }

    /// The IPv4 network [`Net::v4_key`] packed.
    pub fn from_v4_key(key: u64) -> Net {
        Net {
            v6: false,
            addr: u128::from(key >> 6),
            len: (key & 63) as u8,
        }
    }
}

impl From<Ipv4Addr> for Net {
    fn from(a: Ipv4Addr) -> Net {
        Net {
            v6: false,
            addr: u128::from(u32::from(a)),
            len: 32,
        }
    }
}

impl From<Ipv6Addr> for Net {
    fn from(a: Ipv6Addr) -> Net {
        Net {
            v6: true,
            addr: u128::from(a),
            len: 128,
        }
    }
}

impl From<IpAddr> for Net {
    fn from(a: IpAddr) -> Net {
        match a {
            IpAddr::V4(a) => a.into(),
            IpAddr::V6(a) => a.into(),
        }
    }
}

impl FromStr for Net {
    type Err = ParseNetError;

    /// Parses the stored form (`1.2.3.4`, `1.2.3.0/24`, `2001:db8::/32`, `::1`). Like
    /// `normalize`, it also takes `/32` and `/128` and zeroes host bits, so parsing never
    /// disagrees with it about which network a line means. No minimum prefix is enforced:
    /// that is ingest's job.
    fn from_str(s: &str) -> Result<Net, ParseNetError> {
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let (v6, addr) = if let Ok(a) = addr.parse::<Ipv4Addr>() {
            (false, u128::from(u32::from(a)))
        } else if let Ok(a) = addr.parse::<Ipv6Addr>() {
            (true, u128::from(a))
        } else {
            return Err(ParseNetError);
        };
        let bits = family_bits(v6);
        let len = match prefix {
            None => bits,
            Some(p) => crate::ioc::parse_prefix(p, bits).ok_or(ParseNetError)?,
        };
        Net::new(v6, addr, len).ok_or(ParseNetError)
    }
}

impl Net {
    /// A network from a stored line: as `str::parse`, with a plain IPv4 address in normal
    /// form (nearly every stored line of an IPv4 set) read without the full parser.
    pub fn from_line(line: &[u8]) -> Option<Net> {
        if let Some(addr) = crate::ioc::normal_ipv4(line) {
            return Net::new(false, u128::from(addr), 32);
        }
        std::str::from_utf8(line).ok()?.parse().ok()
    }

    /// Append the normalized text ([`Display`](fmt::Display)'s) to `out`; IPv4 without the
    /// formatting machinery, which cost more than sorting in a view of a million addresses.
    pub fn push_text(&self, out: &mut Vec<u8>) {
        if self.v6 {
            use std::io::Write;
            // Writing to a Vec can't fail.
            let _ = write!(out, "{self}");
            return;
        }
        crate::ioc::push_ipv4(out, self.addr as u32, self.len);
    }
}

impl fmt::Display for Net {
    /// The normalized text: no `/32` or `/128`; IPv6 in RFC 5952 form (std's `Display`, which
    /// `ioc::normalize` uses too).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.v6 {
            fmt::Display::fmt(&Ipv6Addr::from(self.addr), f)?;
        } else {
            // An IPv4 `Net` always fits 32 bits; the cast only drops zero bits.
            fmt::Display::fmt(&Ipv4Addr::from(self.addr as u32), f)?;
        }
        if self.len < family_bits(self.v6) {
            write!(f, "/{}", self.len)?;
        }
        Ok(())
    }
}

/// The maximal aligned blocks covering `lo..=hi` of one family, in order: the unique minimal
/// CIDR cover of the interval.
#[derive(Clone, Debug)]
struct Blocks {
    v6: bool,
    lo: u128,
    hi: u128,
    done: bool,
}

impl Blocks {
    fn new(v6: bool, lo: u128, hi: u128) -> Blocks {
        Blocks {
            v6,
            lo,
            hi,
            done: lo > hi,
        }
    }
}

impl Iterator for Blocks {
    type Item = Net;

    fn next(&mut self) -> Option<Net> {
        if self.done {
            return None;
        }
        let bits = u32::from(family_bits(self.v6));
        let lo = self.lo;
        // The largest block that starts at `lo` (alignment) and ends by `hi` (size).
        let by_size = match (self.hi - lo).checked_add(1) {
            Some(count) => 127 - count.leading_zeros(),
            None => 128,
        };
        let k = by_size.min(lo.trailing_zeros()).min(bits);
        let last = lo | low_mask(k as u8);
        if last >= self.hi {
            self.done = true;
        } else {
            self.lo = last + 1;
        }
        Some(Net {
            v6: self.v6,
            addr: lo,
            // k <= bits <= 128
            len: (bits - k) as u8,
        })
    }
}

/// An address of one family: `u32` for IPv4, `u128` for IPv6.
trait Word: Copy + Ord {
    fn widen(self) -> u128;
    /// Only called with values of the family's range.
    fn narrow(x: u128) -> Self;
    fn succ(self) -> Option<Self>;
}

impl Word for u32 {
    fn widen(self) -> u128 {
        u128::from(self)
    }
    fn narrow(x: u128) -> u32 {
        x as u32
    }
    fn succ(self) -> Option<u32> {
        self.checked_add(1)
    }
}

impl Word for u128 {
    fn widen(self) -> u128 {
        self
    }
    fn narrow(x: u128) -> u128 {
        x
    }
    fn succ(self) -> Option<u128> {
        self.checked_add(1)
    }
}

/// An inclusive interval as stored: IPv4 packed in a `u64` (start in the high half, so the
/// packed order is the start order and the sort compares one integer), IPv6 as a pair.
trait Span: Copy + Ord {
    type W: Word;
    fn new(start: Self::W, end: Self::W) -> Self;
    fn start(self) -> Self::W;
    fn end(self) -> Self::W;
}

impl Span for u64 {
    type W = u32;
    fn new(start: u32, end: u32) -> u64 {
        u64::from(start) << 32 | u64::from(end)
    }
    fn start(self) -> u32 {
        (self >> 32) as u32
    }
    fn end(self) -> u32 {
        self as u32
    }
}

impl Span for (u128, u128) {
    type W = u128;
    fn new(start: u128, end: u128) -> (u128, u128) {
        (start, end)
    }
    fn start(self) -> u128 {
        self.0
    }
    fn end(self) -> u128 {
        self.1
    }
}

/// Merge overlapping or adjacent intervals, sorted by start, in place.
fn merge_sorted<S: Span>(v: &mut Vec<S>) {
    let mut w = 0usize;
    for r in 0..v.len() {
        let x = v[r];
        if w > 0 {
            let last = v[w - 1];
            // `start <= last.end + 1`; nothing follows an interval that reaches the top.
            if last.end().succ().is_none_or(|n| x.start() <= n) {
                if x.end() > last.end() {
                    v[w - 1] = S::new(last.start(), x.end());
                }
                continue;
            }
        }
        v[w] = x;
        w += 1;
    }
    v.truncate(w);
}

/// Index of the first interval that ends at or after `x` (the only one that can hold `x`).
fn first_ending_at_or_after<S: Span>(v: &[S], x: S::W) -> usize {
    v.partition_point(|s| s.end() < x)
}

fn contains<S: Span>(v: &[S], lo: S::W, hi: S::W) -> bool {
    v.get(first_ending_at_or_after(v, lo))
        .is_some_and(|s| s.start() <= lo && hi <= s.end())
}

fn intersects<S: Span>(v: &[S], lo: S::W, hi: S::W) -> bool {
    v.get(first_ending_at_or_after(v, lo))
        .is_some_and(|s| s.start() <= hi)
}

/// Call `f` with each maximal sub-interval of `lo..=hi` outside `v`, in order.
fn gaps<S: Span>(v: &[S], lo: S::W, hi: S::W, mut f: impl FnMut(S::W, S::W)) {
    let mut cur = lo;
    for x in v.get(first_ending_at_or_after(v, lo)..).unwrap_or(&[]) {
        if x.start() > hi {
            break;
        }
        if x.start() > cur {
            f(cur, Word::narrow(x.start().widen() - 1));
        }
        match x.end().succ() {
            Some(next) if x.end() < hi => cur = next,
            _ => return,
        }
    }
    f(cur, hi);
}

/// The IPv4 bounds of a network known to be IPv4.
fn v4_bounds(n: &Net) -> (u32, u32) {
    (Word::narrow(n.addr), Word::narrow(n.last()))
}

/// A set of addresses of both families: sorted, disjoint, non-adjacent inclusive intervals.
///
/// Built in O(n log n) (IPv4: O(n), radix-sorted); [`contains_net`](Self::contains_net) and
/// [`intersects`](Self::intersects) are one binary search. Memory: 8 bytes per IPv4
/// interval, 32 per IPv6 interval (at most one per input network, fewer after merging).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalSet {
    v4: Vec<u64>,
    v6: Vec<(u128, u128)>,
}

impl IntervalSet {
    /// The union of `nets`.
    pub fn build(nets: impl IntoIterator<Item = Net>) -> IntervalSet {
        let nets = nets.into_iter();
        let mut v4 = Vec::with_capacity(nets.size_hint().0);
        let mut v6 = Vec::new();
        for n in nets {
            if n.v6 {
                v6.push((n.addr, n.last()));
            } else {
                let (lo, hi) = v4_bounds(&n);
                v4.push(Span::new(lo, hi));
            }
        }
        sort::radix_sort_from(&mut v4, 32);
        v6.sort_unstable();
        merge_sorted(&mut v4);
        merge_sorted(&mut v6);
        IntervalSet { v4, v6 }
    }

    /// True when the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Number of maximal intervals (IPv4 and IPv6), not of addresses or networks.
    pub fn interval_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// How many addresses, both families together (a float: an IPv6 /0 alone is 2^128).
    pub fn address_count(&self) -> f64 {
        fn count<S: Span>(spans: &[S]) -> f64 {
            spans
                .iter()
                .map(|s| (s.end().widen() - s.start().widen()) as f64 + 1.0)
                .sum()
        }
        count(&self.v4) + count(&self.v6)
    }

    /// Whether every address of `n` is in the set.
    pub fn contains_net(&self, n: &Net) -> bool {
        if n.v6 {
            contains(&self.v6, n.addr, n.last())
        } else {
            let (lo, hi) = v4_bounds(n);
            contains(&self.v4, lo, hi)
        }
    }

    /// Whether some address of `n` is in the set.
    pub fn intersects(&self, n: &Net) -> bool {
        if n.v6 {
            intersects(&self.v6, n.addr, n.last())
        } else {
            let (lo, hi) = v4_bounds(n);
            intersects(&self.v4, lo, hi)
        }
    }

    /// `n` minus the set, as the fewest networks, sorted. Empty when the set contains `n`;
    /// `[n]` when they do not intersect.
    pub fn subtract_from(&self, n: &Net) -> Vec<Net> {
        let mut out = Vec::new();
        self.subtract_into(n, &mut out);
        out
    }

    /// [`subtract_from`](Self::subtract_from), appending to `out` (no allocation per listed
    /// network when building a whole view).
    pub fn subtract_into(&self, n: &Net, out: &mut Vec<Net>) {
        if n.v6 {
            gaps(&self.v6, n.addr, n.last(), |lo, hi| {
                out.extend(Blocks::new(true, lo, hi));
            });
        } else {
            let (lo, hi) = v4_bounds(n);
            gaps(&self.v4, lo, hi, |lo: u32, hi: u32| {
                out.extend(Blocks::new(false, lo.widen(), hi.widen()));
            });
        }
    }

    /// The set as the fewest networks, IPv4 first, sorted; lazily, so a view can be rendered
    /// without holding them all.
    pub fn nets(&self) -> impl Iterator<Item = Net> + '_ {
        let v4 = self
            .v4
            .iter()
            .flat_map(|s| Blocks::new(false, s.start().widen(), s.end().widen()));
        let v6 = self.v6.iter().flat_map(|s| Blocks::new(true, s.0, s.1));
        v4.chain(v6)
    }

    /// [`nets`](Self::nets), collected.
    pub fn to_nets(&self) -> Vec<Net> {
        let mut out = Vec::with_capacity(self.interval_count());
        out.extend(self.nets());
        out
    }

    /// The addresses of `self` not in `other`.
    pub fn minus(&self, other: &IntervalSet) -> IntervalSet {
        fn diff<S: Span>(a: &[S], b: &[S]) -> Vec<S> {
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                gaps(b, x.start(), x.end(), |s, e| out.push(S::new(s, e)));
            }
            out
        }
        IntervalSet {
            v4: diff(&self.v4, &other.v4),
            v6: diff(&self.v6, &other.v6),
        }
    }
}

impl FromIterator<Net> for IntervalSet {
    fn from_iter<I: IntoIterator<Item = Net>>(iter: I) -> IntervalSet {
        IntervalSet::build(iter)
    }
}

/// The fewest networks whose union is the union of `nets` (duplicates, overlaps and adjacent
/// networks merged), sorted: IPv4 first, then by address, then by prefix length.
pub fn aggregate(nets: impl IntoIterator<Item = Net>) -> Vec<Net> {
    IntervalSet::build(nets).to_nets()
}

/// The union of `listed` minus `allowed`, as the fewest networks, sorted (pfBlockerNG-style:
/// a listed /16 minus an allowed /24 is the eight networks around it). This aggregates too;
/// to keep listed networks apart, call [`IntervalSet::subtract_into`] per network.
pub fn difference(listed: impl IntoIterator<Item = Net>, allowed: &IntervalSet) -> Vec<Net> {
    IntervalSet::build(listed).minus(allowed).to_nets()
}

#[cfg(test)]
mod tests;
