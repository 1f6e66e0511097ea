//! `.iocfs/lookup/VALUE` (DESIGN §9, README "Lookup"): what iocfs knows of one value,
//! answered as a firewall matches.
//!
//! The value exists when it is stored or *covered*: an address or network inside a stored
//! network (every prefix length from the value's up to the configured minimum is probed in
//! the index, most specific first: at most 25 probes for IPv4, 113 for IPv6 with the
//! default minimums), a name under a stored wildcard (one probe per parent). The answer
//! adds `covered_by` (those entries, with their buckets), `allowed_by` (the allowlist or
//! reserved-range entry that keeps it out of the views, if any) and `views` (the views whose
//! files include all of it, see `views::lookup`); for a network served in part, `trimmed`
//! (the parts views leave out). Every probe of one kind runs under one lock.

use serde_json::{json, Value};

use crate::cidr::{IntervalSet, Net};
use crate::clock::rfc3339;
use crate::domainset;
use crate::ioc::{self, IocType, Limits};
use crate::store::live::Times;
use crate::store::model::Bucket;
use crate::store::Store;
use crate::views::suppress::AllowIndex;
use crate::views::Views;

/// What a lookup found.
pub struct Answer {
    pub ty: IocType,
    /// The value, normalized.
    pub value: String,
    /// The JSON served.
    pub body: Value,
}

/// The answer for `raw` (a value as given in the file name, already percent-decoded), or
/// None when it is neither stored nor covered.
pub fn lookup(store: &Store, views: &Views, raw: &[u8]) -> Option<Answer> {
    let limits = store.limits();
    let (ty, value) = ioc::classify(raw, &limits)?;
    let net = value.parse::<Net>().ok().filter(|_| is_ip(ty));
    // The value, then the entries that would cover it.
    let probes: Vec<Vec<u8>> = match (ty, net) {
        (IocType::Ipv4 | IocType::Ipv6, Some(net)) => net_and_supernets(net, &limits),
        (IocType::Domain, _) => std::iter::once(value.clone())
            .chain(wildcards_over(&value))
            .map(String::into_bytes)
            .collect(),
        _ => vec![value.clone().into_bytes()],
    };
    let found = store.find_each(ty, &probes);
    let exact = found.first().copied().flatten();
    let covered: Vec<(String, (Bucket, Times))> = probes
        .iter()
        .zip(&found)
        .skip(1)
        .filter_map(|(v, f)| Some((String::from_utf8_lossy(v).into_owned(), (*f)?)))
        .collect();
    if exact.is_none() && covered.is_empty() {
        return None;
    }
    let covered_by: Vec<Value> = covered
        .iter()
        .map(|(v, (bucket, times))| {
            let mut entry = json!({ "value": v });
            stored_fields(&mut entry, Some((*bucket, *times)));
            entry["sources"] = json!(store.sources_of(ty, v.as_bytes()).unwrap_or_default());
            // A covering wildcard kept out whole (an allowed name under it) takes the names
            // under it out of the views too, though no rule covers them.
            if ty == IocType::Domain {
                if let Some(rule) = domain_allowed(store, views, v, true) {
                    entry["allowed_by"] = rule;
                }
            }
            entry
        })
        .collect();
    let listed: Vec<String> = covered.into_iter().map(|(v, _)| v).collect();
    let mut body = json!({ "value": value, "type": ty.name() });
    stored_fields(&mut body, exact);
    // Who lists it as is (empty when only covered); each covering entry says its own.
    body["sources"] = json!(exact
        .and_then(|_| store.sources_of(ty, value.as_bytes()))
        .unwrap_or_default());
    body["covered_by"] = Value::Array(covered_by);
    let allowed = match net {
        Some(net) => address_allowed(store, net, &probes, views.config().suppress_reserved),
        None => allowed_by(store, views, ty, &value, &limits),
    };
    if let Some(net) = net.filter(|n| allowed.is_none() && n.prefix_len() < n.max_prefix_len()) {
        add_trimmed(&mut body, store, views, net);
    }
    body["allowed_by"] = allowed.unwrap_or(Value::Null);
    body["views"] = json!(views.including(ty, &value, &listed));
    Some(Answer { ty, value, body })
}

/// The type of the file an address or network is listed in.
fn family_of(net: Net) -> IocType {
    if net.is_v6() {
        IocType::Ipv6
    } else {
        IocType::Ipv4
    }
}

fn is_ip(ty: IocType) -> bool {
    matches!(ty, IocType::Ipv4 | IocType::Ipv6)
}

/// `bucket`, `first_seen`, `last_seen` (null when not stored as is).
fn stored_fields(body: &mut Value, stored: Option<(Bucket, Times)>) {
    let (bucket, first, last) = match stored {
        Some((b, (first, last))) => (
            json!(b.name()),
            json!(rfc3339(first.into())),
            json!(rfc3339(last.into())),
        ),
        None => (Value::Null, Value::Null, Value::Null),
    };
    body["bucket"] = bucket;
    body["first_seen"] = first;
    body["last_seen"] = last;
}

/// The networks strictly containing `net`, most specific first, down to the shortest
/// prefix a stored (or allowed) network can have.
pub fn supernets(net: Net, limits: &Limits) -> impl Iterator<Item = Net> {
    let min = if net.is_v6() {
        limits.min_prefix_v6
    } else {
        limits.min_prefix_v4
    };
    let bits = net.max_prefix_len();
    (min..net.prefix_len()).rev().filter_map(move |len| {
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (bits - len) & (u128::MAX >> (128 - u32::from(bits)))
        };
        Net::new(net.is_v6(), net.addr() & mask, len)
    })
}

/// The normalized texts of `net` and of its [`supernets`], most specific first: the probes
/// of an address lookup. Written without the formatting machinery, which was most of a
/// lookup's CPU time (two lists of 25 for an IPv4 address).
fn net_and_supernets(net: Net, limits: &Limits) -> Vec<Vec<u8>> {
    std::iter::once(net)
        .chain(supernets(net, limits))
        .map(|n| {
            let mut text = Vec::with_capacity(if n.is_v6() { 43 } else { 18 });
            n.push_text(&mut text);
            text
        })
        .collect()
}

/// The stored wildcards that would cover `name` (or, for `*.suffix`, the whole of it): `*.P`
/// for every parent `P` of two labels or more, most specific first.
pub fn wildcards_over(name: &str) -> Vec<String> {
    let base = name.strip_prefix("*.").unwrap_or(name);
    let mut out = Vec::new();
    let mut rest = base;
    while let Some((_, parent)) = rest.split_once('.') {
        if !parent.contains('.') {
            break;
        }
        out.push(format!("*.{parent}"));
        rest = parent;
    }
    out
}

/// The entry that keeps `value` out of every view, if one does.
fn allowed_by(
    store: &Store,
    views: &Views,
    ty: IocType,
    value: &str,
    limits: &Limits,
) -> Option<Value> {
    let reserved = views.config().suppress_reserved;
    let exact =
        |ty: IocType| store.allowed_each(ty, &[value])[0].then(|| allow_entry(ty, value, false));
    let address = |net: Net| address_allowed(store, net, &net_and_supernets(net, limits), reserved);
    match ty {
        IocType::Ipv4 | IocType::Ipv6 => address(value.parse().ok()?),
        IocType::Domain => domain_allowed(store, views, value, true),
        IocType::Url => exact(ty).or_else(|| {
            let host = domainset::host_of_url(value)?;
            match domainset::host_address(host) {
                Some(addr) => address(Net::from(addr)),
                None => domain_allowed(store, views, host, false),
            }
        }),
        IocType::Email => exact(ty)
            .or_else(|| domain_allowed(store, views, domainset::host_of_email(value)?, false)),
        _ => exact(ty),
    }
}

fn allow_entry(ty: IocType, entry: &str, conflict: bool) -> Value {
    let mut v = json!({
        "list": "allow",
        "file": format!("allow/{}", ty.file_name()),
        "entry": entry,
    });
    if conflict {
        v["conflict"] = json!(true);
    }
    v
}

/// The most specific allowed network holding `net`, else its reserved range. `candidates`:
/// the texts of `net` and of its supernets ([`net_and_supernets`]).
fn address_allowed(
    store: &Store,
    net: Net,
    candidates: &[Vec<u8>],
    reserved: bool,
) -> Option<Value> {
    let family = family_of(net);
    let hits = store.allowed_each(family, candidates);
    if let Some((c, _)) = candidates.iter().zip(hits).find(|(_, hit)| *hit) {
        return Some(allow_entry(family, &String::from_utf8_lossy(c), false));
    }
    if !reserved {
        return None;
    }
    let (range, registry) = crate::reserved::entry_covering(&net)?;
    Some(json!({ "list": "reserved", "entry": range, "registry": registry }))
}

/// At most this many of a network's left-out parts are listed (`trimmed_more` counts the rest).
const TRIMMED_SHOWN: usize = 256;

/// The parts of `net` that views leave out (allowed networks and, with `suppress_reserved`,
/// reserved ranges inside it), as the fewest networks: views serve `net` minus these.
fn add_trimmed(body: &mut Value, store: &Store, views: &Views, net: Net) {
    let family = family_of(net);
    // Interval arithmetic throughout: a network holding many allowed ones (a /8 around
    // 100,000 allowed addresses) would be millions of CIDRs if split into blocks first.
    let whole = IntervalSet::build([net]);
    let mut served = match views.allow_index(store, family) {
        Ok(index) => match &*index {
            AllowIndex::Nets(allowed) => whole.minus(allowed),
            _ => whole.clone(),
        },
        Err(e) => {
            crate::lograte::warn(|| format!("lookup: the {} allowlist: {e}", family.name()));
            return;
        }
    };
    if views.config().suppress_reserved {
        served = served.minus(views.reserved_ranges());
    }
    let left_out = whole.minus(&served);
    let mut parts = left_out.nets().map(|n| n.to_string());
    let shown: Vec<String> = parts.by_ref().take(TRIMMED_SHOWN).collect();
    body["trimmed"] = json!(shown);
    let more = parts.count();
    if more > 0 {
        body["trimmed_more"] = json!(more);
    }
}

/// The domain rule covering `name`; for a listed wildcard (`conflicts`), also an allowed
/// name under it, which keeps the whole wildcard out.
fn domain_allowed(store: &Store, views: &Views, name: &str, conflicts: bool) -> Option<Value> {
    let index = match views.allow_index(store, IocType::Domain) {
        Ok(index) => index,
        Err(e) => {
            crate::lograte::warn(|| format!("lookup: the domain allowlist: {e}"));
            return None;
        }
    };
    let AllowIndex::Domains(rules) = &*index else {
        return None;
    };
    if let Some(rule) = rules.covering_rule(name) {
        return Some(allow_entry(IocType::Domain, rule, false));
    }
    if conflicts && name.starts_with("*.") {
        let under = rules.has_rule_under(name)?;
        return Some(allow_entry(IocType::Domain, under, true));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            min_prefix_v4: 8,
            min_prefix_v6: 16,
        }
    }

    #[test]
    fn supernets_run_from_the_next_shorter_prefix_to_the_minimum() {
        let all: Vec<String> = supernets("10.1.2.3".parse().unwrap(), &limits())
            .map(|n| n.to_string())
            .collect();
        assert_eq!(all.len(), 24);
        assert_eq!(all[0], "10.1.2.2/31");
        assert_eq!(all[8], "10.1.2.0/23");
        assert_eq!(all[23], "10.0.0.0/8");
        let v6: Vec<Net> = supernets("2001:db8::1/64".parse().unwrap(), &limits()).collect();
        assert_eq!(v6.len(), 48);
        assert_eq!(v6[0].to_string(), "2001:db8::/63");
        assert_eq!(v6[47].to_string(), "2001::/16");
        let zero = Limits {
            min_prefix_v4: 0,
            min_prefix_v6: 0,
        };
        let last = supernets("1.2.3.4".parse().unwrap(), &zero).last().unwrap();
        assert_eq!(last.to_string(), "0.0.0.0/0");
        assert_eq!(supernets("0.0.0.0/0".parse().unwrap(), &zero).count(), 0);
    }

    #[test]
    fn an_address_lookup_probes_the_value_as_classified_then_its_supernets() {
        let limits = limits();
        let raw = [
            "10.1.2.3",
            "10.1.2.3/32",
            "10.0.0.0/8",
            "192.168.0.0/16",
            "2001:DB8::1",
            "2001:db8:0:0::/32",
            "2001:db8::1/128",
            "::ffff:1.2.3.4",
            "fe80::/16",
            "172.16.5.0/24",
        ];
        for raw in raw {
            let (ty, value) =
                ioc::classify(raw.as_bytes(), &limits).unwrap_or_else(|| panic!("{raw}"));
            assert!(is_ip(ty), "{raw}: {ty:?}");
            let net: Net = value.parse().unwrap();
            let probes = net_and_supernets(net, &limits);
            assert_eq!(String::from_utf8_lossy(&probes[0]), value, "{raw}");
            let shown: Vec<String> = supernets(net, &limits).map(|n| n.to_string()).collect();
            let texts: Vec<String> = probes[1..]
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            assert_eq!(texts, shown, "{raw}");
        }
    }

    #[test]
    fn wildcards_over_a_name_stop_at_two_labels() {
        assert_eq!(
            wildcards_over("a.b.example.com"),
            ["*.b.example.com", "*.example.com"]
        );
        assert_eq!(wildcards_over("*.b.example.com"), ["*.example.com"]);
        assert!(wildcards_over("example.com").is_empty());
    }
}
