//! View builds on a real store (no mount): selection, order, caps, aggregation, formats,
//! the shrink guard, laziness and stable versions.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::config::views::{Fraction, ViewFormat};
use crate::config::Config;
use crate::store::model::Bucket;
use crate::store::mutation::Op;

mod allow;
mod fresh;
mod select;
mod shrink;
mod sources;

const T0: u64 = 1_700_000_000;
const DAY: u64 = 86_400;

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    /// Off unless a test is about it: these tests list documentation and private ranges.
    suppress_reserved: bool,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(ManualClock::new(T0)),
            suppress_reserved: false,
        }
    }

    fn config(&self, views: &[(&str, View)]) -> Config {
        let mut c = Config {
            data_dir: self.dir.path().to_path_buf(),
            ..Config::default()
        };
        c.tiers.block_size = 4096;
        c.views.refresh = Duration::ZERO;
        c.views.suppress_reserved = self.suppress_reserved;
        for (name, v) in views {
            c.views.defs.insert(name.to_string(), v.clone());
        }
        c
    }

    fn open(&self, views: &[(&str, View)]) -> (Arc<Store>, Views) {
        let c = self.config(views);
        let store = Store::open(Arc::new(c.clone()), self.clock.clone() as Arc<dyn Clock>).unwrap();
        let v = Views::open(&crate::disk::Disk::real(), self.dir.path(), &c.views).unwrap();
        (store, v)
    }
}

fn text(views: &Views, view: &str, ty: IocType) -> String {
    let f = views.file(view, ty).expect("published");
    String::from_utf8(f.read_at(0, f.len as usize).unwrap()).unwrap()
}

fn lines(values: &[&str]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

/// Put `values` into `bucket` as last seen `age` seconds before now.
fn import(store: &Store, bucket: Bucket, ty: IocType, values: &[&str], age: u64) {
    let t = (T0 - age) as u32;
    store
        .submit(Op::Import {
            bucket,
            ty,
            values: lines(values),
            times: vec![(t, t); values.len()],
            source: crate::store::model::LOCAL,
        })
        .unwrap();
}

#[test]
fn the_all_view_serves_every_bucket_in_canonical_order() {
    let fx = Fixture::new();
    let (store, views) = fx.open(&[]);
    store
        .append(IocType::Ipv4, lines(&["10.0.0.2", "9.1.1.1", "10.0.0.10"]))
        .unwrap();
    import(
        &store,
        Bucket::Chaud,
        IocType::Ipv4,
        &["1.2.3.0/24", "200.1.1.1"],
        2 * DAY,
    );
    import(
        &store,
        Bucket::Froid,
        IocType::Ipv4,
        &["9.0.0.0/8"],
        60 * DAY,
    );
    store
        .append(
            IocType::Domain,
            lines(&["zz.example", "a.example", "m.example"]),
        )
        .unwrap();
    views.rebuild(&store, false).unwrap();
    // Numerically, not bytewise (10.0.0.10 after 10.0.0.2); networks before their members.
    assert_eq!(
        text(&views, "all", IocType::Ipv4),
        "1.2.3.0/24\n9.0.0.0/8\n9.1.1.1\n10.0.0.2\n10.0.0.10\n200.1.1.1\n"
    );
    assert_eq!(
        text(&views, "all", IocType::Domain),
        "a.example\nm.example\nzz.example\n"
    );
    assert_eq!(text(&views, "all", IocType::Sha256), "");
    // A re-sighting moves nothing a firewall fetches: same bytes, same version.
    let before = views.file("all", IocType::Ipv4).unwrap();
    store.append(IocType::Ipv4, lines(&["9.1.1.1"])).unwrap();
    views.rebuild(&store, false).unwrap();
    let after = views.file("all", IocType::Ipv4).unwrap();
    assert_eq!((before.ino, before.mtime), (after.ino, after.mtime));
}

/// More views selecting alike than there are cores: rendered side by side a core's worth
/// at a time, each from its own copy of the one selection (the last from the selection).
#[test]
fn more_views_alike_than_cores_are_each_rendered_whole() {
    let fx = Fixture::new();
    let cores = crate::cores();
    let values = [
        "a.example",
        "b.example",
        "c.example",
        "d.example",
        "e.example",
    ];
    let defs: Vec<(String, View)> = (0..cores + 3)
        .map(|i| {
            let view = View {
                types: vec![IocType::Domain],
                max_entries: Some((i % values.len() + 1) as u64),
                ..View::default()
            };
            (format!("v{i}"), view)
        })
        .collect();
    let named: Vec<(&str, View)> = defs.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let (store, views) = fx.open(&named);
    store.append(IocType::Domain, lines(&values)).unwrap();
    views.rebuild(&store, false).unwrap();
    for (i, (name, _)) in defs.iter().enumerate() {
        // One sighting time for all: the cap keeps the first values bytewise.
        let kept = &values[..i % values.len() + 1];
        assert_eq!(
            text(&views, name, IocType::Domain),
            String::from_utf8(lines(kept)).unwrap(),
            "{name}"
        );
        assert_eq!(
            views.stats()[name]["domain"]["last_build"]["selected"],
            5,
            "{name}"
        );
    }
}

/// Files of views that select alike are rendered from one selection (one pass over the
/// buckets); a view that differs in buckets, age or sources never gets that selection.
#[test]
fn views_that_select_alike_share_a_selection_and_the_others_get_their_own() {
    let fx = Fixture::new();
    let base = View {
        types: vec![IocType::Domain],
        ..View::default()
    };
    let capped = View {
        max_entries: Some(1),
        ..base.clone()
    };
    let recent = View {
        max_age: Some(Duration::from_secs(DAY)),
        ..base.clone()
    };
    let live_only = View {
        buckets: vec![Bucket::Live],
        ..base.clone()
    };
    assert!(base.selects_like(&capped));
    assert!(!base.selects_like(&recent) && !base.selects_like(&live_only));
    let (store, views) = fx.open(&[
        ("a-base", base),
        ("b-recent", recent),
        ("c-capped", capped),
        ("d-live", live_only),
    ]);
    store
        .append(IocType::Domain, lines(&["new.example"]))
        .unwrap();
    import(
        &store,
        Bucket::Chaud,
        IocType::Domain,
        &["old.example"],
        3 * DAY,
    );
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "a-base", IocType::Domain),
        "new.example\nold.example\n"
    );
    assert_eq!(text(&views, "c-capped", IocType::Domain), "new.example\n");
    assert_eq!(text(&views, "b-recent", IocType::Domain), "new.example\n");
    assert_eq!(text(&views, "d-live", IocType::Domain), "new.example\n");
    let stats = views.stats();
    for (view, selected) in [
        ("a-base", 2),
        ("c-capped", 2),
        ("b-recent", 1),
        ("d-live", 1),
    ] {
        assert_eq!(
            stats[view]["domain"]["last_build"]["selected"], selected,
            "{view}"
        );
    }
    // A change rebuilds both shared files from the new selection.
    import(
        &store,
        Bucket::Tiede,
        IocType::Domain,
        &["older.example"],
        9 * DAY,
    );
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "a-base", IocType::Domain),
        "new.example\nold.example\nolder.example\n"
    );
    assert_eq!(text(&views, "c-capped", IocType::Domain), "new.example\n");
    assert_eq!(
        views.stats()["c-capped"]["domain"]["last_build"]["selected"],
        3
    );
}

#[test]
fn aggregation_merges_networks_into_the_fewest_cidrs() {
    let fx = Fixture::new();
    let agg = View {
        types: vec![IocType::Ipv4, IocType::Ipv6],
        aggregate: true,
        ..View::default()
    };
    let (store, views) = fx.open(&[("agg", agg)]);
    store
        .append(
            IocType::Ipv4,
            lines(&[
                "10.0.0.0/25",
                "10.0.0.128/25",
                "10.0.1.0/24",
                "10.0.0.7",
                "192.0.2.1",
            ]),
        )
        .unwrap();
    store
        .append(
            IocType::Ipv6,
            lines(&["2001:db8::/33", "2001:db8:8000::/33", "2001:db8::1"]),
        )
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "agg", IocType::Ipv4),
        "10.0.0.0/23\n192.0.2.1\n"
    );
    assert_eq!(text(&views, "agg", IocType::Ipv6), "2001:db8::/32\n");
    assert_eq!(
        text(&views, "all", IocType::Ipv4),
        "10.0.0.0/25\n10.0.0.7\n10.0.0.128/25\n10.0.1.0/24\n192.0.2.1\n",
        "without aggregate every network stays"
    );
}

#[test]
fn panos_format_rewrites_and_drops_and_counts() {
    let fx = Fixture::new();
    let pan = View {
        types: vec![IocType::Url, IocType::Domain],
        format: ViewFormat::Panos,
        ..View::default()
    };
    let (store, views) = fx.open(&[("pan", pan)]);
    let long = format!("http://x.example.com/{}", "a".repeat(300));
    store
        .append(
            IocType::Url,
            lines(&[
                "http://evil.example.com/a",
                "https://evil.example.com:443/a",
                "http://evil.example.com:8080/b",
                "http://w.example.com/*/x",
                &long,
            ]),
        )
        .unwrap();
    store
        .append(IocType::Domain, lines(&["*.bad.example"]))
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "pan", IocType::Url),
        "evil.example.com/a\nevil.example.com:8080/b\n"
    );
    assert_eq!(text(&views, "pan", IocType::Domain), "*.bad.example\n");
    let s = &views.stats()["pan"]["url"]["last_build"];
    assert_eq!(
        (s["format_rewritten"].as_u64(), s["format_dropped"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(s["entries"], 2);
}

#[test]
fn the_cap_counts_what_the_format_serves() {
    let fx = Fixture::new();
    let pan = View {
        types: vec![IocType::Url],
        format: ViewFormat::Panos,
        max_entries: Some(3),
        ..View::default()
    };
    let (store, views) = fx.open(&[("pan", pan)]);
    store
        .append(
            IocType::Url,
            lines(&["http://a.example/old", "http://b.example/old"]),
        )
        .unwrap();
    fx.clock.advance(1);
    // The newest: one the format drops, and two it makes one.
    store
        .append(
            IocType::Url,
            lines(&[
                "http://w.example/*/x",
                "http://c.example/new",
                "https://c.example/new",
            ]),
        )
        .unwrap();
    views.rebuild(&store, false).unwrap();
    assert_eq!(
        text(&views, "pan", IocType::Url),
        "a.example/old\nb.example/old\nc.example/new\n"
    );
    let s = &views.stats()["pan"]["url"]["last_build"];
    assert_eq!(
        (s["entries"].as_u64(), s["capped"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(s["format_dropped"], 1);
}

#[test]
fn rebuilds_are_lazy_and_wait_for_refresh() {
    let fx = Fixture::new();
    let mut c = fx.config(&[]);
    c.views.refresh = Duration::from_secs(3600);
    let store = Store::open(Arc::new(c.clone()), fx.clock.clone() as Arc<dyn Clock>).unwrap();
    let views = Views::open(&crate::disk::Disk::real(), fx.dir.path(), &c.views).unwrap();
    store
        .append(IocType::Md5, lines(&[&"a".repeat(32)]))
        .unwrap();
    assert_eq!(
        views.rebuild(&store, false).unwrap(),
        None,
        "first build at once"
    );
    let first = views.file("all", IocType::Md5).unwrap();
    // Nothing changed: nothing is rebuilt, not even after refresh.
    assert_eq!(views.rebuild(&store, false).unwrap(), None);
    store
        .append(IocType::Md5, lines(&[&"b".repeat(32)]))
        .unwrap();
    let wait = views.rebuild(&store, false).unwrap();
    assert!(
        wait.is_some_and(|w| w > Duration::from_secs(3000)),
        "{wait:?}"
    );
    assert_eq!(
        views.file("all", IocType::Md5).unwrap().ino,
        first.ino,
        "refresh not over"
    );
    views.rebuild(&store, true).unwrap();
    assert_eq!(
        views.file("all", IocType::Md5).unwrap().entries,
        2,
        "forced"
    );
}

#[test]
fn an_identical_rebuild_keeps_inode_and_mtime_across_a_restart() {
    let fx = Fixture::new();
    let (ino, mtime) = {
        let (store, views) = fx.open(&[]);
        store.append(IocType::Ipv4, lines(&["192.0.2.7"])).unwrap();
        views.rebuild(&store, false).unwrap();
        let f = views.file("all", IocType::Ipv4).unwrap();
        (f.ino, f.mtime)
    };
    fx.clock.advance(3600);
    let (store, views) = fx.open(&[]);
    assert_eq!(
        views.file("all", IocType::Ipv4).map(|f| (f.ino, f.mtime)),
        Some((ino, mtime))
    );
    views.rebuild(&store, false).unwrap();
    let f = views.file("all", IocType::Ipv4).unwrap();
    assert_eq!((f.ino, f.mtime), (ino, mtime), "same bytes: same version");
    store.append(IocType::Ipv4, lines(&["192.0.2.8"])).unwrap();
    views.rebuild(&store, false).unwrap();
    let g = views.file("all", IocType::Ipv4).unwrap();
    assert!(g.ino > ino, "a new version gets a new inode");
    assert_eq!(g.mtime, T0 + 3600);
}

#[test]
fn removed_views_and_types_leave_disk() {
    let fx = Fixture::new();
    let two = View {
        types: vec![IocType::Ipv4, IocType::Domain],
        ..View::default()
    };
    let (store, views) = fx.open(&[("two", two.clone())]);
    views.rebuild(&store, false).unwrap();
    let dir = fx.dir.path().join("views/two");
    assert!(dir.join("domain.txt").exists());
    let mut c = fx.config(&[(
        "two",
        View {
            types: vec![IocType::Ipv4],
            ..two
        },
    )]);
    views.set_config(c.views.clone());
    views.rebuild(&store, false).unwrap();
    assert!(!dir.join("domain.txt").exists() && dir.join("ipv4.txt").exists());
    assert!(views.file("two", IocType::Domain).is_none());
    c.views.defs.remove("two");
    views.set_config(c.views);
    views.rebuild(&store, false).unwrap();
    assert!(!dir.exists());
    assert_eq!(views.names(), ["all"]);
}
