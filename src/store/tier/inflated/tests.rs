use super::*;
use crate::ioc::IocType;
use crate::store::model::Tier;
use crate::store::tier::Block;

fn version(id: u64, lines: usize) -> Arc<TierVersion> {
    let blocks = (0..lines.div_ceil(100))
        .map(|b| {
            let n = (lines - b * 100).min(100);
            let raw: Vec<u8> = (0..n)
                .flat_map(|i| format!("10.0.{b}.{i}\n").into_bytes())
                .collect();
            Block::mem(b as u32, raw, vec![(1, 1); n])
        })
        .collect();
    TierVersion::new(id, Tier::Chaud, IocType::Ipv4, blocks, 0)
}

fn copies(budget: u64) -> (tempfile::TempDir, InflatedCopies) {
    let dir = tempfile::tempdir().unwrap();
    let place = Some((Disk::real(), dir.path().to_path_buf()));
    (dir, InflatedCopies::new(place, budget))
}

fn content(c: &InflatedTier) -> Vec<u8> {
    let mut buf = vec![0; c.size() as usize];
    c.file.read_exact_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn a_copy_holds_the_version_byte_for_byte() {
    let (_dir, copies) = copies(1 << 20);
    let cache = BlockCache::new(1 << 20);
    let v = version(1, 2_345);
    let copy = copies.get_or_make(&v, &cache).unwrap().unwrap();
    assert_eq!(
        content(&copy),
        v.read(0, v.size() as usize, &cache).unwrap()
    );
    let again = copies.get_or_make(&v, &cache).unwrap().unwrap();
    assert!(
        Arc::ptr_eq(&copy, &again),
        "the second open reuses the copy"
    );
}

#[test]
fn copies_held_stay_and_the_least_recently_used_go() {
    let cache = BlockCache::new(1 << 20);
    let (a, b, c) = (version(1, 1_000), version(2, 1_000), version(3, 1_000));
    let (_dir, copies) = copies(a.size() * 2 + 1);
    let held = copies.get_or_make(&a, &cache).unwrap().unwrap();
    drop(copies.get_or_make(&b, &cache).unwrap().unwrap());
    // Room for c only by dropping b (a is held, though used before b).
    let made = copies.get_or_make(&c, &cache).unwrap();
    assert!(made.is_some());
    assert_eq!(copies.bytes(), a.size() + c.size());
    // With a and c both held, nothing fits.
    assert!(copies.get_or_make(&b, &cache).unwrap().is_none());
    drop((held, made));
    assert!(copies.get_or_make(&b, &cache).unwrap().is_some());
}

#[test]
fn a_rebased_version_keeps_its_copy_and_its_open_counts() {
    let (_dir, copies) = copies(1 << 20);
    let cache = BlockCache::new(1 << 20);
    let v = version(7, 1_000);
    let copy = copies.get_or_make(&v, &cache).unwrap().unwrap();
    v.opens().passthrough_opened(copy.clone());
    let rebased = v.rebased(v.blocks().to_vec());
    drop(v);
    assert!(
        rebased
            .opens()
            .held_copy()
            .is_some_and(|c| Arc::ptr_eq(&c, &copy)),
        "the counts belong to the inode"
    );
    let again = copies.get_or_make(&rebased, &cache).unwrap().unwrap();
    assert!(
        Arc::ptr_eq(&copy, &again),
        "no second inflate after a rebase"
    );
    rebased.opens().passthrough_closed();
    drop((copy, again));
    assert_eq!(copies.bytes(), rebased.size(), "kept while the inode lives");
}

#[test]
fn a_failed_inflate_is_not_tried_again_and_a_busy_one_is_not_waited_for() {
    let (_dir, copies) = copies(1 << 20);
    let cache = BlockCache::new(1 << 20);
    // A block whose bytes are not raw_len long: the fill fails.
    let mut bad = Block::mem(0, b"10.0.0.1\n".to_vec(), vec![(1, 1)]);
    bad.raw_len = 20;
    let v = TierVersion::new(8, Tier::Chaud, IocType::Ipv4, vec![bad], 0);
    assert!(copies.get_or_make(&v, &cache).is_err());
    assert!(copies.get_or_make(&v, &cache).unwrap().is_none());
    // Another reader's file being inflated: served from the blocks, no waiting.
    let other = version(9, 100);
    let stop = mark_making(&copies, 1, false);
    assert!(copies.get_or_make(&other, &cache).unwrap().is_none());
    assert!(
        !stop.load(Ordering::Relaxed),
        "another reader's inflate goes on"
    );
    drop(MakingMark(&copies));
    assert!(copies.get_or_make(&other, &cache).unwrap().is_some());
}

/// Mark an inflate of version `id` under way, as `make` does; its stop flag.
fn mark_making(copies: &InflatedCopies, id: u64, ahead: bool) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    copies.making.lock().unwrap().now = Some(Making {
        version_id: id,
        ahead,
        stop: stop.clone(),
    });
    stop
}

/// Wait until `n` opens wait for the inflate under way.
fn until_waiting(copies: &InflatedCopies, n: usize) {
    while copies.making.lock().unwrap().waiting != n {
        std::thread::yield_now();
    }
}

#[test]
fn a_copy_made_ahead_serves_the_open_and_takes_only_free_room() {
    let cache = BlockCache::new(1 << 20);
    let (a, b, c) = (version(1, 1_000), version(2, 1_000), version(3, 1_000));
    let (_dir, copies) = copies(a.size() * 2 + 1);
    copies.make_ahead(&a, &cache).unwrap();
    assert_eq!(copies.bytes(), a.size());
    let opened = copies.get_or_make(&a, &cache).unwrap().unwrap();
    assert_eq!(
        content(&opened),
        a.read(0, a.size() as usize, &cache).unwrap()
    );
    drop(opened);
    copies.make_ahead(&b, &cache).unwrap();
    // Full: a guess drops no copy, not even one nobody holds.
    copies.make_ahead(&c, &cache).unwrap();
    assert_eq!(copies.bytes(), a.size() + b.size());
    let counts = copies.ahead_counts();
    assert_eq!(counts.made.load(Ordering::Relaxed), 2);
    assert_eq!(
        counts.opened.load(Ordering::Relaxed),
        1,
        "b was never opened"
    );
    // An inflate under way: a guess neither waits nor stops it.
    let (_dir, busy) = self::copies(1 << 20);
    let stop = mark_making(&busy, 7, false);
    busy.make_ahead(&c, &cache).unwrap();
    assert!(!stop.load(Ordering::Relaxed));
    assert_eq!(busy.bytes(), 0);
    // An open waiting for the cores: a guess does not take them first.
    drop(MakingMark(&busy));
    busy.making.lock().unwrap().waiting = 1;
    busy.make_ahead(&c, &cache).unwrap();
    assert_eq!(busy.bytes(), 0);
    busy.making.lock().unwrap().waiting = 0;
    busy.make_ahead(&c, &cache).unwrap();
    assert_eq!(busy.bytes(), c.size());
}

#[test]
fn an_open_stops_a_guess_at_another_file_and_waits_for_one_at_its_own() {
    let cache = BlockCache::new(1 << 20);
    let (a, b, c) = (version(1, 1_000), version(2, 1_000), version(3, 1_000));
    let (_dir, copies) = copies(1 << 20);
    std::thread::scope(|s| {
        // A guess at `a` under way: an open of `b` stops it, waits for it to end, then
        // makes its own copy.
        let stop = mark_making(&copies, a.id, true);
        let open = s.spawn(|| copies.get_or_make(&b, &cache));
        until_waiting(&copies, 1);
        assert!(stop.load(Ordering::Relaxed), "the guess is stopped");
        drop(MakingMark(&copies));
        assert!(open.join().unwrap().unwrap().is_some());
        // A guess at `a` itself: the open waits for it and takes its copy. Joined by an
        // open, it is an open's inflate: an open of another file neither stops it nor
        // waits for it.
        let stop = mark_making(&copies, a.id, true);
        let open = s.spawn(|| copies.get_or_make(&a, &cache));
        until_waiting(&copies, 1);
        let other = s.spawn(|| copies.get_or_make(&c, &cache));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !other.is_finished() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        if !other.is_finished() {
            drop(MakingMark(&copies)); // let both go, then fail
            panic!("an open of another file waited for a guess an open had joined");
        }
        assert!(other.join().unwrap().unwrap().is_none());
        assert!(!stop.load(Ordering::Relaxed), "a joined guess goes on");
        let made = InflatedCopies::new(copies.place.clone(), 1 << 20);
        let copy = made.get_or_make(&a, &cache).unwrap().unwrap();
        crate::sync::lock(&copies.entries).push(Entry {
            inode: a.inode(),
            copy: copy.clone(),
            last_used: 0,
            unopened_ahead: true,
        });
        drop(MakingMark(&copies));
        let got = open.join().unwrap().unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&got, &copy),
            "the guess's copy, not a second one"
        );
        assert!(!stop.load(Ordering::Relaxed));
        assert_eq!(copies.ahead_counts().opened.load(Ordering::Relaxed), 1);
    });
}

#[test]
fn versions_gone_lose_their_copy_and_too_large_ones_get_none() {
    let cache = BlockCache::new(1 << 20);
    let (dir, copies) = copies(40_000);
    let v = version(1, 1_000);
    drop(copies.get_or_make(&v, &cache).unwrap().unwrap());
    assert_eq!(copies.bytes(), v.size());
    drop(v);
    assert_eq!(copies.bytes(), 0);
    assert!(copies
        .get_or_make(&version(2, 5_000), &cache)
        .unwrap()
        .is_none());
    // A copy must leave the filesystem room for writes.
    assert!(
        leaves_room(dir.path(), 4096),
        "this test needs a filesystem with room"
    );
    assert!(!leaves_room(dir.path(), u64::MAX / 2));
    assert!(!leaves_room(&dir.path().join("missing"), 0));
    assert!(InflatedCopies::new(None, 1 << 30)
        .get_or_make(&version(3, 10), &cache)
        .unwrap()
        .is_none());
}
