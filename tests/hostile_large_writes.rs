//! Hostile sizes (README "Hostile local users and files"): a replace larger than a WAL record
//! is journaled in pieces and survives SIGKILL (before and after its end), a single record
//! over the limit is refused with EFBIG before anything is acknowledged, and no record in
//! the log is ever larger than the limit.
//!
//! The record limit is lowered through ctl (`record-limit`, test builds only) so that the
//! mechanism behind a multi-GiB `cp` is exercised with a few MiB; pieces are a quarter of it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{errno_of, wal_records, wal_segments, Daemon, BIN};

/// No background commits or aging: the test decides when they happen. Small segments, so
/// that a commit retires (deletes) the ones it covers.
const QUIET: &str = "[aging]\ninterval = \"3650d\"\n\
    [durability]\ncommit_interval = \"3650d\"\ncheckpoint_interval = \"3650d\"\n\
    segment_size = \"1MiB\"\n";
const LIMIT: usize = 256 << 10;

fn sha(i: u64) -> String {
    format!("{:016x}{:048x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i)
}

fn start() -> Option<Daemon> {
    let d = Daemon::builder().config(QUIET).start()?;
    limit(&d);
    Some(d)
}

/// The lowered limit is not persistent: set it again after every start.
fn limit(d: &Daemon) {
    d.ctl(&format!("record-limit {LIMIT}")).unwrap();
}

/// (records, largest payload) over every WAL segment of the data dir.
fn wal_record_sizes(data: &Path) -> (usize, usize) {
    let mut n = 0;
    let mut largest = 0;
    for seg in wal_segments(data) {
        let bytes = std::fs::read(&seg).unwrap();
        for (at, _) in wal_records(&bytes) {
            n += 1;
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            largest = largest.max(len);
        }
    }
    (n, largest)
}

fn check_clean(data: &Path) {
    let out = Command::new(BIN).arg("check").arg(data).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "iocfs check:\n{text}");
}

/// `cp` of a file eight times the record limit: works, readers see exactly its lines, the log
/// holds only records within the limit, and the set survives SIGKILL and a restart.
#[test]
fn a_cp_larger_than_a_wal_record_works_and_survives_sigkill() {
    let Some(mut d) = start() else { return };
    d.append_lines("live/sha256.txt", &[sha(1_000_000), sha(1_000_001)]);
    let want: Vec<String> = (0..40_000).map(sha).collect();
    let mut text = String::from("# a feed header\n");
    for (i, l) in want.iter().enumerate() {
        // Upper case normalizes to the same value; a repeat is dropped.
        text.push_str(&if i % 7 == 0 {
            l.to_uppercase()
        } else {
            l.clone()
        });
        text.push('\n');
    }
    text.push_str(&format!("{}\n", want[5]));
    assert!(text.len() > 8 * LIMIT);
    let src = d.root().join("feed.txt");
    std::fs::write(&src, &text).unwrap();
    d.sh_ok(&format!("cp {} live/sha256.txt", src.display()));
    assert_eq!(d.lines("live/sha256.txt"), want);
    let (records, largest) = wal_record_sizes(&d.data());
    assert!(largest <= LIMIT, "a {largest}-byte record is over {LIMIT}");
    assert!(
        records >= 10,
        "{records} records: the replace was not cut in pieces"
    );

    // The same through a scratch file renamed onto the type file (`sed -i`, editors).
    let renamed: Vec<String> = (50_000..90_000).map(sha).collect();
    let body: String = renamed.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(d.path("live/big.tmp"), &body).unwrap();
    std::fs::rename(d.path("live/big.tmp"), d.path("live/sha256.txt")).unwrap();
    assert_eq!(d.lines("live/sha256.txt"), renamed);
    assert!(wal_record_sizes(&d.data()).1 <= LIMIT);

    d.kill9();
    d.restart();
    assert_eq!(d.lines("live/sha256.txt"), renamed, "after SIGKILL");
    assert!(d.stop().success());
    check_clean(&d.data());
}

/// A replace cut by SIGKILL before its close leaves the old set (even across a commit that
/// ran while it was being staged); one closed after such a commit survives SIGKILL whole.
#[test]
fn sigkill_before_a_staged_replace_ends_leaves_the_old_set_and_after_keeps_the_new() {
    let Some(mut d) = start() else { return };
    let old: Vec<String> = (0..3).map(sha).collect();
    d.append_lines("live/sha256.txt", &old);
    let piece = |from: u64| -> Vec<u8> {
        (from..from + 16_000)
            .map(|i| format!("{}\n", sha(i)))
            .collect::<String>()
            .into_bytes()
    };
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(d.path("live/sha256.txt"))
        .unwrap();
    f.write_all(&piece(100)).unwrap();
    f.write_all(&piece(100_000)).unwrap();
    // A commit while the stage is open: it must keep the stage's records in the log.
    d.append_lines("live/domain.txt", &["dirty.example"]);
    let segments = wal_segments(&d.data()).len();
    assert!(
        segments >= 2,
        "{segments} segments: the commit would retire none"
    );
    d.ctl("commit").unwrap();
    f.write_all(&piece(200_000)).unwrap();
    assert_eq!(
        d.lines("live/sha256.txt"),
        old,
        "readers see the old set meanwhile"
    );
    d.kill9();
    drop(f);
    d.restart();
    limit(&d);
    assert_eq!(
        d.lines("live/sha256.txt"),
        old,
        "the unfinished replace applied"
    );
    assert!(
        d.log().contains("discarded, the file is as before it"),
        "{}",
        d.log()
    );

    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(d.path("live/sha256.txt"))
        .unwrap();
    f.write_all(&piece(300_000)).unwrap();
    f.write_all(&piece(350_000)).unwrap();
    d.append_lines("live/domain.txt", &["dirty2.example"]);
    d.ctl("commit").unwrap();
    f.write_all(&piece(400_000))
        .unwrap_or_else(|e| panic!("write after the commit: {e}\n{}", d.log()));
    drop(f);
    let want: Vec<String> = [300_000u64, 350_000, 400_000]
        .iter()
        .flat_map(|&from| (from..from + 16_000).map(sha))
        .collect();
    assert_eq!(d.lines("live/sha256.txt"), want);
    d.kill9();
    d.restart();
    assert_eq!(d.lines("live/sha256.txt"), want, "after SIGKILL");
    assert!(d.stop().success());
    check_clean(&d.data());
}

/// One write() whose record would be over the limit fails with EFBIG and applies nothing;
/// a replace handle that got EFBIG applies nothing at close either.
#[test]
fn a_record_over_the_limit_is_refused_with_efbig_before_it_is_acknowledged() {
    let Some(mut d) = start() else { return };
    d.append_lines("live/sha256.txt", &[sha(1)]);
    let big: String = (10..6_000).map(|i| format!("{}\n", sha(i))).collect();
    assert!(big.len() > LIMIT && big.len() < 1 << 20);
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.path("live/sha256.txt"))
        .unwrap();
    assert_eq!(errno_of(f.write(big.as_bytes())), libc::EFBIG);
    drop(f);
    assert_eq!(d.lines("live/sha256.txt"), [sha(1)]);
    assert!(wal_record_sizes(&d.data()).1 <= LIMIT);
    d.kill9();
    d.restart();
    assert_eq!(d.lines("live/sha256.txt"), [sha(1)]);
    assert!(d.stop().success());
    check_clean(&d.data());
}
