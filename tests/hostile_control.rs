//! Hostile readers of the control files (README "Hostile local users and files"): what
//! reading `.iocfs/` (stats.json, lookup/) costs everyone else, and who may read it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::fs;
#[cfg(feature = "testing")]
use std::sync::mpsc;
#[cfg(feature = "testing")]
use std::time::{Duration, Instant};

use common::{as_nobody, Daemon};
#[cfg(feature = "testing")]
use common::{poll_until, READY_TIMEOUT};

#[cfg(feature = "testing")]
fn stats(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap()
}

#[cfg(feature = "testing")]
fn builds(d: &Daemon) -> u64 {
    stats(d)["stats_json"]["builds"].as_u64().unwrap()
}

/// Item 6: every `stat` and open of stats.json shares one snapshot, rebuilt only when
/// something it shows changed; and building one never waits for a WAL fsync.
#[cfg(feature = "testing")]
#[test]
fn stats_json_is_one_shared_snapshot_that_never_waits_for_the_wal() {
    let pause = tempfile::tempdir().unwrap();
    // No view rebuild is due during the test once the first builds are done.
    let Some(d) = Daemon::builder()
        .config("[views]\nrefresh = \"1h\"\n")
        .manual_clock(1_700_000_000)
        .env("IOCFS_PAUSE_DIR", pause.path())
        .start()
    else {
        return;
    };
    d.append_lines("live/ipv4.txt", &["192.0.2.1"]);
    // Each first build changes what stats.json shows (a loaded machine is slow).
    d.wait_first_view_builds();
    let first = builds(&d);
    let started = Instant::now();
    for _ in 0..500 {
        fs::metadata(d.path(".iocfs/stats.json")).unwrap();
        d.read(".iocfs/stats.json");
    }
    let seconds = started.elapsed().as_secs();
    let rebuilt = builds(&d) - first;
    assert!(
        rebuilt <= seconds + 2,
        "1000 stats and opens in {seconds} s rebuilt stats.json {rebuilt} times"
    );
    // A change shows at once.
    d.append_lines("live/ipv4.txt", &["192.0.2.2"]);
    assert_eq!(stats(&d)["buckets"]["live"]["ipv4"]["lines"], 2);

    // A writer's batch stuck in its WAL fsync (holding the WAL): stats.json is still served.
    let gate = pause.path().join("wal::sync_pause");
    fs::write(&gate, b"").unwrap();
    let path = d.path("live/ipv4.txt");
    let writer = std::thread::spawn(move || {
        fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"192.0.2.3\n"))
    });
    let reached = pause.path().join("wal::sync_pause.reached");
    let paused = poll_until(READY_TIMEOUT, || reached.exists().then_some(()));
    // Time moved: the snapshot must be rebuilt now, while the WAL is held.
    d.ctl("clock +1s").unwrap();
    let (tx, rx) = mpsc::channel();
    let stats_path = d.path(".iocfs/stats.json");
    std::thread::spawn(move || {
        let _ = tx.send(fs::read(&stats_path).map(|b| b.len()));
    });
    let served = rx.recv_timeout(Duration::from_secs(10));
    fs::remove_file(&gate).unwrap();
    assert!(paused.is_some(), "the append did not reach its fsync");
    assert!(
        served.is_ok_and(|r| r.is_ok()),
        "stats.json waited for the WAL fsync"
    );
    writer.join().unwrap().unwrap();
    assert_eq!(d.lines("live/ipv4.txt").len(), 3);
}

/// Item 7: lookup entries take their inode numbers from the counter versions use (one id
/// space: no count of stats can make a lookup entry's number a file version's), and a value
/// keeps its inode while the kernel holds it (a `stat` loop allocates nothing).
#[test]
fn lookup_inodes_share_the_version_id_space_and_are_reused_per_value() {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["192.0.2.1"]);
    let ino = |rel: &str| fs::metadata(d.path(rel)).unwrap().ino();
    let first = ino(".iocfs/lookup/192.0.2.1");
    for _ in 0..1000 {
        assert_eq!(
            ino(".iocfs/lookup/192.0.2.1"),
            first,
            "a stat made a new inode"
        );
    }
    let mut seen = HashSet::from([first]);
    let mut previous = ino("live/ipv4.txt");
    for i in 0..50 {
        d.sh_ok(&format!("echo 198.51.100.{i} > live/ipv4.txt"));
        let version = ino("live/ipv4.txt");
        let entry = ino(&format!(".iocfs/lookup/198.51.100.{i}"));
        assert!(
            seen.insert(version) && seen.insert(entry),
            "inode given twice"
        );
        // One counter: an entry made after a version has a larger number than it.
        assert!(
            previous < version && version < entry,
            "{previous} {version} {entry}"
        );
        previous = entry;
    }
    assert_eq!(d.lines("live/ipv4.txt"), ["198.51.100.49"]);
}

/// Item 8: stats.json, metrics, health and lookup/ follow `mount.file_mode` and `mount.gid` like the
/// lists do: with 0640, a local user outside the group can't read them, nor test whether a
/// value is stored; one in the group can.
#[test]
fn control_files_follow_file_mode_so_others_cannot_test_membership() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for (gid, in_group) in [(0, false), (65534, true)] {
        let Some(d) = Daemon::builder()
            .config(&format!(
                "[mount]\nallow_other = true\nfile_mode = \"0640\"\ngid = {gid}\n"
            ))
            .start()
        else {
            return;
        };
        fs::set_permissions(d.root(), fs::Permissions::from_mode(0o755)).unwrap();
        d.append_lines("live/ipv4.txt", &["192.0.2.1"]);
        let mode = |rel: &str| fs::metadata(d.path(rel)).unwrap().mode() & 0o7777;
        assert_eq!(mode(".iocfs/stats.json"), 0o440);
        assert_eq!(mode(".iocfs/metrics"), 0o440);
        assert_eq!(mode(".iocfs/health"), 0o440);
        assert_eq!(mode(".iocfs/lookup"), 0o550);
        assert_eq!(mode(".iocfs/lookup/192.0.2.1"), 0o440);
        assert_eq!(fs::metadata(d.path(".iocfs/lookup")).unwrap().gid(), gid);
        for rel in [
            "live/ipv4.txt",
            ".iocfs/stats.json",
            ".iocfs/metrics",
            ".iocfs/health",
            ".iocfs/lookup/192.0.2.1",
        ] {
            let (ok, err) = as_nobody(&format!("cat {} >/dev/null", d.path(rel).display()));
            assert_eq!(ok, in_group, "gid {gid}: nobody reading {rel}: {err}");
        }
        // Membership by stat alone (no read): refused too outside the group.
        let (ok, err) = as_nobody(&format!(
            "test -e {}",
            d.path(".iocfs/lookup/192.0.2.1").display()
        ));
        assert_eq!(ok, in_group, "gid {gid}: nobody testing lookup/: {err}");
        assert_eq!(d.read(".iocfs/health"), "ok\n", "root reads");
    }
}

/// Flip the stored CRC32 of the first block of `data/<rel>.gz` (a checksum-valid header,
/// damaged data): the block is quarantined at mount and reads of it fail with EIO.
#[cfg(feature = "testing")]
fn damage_first_block(data: &std::path::Path, rel: &str) {
    use std::os::unix::fs::FileExt;
    let path = data.join(format!("{rel}.gz"));
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let index = iocfs::store::tier::format::read_index(&iocfs::disk::real::RealFile::new(
        file.try_clone().unwrap(),
        &path,
    ))
    .unwrap();
    let b = &index.blocks[0];
    let crc_at = b.offset + u64::from(b.header.member_len) - 8;
    let mut crc = [0u8; 1];
    file.read_exact_at(&mut crc, crc_at).unwrap();
    file.write_all_at(&[crc[0] ^ 0xff], crc_at).unwrap();
}

/// Item 12: a reader of a quarantined block can make one log line per read; those lines
/// share the budget of request-caused lines, so the journal keeps room for what matters
/// (a WAL failure is still logged right after).
#[cfg(feature = "testing")]
#[test]
fn a_reader_of_a_damaged_block_cannot_flood_the_log() {
    let Some(mut d) = Daemon::builder()
        .manual_clock(1_700_000_000)
        .config("[aging]\ninterval = \"3650d\"\n")
        .start()
    else {
        return;
    };
    let doms: Vec<String> = (0..2000).map(|i| format!("d{i}.example.org")).collect();
    d.append_bulk("live/domain.txt", &doms);
    d.ctl("clock +25h").unwrap();
    d.ctl("age").unwrap();
    d.ctl("commit").unwrap();
    assert!(d.stop().success());
    damage_first_block(&d.data(), "chaud/domain.txt");
    d.restart();
    let path = d.path("chaud/domain.txt");
    for _ in 0..300 {
        let r = fs::read(&path);
        assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)));
    }
    assert!(
        d.read(".iocfs/health").starts_with("tier"),
        "{}",
        d.read(".iocfs/health")
    );
    let lines = d.log().matches("read chaud/domain.txt").count();
    assert!(
        (1..=100).contains(&lines),
        "300 failed reads made {lines} log lines"
    );
    d.ctl("failpoint wal::sync eio").unwrap();
    assert!(fs::OpenOptions::new()
        .append(true)
        .open(d.path("live/ipv4.txt"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"192.0.2.1\n"))
        .is_err());
    assert!(
        d.log().contains("WAL failure"),
        "the WAL failure was not logged:\n{}",
        d.log()
    );
}

/// Item 14 (suspected deadlock, ruled out): the batch leader sends the kernel an inode
/// invalidation while other workers may wait for it. With only two workers, one stuck
/// answering a READ of a tier file (its page locked in the kernel), a change that supersedes
/// that very inode must still be acknowledged: the invalidation (attributes only) does not
/// wait for the READ. Without passthrough: under it the kernel reads tier files itself.
#[cfg(feature = "testing")]
#[test]
fn inode_invalidation_never_waits_for_a_read_in_flight() {
    let pause = tempfile::tempdir().unwrap();
    let Some(d) = Daemon::builder()
        .manual_clock(1_700_000_000)
        .config("[aging]\ninterval = \"3650d\"\n[mount]\nthreads = 2\npassthrough = false\n")
        .env("IOCFS_PAUSE_DIR", pause.path())
        .start()
    else {
        return;
    };
    let doms: Vec<String> = (0..2000).map(|i| format!("d{i}.example.org")).collect();
    d.append_bulk("live/domain.txt", &doms);
    d.ctl("clock +25h").unwrap();
    d.ctl("age").unwrap();
    // Not read through the mount yet: the reader's READ goes to the daemon, not the cache.
    assert_eq!(stats(&d)["buckets"]["chaud"]["domain"]["lines"], 2000);
    let gate = pause.path().join("tier::read");
    let reached = pause.path().join("tier::read.reached");
    fs::write(&gate, b"").unwrap();
    let path = d.path("chaud/domain.txt");
    let reader = std::thread::spawn(move || fs::read_to_string(path));
    let stuck = poll_until(READY_TIMEOUT, || reached.exists().then_some(()));
    let (tx, rx) = mpsc::channel();
    let ctl = d.path(".iocfs/ctl");
    std::thread::spawn(move || {
        let _ = tx.send(fs::write(ctl, "remove d0.example.org\n"));
    });
    let acknowledged = rx.recv_timeout(Duration::from_secs(10));
    fs::remove_file(&gate).unwrap();
    assert!(stuck.is_some(), "the READ never reached the daemon");
    assert!(
        acknowledged.is_ok_and(|r| r.is_ok()),
        "a change waited for a READ in flight: the invalidation deadlocks"
    );
    let old = reader.join().unwrap().unwrap();
    assert_eq!(old.lines().count(), 2000, "the reader's version, whole");
    assert_eq!(d.lines("chaud/domain.txt").len(), 1999);
}
