//! Views by source: `sources = [...]` and `min_sources` (consensus).

use super::*;
use crate::store::model::Target;

fn by_source(sources: &[&str], min_sources: u32) -> View {
    View {
        types: vec![IocType::Domain],
        sources: sources.iter().map(|s| s.to_string()).collect(),
        min_sources,
        ..View::default()
    }
}

#[test]
fn views_select_by_source_and_by_consensus_and_follow_withdrawals() {
    let fx = Fixture::new();
    let (store, views) = fx.open(&[
        ("a_only", by_source(&["feed_a"], 1)),
        ("local_or_b", by_source(&["local", "feed_b"], 1)),
        ("two", by_source(&[], 2)),
        ("undeclared", by_source(&["nobody"], 1)),
    ]);
    let a = store.declare_source("feed_a").unwrap();
    let b = store.declare_source("feed_b").unwrap();
    store
        .append(IocType::Domain, lines(&["mine.example", "all.example"]))
        .unwrap();
    store
        .append_to(
            Target::Source(a),
            IocType::Domain,
            lines(&["a.example", "ab.example", "all.example"]),
        )
        .unwrap();
    store
        .append_to(
            Target::Source(b),
            IocType::Domain,
            lines(&["ab.example", "all.example"]),
        )
        .unwrap();
    views.rebuild(&store, true).unwrap();
    assert_eq!(
        text(&views, "a_only", IocType::Domain),
        "a.example\nab.example\nall.example\n"
    );
    assert_eq!(
        text(&views, "local_or_b", IocType::Domain),
        "ab.example\nall.example\nmine.example\n"
    );
    assert_eq!(
        text(&views, "two", IocType::Domain),
        "ab.example\nall.example\n"
    );
    assert_eq!(text(&views, "undeclared", IocType::Domain), "");
    assert_eq!(
        text(&views, "all", IocType::Domain),
        "a.example\nab.example\nall.example\nmine.example\n"
    );

    // feed_b withdraws ab.example: consensus drops it, without a change to any bucket
    // partition's content for all.example (a provenance change alone rebuilds).
    store
        .replace_to(Target::Source(b), IocType::Domain, lines(&["all.example"]))
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(text(&views, "two", IocType::Domain), "all.example\n");
    assert_eq!(
        text(&views, "local_or_b", IocType::Domain),
        "all.example\nmine.example\n"
    );
    assert_eq!(
        text(&views, "a_only", IocType::Domain),
        "a.example\nab.example\nall.example\n"
    );
    // A sighting by local of a feed's indicator counts for consensus too.
    store
        .append(IocType::Domain, lines(&["a.example"]))
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "two", IocType::Domain),
        "a.example\nall.example\n"
    );
}
