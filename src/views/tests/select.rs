//! What a view selects: buckets, ages and caps, and a large live set parsed in pieces.

use super::*;

#[test]
fn a_large_live_set_is_selected_in_pieces_with_each_line_s_own_times() {
    // Over a MiB of lines is parsed on every core; runs of seven lines alternate between
    // too old and recent, so times taken out of step with lines would change the result.
    let fx = Fixture::new();
    let recent = View {
        types: vec![IocType::Ipv4, IocType::Domain],
        max_age: Some(Duration::from_secs(DAY)),
        ..View::default()
    };
    let (store, views) = fx.open(&[("recent", recent)]);
    let n = 120_000u32;
    let old = (T0 - 2 * DAY) as u32;
    let is_recent = |i: u32| (i / 7) % 2 == 1;
    let times: Vec<(u32, u32)> = (0..n)
        .map(|i| {
            if is_recent(i) {
                (T0 as u32, T0 as u32)
            } else {
                (old, old)
            }
        })
        .collect();
    let addrs: Vec<String> = (0..n)
        .map(|i| format!("11.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("n{i:06}.example")).collect();
    for (ty, values) in [(IocType::Ipv4, &addrs), (IocType::Domain, &names)] {
        let text: Vec<&str> = values.iter().map(String::as_str).collect();
        assert!(lines(&text).len() > 1 << 20);
        store
            .submit(Op::Import {
                bucket: Bucket::Live,
                ty,
                values: lines(&text),
                times: times.clone(),
                source: crate::store::model::LOCAL,
            })
            .unwrap();
    }
    views.rebuild(&store, false).unwrap();
    let want = |values: &[String]| -> String {
        let mut kept: Vec<&str> = (0..n)
            .filter(|&i| is_recent(i))
            .map(|i| values[i as usize].as_str())
            .collect();
        kept.sort_unstable();
        kept.iter().map(|v| format!("{v}\n")).collect()
    };
    // Addresses are served in numeric order: compare them as sets of lines.
    let sorted = |t: String| -> Vec<String> {
        let mut v: Vec<String> = t.lines().map(str::to_string).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(
        sorted(text(&views, "recent", IocType::Ipv4)),
        sorted(want(&addrs))
    );
    assert_eq!(text(&views, "recent", IocType::Domain), want(&names));
}

#[test]
fn selection_by_bucket_age_and_cap_newest_first() {
    let fx = Fixture::new();
    let fw = View {
        types: vec![IocType::Domain],
        buckets: vec![Bucket::Live, Bucket::Chaud],
        max_age: Some(Duration::from_secs(3 * DAY)),
        max_entries: Some(3),
        ..View::default()
    };
    let (store, views) = fx.open(&[("fw", fw)]);
    store
        .append(IocType::Domain, lines(&["live-new.example"]))
        .unwrap();
    import(
        &store,
        Bucket::Chaud,
        IocType::Domain,
        &["c1.example"],
        DAY + 10,
    );
    import(
        &store,
        Bucket::Chaud,
        IocType::Domain,
        &["c2.example"],
        2 * DAY,
    );
    import(
        &store,
        Bucket::Chaud,
        IocType::Domain,
        &["c3.example"],
        2 * DAY + 5,
    );
    import(
        &store,
        Bucket::Chaud,
        IocType::Domain,
        &["too-old.example"],
        4 * DAY,
    );
    import(
        &store,
        Bucket::Tiede,
        IocType::Domain,
        &["tiede.example"],
        10 * DAY,
    );
    views.rebuild(&store, false).unwrap();
    // c3 is the oldest of the four within max_age: the cap of 3 leaves it out.
    assert_eq!(
        text(&views, "fw", IocType::Domain),
        "c1.example\nc2.example\nlive-new.example\n"
    );
    assert!(
        views.file("fw", IocType::Ipv4).is_none(),
        "fw serves domains only"
    );
    let stats = views.stats();
    assert_eq!(stats["fw"]["domain"]["last_build"]["selected"], 4);
    assert_eq!(stats["fw"]["domain"]["last_build"]["capped"], 1);
    // Time passing max_age drops c1 at the next build, with no write at all.
    fx.clock.advance(2 * DAY);
    views.rebuild(&store, false).unwrap();
    assert_eq!(text(&views, "fw", IocType::Domain), "live-new.example\n");
}

/// The cap on addresses keeps the newest, ties by value (numerically), before aggregating.
#[test]
fn a_cap_on_addresses_keeps_the_newest_then_the_lowest() {
    let fx = Fixture::new();
    let plain = View {
        types: vec![IocType::Ipv4, IocType::Ipv6],
        max_entries: Some(3),
        ..View::default()
    };
    let agg = View {
        aggregate: true,
        ..plain.clone()
    };
    let (store, views) = fx.open(&[("plain", plain), ("agg", agg)]);
    let (b, v4, v6) = (Bucket::Chaud, IocType::Ipv4, IocType::Ipv6);
    import(&store, b, v4, &["10.0.0.9", "10.0.0.1"], DAY);
    import(
        &store,
        b,
        v4,
        &["10.0.0.3", "10.0.0.2", "9.0.0.0/8"],
        2 * DAY,
    );
    import(&store, b, v4, &["10.0.0.0/24"], 3 * DAY);
    import(&store, b, v6, &["2001:db8::2", "2001:db8::3"], DAY);
    import(&store, b, v6, &["2001:db8::/120", "2001:db8::1"], 2 * DAY);
    views.rebuild(&store, false).unwrap();
    // Newest two, then the lowest of the three seen two days ago (9/8 sorts first).
    assert_eq!(text(&views, "plain", v4), "9.0.0.0/8\n10.0.0.1\n10.0.0.9\n");
    assert_eq!(text(&views, "agg", v4), "9.0.0.0/8\n10.0.0.1\n10.0.0.9\n");
    assert_eq!(
        text(&views, "plain", v6),
        "2001:db8::/120\n2001:db8::2\n2001:db8::3\n"
    );
    assert_eq!(text(&views, "agg", v6), "2001:db8::/120\n");
    assert_eq!(views.stats()["plain"]["ipv4"]["last_build"]["capped"], 3);
    assert_eq!(views.stats()["agg"]["ipv6"]["last_build"]["capped"], 1);
}
