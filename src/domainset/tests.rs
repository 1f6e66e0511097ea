use super::*;
use crate::ioc::{normalize, IocType, Limits};
use crate::splitmix::Rng;
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
        let r = rng.next_u64();
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

fn label(rng: &mut Rng, out: &mut String) {
    let r = rng.next_u64();
    for i in 0..3 + r % 8 {
        out.push(char::from(b'a' + (r >> (8 + 5 * i) & 31) as u8 % 26));
    }
}

/// 1 to 3 random labels under one of 12 TLDs.
fn random_name(rng: &mut Rng) -> String {
    const TLDS: [&str; 12] = [
        "com", "net", "org", "io", "ru", "cn", "de", "info", "xyz", "top", "co", "uk",
    ];
    let r = rng.next_u64();
    let mut out = String::new();
    for _ in 0..1 + r % 3 {
        label(rng, &mut out);
        out.push('.');
    }
    out.push_str(TLDS[(r >> 8) as usize % TLDS.len()]);
    out
}

#[test]
#[ignore = "timing; run with --release"]
fn perf() {
    use std::time::Instant;
    let mut rng = Rng(5);
    let rules: Vec<String> = (0..1_000_000)
        .map(|i| {
            let n = random_name(&mut rng);
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
                let r = &rules[(rng.next_u64() % rules.len() as u64) as usize];
                format!("www.{}", r.strip_prefix("*.").unwrap_or(r))
            } else {
                random_name(&mut rng)
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

#[test]
fn url_hosts_name_addresses_as_browsers_read_them() {
    use std::net::IpAddr;
    let addr = |h: &str| host_address(h).map(|a| a.to_string());
    for host in [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "0x7f000001",
        "0X7F.1",
        "2130706433",
        "0177.0.0.1",
        "127.0.0.1.",
        "0x00000000007f000001",
        "0000000000000177.0.0.1",
    ] {
        assert_eq!(addr(host).as_deref(), Some("127.0.0.1"), "{host}");
    }
    assert_eq!(addr("134744072").as_deref(), Some("8.8.8.8"));
    assert_eq!(addr("0x").as_deref(), Some("0.0.0.0"));
    assert_eq!(
        host_address("2001:db8::1"),
        Some("2001:db8::1".parse::<IpAddr>().unwrap())
    );
    for name in [
        "example.com",
        "1.2.3.256",
        "1.2.3.4.5",
        "4294967296",
        "08.1.1.1",
        "1..1",
        "127.example",
        "",
    ] {
        assert_eq!(addr(name), None, "{name}");
    }
}
