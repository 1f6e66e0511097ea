//! Engine scenarios, without a mount: what a user would observe through the files.

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::ioc::IocType;
use crate::store::model::{Bucket, Target, Tier};
use crate::store::read::Pin;
use crate::store::Store;

mod aging;
mod allow;
mod checkpoint;
mod sources;

const T0: u64 = 1_700_000_000;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(ManualClock::new(T0)),
        }
    }

    fn config(&self) -> Arc<Config> {
        let mut c = Config {
            data_dir: self.dir.path().to_path_buf(),
            ..Config::default()
        };
        c.tiers.block_size = 4096;
        Arc::new(c)
    }

    fn open(&self) -> Arc<Store> {
        Store::open(self.config(), self.clock.clone() as Arc<dyn Clock>).unwrap()
    }
}

fn served(store: &Store, bucket: Bucket, ty: IocType) -> String {
    let bytes = match bucket.tier() {
        None => store.live(ty).read_all().unwrap(),
        Some(tier) => {
            let v = store.tier(tier, ty);
            let bytes = v.read(0, v.size() as usize + 10, &store.cache).unwrap();
            assert_eq!(
                bytes.len() as u64,
                v.size(),
                "st_size must equal what a read returns"
            );
            bytes
        }
    };
    String::from_utf8(bytes).unwrap()
}

/// Every (type, value) with the bucket it is served from; panics if one is served twice.
fn everything(store: &Store) -> HashMap<(IocType, String), Bucket> {
    let problems = crate::cli::check::verify(&store.state(), &store.cache);
    assert!(problems.is_empty(), "{problems:#?}");
    let mut all = HashMap::new();
    for b in Bucket::ALL {
        for ty in IocType::ALL {
            for line in served(store, b, ty).lines() {
                if let Some(other) = all.insert((ty, line.to_string()), b) {
                    panic!("{ty} {line} served from both {other} and {b}");
                }
            }
        }
    }
    all
}

fn ipv4(lines: &[&str]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

#[test]
fn appends_dedup_and_survive_restart_without_commit() {
    let fx = Fixture::new();
    let store = fx.open();
    store
        .append(IocType::Ipv4, ipv4(&["1.2.3.4", "5.6.7.8"]))
        .unwrap();
    store
        .append(IocType::Ipv4, ipv4(&["1.2.3.4", "9.9.9.9", "9.9.9.9"]))
        .unwrap();
    assert_eq!(
        served(&store, Bucket::Live, IocType::Ipv4),
        "1.2.3.4\n5.6.7.8\n9.9.9.9\n"
    );
    drop(store);
    let store = fx.open();
    assert_eq!(store.recovery.replayed, 2);
    assert_eq!(
        served(&store, Bucket::Live, IocType::Ipv4),
        "1.2.3.4\n5.6.7.8\n9.9.9.9\n"
    );
}

#[test]
fn commit_writes_backing_files_and_restart_uses_them() {
    let fx = Fixture::new();
    let store = fx.open();
    store
        .append(IocType::Domain, b"evil.com\nbad.org\n".to_vec())
        .unwrap();
    let info = store.commit().unwrap().expect("something to commit");
    assert_eq!(info.files, 2);
    assert!(store.commit().unwrap().is_none(), "nothing left to commit");
    let on_disk = std::fs::read_to_string(fx.dir.path().join("live/domain.txt")).unwrap();
    assert_eq!(on_disk, "evil.com\nbad.org\n");
    store
        .append(IocType::Domain, b"later.net\n".to_vec())
        .unwrap();
    drop(store);
    let store = fx.open();
    assert_eq!(store.recovery.committed_upto, 1);
    assert_eq!(store.recovery.replayed, 1);
    assert_eq!(
        served(&store, Bucket::Live, IocType::Domain),
        "evil.com\nbad.org\nlater.net\n"
    );
    assert_eq!(
        store.find(IocType::Domain, b"evil.com").map(|f| f.0),
        Some(Bucket::Live)
    );
}

#[test]
fn second_open_of_the_same_data_dir_is_refused() {
    let fx = Fixture::new();
    let _store = fx.open();
    let err = Store::open(fx.config(), fx.clock.clone())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("in use by another iocfs"), "{err}");
}

#[test]
fn replace_keeps_times_of_kept_lines_and_drops_the_rest() {
    let fx = Fixture::new();
    let store = fx.open();
    store
        .append(IocType::Ipv4, ipv4(&["1.1.1.1", "2.2.2.2"]))
        .unwrap();
    fx.clock.advance(HOUR);
    store
        .replace(IocType::Ipv4, ipv4(&["2.2.2.2", "3.3.3.3", "2.2.2.2"]))
        .unwrap();
    assert_eq!(
        served(&store, Bucket::Live, IocType::Ipv4),
        "2.2.2.2\n3.3.3.3\n"
    );
    assert_eq!(store.find(IocType::Ipv4, b"1.1.1.1"), None);
    let t0 = T0 as u32;
    assert_eq!(store.find(IocType::Ipv4, b"2.2.2.2").unwrap().1, (t0, t0));
    assert_eq!(
        store.find(IocType::Ipv4, b"3.3.3.3").unwrap().1,
        (t0 + 3600, t0 + 3600)
    );
}

#[test]
fn a_replace_by_the_set_as_it_stands_keeps_the_version() {
    let fx = Fixture::new();
    let store = fx.open();
    let of = (Target::Live, IocType::Ipv4);
    store
        .append(IocType::Ipv4, ipv4(&["1.1.1.1", "2.2.2.2"]))
        .unwrap();
    let before = store.current(of);
    fx.clock.advance(HOUR);
    store
        .replace(IocType::Ipv4, ipv4(&["1.1.1.1", "2.2.2.2"]))
        .unwrap();
    let after = store.current(of);
    assert_eq!((after.id, after.mtime()), (before.id, before.mtime()));
    // Another order is other bytes: a new version.
    store
        .replace(IocType::Ipv4, ipv4(&["2.2.2.2", "1.1.1.1"]))
        .unwrap();
    assert_ne!(store.current(of).id, before.id);
    assert_eq!(
        served(&store, Bucket::Live, IocType::Ipv4),
        "2.2.2.2\n1.1.1.1\n"
    );
    // So is a subset, or a set with more.
    let v = store.current(of).id;
    store.replace(IocType::Ipv4, ipv4(&["2.2.2.2"])).unwrap();
    assert_ne!(store.current(of).id, v);
    assert_eq!(served(&store, Bucket::Live, IocType::Ipv4), "2.2.2.2\n");
}

fn policy_check(store: &Store, expect: Option<Bucket>) {
    let all = everything(store);
    assert_eq!(
        all.get(&(IocType::Ipv4, "1.2.3.4".into())).copied(),
        expect,
        "{all:?}"
    );
}

#[test]
fn aging_timeline_through_every_bucket_with_restarts() {
    let fx = Fixture::new();
    let store = fx.open();
    store.append(IocType::Ipv4, ipv4(&["1.2.3.4"])).unwrap();
    let mut store = store;
    for (at, expect) in [
        (23 * HOUR, Some(Bucket::Live)),
        (25 * HOUR, Some(Bucket::Chaud)),
        (8 * DAY, Some(Bucket::Tiede)),
        (31 * DAY, Some(Bucket::Froid)),
        (366 * DAY, None),
    ] {
        fx.clock.set(T0 + at);
        store.age().unwrap();
        policy_check(&store, expect);
        store.commit().unwrap();
        drop(store);
        store = fx.open();
        policy_check(&store, expect);
    }
}

#[test]
fn sighting_in_a_tier_moves_back_to_live_keeping_first_seen() {
    let fx = Fixture::new();
    let store = fx.open();
    store
        .append(IocType::Ipv4, ipv4(&["1.2.3.4", "4.4.4.4"]))
        .unwrap();
    fx.clock.set(T0 + 2 * DAY);
    store.age().unwrap();
    store.commit().unwrap();
    assert_eq!(
        served(&store, Bucket::Chaud, IocType::Ipv4),
        "1.2.3.4\n4.4.4.4\n"
    );
    store.append(IocType::Ipv4, ipv4(&["4.4.4.4"])).unwrap();
    assert_eq!(served(&store, Bucket::Chaud, IocType::Ipv4), "1.2.3.4\n");
    assert_eq!(served(&store, Bucket::Live, IocType::Ipv4), "4.4.4.4\n");
    let (bucket, (first, last)) = store.find(IocType::Ipv4, b"4.4.4.4").unwrap();
    assert_eq!(
        (bucket, u64::from(first), u64::from(last)),
        (Bucket::Live, T0, T0 + 2 * DAY)
    );
    drop(store);
    let store = fx.open();
    assert_eq!(served(&store, Bucket::Chaud, IocType::Ipv4), "1.2.3.4\n");
    assert_eq!(
        store.find(IocType::Ipv4, b"4.4.4.4").unwrap().1 .0 as u64,
        T0
    );
}

#[test]
fn remove_deletes_from_any_bucket_durably() {
    let fx = Fixture::new();
    let store = fx.open();
    store
        .append(IocType::Ipv4, ipv4(&["1.1.1.1", "2.2.2.2"]))
        .unwrap();
    fx.clock.set(T0 + 2 * DAY);
    store.age().unwrap();
    store.append(IocType::Ipv4, ipv4(&["3.3.3.3"])).unwrap();
    let n = store
        .remove(vec![
            (IocType::Ipv4, b"1.1.1.1".to_vec()),
            (IocType::Ipv4, b"3.3.3.3".to_vec()),
            (IocType::Ipv4, b"7.7.7.7".to_vec()),
        ])
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(served(&store, Bucket::Chaud, IocType::Ipv4), "2.2.2.2\n");
    assert_eq!(served(&store, Bucket::Live, IocType::Ipv4), "");
    drop(store);
    let store = fx.open();
    assert_eq!(served(&store, Bucket::Chaud, IocType::Ipv4), "2.2.2.2\n");
    assert_eq!(store.find(IocType::Ipv4, b"1.1.1.1"), None);
}

#[test]
fn committed_tier_file_zcats_to_the_served_content() {
    let fx = Fixture::new();
    let store = fx.open();
    let many: Vec<u8> = (0..3000u32)
        .flat_map(|i| format!("host{i}.example.com\n").into_bytes())
        .collect();
    store.append(IocType::Domain, many).unwrap();
    fx.clock.set(T0 + 10 * DAY);
    store.age().unwrap();
    store.commit().unwrap();
    let served_tiede = served(&store, Bucket::Tiede, IocType::Domain);
    assert_eq!(served_tiede.lines().count(), 3000);
    assert!(
        store.tier(Tier::Tiede, IocType::Domain).blocks().len() > 5,
        "small blocks in this test"
    );
    let file = std::fs::File::open(fx.dir.path().join("tiede/domain.txt.gz")).unwrap();
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(file), &mut unzipped)
        .unwrap();
    assert_eq!(unzipped, served_tiede);
    // Half the lines get re-sighted (every tier block loses some), then the rest age on to
    // froid as whole blocks while the re-sighted ones age from live straight to tiede.
    let half: Vec<u8> = (0..3000u32)
        .step_by(2)
        .flat_map(|i| format!("host{i}.example.com\n").into_bytes())
        .collect();
    store.append(IocType::Domain, half).unwrap();
    assert_eq!(
        served(&store, Bucket::Live, IocType::Domain)
            .lines()
            .count(),
        1500
    );
    fx.clock.set(T0 + 35 * DAY);
    store.age().unwrap();
    store.commit().unwrap();
    let all = everything(&store);
    assert_eq!(all.values().filter(|b| **b == Bucket::Froid).count(), 1500);
    assert_eq!(all.values().filter(|b| **b == Bucket::Tiede).count(), 1500);
    for bucket in [Bucket::Tiede, Bucket::Froid] {
        let file =
            std::fs::File::open(fx.dir.path().join(format!("{bucket}/domain.txt.gz"))).unwrap();
        let mut unzipped = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(file), &mut unzipped)
            .unwrap();
        assert_eq!(unzipped, served(&store, bucket, IocType::Domain));
    }
    drop(store);
    let store = fx.open();
    assert_eq!(everything(&store), all);
}

#[test]
fn plain_gzip_tier_file_is_adopted() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.dir.path().join("tiede")).unwrap();
    let gz = std::fs::File::create(fx.dir.path().join("tiede/sha256.txt.gz")).unwrap();
    let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::default());
    let upper = "A".repeat(64);
    std::io::Write::write_all(
        &mut enc,
        format!("# feed header\n{upper}\nnot-a-hash\n{}\n", "b".repeat(64)).as_bytes(),
    )
    .unwrap();
    enc.finish().unwrap();
    let store = fx.open();
    assert_eq!(
        served(&store, Bucket::Tiede, IocType::Sha256),
        format!("{}\n{}\n", "a".repeat(64), "b".repeat(64))
    );
    store.commit().unwrap();
    drop(store);
    let store = fx.open();
    assert_eq!(
        served(&store, Bucket::Tiede, IocType::Sha256)
            .lines()
            .count(),
        2
    );
}

fn fill_tiers(fx: &Fixture, store: &Store) {
    let many: Vec<u8> = (0..2000u32)
        .flat_map(|i| format!("10.1.{}.{}\n", i / 256, i % 256).into_bytes())
        .collect();
    store.append(IocType::Ipv4, many).unwrap();
    fx.clock.set(T0 + 2 * DAY);
    store.age().unwrap();
    store.append(IocType::Ipv4, ipv4(&["10.9.9.9"])).unwrap();
    fx.clock.set(T0 + 9 * DAY);
    store.age().unwrap();
}

#[test]
fn a_record_over_the_limit_is_refused_before_it_takes_a_sequence_number() {
    let f = Fixture::new();
    let store = f.open();
    store.set_record_limit(64 << 10);
    let big: Vec<u8> = (0..5000u32)
        .flat_map(|i| format!("h{i}.example.com\n").into_bytes())
        .collect();
    assert!(big.len() > 64 << 10);
    let seq = store.next_seq();
    let err = store.append(IocType::Domain, big).unwrap_err();
    assert_eq!(err.errno(), libc::EFBIG, "{err}");
    assert_eq!(store.next_seq(), seq, "no sequence number was used");
    store
        .append(IocType::Domain, b"ok.example\n".to_vec())
        .unwrap();
    drop(store);
    let store = f.open();
    assert_eq!(
        served(&store, Bucket::Live, IocType::Domain),
        "ok.example\n"
    );
}

#[test]
fn a_staged_replace_applies_only_at_its_end_and_a_reopen_drops_an_unfinished_one() {
    use crate::store::staged::StagedReplace;
    let f = Fixture::new();
    let store = f.open();
    store.set_record_limit(64 << 10);
    store
        .append(IocType::Domain, b"old.example\n".to_vec())
        .unwrap();
    let lines = |from: u32| -> Vec<u8> {
        (from..from + 4000)
            .flat_map(|i| format!("h{i}.example\n").into_bytes())
            .collect()
    };
    let mut r = StagedReplace::new(Target::Live, IocType::Domain);
    r.push(&store, &lines(0)).unwrap();
    r.push(&store, &lines(4000)).unwrap();
    assert!(r.pending_len() < 64 << 10, "full pieces were journaled");
    assert_eq!(
        served(&store, Bucket::Live, IocType::Domain),
        "old.example\n"
    );
    r.finish(&store).unwrap();
    let mut want = lines(0);
    want.extend(lines(4000));
    assert_eq!(
        served(&store, Bucket::Live, IocType::Domain).as_bytes(),
        want
    );
    // An aborted one applies nothing; an unfinished one is dropped by the next open.
    let mut aborted = StagedReplace::new(Target::Live, IocType::Domain);
    aborted.push(&store, &lines(9000)).unwrap();
    aborted.abort(&store);
    let mut unfinished = StagedReplace::new(Target::Live, IocType::Domain);
    unfinished.push(&store, &lines(20000)).unwrap();
    drop(store);
    let store = f.open();
    assert_eq!(store.recovery.abandoned_replaces, 1);
    assert_eq!(
        served(&store, Bucket::Live, IocType::Domain).as_bytes(),
        want
    );
}

#[test]
fn copying_a_large_pinned_live_file_pauses_new_pins_a_small_one_does_not() {
    let f = Fixture::new();
    let store = f.open();
    let lines = |n: u32, third: u32| -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("10.{third}.{}.{}\n", i >> 8, i & 255).into_bytes())
            .collect()
    };
    // Small (under 2 MiB): pinned, appended to (a copy), pinned again at once.
    store
        .append(IocType::Domain, b"a.example\n".to_vec())
        .unwrap();
    let v = store.live(IocType::Domain);
    assert_eq!(store.pin_for_passthrough(&v), Pin::Pinned);
    store
        .append(IocType::Domain, b"b.example\n".to_vec())
        .unwrap();
    let copy = store.live(IocType::Domain);
    assert_ne!(
        copy.id, v.id,
        "an append to a pinned version goes to a copy"
    );
    assert_eq!(store.pin_for_passthrough(&copy), Pin::Pinned);
    // Large: 600,000 ipv4 lines, over 8 MiB (new pins then wait about 40 ms).
    for third in 0..10 {
        store.append(IocType::Ipv4, lines(60_000, third)).unwrap();
    }
    let v = store.live(IocType::Ipv4);
    assert!(v.len() >= 2 << 20, "{} bytes", v.len());
    assert_eq!(store.pin_for_passthrough(&v), Pin::Pinned);
    let before = std::time::Instant::now();
    store
        .append(IocType::Ipv4, b"192.0.2.1\n".to_vec())
        .unwrap();
    let copy = store.live(IocType::Ipv4);
    assert_ne!(copy.id, v.id);
    // The pause is priced by the bytes copied (4.5 ns each), not timed: checked as a
    // deadline, since a loaded machine may take longer than the pause to get here.
    let until = store.state().pins_paused_until(IocType::Ipv4);
    let priced = std::time::Duration::from_nanos(v.len() * 9 / 2);
    assert!(
        until.is_some_and(|t| t >= before + priced),
        "right after copying a large pinned file, new pins pause for {priced:?}: {until:?}"
    );
    // While paused, new readers are not pinned (paused longer here, for the same reason).
    store
        .state_mut()
        .pause_pins(IocType::Ipv4, std::time::Duration::from_secs(3600));
    assert_eq!(store.pin_for_passthrough(&copy), Pin::Refused);
    v.passthrough_closed();
}

#[test]
fn a_version_just_opened_through_the_daemon_is_not_pinned_but_readers_get_a_copy() {
    let f = Fixture::new();
    let store = f.open();
    store
        .append(IocType::Url, b"http://a.example/x\n".to_vec())
        .unwrap();
    let v = store.live(IocType::Url);
    // A writer's (or reader's) open served by the daemon may not have reached the kernel's
    // checks yet: pinning the inode now could make the kernel fail that open.
    assert!(v.open_plain());
    assert_eq!(store.pin_for_passthrough(&v), Pin::PlainOpenSettling);
    assert!(
        store.rotate_live_for_readers(&v).unwrap(),
        "readers get a copy"
    );
    let copy = store.live(IocType::Url);
    assert_ne!(copy.id, v.id);
    assert_eq!(copy.read_all().unwrap(), v.read_all().unwrap());
    assert_eq!(store.pin_for_passthrough(&copy), Pin::Pinned);
    // Pinned: no open served by the daemon now; readers join the pin.
    assert!(!copy.open_plain());
    assert!(copy.pin_again());
    copy.passthrough_closed();
    copy.passthrough_closed();
    assert!(copy.open_plain());
}
