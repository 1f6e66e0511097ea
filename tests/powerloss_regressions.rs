//! Power-cut scenarios `scripts/powerloss` found, each replayed on the simulated disk
//! (`iocfs::disk::sim`) at the step where it went wrong.
#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use iocfs::clock::{Clock, ManualClock};
use iocfs::config::Config;
use iocfs::disk::sim::{Choices, SimDisk, Step};
use iocfs::ioc::IocType;
use iocfs::store::Store;

fn config() -> Arc<Config> {
    Arc::new(Config {
        data_dir: PathBuf::from("/data"),
        ..Config::default()
    })
}

fn open(disk: &SimDisk) -> iocfs::error::Result<Arc<Store>> {
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    Store::open_on(disk.disk(), config(), clock as Arc<dyn Clock>)
}

/// Crash images taken with `choices` before every step of `kind` that `f` makes.
fn images_during(disk: &SimDisk, kind: Step, choices: Choices, f: impl FnOnce()) -> Vec<SimDisk> {
    let images = Arc::new(Mutex::new(Vec::new()));
    let sink = images.clone();
    disk.set_observer(Some(Box::new(move |d: &SimDisk, _, step, _: &Path| {
        if step == kind {
            sink.lock().unwrap().push(d.crash_image(choices));
        }
        None
    })));
    f();
    disk.set_observer(None);
    let out = std::mem::take(&mut *images.lock().unwrap());
    out
}

/// A commit wrote its temp files, fsync'd them and journaled the record naming them; power
/// was cut before the directory fsync after the renames. The temps' data was durable, their
/// names were not, so the last commit named files that never existed and recovery refused
/// ("read live/domain.txt (listed in the last commit): entity not found"). The directories
/// are now fsync'd before the record is written.
#[test]
fn power_cut_after_the_commit_record_never_leaves_a_commit_naming_lost_temp_files() {
    let disk = SimDisk::new();
    let store = open(&disk).unwrap();
    store
        .append(IocType::Domain, b"a.example.com\nb.example.com\n".to_vec())
        .unwrap();
    let images = images_during(&disk, Step::SyncData, Choices::DataNotNames, || {
        store.commit().unwrap();
    });
    assert!(!images.is_empty(), "the commit record is fsync'd");
    drop(store);
    for image in images {
        let store = open(&image).unwrap_or_else(|e| panic!("recovery refused: {e}"));
        assert_eq!(
            store.live(IocType::Domain).read_all().unwrap(),
            b"a.example.com\nb.example.com\n"
        );
    }
}

/// A batch of records from concurrent writers is one write and one fdatasync. Power cut
/// during that fdatasync: an earlier page of the batch can be lost (it reads as the zeros
/// the log was filled with) while a later one reached the disk, so a valid record follows
/// a hole. That is the torn tail of an unsynced write, not damage in the middle of the
/// log: recovery truncated nothing and refused the mount.
#[test]
fn power_cut_during_a_batch_fsync_that_keeps_a_later_page_is_a_torn_tail() {
    use iocfs::disk::sim::Choices;
    use iocfs::store::wal::{record, WalFiles};
    let disk = SimDisk::new();
    let wal_dir = Path::new("/wal");
    disk.disk().create_dir(wal_dir, 0o750).unwrap();
    let (mut wal, _, _) = WalFiles::open(&disk.disk(), wal_dir, 1 << 20).unwrap();
    let mut batch = Vec::new();
    for seq in 1..=4u64 {
        record::encode(seq, &vec![b'a' + seq as u8; 3000], &mut batch);
    }
    wal.append(1, 4, &batch).unwrap();
    // The batch's fdatasync, cut 64 ways.
    let sink = Arc::new(Mutex::new(Vec::new()));
    let keep = sink.clone();
    disk.set_observer(Some(Box::new(move |d: &SimDisk, _, step, _: &Path| {
        if step == Step::SyncData {
            let mut out = keep.lock().unwrap();
            out.extend((0..64).map(|seed| d.crash_image(Choices::Random(seed))));
        }
        None
    })));
    wal.sync().map_err(|_| "fdatasync").unwrap();
    disk.set_observer(None);
    let images = std::mem::take(&mut *sink.lock().unwrap());
    assert_eq!(images.len(), 64);
    for image in images {
        let (_, records, _) = WalFiles::open(&image.disk(), wal_dir, 1 << 20)
            .unwrap_or_else(|e| panic!("recovery refused: {e}"));
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "a prefix"
        );
    }
}

/// A new WAL segment's header write failed (ENOSPC): the append failed, and the next
/// (small) record went on in the current segment with the sequence number the failed
/// segment's name claimed. The half-made file stayed, and recovery refused the log
/// ("segment starts at sequence 94 but the previous one ended at 94"). The file is now
/// removed when its creation fails; and recovery drops a last segment that holds no
/// record and is named inside the previous one's records (a creation cut by power).
#[test]
fn a_segment_whose_creation_failed_never_claims_the_records_that_follow() {
    use iocfs::store::wal::{record, WalFiles};
    let disk = SimDisk::new();
    let wal_dir = Path::new("/wal");
    disk.disk().create_dir(wal_dir, 0o750).unwrap();
    // The smallest segments (64 KiB): a second 40,000-byte record needs a new one.
    let (mut wal, _, _) = WalFiles::open(&disk.disk(), wal_dir, 1 << 16).unwrap();
    let rec = |seq: u64, len: usize| {
        let mut out = Vec::new();
        record::encode(seq, &vec![b'a'; len], &mut out);
        out
    };
    wal.append(1, 1, &rec(1, 40_000)).unwrap();
    wal.sync().map_err(|_| "fdatasync").unwrap();
    // The creation of segment 2 fails at its header's write.
    disk.set_observer(Some(Box::new(|_: &SimDisk, _, step, path: &Path| {
        (step == Step::Write && path.ends_with("00000000000000000002.wal"))
            .then(|| std::io::Error::from_raw_os_error(libc::ENOSPC))
    })));
    assert!(wal.append(2, 2, &rec(2, 40_000)).is_err());
    disk.set_observer(None);
    assert!(
        !disk
            .disk()
            .exists(&wal_dir.join("00000000000000000002.wal")),
        "the half-made segment is removed"
    );
    // A small record 2 still fits in segment 1.
    wal.append(2, 2, &rec(2, 100)).unwrap();
    wal.sync().map_err(|_| "fdatasync").unwrap();
    drop(wal);
    let (_, records, _) = WalFiles::open(&disk.disk(), wal_dir, 1 << 16)
        .unwrap_or_else(|e| panic!("recovery refused: {e}"));
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);

    // Recovery's side: such a file left behind (header only) is dropped, not refused.
    let image = disk.crash_image(Choices::Random(1));
    iocfs::atomic::write_synced(
        &image.disk(),
        &wal_dir.join("00000000000000000002.wal"),
        |w| w.write_all(&iocfs::store::wal::segment::header()),
    )
    .unwrap();
    let (_, records, report) = WalFiles::open(&image.disk(), wal_dir, 1 << 16)
        .unwrap_or_else(|e| panic!("recovery refused: {e}"));
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(report.truncated.is_some());
    assert!(!image
        .disk()
        .exists(&wal_dir.join("00000000000000000002.wal")));
}
