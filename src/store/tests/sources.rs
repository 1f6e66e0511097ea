//! Sources in the engine: provenance through appends, replaces (withdrawals), aging,
//! commits, checkpoints and restarts.

use super::*;
use crate::store::staged::StagedReplace;

fn listed(store: &Store, id: u8, ty: IocType) -> String {
    String::from_utf8(store.source_version(id, ty).read_all().unwrap()).unwrap()
}

fn sources(store: &Store, ty: IocType, v: &str) -> Option<Vec<String>> {
    store.sources_of(ty, v.as_bytes())
}

fn names(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn appends_attribute_replaces_withdraw_and_an_unlisted_indicator_leaves_every_bucket() {
    let fx = Fixture::new();
    let store = fx.open();
    let a = store.declare_source("feed_a").unwrap();
    let b = store.declare_source("feed_b").unwrap();
    assert!(matches!(
        store.declare_source("feed_a"),
        Err(crate::error::Error::Exists(_))
    ));
    assert!(store.declare_source("local").is_err());
    assert!(store.declare_source("Bad/Name").is_err());
    store.append(IocType::Ipv4, ipv4(&["5.0.0.1"])).unwrap();
    let t = Target::Source(a);
    store
        .append_to(t, IocType::Ipv4, ipv4(&["5.0.0.2", "5.0.0.1", "5.0.0.3"]))
        .unwrap();
    store
        .append_to(Target::Source(b), IocType::Ipv4, ipv4(&["5.0.0.3"]))
        .unwrap();
    assert_eq!(
        sources(&store, IocType::Ipv4, "5.0.0.1"),
        names(&["local", "feed_a"])
    );
    assert_eq!(
        sources(&store, IocType::Ipv4, "5.0.0.2"),
        names(&["feed_a"])
    );
    assert_eq!(
        sources(&store, IocType::Ipv4, "5.0.0.3"),
        names(&["feed_a", "feed_b"])
    );
    assert_eq!(
        listed(&store, a, IocType::Ipv4),
        "5.0.0.1\n5.0.0.2\n5.0.0.3\n"
    );
    assert_eq!(listed(&store, b, IocType::Ipv4), "5.0.0.3\n");

    // feed_a's snapshot no longer lists .1 (local keeps it), .2 (gone: no one else) nor .3
    // (feed_b keeps it), and adds .4.
    store
        .replace_to(t, IocType::Ipv4, ipv4(&["5.0.0.4"]))
        .unwrap();
    assert_eq!(sources(&store, IocType::Ipv4, "5.0.0.1"), names(&["local"]));
    assert_eq!(sources(&store, IocType::Ipv4, "5.0.0.2"), None);
    assert_eq!(
        sources(&store, IocType::Ipv4, "5.0.0.3"),
        names(&["feed_b"])
    );
    assert_eq!(
        sources(&store, IocType::Ipv4, "5.0.0.4"),
        names(&["feed_a"])
    );
    assert_eq!(
        served(&store, Bucket::Live, IocType::Ipv4),
        "5.0.0.1\n5.0.0.3\n5.0.0.4\n"
    );
    assert!(matches!(
        store.remove_source("feed_b"),
        Err(crate::error::Error::NotEmpty(_))
    ));
    let want = everything(&store);
    drop(store);

    // Replayed from the log, then committed and loaded from the files.
    for round in 0..2 {
        let store = fx.open();
        assert_eq!(everything(&store), want, "round {round}");
        assert_eq!(sources(&store, IocType::Ipv4, "5.0.0.1"), names(&["local"]));
        assert_eq!(
            sources(&store, IocType::Ipv4, "5.0.0.3"),
            names(&["feed_b"])
        );
        assert_eq!(
            sources(&store, IocType::Ipv4, "5.0.0.4"),
            names(&["feed_a"])
        );
        assert_eq!(listed(&store, a, IocType::Ipv4), "5.0.0.4\n");
        assert_eq!(store.source_names().len(), 2);
        store.commit().unwrap();
    }
    let store = fx.open();
    assert_eq!(store.recovery.replayed, 0, "everything came from the files");
    store
        .replace_to(Target::Source(b), IocType::Ipv4, Vec::new())
        .unwrap();
    assert_eq!(sources(&store, IocType::Ipv4, "5.0.0.3"), None);
    store.remove_source("feed_b").unwrap();
    assert!(store.declared_source("feed_b").is_err());
    store.checkpoint().unwrap();
    drop(store);
    let store = fx.open();
    assert_eq!(store.source_names(), vec![(a, "feed_a".to_string())]);
    assert_eq!(
        sources(&store, IocType::Ipv4, "5.0.0.4"),
        names(&["feed_a"])
    );
}

#[test]
fn provenance_survives_aging_into_every_tier_and_checkpoints() {
    let fx = Fixture::new();
    let store = fx.open();
    let a = store.declare_source("feed_a").unwrap();
    let values: Vec<String> = (0..300)
        .map(|i| format!("5.1.{}.{}", i / 200, i % 200))
        .collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    store
        .append_to(Target::Source(a), IocType::Ipv4, ipv4(&refs))
        .unwrap();
    store.append(IocType::Ipv4, ipv4(&refs[..10])).unwrap();
    let mut store = store;
    for (at, bucket) in [
        (2 * DAY, Bucket::Chaud),
        (10 * DAY, Bucket::Tiede),
        (40 * DAY, Bucket::Froid),
    ] {
        fx.clock.set(T0 + at);
        store.age().unwrap();
        assert_eq!(
            everything(&store).get(&(IocType::Ipv4, refs[50].into())),
            Some(&bucket)
        );
        assert_eq!(
            sources(&store, IocType::Ipv4, refs[5]),
            names(&["local", "feed_a"])
        );
        assert_eq!(sources(&store, IocType::Ipv4, refs[50]), names(&["feed_a"]));
        store.checkpoint().unwrap();
        drop(store);
        store = fx.open();
        assert!(store.recovery.from_checkpoint > 0 || bucket == Bucket::Live);
        assert_eq!(
            sources(&store, IocType::Ipv4, refs[5]),
            names(&["local", "feed_a"])
        );
        assert_eq!(sources(&store, IocType::Ipv4, refs[50]), names(&["feed_a"]));
        assert_eq!(listed(&store, a, IocType::Ipv4).lines().count(), 300);
    }
    // A withdrawal reaches the froid copy.
    store
        .replace_to(Target::Source(a), IocType::Ipv4, ipv4(&refs[..5]))
        .unwrap();
    let all = everything(&store);
    assert_eq!(all.len(), 10, "the 5 local ones and the 5 still listed");
    assert_eq!(sources(&store, IocType::Ipv4, refs[7]), names(&["local"]));
}

#[test]
fn a_staged_replace_of_a_source_applies_at_its_end() {
    let fx = Fixture::new();
    let store = fx.open();
    store.set_record_limit(64 << 10);
    let a = store.declare_source("big").unwrap();
    store
        .append_to(
            Target::Source(a),
            IocType::Domain,
            b"old.example\n".to_vec(),
        )
        .unwrap();
    let mut staged = StagedReplace::new(Target::Source(a), IocType::Domain);
    let text: String = (0..8000).map(|i| format!("d{i}.example\n")).collect();
    staged.push(&store, text.as_bytes()).unwrap();
    assert!(
        staged.pending_len() < 64 << 10,
        "full pieces were journaled"
    );
    assert_eq!(listed(&store, a, IocType::Domain), "old.example\n");
    staged.finish(&store).unwrap();
    assert_eq!(listed(&store, a, IocType::Domain).lines().count(), 8000);
    assert_eq!(sources(&store, IocType::Domain, "old.example"), None);
    drop(store);
    let store = fx.open();
    assert_eq!(listed(&store, a, IocType::Domain).lines().count(), 8000);
}

#[test]
fn a_data_dir_without_provenance_files_is_all_local() {
    let fx = Fixture::new();
    let store = fx.open();
    store
        .append(IocType::Domain, b"a.example\n".to_vec())
        .unwrap();
    store.commit().unwrap();
    drop(store);
    assert!(!fx.dir.path().join("sources/domain.sources").exists());
    let store = fx.open();
    assert_eq!(
        sources(&store, IocType::Domain, "a.example"),
        names(&["local"])
    );
    let stats = store.source_stats();
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].name.as_str(), stats[0].listed), ("local", 1));
}

fn feed_problem(store: &Store) -> String {
    let p = store.problems();
    p.into_iter()
        .find(|p| p.starts_with("source feed"))
        .unwrap_or_default()
}

#[test]
fn health_reports_a_source_quiet_for_twice_its_expect_every_and_stats_count_it() {
    let fx = Fixture::new();
    let mut c = (*fx.config()).clone();
    for name in ["feed", "ghost"] {
        c.sources.defs.insert(
            name.into(),
            crate::config::sources::SourceConfig {
                expect_every: Some(std::time::Duration::from_secs(HOUR)),
            },
        );
    }
    let open = || Store::open(Arc::new(c.clone()), fx.clock.clone() as Arc<dyn Clock>).unwrap();
    let store = open();
    assert_eq!(store.problems().len(), 2, "neither is declared");
    let id = store.declare_source("feed").unwrap();
    assert_eq!(
        store.problems(),
        ["source ghost: configured but not declared (mkdir MOUNT/sources/ghost)"]
    );
    fx.clock.set(T0 + 2 * HOUR);
    assert_eq!(
        store.problems().len(),
        1,
        "twice expect_every is still fine"
    );
    fx.clock.set(T0 + 2 * HOUR + 1);
    assert_eq!(
        store.problems()[0],
        "source feed: no write since it was declared for 2h 1s (expected every 1h)"
    );
    store
        .append_to(
            Target::Source(id),
            IocType::Md5,
            vec![b'a'; 32].into_iter().chain([b'\n']).collect(),
        )
        .unwrap();
    assert_eq!(store.problems().len(), 1, "the write counts");
    let stats = store.source_stats();
    let feed = stats.iter().find(|s| s.name == "feed").unwrap();
    assert_eq!(
        (feed.listed, feed.last_append, feed.accepted),
        (1, T0 + 2 * HOUR + 1, 1)
    );
    store.commit().unwrap();
    drop(store);
    // The write time is durable: quiet again only 2h after it, across a restart.
    fx.clock.set(T0 + 4 * HOUR + 1);
    let store = open();
    assert_eq!(store.problems().len(), 1);
    fx.clock.set(T0 + 4 * HOUR + 2);
    assert_eq!(
        feed_problem(&store),
        "source feed: no write for 2h 1s (expected every 1h)"
    );
}

#[test]
fn writes_to_live_are_local_s_writes() {
    let fx = Fixture::new();
    let store = fx.open();
    let local = |store: &Store| {
        let s = store.source_stats();
        let l = s.iter().find(|s| s.name == "local").cloned().unwrap();
        (l.accepted, l.last_append, l.last_replace)
    };
    assert_eq!(local(&store), (0, 0, 0));
    store
        .append(IocType::Ipv4, ipv4(&["5.0.0.1", "5.0.0.2"]))
        .unwrap();
    let t0 = fx.clock.now();
    assert_eq!(local(&store), (2, t0, 0));
    fx.clock.advance(60);
    store.replace(IocType::Ipv4, ipv4(&["5.0.0.3"])).unwrap();
    assert_eq!(local(&store), (3, t0, t0 + 60));
    // A staged replace (journaled in pieces) counts too.
    fx.clock.advance(60);
    let mut staged = StagedReplace::new(Target::Live, IocType::Ipv4);
    staged.push(&store, &ipv4(&["5.0.0.4", "5.0.0.5"])).unwrap();
    staged.finish(&store).unwrap();
    assert_eq!(local(&store), (5, t0, t0 + 120));
    // The times outlive a clean stop (lines are counted since the start).
    store.shutdown().unwrap();
    drop(store);
    let store = fx.open();
    assert_eq!(local(&store), (0, t0, t0 + 120));
}

#[test]
fn a_source_list_is_dated_by_its_changes_and_kept_while_unchanged() {
    let fx = Fixture::new();
    let store = fx.open();
    let a = store.declare_source("a").unwrap();
    let b = store.declare_source("b").unwrap();
    store
        .append_to(
            Target::Source(a),
            IocType::Ipv4,
            ipv4(&["5.0.0.1", "5.0.0.2"]),
        )
        .unwrap();
    let first = store.source_version(a, IocType::Ipv4);
    assert_eq!(first.mtime(), T0, "dated by a's write");
    // Another feed writing the type: a's list is the same version.
    fx.clock.advance(HOUR);
    store
        .append_to(Target::Source(b), IocType::Ipv4, ipv4(&["6.0.0.1"]))
        .unwrap();
    assert_eq!(store.source_version(a, IocType::Ipv4).id, first.id);
    // A change a did not make (a replace of live/ withdrawing 5.0.0.2): dated by when it
    // was seen, not by a's old write.
    fx.clock.advance(HOUR);
    store.replace(IocType::Ipv4, ipv4(&["5.0.0.1"])).unwrap();
    let withdrawn = store.source_version(a, IocType::Ipv4);
    assert_eq!(listed(&store, a, IocType::Ipv4), "5.0.0.1\n");
    assert_eq!(withdrawn.mtime(), T0 + 2 * HOUR);
    // a's own write again: dated by it.
    fx.clock.advance(HOUR);
    store
        .append_to(Target::Source(a), IocType::Ipv4, ipv4(&["5.0.0.9"]))
        .unwrap();
    fx.clock.advance(HOUR);
    assert_eq!(
        store.source_version(a, IocType::Ipv4).mtime(),
        T0 + 3 * HOUR
    );
}

/// Two first builds of a source list racing a write make two versions: they must not share
/// the fixed id (one inode, two contents).
#[test]
fn first_builds_racing_a_write_never_share_an_id_with_other_bytes() {
    for _ in 0..5 {
        let fx = Fixture::new();
        let store = fx.open();
        let a = store.declare_source("a").unwrap();
        let many: Vec<String> = (0..100_000u32)
            .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        store
            .append_to(Target::Source(a), IocType::Ipv4, ipv4(&many))
            .unwrap();
        let (one, two) = std::thread::scope(|s| {
            let reader = s.spawn(|| store.source_version(a, IocType::Ipv4));
            store
                .append_to(Target::Source(a), IocType::Ipv4, ipv4(&["11.0.0.1"]))
                .unwrap();
            let two = store.source_version(a, IocType::Ipv4);
            (reader.join().unwrap(), two)
        });
        if one.id == two.id {
            let (a, b) = (one.read_all().unwrap(), two.read_all().unwrap());
            assert!(
                a == b,
                "id {} has {} and {} bytes",
                one.id,
                a.len(),
                b.len()
            );
        }
    }
}

/// The usual order on a mount: the list is read right after the source's write (a `cp`, a
/// feed script's check), then someone else withdraws part of it.
#[test]
fn a_withdrawal_after_a_read_in_the_write_second_is_dated_by_now() {
    let fx = Fixture::new();
    let store = fx.open();
    let a = store.declare_source("a").unwrap();
    store
        .append_to(
            Target::Source(a),
            IocType::Ipv4,
            ipv4(&["5.0.0.1", "5.0.0.2"]),
        )
        .unwrap();
    assert_eq!(store.source_version(a, IocType::Ipv4).mtime(), T0);
    fx.clock.advance(HOUR);
    store.replace(IocType::Ipv4, ipv4(&["5.0.0.1"])).unwrap();
    assert_eq!(store.source_version(a, IocType::Ipv4).mtime(), T0 + HOUR);
}
