//! The shrink guard (`max_shrink`, see `publish`): which rebuilds it holds.

use super::*;

#[test]
fn the_shrink_guard_holds_until_released_and_placeholders_fill_empty_files() {
    let fx = Fixture::new();
    let guarded = View {
        types: vec![IocType::Domain],
        max_shrink: Some(Fraction::from_f64(0.5)),
        placeholder: "# empty".into(),
        ..View::default()
    };
    let (store, views) = fx.open(&[("g", guarded)]);
    views.rebuild(&store, false).unwrap();
    assert_eq!(text(&views, "g", IocType::Domain), "# empty\n");
    let all: Vec<String> = (0..10).map(|i| format!("d{i}.example")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    store.replace(IocType::Domain, lines(&all)).unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(views.file("g", IocType::Domain).unwrap().entries, 10);
    // Removing 4 of 10 is within the guard.
    store.replace(IocType::Domain, lines(&all[..6])).unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(views.file("g", IocType::Domain).unwrap().entries, 6);
    // Removing 5 of 6 is not: the last version stays, health says so.
    let served = views.file("g", IocType::Domain).unwrap();
    store.replace(IocType::Domain, lines(&all[..1])).unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(views.file("g", IocType::Domain).unwrap().ino, served.ino);
    let problems: Vec<String> = views.problems().iter().map(Problem::line).collect();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].starts_with("view g/domain: held"),
        "{problems:?}"
    );
    assert!(problems[0].contains("remove 5 of 6"), "{problems:?}");
    assert_eq!(views.stats()["g"]["domain"]["held"], true);
    // Nothing changes until released; then the held build is published.
    views.rebuild(&store, false).unwrap();
    assert_eq!(views.file("g", IocType::Domain).unwrap().ino, served.ino);
    assert_eq!(views.release(&store, "g").unwrap(), 1);
    assert_eq!(text(&views, "g", IocType::Domain), "d0.example\n");
    assert!(views.problems().is_empty());
    assert!(views.release(&store, "nope").is_err());
}

#[test]
fn the_shrink_guard_holds_only_a_file_that_shrinks() {
    let fx = Fixture::new();
    let guard = Some(Fraction::from_f64(0.5));
    let capped = View {
        types: vec![IocType::Domain],
        max_entries: Some(4),
        max_shrink: guard,
        ..View::default()
    };
    let merged = View {
        types: vec![IocType::Ipv4],
        aggregate: true,
        max_shrink: guard,
        ..View::default()
    };
    let (store, views) = fx.open(&[("capped", capped), ("merged", merged)]);
    let served = |name, ty| views.file(name, ty).unwrap().entries;
    store
        .replace(
            IocType::Domain,
            lines(&["a.example", "b.example", "c.example", "d.example"]),
        )
        .unwrap();
    store
        .replace(
            IocType::Ipv4,
            lines(&["10.1.0.0/26", "10.1.0.128/26", "10.2.0.0/26", "10.3.0.1"]),
        )
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(served("merged", IocType::Ipv4), 4);
    // Four newer domains turn the capped list over: all four old ones go, none is lost.
    fx.clock.advance(1);
    store
        .append(
            IocType::Domain,
            lines(&["e.example", "f.example", "g.example", "h.example"]),
        )
        .unwrap();
    // New addresses merge the networks into fewer entries covering more.
    store
        .append(
            IocType::Ipv4,
            lines(&[
                "10.1.0.64/26",
                "10.1.0.192/26",
                "10.2.0.64/26",
                "10.2.0.128/25",
                "10.3.0.0/24",
            ]),
        )
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert!(views.problems().is_empty(), "{:?}", views.problems());
    assert_eq!(
        text(&views, "capped", IocType::Domain),
        "e.example\nf.example\ng.example\nh.example\n"
    );
    assert_eq!(
        text(&views, "merged", IocType::Ipv4),
        "10.1.0.0/24\n10.2.0.0/24\n10.3.0.0/24\n"
    );
    // Addresses: what counts is what the file covers. Three /24s becoming five single
    // addresses is more entries, and almost everything gone: held.
    store
        .replace(
            IocType::Ipv4,
            lines(&["10.9.0.1", "10.9.0.3", "10.9.0.5", "10.9.0.7", "10.9.0.9"]),
        )
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(served("merged", IocType::Ipv4), 3, "held");
    // A broken feed: held. Once the feed is back the list grows again: published.
    store
        .replace(IocType::Domain, lines(&["z.example"]))
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(served("capped", IocType::Domain), 4, "held");
    assert_eq!(views.release(&store, "capped").unwrap(), 1);
    assert_eq!(served("capped", IocType::Domain), 1);
    store
        .replace(
            IocType::Domain,
            lines(&["e.example", "f.example", "g.example"]),
        )
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(served("capped", IocType::Domain), 3);
    let problems: Vec<String> = views.problems().iter().map(Problem::line).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("view merged/ipv4: held"),
        "{problems:?}"
    );
}

#[test]
fn a_capped_list_turning_over_to_single_addresses_is_not_held() {
    let fx = Fixture::new();
    let fw = View {
        types: vec![IocType::Ipv4],
        max_entries: Some(3),
        aggregate: true,
        max_shrink: Some(Fraction::from_f64(0.5)),
        ..View::default()
    };
    let (store, views) = fx.open(&[("fw", fw)]);
    store
        .append(
            IocType::Ipv4,
            lines(&["13.0.0.0/24", "13.1.0.0/24", "13.2.0.0/24"]),
        )
        .unwrap();
    views.rebuild(&store, false).unwrap();
    // Three newer addresses: the cap keeps them and drops the networks, which covers far
    // fewer addresses, but the list is as full as the firewall takes it.
    fx.clock.advance(1);
    store
        .append(IocType::Ipv4, lines(&["14.0.0.0", "14.0.0.1", "14.0.0.2"]))
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert!(views.problems().is_empty(), "{:?}", views.problems());
    assert_eq!(text(&views, "fw", IocType::Ipv4), "14.0.0.0/31\n14.0.0.2\n");
    // A feed that broke under the cap still is held.
    store.replace(IocType::Ipv4, lines(&["15.0.0.1"])).unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(text(&views, "fw", IocType::Ipv4), "14.0.0.0/31\n14.0.0.2\n");
    assert_eq!(views.problems().len(), 1, "{:?}", views.problems());
}

#[test]
fn a_broken_feed_of_networks_under_a_cap_older_addresses_still_fill_is_held() {
    let fx = Fixture::new();
    let guard = Some(Fraction::from_f64(0.5));
    let fw = View {
        types: vec![IocType::Ipv4, IocType::Domain],
        max_entries: Some(3),
        aggregate: true,
        max_shrink: guard,
        ..View::default()
    };
    let (store, views) = fx.open(&[("fw", fw)]);
    let singles = ["12.0.0.1", "12.0.0.3", "12.0.0.5", "12.0.0.7"];
    let old_names = ["a.example", "b.example", "c.example", "d.example"];
    store.append(IocType::Ipv4, lines(&singles)).unwrap();
    store.append(IocType::Domain, lines(&old_names)).unwrap();
    fx.clock.advance(1);
    store
        .append(
            IocType::Ipv4,
            lines(&["13.0.0.0/16", "13.1.0.0/16", "13.2.0.0/16"]),
        )
        .unwrap();
    store
        .append(
            IocType::Domain,
            lines(&["x.example", "y.example", "z.example"]),
        )
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "fw", IocType::Ipv4),
        "13.0.0.0/15\n13.2.0.0/16\n"
    );
    assert_eq!(
        text(&views, "fw", IocType::Domain),
        "x.example\ny.example\nz.example\n"
    );
    // The feed of the newer networks breaks: the older addresses still fill the cap, but
    // what the firewall enforced is gone from the selection: held.
    store.replace(IocType::Ipv4, lines(&singles)).unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "fw", IocType::Ipv4),
        "13.0.0.0/15\n13.2.0.0/16\n"
    );
    assert_eq!(views.problems().len(), 1, "{:?}", views.problems());
    // A list of names the cap keeps full is never held: a feed rotating its list to new
    // names looks the same as one withdrawing them while older names fill the cap.
    store.replace(IocType::Domain, lines(&old_names)).unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "fw", IocType::Domain),
        "a.example\nb.example\nc.example\n"
    );
    assert_eq!(views.problems().len(), 1, "{:?}", views.problems());
}
