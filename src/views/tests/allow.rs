//! Suppression in view builds (DESIGN §9): the allowlist and the reserved ranges take values
//! out of every view, never out of the buckets.

use super::*;
use crate::store::model::Target;

fn allow(store: &Store, ty: IocType, values: &[&str]) {
    store.append_to(Target::Allow, ty, lines(values)).unwrap();
}

fn last_build(views: &Views, view: &str, ty: IocType) -> serde_json::Value {
    views.stats()[view][ty.name()]["last_build"].clone()
}

#[test]
fn an_allowed_network_inside_a_listed_one_is_cut_out_as_the_fewest_cidrs() {
    let fx = Fixture::new();
    let (store, views) = fx.open(&[]);
    store
        .append(
            IocType::Ipv4,
            lines(&["8.0.0.0/16", "8.0.7.7", "9.9.9.9", "11.1.0.0/16"]),
        )
        .unwrap();
    allow(&store, IocType::Ipv4, &["8.0.7.0/24", "11.0.0.0/8"]);
    views.rebuild(&store, false).unwrap();
    // 8.0.0.0/16 minus 8.0.7.0/24: /22, /23, /24 below it; /21, /20, /19, /18, /17 above.
    let want = [
        "8.0.0.0/22",
        "8.0.4.0/23",
        "8.0.6.0/24",
        "8.0.8.0/21",
        "8.0.16.0/20",
        "8.0.32.0/19",
        "8.0.64.0/18",
        "8.0.128.0/17",
        "9.9.9.9",
    ];
    assert_eq!(
        text(&views, "all", IocType::Ipv4)
            .lines()
            .collect::<Vec<_>>(),
        want
    );
    let b = last_build(&views, "all", IocType::Ipv4);
    assert_eq!(b["selected"], 4);
    assert_eq!(b["suppressed_allow"], 2, "8.0.7.7 and 11.1.0.0/16: {b}");
    assert_eq!(b["trimmed"], 1, "{b}");
    assert_eq!(b["entries"], want.len());
    // The history is untouched.
    assert_eq!(
        String::from_utf8(store.live(IocType::Ipv4).read_all().unwrap()).unwrap(),
        "8.0.0.0/16\n8.0.7.7\n9.9.9.9\n11.1.0.0/16\n"
    );
}

#[test]
fn an_allowed_domain_takes_its_names_urls_and_emails_out_of_every_view() {
    let fx = Fixture::new();
    let (store, views) = fx.open(&[]);
    store
        .append(
            IocType::Domain,
            lines(&[
                "good.example.com",
                "x.good.example.com",
                "notgood.example.com",
                "bad.example.com",
                "example.org",
                "a.example.org",
                "*.example.net",
                "*.b.example.org",
            ]),
        )
        .unwrap();
    store
        .append(
            IocType::Url,
            lines(&[
                "http://x.good.example.com/a",
                "https://user@good.example.com:8443/b",
                "http://bad.example.com/c",
                "http://8.8.8.8/d",
                "http://exact.example/allowed?q=1",
            ]),
        )
        .unwrap();
    store
        .append(
            IocType::Email,
            lines(&["a@good.example.com", "b@bad.example.com"]),
        )
        .unwrap();
    allow(
        &store,
        IocType::Domain,
        &["good.example.com", "*.example.org", "www.example.net"],
    );
    allow(&store, IocType::Url, &["http://exact.example/allowed?q=1"]);
    allow(&store, IocType::Ipv4, &["8.8.8.0/24"]);
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "all", IocType::Domain),
        "bad.example.com\nexample.org\nnotgood.example.com\n",
        "a wildcard allow covers names under it only; *.b.example.org is under *.example.org"
    );
    let b = last_build(&views, "all", IocType::Domain);
    assert_eq!(b["suppressed_allow"], 5, "{b}");
    assert_eq!(
        b["allow_conflicts"], 1,
        "*.example.net has www.example.net under it: {b}"
    );
    assert_eq!(
        text(&views, "all", IocType::Url),
        "http://bad.example.com/c\n"
    );
    assert_eq!(
        last_build(&views, "all", IocType::Url)["suppressed_allow"],
        4
    );
    assert_eq!(text(&views, "all", IocType::Email), "b@bad.example.com\n");
    // The buckets keep them all.
    assert_eq!(
        store
            .live(IocType::Domain)
            .read_all()
            .unwrap()
            .split(|&b| b == b'\n')
            .count()
            - 1,
        8
    );
}

#[test]
fn reserved_ranges_are_left_out_unless_turned_off() {
    let mut fx = Fixture::new();
    fx.suppress_reserved = true;
    let (store, views) = fx.open(&[]);
    store
        .append(
            IocType::Ipv4,
            lines(&[
                "10.1.2.3",
                "192.168.0.0/16",
                "127.0.0.1",
                "8.8.8.8",
                "10.0.0.0/7",
                "192.0.0.9",
                "224.0.0.1",
            ]),
        )
        .unwrap();
    store
        .append(
            IocType::Ipv6,
            lines(&["::1", "fe80::1", "2606:4700::1111", "2001:db8::/32"]),
        )
        .unwrap();
    store
        .append(
            IocType::Url,
            lines(&[
                "http://127.0.0.1/x",
                "http://[fe80::1]/y",
                "http://1.1.1.1/z",
                // 127.0.0.1 as browsers and curl read these hosts.
                "http://127.1/a",
                "http://0x7f000001/b",
                "http://2130706433/c",
                "http://0177.0.0.1/d",
                // Not addresses: names (a number too large, no number).
                "http://1.2.3.256/e",
                "http://127.example/f",
            ]),
        )
        .unwrap();
    views.rebuild(&store, false).unwrap();
    // 10.0.0.0/7 is 10/8 (private) and 11/8: served as 11/8. 192.0.0.9 is a globally
    // reachable exception inside 192.0.0.0/24.
    assert_eq!(
        text(&views, "all", IocType::Ipv4),
        "8.8.8.8\n11.0.0.0/8\n192.0.0.9\n"
    );
    let b = last_build(&views, "all", IocType::Ipv4);
    assert_eq!(
        (b["suppressed_reserved"].as_u64(), b["trimmed"].as_u64()),
        (Some(4), Some(1)),
        "{b}"
    );
    assert_eq!(text(&views, "all", IocType::Ipv6), "2606:4700::1111\n");
    assert_eq!(
        text(&views, "all", IocType::Url),
        "http://1.1.1.1/z\nhttp://1.2.3.256/e\nhttp://127.example/f\n"
    );
    assert_eq!(
        last_build(&views, "all", IocType::Url)["suppressed_reserved"],
        6
    );
    drop((store, views));

    fx.suppress_reserved = false;
    let (store, views) = fx.open(&[]);
    views.rebuild(&store, false).unwrap();
    assert!(text(&views, "all", IocType::Ipv4).contains("127.0.0.1\n"));
}

#[test]
fn removing_an_allow_line_brings_the_values_back_at_the_next_rebuild() {
    let fx = Fixture::new();
    let (store, views) = fx.open(&[]);
    store
        .append(IocType::Sha256, lines(&[&"a".repeat(64), &"b".repeat(64)]))
        .unwrap();
    allow(&store, IocType::Sha256, &[&"a".repeat(64)]);
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "all", IocType::Sha256),
        format!("{}\n", "b".repeat(64))
    );
    // Only the allowlist changed: the file is due again.
    store
        .replace_to(Target::Allow, IocType::Sha256, Vec::new())
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "all", IocType::Sha256),
        format!("{}\n{}\n", "a".repeat(64), "b".repeat(64))
    );
}

#[test]
fn lookup_answers_as_a_firewall_matches() {
    use crate::lookup::lookup;
    let mut fx = Fixture::new();
    fx.suppress_reserved = true;
    let fw = View {
        types: vec![IocType::Ipv4, IocType::Domain],
        aggregate: true,
        ..View::default()
    };
    let (store, views) = fx.open(&[("fw", fw)]);
    store
        .append(
            IocType::Ipv4,
            lines(&["8.0.0.0/16", "8.0.3.0/24", "10.9.0.0/16"]),
        )
        .unwrap();
    import(
        &store,
        Bucket::Chaud,
        IocType::Ipv4,
        &["8.0.0.0/8"],
        2 * DAY,
    );
    store
        .append(
            IocType::Domain,
            lines(&["*.example.com", "*.example.net", "plain.example.org"]),
        )
        .unwrap();
    allow(&store, IocType::Ipv4, &["8.0.3.0/24"]);
    allow(&store, IocType::Domain, &["ok.example.net"]);
    views.rebuild(&store, false).unwrap();
    let get = |v: &str| lookup(&store, &views, v.as_bytes()).map(|a| a.body);

    // Not stored, covered by two stored networks: most specific first, with their buckets.
    let a = get("8.0.1.2").unwrap();
    assert_eq!(a["bucket"], serde_json::Value::Null);
    let covered: Vec<(&str, &str)> = a["covered_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["value"].as_str().unwrap(), c["bucket"].as_str().unwrap()))
        .collect();
    assert_eq!(covered, [("8.0.0.0/16", "live"), ("8.0.0.0/8", "chaud")]);
    assert_eq!(a["allowed_by"], serde_json::Value::Null);
    assert_eq!(a["views"], serde_json::json!(["all", "fw"]));
    // Stored, but allowed: in no view, and lookup says by what.
    let a = get("8.0.3.0/24").unwrap();
    assert_eq!(a["bucket"], "live");
    assert_eq!(a["allowed_by"]["entry"], "8.0.3.0/24");
    assert_eq!(a["allowed_by"]["file"], "allow/ipv4.txt");
    assert_eq!(a["views"], serde_json::json!([]));
    let a = get("8.0.3.9").unwrap();
    assert_eq!(a["allowed_by"]["entry"], "8.0.3.0/24");
    // Reserved.
    let a = get("10.9.1.1").unwrap();
    assert_eq!(a["allowed_by"]["list"], "reserved");
    assert_eq!(a["allowed_by"]["entry"], "10.0.0.0/8");
    // Neither stored nor covered: absent.
    assert!(get("9.9.9.9").is_none());
    assert!(get("www.example.org").is_none());
    // A name under a stored wildcard; a wildcard with an allowed name under it.
    let a = get("a.b.example.com").unwrap();
    assert_eq!(a["covered_by"][0]["value"], "*.example.com");
    assert_eq!(a["views"], serde_json::json!(["all", "fw"]));
    let a = get("*.example.net").unwrap();
    assert_eq!(a["allowed_by"]["entry"], "ok.example.net");
    assert_eq!(a["allowed_by"]["conflict"], true);
    assert_eq!(a["views"], serde_json::json!([]));
    let a = get("ok.example.net").unwrap();
    assert_eq!(a["allowed_by"]["entry"], "ok.example.net");
    assert_eq!(
        get("plain.example.org").unwrap()["views"],
        serde_json::json!(["all", "fw"])
    );
}
