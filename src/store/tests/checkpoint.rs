//! Checkpoints: used at a start instead of rescanning, damaged ones skipped, written only
//! when a commit made them stale.

use super::*;

#[test]
fn restart_uses_the_checkpoint_instead_of_rescanning_tiers() {
    let fx = Fixture::new();
    let store = fx.open();
    fill_tiers(&fx, &store);
    store.checkpoint().unwrap();
    let before = everything(&store);
    let times = store.find(IocType::Ipv4, b"10.1.0.7");
    drop(store);
    let store = fx.open();
    assert!(store.recovery.from_checkpoint >= 2, "{:?}", store.recovery);
    assert_eq!(everything(&store), before);
    assert_eq!(store.find(IocType::Ipv4, b"10.1.0.7"), times);
    // Still fully usable: a sighting finds the key through the snapshot's entries.
    store.append(IocType::Ipv4, ipv4(&["10.1.0.7"])).unwrap();
    assert_eq!(
        store.find(IocType::Ipv4, b"10.1.0.7").unwrap().0,
        Bucket::Live
    );
}

#[test]
fn damaged_checkpoint_falls_back_and_loses_nothing() {
    let fx = Fixture::new();
    let store = fx.open();
    fill_tiers(&fx, &store);
    store.checkpoint().unwrap();
    store
        .append(IocType::Domain, b"one.more.example\n".to_vec())
        .unwrap();
    store.checkpoint().unwrap();
    let before = everything(&store);
    drop(store);
    let mut snaps: Vec<_> = std::fs::read_dir(fx.dir.path().join("checkpoint"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    snaps.sort();
    assert_eq!(snaps.len(), 2);
    // Damage the newest one: the older one (or a rescan) must give the same state.
    let newest = snaps.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(newest, &bytes).unwrap();
    let store = fx.open();
    assert_eq!(everything(&store), before);
    // And with no usable checkpoint at all, the files alone are enough.
    drop(store);
    for s in &snaps {
        std::fs::write(s, b"garbage").unwrap();
    }
    let store = fx.open();
    assert_eq!(store.recovery.from_checkpoint, 0);
    assert_eq!(everything(&store), before);
}

#[test]
fn a_checkpoint_is_written_again_only_after_a_commit() {
    let fx = Fixture::new();
    let store = fx.open();
    fill_tiers(&fx, &store);
    let first = store.checkpoint().unwrap();
    let snaps = || {
        let mut v: Vec<_> = std::fs::read_dir(fx.dir.path().join("checkpoint"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.metadata().unwrap().modified().unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let written = snaps();
    // Idle: neither an interval's checkpoint nor a clean stop's writes it again.
    assert_eq!(store.checkpoint().unwrap().upto, first.upto);
    assert_eq!(store.checkpoints(), 1);
    drop(store);
    let store = fx.open();
    store.checkpoint().unwrap();
    assert_eq!(store.checkpoints(), 0, "the loaded one is current");
    assert_eq!(snaps(), written);
    // Removed behind the daemon's back: the next one is written again, and an admin's
    // `checkpoint` always writes one.
    for (name, _) in &written {
        std::fs::remove_file(fx.dir.path().join("checkpoint").join(name)).unwrap();
    }
    store.checkpoint().unwrap();
    assert_eq!(store.checkpoints(), 1);
    assert_eq!(snaps().len(), 1);
    store.checkpoint_now().unwrap();
    assert_eq!(store.checkpoints(), 2);
    // Damaged (cut short): written again too.
    let (name, _) = &snaps()[0];
    let path = fx.dir.path().join("checkpoint").join(name);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    store.checkpoint().unwrap();
    assert_eq!(store.checkpoints(), 3);
    // The same snapshot (its partitions may come in another order).
    assert_eq!(std::fs::read(&path).unwrap().len(), bytes.len());
    // A change: the next one is written.
    store
        .append(IocType::Domain, b"one.more.example\n".to_vec())
        .unwrap();
    assert!(store.checkpoint().unwrap().upto > first.upto);
    assert_eq!(store.checkpoints(), 4);
    assert_eq!(snaps().len(), 2);
}
