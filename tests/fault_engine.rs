//! Storage fault injection at the engine level (no mount): a WAL cut at every byte of its
//! last record, bit flips in WAL records before the tail, bit flips in checkpoints.
//! Damage is made on a copy of a data directory, then `Store::open` (the mount's recovery)
//! is checked against what the undamaged directory serves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iocfs::clock::{Clock, ManualClock};
use iocfs::config::Config;
use iocfs::ioc::IocType;
use iocfs::store::model::Bucket;
use iocfs::store::Store;

use common::{checkpoints, copy_dir};

const T0: u64 = 1_700_000_000;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// Seeded damage.
use iocfs::splitmix::Rng;

/// A data directory and the clock its stores run on.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir(root.join("data")).unwrap();
        Fixture {
            _dir: dir,
            root,
            clock: Arc::new(ManualClock::new(T0)),
        }
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn open(&self) -> iocfs::error::Result<Arc<Store>> {
        let mut c = Config {
            data_dir: self.data(),
            ..Config::default()
        };
        c.tiers.block_size = 4096;
        Store::open(Arc::new(c), self.clock.clone() as Arc<dyn Clock>)
    }

    /// Keep a copy of the data directory as it is now.
    fn save(&self, name: &str) -> PathBuf {
        let to = self.root.join(name);
        let _ = fs::remove_dir_all(&to);
        copy_dir(&self.data(), &to);
        to
    }

    /// Put a saved copy back as the data directory.
    fn restore(&self, saved: &Path) {
        fs::remove_dir_all(self.data()).unwrap();
        copy_dir(saved, &self.data());
    }
}

fn lines(values: &[String]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| format!("{v}\n").into_bytes())
        .collect()
}

/// What a store serves: the 36 files, and every indicator with its bucket and times.
#[derive(Debug, PartialEq, Eq)]
struct Served {
    files: BTreeMap<String, String>,
    found: BTreeMap<String, (Bucket, (u32, u32))>,
}

fn served(store: &Store) -> Served {
    let mut files = BTreeMap::new();
    let mut found = BTreeMap::new();
    for b in Bucket::ALL {
        for ty in IocType::ALL {
            let bytes = match b.tier() {
                None => store.live(ty).read_all().unwrap(),
                Some(tier) => {
                    let v = store.tier(tier, ty);
                    v.read(0, v.size() as usize, &store.cache).unwrap()
                }
            };
            let text = String::from_utf8(bytes).unwrap();
            for line in text.lines() {
                let at = store
                    .find(ty, line.as_bytes())
                    .unwrap_or_else(|| panic!("{b}/{ty}: {line} is served but not found"));
                assert_eq!(at.0, b, "{line} is served from {b} but found in {}", at.0);
                found.insert(format!("{ty} {line}"), at);
            }
            files.insert(format!("{b}/{}", ty.file_name()), text);
        }
    }
    Served { files, found }
}

/// The newest WAL segment and (offset, sequence) of every record in it; a store closed in
/// order leaves it ending on its last record.
fn wal_records(data: &Path) -> (PathBuf, Vec<(u64, u64)>) {
    let path = common::wal_segments(data).pop().expect("a WAL segment");
    let bytes = fs::read(&path).unwrap();
    assert_eq!(
        common::wal_records_end(&bytes),
        bytes.len(),
        "{} does not end on a record",
        path.display()
    );
    let records = common::wal_records(&bytes)
        .into_iter()
        .map(|(at, seq)| (at as u64, seq))
        .collect();
    (path, records)
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// History before the last record: appends, an aging step into the tiers, a commit, a
/// checkpoint, more appends, a replacement and a removal after it.
fn history(store: &Store, clock: &ManualClock) {
    let ips: Vec<String> = (0..600)
        .map(|i| format!("10.1.{}.{}", i / 256, i % 256))
        .collect();
    let doms: Vec<String> = (0..400).map(|i| format!("d{i}.wal.example")).collect();
    for chunk in ips.chunks(100) {
        store.append(IocType::Ipv4, lines(chunk)).unwrap();
    }
    store.append(IocType::Domain, lines(&doms)).unwrap();
    clock.advance(2 * DAY);
    store.append(IocType::Ipv4, lines(&ips[..50])).unwrap();
    store.age().unwrap();
    store.checkpoint().unwrap();
    clock.advance(HOUR);
    store
        .append(IocType::Sha256, lines(&[format!("{:064x}", 7)]))
        .unwrap();
    store
        .replace(
            IocType::Domain,
            lines(&["kept.example".to_string(), doms[3].clone()]),
        )
        .unwrap();
    store
        .remove(vec![(IocType::Ipv4, ips[500].clone().into_bytes())])
        .unwrap();
    clock.advance(HOUR);
}

/// The last record of each scenario.
fn last_record(kind: &str, store: &Store, clock: &ManualClock) {
    match kind {
        "append" => {
            let urls: Vec<String> = (0..6)
                .map(|i| format!("http://last{i}.example/x?y={i}"))
                .collect();
            store.append(IocType::Url, lines(&urls)).unwrap();
        }
        "replace" => {
            store
                .replace(
                    IocType::Ipv4,
                    lines(&["10.1.0.1".into(), "192.0.2.1".into(), "10.1.1.9".into()]),
                )
                .unwrap();
        }
        "age" => {
            clock.advance(8 * DAY);
            store.age().unwrap();
        }
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn wal_cut_at_every_byte_of_its_last_record_recovers_everything_before_it() {
    for kind in ["append", "replace", "age"] {
        let fx = Fixture::new();
        let store = fx.open().unwrap();
        history(&store, &fx.clock);
        let before = served(&store);
        last_record(kind, &store, &fx.clock);
        let after = served(&store);
        assert_ne!(before, after, "{kind}: the last record changes nothing");
        drop(store);
        let (wal, records) = wal_records(&fx.data());
        let &(last_at, last_seq) = records.last().unwrap();
        let end = file_len(&wal);
        let saved = fx.save("saved");

        // Sanity: the whole log gives the whole state.
        let store = fx.open().unwrap();
        assert_eq!(served(&store), after, "{kind}: uncut log");
        assert!(store.recovery.truncated.is_none());
        drop(store);

        for cut in last_at..end {
            fx.restore(&saved);
            truncate(&wal, cut);
            let ctx = format!("{kind}: WAL cut at {cut} (last record {last_at}..{end})");
            let store = fx
                .open()
                .unwrap_or_else(|e| panic!("{ctx}: open refused: {e}"));
            assert_eq!(
                served(&store),
                before,
                "{ctx}: earlier records not all replayed"
            );
            match &store.recovery.truncated {
                None => assert_eq!(cut, last_at, "{ctx}: torn tail not reported"),
                Some((path, at, _why)) => {
                    assert!(
                        cut > last_at,
                        "{ctx}: truncation reported at a record boundary"
                    );
                    assert_eq!((path, *at), (&wal, last_at), "{ctx}: truncated where?");
                }
            }
            assert_eq!(file_len(&wal), last_at, "{ctx}: torn tail left in the file");
            assert_eq!(store.next_seq(), last_seq, "{ctx}: sequence after recovery");
            // The log takes records again, and a second recovery agrees.
            if cut % 7 == 0 || cut + 1 == end {
                store
                    .append(IocType::Md5, lines(&[format!("{cut:032x}")]))
                    .unwrap();
                let with_new = served(&store);
                drop(store);
                let store = fx.open().unwrap();
                assert_eq!(served(&store), with_new, "{ctx}: after a write and reopen");
                assert!(store.recovery.truncated.is_none(), "{ctx}: torn again");
            }
        }
    }
}

#[test]
fn bit_flip_in_a_wal_record_before_the_tail_refuses_naming_file_and_offset() {
    let fx = Fixture::new();
    let store = fx.open().unwrap();
    history(&store, &fx.clock);
    last_record("append", &store, &fx.clock);
    drop(store);
    let (wal, records) = wal_records(&fx.data());
    let last_at = records.last().unwrap().0;
    let saved = fx.save("saved");
    let mut rng = Rng(0xb17f_11e5);
    for i in 0..50 {
        fx.restore(&saved);
        let mut bytes = fs::read(&wal).unwrap();
        let at = 16 + rng.below(last_at - 16);
        let bit = rng.below(8);
        bytes[at as usize] ^= 1 << bit;
        fs::write(&wal, &bytes).unwrap();
        let record = records.iter().rev().find(|r| r.0 <= at).unwrap().0;
        let ctx = format!("flip {i}: bit {bit} of byte {at} (record at {record})");
        let err = match fx.open() {
            Ok(_) => panic!("{ctx}: a damaged WAL was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&wal.display().to_string()) && err.contains(&format!("offset {record}")),
            "{ctx}: the error does not name {} and offset {record}: {err}",
            wal.display()
        );
        assert_eq!(
            fs::read(&wal).unwrap(),
            bytes,
            "{ctx}: a refused open changed the WAL"
        );
    }
}

/// A data directory whose tiers are committed and covered by checkpoints.
fn checkpointed(fx: &Fixture) {
    let store = fx.open().unwrap();
    for (n, ty, days) in [(3000, IocType::Ipv4, 40), (2000, IocType::Domain, 10)] {
        let vals: Vec<String> = (0..n)
            .map(|i| match ty {
                IocType::Ipv4 => format!("10.2.{}.{}", i / 256, i % 256),
                _ => format!("c{i}.ckpt.example"),
            })
            .collect();
        for chunk in vals.chunks(500) {
            store.append(ty, lines(chunk)).unwrap();
            fx.clock.advance(DAY);
        }
        fx.clock.advance(days * DAY);
    }
    store.age().unwrap();
    store.checkpoint().unwrap();
    fx.clock.advance(HOUR);
    store
        .append(IocType::Ipv4, lines(&["10.2.0.7".to_string()]))
        .unwrap();
    store.checkpoint().unwrap();
    drop(store);
}

#[test]
fn bit_flip_in_a_checkpoint_is_detected_and_the_tier_files_take_over() {
    let fx = Fixture::new();
    checkpointed(&fx);
    let all = checkpoints(&fx.data());
    assert_eq!(all.len(), 2, "{all:?}");
    for older in &all[..all.len() - 1] {
        fs::remove_file(older).unwrap();
    }
    let ckpt = all.last().unwrap().clone();
    let store = fx.open().unwrap();
    let want = served(&store);
    let used = store.recovery.from_checkpoint;
    assert!(used > 0, "the undamaged checkpoint was not used");
    drop(store);
    let saved = fx.save("saved");
    let len = file_len(&ckpt);
    let mut rng = Rng(0xc4ec_4901);
    for i in 0..50 {
        fx.restore(&saved);
        let mut bytes = fs::read(&ckpt).unwrap();
        let at = rng.below(len);
        let bit = rng.below(8);
        bytes[at as usize] ^= 1 << bit;
        fs::write(&ckpt, &bytes).unwrap();
        let ctx = format!("flip {i}: bit {bit} of byte {at} of {}", ckpt.display());
        let store = fx
            .open()
            .unwrap_or_else(|e| panic!("{ctx}: a damaged checkpoint stopped the open: {e}"));
        assert_eq!(
            store.recovery.from_checkpoint, 0,
            "{ctx}: the damaged checkpoint was used"
        );
        assert!(
            served(&store) == want,
            "{ctx}: content differs after the fallback"
        );
    }
}

#[test]
fn damaged_newest_checkpoint_falls_back_to_the_older_one() {
    let fx = Fixture::new();
    checkpointed(&fx);
    let all = checkpoints(&fx.data());
    assert_eq!(all.len(), 2, "{all:?}");
    let store = fx.open().unwrap();
    let want = served(&store);
    drop(store);
    let saved = fx.save("saved");
    let newest = all.last().unwrap();
    let len = file_len(newest);
    let mut rng = Rng(0x01de_4c4e);
    for i in 0..20 {
        fx.restore(&saved);
        let mut bytes = fs::read(newest).unwrap();
        let at = rng.below(len) as usize;
        bytes[at] ^= 1 << rng.below(8);
        fs::write(newest, &bytes).unwrap();
        let store = fx.open().unwrap();
        assert!(
            served(&store) == want,
            "flip {i} at {at}: content differs after falling back to {}",
            all[0].display()
        );
    }
}
