//! A clean stop spares the next start its rebuilds (`fresh`); anything that may have
//! changed a file's bytes since still rebuilds it.

use super::*;

/// The clock time of a file's last build, as stats.json shows it.
fn built_at(views: &Views, view: &str, ty: IocType) -> Option<String> {
    views.stats()[view][ty.name()]["last_build"]["at"]
        .as_str()
        .map(String::from)
}

/// Stop as the daemon does: final commit, then record which files are current.
fn stop_cleanly(store: Arc<Store>, views: Views) -> usize {
    store.shutdown().unwrap();
    views.save_fresh(&store).unwrap()
}

fn recent() -> View {
    View {
        types: vec![IocType::Ipv4],
        max_age: Some(Duration::from_secs(DAY)),
        ..View::default()
    }
}

/// Every file of the fixture's views: the nine of `all` and `recent`'s one.
const FILES: usize = 10;

/// Open, fill, build and stop cleanly; the clock then moves on by an hour.
fn built_and_stopped(fx: &Fixture) {
    let (store, views) = fx.open(&[("recent", recent())]);
    store
        .append(IocType::Ipv4, lines(&["192.0.2.1", "198.51.100.0/24"]))
        .unwrap();
    import(
        &store,
        Bucket::Chaud,
        IocType::Ipv4,
        &["203.0.113.9"],
        2 * DAY,
    );
    store
        .append(IocType::Domain, lines(&["evil.example"]))
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(stop_cleanly(store, views), FILES);
    fx.clock.advance(3600);
}

#[test]
fn a_clean_stop_spares_the_next_start_every_rebuild() {
    let fx = Fixture::new();
    built_and_stopped(&fx);
    let (store, views) = fx.open(&[("recent", recent())]);
    assert_eq!(views.adopt_fresh(&store).unwrap(), FILES);
    assert!(
        !fx.dir.path().join("views/.fresh").exists(),
        "taken at start: a crash later must not find it"
    );
    views.rebuild(&store, false).unwrap();
    let first = Some(crate::clock::rfc3339(T0));
    for (view, ty) in [
        ("all", IocType::Ipv4),
        ("all", IocType::Md5),
        ("recent", IocType::Ipv4),
    ] {
        assert_eq!(
            built_at(&views, view, ty),
            first,
            "{view}/{ty:?} not rebuilt"
        );
    }
    assert_eq!(
        text(&views, "all", IocType::Ipv4),
        "192.0.2.1\n198.51.100.0/24\n203.0.113.9\n"
    );
    // The next change is built as usual.
    store.append(IocType::Ipv4, lines(&["192.0.2.2"])).unwrap();
    views.rebuild(&store, false).unwrap();
    let later = Some(crate::clock::rfc3339(T0 + 3600));
    assert_eq!(built_at(&views, "all", IocType::Ipv4), later);
    assert_eq!(built_at(&views, "all", IocType::Domain), first);
    assert_eq!(
        text(&views, "recent", IocType::Ipv4),
        "192.0.2.1\n192.0.2.2\n198.51.100.0/24\n"
    );
}

#[test]
fn indicators_listed_by_sources_spare_rebuilds_too() {
    let fx = Fixture::new();
    {
        let (store, views) = fx.open(&[]);
        let feed = store.declare_source("feed").unwrap();
        store
            .append_to(
                crate::store::model::Target::Source(feed),
                IocType::Ipv4,
                lines(&["192.0.2.7"]),
            )
            .unwrap();
        views.rebuild(&store, false).unwrap();
        assert_eq!(stop_cleanly(store, views), 9);
    }
    // Twice: restoring what the sources list must not count as a change to commit.
    for _ in 0..2 {
        let (store, views) = fx.open(&[]);
        assert_eq!(views.adopt_fresh(&store).unwrap(), 9);
        views.rebuild(&store, false).unwrap();
        assert_eq!(text(&views, "all", IocType::Ipv4), "192.0.2.7\n");
        assert_eq!(stop_cleanly(store, views), 9);
    }
}

#[test]
fn a_start_after_a_crash_rebuilds_everything() {
    let fx = Fixture::new();
    built_and_stopped(&fx);
    {
        // Taken, then the daemon dies: no record for the next start.
        let (store, views) = fx.open(&[("recent", recent())]);
        assert_eq!(views.adopt_fresh(&store).unwrap(), FILES);
    }
    let (store, views) = fx.open(&[("recent", recent())]);
    assert_eq!(views.adopt_fresh(&store).unwrap(), 0);
    views.rebuild(&store, false).unwrap();
    let now = Some(crate::clock::rfc3339(T0 + 3600));
    assert_eq!(built_at(&views, "all", IocType::Domain), now);
}

/// After a clean stop, append `value` with the store alone (no views): committed, as
/// `iocfs import` does, or left in the log, as by a daemon killed before its next commit.
/// Then start again: nothing is taken as current, and the views are built.
fn changed_while_stopped(fx: &Fixture, value: &str, commit: bool) -> Views {
    built_and_stopped(fx);
    {
        let (store, _) = fx.open(&[("recent", recent())]);
        store.append(IocType::Ipv4, lines(&[value])).unwrap();
        if commit {
            store.shutdown().unwrap();
        }
    }
    let (store, views) = fx.open(&[("recent", recent())]);
    assert_eq!(store.recovery.replayed > 0, !commit);
    assert_eq!(views.adopt_fresh(&store).unwrap(), 0);
    views.rebuild(&store, false).unwrap();
    views
}

#[test]
fn a_commit_since_the_stop_rebuilds_everything() {
    let views = changed_while_stopped(&Fixture::new(), "192.0.2.3", true);
    assert!(text(&views, "all", IocType::Ipv4).contains("192.0.2.3\n"));
}

#[test]
fn writes_replayed_from_the_log_rebuild_everything() {
    let views = changed_while_stopped(&Fixture::new(), "192.0.2.4", false);
    assert!(text(&views, "recent", IocType::Ipv4).contains("192.0.2.4\n"));
}

#[test]
fn a_changed_config_rebuilds_everything() {
    let fx = Fixture::new();
    built_and_stopped(&fx);
    let capped = View {
        max_entries: Some(1),
        ..recent()
    };
    let (store, views) = fx.open(&[("recent", capped)]);
    assert_eq!(views.adopt_fresh(&store).unwrap(), 0);
    views.rebuild(&store, false).unwrap();
    assert_eq!(text(&views, "recent", IocType::Ipv4).lines().count(), 1);
}

#[test]
fn files_changed_on_disk_or_aged_out_are_rebuilt() {
    let fx = Fixture::new();
    let older = View {
        types: vec![IocType::Ipv4],
        buckets: vec![Bucket::Chaud],
        max_age: Some(Duration::from_secs(2 * DAY + 1800)),
        ..View::default()
    };
    let (store, views) = fx.open(&[("recent", recent()), ("older", older.clone())]);
    import(
        &store,
        Bucket::Chaud,
        IocType::Ipv4,
        &["203.0.113.9"],
        2 * DAY,
    );
    store.append(IocType::Ipv4, lines(&["192.0.2.1"])).unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(text(&views, "older", IocType::Ipv4), "203.0.113.9\n");
    assert_eq!(stop_cleanly(store, views), FILES + 1);
    // An hour on, max_age has dropped 203.0.113.9 from `older`; and someone put another
    // (well-formed) version of a file in place.
    fx.clock.advance(3600);
    let planted = b"d41d8cd98f00b204e9800998ecf8427e\n";
    let dir = fx.dir.path().join("views/all");
    std::fs::write(dir.join("md5.txt"), planted).unwrap();
    let meta = json!({"ino": FIRST_VIEW_INO + 99, "mtime": T0, "len": planted.len(),
        "entries": 1, "hash": disk::hex(disk::hash(planted))});
    std::fs::write(dir.join(".md5.txt.meta"), meta.to_string()).unwrap();
    let (store, views) = fx.open(&[("recent", recent()), ("older", older)]);
    assert_eq!(
        views.file("all", IocType::Md5).unwrap().ino,
        FIRST_VIEW_INO + 99
    );
    assert_eq!(views.adopt_fresh(&store).unwrap(), FILES);
    views.rebuild(&store, false).unwrap();
    assert_eq!(text(&views, "older", IocType::Ipv4), "");
    assert_eq!(text(&views, "all", IocType::Md5), "");
    let now = Some(crate::clock::rfc3339(T0 + 3600));
    assert_eq!(built_at(&views, "all", IocType::Md5), now);
    assert_eq!(built_at(&views, "older", IocType::Ipv4), now);
    let first = Some(crate::clock::rfc3339(T0));
    assert_eq!(built_at(&views, "recent", IocType::Ipv4), first);
}

#[test]
fn a_file_behind_its_buckets_at_the_stop_is_rebuilt() {
    let fx = Fixture::new();
    let (store, views) = fx.open(&[("recent", recent())]);
    store.append(IocType::Ipv4, lines(&["192.0.2.1"])).unwrap();
    views.rebuild(&store, false).unwrap();
    // Written after the last build (`refresh` held the next one back): committed, not built.
    store.append(IocType::Ipv4, lines(&["192.0.2.5"])).unwrap();
    assert_eq!(stop_cleanly(store, views), FILES - 2);
    let (store, views) = fx.open(&[("recent", recent())]);
    assert_eq!(views.adopt_fresh(&store).unwrap(), FILES - 2);
    views.rebuild(&store, false).unwrap();
    for view in ["all", "recent"] {
        assert_eq!(text(&views, view, IocType::Ipv4), "192.0.2.1\n192.0.2.5\n");
    }
}

#[test]
fn aging_passes_that_moved_nothing_since_the_last_commit_do_not_count() {
    let fx = Fixture::new();
    built_and_stopped(&fx);
    {
        let (store, views) = fx.open(&[("recent", recent())]);
        assert_eq!(views.adopt_fresh(&store).unwrap(), FILES);
        // Journaled, nothing to move: no partition changes, so no commit covers them.
        store.age().unwrap();
        store.age().unwrap();
        views.rebuild(&store, false).unwrap();
        assert_eq!(stop_cleanly(store, views), FILES);
    }
    let (store, views) = fx.open(&[("recent", recent())]);
    assert!(store.recovery.replayed >= 2, "{}", store.recovery.replayed);
    assert_eq!(views.adopt_fresh(&store).unwrap(), FILES);
    views.rebuild(&store, false).unwrap();
    let first = Some(crate::clock::rfc3339(T0));
    assert_eq!(built_at(&views, "all", IocType::Domain), first);
}
