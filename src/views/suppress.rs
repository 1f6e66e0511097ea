//! What no view serves (DESIGN §9, README "Allowlist"): the values of `allow/<type>.txt` and,
//! with `[views] suppress_reserved` (the default), the special-purpose address ranges of
//! [`crate::reserved`]. Suppression applies to views only; the buckets keep their history.
//!
//! - ipv4/ipv6: an allowed network suppresses every listed address and network inside it;
//!   a listed network that contains allowed addresses is served minus them, as the fewest
//!   networks ("trimmed").
//! - domain: an allowed `example.com` suppresses it and every name under it, an allowed
//!   `*.example.com` only the names under it ([`DomainSet`]). A listed wildcard is
//!   suppressed when an allowed rule covers all of it; when only some allowed name lies
//!   under it, it cannot be subtracted: it is suppressed whole and counted as a conflict.
//! - url: the exact value, or a host covered by the domain allowlist, or an address host
//!   covered by the ipv4/ipv6 allowlists or a reserved range.
//! - email: the exact value, or a domain covered by the domain allowlist.
//! - hashes: exact values.
//!
//! The indexes are built from one allowlist version each and kept until that allowlist
//! changes, so a view build costs one probe per listed value, not a pass over the allowlist.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::nets::Nets;
use super::select::{text_of, Selected, Values};
use crate::cidr::{IntervalSet, Net};
use crate::domainset::{self, DomainSet};
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::partition::ByType;
use crate::store::tier;
use crate::store::Store;

/// The allowlist of one type, indexed for the matching its type calls for.
pub enum AllowIndex {
    /// ipv4, ipv6: the union of the allowed networks.
    Nets(IntervalSet),
    Domains(DomainSet),
    /// url, email, hashes.
    Exact(ExactSet),
}

/// Values matched exactly: 64-bit hashes into a table, confirmed against the text.
#[derive(Default)]
pub struct ExactSet {
    text: Vec<u8>,
    /// Hash of a value → (start, len) in `text`.
    table: HashMap<u64, (u32, u32), BuildHasherDefault<Prehashed>>,
    /// Values whose hash another one took (never seen in practice; kept exact anyway).
    spill: HashSet<Vec<u8>>,
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl ExactSet {
    pub fn build(text: Vec<u8>) -> ExactSet {
        let mut set = ExactSet::default();
        let mut table = HashMap::default();
        for line in tier::lines(&text).filter(|l| !l.is_empty()) {
            let start = line.as_ptr() as usize - text.as_ptr() as usize;
            let (Ok(start), Ok(len)) = (u32::try_from(start), u32::try_from(line.len())) else {
                set.spill.insert(line.to_vec());
                continue;
            };
            match table.entry(xxhash_rust::xxh3::xxh3_64(line)) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((start, len));
                }
                std::collections::hash_map::Entry::Occupied(_) => {
                    set.spill.insert(line.to_vec());
                }
            }
        }
        set.table = table;
        set.text = text;
        set
    }

    pub fn contains(&self, value: &[u8]) -> bool {
        let hit = self
            .table
            .get(&xxhash_rust::xxh3::xxh3_64(value))
            .is_some_and(|&(start, len)| {
                let (start, len) = (start as usize, len as usize);
                self.text.get(start..start + len) == Some(value)
            });
        hit || (!self.spill.is_empty() && self.spill.contains(value))
    }
}

impl AllowIndex {
    /// Index the allowlist text of `ty` (normalized lines, as written to allow/).
    pub fn build(ty: IocType, text: Vec<u8>) -> AllowIndex {
        match ty {
            IocType::Ipv4 | IocType::Ipv6 => AllowIndex::Nets(IntervalSet::build(
                tier::lines(&text).filter_map(|l| std::str::from_utf8(l).ok()?.parse::<Net>().ok()),
            )),
            IocType::Domain => AllowIndex::Domains(DomainSet::build(
                tier::lines(&text).filter_map(|l| std::str::from_utf8(l).ok()),
            )),
            _ => AllowIndex::Exact(ExactSet::build(text)),
        }
    }

    fn nets(&self) -> Option<&IntervalSet> {
        match self {
            AllowIndex::Nets(n) => Some(n),
            _ => None,
        }
    }

    fn domains(&self) -> Option<&DomainSet> {
        match self {
            AllowIndex::Domains(d) => Some(d),
            _ => None,
        }
    }

    fn exact(&self) -> Option<&ExactSet> {
        match self {
            AllowIndex::Exact(e) => Some(e),
            _ => None,
        }
    }
}

/// The types whose allowlists a view file of `ty` is filtered by.
pub fn inputs_of(ty: IocType) -> &'static [IocType] {
    match ty {
        IocType::Url => &[IocType::Url, IocType::Domain, IocType::Ipv4, IocType::Ipv6],
        IocType::Email => &[IocType::Email, IocType::Domain],
        IocType::Ipv4 => &[IocType::Ipv4],
        IocType::Ipv6 => &[IocType::Ipv6],
        IocType::Domain => &[IocType::Domain],
        IocType::Md5 => &[IocType::Md5],
        IocType::Sha1 => &[IocType::Sha1],
        IocType::Sha256 => &[IocType::Sha256],
        IocType::Sha512 => &[IocType::Sha512],
    }
}

/// An index and the allowlist change count it was built at.
type Built = (u64, Arc<AllowIndex>);

/// The allowlist indexes, each kept with the change count of the allowlist it was built
/// from, and the reserved ranges.
pub struct AllowIndexes {
    built: Mutex<ByType<Option<Built>>>,
    reserved: IntervalSet,
}

impl Default for AllowIndexes {
    fn default() -> Self {
        AllowIndexes {
            built: Mutex::default(),
            reserved: crate::reserved::set(),
        }
    }
}

impl AllowIndexes {
    /// The index of the allowlist of `ty` as it is now (built again if it changed).
    pub fn get(&self, store: &Store, ty: IocType) -> Result<Arc<AllowIndex>> {
        let (version, count) = store.allow_snapshot(ty);
        if let Some((c, index)) = &crate::sync::lock(&self.built)[ty] {
            if *c == count {
                return Ok(index.clone());
            }
        }
        // Built without the lock held: another type's lookups need not wait for it.
        let index = Arc::new(AllowIndex::build(ty, version.read_all()?));
        crate::sync::lock(&self.built)[ty] = Some((count, index.clone()));
        Ok(index)
    }

    /// What a build of a file of `ty` filters with.
    pub fn rules(&self, store: &Store, ty: IocType, reserved: bool) -> Result<Rules<'_>> {
        let mut by_type: ByType<Option<Arc<AllowIndex>>> = ByType::default();
        for &t in inputs_of(ty) {
            by_type[t] = Some(self.get(store, t)?);
        }
        Ok(Rules {
            ty,
            by_type,
            reserved: reserved.then_some(&self.reserved),
        })
    }

    pub fn reserved(&self) -> &IntervalSet {
        &self.reserved
    }
}

/// Everything one view file is filtered by.
pub struct Rules<'a> {
    ty: IocType,
    by_type: ByType<Option<Arc<AllowIndex>>>,
    reserved: Option<&'a IntervalSet>,
}

/// What suppression did to one view file, for stats.json.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Suppressed {
    /// Left out because the allowlist covers them.
    pub suppressed_allow: u64,
    /// Left out because they are special-purpose addresses (`suppress_reserved`).
    pub suppressed_reserved: u64,
    /// Listed wildcards suppressed whole because an allowed name lies under them (counted
    /// in `suppressed_allow` too).
    pub allow_conflicts: u64,
    /// Listed networks served minus an allowed or reserved part.
    pub trimmed: u64,
}

enum Verdict {
    Keep,
    Allowed,
    Reserved,
    Conflict,
}

impl Rules<'_> {
    fn index(&self, ty: IocType) -> Option<&AllowIndex> {
        self.by_type[ty].as_deref()
    }

    /// Remove what the rules suppress from `selected`.
    pub fn apply(&self, selected: &mut Selected) -> Suppressed {
        let mut s = Suppressed::default();
        match &mut selected.values {
            Values::Nets(nets) => self.apply_nets(nets, &mut s),
            Values::Text { arena, items } => {
                items.retain(|item| {
                    match self.verdict(text_of(arena, item)) {
                        Verdict::Keep => return true,
                        Verdict::Allowed => s.suppressed_allow += 1,
                        Verdict::Reserved => s.suppressed_reserved += 1,
                        Verdict::Conflict => {
                            s.suppressed_allow += 1;
                            s.allow_conflicts += 1;
                        }
                    }
                    false
                });
            }
        }
        s
    }

    fn apply_nets(&self, nets: &mut Nets, s: &mut Suppressed) {
        let empty = IntervalSet::default();
        let allow = self
            .index(self.ty)
            .and_then(AllowIndex::nets)
            .unwrap_or(&empty);
        let reserved = self.reserved.unwrap_or(&empty);
        if allow.is_empty() && reserved.is_empty() {
            return;
        }
        let mut pieces = Vec::new();
        let mut trimmed_to = Vec::new();
        nets.retain(|net, seen| {
            // Most listed networks touch neither set: two binary searches decide.
            let in_allow = allow.intersects(&net);
            let in_reserved = reserved.intersects(&net);
            if !in_allow && !in_reserved {
                return true;
            }
            if in_allow && allow.contains_net(&net) {
                s.suppressed_allow += 1;
                return false;
            }
            if in_reserved && reserved.contains_net(&net) {
                s.suppressed_reserved += 1;
                return false;
            }
            // Served minus what either covers.
            pieces.clear();
            allow.subtract_into(&net, &mut pieces);
            let before = trimmed_to.len();
            for p in &pieces {
                let mut rest = Vec::new();
                reserved.subtract_into(p, &mut rest);
                trimmed_to.extend(rest.into_iter().map(|r| (r, seen)));
            }
            if trimmed_to.len() == before {
                // Covered by the two together.
                if in_allow {
                    s.suppressed_allow += 1;
                } else {
                    s.suppressed_reserved += 1;
                }
            } else {
                s.trimmed += 1;
            }
            false
        });
        nets.extend(trimmed_to);
    }

    fn verdict(&self, value: &[u8]) -> Verdict {
        let exact = |ty| {
            self.index(ty)
                .and_then(AllowIndex::exact)
                .is_some_and(|e| e.contains(value))
        };
        let Ok(text) = std::str::from_utf8(value) else {
            return Verdict::Keep;
        };
        let domains = self.index(IocType::Domain).and_then(AllowIndex::domains);
        let domain_allowed = |host: &str| domains.is_some_and(|d| d.covering_rule(host).is_some());
        match self.ty {
            IocType::Domain => {
                let Some(d) = domains else {
                    return Verdict::Keep;
                };
                if d.covering_rule(text).is_some() {
                    Verdict::Allowed
                } else if text.starts_with("*.") && d.has_rule_under(text).is_some() {
                    Verdict::Conflict
                } else {
                    Verdict::Keep
                }
            }
            IocType::Url => {
                if exact(IocType::Url) {
                    return Verdict::Allowed;
                }
                let Some(host) = domainset::host_of_url(text) else {
                    return Verdict::Keep;
                };
                match domainset::host_address(host) {
                    Some(addr) => self.address_verdict(Net::from(addr)),
                    None if domain_allowed(host) => Verdict::Allowed,
                    None => Verdict::Keep,
                }
            }
            IocType::Email => {
                if exact(IocType::Email) {
                    return Verdict::Allowed;
                }
                match domainset::host_of_email(text) {
                    Some(host) if domain_allowed(host) => Verdict::Allowed,
                    _ => Verdict::Keep,
                }
            }
            ty => {
                if exact(ty) {
                    Verdict::Allowed
                } else {
                    Verdict::Keep
                }
            }
        }
    }

    /// An address (a URL's host): allowed by its family's allowlist, or reserved.
    fn address_verdict(&self, addr: Net) -> Verdict {
        let family = if addr.is_v6() {
            IocType::Ipv6
        } else {
            IocType::Ipv4
        };
        let allowed = self
            .index(family)
            .and_then(AllowIndex::nets)
            .is_some_and(|n| n.contains_net(&addr));
        if allowed {
            Verdict::Allowed
        } else if self.reserved.is_some_and(|r| r.contains_net(&addr)) {
            Verdict::Reserved
        } else {
            Verdict::Keep
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// 192.0.0.0/22: a reserved /24 with two servable exceptions, a public /24, the reserved
    /// TEST-NET-1, another public /24.
    const BASE: u128 = 0xc000_0000;

    fn net((off, host): (u128, u8)) -> Net {
        Net::new(false, BASE + off, 32 - host).unwrap()
    }

    fn addrs(nets: impl IntoIterator<Item = Net>) -> BTreeSet<u128> {
        nets.into_iter().flat_map(|n| n.addr()..=n.last()).collect()
    }

    fn rules<'a>(allowed: &[Net], reserved: Option<&'a IntervalSet>) -> Rules<'a> {
        let mut by_type: ByType<Option<Arc<AllowIndex>>> = ByType::default();
        by_type[IocType::Ipv4] = Some(Arc::new(AllowIndex::Nets(IntervalSet::build(
            allowed.iter().copied(),
        ))));
        Rules {
            ty: IocType::Ipv4,
            by_type,
            reserved,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// What a view serves is what was listed minus what is allowed or reserved, address
        /// for address; every listed network is counted once.
        #[test]
        fn served_addresses_are_listed_minus_allowed_minus_reserved(
            listed in prop::collection::vec((0u128..1024, prop_oneof![0u8..=2, 3u8..=9]), 0..20),
            allowed in prop::collection::vec((0u128..1024, prop_oneof![0u8..=3, 4u8..=8]), 0..8),
            reserved_on in any::<bool>(),
        ) {
            let listed: Vec<Net> = listed.into_iter().map(net).collect();
            let allowed: Vec<Net> = allowed.into_iter().map(net).collect();
            let reserved = crate::reserved::set();
            let r = rules(&allowed, reserved_on.then_some(&reserved));
            let mut sel = Selected {
                values: Values::Nets(listed.iter().map(|&n| (n, 1)).collect()),
                expires: None,
                unreadable_blocks: 0,
                unparsable: 0,
            };
            let s = r.apply(&mut sel);
            let Values::Nets(served) = sel.values else { unreachable!() };
            let mut blocked = addrs(allowed.iter().copied());
            if reserved_on {
                let all = addrs([Net::new(false, BASE, 22).unwrap()]);
                blocked.extend(all.into_iter().filter(|&a| {
                    reserved.contains_net(&Net::new(false, a, 32).unwrap())
                }));
            }
            let want: BTreeSet<u128> = addrs(listed.iter().copied())
                .difference(&blocked)
                .copied()
                .collect();
            prop_assert_eq!(addrs(served.iter().map(|(n, _)| n)), want);
            let kept = listed
                .iter()
                .filter(|n| !addrs([**n]).iter().any(|a| blocked.contains(a)))
                .count() as u64;
            prop_assert_eq!(
                s.suppressed_allow + s.suppressed_reserved + s.trimmed + kept,
                listed.len() as u64
            );
            if !reserved_on {
                prop_assert_eq!(s.suppressed_reserved, 0);
            }
        }
    }

    #[test]
    fn exact_sets_find_their_values_only() {
        let set = ExactSet::build(b"a\nbb\nbb\n\nccc\n".to_vec());
        for v in [&b"a"[..], b"bb", b"ccc"] {
            assert!(set.contains(v));
        }
        for v in [&b""[..], b"b", b"cc", b"a\n"] {
            assert!(!set.contains(v), "{v:?}");
        }
    }
}
